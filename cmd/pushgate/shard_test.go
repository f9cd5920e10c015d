package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"pushgate/gateway"
	"pushgate/gateway/redisengine"
	"pushgate/gateway/redisengine/redistest"
	pb "pushgate/gen/pushgate/v1"
)

// startShards starts n redis-servers and returns them and the --redis-url
// that names them all.
func startShards(t *testing.T, n int) ([]*redistest.Server, string) {
	t.Helper()
	rs := make([]*redistest.Server, n)
	urls := make([]string, n)
	for i := range rs {
		rs[i] = redistest.Start(t)
		urls[i] = rs[i].URL()
	}
	return rs, strings.Join(urls, " ")
}

// usersOn returns per users whose ids start with prefix for each of n
// shards, shard by shard.
func usersOn(n, per int, prefix string) [][]string {
	out := make([][]string, n)
	for i := 0; ; i++ {
		u := fmt.Sprintf("%s%d", prefix, i)
		k := redisengine.ShardOf(u, n)
		if len(out[k]) < per {
			out[k] = append(out[k], u)
		}
		full := true
		for _, us := range out {
			full = full && len(us) == per
		}
		if full {
			return out
		}
	}
}

func readyBody(t *testing.T, s *testServer) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + s.app.OpsAddr() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// Three nodes over three shards: users spread over the shards (each
// shard's Redis holds exactly its users), and every call that spans users
// works across them: a send to users of every shard, broadcast, a topic,
// presence, ListOnline paging, resume on another node, receipts, live
// WatchEvents and the event log from its start.
func TestShardsThreeNodesThreeShards(t *testing.T) {
	rs, url := startShards(t, 3)
	n := startEngineNodes(t, 3, "--redis-url", url, "--presence-grace", "0")
	ctx := context.Background()
	watch := n[0].watchAfter(t, "", pb.EventKind_EVENT_KIND_USER_ONLINE)

	byShard := usersOn(3, 3, "sh-")
	var users []string
	clients := map[string]*wsClient{}
	for k, us := range byShard {
		for j, u := range us {
			q := ""
			if j == 0 {
				q = "topics=news"
			}
			clients[u] = dialWS(t, n[(k+j)%3].wsURL(u)+"?"+q)
			users = append(users, u)
		}
	}
	slices.Sort(users)
	for _, u := range users {
		eventually(t, u+" online", func() bool { return n[0].online(t, u) == 1 })
	}
	// Live events reach the stream from every shard.
	online := map[string]bool{}
	for len(online) < len(users) {
		online[watch.next().GetUserOnline().GetUserId()] = true
	}
	// Each shard's Redis holds its users' presence, and only theirs.
	for k, r := range rs {
		got, err := r.Client().ZRange(ctx, "{pushgate}:online", 0, -1).Result()
		if err != nil {
			t.Fatal(err)
		}
		want := slices.Clone(byShard[k])
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("shard %d online set %v, want %v", k, got, want)
		}
	}

	// One send to users of every shard.
	resp, err := n[1].api.SendToUsers(ctx, &pb.SendToUsersRequest{UserIds: users, Message: &pb.Message{
		Payload: &pb.Message_Text{Text: "to-all"}, Ttl: durationpb.New(time.Hour)}})
	if err != nil {
		t.Fatal(err)
	}
	// The first send on every shard: no shard's last id is past the
	// proposed one, so every copy has the call's id.
	for i, d := range resp.GetResults() {
		if d.GetUserId() != users[i] || d.GetDeliveredConnections() != 1 || !d.GetStored() || d.GetMessageId() != "" {
			t.Fatalf("result %d = %v", i, d)
		}
	}
	for _, u := range users {
		clients[u].expect("to-all")
	}

	// Receipts: the whole list pages over every shard with no gap or
	// duplicate; per user, each shard answers for its own.
	var listed []string
	for token := ""; ; {
		st, err := n[2].api.GetMessageStatus(ctx, &pb.GetMessageStatusRequest{MessageId: resp.GetMessageId(), PageSize: 4, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		if st.GetTotalRecipients() != int32(len(users)) {
			t.Fatalf("total recipients %d, want %d", st.GetTotalRecipients(), len(users))
		}
		for _, r := range st.GetRecipients() {
			listed = append(listed, r.GetUserId())
		}
		if token = st.GetNextPageToken(); token == "" {
			break
		}
	}
	if slices.Sort(listed); !slices.Equal(listed, users) {
		t.Fatalf("receipt lists %v, want %v", listed, users)
	}
	st, err := n[0].api.GetMessageStatus(ctx, &pb.GetMessageStatusRequest{MessageId: resp.GetMessageId(), UserIds: []string{users[8], users[0], users[4]}})
	if err != nil || len(st.GetRecipients()) != 3 || st.GetRecipients()[0].GetUserId() != users[8] || st.GetRecipients()[2].GetDeliveredConnections() != 1 {
		t.Fatalf("GetMessageStatus by users = %v, %v", st, err)
	}
	if _, err := n[0].api.GetMessageStatus(ctx, &pb.GetMessageStatusRequest{MessageId: resp.GetMessageId(), UserIds: []string{"stranger"}}); status.Code(err) == codes.OK {
		t.Fatalf("GetMessageStatus for a user not sent to answered OK")
	}

	// Broadcast and a topic reach every shard's users.
	if _, err := n[2].api.Broadcast(ctx, &pb.BroadcastRequest{Message: textMsg("bc")}); err != nil {
		t.Fatal(err)
	}
	for _, u := range users {
		clients[u].expect("bc")
	}
	pub, err := n[1].api.Publish(ctx, &pb.PublishRequest{Topic: "news", Message: textMsg("news-1")})
	if err != nil || pub.GetDeliveredConnections() != 3 {
		t.Fatalf("Publish = %v, %v", pub, err)
	}
	for _, us := range byShard {
		clients[us[0]].expect("news-1")
	}

	// Presence and ListOnline, from every node.
	pr, err := n[2].api.GetPresence(ctx, &pb.GetPresenceRequest{UserIds: append(slices.Clone(users), "nobody")})
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range pr.GetUsers() {
		want := int32(1)
		if i == len(users) {
			want = 0
		}
		if p.GetConnections() != want {
			t.Fatalf("presence %d = %v", i, p)
		}
	}
	want := make([]string, len(users))
	for i, u := range users {
		want[i] = u + ":1"
	}
	for _, s := range n {
		for _, size := range []int32{1, 2, 4, 100} {
			got, total, conns := listAll(t, s, size)
			if !slices.Equal(got, want) || total != int64(len(users)) || conns != int64(len(users)) {
				t.Fatalf("ListOnline pages of %d = %v (%d users, %d conns), want %v", size, got, total, conns, want)
			}
		}
	}

	// Resume on another node: a user of the last shard (with no raw
	// connection, whose writes would acknowledge the messages).
	u := usersOn(3, 1, "resume-")[2][0]
	c1 := n[0].dialEnv(t, "/"+u)
	r1, err := n[1].api.SendToUser(ctx, &pb.SendToUserRequest{UserId: u, Message: &pb.Message{Payload: &pb.Message_Json{Json: `{"n":1}`}, Ttl: durationpb.New(time.Hour)}})
	if err != nil {
		t.Fatal(err)
	}
	if m := c1.nextMessage(); m.ID != r1.GetMessageId() {
		t.Fatalf("got %s, want %s", m.ID, r1.GetMessageId())
	}
	epoch := c1.hello.Epoch
	c1.c.CloseNow()
	r2, err := n[2].api.SendToUser(ctx, &pb.SendToUserRequest{UserId: u, Message: &pb.Message{Payload: &pb.Message_Json{Json: `{"n":2}`}, Ttl: durationpb.New(time.Hour)}})
	if err != nil {
		t.Fatal(err)
	}
	c2 := n[1].dialEnv(t, "/"+u+"?last_id="+r1.GetMessageId()+"&epoch="+epoch)
	if c2.hello.Recovered == nil || !*c2.hello.Recovered || c2.hello.Epoch != epoch {
		t.Fatalf("hello %+v, want recovered in epoch %s", c2.hello, epoch)
	}
	if m := c2.nextMessage(); m.ID != r2.GetMessageId() {
		t.Fatalf("replayed %s, want %s", m.ID, r2.GetMessageId())
	}

	// The event log from its start: every shard's online events.
	from := n[2].watchAfter(t, "0", pb.EventKind_EVENT_KIND_USER_ONLINE)
	for seen := map[string]bool{}; len(seen) < len(users); {
		if u := from.next().GetUserOnline().GetUserId(); slices.Contains(users, u) {
			seen[u] = true
		}
	}
}

// A shard killed: its users' calls answer UNAVAILABLE and its users'
// connections are closed with 4003 (to resume elsewhere) once the node
// ttl passes; the other shard's users keep working; readiness names the
// shard. When it comes back, everything heals without restarts.
func TestShardDownOnlyItsUsers(t *testing.T) {
	rs, url := startShards(t, 2)
	n := startEngineNodes(t, 2, "--redis-url", url, "--node-ttl", "3s", "--redis-timeout", "500ms", "--presence-grace", "0")
	a, b := n[0], n[1]
	ctx := context.Background()
	us := usersOn(2, 1, "down-")
	alive, doomed := us[0][0], us[1][0]
	ca, cd := a.dial(t, alive), a.dial(t, doomed)
	for _, u := range []string{alive, doomed} {
		eventually(t, u+" online", func() bool { return b.online(t, u) == 1 })
	}

	rs[1].Kill()
	eventually(t, "the doomed user's sends to fail", func() bool {
		_, err := b.api.SendToUser(ctx, &pb.SendToUserRequest{UserId: doomed, Message: textMsg("x")})
		return status.Code(err) == codes.Unavailable
	})
	if code := cd.closeCode(); code != 4003 {
		t.Fatalf("doomed user's connection closed with %d, want 4003", code)
	}
	for i := range 3 {
		r, err := b.api.SendToUser(ctx, &pb.SendToUserRequest{UserId: alive, Message: textMsg(fmt.Sprint("ok-", i))})
		if err != nil || r.GetDeliveredConnections() != 1 {
			t.Fatalf("send to the other shard's user = %v, %v", r, err)
		}
		ca.expect(fmt.Sprint("ok-", i))
	}
	// The node stays ready for the other shard's users, and says which
	// shard it cannot reach.
	for _, s := range n {
		eventually(t, "readiness to name the shard", func() bool {
			code, body := readyBody(t, s)
			return code == http.StatusOK && strings.Contains(body, "redis shards unreachable: 1 ("+rs[1].Addr()+")")
		})
	}
	// A new connection of the doomed user is refused (HTTP 503); the
	// other's is not.
	ctxd, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, _, err := websocket.Dial(ctxd, a.wsURL(doomed), nil); err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("doomed user's new connection: %v, want HTTP 503", err)
	}
	fresh := a.dial(t, alive)
	if _, err := b.api.SendToUser(ctx, &pb.SendToUserRequest{UserId: alive, Message: textMsg("both")}); err != nil {
		t.Fatal(err)
	}
	ca.expect("both")
	fresh.expect("both")
	// A live WatchEvents stream opens on a node that cannot reach the
	// shard, and reports the other shard's users.
	watch := b.watchAfter(t, "", pb.EventKind_EVENT_KIND_USER_ONLINE)
	other := usersOn(2, 2, "down-")[0][1]
	a.dial(t, other)
	if e := watch.next(); e.GetUserOnline().GetUserId() != other || !gateway.IsCursors(e.GetCursor()) {
		t.Fatalf("event %v, want %s online with a composite cursor", e, other)
	}

	rs[1].Restart()
	for _, s := range n {
		eventually(t, "the shard to heal", func() bool {
			code, body := readyBody(t, s)
			_, err := s.api.SendToUser(ctx, &pb.SendToUserRequest{UserId: doomed, Message: textMsg("probe")})
			return code == http.StatusOK && body == "ready\n" && err == nil
		})
	}
	cd2 := b.dial(t, doomed)
	eventually(t, "the doomed user online again", func() bool { return a.online(t, doomed) == 1 })
	r, err := a.api.SendToUser(ctx, &pb.SendToUserRequest{UserId: doomed, Message: textMsg("back")})
	if err != nil || r.GetDeliveredConnections() != 1 {
		t.Fatalf("send after the shard came back = %v, %v", r, err)
	}
	cd2.expect("back")
	if _, err := a.api.SendToUser(ctx, &pb.SendToUserRequest{UserId: alive, Message: textMsg("still")}); err != nil {
		t.Fatal(err)
	}
	ca.expect("still")
	fresh.expect("still")
}

// redisWork reads a redis-server's commands processed (INFO commandstats,
// all but INFO itself and a Cluster client's reads of the slot map,
// CLUSTER ...) and CPU seconds used (INFO cpu, user + system).
func redisWork(t *testing.T, r *redistest.Server) (calls int64, cpu float64) {
	t.Helper()
	return redisWorkOf(t, r.Client())
}

func redisWorkOf(t *testing.T, rc *redis.Client) (calls int64, cpu float64) {
	t.Helper()
	info, err := rc.Info(context.Background(), "commandstats", "cpu").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\n") {
		line = strings.TrimSpace(line)
		if name, rest, ok := strings.Cut(line, ":calls="); ok && strings.HasPrefix(name, "cmdstat_") &&
			name != "cmdstat_info" && !strings.HasPrefix(name, "cmdstat_cluster") {
			var n int64
			fmt.Sscanf(rest, "%d", &n)
			calls += n
		}
		var f float64
		if _, err := fmt.Sscanf(line, "used_cpu_sys:%g", &f); err == nil {
			cpu += f
		}
		if _, err := fmt.Sscanf(line, "used_cpu_user:%g", &f); err == nil {
			cpu += f
		}
	}
	return calls, cpu
}

// The Redis work of a send is the same in total with 1, 2 and 4 shards
// and splits over them as the users do (64 users, two nodes, 600 sends to
// them in turn, with and without a ttl). The table it logs is in
// docs/cluster.md ("Shards").
func TestShardsRedisWorkPerSend(t *testing.T) {
	const users, sends = 64, 600
	type result struct {
		perSend float64   // commands per send, all shards
		shares  []float64 // each shard's part of them
		cpu     float64   // CPU seconds per send, all shards
	}
	measure := func(shards int, ttl *durationpb.Duration) result {
		rs, url := startShards(t, shards)
		n := startEngineNodes(t, 2, "--redis-url", url, "--node-ttl", "60s") // beats stay out of the count
		ctx := context.Background()
		clients := make([]*wsClient, users)
		for i := range clients {
			clients[i] = n[i%2].dial(t, fmt.Sprintf("w-%d", i))
		}
		eventually(t, "everyone online", func() bool {
			_, tu, _ := listAll(t, n[0], 100)
			return tu == users
		})
		calls0, cpu0 := make([]int64, shards), make([]float64, shards)
		for k, r := range rs {
			calls0[k], cpu0[k] = redisWork(t, r)
		}
		for i := range sends {
			resp, err := n[i%2].api.SendToUser(ctx, &pb.SendToUserRequest{UserId: fmt.Sprintf("w-%d", i%users),
				Message: &pb.Message{Payload: &pb.Message_Json{Json: `{"type":1,"orderId":"20261122000123","content":"new order"}`}, Ttl: ttl}})
			if err != nil || resp.GetDeliveredConnections() != 1 {
				t.Fatalf("send: %v %v", resp, err)
			}
		}
		var out result
		var total int64
		calls := make([]int64, shards)
		for k, r := range rs {
			c, cpu := redisWork(t, r)
			calls[k] = c - calls0[k]
			total += calls[k]
			out.cpu += (cpu - cpu0[k]) / sends
		}
		out.perSend = float64(total) / sends
		for _, c := range calls {
			out.shares = append(out.shares, float64(c)/float64(total))
		}
		for i, c := range clients {
			for range sends / users {
				c.next()
			}
			if i < sends%users {
				c.next()
			}
		}
		return out
	}
	for _, ttl := range []*durationpb.Duration{nil, durationpb.New(time.Hour)} {
		kind := "live"
		if ttl != nil {
			kind = "stored (ttl)"
		}
		var one float64
		for _, shards := range []int{1, 2, 4} {
			r := measure(shards, ttl)
			if shards == 1 {
				one = r.perSend
			}
			var parts []string
			for _, s := range r.shares {
				parts = append(parts, fmt.Sprintf("%.0f%%", s*100))
			}
			t.Logf("| %s | %d | %.2f | %s | %.0f µs |", kind, shards, r.perSend, strings.Join(parts, " / "), r.cpu*1e6)
			if r.perSend > one*1.05+0.05 || r.perSend < one*0.95-0.05 {
				t.Fatalf("%s, %d shards: %.2f commands per send, %.2f with one", kind, shards, r.perSend, one)
			}
			for k, s := range r.shares {
				if s < 0.5/float64(shards) || s > 1.5/float64(shards) {
					t.Fatalf("%s, %d shards: shard %d did %.0f%% of the work", kind, shards, k, s*100)
				}
			}
		}
	}
}

// Adding a shard: a user that stays keeps its inbox (recovered: true); a
// user that moves to the new shard resumes there, in another epoch, and is
// told recovered: false instead of being given a silent gap.
func TestShardAddedMovedUserNotRecovered(t *testing.T) {
	rs, _ := startShards(t, 2)
	var stays, moves string
	for i := 0; stays == "" || moves == ""; i++ {
		u := fmt.Sprintf("mv-%d", i)
		if redisengine.ShardOf(u, 2) == 0 {
			stays = cmp.Or(stays, u)
		} else {
			moves = cmp.Or(moves, u)
		}
	}
	ctx := context.Background()
	one := startServer(t, "--engine", "redis", "--redis-url", rs[0].URL())
	type seen struct{ id, epoch string }
	last := map[string]seen{}
	for _, u := range []string{stays, moves} {
		c := one.dialEnv(t, "/"+u)
		r, err := one.api.SendToUser(ctx, &pb.SendToUserRequest{UserId: u, Message: &pb.Message{Payload: &pb.Message_Json{Json: `{"n":1}`}, Ttl: durationpb.New(time.Hour)}})
		if err != nil {
			t.Fatal(err)
		}
		if m := c.nextMessage(); m.ID != r.GetMessageId() {
			t.Fatalf("got %s, want %s", m.ID, r.GetMessageId())
		}
		last[u] = seen{r.GetMessageId(), c.hello.Epoch}
		c.c.CloseNow()
		// Sent while away: the stayer gets it replayed.
		if _, err := one.api.SendToUser(ctx, &pb.SendToUserRequest{UserId: u, Message: &pb.Message{Payload: &pb.Message_Json{Json: `{"n":2}`}, Ttl: durationpb.New(time.Hour)}}); err != nil {
			t.Fatal(err)
		}
	}
	one.stop(t)

	two := startServer(t, "--engine", "redis", "--redis-url", rs[0].URL()+" "+rs[1].URL())
	c := two.dialEnv(t, "/"+stays+"?last_id="+last[stays].id+"&epoch="+last[stays].epoch)
	if c.hello.Recovered == nil || !*c.hello.Recovered || c.hello.Replayed != 1 {
		t.Fatalf("user that stayed: hello %+v, want recovered with 1 replayed", c.hello)
	}
	c = two.dialEnv(t, "/"+moves+"?last_id="+last[moves].id+"&epoch="+last[moves].epoch)
	if c.hello.Recovered == nil || *c.hello.Recovered || c.hello.Epoch == last[moves].epoch {
		t.Fatalf("user that moved: hello %+v, want recovered: false in another epoch than %s", c.hello, last[moves].epoch)
	}
}
