package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"pushgate/gateway/redisengine/redistest"
	pb "pushgate/gen/pushgate/v1"
)

// The failure matrix of docs/failures.md: Redis restarted with and
// without its data, and a Sentinel failover to a replica that lacked the
// last writes, with and without --redis-wait-replicas.

// checkedUser is a user the checker follows: it saw one message (start)
// and went away; every send to it answered OK is recorded, and when it
// resumes from start each must be replayed, unless it is told recovered:
// false.
type checkedUser struct {
	name         string
	start, epoch string
	ok           []string // the data of the sends answered OK, in order
}

// newCheckedUsers connects n users through s, sends each a first stored
// message and disconnects them, remembering the id and epoch to resume from.
func newCheckedUsers(t *testing.T, s *testServer, n int) []*checkedUser {
	t.Helper()
	users := make([]*checkedUser, n)
	for i := range users {
		u := &checkedUser{name: fmt.Sprintf("checked-%d", i)}
		c := s.dialEnv(t, "/"+u.name)
		resp, err := s.api.SendToUser(context.Background(), &pb.SendToUserRequest{UserId: u.name,
			Message: &pb.Message{Payload: &pb.Message_Json{Json: `"start"`}, Ttl: durationpb.New(time.Hour)}})
		if err != nil {
			t.Fatalf("start %s: %v", u.name, err)
		}
		if m := c.nextMessage(); m.ID != resp.GetMessageId() {
			t.Fatalf("%s got %s, want %s", u.name, m.ID, resp.GetMessageId())
		}
		u.start, u.epoch = resp.GetMessageId(), c.hello.Epoch
		c.c.CloseNow()
		eventually(t, u.name+" offline", func() bool { return s.online(t, u.name) == 0 })
		users[i] = u
	}
	return users
}

// sendChecked sends message data to u through s (stored, with an
// idempotency key: the data) and records it when answered OK. Any answer
// but OK or UNAVAILABLE fails the test.
func sendChecked(t *testing.T, s *testServer, u *checkedUser, data string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := s.api.SendToUser(ctx, &pb.SendToUserRequest{UserId: u.name, Message: &pb.Message{
		Payload: &pb.Message_Json{Json: `"` + data + `"`}, Ttl: durationpb.New(time.Hour), IdempotencyKey: data}})
	switch {
	case err == nil:
		if !resp.GetStored() {
			t.Fatalf("%s: OK but not stored: %v", data, resp)
		}
		u.ok = append(u.ok, `"`+data+`"`)
	case status.Code(err) != codes.Unavailable:
		t.Fatalf("%s: %v; want OK or UNAVAILABLE", data, err)
	}
	return err
}

// resumeChecked resumes u from its start on s and returns the hello and
// the data replayed.
func resumeChecked(t *testing.T, s *testServer, u *checkedUser) (env, map[string]bool) {
	t.Helper()
	c := s.dialEnv(t, "/"+u.name+"?last_id="+u.start+"&epoch="+u.epoch)
	if c.hello.Recovered == nil {
		t.Fatalf("%s: hello without recovered: %+v", u.name, c.hello)
	}
	got := make(map[string]bool)
	for range c.hello.Replayed {
		got[string(c.nextMessage().Data)] = true
	}
	c.c.CloseNow()
	return c.hello, got
}

// waitReady waits until every node serves again (its Redis engine is up).
func waitReady(t *testing.T, nodes ...*testServer) {
	t.Helper()
	for i, s := range nodes {
		eventually(t, fmt.Sprintf("node %d ready", i), func() bool { return readyz(t, s) == 200 })
	}
}

// Redis killed and restarted empty (no persistence): the epoch changes, so
// a client resuming from before is told recovered: false; what was stored
// is gone (the gap is real), and the node counts the epoch change.
func TestClusterRedisRestartedEmptyChangesEpoch(t *testing.T) {
	r := redistest.Start(t)
	s := startServer(t, "--engine", "redis", "--redis-url", r.URL(), "--redis-timeout", "500ms")
	users := newCheckedUsers(t, s, 2)
	for i := range 3 {
		for _, u := range users {
			if err := sendChecked(t, s, u, fmt.Sprintf("%s-%d", u.name, i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	r.Kill()
	r.Restart()
	waitReady(t, s)
	for _, u := range users {
		eventually(t, "a send after the restart", func() bool { return sendChecked(t, s, u, u.name+"-after") == nil })
		hello, got := resumeChecked(t, s, u)
		if *hello.Recovered || hello.Epoch == u.epoch {
			t.Fatalf("%s: recovered %v, epoch %s (was %s); want recovered false and a new epoch", u.name, *hello.Recovered, hello.Epoch, u.epoch)
		}
		if got[u.ok[0]] || !got[u.ok[len(u.ok)-1]] {
			t.Fatalf("%s: replayed %v; want only what was sent after the restart", u.name, got)
		}
	}
	if v := s.metric(t, "pushgate_redis_epoch_changes_total"); v < 1 {
		t.Fatalf("epoch changes %v, want at least 1", v)
	}
}

// Redis killed and restarted with its data (appendonly, fsync always): the
// epoch stays, a client resuming from before is told recovered: true and
// gets every message sent before and after, and no epoch change is counted.
func TestClusterRedisRestartedWithDataKeepsEpoch(t *testing.T) {
	r := redistest.StartWith(t, "--appendonly", "yes", "--appendfsync", "always", "--dir", t.TempDir())
	s := startServer(t, "--engine", "redis", "--redis-url", r.URL(), "--redis-timeout", "500ms")
	users := newCheckedUsers(t, s, 2)
	for i := range 3 {
		for _, u := range users {
			if err := sendChecked(t, s, u, fmt.Sprintf("%s-%d", u.name, i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	r.Kill()
	r.Restart()
	waitReady(t, s)
	for _, u := range users {
		eventually(t, "a send after the restart", func() bool { return sendChecked(t, s, u, u.name+"-after") == nil })
		hello, got := resumeChecked(t, s, u)
		if !*hello.Recovered || hello.Epoch != u.epoch {
			t.Fatalf("%s: recovered %v, epoch %s (was %s); want recovered true, same epoch", u.name, *hello.Recovered, hello.Epoch, u.epoch)
		}
		for _, d := range u.ok {
			if !got[d] {
				t.Fatalf("%s: %s not replayed (got %v)", u.name, d, got)
			}
		}
	}
	if v := s.metric(t, "pushgate_redis_epoch_changes_total"); v != 0 {
		t.Fatalf("epoch changes %v, want 0", v)
	}
}

// replicated is a master (behind a proxy that can freeze its replication
// link), one replica and three sentinels; everyone, sentinels included,
// knows the master by the proxy's address.
type replicated struct {
	master    *redistest.Server
	proxy     *redistest.Proxy
	replica   *redistest.Server
	sentinels []string
}

func startReplicated(t *testing.T) *replicated {
	t.Helper()
	r := &replicated{master: redistest.Start(t)}
	r.proxy = redistest.StartProxy(t, r.master.Addr())
	r.replica = redistest.StartReplica(t, r.proxy.Addr())
	r.sentinels = redistest.StartSentinels(t, 3, r.proxy.Addr(), 1)
	return r
}

// nodeArgs are the flags of a node that reaches Redis through the sentinels.
func (r *replicated) nodeArgs(extra ...string) []string {
	return append([]string{"--redis-url", "redis://" + strings.Join(r.sentinels, ",") + "/0", "--redis-master-name", "mymaster",
		"--redis-timeout", "1s", "--node-ttl", "30s"}, extra...)
}

// failedOver waits until the sentinels have promoted the replica.
func (r *replicated) failedOver(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for redistest.MasterAddr(t, r.sentinels[0]) != r.replica.Addr() {
		if time.Now().After(deadline) {
			t.Fatal("the sentinels did not promote the replica within 60s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A Sentinel failover under traffic to a replica that lacked the last
// writes (its link frozen: sends answered OK on the master never reached
// it), without --redis-wait-replicas. Sends go on through two nodes while
// the master is killed and the replica promoted. Then every user resumes
// from before it all: each send answered OK is replayed, or the user is
// told recovered: false. The sends made while the link was frozen are
// really gone, and their users are told so.
func TestClusterSentinelFailoverLaggingReplica(t *testing.T) {
	r := startReplicated(t)
	n := startEngineNodes(t, 2, r.nodeArgs()...)
	users := newCheckedUsers(t, n[0], 6)
	seq := 0
	send := func() error {
		u := users[seq%len(users)]
		err := sendChecked(t, n[seq%2], u, fmt.Sprintf("%s-%d", u.name, seq))
		seq++
		return err
	}
	for range 12 {
		if err := send(); err != nil {
			t.Fatal(err)
		}
	}
	// Wait until the replica has everything so far, then freeze its link:
	// what follows is answered OK by the master alone.
	redistest.WaitInfo(t, r.replica.Addr(), "keyspace", "keys=")
	replicaHas := func() int64 {
		c := r.replica.Client()
		n, _ := c.DBSize(context.Background()).Result()
		return n
	}
	masterHas := r.master.Client().DBSize(context.Background()).Val()
	eventually(t, "the replica to catch up", func() bool { return replicaHas() == masterHas })
	r.proxy.FreezeReplication()
	lagged := map[string]bool{}
	for range 12 {
		u := users[seq%len(users)]
		before := len(u.ok)
		if err := send(); err != nil {
			t.Fatal(err)
		}
		lagged[u.ok[before]] = true
	}
	r.master.Kill()
	killed := time.Now()
	var healed time.Duration
	unavailable, after := 0, 0
	deadline := time.Now().Add(90 * time.Second)
	for after < 24 {
		if send() == nil {
			if after == 0 {
				healed = time.Since(killed)
			}
			after++
		} else {
			unavailable++
			time.Sleep(50 * time.Millisecond)
		}
		if time.Now().After(deadline) {
			t.Fatalf("sends did not resume after the failover (%d UNAVAILABLE)", unavailable)
		}
	}
	r.failedOver(t)
	waitReady(t, n...)
	t.Logf("%d sends OK, %d UNAVAILABLE during the failover; the first OK %v after the kill", seq-unavailable, unavailable, healed.Round(100*time.Millisecond))

	lost, told := 0, 0
	for i, u := range users {
		hello, got := resumeChecked(t, n[i%2], u)
		missing := 0
		for _, d := range u.ok {
			if !got[d] {
				missing++
				if !lagged[d] {
					t.Errorf("%s: %s, sent before the freeze or after the failover, is missing", u.name, d)
				}
			}
		}
		if missing > 0 && *hello.Recovered {
			t.Errorf("%s: %d messages answered OK are missing, and the client was told recovered: true", u.name, missing)
		}
		if !*hello.Recovered {
			told++
		}
		lost += missing
	}
	if lost == 0 {
		t.Fatal("no send was lost: the replica did not lag")
	}
	t.Logf("%d sends answered OK were lost with the master; %d of %d users told recovered: false", lost, told, len(users))
	for i, s := range n {
		if v := s.metric(t, "pushgate_redis_epoch_changes_total"); v < 1 {
			t.Errorf("node %d: epoch changes %v, want at least 1", i, v)
		}
	}
}

// The same failover with --redis-wait-replicas 1: while the replica's link
// is frozen a stored send answers UNAVAILABLE (counted), never OK; after
// the failover, once the old master is back as a replica of the new one,
// the caller's retries with the same idempotency keys are answered OK.
// Every send answered OK is replayed, and every client resumes in the
// epoch it started in (recovered: true): nothing answered OK was lost.
func TestClusterSentinelFailoverWaitReplicas(t *testing.T) {
	r := startReplicated(t)
	n := startEngineNodes(t, 2, r.nodeArgs("--redis-wait-replicas", "1", "--redis-wait-timeout", "300ms")...)
	users := newCheckedUsers(t, n[0], 4)
	for i := range 8 {
		u := users[i%len(users)]
		if err := sendChecked(t, n[i%2], u, fmt.Sprintf("%s-%d", u.name, i)); err != nil {
			t.Fatalf("before the freeze: %v", err)
		}
	}
	r.proxy.FreezeReplication()
	var pending []string
	for i := 8; i < 12; i++ {
		u := users[i%len(users)]
		data := fmt.Sprintf("%s-%d", u.name, i)
		if err := sendChecked(t, n[i%2], u, data); err == nil {
			t.Fatalf("%s answered OK while no replica could have it", data)
		}
		pending = append(pending, data)
	}
	failed := n[0].metric(t, "pushgate_redis_wait_failures_total") + n[1].metric(t, "pushgate_redis_wait_failures_total")
	if failed < float64(len(pending)) {
		t.Fatalf("wait failures %v, want at least %d", failed, len(pending))
	}

	r.master.Kill()
	killed := time.Now()
	r.failedOver(t)
	promoted := time.Since(killed)
	redistest.WaitInfo(t, r.replica.Addr(), "replication", "role:master")
	r.master.Restart() // empty; the sentinels make it a replica of the new master
	redistest.WaitInfo(t, r.replica.Addr(), "replication", "connected_slaves:1")

	// The caller retries what was not answered OK, with the same keys.
	deadline := time.Now().Add(60 * time.Second)
	for i, data := range pending {
		u := users[(8+i)%len(users)]
		for sendChecked(t, n[i%2], u, data) != nil {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not answered OK within 60s of the failover", data)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	t.Logf("replica promoted %v after the kill; the retries answered OK %v after the kill (the old master back as a replica)",
		promoted.Round(100*time.Millisecond), time.Since(killed).Round(100*time.Millisecond))
	for i := 12; i < 20; i++ {
		u := users[i%len(users)]
		if err := sendChecked(t, n[i%2], u, fmt.Sprintf("%s-%d", u.name, i)); err != nil {
			t.Fatalf("after the failover: %v", err)
		}
	}
	waitReady(t, n...)
	for i, u := range users {
		hello, got := resumeChecked(t, n[i%2], u)
		if !*hello.Recovered || hello.Epoch != u.epoch {
			t.Errorf("%s: recovered %v, epoch %s (was %s); want recovered, same epoch", u.name, *hello.Recovered, hello.Epoch, u.epoch)
		}
		for _, d := range u.ok {
			if !got[d] {
				t.Errorf("%s: %s was answered OK and is not replayed", u.name, d)
			}
		}
	}
	// The epoch every client resumed with is the one it started with. A
	// node may still have seen another one for a moment: the old master
	// restarts empty and answers as a master until the sentinels make it a
	// replica, and a node that reached it then counts a change (and a
	// second one back); so the count is logged, not asserted.
	for i, s := range n {
		t.Logf("node %d: epoch changes seen %v", i, s.metric(t, "pushgate_redis_epoch_changes_total"))
	}
}

// Redis restarts from a snapshot older than its last writes (as a replica
// promoted before it had them), and the node that sent them (a) reaches it
// only later: its link to Redis is frozen. The other node (b) does not
// serve meanwhile (readiness 503, new connections refused), because a
// client resuming through it could be told recovered: true over the gap
// before a has checked its writes. Once a is back it finds its writes
// missing, the epoch changes, b serves again, and clients resuming on b
// are told recovered: false.
func TestClusterRedisLostWritesResumeOnAnotherNode(t *testing.T) {
	r := redistest.Start(t)
	p := newStallProxy(t, r.Addr())
	args := []string{"--engine", "redis", "--redis-timeout", "500ms", "--node-ttl", "30s"}
	a := startServer(t, append([]string{"--redis-url", "redis://" + p.addr() + "/0"}, args...)...)
	b := startServer(t, append([]string{"--redis-url", r.URL()}, args...)...)
	users := newCheckedUsers(t, a, 3)
	if err := r.Client().Save(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	lagged := map[string]bool{}
	for i := range 6 {
		u := users[i%len(users)]
		if err := sendChecked(t, a, u, fmt.Sprintf("%s-%d", u.name, i)); err != nil {
			t.Fatal(err)
		}
		lagged[u.ok[len(u.ok)-1]] = true
	}
	p.stall()
	r.Kill()
	r.Restart() // from the snapshot: the last six sends are gone

	// b reaches Redis (it writes its state again), and waits for a.
	eventually(t, "b to write its state again", func() bool { return b.metric(t, "pushgate_redis_resyncs_total") >= 1 })
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		if code := readyz(t, b); code != 503 {
			t.Fatalf("b ready (%d) before a checked its writes", code)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		c, resp, err := websocket.Dial(ctx, b.wsURL(users[0].name)+"?last_id="+users[0].start+"&epoch="+users[0].epoch, nil)
		cancel()
		if err == nil {
			c.CloseNow()
			t.Fatal("b accepted a resuming client before a checked its writes")
		}
		if resp == nil || resp.StatusCode != 503 {
			t.Fatalf("b refused a client with %v, want HTTP 503", err)
		}
	}
	p.thaw()
	waitReady(t, a, b)
	for _, u := range users {
		hello, got := resumeChecked(t, b, u)
		if *hello.Recovered {
			t.Errorf("%s: told recovered: true", u.name)
		}
		for _, d := range u.ok {
			if !got[d] && !lagged[d] {
				t.Errorf("%s: %s missing, and it was in the snapshot", u.name, d)
			}
			if got[d] && lagged[d] {
				t.Fatalf("%s: %s replayed: the restart lost nothing", u.name, d)
			}
		}
	}
	if v := a.metric(t, "pushgate_redis_epoch_changes_total"); v != 1 {
		t.Errorf("a: epoch changes %v, want 1", v)
	}
}
