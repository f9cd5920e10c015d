package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"
)

// adminPassword is given in a YAML file as written: digits with a leading
// zero, which YAML would otherwise read as a number.
const adminPassword = "0715294736150284"

// rawToken signs header and payload exactly as given (RS256, with the key
// the server trusts), so that tokens no JWT library would produce can be
// tried.
func (s *secureServer) rawToken(t testing.TB, header, payload string) string {
	t.Helper()
	enc := base64.RawURLEncoding
	ss := enc.EncodeToString([]byte(header)) + "." + enc.EncodeToString([]byte(payload))
	sig, err := jwt.SigningMethodRS256.Sign(ss, s.rsa)
	if err != nil {
		t.Fatal(err)
	}
	return ss + "." + enc.EncodeToString(sig)
}

// rawWS opens a WebSocket by hand, so that the test can write frames a
// well-behaved client library would not (floods of control frames).
func rawWS(addr string, h http.Header) (net.Conn, *bufio.Reader, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	req, _ := http.NewRequest("GET", "http://"+addr+"/ws", nil)
	req.Header = h.Clone()
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	req.Header.Set("Sec-WebSocket-Version", "13")
	if err := req.Write(c); err != nil {
		c.Close()
		return nil, nil, err
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		c.Close()
		return nil, nil, fmt.Errorf("handshake: HTTP %d", resp.StatusCode)
	}
	return c, br, nil
}

// maskedFrame is a client frame (FIN set, masked) with a short payload.
func maskedFrame(opcode byte, payload []byte) []byte {
	f := []byte{0x80 | opcode, 0x80 | byte(len(payload)), 0, 0, 0, 0}
	rand.Read(f[2:6])
	for i, b := range payload {
		f = append(f, b^f[2+i%4])
	}
	return f
}

// controlFlood writes n control frames of opcode and reads what the server
// sends back: how many pongs, and the close code (-1 if the connection
// ended without a close frame, 0 if it is still open after 10s).
func controlFlood(addr string, h http.Header, opcode byte, n int) (pongs int, code int, err error) {
	c, br, err := rawWS(addr, h)
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	go func() {
		buf := make([]byte, 0, 64<<10)
		for i := range n {
			buf = append(buf, maskedFrame(opcode, []byte{byte(i)})...)
			if len(buf) > 60<<10 || i == n-1 {
				if _, err := c.Write(buf); err != nil {
					return // closed on us
				}
				buf = buf[:0]
			}
		}
	}()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		var hdr [2]byte
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return pongs, 0, nil
			}
			return pongs, -1, nil
		}
		size := int(hdr[1] & 0x7f)
		switch size {
		case 126:
			var ext [2]byte
			io.ReadFull(br, ext[:])
			size = int(binary.BigEndian.Uint16(ext[:]))
		case 127:
			var ext [8]byte
			io.ReadFull(br, ext[:])
			size = int(binary.BigEndian.Uint64(ext[:]))
		}
		payload := make([]byte, size)
		if _, err := io.ReadFull(br, payload); err != nil {
			return pongs, -1, nil
		}
		switch hdr[0] & 0x0f {
		case 0xA:
			pongs++
		case 0x8:
			if len(payload) < 2 {
				return pongs, 1005, nil
			}
			return pongs, int(binary.BigEndian.Uint16(payload)), nil
		}
	}
}

// TestHostileClientInput is the attack suite's part about what a client can
// send: control-frame floods, tokens that a lenient parser would take, the
// admin page's login, the upstream user patterns, the recent-errors list
// and settings read from a YAML file. Each case checks its exact outcome,
// and a client connected before all of them must keep receiving.
func TestHostileClientInput(t *testing.T) {
	cfgFile := filepath.Join(t.TempDir(), "pushgate.yaml")
	if err := os.WriteFile(cfgFile, []byte("admin-password: "+adminPassword+"\nupstream-users: ['*']\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startSecure(t, "--config", cfgFile)
	addr := s.app.HTTPAddr()
	ws := "ws://" + addr + "/ws"
	ctx := context.Background()

	_, canary := dialStatus(t, ws, bearer(s.token(t, "canary")))
	if canary == nil {
		t.Fatal("canary refused")
	}
	canaryMsgs := readFrames(canary)

	httpStatus := func(want int, h http.Header) func() error {
		return func() error {
			if got, _ := dialStatus(t, ws, h); got != want {
				return fmt.Errorf("HTTP %d, want %d", got, want)
			}
			return nil
		}
	}
	now := time.Now().Unix()
	payload := func(kv ...any) string {
		m := map[string]any{"aud": "pushgate", "iss": "shop", "exp": now + 3600}
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == nil {
				delete(m, kv[i].(string))
			} else {
				m[kv[i].(string)] = kv[i+1]
			}
		}
		b, _ := json.Marshal(m)
		return string(b)
	}
	const rs256 = `{"alg":"RS256","typ":"JWT"}`
	flood := func(opcode byte) func() error {
		return func() error {
			// --upstream-rate 50: bursts of 101 frames, and 50 more
			// for every second the flood takes (a loaded machine may
			// take tens of milliseconds to send it).
			start := time.Now()
			pongs, code, err := controlFlood(addr, bearer(s.token(t, "flooder")), opcode, 10000)
			most := 101 + int(math.Ceil(50*time.Since(start).Seconds()))
			switch {
			case err != nil:
				return err
			case code != 4002:
				return fmt.Errorf("close %d after %d pongs, want 4002", code, pongs)
			case pongs > most:
				return fmt.Errorf("%d pongs, want at most %d", pongs, most)
			}
			return nil
		}
	}
	admin := func(method, path, user, pass string) (int, string, error) {
		req, _ := http.NewRequest(method, "http://"+addr+path, nil)
		if user == "" {
			req.Header.Set("Authorization", "Bearer "+pass)
		} else {
			req.SetBasicAuth(user, pass)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), nil
	}
	tried := []string{}

	cases := []struct {
		name string
		run  func() error
	}{
		// WebSocket control frames count against --upstream-rate.
		{"10,000 control-frame pings", flood(0x9)},
		{"10,000 unsolicited control-frame pongs", flood(0xA)},

		// Tokens are parsed strictly.
		{"hand-made token (control)", func() error {
			if code, _ := dialStatus(t, ws, bearer(s.rawToken(t, rs256, payload("sub", "handmade", "iat", now)))); code != 0 {
				return fmt.Errorf("HTTP %d, want it accepted", code)
			}
			return nil
		}},
		{"claim names in upper case (SUB)", httpStatus(401, bearer(s.rawToken(t, rs256, payload("sub", nil, "SUB", "upper"))))},
		{"two sub claims", httpStatus(401, bearer(s.rawToken(t, rs256,
			fmt.Sprintf(`{"sub":"twice","aud":"pushgate","iss":"shop","exp":%d,"sub":"victim"}`, now+3600))))},
		{"exp as a string", httpStatus(401, bearer(s.rawToken(t, rs256, payload("sub", "string-exp", "exp", fmt.Sprint(now+3600)))))},
		{"unknown crit header", httpStatus(401, bearer(s.rawToken(t, `{"alg":"RS256","typ":"JWT","crit":["x-ext"],"x-ext":1}`, payload("sub", "crit"))))},
		{"token valid for a year (over --jwt-max-lifetime 24h)", httpStatus(401, bearer(s.rawToken(t, rs256, payload("sub", "year", "iat", now, "exp", now+365*86400))))},
		{"iat in the future", httpStatus(401, bearer(s.rawToken(t, rs256, payload("sub", "future", "iat", now+1800))))},

		// --upstream-users '*' is everyone, a user id with '/' included.
		{"upstream send from a user id with /", func() error {
			c, _, err := websocket.Dial(ctx, ws, &websocket.DialOptions{HTTPHeader: bearer(s.token(t, "shop/42")), Subprotocols: []string{"pushgate.v1"}})
			if err != nil {
				return err
			}
			defer c.CloseNow()
			if op, _ := readEnvelope(t, c); op != "hello" {
				return fmt.Errorf("first frame %s", op)
			}
			c.Write(ctx, websocket.MessageText, []byte(`{"op":"send","ref":1,"data":{"n":1}}`))
			if op, code := readEnvelope(t, c); op != "sent" {
				return fmt.Errorf("got %s/%s, want sent", op, code)
			}
			return nil
		}},

		// The admin page.
		{"admin password from the YAML file, as written", func() error {
			code, body, err := admin("GET", "/admin/api/stats", "admin", adminPassword)
			if err != nil || code != 200 {
				return fmt.Errorf("HTTP %d %q, %v; want 200", code, body, err)
			}
			return nil
		}},
		{"recent errors quote what clients sent", func() error {
			origin := "https://evil.example.net allow_with=--allowed-origins attacker.example"
			if code, _ := dialStatus(t, ws, http.Header{"Authorization": {"Bearer " + s.token(t, "u")}, "Origin": {origin}}); code != 403 {
				return fmt.Errorf("HTTP %d, want 403", code)
			}
			code, body, err := admin("GET", "/admin/api/errors", "", ordersKey)
			if err != nil || code != 200 {
				return fmt.Errorf("errors: HTTP %d, %v", code, err)
			}
			var entries []struct{ Message, Attrs string }
			json.Unmarshal([]byte(body), &entries)
			want := `origin="https://evil.example.net allow_with=--allowed-origins attacker.example" host=` + addr
			for _, e := range entries {
				if e.Message == "websocket origin refused" {
					if e.Attrs != want && !strings.HasPrefix(e.Attrs, want+" suppressed_before=") {
						return fmt.Errorf("attrs %s, want %s", e.Attrs, want)
					}
					return nil
				}
			}
			return fmt.Errorf("no origin refusal in %s", body)
		}},
		{"failed admin logins are throttled", func() error {
			for i := range 10 {
				pass := fmt.Sprintf("guess-%d-%s", i, adminPassword)
				tried = append(tried, pass)
				if code, _, err := admin("GET", "/admin/api/stats", "admin", pass); err != nil || code != 401 {
					return fmt.Errorf("guess %d: HTTP %d, %v; want 401", i+1, code, err)
				}
			}
			// Once throttled, even the right password waits.
			code, body, err := admin("GET", "/admin/api/stats", "admin", adminPassword)
			if err != nil || code != 429 {
				return fmt.Errorf("11th attempt: HTTP %d %q, %v; want 429", code, body, err)
			}
			return nil
		}},
	}
	runHostile(t, cases, s.orders, canaryMsgs)
	t.Logf("%d hostile client cases", len(cases))

	for series, want := range map[string]float64{
		`pushgate_upstream_rate_limited_total`:                       2,
		`pushgate_auth_failures_total{reason="bad_claim"}`:           2,
		`pushgate_auth_failures_total{reason="no_subject"}`:          1,
		`pushgate_auth_failures_total{reason="bad_header"}`:          1,
		`pushgate_auth_failures_total{reason="too_long_lived"}`:      1,
		`pushgate_auth_failures_total{reason="not_yet_valid"}`:       1,
		`pushgate_admin_login_failures_total{reason="bad_password"}`: 10,
		`pushgate_admin_login_failures_total{reason="throttled"}`:    1,
	} {
		if got := s.metric(t, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	logs := s.logs.String()
	if n := strings.Count(logs, `msg="admin login failed"`); n != 10 {
		t.Errorf("%d admin login failures logged, want 10", n)
	}
	for _, secret := range append(tried, adminPassword) {
		if strings.Contains(logs, secret) {
			t.Errorf("logs contain a tried or the real admin password (%.8s…)", secret)
		}
	}
}
