package gateway

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
)

func TestEnvelopeEncoding(t *testing.T) {
	at := time.UnixMilli(1763800000123)
	cases := []struct {
		m    *Message
		want string
	}{
		{&Message{ID: "01KAMX3Q4N6ZQ2V8C4P7R5T9WB", Type: "order.paid", Kind: KindJSON, Time: at,
			Data: []byte("{\n  \"type\": 1,\n  \"orderId\": 1786543212345678901,\n  \"content\": \"订单号: 20261122001\"\n}")},
			`{"op":"message","id":"01KAMX3Q4N6ZQ2V8C4P7R5T9WB","type":"order.paid","ts":1763800000123,"data":{"type":1,"orderId":1786543212345678901,"content":"订单号: 20261122001"}}`},
		{&Message{ID: "01KAMX3Q4N6ZQ2V8C4P7R5T9WC", Kind: KindText, Topic: "todo:team-7", Time: at, Data: []byte("line1\nline2 \"quoted\" <b>")},
			`{"op":"message","id":"01KAMX3Q4N6ZQ2V8C4P7R5T9WC","topic":"todo:team-7","ts":1763800000123,"data":"line1\nline2 \"quoted\" \u003cb\u003e"}`},
		{&Message{ID: "01KAMX3Q4N6ZQ2V8C4P7R5T9WD", Kind: KindBinary, broadcast: true, Time: at, Data: []byte{0, 1, 2, 0xff}},
			`{"op":"message","id":"01KAMX3Q4N6ZQ2V8C4P7R5T9WD","broadcast":true,"ts":1763800000123,"data":"AAEC/w==","encoding":"base64"}`},
	}
	for _, tc := range cases {
		got := string(tc.m.envelope())
		if got != tc.want {
			t.Errorf("envelope:\n got %s\nwant %s", got, tc.want)
		}
		if strings.Contains(got, "\n") {
			t.Errorf("envelope contains a raw newline: %s", got)
		}
		if !json.Valid([]byte(got)) {
			t.Errorf("envelope is not JSON: %s", got)
		}
		first, again := tc.m.envelope(), tc.m.envelope()
		if &first[0] != &again[0] {
			t.Error("envelope encoded twice")
		}
	}
}

func TestParseClientOp(t *testing.T) {
	for _, tc := range []struct {
		in      string
		op      string
		wantErr bool
	}{
		{`{"op":"ack","id":"01KAMX3Q4N6ZQ2V8C4P7R5T9WB"}`, "ack", false},
		{`{"op":"subscribe","topic":"store:1","ref":"a1"}`, "subscribe", false},
		{`{"op":"subscribe","topic":"store:1","ref":42}`, "subscribe", false},
		{` {"op":"ping"} `, "ping", false},
		{`{"op":"send","data":{"x":[1,2]},"type":"t"}`, "send", false},
		{`{"topic":"x"}`, "", true},
		{`[1,2]`, "", true},
		{`{"op":`, "", true},
		{``, "", true},
		{`{"op":"ack","ref":{"nested":true}}`, "ack", true},
		{`{"op":"ack","ref":"` + strings.Repeat("r", 70) + `"}`, "ack", true},
	} {
		op, err := parseClientOp([]byte(tc.in))
		if (err != nil) != tc.wantErr || (!tc.wantErr && op.Op != tc.op) {
			t.Errorf("parseClientOp(%s) = %+v, %v", tc.in, op, err)
		}
	}
}

func FuzzParseClientOp(f *testing.F) {
	for _, s := range []string{`{"op":"ack","ids":["a","b"]}`, `{"op":"subscribe","topic":"t","ref":1}`, `{"op":"send","data":null}`, `{`, "\x00", `{"op":"x","ref":"\u0000"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		op, err := parseClientOp(p)
		if err == nil && op.Op == "" {
			t.Fatal("accepted a frame without op")
		}
		if len(op.Ref) > 64 {
			t.Fatal("kept an oversize ref")
		}
		// Whatever was accepted must be echoable into a valid frame.
		if err == nil && !json.Valid(errorFrame(op.Ref, "bad_request", "x").data) {
			t.Fatalf("reply with ref %q is not JSON", op.Ref)
		}
	})
}

// testHub serves a hub with the memory engine over httptest; rules, if
// set, limits topics.
func testHub(t testing.TB, cfg Config, rules []string) (*Hub, *httptest.Server) {
	return testHubWith(t, cfg, rules, MemoryEngine())
}

// newTestHub returns a hub with the memory engine.
func newTestHub(tb testing.TB, cfg Config) *Hub {
	tb.Helper()
	h, err := NewHub(cfg, slog.New(slog.DiscardHandler), prometheus.NewRegistry(), MemoryEngine())
	if err != nil {
		tb.Fatal(err)
	}
	return h
}

// testHubWith is testHub with the engine newEngine makes.
func testHubWith(t testing.TB, cfg Config, rules []string, newEngine NewEngine) (*Hub, *httptest.Server) {
	t.Helper()
	return testHubReg(t, cfg, rules, newEngine, prometheus.NewRegistry())
}

// testHubReg is testHubWith with the hub's metrics in reg.
func testHubReg(t testing.TB, cfg Config, rules []string, newEngine NewEngine, reg *prometheus.Registry) (*Hub, *httptest.Server) {
	t.Helper()
	h, err := NewHub(cfg, slog.New(slog.DiscardHandler), reg, newEngine)
	if err != nil {
		t.Fatal(err)
	}
	return h, serveHub(t, h, rules, httptest.NewServer)
}

// serveHub serves h's WebSocket endpoint (/ws/{userID}) on a test server
// that newServer starts (httptest.NewServer or NewTLSServer); the server
// and the hub are shut down at the end of the test.
func serveHub(t testing.TB, h *Hub, rules []string, newServer func(http.Handler) *httptest.Server) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ws/{userID}", func(w http.ResponseWriter, r *http.Request) {
		h.serve(w, r, r.PathValue("userID"), rules, grants{}, time.Time{})
	})
	srv := newServer(mux)
	t.Cleanup(func() {
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		h.Shutdown(ctx, 0)
		h.Engine().Close(ctx)
	})
	return srv
}

func dialEnvelope(t *testing.T, url string) *websocket.Conn {
	t.Helper()
	c, _, err := websocket.Dial(context.Background(), url, &websocket.DialOptions{Subprotocols: []string{Subprotocol}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c
}

func TestBacklogGoesOutAsOneFrame(t *testing.T) {
	h, srv := testHub(t, Config{}, nil)
	for i := range 5 {
		p := Push{Kind: KindJSON, Data: []byte(`{"i":` + string(rune('0'+i)) + `}`), TTL: time.Minute}
		if _, err := h.Engine().SendToUsers(context.Background(), []string{"u"}, p); err != nil {
			t.Fatal(err)
		}
	}
	c := dialEnvelope(t, "ws"+srv.URL[4:]+"/ws/u")
	_, data, err := c.Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.Split(data, []byte("\n"))
	if len(lines) != 6 || !bytes.Contains(lines[0], []byte(`"op":"hello"`)) {
		t.Fatalf("first frame has %d envelopes, want the hello and 5 messages in one frame:\n%s", len(lines), data)
	}
	for i, l := range lines[1:] {
		if !bytes.Contains(l, []byte(`"data":{"i":`+string(rune('0'+i))+`}`)) {
			t.Fatalf("envelope %d = %s", i, l)
		}
	}
}

func TestTopicRulesAreEnforced(t *testing.T) {
	_, srv := testHub(t, Config{}, []string{"store:1", "todo:*"})
	base := "ws" + srv.URL[4:] + "/ws/u"

	// At connect: refused with 403 before the upgrade.
	_, resp, err := websocket.Dial(context.Background(), base+"?topics=store:2", nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("?topics=store:2: %v %v, want 403", resp, err)
	}
	c := dialEnvelope(t, base+"?topics=todo:team-7")
	read := func() string {
		_, b, err := c.Read(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if hello := read(); !strings.Contains(hello, `"topics":["todo:team-7"]`) {
		t.Fatalf("hello = %s", hello)
	}
	for _, tc := range []struct{ topic, want string }{
		{"store:1", `{"op":"subscribed","ref":1,"topic":"store:1"}`},
		{"store:2", `{"op":"error","ref":1,"code":"forbidden","message":"not allowed to subscribe to store:2"}`},
		{"todo:x", `{"op":"subscribed","ref":1,"topic":"todo:x"}`},
	} {
		c.Write(context.Background(), websocket.MessageText, []byte(`{"op":"subscribe","ref":1,"topic":"`+tc.topic+`"}`))
		if got := read(); got != tc.want {
			t.Fatalf("subscribe %s: %s, want %s", tc.topic, got, tc.want)
		}
	}
}

// A client may send its first frame in the same packet as its handshake;
// those bytes sit in net/http's buffer and must reach the connection.
func TestFrameRightBehindTheHandshake(t *testing.T) {
	_, srv := testHub(t, Config{}, nil)
	c, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	mask := [4]byte{1, 2, 3, 4}
	frame := []byte{0x81, 0x80 | 4, mask[0], mask[1], mask[2], mask[3]}
	for i, b := range []byte("ping") {
		frame = append(frame, b^mask[i%4])
	}
	req := "GET /ws/early HTTP/1.1\r\nHost: " + srv.Listener.Addr().String() + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
	if _, err := c.Write(append([]byte(req), frame...)); err != nil { // one write: handshake and frame together
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: %v %v", resp, err)
	}
	head := make([]byte, 2)
	if _, err := io.ReadFull(br, head); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, head[1]&0x7f)
	io.ReadFull(br, body)
	if head[0] != 0x81 || string(body) != `{"type":"pong"}` {
		t.Fatalf("got frame %x %q, want the pong", head, body)
	}
}
