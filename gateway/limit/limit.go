// Package limit has the token bucket behind pushgate's rate limits.
package limit

import (
	"sync"
	"time"
)

// Bucket allows rate events per second on average, with bursts of up to
// burst. Safe for concurrent use. A nil *Bucket allows everything.
type Bucket struct {
	rate  float64 // tokens per second; immutable
	burst float64 // immutable

	mu     sync.Mutex
	tokens float64   // guarded by mu
	last   time.Time // guarded by mu
}

// NewBucket returns a full bucket. rate <= 0 returns nil: no limit.
func NewBucket(rate float64, burst int) *Bucket {
	if rate <= 0 {
		return nil
	}
	if burst < 1 {
		burst = 1
	}
	return &Bucket{rate: rate, burst: float64(burst), tokens: float64(burst), last: time.Now()}
}

// Allow takes one token if there is one.
func (b *Bucket) Allow() bool { return b.AllowN(1) }

// AllowN takes n tokens if there are that many (none otherwise).
func (b *Bucket) AllowN(n int) bool {
	if b == nil {
		return true
	}
	now := time.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	b.last = now
	if b.tokens < float64(n) {
		return false
	}
	b.tokens -= float64(n)
	return true
}

// Keyed holds one bucket per key (for example per API caller), made on
// first use. Safe for concurrent use.
type Keyed struct {
	rate  float64
	burst int

	mu      sync.Mutex
	buckets map[string]*Bucket // guarded by mu
}

// NewKeyed returns per-key buckets; rate <= 0 returns nil: no limit.
func NewKeyed(rate float64, burst int) *Keyed {
	if rate <= 0 {
		return nil
	}
	return &Keyed{rate: rate, burst: burst, buckets: make(map[string]*Bucket)}
}

// Allow takes one token from key's bucket.
func (k *Keyed) Allow(key string) bool {
	if k == nil {
		return true
	}
	k.mu.Lock()
	b := k.buckets[key]
	if b == nil {
		b = NewBucket(k.rate, k.burst)
		k.buckets[key] = b
	}
	k.mu.Unlock()
	return b.Allow()
}
