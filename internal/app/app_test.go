package app

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"pushgate/gateway/redisengine/redistest"
	"pushgate/internal/config"
)

// newTestApp parses args as the command does (on loopback port 0 unless
// args say otherwise) and calls New.
func newTestApp(t *testing.T, args ...string) (*App, error) {
	t.Helper()
	args = append([]string{"--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", "--drain-window", "0s"}, args...)
	cfg, err := config.Parse(args, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	return New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
}

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// busyAddr returns a loopback address held by a listener until the test ends.
func busyAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String()
}

// settle waits until the goroutine count is back to base, or fails with the
// goroutines still running.
func settle(t *testing.T, base int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("goroutines: %d now, %d before New\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// bindable fails unless addr can be listened on again: whatever held it
// was closed.
func bindable(t *testing.T, flagName, addr string) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("%s %s still held after New failed: %v", flagName, addr, err)
	}
	ln.Close()
}

// failures are the ways New can fail after it has started the hub (and the
// engine): each step after it releases what came before.
func failures(t *testing.T) []struct {
	name, wantErr string
	args          []string
	freed         map[string]string // flag → address that must be free again
} {
	grpc1, grpc2, http2 := freeAddr(t), freeAddr(t), freeAddr(t)
	return []struct {
		name, wantErr string
		args          []string
		freed         map[string]string
	}{
		{"grpc tls", "--grpc-tls-cert", []string{"--grpc-tls-cert", "/nonexistent/cert.pem", "--grpc-tls-key", "/nonexistent/key.pem"}, nil},
		{"http listener", "--http-addr", []string{"--grpc-addr", grpc1, "--http-addr", busyAddr(t)},
			map[string]string{"--grpc-addr": grpc1}},
		{"ops listener", "--ops-addr", []string{"--grpc-addr", grpc2, "--http-addr", http2, "--ops-addr", busyAddr(t)},
			map[string]string{"--grpc-addr": grpc2, "--http-addr": http2}},
	}
}

func TestNewFailingReleasesEverything(t *testing.T) {
	for _, tc := range failures(t) {
		t.Run(tc.name, func(t *testing.T) {
			runtime.GC()
			base := runtime.NumGoroutine()
			a, err := newTestApp(t, tc.args...)
			if err == nil {
				a.Close()
				t.Fatal("New succeeded")
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want it to name %s", err, tc.wantErr)
			}
			for f, addr := range tc.freed {
				bindable(t, f, addr)
			}
			settle(t, base) // the hub's expiry loop is gone
		})
	}
}

func TestNewFailingWithRedisLeavesRedis(t *testing.T) {
	r := redistest.Start(t)
	rdb := r.Client()
	ctx := context.Background()
	nodes := func() int64 {
		t.Helper()
		n, err := rdb.ZCard(ctx, "{pushgate}:nodes").Result()
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	redisArgs := []string{"--engine", "redis", "--redis-url", r.URL()}

	// A node that starts is in Redis until it is closed.
	runtime.GC()
	base := runtime.NumGoroutine()
	a, err := newTestApp(t, redisArgs...)
	if err != nil {
		t.Fatal(err)
	}
	if n := nodes(); n != 1 {
		t.Fatalf("nodes in redis after New = %d, want 1", n)
	}
	a.Close()
	if n := nodes(); n != 0 {
		t.Fatalf("nodes in redis after Close = %d, want 0", n)
	}
	settle(t, base)

	for _, tc := range failures(t) {
		t.Run(tc.name, func(t *testing.T) {
			runtime.GC()
			base := runtime.NumGoroutine()
			a, err := newTestApp(t, append(append([]string{}, redisArgs...), tc.args...)...)
			if err == nil {
				a.Close()
				t.Fatal("New succeeded")
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want it to name %s", err, tc.wantErr)
			}
			if n := nodes(); n != 0 {
				t.Errorf("nodes in redis after New failed = %d, want 0 (the node would stay until reaped)", n)
			}
			if n, err := rdb.HLen(ctx, "{pushgate}:nconns").Result(); err != nil || n != 0 {
				t.Errorf("node connection counts in redis after New failed = %d, %v; want none", n, err)
			}
			for f, addr := range tc.freed {
				bindable(t, f, addr)
			}
			settle(t, base) // the engine's loops, its Redis client and the hub's expiry loop are gone
		})
	}
}

// The admin page and the demo's send endpoint take what the gRPC API takes:
// --max-payload-bytes and --inbox-max-ttl.
func TestSendEndpointsFollowConfiguredLimits(t *testing.T) {
	a, err := newTestApp(t, "--max-payload-bytes", "16", "--inbox-max-ttl", "1m")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Serve(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()

	post := func(path string, body any) (int, string) {
		t.Helper()
		b, _ := json.Marshal(body)
		resp, err := http.Post("http://"+a.HTTPAddr()+path, "application/json", strings.NewReader(string(b)))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out struct {
			Error string `json:"error"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil && !errors.Is(err, io.EOF) {
			t.Fatalf("%s: %v", path, err)
		}
		return resp.StatusCode, out.Error
	}
	for _, tc := range []struct {
		path      string
		body      map[string]any
		code      int
		errorHas  []string
		errorNone bool
	}{
		{"/admin/api/send", map[string]any{"target": "all", "text": strings.Repeat("x", 17)}, 413, []string{"text", "17", "16"}, false},
		{"/admin/api/send", map[string]any{"target": "all", "text": strings.Repeat("x", 16)}, 200, nil, true},
		{"/demo/send", map[string]any{"user_id": "u1", "json": `"` + strings.Repeat("x", 15) + `"`}, 413, []string{"json", "17", "16"}, false},
		{"/demo/send", map[string]any{"user_id": "u1", "json": `"` + strings.Repeat("x", 14) + `"`}, 200, nil, true},
		{"/demo/send", map[string]any{"user_id": "u1", "json": `{}`, "ttl_seconds": 61}, 400, []string{"ttl_seconds", "60"}, false},
		{"/demo/send", map[string]any{"user_id": "u1", "json": `{}`, "ttl_seconds": 60}, 200, nil, true},
	} {
		code, msg := post(tc.path, tc.body)
		if code != tc.code {
			t.Errorf("%s %v: status %d (%q), want %d", tc.path, tc.body, code, msg, tc.code)
		}
		for _, want := range tc.errorHas {
			if !strings.Contains(msg, want) {
				t.Errorf("%s %v: error %q does not mention %q", tc.path, tc.body, msg, want)
			}
		}
		if tc.errorNone && msg != "" {
			t.Errorf("%s %v: error %q", tc.path, tc.body, msg)
		}
	}
}
