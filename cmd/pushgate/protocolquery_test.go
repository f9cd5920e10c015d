package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "pushgate/gen/pushgate/v1"
)

// dialEnvQuery opens an envelope connection that asks for the format with
// ?protocol=pushgate.v1, offering the given subprotocols (none, as uni-app
// does), and checks which subprotocol the handshake answered.
func dialEnvQuery(t *testing.T, url string, offer []string, wantSub string) *envClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: offer})
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	if c.Subprotocol() != wantSub || resp.Header.Get("Sec-WebSocket-Protocol") != wantSub {
		t.Fatalf("dial %s offering %q: subprotocol %q, want %q", url, offer, c.Subprotocol(), wantSub)
	}
	return startEnvClient(t, c, 64)
}

// ?protocol=pushgate.v1 selects the envelope format without the
// Sec-WebSocket-Protocol header (uni-app, WebView bridges): ids, acks and
// resume work as with the subprotocol, and the handshake answers no
// subprotocol the client did not offer.
func TestEnvelopeByQueryParameter(t *testing.T) {
	s := startServer(t)
	ctx := context.Background()
	base := "ws://" + s.app.HTTPAddr() + "/ws/shop-7"

	e := dialEnvQuery(t, base+"?protocol=pushgate.v1", nil, "")
	if e.hello.UserID != "shop-7" {
		t.Fatalf("hello %+v", e.hello)
	}
	for _, text := range []string{"one", "two"} {
		if _, err := s.api.SendToUser(ctx, &pb.SendToUserRequest{UserId: "shop-7", Message: &pb.Message{Type: "order.remind",
			Payload: &pb.Message_Text{Text: text}, Ttl: durationpb.New(time.Minute)}}); err != nil {
			t.Fatal(err)
		}
	}
	first, second := e.nextMessage(), e.nextMessage()
	if first.Type != "order.remind" || first.ID == "" || string(first.Data) != `"one"` || string(second.Data) != `"two"` {
		t.Fatalf("messages %+v, %+v", first, second)
	}
	e.c.Close(websocket.StatusNormalClosure, "")

	// Resuming after the first replays the second, still without the header.
	r := dialEnvQuery(t, base+"?protocol=pushgate.v1&last_id="+first.ID+"&epoch="+e.hello.Epoch, nil, "")
	if got := r.nextMessage(); got.ID != second.ID {
		t.Fatalf("resumed with %+v, want %s", got, second.ID)
	}

	// Offered and asked for in the query: the subprotocol is answered.
	dialEnvQuery(t, base+"?protocol=pushgate.v1", []string{"pushgate.v1"}, "pushgate.v1")

	// Any other value is refused, naming the parameter.
	req, _ := http.NewRequest("GET", "http://"+s.app.HTTPAddr()+"/ws/shop-7?protocol=raw", nil)
	for k, v := range map[string]string{"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="} {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.HasPrefix(string(body), "protocol: ") {
		t.Fatalf("?protocol=raw: %d %q, want 400 naming protocol", resp.StatusCode, body)
	}
	if got := s.metric(t, `pushgate_handshakes_rejected_total{reason="bad_protocol"}`); got != 1 {
		t.Errorf("bad_protocol rejections = %v, want 1", got)
	}
}
