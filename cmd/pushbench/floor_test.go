package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	pb "pushgate/gen/pushgate/v1"
)

// The floor's own handshake and frames, read by a strict client
// (coder/websocket fails on a bad accept key, a masked or reserved-bit
// frame, or a wrong length), at each length encoding's edges.
func TestFloorFrames(t *testing.T) {
	f := newFloor()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ws/{user}", f.serveWS)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var clients []*websocket.Conn
	for _, u := range []string{"a", "b"} {
		c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/ws/"+u, nil)
		if err != nil {
			t.Fatal(err)
		}
		c.SetReadLimit(1 << 20)
		defer c.CloseNow()
		clients = append(clients, c)
	}
	waitFor(t, func() bool { f.mu.RLock(); defer f.mu.RUnlock(); return len(f.users) == 2 })

	for _, n := range []int{0, 1, 125, 126, 65535, 65536, 100000} {
		p := bytes.Repeat([]byte("x"), n)
		r, err := f.Broadcast(ctx, &pb.BroadcastRequest{Message: &pb.Message{Payload: &pb.Message_Json{Json: string(p)}}})
		if err != nil || r.DeliveredConnections != 2 {
			t.Fatalf("broadcast of %d bytes: %v, %d delivered", n, err, r.GetDeliveredConnections())
		}
		for i, c := range clients {
			typ, got, err := c.Read(ctx)
			if err != nil || typ != websocket.MessageText || !bytes.Equal(got, p) {
				t.Fatalf("client %d, %d bytes: %v %v, %d bytes read", i, n, err, typ, len(got))
			}
		}
	}
	r, err := f.SendToUser(ctx, &pb.SendToUserRequest{UserId: "b", Message: &pb.Message{Payload: &pb.Message_Json{Json: `{"to":"b"}`}}})
	if err != nil || !r.Online || r.DeliveredConnections != 1 {
		t.Fatalf("send to b: %v %v", r, err)
	}
	if _, got, err := clients[1].Read(ctx); err != nil || string(got) != `{"to":"b"}` {
		t.Fatalf("b read %q, %v", got, err)
	}

	// A client that leaves is forgotten.
	clients[0].CloseNow()
	waitFor(t, func() bool { f.mu.RLock(); defer f.mu.RUnlock(); return len(f.users) == 1 })

	// Not a WebSocket handshake: 400.
	resp, err := http.Get(srv.URL + "/ws/c")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("plain GET: %d, want 400", resp.StatusCode)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 20s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
