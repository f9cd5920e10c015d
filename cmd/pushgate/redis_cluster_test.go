package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/types/known/durationpb"

	"pushgate/gateway/redisengine"
	"pushgate/gateway/redisengine/redistest"
	pb "pushgate/gen/pushgate/v1"
)

// A Redis Cluster of 3 masters (a replica each) spread over 6 hash tags
// (--redis-cluster-shards 6): users of different virtual shards keep their
// keys in different slots, on every master; the nodes' channels are shard
// channels (SSUBSCRIBE) on the master of their slot; sends, joins,
// ListOnline, a topic and broadcast work across them; one master killed
// leaves the other masters' users working, and its replica takes its
// users over without a restart.
func TestRedisClusterSpreadsOverMasters(t *testing.T) {
	cl := redistest.StartReplicatedCluster(t, 3, 1)
	n := startEngineNodes(t, 2, "--redis-url", "redis://"+strings.Join(cl.Addrs, ","), "--redis-cluster",
		"--redis-cluster-shards", "6", "--node-ttl", "3s", "--redis-timeout", "500ms", "--presence-grace", "0")
	ctx := context.Background()
	const k = 6
	tags := redisengine.ClusterTags("pushgate", k)
	var users []string
	clients := map[string]*wsClient{}
	for s, us := range usersOn(k, 1, "rc-") {
		users = append(users, us[0])
		clients[us[0]] = n[s%2].dialQuery(t, us[0], "topics=news")
	}
	for _, u := range users {
		eventually(t, u+" online", func() bool { return n[0].online(t, u) == 1 && n[1].online(t, u) == 1 })
	}

	// Each user's presence is on the master of its tag's slot; the six
	// tags are six slots over all three masters; each master's shard
	// channels have both nodes subscribed, and nothing uses the classic
	// (Cluster-wide) channels.
	masterOf := map[string]string{} // user -> master
	slots := map[int]bool{}
	for s, u := range users {
		slot := redisengine.KeySlot(tags[s])
		slots[slot] = true
		m := cl.MasterOf(cl.Addrs[0], slot)
		rc := redis.NewClient(&redis.Options{Addr: m})
		if got, err := rc.Exists(ctx, "{"+tags[s]+"}:c:"+u).Result(); err != nil || got != 1 {
			t.Fatalf("%s's presence on %s (slot %d): %v, %v", u, m, slot, got, err)
		}
		subs, err := rc.PubSubShardNumSub(ctx, "{"+tags[s]+"}:all").Result()
		if err != nil || subs["{"+tags[s]+"}:all"] != 2 {
			t.Fatalf("shard channel {%s}:all subscribers on %s: %v, %v", tags[s], m, subs, err)
		}
		if classic, err := rc.PubSubNumSub(ctx, "{"+tags[s]+"}:all").Result(); err != nil || classic["{"+tags[s]+"}:all"] != 0 {
			t.Fatalf("classic channel {%s}:all subscribers: %v, %v", tags[s], classic, err)
		}
		rc.Close()
		masterOf[u] = m
	}
	var masters []string
	for _, m := range masterOf {
		if !slices.Contains(masters, m) {
			masters = append(masters, m)
		}
	}
	if len(slots) != k || len(masters) != 3 {
		t.Fatalf("users' keys on %d slots and %d masters (%v), want %d and 3", len(slots), len(masters), masterOf, k)
	}

	// Every call across the virtual shards.
	resp, err := n[1].api.SendToUsers(ctx, &pb.SendToUsersRequest{UserIds: users, Message: &pb.Message{
		Payload: &pb.Message_Text{Text: "to-all"}, Ttl: durationpb.New(time.Hour)}})
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range resp.GetResults() {
		if d.GetUserId() != users[i] || d.GetDeliveredConnections() != 1 || !d.GetStored() {
			t.Fatalf("result %d = %v", i, d)
		}
	}
	for _, u := range users {
		clients[u].expect("to-all")
	}
	want := make([]string, len(users))
	for i, u := range slices.Sorted(slices.Values(users)) {
		want[i] = u + ":1"
	}
	if got, total, conns := listAll(t, n[0], 4); !slices.Equal(got, want) || total != k || conns != k {
		t.Fatalf("ListOnline = %v (%d users, %d conns), want %v", got, total, conns, want)
	}
	if p, err := n[0].api.Publish(ctx, &pb.PublishRequest{Topic: "news", Message: textMsg("news")}); err != nil || p.GetDeliveredConnections() != k {
		t.Fatalf("Publish = %v, %v", p, err)
	}
	if _, err := n[1].api.Broadcast(ctx, &pb.BroadcastRequest{Message: textMsg("bc")}); err != nil {
		t.Fatal(err)
	}
	// The topic and the broadcast went through different tags' shard
	// channels: each arrives, in either order (order holds per shard).
	for _, u := range users {
		got := []string{string(clients[u].next().data), string(clients[u].next().data)}
		slices.Sort(got)
		if !slices.Equal(got, []string{"bc", "news"}) {
			t.Fatalf("%s got %q, want news and bc", u, got)
		}
	}

	// Resharding: one tag's slot, keys with it, moves to another master;
	// its user is served from there, on the connection it had (the nodes
	// subscribe to the shard channels again where the slot went).
	moved := users[1]
	dst := masters[0]
	if dst == masterOf[moved] {
		dst = masters[1]
	}
	cl.MoveSlot(redisengine.KeySlot(tags[1]), dst)
	i := 0
	sendUntil := func(u, prefix string) string {
		t.Helper()
		var sent string
		eventually(t, "a send to "+u+" delivered", func() bool {
			i++
			r, err := n[0].api.SendToUser(ctx, &pb.SendToUserRequest{UserId: u, Message: textMsg(fmt.Sprint(prefix, i))})
			if err != nil || r.GetDeliveredConnections() != 1 {
				return false
			}
			sent = fmt.Sprint(prefix, i)
			return true
		})
		return sent
	}
	// An attempt answered UNAVAILABLE may have been delivered all the
	// same (its answer lost): skip those.
	expectLast := func(c *wsClient, sent, prefix string) {
		t.Helper()
		for m := c.next(); string(m.data) != sent; m = c.next() {
			if !strings.HasPrefix(string(m.data), prefix) {
				t.Fatalf("got %q, want %q", m.data, sent)
			}
		}
	}
	expectLast(clients[moved], sendUntil(moved, "moved-"), "moved-")
	rc := redis.NewClient(&redis.Options{Addr: dst})
	ch := "{" + tags[1] + "}:all"
	if subs, err := rc.PubSubShardNumSub(ctx, ch).Result(); err != nil || subs[ch] != 2 {
		t.Fatalf("shard channel %s subscribers on %s after the move: %v, %v", ch, dst, subs, err)
	}
	rc.Close()
	for s, u := range users {
		masterOf[u] = cl.MasterOf(dst, redisengine.KeySlot(tags[s]))
	}

	// One master dies: its users wait for its replica; the others do not.
	victim := masterOf[users[0]]
	killed := time.Now()
	cl.Kill(victim)
	for i, u := range users {
		if masterOf[u] == victim {
			continue
		}
		r, err := n[i%2].api.SendToUser(ctx, &pb.SendToUserRequest{UserId: u, Message: textMsg("during")})
		if err != nil || r.GetDeliveredConnections() != 1 {
			t.Fatalf("send to %s (on a live master) during the failover = %v, %v", u, r, err)
		}
		clients[u].expect("during")
	}
	live := cl.Addrs[0]
	if live == victim {
		live = cl.Addrs[1]
	}
	eventually(t, "the replica to take the dead master's slots", func() bool {
		m := cl.MasterOf(live, redisengine.KeySlot(tags[0]))
		return m != "" && m != victim
	})
	u := users[0]
	eventually(t, u+" to connect again", func() bool {
		dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		ws, _, err := websocket.Dial(dctx, n[1].wsURL(u), nil)
		if err != nil {
			return false
		}
		ws.CloseNow()
		return true
	})
	clients[u].c.CloseNow()
	c := n[1].dial(t, u)
	sent := sendUntil(u, "after-")
	t.Logf("from the kill to the first send delivered to %s's new connection: %v", u, time.Since(killed).Round(100*time.Millisecond))
	expectLast(c, sent, "after-")
}

// redisWorkAt is redisWork for the Redis at addr.
func redisWorkAt(t *testing.T, addr string) (calls int64, cpu float64) {
	t.Helper()
	rc := redis.NewClient(&redis.Options{Addr: addr})
	defer rc.Close()
	return redisWorkOf(t, rc)
}

// The Redis work of sends over a 3-master Cluster: with one hash tag one
// master does it all; with --redis-cluster-shards 6 the masters share it
// as the users do, for the same commands per send in all (64 users, two
// nodes, 600 stored sends to them in turn). The table it logs is in
// docs/cluster.md ("Redis Cluster").
func TestRedisClusterWorkPerMaster(t *testing.T) {
	const users, sends = 64, 600
	var one float64
	for _, tags := range []int{1, 6} {
		addrs := redistest.StartCluster(t)
		n := startEngineNodes(t, 2, "--redis-url", "redis://"+strings.Join(addrs, ","), "--redis-cluster",
			"--redis-cluster-shards", fmt.Sprint(tags), "--node-ttl", "60s") // beats stay out of the count
		ctx := context.Background()
		clients := make([]*wsClient, users)
		for i := range clients {
			clients[i] = n[i%2].dial(t, fmt.Sprintf("w-%d", i))
		}
		eventually(t, "everyone online", func() bool {
			_, tu, _ := listAll(t, n[0], 100)
			return tu == users
		})
		calls0, cpu0 := make([]int64, len(addrs)), make([]float64, len(addrs))
		for k, a := range addrs {
			calls0[k], cpu0[k] = redisWorkAt(t, a)
		}
		for i := range sends {
			resp, err := n[i%2].api.SendToUser(ctx, &pb.SendToUserRequest{UserId: fmt.Sprintf("w-%d", i%users),
				Message: &pb.Message{Payload: &pb.Message_Json{Json: `{"type":1,"orderId":"20261122000123","content":"new order"}`}, Ttl: durationpb.New(time.Hour)}})
			if err != nil || resp.GetDeliveredConnections() != 1 {
				t.Fatalf("send: %v %v", resp, err)
			}
		}
		var total int64
		var cpu float64
		calls := make([]int64, len(addrs))
		for k, a := range addrs {
			c, u := redisWorkAt(t, a)
			calls[k] = c - calls0[k]
			total += calls[k]
			cpu += u - cpu0[k]
		}
		var parts []string
		for _, c := range calls {
			parts = append(parts, fmt.Sprintf("%.0f%%", 100*float64(c)/float64(total)))
		}
		perSend := float64(total) / sends
		t.Logf("| %d | %.2f | %s | %.0f µs |", tags, perSend, strings.Join(parts, " / "), cpu/sends*1e6)
		if tags == 1 {
			one = perSend
			if slices.Max(calls) < total*95/100 {
				t.Fatalf("one tag: the masters did %v of %d commands, want one master all", calls, total)
			}
		} else {
			if perSend > one*1.05+0.05 || perSend < one*0.95-0.05 {
				t.Fatalf("%d tags: %.2f commands per send, %.2f with one", tags, perSend, one)
			}
			for k, c := range calls {
				if s := float64(c) / float64(total); s < 0.5/3 || s > 1.5/3 {
					t.Fatalf("%d tags: master %d did %.0f%% of the work", tags, k, s*100)
				}
			}
		}
		for i, c := range clients {
			for range sends / users {
				c.next()
			}
			if i < sends%users {
				c.next()
			}
		}
	}
}
