package web

import (
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"pushgate/gateway/limit"
)

// Failed logins to the admin page (and pprof, behind the same guard) are
// throttled per client address: an address may fail loginBurst times, then
// once more every loginEvery. While it may not, every request of its that
// carries credentials, right or wrong, is answered 429 without looking at
// them. Each failure is logged (never with what was tried) and counted.
const (
	loginBurst = 10
	loginEvery = 6 * time.Second
	// maxLoginAddrs bounds the addresses remembered; past it, addresses
	// with failures still to be forgiven share one budget.
	maxLoginAddrs = 10000
)

// Logins throttles and records failed admin logins. Safe for concurrent
// use; one is shared by every guard of a server.
type Logins struct {
	log        *slog.Logger
	failures   *prometheus.CounterVec
	lines      *limit.Bucket // log lines, which clients provoke at will
	suppressed atomic.Int64
	now        func() time.Time

	mu        sync.Mutex
	addrs     map[string]*loginBudget // guarded by mu
	lastPrune time.Time               // guarded by mu
}

type loginBudget struct {
	tokens float64 // failures the address may still make
	last   time.Time
}

// NewLogins returns an empty record of failed logins that logs to log and
// counts in pushgate_admin_login_failures_total{reason} on reg. Either may
// be nil.
func NewLogins(log *slog.Logger, reg prometheus.Registerer) *Logins {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := &Logins{
		log: log,
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushgate_admin_login_failures_total",
			Help: "Requests to /admin or /debug/pprof refused for their credentials, by reason: bad_password, bad_key, or throttled (429: too many failures from the address).",
		}, []string{"reason"}),
		lines: limit.NewBucket(5, 20),
		now:   time.Now,
		addrs: make(map[string]*loginBudget),
	}
	for _, r := range []string{"bad_password", "bad_key", "throttled"} {
		l.failures.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(l.failures)
	}
	return l
}

// wait returns how long the client at remoteAddr must wait before its
// credentials are looked at again; 0: now.
func (l *Logins) wait(remoteAddr string) time.Duration {
	key := loginKey(remoteAddr)
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.addrs[key]
	if b == nil {
		if b = l.addrs["overflow"]; b == nil || len(l.addrs) < maxLoginAddrs {
			return 0
		}
	}
	l.refill(b)
	if b.tokens >= 1 {
		return 0
	}
	return time.Duration((1 - b.tokens) * float64(loginEvery))
}

// throttled counts a request refused by wait.
func (l *Logins) throttled() { l.failures.WithLabelValues("throttled").Inc() }

// failed records a failed login from remoteAddr.
func (l *Logins) failed(remoteAddr, reason string) {
	key := loginKey(remoteAddr)
	l.mu.Lock()
	b := l.budget(key)
	l.refill(b)
	b.tokens = max(0, b.tokens-1)
	wait := time.Duration(0)
	if b.tokens < 1 {
		wait = time.Duration((1 - b.tokens) * float64(loginEvery))
	}
	l.mu.Unlock()

	l.failures.WithLabelValues(reason).Inc()
	l.logLimited("admin login failed", "remote", key, "reason", reason)
	if wait > 0 {
		l.logLimited("admin login throttled", "remote", key, "retry_after", wait.Round(time.Second))
	}
}

// budget returns key's budget, made full on first use. Called with mu held.
func (l *Logins) budget(key string) *loginBudget {
	if b := l.addrs[key]; b != nil {
		return b
	}
	now := l.now()
	if len(l.addrs) >= maxLoginAddrs && now.Sub(l.lastPrune) >= time.Second {
		l.lastPrune = now
		for k, b := range l.addrs { // forget addresses that are forgiven
			if l.refill(b); b.tokens >= loginBurst {
				delete(l.addrs, k)
			}
		}
	}
	if len(l.addrs) >= maxLoginAddrs {
		key = "overflow"
		if b := l.addrs[key]; b != nil {
			return b
		}
	}
	b := &loginBudget{tokens: loginBurst, last: now}
	l.addrs[key] = b
	return b
}

// refill adds what b earned since it was last looked at. Called with mu
// held.
func (l *Logins) refill(b *loginBudget) {
	now := l.now()
	b.tokens = min(loginBurst, b.tokens+float64(now.Sub(b.last))/float64(loginEvery))
	b.last = now
}

func (l *Logins) logLimited(msg string, args ...any) {
	if !l.lines.Allow() {
		l.suppressed.Add(1)
		return
	}
	if n := l.suppressed.Swap(0); n > 0 {
		args = append(args, "suppressed_before", n)
	}
	l.log.Warn(msg, args...)
}

// loginKey is the address a login budget belongs to: the client's IP
// address, or for IPv6 its /64 (one host commonly has a whole /64).
func loginKey(remoteAddr string) string {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	a = a.Unmap()
	if a.Is6() {
		return netip.PrefixFrom(a, 64).Masked().String()
	}
	return a.String()
}
