package web

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"pushgate/gateway"
)

// fakeHub records what the handlers send.
type fakeHub struct {
	AdminHub // the methods the tests do not call
	sent     []gateway.Push
}

func (f *fakeHub) Config() gateway.Config { return gateway.Config{MaxUserIDBytes: 128} }

func (f *fakeHub) SendToUsers(_ context.Context, userIDs []string, p gateway.Push) (gateway.Sent, error) {
	f.sent = append(f.sent, p)
	return gateway.Sent{ID: gateway.NewID(), Users: []gateway.Delivery{{UserID: userIDs[0], Online: true, Delivered: 1}}}, nil
}

func (f *fakeHub) Broadcast(_ context.Context, p gateway.Push, _ []string) (gateway.Sent, error) {
	f.sent = append(f.sent, p)
	return gateway.Sent{ID: gateway.NewID(), Connections: 1}, nil
}

// post sends body as JSON to h and returns the status and the error field.
func post(t *testing.T, h http.Handler, path string, body any) (int, string) {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest("POST", path, strings.NewReader(string(b)))
	r.Header.Set("Content-Type", "application/json")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	var out struct {
		Error string `json:"error"`
	}
	json.Unmarshal(w.Body.Bytes(), &out)
	return w.Code, out.Error
}

func quoted(n int) string { return `"` + strings.Repeat("x", n-2) + `"` } // n bytes of JSON

func TestSendLimitsAreTheConfiguredOnes(t *testing.T) {
	small := SendLimits{MaxPayloadBytes: 100, MaxTTL: 90 * time.Second}
	big := SendLimits{MaxPayloadBytes: 512 << 10} // past the old fixed 64 KiB and the 128 KiB body cap
	type check struct {
		body     map[string]any
		code     int
		errorHas []string // each in the error; none: no error
	}
	for _, tc := range []struct {
		name   string
		lim    SendLimits
		path   string
		checks []check
	}{
		{"admin, small", small, "/admin/api/send", []check{
			{map[string]any{"target": "all", "text": strings.Repeat("x", 101)}, 413, []string{"text", "101", "100", "--max-payload-bytes"}},
			{map[string]any{"target": "all", "text": strings.Repeat("x", 100)}, 200, nil},
			{map[string]any{"target": "all", "text": ""}, 400, []string{"text"}},
		}},
		{"admin, default", SendLimits{}, "/admin/api/send", []check{
			{map[string]any{"target": "all", "text": strings.Repeat("x", 64<<10+1)}, 413, []string{"text", "65536"}},
			{map[string]any{"target": "all", "text": strings.Repeat("x", 64<<10)}, 200, nil},
		}},
		{"admin, big", big, "/admin/api/send", []check{
			{map[string]any{"target": "all", "text": strings.Repeat("x", 512<<10)}, 200, nil},
			{map[string]any{"target": "all", "text": strings.Repeat("x", 512<<10+1)}, 413, []string{"text"}},
		}},
		{"demo, small", small, "/demo/send", []check{
			{map[string]any{"user_id": "u1", "json": quoted(101)}, 413, []string{"json", "101", "100", "--max-payload-bytes"}},
			{map[string]any{"user_id": "u1", "json": quoted(100)}, 200, nil},
			{map[string]any{"user_id": "u1", "json": "{"}, 400, []string{"json"}},
			{map[string]any{"user_id": "u1", "json": "{}", "ttl_seconds": 91}, 400, []string{"ttl_seconds", "90", "--inbox-max-ttl"}},
			{map[string]any{"user_id": "u1", "json": "{}", "ttl_seconds": 90}, 200, nil},
			{map[string]any{"user_id": "u1", "json": "{}", "ttl_seconds": -1}, 400, []string{"ttl_seconds"}},
		}},
		{"demo, default", SendLimits{}, "/demo/send", []check{
			{map[string]any{"user_id": "u1", "json": quoted(64<<10 + 1)}, 413, []string{"json", "65536"}},
			{map[string]any{"user_id": "u1", "json": quoted(64 << 10), "ttl_seconds": 86400}, 200, nil},
			{map[string]any{"user_id": "u1", "json": "{}", "ttl_seconds": 86401}, 400, []string{"ttl_seconds", "86400"}},
		}},
		{"demo, big", big, "/demo/send", []check{
			{map[string]any{"user_id": "u1", "json": quoted(512 << 10)}, 200, nil},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hub := &fakeHub{}
			var h http.Handler
			if tc.path == "/demo/send" {
				h = DevSendHandler(hub, tc.lim)
			} else {
				h = AdminHandler(AdminConfig{Hub: hub, Limits: tc.lim})
			}
			for i, c := range tc.checks {
				sent := len(hub.sent)
				code, msg := post(t, h, tc.path, c.body)
				what := fmt.Sprintf("%s, check %d", tc.path, i)
				if c.code != code {
					t.Errorf("%s: status %d (%q), want %d", what, code, msg, c.code)
				}
				for _, want := range c.errorHas {
					if !strings.Contains(msg, want) {
						t.Errorf("%s: error %q does not mention %q", what, msg, want)
					}
				}
				if c.errorHas == nil && msg != "" {
					t.Errorf("%s: error %q", what, msg)
				}
				if refused := c.code != 200; refused == (len(hub.sent) > sent) {
					t.Errorf("%s: status %d, but sent %d messages", what, code, len(hub.sent)-sent)
				}
			}
		})
	}
}

func TestOversizedBodyIs413(t *testing.T) {
	h := DevSendHandler(&fakeHub{}, SendLimits{MaxPayloadBytes: 10})
	code, msg := post(t, h, "/demo/send", map[string]any{"user_id": "u1", "json": "{}", "pad": strings.Repeat("x", 200<<10)})
	if code != http.StatusRequestEntityTooLarge || !strings.Contains(msg, "request body") {
		t.Fatalf("status %d %q, want 413 naming the request body", code, msg)
	}
}
