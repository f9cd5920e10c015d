package server

import (
	"context"
	"crypto/sha256"
	"sync"
	"time"

	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// idempotency remembers the responses of calls made with an idempotency key
// for a window, per caller. A repeated call gets the first response and does
// nothing; a concurrent repeat waits for the first to finish. A call that
// fails is forgotten, so its retry runs again. Safe for concurrent use.
type idempotency struct {
	window time.Duration

	mu        sync.Mutex
	entries   map[string]*idemEntry // guarded by mu
	nextSweep time.Time             // guarded by mu
}

type idemEntry struct {
	hash    [sha256.Size]byte // of the method and the request: a key reused for another request is an error
	done    chan struct{}     // closed when resp/err are set
	resp    proto.Message
	err     error
	expires time.Time // guarded by idempotency.mu
}

func newIdempotency(window time.Duration) *idempotency {
	return &idempotency{window: window, entries: make(map[string]*idemEntry)}
}

// do runs fn once per (caller, key) within the window and returns its
// response to every call with that key.
func (s *idempotency) do(ctx context.Context, method, key string, req proto.Message, fn func() (proto.Message, error)) (proto.Message, error) {
	if key == "" {
		return fn()
	}
	hash, err := requestHash(method, req)
	if err != nil {
		return nil, err
	}
	k := Caller(ctx) + "\x00" + key
	for {
		now := time.Now()
		s.mu.Lock()
		if now.After(s.nextSweep) {
			for k, e := range s.entries {
				if now.After(e.expires) {
					delete(s.entries, k)
				}
			}
			s.nextSweep = now.Add(s.window / 10)
		}
		e, ok := s.entries[k]
		if ok && now.After(e.expires) {
			delete(s.entries, k)
			ok = false
		}
		if !ok {
			e = &idemEntry{hash: hash, done: make(chan struct{}), expires: now.Add(s.window)}
			s.entries[k] = e
			s.mu.Unlock()
			resp, err := fn()
			s.mu.Lock()
			e.resp, e.err = resp, err
			if err != nil && s.entries[k] == e {
				delete(s.entries, k) // not remembered: a retry runs again
			} else {
				e.expires = time.Now().Add(s.window)
			}
			s.mu.Unlock()
			close(e.done)
			return resp, err
		}
		s.mu.Unlock()
		if e.hash != hash {
			return nil, invalid("message.idempotency_key", "already used for a different request within the idempotency window")
		}
		select {
		case <-e.done:
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
		if e.err == nil {
			return proto.Clone(e.resp), nil
		}
		// The first call failed and was forgotten: try again.
	}
}

// requestHash identifies a request: a key reused for another one is an error.
func requestHash(method string, req proto.Message) ([sha256.Size]byte, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(req)
	if err != nil {
		return [sha256.Size]byte{}, err
	}
	return sha256.Sum256(append([]byte(method+"\x00"), b...)), nil
}
