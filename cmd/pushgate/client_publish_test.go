package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"pushgate/gateway/token"
	pb "pushgate/gen/pushgate/v1"
)

const publishSecret = "p7Qw2zLr9TxK4mVb8NcY1sHd6JfA3eGu"

// tokenURL is the path and query of an envelope connection with a token
// for user granting g, plus extra query parameters.
func tokenURL(t *testing.T, user string, g token.Grants, extra string) string {
	t.Helper()
	tok, err := token.MintGrants(token.MintConfig{Secret: []byte(publishSecret)}, user, time.Hour, g)
	if err != nil {
		t.Fatal(err)
	}
	return "?token=" + url.QueryEscape(tok) + extra
}

// nextOp returns the next frame that is not a message, failing after
// skipping more than a few messages.
func (e *envClient) expectReply(op, ref string) env {
	e.t.Helper()
	f := e.next()
	if f.Op != op || string(f.Ref) != ref {
		e.t.Fatalf("%s: got %+v, want %s with ref %s", e.hello.UserID, f, op, ref)
	}
	return f
}

// expectFrom checks that the next frame is a message from user with data.
func (e *envClient) expectFrom(from, typ, data string) env {
	e.t.Helper()
	m := e.nextMessage()
	if m.From != from || m.Type != typ || string(m.Data) != data {
		e.t.Fatalf("%s got %+v (from %q), want from %q type %q data %s", e.hello.UserID, m, m.From, from, typ, data)
	}
	return m
}

// Publishing from a client, allowed by the token's pub claim: everyone
// subscribed gets the message with the sender's id as the server knows it,
// whatever the frame says; exclude_sender leaves the sending page out; a
// token without the claim, or a topic outside it, is refused.
func TestClientPublishByClaim(t *testing.T) {
	s := startServer(t, "--auth", "jwt", "--jwt-secret", publishSecret)
	join := "&topics=todo:team-7"
	alice := s.dialEnv(t, tokenURL(t, "alice", token.Grants{Topics: []string{"todo:*"}, Publish: []string{"todo:*"}}, join))
	aliceTab := s.dialEnv(t, tokenURL(t, "alice", token.Grants{Topics: []string{"todo:*"}, Publish: []string{"todo:*"}}, join))
	bob := s.dialEnv(t, tokenURL(t, "bob", token.Grants{Topics: []string{"todo:*"}}, join))

	// "from" and "user_id" in the frame do not name the sender.
	alice.send(map[string]any{"op": "publish", "topic": "todo:team-7", "type": "todo.added", "data": map[string]any{"title": "milk"},
		"from": "mallory", "user_id": "mallory", "ref": "p1"})
	// The sender's own page gets the message too, before or after the reply.
	var reply env
	for range 2 {
		f := alice.next()
		switch f.Op {
		case "published":
			reply = f
		case "message":
			if f.From != "alice" || string(f.Data) != `{"title":"milk"}` {
				t.Fatalf("alice's own message: %+v", f)
			}
		default:
			t.Fatalf("alice got %+v", f)
		}
	}
	if string(reply.Ref) != `"p1"` || len(reply.ID) != 26 {
		t.Fatalf("published reply %+v, want ref p1 and a message id", reply)
	}
	for _, c := range []*envClient{aliceTab, bob} {
		if m := c.expectFrom("alice", "todo.added", `{"title":"milk"}`); m.ID != reply.ID || m.Topic != "todo:team-7" {
			t.Fatalf("message %+v, want id %s on todo:team-7", m, reply.ID)
		}
	}

	// exclude_sender: the other tab and bob, not the sending page.
	alice.send(map[string]any{"op": "publish", "topic": "todo:team-7", "data": map[string]any{"done": 1}, "exclude_sender": true, "ref": 2})
	alice.expectReply("published", "2")
	aliceTab.expectFrom("alice", "", `{"done":1}`)
	bob.expectFrom("alice", "", `{"done":1}`)

	// Refused: bob has no pub claim; alice's claim does not cover chat:1.
	bob.send(map[string]any{"op": "publish", "topic": "todo:team-7", "data": 1, "ref": "b1"})
	if f := bob.expectReply("error", `"b1"`); f.Code != "forbidden" {
		t.Fatalf("bob's publish: %+v, want forbidden", f)
	}
	alice.send(map[string]any{"op": "publish", "topic": "chat:1", "data": 1, "ref": "c1"})
	if f := alice.expectReply("error", `"c1"`); f.Code != "forbidden" || f.Message != "not allowed to publish to chat:1" {
		t.Fatalf("alice's publish to chat:1: %+v, want forbidden", f)
	}
	// Nor may alice send to a user: no dm claim, no server pattern.
	alice.send(map[string]any{"op": "direct", "user_id": "bob", "data": 1, "ref": "d1"})
	if f := alice.expectReply("error", `"d1"`); f.Code != "forbidden" {
		t.Fatalf("alice's direct: %+v, want forbidden", f)
	}
	// Malformed: no data, a bad topic.
	alice.send(map[string]any{"op": "publish", "topic": "todo:team-7", "ref": "x1"})
	if f := alice.expectReply("error", `"x1"`); f.Code != "bad_request" {
		t.Fatalf("publish without data: %+v", f)
	}
	alice.send(map[string]any{"op": "publish", "topic": "todo team", "data": 1, "ref": "x2"})
	if f := alice.expectReply("error", `"x2"`); f.Code != "bad_topic" {
		t.Fatalf("publish to a bad topic: %+v", f)
	}
	// Nothing else reached bob or the other tab: the next is this marker.
	alice.send(map[string]any{"op": "publish", "topic": "todo:team-7", "data": "end", "exclude_sender": true, "ref": "e"})
	alice.expectReply("published", `"e"`)
	bob.expectFrom("alice", "", `"end"`)
	aliceTab.expectFrom("alice", "", `"end"`)

	if v := s.metric(t, `pushgate_client_publish_total{result="published"}`); v != 3 {
		t.Errorf(`pushgate_client_publish_total{result="published"} = %v, want 3`, v)
	}
	if v := s.metric(t, `pushgate_client_publish_total{result="forbidden"}`); v != 3 {
		t.Errorf(`pushgate_client_publish_total{result="forbidden"} = %v, want 3`, v)
	}
}

// Without tokens, the server's patterns say what any client may publish
// (--client-publish-topics) and whom it may send to (--client-direct-users).
func TestClientPublishByServerPattern(t *testing.T) {
	s := startServer(t, "--client-publish-topics", "room:*,lobby", "--client-direct-users", "support-*")
	ann := s.dialEnv(t, "/ann?topics=room:1,lobby,other:1")
	ben := s.dialEnv(t, "/ben?topics=room:1,lobby,other:1")
	agent := s.dialEnv(t, "/support-7")

	for i, topic := range []string{"room:1", "lobby"} {
		ann.send(map[string]any{"op": "publish", "topic": topic, "data": i, "exclude_sender": true, "ref": i})
		ann.expectReply("published", fmt.Sprint(i))
	}
	ben.expectFrom("ann", "", `0`)
	ben.expectFrom("ann", "", `1`)
	ann.send(map[string]any{"op": "publish", "topic": "other:1", "data": 2, "ref": "o"})
	if f := ann.expectReply("error", `"o"`); f.Code != "forbidden" {
		t.Fatalf("publish to other:1: %+v, want forbidden", f)
	}
	ann.send(map[string]any{"op": "direct", "user_id": "support-7", "type": "ticket", "data": map[string]any{"q": "refund?"}, "ref": "d"})
	ann.expectReply("published", `"d"`)
	agent.expectFrom("ann", "ticket", `{"q":"refund?"}`)
	ann.send(map[string]any{"op": "direct", "user_id": "ben", "data": 3, "ref": "b"})
	if f := ann.expectReply("error", `"b"`); f.Code != "forbidden" || f.Message != "not allowed to send messages to ben" {
		t.Fatalf("direct to ben: %+v, want forbidden", f)
	}
	// ben got only the two topic messages.
	ann.send(map[string]any{"op": "publish", "topic": "lobby", "data": "end", "exclude_sender": true})
	ben.expectFrom("ann", "", `"end"`)
}

// The mini-program pattern ({toUserId, message} relayed by a hand-written
// endpoint): a buyer's client sends to a shop's user directly when its
// token's dm claim allows it. The shop's envelope page sees who sent it;
// its raw mini-program connection gets the payload as is. A user the claim
// does not cover is refused, and nothing reaches them.
func TestClientDirectLikeAMiniProgram(t *testing.T) {
	s := startServer(t, "--auth", "jwt", "--jwt-secret", publishSecret)
	buyer := s.dialEnv(t, tokenURL(t, "buyer-1", token.Grants{Direct: []string{"shop-*"}}, ""))
	shopPage := s.dialEnv(t, tokenURL(t, "shop-9", token.Grants{}, ""))
	shopApp := dialWS(t, "ws://"+s.app.HTTPAddr()+"/ws"+tokenURL(t, "shop-9", token.Grants{}, ""))
	other := s.dialEnv(t, tokenURL(t, "buyer-2", token.Grants{}, ""))

	buyer.send(map[string]any{"op": "direct", "user_id": "shop-9", "type": "chat", "data": map[string]any{"message": "is order 7 ready?"}, "ref": 1})
	reply := buyer.expectReply("published", "1")
	if m := shopPage.expectFrom("buyer-1", "chat", `{"message":"is order 7 ready?"}`); m.ID != reply.ID || m.Topic != "" {
		t.Fatalf("shop page got %+v, want id %s and no topic", m, reply.ID)
	}
	shopApp.expect(`{"message":"is order 7 ready?"}`)

	buyer.send(map[string]any{"op": "direct", "user_id": "buyer-2", "data": map[string]any{"message": "hi"}, "ref": 2})
	if f := buyer.expectReply("error", "2"); f.Code != "forbidden" {
		t.Fatalf("direct to buyer-2: %+v, want forbidden", f)
	}
	buyer.send(map[string]any{"op": "direct", "user_id": "", "data": 1, "ref": 3})
	if f := buyer.expectReply("error", "3"); f.Code != "bad_request" {
		t.Fatalf("direct without user_id: %+v, want bad_request", f)
	}
	// buyer-2 can publish nothing either, and received nothing.
	other.send(map[string]any{"op": "direct", "user_id": "shop-9", "data": 1, "ref": 4})
	if f := other.expectReply("error", "4"); f.Code != "forbidden" {
		t.Fatalf("buyer-2's direct: %+v, want forbidden", f)
	}
	buyer.send(map[string]any{"op": "direct", "user_id": "shop-9", "data": "end"})
	shopPage.expectFrom("buyer-1", "", `"end"`)
	shopApp.expect(`"end"`)
}

// Publishing faster than --client-publish-rate closes the connection with
// 4002, as any other rate limit does.
func TestClientPublishRateLimit(t *testing.T) {
	s := startServer(t, "--client-publish-topics", "room:*", "--client-publish-rate", "1")
	listener := s.dialEnv(t, "/listener?topics=room:1")
	c := s.dialEnv(t, "/fast")
	// A burst of 3 passes (twice the rate, plus one); the rest are over.
	// The server may close the connection before the last ones are
	// written: a write error after the first four is the limit at work,
	// and the client may then not read the close frame, so the code is
	// checked on the server's side too.
	writeFailed := false
	for i := range 10 {
		b, _ := json.Marshal(map[string]any{"op": "publish", "topic": "room:1", "data": i})
		if err := c.c.Write(context.Background(), websocket.MessageText, b); err != nil {
			if i < 4 {
				t.Fatalf("publish %d: %v", i, err)
			}
			writeFailed = true
			break
		}
	}
	_, err := c.waitEnd()
	if code := websocket.CloseStatus(err); code != 4002 && !writeFailed {
		t.Fatalf("closed with %v (%v), want 4002", code, err)
	}
	if v := s.metric(t, `pushgate_connections_closed_total{reason="rate_limited"}`); v != 1 {
		t.Fatalf(`pushgate_connections_closed_total{reason="rate_limited"} = %v, want 1`, v)
	}
	if v := s.metric(t, `pushgate_client_publish_total{result="rate_limited"}`); v != 1 {
		t.Fatalf(`pushgate_client_publish_total{result="rate_limited"} = %v, want 1`, v)
	}
	// The burst went through, in order, and nothing after the limit.
	if _, err := s.api.Publish(context.Background(), &pb.PublishRequest{Topic: "room:1", Message: jsonMsg(`"end"`)}); err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		m := listener.nextMessage()
		if string(m.Data) == `"end"` {
			if i < 3 || i > 4 {
				t.Fatalf("%d publishes reached the topic, want the burst of 3 (4 if a second passed)", i)
			}
			return
		}
		if string(m.Data) != fmt.Sprint(i) || m.From != "fast" {
			t.Fatalf("message %d: %+v", i, m)
		}
	}
}

// "pushgate token --pub --dm" mints the claims, and a refresh replaces
// them: a connection that loses its pub claim may no longer publish.
func TestRefreshReplacesPublishClaims(t *testing.T) {
	s := startServer(t, "--auth", "jwt", "--jwt-secret", publishSecret)
	mint := func(args ...string) string {
		t.Helper()
		var out strings.Builder
		if err := runToken(append([]string{"--user", "u1", "--jwt-secret", publishSecret}, args...), func(string) string { return "" }, &out); err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(out.String())
	}
	e := s.dialEnv(t, "?token="+mint("--pub", "todo:*", "--dm", "shop-*"))
	e.send(map[string]any{"op": "publish", "topic": "todo:1", "data": 1, "ref": 1})
	e.expectReply("published", "1")
	e.send(map[string]any{"op": "direct", "user_id": "shop-1", "data": 1, "ref": 2})
	e.expectReply("published", "2")
	e.send(map[string]any{"op": "refresh", "token": mint("--dm", "shop-1"), "ref": 3})
	e.expectReply("refreshed", "3")
	e.send(map[string]any{"op": "publish", "topic": "todo:1", "data": 1, "ref": 4})
	if f := e.expectReply("error", "4"); f.Code != "forbidden" {
		t.Fatalf("publish after the claim was dropped: %+v", f)
	}
	e.send(map[string]any{"op": "direct", "user_id": "shop-2", "data": 1, "ref": 5})
	if f := e.expectReply("error", "5"); f.Code != "forbidden" {
		t.Fatalf("direct outside the new dm claim: %+v", f)
	}
	e.send(map[string]any{"op": "direct", "user_id": "shop-1", "data": 1, "ref": 6})
	e.expectReply("published", "6")
	var out strings.Builder
	if err := runToken([]string{"--user", "u1", "--jwt-secret", publishSecret, "--dm", "[a-"}, func(string) string { return "" }, &out); err == nil || !strings.Contains(err.Error(), "--dm") {
		t.Fatalf("a bad --dm pattern: %v, want an error naming --dm", err)
	}
}
