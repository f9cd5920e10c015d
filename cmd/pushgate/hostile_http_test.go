package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"

	pb "pushgate/gen/pushgate/v1"
	"pushgate/internal/app"
	"pushgate/internal/config"
)

// Attacks on the HTTP side of a pushgate set up as in the README's
// "Quickstart with tokens": --auth jwt on a loopback --http-addr, no
// --ops-addr, no API keys, no admin password, so the admin page and pprof
// are open only because the listener is on loopback. Each case has an
// exact outcome, and a client connected before them keeps receiving.
func TestHostileHTTP(t *testing.T) {
	const (
		secret      = "q8V0e3s1vYxWm6Pz0TqfL2bA9rK7nC4d"
		readTimeout = 1500 * time.Millisecond
		maxHTTP     = 8
	)
	s := startServer(t, "--auth", "jwt", "--jwt-secret", secret, "--pprof",
		"--read-header-timeout", "1s", "--read-timeout", readTimeout.String(), "--max-http-connections", fmt.Sprint(maxHTTP))
	addr := s.app.HTTPAddr()
	_, port, _ := net.SplitHostPort(addr)
	ws := "ws://" + addr + "/ws"
	ctx := context.Background()
	tokenFor := func(user string) string {
		return signed(t, jwt.SigningMethodHS256, []byte(secret), claims(user), "")
	}
	// Every request of this test closes its connection, so that the
	// listener's count of open HTTP connections is the test's to know.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	dialOpts := func(h http.Header, host string) *websocket.DialOptions {
		return &websocket.DialOptions{HTTPClient: client, HTTPHeader: h, Host: host}
	}

	canary, _, err := websocket.Dial(ctx, ws, dialOpts(bearer(tokenFor("canary")), ""))
	if err != nil {
		t.Fatalf("canary refused: %v", err)
	}
	t.Cleanup(func() { canary.CloseNow() })
	canaryMsgs := readFrames(canary)
	// A second client that sends nothing until the last case, long after
	// --read-timeout has passed: WebSockets must not inherit it. (It reads,
	// so it answers the heartbeat, as a browser does.)
	quiet, _, err := websocket.Dial(ctx, ws, dialOpts(bearer(tokenFor("quiet")), ""))
	if err != nil {
		t.Fatalf("quiet client refused: %v", err)
	}
	t.Cleanup(func() { quiet.CloseNow() })
	quietSince := time.Now()
	quietMsgs := make(chan string, 10)
	go func() {
		defer close(quietMsgs)
		for {
			_, b, err := quiet.Read(context.Background())
			if err != nil {
				return
			}
			quietMsgs <- string(b)
		}
	}()

	// request sends one request with the given Host and returns its status.
	request := func(method, path, host, body string) (int, string, error) {
		req, _ := http.NewRequest(method, "http://"+addr+path, strings.NewReader(body))
		req.Host = host
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), nil
	}
	status := func(want int, method, path, host, body string) error {
		got, _, err := request(method, path, host, body)
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("%s %s with Host %s: HTTP %d, want %d", method, path, host, got, want)
		}
		return nil
	}
	// slowBody opens a connection and sends a request's headers with
	// Content-Length: 4000 and one byte of the body, then nothing more.
	slowBody := func(method, path, contentType string) (net.Conn, error) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return nil, err
		}
		req := method + " " + path + " HTTP/1.1\r\nHost: 127.0.0.1:" + port + "\r\n"
		if contentType != "" {
			req += "Content-Type: " + contentType + "\r\n"
		}
		if _, err := io.WriteString(c, req+"Content-Length: 4000\r\n\r\n{"); err != nil {
			c.Close()
			return nil, err
		}
		return c, nil
	}
	// answered reads what the server says on c until it closes it, and
	// returns the status line ("" if it closed without a word).
	answered := func(c net.Conn) (string, error) {
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(waitFor))
		b, err := io.ReadAll(c)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return "", fmt.Errorf("connection still held after %v (%d bytes answered)", waitFor, len(b))
		}
		line, _, _ := strings.Cut(string(b), "\r\n")
		return line, nil
	}
	// startRefused runs pushgate's start-up (config, then app.New) on args
	// and env and wants it refused with a message naming every one of
	// names and none of secrets.
	startRefused := func(args []string, env map[string]string, names, secrets []string) error {
		args = append([]string{"--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"}, args...)
		cfg, err := config.Parse(args, func(k string) string { return env[k] }, io.Discard)
		if err == nil {
			var a *app.App
			if a, err = app.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil))); err == nil {
				a.Close()
				return fmt.Errorf("started with %v %v", args, env)
			}
		}
		for _, n := range names {
			if !strings.Contains(err.Error(), n) {
				return fmt.Errorf("refused with %q, which does not name %s", err, n)
			}
		}
		for _, s := range secrets {
			if strings.Contains(err.Error(), s) {
				return fmt.Errorf("refusal %q shows the secret", err)
			}
		}
		return nil
	}

	foreign := "attacker.example:" + port
	cases := []struct {
		name string
		run  func() error
	}{
		// Finding 1: the admin page and pprof are open only because the
		// listener is on loopback; a page on a rebound name must not
		// reach them, although /ws next to them takes any Host.
		{"DNS rebinding: admin and pprof refuse a foreign Host under --auth jwt", func() error {
			return errors.Join(
				status(403, "GET", "/admin/api/users", foreign, ""),
				status(403, "GET", "/admin", foreign, ""),
				// Had these gone through, the canary would be sent
				// "rebound" or kicked, and the check after this case fail.
				status(403, "POST", "/admin/api/send", foreign, `{"target":"all","text":"rebound"}`),
				status(403, "POST", "/admin/api/kick", foreign, `{"user_id":"canary"}`),
				status(403, "GET", "/debug/pprof/goroutine?debug=1", foreign, ""),
				status(403, "GET", "/debug/pprof/profile?seconds=1", "rebound.example", ""),
			)
		}},
		{"from this machine the admin page answers (control)", func() error {
			return errors.Join(
				status(200, "GET", "/admin/api/users", "localhost:"+port, ""),
				status(200, "GET", "/admin/api/stats", addr, ""),
				status(200, "GET", "/healthz", foreign, ""), // not loopback-only: no auth needed
			)
		}},
		{"a token-authenticated WebSocket takes any Host (control)", func() error {
			c, _, err := websocket.Dial(ctx, ws, dialOpts(bearer(tokenFor("rebound-user")), foreign))
			if err != nil {
				return fmt.Errorf("refused: %v", err)
			}
			c.CloseNow()
			return nil
		}},

		// Also: the command line may carry a --jwt-secret.
		{"pprof does not serve the command line", func() error {
			got, body, err := request("GET", "/debug/pprof/cmdline", "localhost", "")
			if err != nil {
				return err
			}
			if got != 404 || strings.Contains(body, os.Args[0]) {
				return fmt.Errorf("HTTP %d %q, want 404 without the command line", got, body)
			}
			return nil
		}},
		{"a CPU profile longer than --read-timeout runs to its end (control)", func() error {
			start := time.Now()
			got, body, err := request("GET", "/debug/pprof/profile?seconds=2", "localhost", "")
			if err != nil {
				return err
			}
			if took := time.Since(start); got != 200 || len(body) == 0 || took < 2*time.Second {
				return fmt.Errorf("HTTP %d, %d bytes after %v; want a 2s profile", got, len(body), took)
			}
			return nil
		}},

		// Finding 5: a body that never finishes.
		{"a request body that never finishes is answered and cut after --read-timeout", func() error {
			var errs []error
			for _, r := range []struct{ method, path, contentType, want string }{
				{"POST", "/admin/api/send", "application/json", "HTTP/1.1 400 Bad Request"}, // the handler reads the body
				{"GET", "/healthz", "", "HTTP/1.1 200 OK"},                                  // the server reads it, to answer
			} {
				c, err := slowBody(r.method, r.path, r.contentType)
				if err != nil {
					return err
				}
				line, err := answered(c)
				if err == nil && line != r.want {
					err = fmt.Errorf("answered %q, want %q", line, r.want)
				}
				if err != nil {
					errs = append(errs, fmt.Errorf("%s %s: %w", r.method, r.path, err))
				}
			}
			return errors.Join(errs...)
		}},
		{"connections held by unfinished bodies are bounded by --max-http-connections", func() error {
			refusedBefore := s.metricVia(t, client, `pushgate_http_connections_refused_total{listener="http"}`)
			eventually(t, "no HTTP connection open", func() bool { return s.app.HTTPConns() == 0 })
			var held []net.Conn
			for range maxHTTP {
				c, err := slowBody("GET", "/healthz", "")
				if err != nil {
					return err
				}
				held = append(held, c)
			}
			// Past the limit: closed at once, unanswered. The listener
			// accepts in order, so these come after the held ones.
			const extra = 4
			for i := range extra {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					return err
				}
				c.SetReadDeadline(time.Now().Add(waitFor))
				n, err := c.Read(make([]byte, 1))
				c.Close()
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() || n > 0 {
					return fmt.Errorf("connection %d past the limit was served", maxHTTP+i+1)
				}
			}
			for i, c := range held {
				if line, err := answered(c); err != nil || line != "HTTP/1.1 200 OK" {
					return fmt.Errorf("held connection %d: %q, %v", i+1, line, err)
				}
			}
			if got := s.metricVia(t, client, `pushgate_http_connections_refused_total{listener="http"}`) - refusedBefore; got != extra {
				return fmt.Errorf("refused counter grew by %v, want %d", got, extra)
			}
			// Served again once they are gone.
			return status(200, "GET", "/healthz", "localhost", "")
		}},

		// Finding 7: the placeholders deploy/ used to ship, and weak values.
		{"shipped placeholder secrets and weak ones are refused at start", func() error {
			return errors.Join(
				startRefused(nil, map[string]string{"PUSHGATE_AUTH": "jwt", "PUSHGATE_JWT_SECRET": "change-me-jwt-secret-at-least-32-bytes-long"},
					[]string{"--jwt-secret", "PUSHGATE_JWT_SECRET", "placeholder"}, []string{"change-me-jwt-secret-at-least-32-bytes-long"}),
				startRefused(nil, map[string]string{"PUSHGATE_API_KEYS": "orders:change-me-orders-api-key,billing:change-me-billing-api-key"},
					[]string{"--api-keys", "PUSHGATE_API_KEYS", "orders", "placeholder"}, []string{"change-me-orders-api-key"}),
				startRefused([]string{"--api-keys", "examples:change-me-0123456789"}, nil,
					[]string{"--api-keys", "examples", "placeholder"}, []string{"change-me-0123456789"}),
				startRefused(nil, map[string]string{"PUSHGATE_ADMIN_PASSWORD": "change-me"},
					[]string{"--admin-password", "PUSHGATE_ADMIN_PASSWORD", "placeholder"}, nil),
				startRefused([]string{"--auth", "jwt", "--jwt-secret", strings.Repeat("s", 32)}, nil,
					[]string{"--jwt-secret", "different characters"}, []string{strings.Repeat("s", 32)}),
			)
		}},

		// Also: protected mode and client certificates.
		{"--grpc-client-ca alone does not let --grpc-addr leave loopback", func() error {
			ca := newCA(t)
			ca.issue(t, "server", false)
			return startRefused([]string{"--grpc-addr", "0.0.0.0:0", "--grpc-tls-cert", ca.file("server.pem"), "--grpc-tls-key", ca.file("server-key.pem"),
				"--grpc-client-ca", ca.file("ca.pem")}, nil, []string{"protected mode", "--grpc-addr", "--api-keys"}, nil)
		}},

		{"a WebSocket quiet for longer than --read-timeout still reads and writes (control)", func() error {
			if wait := 2*readTimeout - time.Since(quietSince); wait > 0 {
				time.Sleep(wait) // the deadline it must not have inherited
			}
			if err := quiet.Write(ctx, websocket.MessageText, []byte("ping")); err != nil {
				return err
			}
			next := func(want string) error {
				select {
				case got, ok := <-quietMsgs:
					if !ok || got != want {
						return fmt.Errorf("after %v quiet: %q (open: %v), want %s", time.Since(quietSince).Round(time.Millisecond), got, ok, want)
					}
					return nil
				case <-time.After(waitFor):
					return fmt.Errorf("no %s", want)
				}
			}
			if err := next(`{"type":"pong"}`); err != nil {
				return err
			}
			// And the server still writes to it.
			if _, err := s.api.SendToUser(ctx, &pb.SendToUserRequest{UserId: "quiet", Message: jsonMsg(`{"still":"here"}`)}); err != nil {
				return err
			}
			return next(`{"still":"here"}`)
		}},
	}
	runHostile(t, cases, s.api, canaryMsgs)
	t.Logf("%d hostile HTTP cases", len(cases))
	if strings.Contains(s.logs.String(), secret) {
		t.Error("logs contain the JWT secret")
	}
}
