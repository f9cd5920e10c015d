package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/protobuf/types/known/durationpb"

	"pushgate/gateway/redisengine/redistest"
	pb "pushgate/gen/pushgate/v1"
)

// readyz returns the HTTP status of a node's /readyz.
func readyz(t testing.TB, s *testServer) int {
	resp, err := http.Get("http://" + s.app.OpsAddr() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// A node whose link to Redis freezes (bytes held, no reset): it reports not
// ready within a third of the node ttl; once the cut outlasts the node ttl
// (the other node has reaped it) it closes its clients with 4003, and they
// resume on the other node with every stored message once; when the link
// thaws, late bytes and all, the node registers again, its new connections
// count in presence and receive sends, and nothing OK'd is lost or sent
// twice.
func TestClusterNodeCutOffFromRedis(t *testing.T) {
	r := redistest.Start(t)
	p := newStallProxy(t, r.Addr())
	const nodeTTL = 3 * time.Second
	args := []string{"--engine", "redis", "--node-ttl", nodeTTL.String(), "--redis-timeout", "500ms", "--presence-grace", "0"}
	a := startServer(t, append([]string{"--redis-url", "redis://" + p.addr() + "/0"}, args...)...)
	b := startServer(t, append([]string{"--redis-url", r.URL()}, args...)...)
	ctx := context.Background()
	ttl := durationpb.New(time.Hour)
	send := func(u string, n int) *pb.SendToUserResponse {
		t.Helper()
		resp, err := b.api.SendToUser(ctx, &pb.SendToUserRequest{UserId: u, Message: &pb.Message{Payload: &pb.Message_Json{Json: fmt.Sprintf(`{"n":%d}`, n)}, Ttl: ttl}})
		if err != nil {
			t.Fatalf("send %d to %s: %v", n, u, err)
		}
		return resp
	}

	mover := a.dialEnv(t, "/mover")   // on the node that will be cut off
	stayer := b.dialEnv(t, "/stayer") // on the other one
	if resp := send("mover", 0); resp.GetDeliveredConnections() != 1 {
		t.Fatalf("before the cut: %v", resp)
	}
	last := mover.nextMessage().ID
	if err := mover.c.Write(ctx, websocket.MessageText, []byte(`{"op":"ack","id":"`+last+`"}`)); err != nil {
		t.Fatal(err)
	}
	epoch := mover.hello.Epoch
	if readyz(t, a) != 200 {
		t.Fatal("node a not ready before the cut")
	}

	p.stall()
	cut := time.Now()
	eventually(t, "node a to report not ready", func() bool { return readyz(t, a) == 503 })
	notReady := time.Since(cut)
	t.Logf("not ready %v after the cut", notReady.Round(time.Millisecond))
	if bound := nodeTTL/3 + nodeTTL/6 + time.Second; notReady > bound {
		t.Fatalf("not ready after %v, bound %v", notReady, bound)
	}
	if readyz(t, b) != 200 {
		t.Fatal("node b not ready")
	}

	// Sent through b while a is cut off: stored, and a's client never sees
	// them there.
	var missed []string
	for n := 1; n <= 5; n++ {
		resp := send("mover", n)
		if !resp.GetStored() {
			t.Fatalf("send %d while cut off: %v, want stored", n, resp)
		}
		missed = append(missed, resp.GetMessageId())
		if resp := send("stayer", n); resp.GetDeliveredConnections() != 1 {
			t.Fatalf("send to the other node's user: %v", resp)
		}
		if m := stayer.nextMessage(); string(m.Data) != fmt.Sprintf(`{"n":%d}`, n) {
			t.Fatalf("stayer got %s", m.Data)
		}
	}

	// Sends stop counting the cut-off node's connection as reached once it
	// has missed a beat (two thirds of the node ttl), well before it is
	// reaped; the messages are stored all the same.
	for n := len(missed) + 1; ; n++ {
		resp := send("mover", n)
		if !resp.GetStored() {
			t.Fatalf("send %d while cut off: %v, want stored", n, resp)
		}
		missed = append(missed, resp.GetMessageId())
		if resp.GetDeliveredConnections() == 0 {
			break
		}
		if time.Since(cut) > waitFor {
			t.Fatal("sends still count the cut-off node's connection as reached")
		}
		time.Sleep(100 * time.Millisecond) // the next probe; the bound is checked below
	}
	claimed := time.Since(cut)
	t.Logf("sends stopped counting the cut-off connection %v after the cut", claimed.Round(time.Millisecond))
	if bound := 2*nodeTTL/3 + time.Second; claimed > bound {
		t.Fatalf("counted as reached for %v after the cut, bound %v", claimed, bound)
	}

	// Past the node ttl, a lets its client go with a reconnect code.
	if _, err := mover.waitEnd(); websocket.CloseStatus(err) != 4003 {
		t.Fatalf("the cut-off node's client ended with %v, want close 4003", err)
	}
	if gone := time.Since(cut); gone < nodeTTL {
		t.Fatalf("client closed %v after the cut, before the node ttl %v", gone, nodeTTL)
	}

	// It resumes on b: every stored message once, in order.
	moved := dialEnv(t, fmt.Sprintf("ws://%s/ws/mover?last_id=%s&epoch=%s", b.app.HTTPAddr(), last, epoch))
	if moved.hello.Recovered == nil || !*moved.hello.Recovered || moved.hello.Replayed != len(missed) {
		t.Fatalf("hello on the other node %+v, want recovered with %d replayed", moved.hello, len(missed))
	}
	for i, id := range missed {
		if m := moved.nextMessage(); m.ID != id || string(m.Data) != fmt.Sprintf(`{"n":%d}`, i+1) {
			t.Fatalf("replay %d: %s %s, want %s", i, m.ID, m.Data, id)
		}
	}

	// The link thaws, with whatever it held: a registers again and serves.
	p.thaw()
	eventually(t, "node a to be ready again", func() bool { return readyz(t, a) == 200 })
	back := a.dialEnv(t, "/back")
	eventually(t, "a's new connection to count in presence", func() bool { return b.online(t, "back") == 1 })
	if resp := send("back", 1); resp.GetDeliveredConnections() != 1 || !resp.GetOnline() {
		t.Fatalf("send to a connection on the healed node: %v", resp)
	}
	if m := back.nextMessage(); string(m.Data) != `{"n":1}` {
		t.Fatalf("healed node's client got %s", m.Data)
	}
	// Later sends reach the moved client once, after its replay.
	resp := send("mover", len(missed)+1)
	if m := moved.nextMessage(); m.ID != resp.GetMessageId() {
		t.Fatalf("after the replay: %s %s, want %s", m.ID, m.Data, resp.GetMessageId())
	}
	if n := b.online(t, "mover"); n != 1 {
		t.Fatalf("mover has %d connections, want 1 (on b)", n)
	}
	// And a's late heartbeat from before the cut did not keep a stale
	// registration: presence is the truth on both nodes.
	if n := a.online(t, "back"); n != 1 {
		t.Fatalf("a says back has %d connections", n)
	}
}
