package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"pushgate/gateway/redisengine/redistest"
	pb "pushgate/gen/pushgate/v1"
)

// startNodes starts n pushgate nodes sharing the Redis r: r alone, or r
// as the first of PUSHGATE_TEST_SHARDS shards (the others started here), so
// that the cluster suite runs over several shards too.
func startNodes(t *testing.T, r *redistest.Server, n int, args ...string) []*testServer {
	t.Helper()
	url := r.URL()
	for range testShards - 1 {
		x := redistest.Start(t)
		url += " " + x.URL()
		extraShards.Store(r, append(shardsOf(r)[1:], x))
	}
	return startEngineNodes(t, n, append([]string{"--redis-url", url}, args...)...)
}

// extraShards holds, for the Redis given to startNodes, the other shards
// it started.
var extraShards sync.Map

// shardsOf returns r and the shards startNodes started with it.
func shardsOf(r *redistest.Server) []*redistest.Server {
	x, _ := extraShards.Load(r)
	more, _ := x.([]*redistest.Server)
	return append([]*redistest.Server{r}, more...)
}

// redisMetric is the series of the Redis engine's metric name for shard 0:
// labelled by shard when there are several.
func redisMetric(name string) string {
	if testShards > 1 {
		return name + `{shard="0"}`
	}
	return name
}

// listAll pages through ListOnline with the given page size and returns
// "user:connections" entries and the totals of the first page.
func listAll(t *testing.T, s *testServer, size int32) (users []string, totalUsers, totalConns int64) {
	t.Helper()
	token := ""
	for page := 0; ; page++ {
		r, err := s.api.ListOnline(context.Background(), &pb.ListOnlineRequest{PageSize: size, PageToken: token})
		if err != nil {
			t.Fatalf("ListOnline: %v", err)
		}
		if page == 0 {
			totalUsers, totalConns = r.GetTotalUsers(), r.GetTotalConnections()
		}
		if len(r.GetUsers()) > int(size) {
			t.Fatalf("page of %d users, size %d", len(r.GetUsers()), size)
		}
		for _, u := range r.GetUsers() {
			users = append(users, fmt.Sprintf("%s:%d", u.GetUserId(), u.GetConnections()))
		}
		if token = r.GetNextPageToken(); token == "" {
			return users, totalUsers, totalConns
		}
	}
}

// expectNothingBut checks that the next message each client gets is the
// marker: nothing else arrived before it.
func expectMarker(t *testing.T, marker string, clients ...*wsClient) {
	t.Helper()
	for i, c := range clients {
		m := c.next()
		if string(m.data) != marker {
			t.Fatalf("client %d: got %q before the marker %q", i, m.data, marker)
		}
	}
}

// Must-show 1: three nodes on one Redis, users on different nodes; every call
// from any node reaches exactly the right connections, and ListOnline from
// every node returns the same pages and totals.
func TestClusterThreeNodesRouteEveryCall(t *testing.T) {
	r := redistest.Start(t)
	n := startNodes(t, r, 3, "--presence-grace", "0")
	a, b, c := n[0], n[1], n[2]
	ctx := context.Background()

	u1a := a.dial(t, "u1")
	u1b := b.dial(t, "u1") // one user, two nodes
	u2 := b.dialQuery(t, "u2", "topics=news")
	u3 := c.dial(t, "u3")
	by := a.dial(t, "bystander")
	all := []*wsClient{u1a, u1b, u2, u3, by}
	want := []string{"bystander:1", "u1:2", "u2:1", "u3:1"}
	for i, s := range n {
		eventually(t, fmt.Sprintf("node %d lists everyone", i), func() bool {
			users, tu, tc := listAll(t, s, 2)
			return slices.Equal(users, want) && tu == 4 && tc == 5
		})
	}

	// SendToUser from C reaches u1 on A and on B.
	r1, err := c.api.SendToUser(ctx, &pb.SendToUserRequest{UserId: "u1", Message: jsonMsg(`{"n":1}`)})
	if err != nil || !r1.GetOnline() || r1.GetDeliveredConnections() != 2 {
		t.Fatalf("SendToUser = %v, %v; want online, 2 connections", r1, err)
	}
	u1a.expect(`{"n":1}`)
	u1b.expect(`{"n":1}`)

	// SendToUsers from A: one id, each user's result.
	r2, err := a.api.SendToUsers(ctx, &pb.SendToUsersRequest{UserIds: []string{"u2", "u3", "nobody"}, Message: jsonMsg(`{"n":2}`)})
	if err != nil {
		t.Fatal(err)
	}
	got := []string{}
	for _, d := range r2.GetResults() {
		got = append(got, fmt.Sprintf("%s:%v:%d", d.GetUserId(), d.GetOnline(), d.GetDeliveredConnections()))
	}
	if want := []string{"u2:true:1", "u3:true:1", "nobody:false:0"}; !slices.Equal(got, want) {
		t.Fatalf("SendToUsers results %v, want %v", got, want)
	}
	u2.expect(`{"n":2}`)
	u3.expect(`{"n":2}`)

	// Broadcast from B, excluding u3.
	r3, err := b.api.Broadcast(ctx, &pb.BroadcastRequest{Message: jsonMsg(`{"n":3}`), ExcludeUserIds: []string{"u3"}})
	if err != nil || r3.GetDeliveredConnections() != 4 {
		t.Fatalf("Broadcast = %v, %v; want 4 connections (%d)", r3, err, r3.GetDeliveredConnections())
	}
	for _, cl := range []*wsClient{u1a, u1b, u2, by} {
		cl.expect(`{"n":3}`)
	}

	// Publish from A reaches the subscriber on B only.
	r4, err := a.api.Publish(ctx, &pb.PublishRequest{Topic: "news", Message: jsonMsg(`{"n":4}`)})
	if err != nil || r4.GetDeliveredConnections() != 1 {
		t.Fatalf("Publish = %v, %v; want 1 connection", r4, err)
	}
	u2.expect(`{"n":4}`)

	// Nothing else arrived anywhere: the next message of each is the marker.
	if _, err := c.api.Broadcast(ctx, &pb.BroadcastRequest{Message: jsonMsg(`"marker"`)}); err != nil {
		t.Fatal(err)
	}
	expectMarker(t, `"marker"`, all...)

	// Disconnect from C closes u1 on A and on B.
	r5, err := c.api.Disconnect(ctx, &pb.DisconnectRequest{UserId: "u1"})
	if err != nil || r5.GetClosedConnections() != 2 {
		t.Fatalf("Disconnect = %v, %v; want 2", r5, err)
	}
	for _, cl := range []*wsClient{u1a, u1b} {
		if code := cl.closeCode(); code != 4100 {
			t.Fatalf("close code %d, want 4100", code)
		}
	}
	want = []string{"bystander:1", "u2:1", "u3:1"}
	for i, s := range n {
		eventually(t, fmt.Sprintf("node %d lists the rest", i), func() bool {
			users, tu, tc := listAll(t, s, 1)
			return slices.Equal(users, want) && tu == 3 && tc == 3
		})
	}
	p, err := b.api.GetPresence(ctx, &pb.GetPresenceRequest{UserIds: []string{"u1", "u3"}})
	if err != nil || p.GetUsers()[0].GetConnections() != 0 || p.GetUsers()[1].GetConnections() != 1 || p.GetUsers()[1].GetOnlineSince() == nil {
		t.Fatalf("GetPresence = %v, %v", p, err)
	}
}

func (s *testServer) dialQuery(t testing.TB, userID, query string) *wsClient {
	t.Helper()
	return dialWS(t, s.wsURL(userID)+"?"+query)
}

// Must-show 4: a user reconnecting from node A to node B resumes from the
// last id exactly.
func TestClusterResumeOnAnotherNode(t *testing.T) {
	r := redistest.Start(t)
	n := startNodes(t, r, 2)
	a, b := n[0], n[1]
	ctx := context.Background()
	ttl := durationpb.New(time.Hour)

	c1 := a.dialEnv(t, "/merchant-42")
	var ids []string
	for i := range 5 {
		resp, err := b.api.SendToUser(ctx, &pb.SendToUserRequest{UserId: "merchant-42", Message: &pb.Message{Payload: &pb.Message_Json{Json: fmt.Sprintf(`{"n":%d}`, i)}, Ttl: ttl}})
		if err != nil || !resp.GetStored() || resp.GetDeliveredConnections() != 1 {
			t.Fatalf("send %d = %v, %v", i, resp, err)
		}
		ids = append(ids, resp.GetMessageId())
	}
	if !slices.IsSorted(ids) {
		t.Fatalf("ids not in order: %v", ids)
	}
	for i := range 3 {
		if m := c1.nextMessage(); m.ID != ids[i] {
			t.Fatalf("message %d id %s, want %s", i, m.ID, ids[i])
		}
	}
	epoch := c1.hello.Epoch
	c1.c.CloseNow() // gone, having seen (and acked nothing beyond) ids[2]
	eventually(t, "the first connection to leave", func() bool { return a.online(t, "merchant-42") == 0 })
	for i := 5; i < 7; i++ {
		resp, err := a.api.SendToUser(ctx, &pb.SendToUserRequest{UserId: "merchant-42", Message: &pb.Message{Payload: &pb.Message_Json{Json: fmt.Sprintf(`{"n":%d}`, i)}, Ttl: ttl}})
		if err != nil || !resp.GetStored() || resp.GetOnline() {
			t.Fatalf("send %d = %v, %v", i, resp, err)
		}
		ids = append(ids, resp.GetMessageId())
	}

	c2 := b.dialEnv(t, "/merchant-42?last_id="+ids[2]+"&epoch="+epoch)
	if c2.hello.Recovered == nil || !*c2.hello.Recovered || c2.hello.Replayed != 4 || c2.hello.Epoch != epoch {
		t.Fatalf("hello %+v, want recovered, 4 replayed, epoch %s", c2.hello, epoch)
	}
	for i := 3; i < 7; i++ {
		if m := c2.nextMessage(); m.ID != ids[i] || string(m.Data) != fmt.Sprintf(`{"n":%d}`, i) {
			t.Fatalf("replayed %s %s, want %s", m.ID, m.Data, ids[i])
		}
	}
	// Live again, from either node, after the replay.
	resp, err := a.api.SendToUser(ctx, &pb.SendToUserRequest{UserId: "merchant-42", Message: jsonMsg(`{"n":7}`)})
	if err != nil || resp.GetDeliveredConnections() != 1 {
		t.Fatalf("live send = %v, %v", resp, err)
	}
	if m := c2.nextMessage(); string(m.Data) != `{"n":7}` {
		t.Fatalf("got %s, want the live message", m.Data)
	}
}

// A user's connections on different nodes get the same messages in the same
// order while two nodes send to them concurrently.
func TestClusterConcurrentSendersOneOrder(t *testing.T) {
	r := redistest.Start(t)
	n := startNodes(t, r, 3)
	ctx := context.Background()
	c0 := n[0].dialEnv(t, "/shop")
	c1 := n[1].dialEnv(t, "/shop")
	c2 := n[2].dialEnv(t, "/shop")
	const per = 200
	errc := make(chan error, 2)
	for s := range 2 {
		go func() {
			for i := range per {
				_, err := n[s].api.SendToUser(ctx, &pb.SendToUserRequest{UserId: "shop", Message: jsonMsg(fmt.Sprintf(`"%d-%d"`, s, i))})
				if err != nil {
					errc <- err
					return
				}
			}
			errc <- nil
		}()
	}
	for range 2 {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	var seqs [3][]string
	for k, c := range []*envClient{c0, c1, c2} {
		for range 2 * per {
			m := c.nextMessage()
			seqs[k] = append(seqs[k], m.ID+" "+string(m.Data))
		}
		if !slices.IsSorted(seqs[k]) {
			t.Fatalf("connection %d: ids out of order", k)
		}
	}
	if !slices.Equal(seqs[0], seqs[1]) || !slices.Equal(seqs[0], seqs[2]) {
		t.Fatal("connections on different nodes saw different sequences")
	}
}

// Must-show 2: kill -9 of a node. Its users leave the online list within the
// bound (--node-ttl plus a third of it); sends meanwhile are stored and
// reported honestly (not delivered); the clients reconnect to another node
// and resume with nothing lost.
func TestClusterNodeKilledUsersLeaveAndResumeElsewhere(t *testing.T) {
	r := redistest.Start(t)
	const nodeTTL = 3 * time.Second
	victim := startProcess(t, "--engine", "redis", "--redis-url", r.URL(), "--node-ttl", nodeTTL.String(), "--presence-grace", "0")
	b := startServer(t, "--engine", "redis", "--redis-url", r.URL(), "--node-ttl", nodeTTL.String(), "--presence-grace", "0")
	ctx := context.Background()
	ttl := durationpb.New(time.Hour)

	const users = 10
	clients := make([]*envClient, users)
	for i := range clients {
		clients[i] = dialEnv(t, fmt.Sprintf("ws://%s/ws/k%d", victim.httpAddr, i))
	}
	b.dial(t, "stays")
	send := func(u string, n int) *pb.SendToUserResponse {
		t.Helper()
		resp, err := b.api.SendToUser(ctx, &pb.SendToUserRequest{UserId: u, Message: &pb.Message{Payload: &pb.Message_Json{Json: fmt.Sprintf(`{"n":%d}`, n)}, Ttl: ttl}})
		if err != nil {
			t.Fatalf("send to %s: %v", u, err)
		}
		return resp
	}
	last := make([]string, users)
	for i := range users {
		if resp := send(fmt.Sprintf("k%d", i), 0); resp.GetDeliveredConnections() != 1 {
			t.Fatalf("before the kill: %v", resp)
		}
		last[i] = clients[i].nextMessage().ID
	}
	epoch := clients[0].hello.Epoch

	if err := victim.cmd.Process.Kill(); err != nil { // SIGKILL: no goodbye to Redis
		t.Fatal(err)
	}
	<-victim.exited
	killed := time.Now()

	// Sent while the node is dead but not yet reaped: stored, and not
	// reported as delivered (the dead node's channel has no listener).
	missed := make([][]string, users)
	for n := 1; n <= 2; n++ {
		for i := range users {
			resp := send(fmt.Sprintf("k%d", i), n)
			if resp.GetDeliveredConnections() != 0 || resp.GetOnline() || !resp.GetStored() {
				t.Fatalf("send to a dead node's user = %v; want stored, not delivered", resp)
			}
			missed[i] = append(missed[i], resp.GetMessageId())
		}
	}

	eventually(t, "the dead node's users to leave the online list", func() bool {
		users, tu, tc := listAll(t, b, 100)
		return slices.Equal(users, []string{"stays:1"}) && tu == 1 && tc == 1
	})
	took := time.Since(killed)
	t.Logf("dead node's users gone after %v (node ttl %v)", took.Round(time.Millisecond), nodeTTL)
	if bound := nodeTTL + nodeTTL/3 + time.Second; took > bound {
		t.Fatalf("users left after %v, bound %v", took, bound)
	}

	// The clients come back on the surviving node and resume exactly.
	for i := range users {
		c := dialEnv(t, fmt.Sprintf("ws://%s/ws/k%d?last_id=%s&epoch=%s", b.app.HTTPAddr(), i, last[i], epoch))
		if c.hello.Recovered == nil || !*c.hello.Recovered || c.hello.Replayed != 2 {
			t.Fatalf("k%d hello %+v, want recovered with 2 replayed", i, c.hello)
		}
		for n, id := range missed[i] {
			if m := c.nextMessage(); m.ID != id || string(m.Data) != fmt.Sprintf(`{"n":%d}`, n+1) {
				t.Fatalf("k%d replay %d: %s %s, want %s", i, n, m.ID, m.Data, id)
			}
		}
	}
}

// Must-show 3: Redis restarted (its data gone) in the middle of a stream of
// sends. Calls during the outage fail with UNAVAILABLE; none returns OK
// without its message arriving; after Redis is back, delivery resumes by
// itself, with no node restart. The outage (about 10s) is shorter than the
// node ttl, so the nodes keep their clients (a longer one closes them with
// 4003,gateway/redisengine's TestDeadNodeIsReapedAndComesBack).
func TestClusterRedisRestartMidStream(t *testing.T) {
	r := redistest.Start(t)
	args := []string{"--redis-timeout", "500ms", "--node-ttl", "30s"}
	n := startNodes(t, r, 2, args...)
	a, b := n[0], n[1]

	const users = 6
	clients := make([]*envClient, users)
	for i := range clients {
		clients[i] = n[i%2].dialEnv(t, fmt.Sprintf("/r%d", i))
	}

	type sent struct {
		user int
		data string
	}
	var ok []sent
	unavailable, afterRestart := 0, 0
	restarted := false
	ttl := durationpb.New(time.Minute)
	for i := 0; afterRestart < 60; i++ {
		if i == 40 {
			r.Kill()
		}
		if i == 60 {
			r.Restart()
			restarted = true
		}
		u := i % users
		data := fmt.Sprintf(`{"i":%d}`, i)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err := a.api.SendToUser(ctx, &pb.SendToUserRequest{UserId: fmt.Sprintf("r%d", u), Message: &pb.Message{Payload: &pb.Message_Json{Json: data}, Ttl: ttl}})
		cancel()
		switch {
		case err == nil:
			if !resp.GetStored() {
				t.Fatalf("send %d: OK but not stored: %v", i, resp)
			}
			ok = append(ok, sent{u, data})
			if restarted {
				afterRestart++
			}
		case status.Code(err) == codes.Unavailable:
			unavailable++
		default:
			t.Fatalf("send %d: %v; want OK or UNAVAILABLE", i, err)
		}
		if i > 10000 {
			t.Fatal("delivery did not resume")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if unavailable == 0 {
		t.Fatal("no call saw the outage")
	}
	t.Logf("%d calls OK, %d UNAVAILABLE", len(ok), unavailable)

	// Every OK'd message arrives, in order, on its user's connection.
	for u, c := range clients {
		var want []string
		for _, s := range ok {
			if s.user == u {
				want = append(want, s.data)
			}
		}
		for k, w := range want {
			if m := c.nextMessage(); string(m.Data) != w {
				t.Fatalf("r%d message %d: %s, want %s", u, k, m.Data, w)
			}
		}
	}
	for i, s := range n {
		if v := s.metric(t, redisMetric("pushgate_redis_reconnects_total")); v < 1 {
			t.Fatalf("node %d: reconnects %v", i, v)
		}
		if v := s.metric(t, redisMetric("pushgate_redis_up")); v != 1 {
			t.Fatalf("node %d: redis_up %v", i, v)
		}
	}
	// Presence came back without any client reconnecting.
	eventually(t, "presence rewritten after the restart", func() bool {
		_, tu, tc := listAll(t, b, 100)
		return tu == users && tc == users
	})
}

// Idempotency keys and WatchEvents are cluster-wide: a retry on another node
// gets the first response and sends nothing; a watcher on one node sees
// presence, acks and client messages from the others.
func TestClusterIdempotencyAndEvents(t *testing.T) {
	r := redistest.Start(t)
	n := startNodes(t, r, 3, "--presence-grace", "0", "--upstream-users", "*")
	a, b, c := n[0], n[1], n[2]
	ctx := context.Background()
	w := a.watch(t)

	cl := b.dialEnv(t, "/merchant-7")
	if e := w.next(); e.GetUserOnline().GetUserId() != "merchant-7" {
		t.Fatalf("event %v, want merchant-7 online", e)
	}

	order := func(key, body string) *pb.SendToUserRequest {
		return &pb.SendToUserRequest{UserId: "merchant-7", Message: &pb.Message{
			Payload: &pb.Message_Json{Json: body}, Ttl: durationpb.New(time.Hour), IdempotencyKey: key}}
	}
	first, err := a.api.SendToUser(ctx, order("order-1-paid", `{"orderId":1}`))
	if err != nil {
		t.Fatal(err)
	}
	again, err := c.api.SendToUser(ctx, order("order-1-paid", `{"orderId":1}`))
	if err != nil || again.GetMessageId() != first.GetMessageId() || again.GetDeliveredConnections() != 1 {
		t.Fatalf("retry on another node = %v, %v; want the first response %v", again, err, first)
	}
	if _, err := b.api.SendToUser(ctx, order("order-1-paid", `{"orderId":2}`)); status.Code(err) != codes.InvalidArgument ||
		!strings.Contains(err.Error(), "message.idempotency_key") {
		t.Fatalf("key reused for another request: %v, want INVALID_ARGUMENT naming the field", err)
	}
	// Concurrent retries on three nodes: one send, one answer.
	ids := make(chan string, 3)
	for _, s := range n {
		go func() {
			resp, err := s.api.SendToUser(ctx, order("order-2-paid", `{"orderId":2}`))
			if err != nil {
				t.Error(err)
				ids <- ""
				return
			}
			ids <- resp.GetMessageId()
		}()
	}
	id2 := <-ids
	if x, y := <-ids, <-ids; x != id2 || y != id2 {
		t.Fatalf("concurrent retries got ids %s %s %s", id2, x, y)
	}
	if m := cl.nextMessage(); m.ID != first.GetMessageId() {
		t.Fatalf("got %s, want %s", m.ID, first.GetMessageId())
	}
	if m := cl.nextMessage(); m.ID != id2 {
		t.Fatalf("got %s, want %s", m.ID, id2)
	}

	cl.send(map[string]any{"op": "ack", "id": first.GetMessageId()})
	if e := w.next().GetMessageAcked(); e.GetMessageId() != first.GetMessageId() || e.GetUserId() != "merchant-7" || e.GetImplicit() {
		t.Fatalf("ack event %v", e)
	}
	cl.send(map[string]any{"op": "send", "type": "reply", "data": map[string]any{"text": "on my way"}})
	if e := w.next().GetClientMessage(); e.GetUserId() != "merchant-7" || e.GetType() != "reply" || e.GetJson() != `{"text":"on my way"}` {
		t.Fatalf("client message event %v", e)
	}
	cl.c.CloseNow()
	if e := w.next(); e.GetUserOffline().GetUserId() != "merchant-7" {
		t.Fatalf("event %v, want merchant-7 offline", e)
	}

	// A reload within the grace reports nothing (grace 2s on these nodes).
	r2 := redistest.Start(t)
	g := startNodes(t, r2, 2, "--presence-grace", "2s")
	gw := g[0].watch(t, pb.EventKind_EVENT_KIND_USER_ONLINE, pb.EventKind_EVENT_KIND_USER_OFFLINE)
	p1 := g[1].dial(t, "reloader")
	if e := gw.next(); e.GetUserOnline().GetUserId() != "reloader" {
		t.Fatalf("event %v", e)
	}
	p1.c.CloseNow()
	time.Sleep(300 * time.Millisecond)
	g[0].dial(t, "reloader") // back, on the other node
	p3 := g[1].dial(t, "gone")
	if e := gw.next(); e.GetUserOnline().GetUserId() != "gone" {
		t.Fatalf("event %v; want only gone's online (the reload is silent)", e)
	}
	p3.c.CloseNow()
	start := time.Now()
	if e := gw.next(); e.GetUserOffline().GetUserId() != "gone" || time.Since(start) < time.Second {
		t.Fatalf("event %v after %v; want gone offline after the grace", e, time.Since(start))
	}
}

// Must-show 5: the Redis traffic of one SendToUser does not grow with the
// number of nodes. Measured with Redis's own counters (INFO) over 1,000
// sends to users spread over all nodes, with 2 and with 6 nodes.
func TestClusterRedisTrafficPerSendIsFlat(t *testing.T) {
	type traffic struct{ cmds, in, out float64 }
	measure := func(nodes int, ttl *durationpb.Duration) traffic {
		r := redistest.Start(t)
		n := startNodes(t, r, nodes, "--node-ttl", "60s") // beats stay out of the count
		clients := make([]*wsClient, nodes)
		for i, s := range n {
			clients[i] = s.dial(t, fmt.Sprintf("user-on-node-%d", i))
		}
		ctx := context.Background()
		eventually(t, "everyone online", func() bool {
			_, tu, _ := listAll(t, n[0], 100)
			return tu == int64(nodes)
		})
		const sends = 1000
		c0, i0, o0, err := statsOf(ctx, shardsOf(r))
		if err != nil {
			t.Fatal(err)
		}
		for i := range sends {
			resp, err := n[0].api.SendToUser(ctx, &pb.SendToUserRequest{UserId: fmt.Sprintf("user-on-node-%d", i%nodes),
				Message: &pb.Message{Payload: &pb.Message_Json{Json: `{"type":1,"orderId":"20261122000123","content":"new order"}`}, Ttl: ttl}})
			if err != nil || resp.GetDeliveredConnections() != 1 {
				t.Fatalf("send: %v %v", resp, err)
			}
		}
		c1, i1, o1, err := statsOf(ctx, shardsOf(r))
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range clients {
			for range sends / nodes {
				c.next()
			}
		}
		// The INFO call itself is one command per shard.
		return traffic{float64(c1-c0-int64(testShards)) / sends, float64(i1-i0) / sends, float64(o1-o0) / sends}
	}
	near := func(a, b float64) bool { return a <= b*1.05+0.05 && b <= a*1.05+0.05 }
	for _, ttl := range []*durationpb.Duration{nil, durationpb.New(time.Hour)} {
		t2, t6 := measure(2, ttl), measure(6, ttl)
		kind := "live"
		if ttl != nil {
			kind = "stored (ttl)"
		}
		t.Logf("per SendToUser, %s, 2 nodes: %.2f commands, %.0f bytes in, %.0f bytes out", kind, t2.cmds, t2.in, t2.out)
		t.Logf("per SendToUser, %s, 6 nodes: %.2f commands, %.0f bytes in, %.0f bytes out", kind, t6.cmds, t6.in, t6.out)
		if !near(t2.cmds, t6.cmds) || !near(t2.in, t6.in) || !near(t2.out, t6.out) {
			t.Fatalf("%s: traffic per send grows with nodes: 2 nodes %+v, 6 nodes %+v", kind, t2, t6)
		}
	}
}

// statsOf sums the shards' Stats.
func statsOf(ctx context.Context, shards []*redistest.Server) (cmds, in, out int64, err error) {
	for _, r := range shards {
		c, i, o, err := r.Stats(ctx)
		if err != nil {
			return 0, 0, 0, err
		}
		cmds, in, out = cmds+c, in+i, out+o
	}
	return cmds, in, out, nil
}

// While Redis is down every path answers clearly and open connections stay:
// gRPC calls UNAVAILABLE, new WebSocket connections HTTP 503, envelope ops
// an "unavailable" error; after Redis is back the same connection works.
func TestClusterRedisDownEveryPathAnswers(t *testing.T) {
	r := redistest.Start(t)
	s := startServer(t, "--engine", "redis", "--redis-url", r.URL(), "--redis-timeout", "300ms", "--upstream-users", "*")
	ctx := context.Background()
	c := s.dialEnv(t, "/m1")
	first, err := s.api.SendToUser(ctx, &pb.SendToUserRequest{UserId: "m1", Message: &pb.Message{Payload: &pb.Message_Json{Json: `1`}, Ttl: durationpb.New(time.Hour)}})
	if err != nil {
		t.Fatal(err)
	}
	c.nextMessage()

	r.Kill()
	for name, call := range map[string]func() error{
		"SendToUser": func() error {
			_, err := s.api.SendToUser(ctx, &pb.SendToUserRequest{UserId: "m1", Message: jsonMsg(`2`)})
			return err
		},
		"Broadcast": func() error {
			_, err := s.api.Broadcast(ctx, &pb.BroadcastRequest{Message: jsonMsg(`2`)})
			return err
		},
		"Publish": func() error {
			_, err := s.api.Publish(ctx, &pb.PublishRequest{Topic: "t", Message: jsonMsg(`2`)})
			return err
		},
		"ListOnline": func() error {
			_, err := s.api.ListOnline(ctx, &pb.ListOnlineRequest{})
			return err
		},
		"GetPresence": func() error {
			_, err := s.api.GetPresence(ctx, &pb.GetPresenceRequest{UserIds: []string{"m1"}})
			return err
		},
		"Disconnect": func() error {
			_, err := s.api.Disconnect(ctx, &pb.DisconnectRequest{UserId: "m1"})
			return err
		},
	} {
		if err := call(); status.Code(err) != codes.Unavailable {
			t.Errorf("%s with Redis down: %v, want UNAVAILABLE", name, err)
		}
	}
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	_, hresp, err := websocket.Dial(dctx, s.wsURL("m2"), nil)
	cancel()
	if err == nil || hresp == nil || hresp.StatusCode != http.StatusServiceUnavailable || hresp.Header.Get("Retry-After") == "" {
		t.Fatalf("new connection with Redis down: %v %v, want HTTP 503 with Retry-After", hresp, err)
	}
	for _, op := range []map[string]any{
		{"op": "ack", "id": first.GetMessageId(), "ref": "a"},
		{"op": "subscribe", "topic": "store:1", "ref": "b"},
		{"op": "send", "data": map[string]any{"x": 1}, "ref": "c"},
	} {
		c.send(op)
		if f := c.next(); f.Op != "error" || f.Code != "unavailable" {
			t.Fatalf("%v with Redis down: %+v, want an unavailable error", op["op"], f)
		}
	}

	ready := func() int {
		resp, err := http.Get("http://" + s.app.HTTPAddr() + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	health := func() healthpb.HealthCheckResponse_ServingStatus {
		resp, err := healthpb.NewHealthClient(s.cc).Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetStatus()
	}
	eventually(t, "not ready while Redis is down", func() bool {
		return ready() == http.StatusServiceUnavailable && health() == healthpb.HealthCheckResponse_NOT_SERVING
	})

	r.Restart()
	eventually(t, "ready again", func() bool {
		return ready() == http.StatusOK && health() == healthpb.HealthCheckResponse_SERVING
	})
	eventually(t, "the node to be back", func() bool {
		_, err := s.api.ListOnline(ctx, &pb.ListOnlineRequest{})
		return err == nil && s.online(t, "m1") == 1
	})
	if _, err := s.api.SendToUser(ctx, &pb.SendToUserRequest{UserId: "m1", Message: jsonMsg(`3`)}); err != nil {
		t.Fatal(err)
	}
	if m := c.nextMessage(); string(m.Data) != `3` {
		t.Fatalf("after Redis is back: %s, want 3", m.Data)
	}
	c.send(map[string]any{"op": "subscribe", "topic": "store:1", "ref": "d"})
	if f := c.next(); f.Op != "subscribed" {
		t.Fatalf("subscribe after Redis is back: %+v", f)
	}
}

// Topic routes follow subscriptions made and dropped with envelope ops on
// any node: a Publish reaches exactly the current subscribers.
func TestClusterTopicRoutesFollowSubscriptions(t *testing.T) {
	r := redistest.Start(t)
	n := startNodes(t, r, 2)
	a, b := n[0], n[1]
	ctx := context.Background()
	publish := func(body string) int64 {
		t.Helper()
		resp, err := a.api.Publish(ctx, &pb.PublishRequest{Topic: "todo:42", Message: jsonMsg(body)})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetDeliveredConnections()
	}
	if got := publish(`0`); got != 0 {
		t.Fatalf("no subscribers yet: delivered %d", got)
	}
	c1 := b.dialEnv(t, "/alice")
	c2 := b.dialEnv(t, "/bob")
	for i, c := range []*envClient{c1, c2} {
		c.send(map[string]any{"op": "subscribe", "topic": "todo:42", "ref": i})
		if f := c.next(); f.Op != "subscribed" {
			t.Fatalf("subscribe: %+v", f)
		}
	}
	// Subscribed means routed: a Publish right after the reply reaches both.
	if got := publish(`1`); got != 2 {
		t.Fatalf("delivered %d, want 2", got)
	}
	for _, c := range []*envClient{c1, c2} {
		if m := c.nextMessage(); m.Topic != "todo:42" || string(m.Data) != `1` {
			t.Fatalf("got %+v", m)
		}
	}
	c1.send(map[string]any{"op": "unsubscribe", "topic": "todo:42"})
	if f := c1.next(); f.Op != "unsubscribed" {
		t.Fatalf("unsubscribe: %+v", f)
	}
	eventually(t, "one subscriber left in the route", func() bool { return publish(`2`) == 1 })
	c2.c.CloseNow()
	eventually(t, "the route to be gone", func() bool { return publish(`3`) == 0 })
	// alice got nothing after she left the topic; a direct send is next.
	if _, err := a.api.SendToUser(ctx, &pb.SendToUserRequest{UserId: "alice", Message: jsonMsg(`"direct"`)}); err != nil {
		t.Fatal(err)
	}
	if m := c1.nextMessage(); string(m.Data) != `"direct"` {
		t.Fatalf("alice got %s after unsubscribing, want the direct message", m.Data)
	}
}

// The admin page's totals and user list are the cluster's; its per-node
// numbers and node column are node A's.
func TestClusterAdminShowsTheWholeCluster(t *testing.T) {
	r := redistest.Start(t)
	n := startNodes(t, r, 2)
	n[0].dial(t, "on-a")
	n[1].dial(t, "on-b")
	n[1].dial(t, "on-b")
	get := func(path string, v any) {
		t.Helper()
		resp, err := http.Get("http://" + n[0].app.HTTPAddr() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %s", path, resp.Status)
		}
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "cluster totals on node A's admin page", func() bool {
		var st struct {
			Users, Connections int64
			Cluster            bool
			NodeUsers          int64 `json:"node_users"`
			NodeConnections    int64 `json:"node_connections"`
		}
		get("/admin/api/stats", &st)
		return st.Users == 2 && st.Connections == 3 && st.Cluster && st.NodeUsers == 1 && st.NodeConnections == 1
	})
	var list struct {
		Users []struct {
			UserID          string `json:"user_id"`
			Connections     int
			Node            string
			NodeConnections int `json:"node_connections"`
		}
		Total int64 `json:"total_users"`
	}
	get("/admin/api/users", &list)
	if list.Total != 2 || len(list.Users) != 2 || list.Users[0].UserID != "on-a" || list.Users[1].UserID != "on-b" ||
		list.Users[1].Connections != 2 || list.Users[0].Node == "" || list.Users[0].NodeConnections != 1 ||
		list.Users[1].Node != "" || list.Users[1].NodeConnections != 0 {
		t.Fatalf("admin users: %+v", list)
	}
}

// The engine over Redis Sentinel (--redis-master-name) and over a Redis
// Cluster (--redis-cluster; pushgate's keys share one slot): nodes route
// sends, topics and presence as over a single Redis.
func TestClusterOverSentinelAndRedisCluster(t *testing.T) {
	check := func(t *testing.T, args ...string) {
		n := startEngineNodes(t, 2, args...)
		ctx := context.Background()
		c := n[1].dialQuery(t, "m1", "topics=store:1")
		eventually(t, "m1 online on both nodes", func() bool { return n[0].online(t, "m1") == 1 })
		resp, err := n[0].api.SendToUser(ctx, &pb.SendToUserRequest{UserId: "m1", Message: &pb.Message{Payload: &pb.Message_Json{Json: `{"n":1}`}, Ttl: durationpb.New(time.Minute)}})
		if err != nil || resp.GetDeliveredConnections() != 1 || !resp.GetStored() {
			t.Fatalf("SendToUser = %v, %v", resp, err)
		}
		c.expect(`{"n":1}`)
		p, err := n[0].api.Publish(ctx, &pb.PublishRequest{Topic: "store:1", Message: jsonMsg(`{"n":2}`)})
		if err != nil || p.GetDeliveredConnections() != 1 {
			t.Fatalf("Publish = %v, %v", p, err)
		}
		c.expect(`{"n":2}`)
	}
	t.Run("sentinel", func(t *testing.T) {
		master := redistest.Start(t)
		sentinel := redistest.StartSentinel(t, master)
		check(t, "--redis-url", "redis://"+sentinel+"/0", "--redis-master-name", "mymaster")
	})
	t.Run("cluster", func(t *testing.T) {
		addrs := redistest.StartCluster(t)
		check(t, "--redis-url", "redis://"+strings.Join(addrs, ","), "--redis-cluster")
	})
}

// startEngineNodes starts n nodes with the Redis engine and the given flags.
func startEngineNodes(t *testing.T, n int, args ...string) []*testServer {
	t.Helper()
	nodes := make([]*testServer, n)
	for i := range nodes {
		nodes[i] = startServer(t, append([]string{"--engine", "redis"}, args...)...)
	}
	return nodes
}
