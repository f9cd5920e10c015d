package web

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestFailedLoginsAreThrottledPerAddress(t *testing.T) {
	var logs lockedBuffer
	reg := prometheus.NewRegistry()
	logins := NewLogins(slog.New(slog.NewTextHandler(&logs, nil)), reg)
	clock := time.Unix(1_800_000_000, 0)
	logins.now = func() time.Time { return clock }
	const password = "correct-horse-battery"
	h := AdminConfig{Password: password, APIKey: func(k string) bool { return k == "the-api-key-0123456789" }, Logins: logins}.
		Guard(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	try := func(remote string, set func(*http.Request)) *httptest.ResponseRecorder {
		r := httptest.NewRequest("GET", "/admin/api/stats", nil)
		r.RemoteAddr = remote
		if set != nil {
			set(r)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	basic := func(user, pass string) func(*http.Request) {
		return func(r *http.Request) { r.SetBasicAuth(user, pass) }
	}
	bearer := func(key string) func(*http.Request) {
		return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+key) }
	}
	const attacker, other = "192.0.2.7:5000", "198.51.100.1:5000"

	if w := try(attacker, nil); w.Code != 401 || w.Header().Get("WWW-Authenticate") == "" {
		t.Fatalf("no credentials: %d, want 401 with a challenge", w.Code)
	}
	var tried []string
	for i := range loginBurst {
		pass := "guess-" + strings.Repeat("x", i)
		tried = append(tried, pass)
		set := basic("admin", pass)
		if i%2 == 1 {
			set = bearer(pass)
		}
		if w := try(attacker, set); w.Code != 401 {
			t.Fatalf("guess %d: %d, want 401", i+1, w.Code)
		}
	}
	// Throttled: even the right password waits, and says for how long.
	w := try(attacker, basic("admin", password))
	if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") != "6" {
		t.Fatalf("after %d failures: %d Retry-After %q, want 429 and 6", loginBurst, w.Code, w.Header().Get("Retry-After"))
	}
	// Another address, and the same one from another port, are separate
	// and the same.
	if w := try(other, basic("admin", password)); w.Code != http.StatusNoContent {
		t.Fatalf("another address: %d, want 204", w.Code)
	}
	if w := try("192.0.2.7:6000", bearer("the-api-key-0123456789")); w.Code != http.StatusTooManyRequests {
		t.Fatalf("same address, other port: %d, want 429", w.Code)
	}
	// One more try is earned every loginEvery.
	clock = clock.Add(loginEvery)
	if w := try(attacker, basic("admin", password)); w.Code != http.StatusNoContent {
		t.Fatalf("after %v: %d, want 204", loginEvery, w.Code)
	}
	if w := try(attacker, basic("admin", "wrong")); w.Code != 401 {
		t.Fatalf("the earned try: %d, want 401", w.Code)
	}
	tried = append(tried, "wrong")
	if w := try(attacker, basic("admin", password)); w.Code != http.StatusTooManyRequests {
		t.Fatalf("after the earned try: %d, want 429", w.Code)
	}

	for reason, want := range map[string]float64{"bad_password": 6, "bad_key": 5, "throttled": 3} {
		var m dto.Metric
		logins.failures.WithLabelValues(reason).Write(&m)
		if got := m.GetCounter().GetValue(); got != want {
			t.Errorf("failures{reason=%q} = %v, want %v", reason, got, want)
		}
	}
	out := logs.String()
	if n := strings.Count(out, `msg="admin login failed"`); n != 11 {
		t.Errorf("%d failures logged, want 11:\n%s", n, out)
	}
	if !strings.Contains(out, `msg="admin login throttled" remote=192.0.2.7 retry_after=6s`) {
		t.Errorf("throttling not logged:\n%s", out)
	}
	for _, secret := range append(tried, password) {
		if strings.Contains(out, secret) {
			t.Errorf("the log contains a tried password %q", secret)
		}
	}
}

func TestLoginKeys(t *testing.T) {
	for addr, want := range map[string]string{
		"192.0.2.7:5000":              "192.0.2.7",
		"[::ffff:192.0.2.7]:5000":     "192.0.2.7",
		"[2001:db8:1:2:3:4:5:6]:5000": "2001:db8:1:2::/64",
		"[2001:db8:1:2:ff::1]:6000":   "2001:db8:1:2::/64",
		"not an address":              "not an address",
	} {
		if got := loginKey(addr); got != want {
			t.Errorf("loginKey(%q) = %q, want %q", addr, got, want)
		}
	}
}

// Past maxLoginAddrs remembered addresses, new ones share one budget, so
// that many addresses cannot grow the map without bound; forgiven
// addresses are forgotten first.
func TestLoginAddressesAreBounded(t *testing.T) {
	logins := NewLogins(nil, nil)
	clock := time.Unix(1_800_000_000, 0)
	logins.now = func() time.Time { return clock }
	for i := range maxLoginAddrs {
		logins.addrs[fmt.Sprint("key-", i)] = &loginBudget{tokens: 0, last: clock}
	}
	for range loginBurst {
		logins.failed("203.0.113.9:1", "bad_password")
	}
	if _, own := logins.addrs["203.0.113.9"]; own || len(logins.addrs) != maxLoginAddrs+1 {
		t.Fatalf("%d addresses remembered (own entry: %v), want the full map and the overflow", len(logins.addrs), own)
	}
	if logins.wait("203.0.113.10:1") == 0 {
		t.Fatal("a new address past the bound does not share the overflow's budget")
	}
	// Once the others are forgiven, they are forgotten and a new address
	// gets its own budget again.
	clock = clock.Add(loginBurst * loginEvery)
	logins.failed("203.0.113.11:1", "bad_password")
	if _, own := logins.addrs["203.0.113.11"]; !own || len(logins.addrs) != 1 {
		t.Fatalf("after forgiving: %d addresses (own entry: %v), want 1", len(logins.addrs), own)
	}
}
