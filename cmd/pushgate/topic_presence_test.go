package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"pushgate/gateway/redisengine/redistest"
	"pushgate/gateway/token"
	pb "pushgate/gen/pushgate/v1"
)

// topicPresence pages through GetTopicPresence with the given page size
// and returns "user:connections" entries and the first page's totals.
func topicPresence(t testing.TB, s *testServer, topic string, size int32) (users []string, totalUsers, totalConns int64) {
	t.Helper()
	tok := ""
	for page := 0; ; page++ {
		resp, err := s.api.GetTopicPresence(context.Background(), &pb.GetTopicPresenceRequest{Topic: topic, PageSize: size, PageToken: tok})
		if err != nil {
			t.Fatalf("GetTopicPresence(%s): %v", topic, err)
		}
		if page == 0 {
			totalUsers, totalConns = resp.GetTotalUsers(), resp.GetTotalConnections()
		}
		for _, u := range resp.GetUsers() {
			users = append(users, fmt.Sprintf("%s:%d", u.GetUserId(), u.GetConnections()))
		}
		if tok = resp.GetNextPageToken(); tok == "" {
			return users, totalUsers, totalConns
		}
	}
}

// waitTopicPresence waits until the topic's presence, paged by size, is
// want (users and totals).
func waitTopicPresence(t testing.TB, s *testServer, topic string, size int32, want []string, wantConns int64) {
	t.Helper()
	var got []string
	var tu, tc int64
	deadline := time.Now().Add(waitFor)
	for {
		got, tu, tc = topicPresence(t, s, topic, size)
		if slices.Equal(got, want) && tu == int64(len(want)) && tc == wantConns {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("presence of %s = %v (%d users, %d connections), want %v (%d connections)", topic, got, tu, tc, want, wantConns)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// GetTopicPresence lists a topic's subscribers with their connections,
// a page at a time, and follows subscribes, unsubscribes and closes; bad
// requests name the field; the HTTP/JSON API serves it too.
func TestTopicPresence(t *testing.T) {
	s := startServer(t, "--presence-grace", "0")
	alice1 := s.dialEnv(t, "/alice?topics=todo:1")
	alice2 := s.dialEnv(t, "/alice?topics=todo:1,chat:1")
	bob := s.dialEnv(t, "/bob?topics=todo:1")
	s.dialEnv(t, "/carol?topics=chat:1")

	waitTopicPresence(t, s, "todo:1", 100, []string{"alice:2", "bob:1"}, 3)
	waitTopicPresence(t, s, "chat:1", 100, []string{"alice:1", "carol:1"}, 2)
	// One user a page: two pages, then the end.
	resp, err := s.api.GetTopicPresence(context.Background(), &pb.GetTopicPresenceRequest{Topic: "todo:1", PageSize: 1})
	if err != nil || len(resp.GetUsers()) != 1 || resp.GetUsers()[0].GetUserId() != "alice" || resp.GetNextPageToken() == "" {
		t.Fatalf("first page = %v, %v", resp, err)
	}
	resp, err = s.api.GetTopicPresence(context.Background(), &pb.GetTopicPresenceRequest{Topic: "todo:1", PageSize: 1, PageToken: resp.GetNextPageToken()})
	if err != nil || len(resp.GetUsers()) != 1 || resp.GetUsers()[0].GetUserId() != "bob" || resp.GetNextPageToken() != "" {
		t.Fatalf("second page = %v, %v", resp, err)
	}
	// A topic nobody is subscribed to is empty, not an error.
	waitTopicPresence(t, s, "todo:2", 10, nil, 0)

	bob.send(map[string]any{"op": "unsubscribe", "topic": "todo:1", "ref": 1})
	bob.expectReply("unsubscribed", "1")
	waitTopicPresence(t, s, "todo:1", 100, []string{"alice:2"}, 2)
	alice1.c.Close(websocket.StatusNormalClosure, "")
	waitTopicPresence(t, s, "todo:1", 100, []string{"alice:1"}, 1)
	alice2.c.Close(websocket.StatusNormalClosure, "")
	waitTopicPresence(t, s, "todo:1", 100, nil, 0)
	waitTopicPresence(t, s, "chat:1", 100, []string{"carol:1"}, 1)

	// The HTTP/JSON API maps the call.
	api := s.jsonAPI(t, "")
	a := api.post("GetTopicPresence", "application/json", `{"topic":"chat:1"}`)
	if a.status != 200 || !strings.Contains(a.raw, `"userId":"carol"`) || !strings.Contains(a.raw, `"totalUsers":"1"`) {
		t.Fatalf("HTTP GetTopicPresence: %d %s", a.status, a.raw)
	}
	if a := api.post("GetTopicPresence", "application/json", `{"topic":"bad topic"}`); a.status != 400 || !strings.HasPrefix(a.message(), "topic:") {
		t.Fatalf("HTTP GetTopicPresence with a bad topic: %d %s", a.status, a.raw)
	}

	for _, c := range []struct {
		req   *pb.GetTopicPresenceRequest
		field string
	}{
		{&pb.GetTopicPresenceRequest{}, "topic"},
		{&pb.GetTopicPresenceRequest{Topic: strings.Repeat("t", 129)}, "topic"},
		{&pb.GetTopicPresenceRequest{Topic: "todo:1", PageSize: 1001}, "page_size"},
		{&pb.GetTopicPresenceRequest{Topic: "todo:1", PageSize: -1}, "page_size"},
		{&pb.GetTopicPresenceRequest{Topic: "todo:1", PageToken: "not-a-token"}, "page_token"},
	} {
		_, err := s.api.GetTopicPresence(context.Background(), c.req)
		if status.Code(err) != codes.InvalidArgument || !strings.HasPrefix(status.Convert(err).Message(), c.field+":") {
			t.Errorf("GetTopicPresence(%v) = %v, want INVALID_ARGUMENT naming %s", c.req, err, c.field)
		}
	}
}

// expectTopicEvent checks that the next event is a join (or leave) of
// user on topic.
func expectTopicEvent(t *testing.T, w *cursorWatcher, join bool, user, topic string) {
	t.Helper()
	e := w.next()
	var u, tp string
	if join {
		u, tp = e.GetTopicJoin().GetUserId(), e.GetTopicJoin().GetTopic()
	} else {
		u, tp = e.GetTopicLeave().GetUserId(), e.GetTopicLeave().GetTopic()
	}
	if u != user || tp != topic {
		t.Fatalf("event %v, want join=%v of %s on %s", e, join, user, topic)
	}
	if e.GetCursor() == "" {
		t.Fatalf("event %v has no cursor", e)
	}
}

// Topics matching --topic-presence-events report a user's first
// subscription as a join and its last as a leave (not every connection's);
// other topics report nothing.
func TestTopicPresenceEvents(t *testing.T) {
	s := startServer(t, "--presence-grace", "0", "--topic-presence-events", "todo:*,room")
	w := s.watchAfter(t, "", pb.EventKind_EVENT_KIND_TOPIC_JOIN, pb.EventKind_EVENT_KIND_TOPIC_LEAVE)

	alice1 := s.dialEnv(t, "/alice?topics=todo:1")
	expectTopicEvent(t, w, true, "alice", "todo:1")
	// A second connection of alice, and topics without events: nothing.
	alice2 := s.dialEnv(t, "/alice?topics=todo:1,chat:1,roomy")
	waitTopicPresence(t, s, "todo:1", 100, []string{"alice:2"}, 2)
	waitTopicPresence(t, s, "roomy", 100, []string{"alice:1"}, 1)
	bob := s.dialEnv(t, "/bob")
	bob.send(map[string]any{"op": "subscribe", "topic": "room", "ref": 1})
	bob.replySkippingPresence("subscribed", "1")
	expectTopicEvent(t, w, true, "bob", "room")

	alice1.c.Close(websocket.StatusNormalClosure, "")
	waitTopicPresence(t, s, "todo:1", 100, []string{"alice:1"}, 1)
	alice2.send(map[string]any{"op": "unsubscribe", "topic": "chat:1", "ref": 2})
	alice2.expectReply("unsubscribed", "2")
	alice2.send(map[string]any{"op": "unsubscribe", "topic": "todo:1", "ref": 3})
	alice2.expectReply("unsubscribed", "3")
	expectTopicEvent(t, w, false, "alice", "todo:1")
	bob.c.Close(websocket.StatusNormalClosure, "")
	expectTopicEvent(t, w, false, "bob", "room")
	alice2.c.Close(websocket.StatusNormalClosure, "")
	waitTopicPresence(t, s, "roomy", 100, nil, 0)
	// Nothing for roomy (not "room", and no pattern covers it).
	s.dialEnv(t, "/carol?topics=todo:9")
	expectTopicEvent(t, w, true, "carol", "todo:9")

	// The same events are in the event log, in order: a stream resuming
	// from the oldest gets them again.
	r := s.watchAfter(t, "0", pb.EventKind_EVENT_KIND_TOPIC_JOIN, pb.EventKind_EVENT_KIND_TOPIC_LEAVE)
	expectTopicEvent(t, r, true, "alice", "todo:1")
	expectTopicEvent(t, r, true, "bob", "room")
	expectTopicEvent(t, r, false, "alice", "todo:1")
	expectTopicEvent(t, r, false, "bob", "room")
	expectTopicEvent(t, r, true, "carol", "todo:9")
}

// replySkippingPresence is expectReply for a connection that may get join
// and leave frames before the reply.
func (e *envClient) replySkippingPresence(op, ref string) env {
	e.t.Helper()
	for {
		f := e.next()
		if f.Op == "join" || f.Op == "leave" {
			continue
		}
		if f.Op != op || string(f.Ref) != ref {
			e.t.Fatalf("%s: got %+v, want %s with ref %s", e.hello.UserID, f, op, ref)
		}
		return f
	}
}

// expectPresenceFrame checks that the next frame is a join (or leave) of
// user on topic.
func (e *envClient) expectPresenceFrame(op, user, topic string) {
	e.t.Helper()
	if f := e.next(); f.Op != op || f.UserID != user || f.Topic != topic {
		e.t.Fatalf("%s got %+v, want %s of %s on %s", e.hello.UserID, f, op, user, topic)
	}
}

// On a topic matching --topic-presence-events, every envelope subscriber
// gets a join frame for a user's first subscription and a leave frame for
// its last, on any node; raw subscribers and other topics get none.
func TestTopicPresenceFrames(t *testing.T) {
	s := startServer(t, "--presence-grace", "0", "--topic-presence-events", "todo:*")
	watcher := s.dialEnv(t, "/watcher?topics=todo:1,chat:1")
	watcher.expectPresenceFrame("join", "watcher", "todo:1")
	raw := s.dialQuery(t, "raw", "topics=todo:1")
	watcher.expectPresenceFrame("join", "raw", "todo:1")

	alice1 := s.dialEnv(t, "/alice?topics=todo:1")
	watcher.expectPresenceFrame("join", "alice", "todo:1")
	alice1.expectPresenceFrame("join", "alice", "todo:1")
	alice2 := s.dialEnv(t, "/alice?topics=todo:1")
	waitTopicPresence(t, s, "todo:1", 100, []string{"alice:2", "raw:1", "watcher:1"}, 4)
	s.dialEnv(t, "/bob?topics=chat:1")
	waitTopicPresence(t, s, "chat:1", 100, []string{"bob:1", "watcher:1"}, 2)
	alice1.c.Close(websocket.StatusNormalClosure, "")
	waitTopicPresence(t, s, "todo:1", 100, []string{"alice:1", "raw:1", "watcher:1"}, 3)
	alice2.c.Close(websocket.StatusNormalClosure, "")
	watcher.expectPresenceFrame("leave", "alice", "todo:1")

	// Nothing else came: the next frame is this message, for both.
	if _, err := s.api.Publish(context.Background(), &pb.PublishRequest{Topic: "todo:1", Message: jsonMsg(`{"end":1}`)}); err != nil {
		t.Fatal(err)
	}
	if m := watcher.nextMessage(); string(m.Data) != `{"end":1}` {
		t.Fatalf("watcher got %+v, want the marker", m)
	}
	raw.expect(`{"end":1}`)
}

// An envelope client reads a topic's presence when its token's presence
// claim, or --client-presence-topics, allows it; otherwise "forbidden".
func TestClientPresenceByClaim(t *testing.T) {
	s := startServer(t, "--auth", "jwt", "--jwt-secret", publishSecret, "--client-presence-topics", "lobby")
	alice := s.dialEnv(t, tokenURL(t, "alice", token.Grants{Topics: []string{"todo:*"}, Presence: []string{"todo:*"}}, "&topics=todo:team-7"))
	bob := s.dialEnv(t, tokenURL(t, "bob", token.Grants{Topics: []string{"todo:*", "lobby"}}, "&topics=todo:team-7,lobby"))
	waitTopicPresence(t, s, "todo:team-7", 100, []string{"alice:1", "bob:1"}, 2)
	waitTopicPresence(t, s, "lobby", 100, []string{"bob:1"}, 1)

	alice.send(map[string]any{"op": "presence", "topic": "todo:team-7", "ref": "p1"})
	f := alice.expectReply("presence", `"p1"`)
	if f.Topic != "todo:team-7" || len(f.Users) != 2 || f.Users[0].UserID != "alice" || f.Users[1].UserID != "bob" ||
		f.Users[1].Connections != 1 || f.TotalUsers != 2 || f.TotalConnections != 2 || f.Next != "" {
		t.Fatalf("alice's presence reply: %+v", f)
	}
	// A page of one, then the next after it.
	alice.send(map[string]any{"op": "presence", "topic": "todo:team-7", "limit": 1, "ref": "p2"})
	if f := alice.expectReply("presence", `"p2"`); len(f.Users) != 1 || f.Users[0].UserID != "alice" || f.Next != "alice" {
		t.Fatalf("first page: %+v", f)
	}
	alice.send(map[string]any{"op": "presence", "topic": "todo:team-7", "limit": 1, "after": "alice", "ref": "p3"})
	if f := alice.expectReply("presence", `"p3"`); len(f.Users) != 1 || f.Users[0].UserID != "bob" || f.Next != "" {
		t.Fatalf("second page: %+v", f)
	}
	// Outside alice's claim and the server's pattern; bob has no claim;
	// the server's pattern lets anyone read lobby.
	alice.send(map[string]any{"op": "presence", "topic": "chat:1", "ref": "a1"})
	if f := alice.expectReply("error", `"a1"`); f.Code != "forbidden" || f.Message != "not allowed to read the presence of chat:1" {
		t.Fatalf("alice's presence of chat:1: %+v, want forbidden", f)
	}
	bob.send(map[string]any{"op": "presence", "topic": "todo:team-7", "ref": "b1"})
	if f := bob.expectReply("error", `"b1"`); f.Code != "forbidden" {
		t.Fatalf("bob's presence of todo:team-7: %+v, want forbidden", f)
	}
	bob.send(map[string]any{"op": "presence", "topic": "lobby", "ref": "b2"})
	if f := bob.expectReply("presence", `"b2"`); len(f.Users) != 1 || f.Users[0].UserID != "bob" {
		t.Fatalf("bob's presence of lobby: %+v", f)
	}
	// Malformed requests.
	for ref, op := range map[string]map[string]any{
		`"x1"`: {"op": "presence", "topic": "todo team"},
		`"x2"`: {"op": "presence", "topic": "todo:team-7", "limit": 1001},
		`"x3"`: {"op": "presence", "topic": "todo:team-7", "after": strings.Repeat("u", 300)},
	} {
		op["ref"] = strings.Trim(ref, `"`)
		alice.send(op)
		if f := alice.expectReply("error", ref); f.Code != "bad_topic" && f.Code != "bad_request" {
			t.Fatalf("presence %v: %+v, want bad_topic or bad_request", op, f)
		}
	}
	if got := s.metric(t, `pushgate_client_presence_total{result="forbidden"}`); got != 2 {
		t.Fatalf("forbidden presence requests counted %v, want 2", got)
	}
	if got := s.metric(t, `pushgate_client_presence_total{result="read"}`); got != 4 {
		t.Fatalf("presence requests read counted %v, want 4", got)
	}
}

// A topic with 1,000 subscribers over three nodes pages with no user
// missing or twice, from any node and while others come and go between
// pages; when a node is killed, its subscribers leave the pages within
// --node-ttl and are reported as leaves once the node is reaped.
func TestClusterTopicPresenceThousandSubscribers(t *testing.T) {
	r := redistest.Start(t)
	const nodeTTL = 3 * time.Second
	args := []string{"--presence-grace", "0", "--node-ttl", nodeTTL.String(), "--topic-presence-events", "big"}
	nodes := startNodes(t, r, 2, args...)
	var urls []string
	for _, x := range shardsOf(r) {
		urls = append(urls, x.URL())
	}
	victim := startProcess(t, append([]string{"--engine", "redis", "--redis-url", strings.Join(urls, " ")}, args...)...)
	addrs := []string{nodes[0].app.HTTPAddr(), nodes[1].app.HTTPAddr(), victim.httpAddr}

	const users = 1000
	want := make([]string, 0, users)
	var onVictim []string
	for i := range users {
		u := fmt.Sprintf("u%04d", i)
		want = append(want, u+":1")
		if i%3 == 2 {
			onVictim = append(onVictim, u)
		}
		dialWS(t, fmt.Sprintf("ws://%s/ws/%s?topics=big", addrs[i%3], u))
	}
	w := nodes[0].watchAfter(t, "", pb.EventKind_EVENT_KIND_TOPIC_LEAVE)
	for i, n := range nodes {
		waitTopicPresence(t, n, "big", 100, want, users)
		t.Logf("node %d lists all %d subscribers", i, users)
	}

	// Paging with others coming and going between pages: every user
	// subscribed throughout is listed once, none twice.
	churn := make(chan struct{})
	churned := make(chan int)
	go func() {
		n := 0
		defer func() { churned <- n }()
		for k := 0; ; k++ {
			select {
			case <-churn:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), waitFor)
			c, _, err := websocket.Dial(ctx, fmt.Sprintf("ws://%s/ws/x%04d?topics=big", addrs[k%2], k%1000), nil)
			cancel()
			if err == nil {
				n++
				c.Close(websocket.StatusNormalClosure, "")
			}
		}
	}()
	for _, size := range []int32{1, 37, 100, 1000} {
		got, _, _ := topicPresence(t, nodes[int(size)%2], "big", size)
		seen := make(map[string]bool, len(got))
		var stable []string
		for _, e := range got {
			u, _, _ := strings.Cut(e, ":")
			if seen[u] {
				t.Fatalf("page size %d: %s listed twice", size, u)
			}
			seen[u] = true
			if strings.HasPrefix(u, "u") {
				stable = append(stable, e)
			}
		}
		if !slices.Equal(stable, want) {
			t.Fatalf("page size %d: %d subscribers listed of %d", size, len(stable), users)
		}
	}
	close(churn)
	t.Logf("%d other subscribers came and went while paging", <-churned)

	if err := victim.cmd.Process.Kill(); err != nil { // SIGKILL: no goodbye to Redis
		t.Fatal(err)
	}
	<-victim.exited
	killed := time.Now()
	var left []string
	for _, e := range want {
		if u, _, _ := strings.Cut(e, ":"); !slices.Contains(onVictim, u) {
			left = append(left, e)
		}
	}
	eventually(t, "the dead node's subscribers to leave the pages", func() bool {
		got, _, _ := topicPresence(t, nodes[1], "big", 100)
		return slices.Equal(got, left)
	})
	took := time.Since(killed)
	t.Logf("the dead node's %d subscribers left the pages after %v (node ttl %v)", len(onVictim), took.Round(time.Millisecond), nodeTTL)
	// The dead node's lease ends within the node ttl of the kill (its last
	// beat came before it); the slack is for the polls, each paging
	// through hundreds of users on a loaded machine.
	if bound := nodeTTL + 2*time.Second; took > bound {
		t.Fatalf("subscribers left after %v, bound %v", took, bound)
	}
	// Reaped (the bound is the reaper's: node ttl plus a third of it):
	// the totals count them no more, and each is reported as a leave.
	waitTopicPresence(t, nodes[1], "big", 100, left, int64(len(left)))
	gone := make(map[string]bool)
	for len(gone) < len(onVictim) {
		e := w.next()
		if tl := e.GetTopicLeave(); tl != nil && tl.GetTopic() == "big" && strings.HasPrefix(tl.GetUserId(), "u") {
			gone[tl.GetUserId()] = true
		}
	}
	for _, u := range onVictim {
		if !gone[u] {
			t.Fatalf("no leave for %s", u)
		}
	}
	took = time.Since(killed)
	t.Logf("their leaves reported after %v", took.Round(time.Millisecond))
	if bound := nodeTTL + nodeTTL/3 + 2*time.Second; took > bound {
		t.Fatalf("leaves reported after %v, bound %v", took, bound)
	}
}

// Topic presence lives through a Redis that lost its data (the nodes write
// their subscriptions again), and a node that stops cleanly takes its
// subscribers out at once, not after --node-ttl.
func TestClusterTopicPresenceRedisRestartAndCleanStop(t *testing.T) {
	r := redistest.Start(t)
	n := startNodes(t, r, 2, "--redis-timeout", "500ms", "--node-ttl", "30s", "--presence-grace", "0")
	a, b := n[0], n[1]
	a.dialEnv(t, "/p0?topics=room")
	b.dialEnv(t, "/p1?topics=room")
	b.dialEnv(t, "/p1?topics=room")
	a.dialEnv(t, "/p2?topics=room,hall")
	all := []string{"p0:1", "p1:2", "p2:1"}
	waitTopicPresence(t, a, "room", 2, all, 4)

	resyncs := redisMetric("pushgate_redis_resyncs_total")
	before := a.metric(t, resyncs) + b.metric(t, resyncs)
	r.Kill()
	r.Restart() // empty
	eventually(t, "both nodes to write their state again", func() bool {
		return a.metric(t, resyncs)+b.metric(t, resyncs) >= before+2
	})
	waitTopicPresence(t, a, "room", 2, all, 4)
	waitTopicPresence(t, b, "hall", 100, []string{"p2:1"}, 1)

	b.stop(t)
	waitTopicPresence(t, a, "room", 100, []string{"p0:1", "p2:1"}, 2)
}

// "pushgate token --presence" mints the claim, and a refresh replaces it.
func TestRefreshReplacesPresenceClaim(t *testing.T) {
	s := startServer(t, "--auth", "jwt", "--jwt-secret", publishSecret)
	mint := func(args ...string) string {
		t.Helper()
		var out strings.Builder
		if err := runToken(append([]string{"--user", "u1", "--jwt-secret", publishSecret}, args...), func(string) string { return "" }, &out); err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(out.String())
	}
	e := s.dialEnv(t, "?token="+mint("--presence", "todo:*,room"))
	e.send(map[string]any{"op": "presence", "topic": "todo:1", "ref": 1})
	e.expectReply("presence", "1")
	e.send(map[string]any{"op": "refresh", "token": mint("--presence", "room"), "ref": 2})
	e.expectReply("refreshed", "2")
	e.send(map[string]any{"op": "presence", "topic": "todo:1", "ref": 3})
	if f := e.expectReply("error", "3"); f.Code != "forbidden" {
		t.Fatalf("presence after the claim was narrowed: %+v", f)
	}
	e.send(map[string]any{"op": "presence", "topic": "room", "ref": 4})
	e.expectReply("presence", "4")
	var out strings.Builder
	if err := runToken([]string{"--user", "u1", "--jwt-secret", publishSecret, "--presence", "bad topic"}, func(string) string { return "" }, &out); err == nil || !strings.Contains(err.Error(), "--presence") {
		t.Fatalf("a bad --presence topic: %v, want an error naming --presence", err)
	}
}
