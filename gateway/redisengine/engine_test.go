package redisengine_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"pushgate/gateway"
	"pushgate/gateway/redisengine"
	"pushgate/gateway/redisengine/redistest"
)

// These tests run the Redis engine against a real redis-server, with a fake
// gateway.Node in place of the hub: the fake records what the engine hands
// it and answers the local counts the test sets. Two engines on the same
// Redis are two nodes.

// go-redis logs dial failures to stderr; the tests cut Redis off on
// purpose, so its logs are dropped (the engines' own logs are kept, see
// cluster).
type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}

func TestMain(m *testing.M) {
	redis.SetLogger(quietLogger{})
	os.Exit(m.Run())
}

// waitFor bounds every wait on a condition.
const waitFor = 20 * time.Second

// eventually polls cond until it holds or waitFor passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", waitFor, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// testConfig is the gateway configuration the fake nodes report: the
// defaults, except that offline is reported at once.
func testConfig() gateway.Config {
	return gateway.Config{
		InboxMessages: 100,
		InboxBytes:    256 << 10,
		InboxMaxTTL:   time.Hour,
		PresenceGrace: -1,
		EngineTimeout: 5 * time.Second,

		EventLogMax:       1000,
		EventLogRetention: time.Hour,
	}
}

// fakeNode is a gateway.Node that records the engine's calls.
type fakeNode struct {
	cfg gateway.Config

	mu         sync.Mutex
	users      map[string]int
	since      map[string]time.Time
	topics     map[string]int
	delivered  []delivery
	broadcasts []broadcast
	topicMsgs  []*gateway.Message
	kicks      []kick
	events     []gateway.Event
	watchers   map[*gateway.Watcher]chan gateway.Event
	cuts       int // CutWatchers calls
	forgot     []string
	counts     gateway.InboxCounts
	evictions  int
}

type delivery struct {
	users []string
	msg   *gateway.Message
}

type broadcast struct {
	msg     *gateway.Message
	exclude []string
}

type kick struct{ user, text string }

var _ gateway.Node = (*fakeNode)(nil)

func newFakeNode(cfg gateway.Config) *fakeNode {
	return &fakeNode{
		cfg:      cfg,
		users:    make(map[string]int),
		since:    make(map[string]time.Time),
		topics:   make(map[string]int),
		watchers: make(map[*gateway.Watcher]chan gateway.Event),
	}
}

func (f *fakeNode) Config() gateway.Config { return f.cfg }

func (f *fakeNode) Deliver(userIDs []string, m *gateway.Message) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.delivered = append(f.delivered, delivery{users: slices.Clone(userIDs), msg: m})
	n := 0
	for _, u := range userIDs {
		n += f.users[u]
	}
	return n
}

func (f *fakeNode) DeliverBroadcast(m *gateway.Message, exclude []string) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.broadcasts = append(f.broadcasts, broadcast{msg: m, exclude: slices.Clone(exclude)})
	var n int64
	for u, c := range f.users {
		if !slices.Contains(exclude, u) {
			n += int64(c)
		}
	}
	return n
}

func (f *fakeNode) DeliverTopic(m *gateway.Message) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.topicMsgs = append(f.topicMsgs, m)
	return int64(f.topics[m.Topic])
}

// CloseUser closes the user's connections as the hub does: they are gone
// from the local count at once (the hub then calls the engine's Left).
func (f *fakeNode) CloseUser(userID, text string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.kicks = append(f.kicks, kick{userID, text})
	n := f.users[userID]
	f.users[userID] = 0
	f.since[userID] = time.Time{}
	return n
}

func (f *fakeNode) evicted() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.evictions
}

// Evict counts the node's connections and drops them all, as the hub's
// closes would.
func (f *fakeNode) Evict(time.Duration) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for u, c := range f.users {
		n += c
		f.users[u] = 0
		f.since[u] = time.Time{}
	}
	f.evictions++
	return n
}

func (f *fakeNode) Emit(e gateway.Event) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.events = append(f.events, e)
	for _, c := range f.watchers {
		select {
		case c <- e:
		default:
		}
	}
}

func (f *fakeNode) Watch(kinds []gateway.EventKind, buffer int) *gateway.Watcher {
	c := make(chan gateway.Event, buffer)
	w := &gateway.Watcher{C: c, Lost: make(chan struct{})}
	f.mu.Lock()
	f.watchers[w] = c
	f.mu.Unlock()
	return w
}

func (f *fakeNode) Unwatch(w *gateway.Watcher) {
	f.mu.Lock()
	delete(f.watchers, w)
	f.mu.Unlock()
}

// CutWatchers counts the cuts.
func (f *fakeNode) CutWatchers() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cuts++
}

func (f *fakeNode) cutCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cuts
}

func (f *fakeNode) Watchers() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.watchers)
}

func (f *fakeNode) UserConns(userID string) (int, time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.users[userID], f.since[userID]
}

func (f *fakeNode) TopicConns(topic string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.topics[topic]
}

// TopicUserConns: the fake node's subscriptions carry no users.
func (f *fakeNode) TopicUserConns(string, string) int { return 0 }

// DeliverTopicPresence: the fake node has no envelope subscribers.
func (f *fakeNode) DeliverTopicPresence(string, string, bool) {}

func (f *fakeNode) Connections() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	var n int64
	for _, c := range f.users {
		n += int64(c)
	}
	return n
}

func (f *fakeNode) ForgetSeen(epoch string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.forgot = append(f.forgot, epoch)
}

func (f *fakeNode) CountInbox(c gateway.InboxCounts) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.counts.Acked += c.Acked
	f.counts.Trimmed += c.Trimmed
	f.counts.Expired += c.Expired
	f.counts.Replayed += c.Replayed
	f.counts.ReceiptsEvicted += c.ReceiptsEvicted
}

// setUser sets this node's connections of u (the oldest opened at since).
func (f *fakeNode) setUser(u string, n int, since time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.users[u] = n
	if n == 0 {
		since = time.Time{}
	}
	f.since[u] = since
}

func (f *fakeNode) setTopic(topic string, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.topics[topic] = n
}

// deliveriesOf returns the Deliver calls of message id.
func (f *fakeNode) deliveriesOf(id string) []delivery {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []delivery
	for _, d := range f.delivered {
		if d.msg.ID == id {
			out = append(out, d)
		}
	}
	return out
}

func (f *fakeNode) deliveries() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.delivered)
}

// broadcastsOf returns the DeliverBroadcast calls of message id.
func (f *fakeNode) broadcastsOf(id string) []broadcast {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []broadcast
	for _, b := range f.broadcasts {
		if b.msg.ID == id {
			out = append(out, b)
		}
	}
	return out
}

// broadcastsBut returns the DeliverBroadcast calls other than barriers.
func (f *fakeNode) broadcastsBut(typ string) []broadcast {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []broadcast
	for _, b := range f.broadcasts {
		if b.msg.Type != typ {
			out = append(out, b)
		}
	}
	return out
}

func (f *fakeNode) topicMsgsOf(id string) []*gateway.Message {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*gateway.Message
	for _, m := range f.topicMsgs {
		if m.ID == id {
			out = append(out, m)
		}
	}
	return out
}

func (f *fakeNode) allTopicMsgs() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.topicMsgs)
}

func (f *fakeNode) kicked() []kick {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.kicks)
}

// eventsOf returns the events of kind the node was handed.
func (f *fakeNode) eventsOf(kind gateway.EventKind) []gateway.Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []gateway.Event
	for _, e := range f.events {
		if e.Kind == kind {
			out = append(out, e)
		}
	}
	return out
}

func (f *fakeNode) allEvents() []gateway.Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.events)
}

func (f *fakeNode) forgotten() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.forgot)
}

func (f *fakeNode) inboxCounts() gateway.InboxCounts {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.counts
}

// logBuffer keeps the engines' logs; a failed test prints them.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// cluster is one redis-server and the engines (nodes) of a test.
type cluster struct {
	t    *testing.T
	srv  *redistest.Server
	logs *logBuffer
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	c := &cluster{t: t, logs: &logBuffer{}}
	// Registered first, so it runs last: after the engines are closed.
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("engine logs:\n%s", c.logs.String())
		}
	})
	c.srv = redistest.Start(t)
	return c
}

// start starts an engine named name for the fake node f on the cluster's
// Redis (dial, when set, is the client's dialer) and waits until it has
// settled: its receive loop has written the node's state (the restore after
// it subscribed) and reads its channels. The engine is closed when the test
// ends.
func (c *cluster) start(name string, f *fakeNode, opt redisengine.Options, dial func(context.Context, string, string) (net.Conn, error)) *redisengine.Engine {
	c.t.Helper()
	e := c.startNode(name, f, opt, dial)
	// The receive loop restores before it reads on, so a broadcast it
	// hands the node comes after the restore.
	barrier(c.t, e, f)
	return e
}

// startNode starts an engine named name for node and returns at once (see
// Start).
func (c *cluster) startNode(name string, node gateway.Node, opt redisengine.Options, dial func(context.Context, string, string) (net.Conn, error)) *redisengine.Engine {
	t := c.t
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: c.srv.Addr(), Dialer: dial})
	t.Cleanup(func() { _ = rdb.Close() })
	opt.Node = name
	log := slog.New(slog.NewTextHandler(c.logs, &slog.HandlerOptions{Level: slog.LevelDebug})).With("node", name)
	e, err := redisengine.Start(context.Background(), node, rdb, log, prometheus.NewRegistry(), opt)
	if err != nil {
		t.Fatalf("starting engine %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := e.Close(ctx); err != nil && !t.Failed() {
			t.Errorf("closing engine %s: %v", name, err)
		}
	})
	return e
}

// join joins a connection of user on engine e (the node's count of the
// user must be set first) and returns what it must see first.
func join(t *testing.T, e *redisengine.Engine, j gateway.JoinRequest) gateway.Joined {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := e.Join(ctx, j)
	if err != nil {
		t.Fatalf("join %+v: %v", j, err)
	}
	return out
}

func send(t *testing.T, e *redisengine.Engine, users []string, p gateway.Push) gateway.Sent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := e.SendToUsers(ctx, users, p)
	if err != nil {
		t.Fatalf("send to %v: %v", users, err)
	}
	if !gateway.ValidID(s.ID) {
		t.Fatalf("send to %v: id %q is not a message id", users, s.ID)
	}
	return s
}

func stored(data string) gateway.Push {
	return gateway.Push{Type: "note", Kind: gateway.KindJSON, Data: []byte(data), TTL: time.Hour}
}

func presence(t *testing.T, e *redisengine.Engine, users ...string) []gateway.OnlineUser {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := e.Presence(ctx, users)
	if err != nil {
		t.Fatalf("presence of %v: %v", users, err)
	}
	if len(p) != len(users) {
		t.Fatalf("presence of %v: %d answers", users, len(p))
	}
	for i, u := range users {
		if p[i].UserID != u {
			t.Fatalf("presence of %v: answer %d is for %q", users, i, p[i].UserID)
		}
	}
	return p
}

func conns(t *testing.T, e *redisengine.Engine, user string) int {
	t.Helper()
	return presence(t, e, user)[0].Connections
}

const barrierType = "barrier"

// barrier broadcasts a message from e and waits until every one of nodes
// has it. A node's engine reads everything Redis published to it in order
// (its own channel and the broadcast channel come on one connection), so
// afterwards each node has been handed everything sent before the barrier:
// what it lacks now, it never gets.
func barrier(t *testing.T, e *redisengine.Engine, nodes ...*fakeNode) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := e.Broadcast(ctx, gateway.Push{Type: barrierType, Kind: gateway.KindText, Data: []byte("barrier")}, nil)
	if err != nil {
		t.Fatalf("barrier broadcast: %v", err)
	}
	eventually(t, "every node to get the barrier broadcast", func() bool {
		for _, n := range nodes {
			if len(n.broadcastsOf(s.ID)) == 0 {
				return false
			}
		}
		return true
	})
}

func ids(ms []*gateway.Message) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.ID
	}
	return out
}

// 1. A send from any node reaches the node that holds the user, once, and
// no other; the result counts what Redis knows.
func TestSendToUsersRoutesToTheUsersNode(t *testing.T) {
	c := newCluster(t)
	fa, fb := newFakeNode(testConfig()), newFakeNode(testConfig())
	a := c.start("a", fa, redisengine.Options{}, nil)
	b := c.start("b", fb, redisengine.Options{}, nil)

	fa.setUser("u", 1, time.Now())
	join(t, a, gateway.JoinRequest{UserID: "u", ConnID: "c1"})

	p := gateway.Push{Type: "greeting", Kind: gateway.KindJSON, Data: []byte(`{"hello":1}`), TTL: time.Minute}
	s := send(t, b, []string{"u"}, p)
	if want := []gateway.Delivery{{UserID: "u", Online: true, Delivered: 1, Stored: true}}; !reflect.DeepEqual(s.Users, want) {
		t.Fatalf("send to u on node a: users = %+v, want %+v", s.Users, want)
	}
	barrier(t, b, fa, fb)
	ds := fa.deliveriesOf(s.ID)
	if len(ds) != 1 {
		t.Fatalf("node a was handed the message %d times, want once", len(ds))
	}
	m := ds[0].msg
	if !slices.Equal(ds[0].users, []string{"u"}) || m.Type != "greeting" || m.Kind != gateway.KindJSON ||
		string(m.Data) != `{"hello":1}` || m.TTL != time.Minute || !m.Time.Equal(s.Time) || m.Topic != "" {
		t.Fatalf("node a was handed %v %+v; want the message sent to [u]", ds[0].users, m)
	}
	if n := fb.deliveries(); n != 0 {
		t.Fatalf("node b, which holds no user, was handed %d messages", n)
	}

	// Live only: not stored.
	s = send(t, b, []string{"u"}, gateway.Push{Kind: gateway.KindText, Data: []byte("live")})
	if want := []gateway.Delivery{{UserID: "u", Online: true, Delivered: 1, Stored: false}}; !reflect.DeepEqual(s.Users, want) {
		t.Fatalf("live send: users = %+v, want %+v", s.Users, want)
	}

	// A user on no node: stored for later, delivered nowhere.
	s = send(t, a, []string{"nobody"}, stored(`"for later"`))
	if want := []gateway.Delivery{{UserID: "nobody", Online: false, Delivered: 0, Stored: true}}; !reflect.DeepEqual(s.Users, want) {
		t.Fatalf("send to an offline user: users = %+v, want %+v", s.Users, want)
	}

	// Several users on several nodes: one id, each node handed its users.
	fb.setUser("w", 2, time.Now())
	join(t, b, gateway.JoinRequest{UserID: "w", ConnID: "c2"})
	s = send(t, a, []string{"u", "w", "nobody"}, stored(`"all"`))
	want := []gateway.Delivery{
		{UserID: "u", Online: true, Delivered: 1, Stored: true},
		{UserID: "w", Online: true, Delivered: 2, Stored: true},
		{UserID: "nobody", Online: false, Delivered: 0, Stored: true},
	}
	if !reflect.DeepEqual(s.Users, want) {
		t.Fatalf("send to three users: users = %+v, want %+v", s.Users, want)
	}
	barrier(t, a, fa, fb)
	if ds := fa.deliveriesOf(s.ID); len(ds) != 1 || !slices.Equal(ds[0].users, []string{"u"}) {
		t.Fatalf("node a was handed %+v, want the message once for [u]", ds)
	}
	if ds := fb.deliveriesOf(s.ID); len(ds) != 1 || !slices.Equal(ds[0].users, []string{"w"}) {
		t.Fatalf("node b was handed %+v, want the message once for [w]", ds)
	}
	// Stored: u twice, nobody twice, w once.
	if n := a.Inboxed(); n != 5 {
		t.Fatalf("Inboxed = %d, want 5", n)
	}
}

// 2. A join replays the stored messages in id order, and its Seq splits the
// messages sent before it from those sent after; a resume replays only what
// came after the client's last id, and says when some of it was lost.
func TestJoinReplaysInOrderWithSeq(t *testing.T) {
	c := newCluster(t)
	cfg := testConfig()
	cfg.InboxMessages = 5
	fa, fb := newFakeNode(cfg), newFakeNode(cfg)
	a := c.start("a", fa, redisengine.Options{}, nil)
	b := c.start("b", fb, redisengine.Options{}, nil)

	var sent []gateway.Sent
	for _, d := range []string{`1`, `2`, `3`} {
		sent = append(sent, send(t, b, []string{"u"}, stored(d)))
	}
	other := send(t, b, []string{"other"}, stored(`"x"`))

	fa.setUser("u", 1, time.Now())
	j := join(t, a, gateway.JoinRequest{UserID: "u", ConnID: "c1"})
	if j.Epoch == "" {
		t.Fatal("join: empty epoch")
	}
	if !j.Complete {
		t.Fatal("join: Complete false, nothing was lost")
	}
	if got, want := ids(j.Replay), []string{sent[0].ID, sent[1].ID, sent[2].ID}; !slices.Equal(got, want) {
		t.Fatalf("join replayed %v, want %v", got, want)
	}
	for i, m := range j.Replay {
		if string(m.Data) != []string{`1`, `2`, `3`}[i] || m.Type != "note" || m.TTL != time.Hour {
			t.Fatalf("replayed message %d = %+v", i, m)
		}
	}
	if j.Seq < sent[2].ID || j.Seq < other.ID {
		t.Fatalf("join Seq %s is below an id handed out before it (%s, %s)", j.Seq, sent[2].ID, other.ID)
	}
	if got := fa.inboxCounts().Replayed; got != 3 {
		t.Fatalf("CountInbox Replayed = %d, want 3", got)
	}
	later := send(t, b, []string{"u"}, stored(`4`))
	if later.ID <= j.Seq {
		t.Fatalf("a send after the join got id %s, not above the join's Seq %s", later.ID, j.Seq)
	}
	sent = append(sent, later)

	// Resume after the second: only the later ones; what the client had
	// counts as acknowledged.
	j2 := join(t, a, gateway.JoinRequest{UserID: "u", ConnID: "c2", LastID: sent[1].ID, Epoch: j.Epoch, Resume: true})
	if got, want := ids(j2.Replay), []string{sent[2].ID, sent[3].ID}; !slices.Equal(got, want) {
		t.Fatalf("resume after %s replayed %v, want %v", sent[1].ID, got, want)
	}
	if !j2.Complete || j2.Epoch != j.Epoch {
		t.Fatalf("resume: Complete %v epoch %q, want true and %q", j2.Complete, j2.Epoch, j.Epoch)
	}
	if got := fa.inboxCounts().Acked; got != 2 {
		t.Fatalf("CountInbox Acked after the resume = %d, want 2", got)
	}
	j3 := join(t, a, gateway.JoinRequest{UserID: "u", ConnID: "c3"})
	if got, want := ids(j3.Replay), []string{sent[2].ID, sent[3].ID}; !slices.Equal(got, want) {
		t.Fatalf("a fresh join after the resume replayed %v, want %v", got, want)
	}

	// A client from another epoch: its last id means nothing here.
	j4 := join(t, a, gateway.JoinRequest{UserID: "u", ConnID: "c4", LastID: sent[2].ID, Epoch: "another-epoch", Resume: true})
	if j4.Complete {
		t.Fatal("resume from a foreign epoch: Complete true")
	}
	if j4.Epoch != j.Epoch {
		t.Fatalf("resume from a foreign epoch: epoch %q, want %q", j4.Epoch, j.Epoch)
	}
	if got := fa.inboxCounts().Acked; got != 2 {
		t.Fatalf("a resume from a foreign epoch acknowledged messages: Acked = %d, want 2", got)
	}
	j5 := join(t, a, gateway.JoinRequest{UserID: "u", ConnID: "c5"})
	if got, want := ids(j5.Replay), []string{sent[2].ID, sent[3].ID}; !slices.Equal(got, want) {
		t.Fatalf("after a foreign-epoch resume a join replayed %v, want %v", got, want)
	}

	// An inbox capped at 5 messages: 7 sends trim the first 2.
	var tr []gateway.Sent
	for range 7 {
		tr = append(tr, send(t, b, []string{"t"}, stored(`"t"`)))
	}
	if got := fb.inboxCounts().Trimmed; got != 2 {
		t.Fatalf("CountInbox Trimmed = %d, want 2", got)
	}
	var kept []string
	for _, s := range tr[2:] {
		kept = append(kept, s.ID)
	}
	fa.setUser("t", 1, time.Now())
	jt := join(t, a, gateway.JoinRequest{UserID: "t", ConnID: "t1", LastID: tr[0].ID, Epoch: j.Epoch, Resume: true})
	if jt.Complete {
		t.Fatalf("resume after %s, which was followed by a trimmed entry: Complete true", tr[0].ID)
	}
	if got := ids(jt.Replay); !slices.Equal(got, kept) {
		t.Fatalf("resume after a trimmed entry replayed %v, want %v", got, kept)
	}
	jt = join(t, a, gateway.JoinRequest{UserID: "t", ConnID: "t2", LastID: tr[1].ID, Epoch: j.Epoch, Resume: true})
	if !jt.Complete {
		t.Fatalf("resume after %s, the last trimmed entry: Complete false", tr[1].ID)
	}
	if got := ids(jt.Replay); !slices.Equal(got, kept) {
		t.Fatalf("resume after the last trimmed entry replayed %v, want %v", got, kept)
	}
}

// 3. A repeated send with the same idempotency key returns the first result
// and sends nothing, on any node; the key reused for another request is a
// conflict.
func TestIdempotencyKeyAcrossNodes(t *testing.T) {
	c := newCluster(t)
	fa, fb := newFakeNode(testConfig()), newFakeNode(testConfig())
	a := c.start("a", fa, redisengine.Options{}, nil)
	b := c.start("b", fb, redisengine.Options{}, nil)
	ctx := context.Background()

	fa.setUser("u", 1, time.Now())
	join(t, a, gateway.JoinRequest{UserID: "u", ConnID: "c1"})

	key := gateway.Idempotency{Key: "caller:k1", Hash: sha256.Sum256([]byte("send u 1")), Window: time.Minute}
	p := stored(`"once"`)
	p.Idempotency = key
	first := send(t, a, []string{"u"}, p)
	again := send(t, a, []string{"u"}, p)
	other := send(t, b, []string{"u"}, p)
	for _, s := range []gateway.Sent{again, other} {
		if s.ID != first.ID || !reflect.DeepEqual(s.Users, first.Users) || !s.Replayed || first.Replayed {
			t.Fatalf("repeat with the same key = %s %+v, want the first result %s %+v", s.ID, s.Users, first.ID, first.Users)
		}
	}
	barrier(t, b, fa, fb)
	if n := len(fa.deliveriesOf(first.ID)); n != 1 {
		t.Fatalf("node a was handed the message %d times, want once", n)
	}
	if n := a.Inboxed(); n != 1 {
		t.Fatalf("Inboxed = %d, want 1 (stored once)", n)
	}
	if got := ids(join(t, a, gateway.JoinRequest{UserID: "u", ConnID: "c2"}).Replay); !slices.Equal(got, []string{first.ID}) {
		t.Fatalf("inbox after three sends with one key = %v, want [%s]", got, first.ID)
	}

	// The same key for another request.
	conflict := p
	conflict.Idempotency.Hash = sha256.Sum256([]byte("send u 2"))
	for name, e := range map[string]*redisengine.Engine{"a": a, "b": b} {
		if _, err := e.SendToUsers(ctx, []string{"u"}, conflict); !errors.Is(err, gateway.ErrIdempotencyConflict) {
			t.Fatalf("key reused for another request on node %s: err = %v, want ErrIdempotencyConflict", name, err)
		}
		if _, err := e.Publish(ctx, "topic", conflict); !errors.Is(err, gateway.ErrIdempotencyConflict) {
			t.Fatalf("key reused for a publish on node %s: err = %v, want ErrIdempotencyConflict", name, err)
		}
	}

	// Another key: another message.
	p.Idempotency.Key = "caller:k2"
	if s := send(t, b, []string{"u"}, p); s.ID == first.ID {
		t.Fatal("another key got the first key's id")
	}

	// Broadcasts too.
	bp := gateway.Push{Kind: gateway.KindText, Data: []byte("all"),
		Idempotency: gateway.Idempotency{Key: "caller:k3", Hash: sha256.Sum256([]byte("broadcast")), Window: time.Minute}}
	b1, err := a.Broadcast(ctx, bp, nil)
	if err != nil {
		t.Fatal(err)
	}
	b2, err := b.Broadcast(ctx, bp, nil)
	if err != nil {
		t.Fatal(err)
	}
	if b1.ID != b2.ID || b1.Connections != b2.Connections {
		t.Fatalf("repeated broadcast = %s/%d, want the first %s/%d", b2.ID, b2.Connections, b1.ID, b1.Connections)
	}
	barrier(t, a, fa, fb)
	if na, nb := len(fa.broadcastsOf(b1.ID)), len(fb.broadcastsOf(b1.ID)); na != 1 || nb != 1 {
		t.Fatalf("a broadcast sent twice with one key reached the nodes %d and %d times, want once each", na, nb)
	}
}

// 4. Ack removes stored messages, reports each one to the nodes that watch
// events (and only them), and counts them on the node that acked.
func TestAckRemovesAndReports(t *testing.T) {
	c := newCluster(t)
	fa, fb := newFakeNode(testConfig()), newFakeNode(testConfig())
	a := c.start("a", fa, redisengine.Options{}, nil)
	b := c.start("b", fb, redisengine.Options{}, nil)
	ctx := context.Background()

	w := a.Watch([]gateway.EventKind{gateway.EventMessageAcked}, 64)
	if fa.Watchers() != 1 {
		t.Fatalf("Watch did not register a watcher on the node")
	}
	m1 := send(t, b, []string{"u"}, stored(`1`))
	m2 := send(t, b, []string{"u"}, stored(`2`))
	unknown := gateway.NewID()

	if err := b.Ack(ctx, "u", "c1", []string{m1.ID, unknown}, false); err != nil {
		t.Fatal(err)
	}
	if got := fb.inboxCounts().Acked; got != 1 {
		t.Fatalf("CountInbox Acked = %d after acking one stored message and one unknown, want 1", got)
	}
	eventually(t, "the acked event on the watching node", func() bool { return len(fa.eventsOf(gateway.EventMessageAcked)) >= 1 })
	select {
	case e := <-w.C:
		if e.Kind != gateway.EventMessageAcked || e.UserID != "u" || e.ConnID != "c1" || e.MessageID != m1.ID || e.Implicit {
			t.Fatalf("acked event = %+v, want u/c1/%s explicit", e, m1.ID)
		}
	case <-time.After(waitFor):
		t.Fatal("the watcher got no event")
	}

	// Again: nothing there any more.
	if err := b.Ack(ctx, "u", "c1", []string{m1.ID}, false); err != nil {
		t.Fatal(err)
	}
	if got := fb.inboxCounts().Acked; got != 1 {
		t.Fatalf("acking an acked message counted it again: Acked = %d", got)
	}

	// Implicit: returns at once, done in the background.
	if err := b.Ack(ctx, "u", "c2", []string{m2.ID}, true); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the implicit ack to be counted", func() bool { return fb.inboxCounts().Acked == 2 })
	eventually(t, "the implicit acked event", func() bool { return len(fa.eventsOf(gateway.EventMessageAcked)) == 2 })
	if e := fa.eventsOf(gateway.EventMessageAcked)[1]; e.UserID != "u" || e.ConnID != "c2" || e.MessageID != m2.ID || !e.Implicit {
		t.Fatalf("implicit acked event = %+v, want u/c2/%s implicit", e, m2.ID)
	}

	fa.setUser("u", 1, time.Now())
	if j := join(t, a, gateway.JoinRequest{UserID: "u", ConnID: "c3"}); len(j.Replay) != 0 {
		t.Fatalf("join after every message was acked replayed %v", ids(j.Replay))
	}
	if n := a.Inboxed(); n != 0 {
		t.Fatalf("Inboxed = %d after every message was acked", n)
	}
	barrier(t, a, fa, fb)
	if evs := fb.allEvents(); len(evs) != 0 {
		t.Fatalf("node b, with no watcher, was handed events %+v", evs)
	}
	if n := len(fa.eventsOf(gateway.EventMessageAcked)); n != 2 {
		t.Fatalf("node a was handed %d acked events, want 2", n)
	}

	// Unwatched: the node is no longer sent events.
	a.Unwatch(w)
	before := len(fa.allEvents())
	m3 := send(t, b, []string{"u"}, stored(`3`))
	if err := b.Ack(ctx, "u", "c3", []string{m3.ID}, false); err != nil {
		t.Fatal(err)
	}
	barrier(t, b, fa, fb)
	if n := len(fa.allEvents()); n != before {
		t.Fatalf("node a was handed %d events after its last watcher left", n-before)
	}
}

// Events (client messages, online, offline) reach every node that watches,
// from whichever node they happen on.
func TestEventsReachWatchingNodes(t *testing.T) {
	c := newCluster(t)
	fa, fb := newFakeNode(testConfig()), newFakeNode(testConfig())
	a := c.start("a", fa, redisengine.Options{}, nil)
	b := c.start("b", fb, redisengine.Options{}, nil)
	ctx := context.Background()

	a.Watch(nil, 64)
	ev := gateway.Event{Kind: gateway.EventClientMessage, UserID: "u", ConnID: "c1", Topic: "chat",
		Type: "say", DataKind: gateway.KindBinary, Data: []byte{0, 1, 2}}
	if err := b.Upstream(ctx, ev); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the client message on the watching node", func() bool { return len(fa.eventsOf(gateway.EventClientMessage)) == 1 })
	got := fa.eventsOf(gateway.EventClientMessage)[0]
	if got.UserID != "u" || got.ConnID != "c1" || got.Topic != "chat" || got.Type != "say" ||
		got.DataKind != gateway.KindBinary || !bytes.Equal(got.Data, []byte{0, 1, 2}) || got.Time.IsZero() {
		t.Fatalf("client message event = %+v, want %+v", got, ev)
	}

	fb.setUser("v", 1, time.Now())
	join(t, b, gateway.JoinRequest{UserID: "v", ConnID: "c2"})
	eventually(t, "v's online event", func() bool { return len(fa.eventsOf(gateway.EventUserOnline)) == 1 })
	if e := fa.eventsOf(gateway.EventUserOnline)[0]; e.UserID != "v" {
		t.Fatalf("online event = %+v, want v", e)
	}
	fb.setUser("v", 0, time.Time{})
	b.Left("v")
	eventually(t, "v's offline event (no grace)", func() bool { return len(fa.eventsOf(gateway.EventUserOffline)) == 1 })
	if e := fa.eventsOf(gateway.EventUserOffline)[0]; e.UserID != "v" {
		t.Fatalf("offline event = %+v, want v", e)
	}
	if n := conns(t, a, "v"); n != 0 {
		t.Fatalf("v has %d connections after leaving", n)
	}
	barrier(t, a, fa, fb)
	if evs := fb.allEvents(); len(evs) != 0 {
		t.Fatalf("node b, with no watcher, was handed events %+v", evs)
	}
	if n := len(fa.eventsOf(gateway.EventUserOnline)) + len(fa.eventsOf(gateway.EventUserOffline)); n != 2 {
		t.Fatalf("node a was handed %d presence events, want 2", n)
	}
	// Each event came with its cursor, and the log (read from any node)
	// holds the same events in the same order.
	handed := fa.allEvents()
	logged, err := b.EventsAfter(ctx, gateway.CursorZero, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(logged) != len(handed) {
		t.Fatalf("log holds %d events, node a was handed %d", len(logged), len(handed))
	}
	for i := range handed {
		if handed[i].Cursor == "" || handed[i].Cursor != logged[i].Cursor || handed[i].Kind != logged[i].Kind || handed[i].UserID != logged[i].UserID {
			t.Fatalf("event %d: handed %+v, logged %+v", i, handed[i], logged[i])
		}
		if i > 0 && !logged[i-1].Pos.Less(logged[i].Pos) {
			t.Fatalf("event %d at %v, after %v", i, logged[i].Pos, logged[i-1].Pos)
		}
	}
	after, err := a.EventsAfter(ctx, logged[0].Cursor, 100)
	if err != nil || len(after) != len(logged)-1 || after[0].Cursor != logged[1].Cursor {
		t.Fatalf("EventsAfter the first: %d events, %v", len(after), err)
	}
	if n := a.EventLogLen(); n != int64(len(logged)) {
		t.Fatalf("EventLogLen = %d, want %d", n, len(logged))
	}
}

// 5. Disconnect closes the user's connections on every node that holds
// them, returns how many, and the user is offline as soon as it returns.
func TestDisconnectClosesOnEveryNode(t *testing.T) {
	c := newCluster(t)
	fa, fb, fc := newFakeNode(testConfig()), newFakeNode(testConfig()), newFakeNode(testConfig())
	a := c.start("a", fa, redisengine.Options{}, nil)
	b := c.start("b", fb, redisengine.Options{}, nil)
	cc := c.start("c", fc, redisengine.Options{}, nil)
	ctx := context.Background()

	fa.setUser("u", 2, time.Now())
	join(t, a, gateway.JoinRequest{UserID: "u", ConnID: "a1"})
	fb.setUser("u", 1, time.Now())
	join(t, b, gateway.JoinRequest{UserID: "u", ConnID: "b1"})
	fa.setUser("v", 1, time.Now())
	join(t, a, gateway.JoinRequest{UserID: "v", ConnID: "a2"})
	if n := conns(t, cc, "u"); n != 3 {
		t.Fatalf("u has %d connections, want 3", n)
	}

	n, err := cc.Disconnect(ctx, "u", "bye")
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Fatalf("Disconnect = %d, want 3", n)
	}
	p := presence(t, cc, "u", "v")
	if p[0].Connections != 0 || !p[0].Since.IsZero() {
		t.Fatalf("presence of u right after Disconnect = %+v, want offline", p[0])
	}
	if p[1].Connections != 1 {
		t.Fatalf("presence of v (not disconnected) = %+v, want 1 connection", p[1])
	}
	page, err := cc.ListOnline(ctx, "", 10, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Users) != 1 || page.Users[0].UserID != "v" {
		t.Fatalf("online right after Disconnect = %+v, want only v", page.Users)
	}

	barrier(t, cc, fa, fb, fc)
	for name, f := range map[string]*fakeNode{"a": fa, "b": fb} {
		if k := f.kicked(); !slices.Equal(k, []kick{{"u", "bye"}}) {
			t.Fatalf("node %s CloseUser calls = %+v, want one for u with the text", name, k)
		}
	}
	if k := fc.kicked(); len(k) != 0 {
		t.Fatalf("node c, which holds nothing, was asked to close %+v", k)
	}
	// The hub says the connections left; u stays offline.
	a.Left("u")
	b.Left("u")
	if n := conns(t, cc, "u"); n != 0 {
		t.Fatalf("u has %d connections after the nodes said they left", n)
	}

	// A user on no node.
	if n, err := cc.Disconnect(ctx, "nobody", ""); err != nil || n != 0 {
		t.Fatalf("Disconnect of a user on no node = %d, %v; want 0", n, err)
	}

	// u can come back.
	fb.setUser("u", 1, time.Now())
	join(t, b, gateway.JoinRequest{UserID: "u", ConnID: "b2"})
	if n := conns(t, cc, "u"); n != 1 {
		t.Fatalf("u has %d connections after joining again, want 1", n)
	}
	barrier(t, cc, fa, fb, fc)
	if k := fa.kicked(); len(k) != 1 {
		t.Fatalf("node a CloseUser calls = %+v, want the one", k)
	}
}

// 6. Presence and ListOnline sum each user's connections over the nodes,
// and the online list pages in id order with nothing missed or repeated.
func TestPresenceAndListOnlineAcrossNodes(t *testing.T) {
	c := newCluster(t)
	fa, fb := newFakeNode(testConfig()), newFakeNode(testConfig())
	a := c.start("a", fa, redisengine.Options{}, nil)
	b := c.start("b", fb, redisengine.Options{}, nil)
	ctx := context.Background()

	t0 := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	t1 := t0.Add(time.Minute)
	// Byte order: "B" < "Z9" < "a" < "a0" < "b".
	onA := map[string]int{"a": 1, "Z9": 2, "b": 1}
	onB := map[string]int{"Z9": 1, "B": 3, "a0": 1}
	for u, n := range onA {
		fa.setUser(u, n, t1)
	}
	for u, n := range onB {
		fb.setUser(u, n, t0)
	}
	for u := range onA {
		join(t, a, gateway.JoinRequest{UserID: u, ConnID: "a-" + u})
	}
	for u := range onB {
		join(t, b, gateway.JoinRequest{UserID: u, ConnID: "b-" + u})
	}

	want := []gateway.OnlineUser{
		{UserID: "B", Connections: 3, Since: t0},
		{UserID: "Z9", Connections: 3, Since: t0}, // the oldest of its nodes'
		{UserID: "a", Connections: 1, Since: t1},
		{UserID: "a0", Connections: 1, Since: t0},
		{UserID: "b", Connections: 1, Since: t1},
	}
	sameUsers := func(what string, got, want []gateway.OnlineUser) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%s = %+v, want %+v", what, got, want)
		}
		for i := range got {
			if got[i].UserID != want[i].UserID || got[i].Connections != want[i].Connections || !got[i].Since.Equal(want[i].Since) {
				t.Fatalf("%s = %+v, want %+v", what, got, want)
			}
		}
	}

	for _, e := range []*redisengine.Engine{a, b} {
		p := presence(t, e, "Z9", "nobody", "a0")
		sameUsers("presence", p, []gateway.OnlineUser{want[1], {UserID: "nobody"}, want[3]})
	}

	for _, size := range []int{1, 2, 10} {
		var all []gateway.OnlineUser
		after := ""
		for pages := 0; ; pages++ {
			if pages > len(want) {
				t.Fatalf("page size %d: more pages than users", size)
			}
			page, err := b.ListOnline(ctx, after, size, nil)
			if err != nil {
				t.Fatal(err)
			}
			if page.TotalUsers != 5 || page.TotalConnections != 9 {
				t.Fatalf("page size %d: totals %d users %d connections, want 5 and 9", size, page.TotalUsers, page.TotalConnections)
			}
			if len(page.Users) > size || len(page.Users) == 0 && page.More {
				t.Fatalf("page size %d after %q: %d users, More %v", size, after, len(page.Users), page.More)
			}
			all = append(all, page.Users...)
			if !page.More {
				break
			}
			after = page.Users[len(page.Users)-1].UserID
		}
		sameUsers(fmt.Sprintf("online list in pages of %d", size), all, want)
	}

	// Filtered: only users whose id starts with "a" or is "b".
	match := func(u string) bool { return u == "b" || u[0] == 'a' }
	p1, err := a.ListOnline(ctx, "", 2, match)
	if err != nil {
		t.Fatal(err)
	}
	sameUsers("first filtered page", p1.Users, want[2:4])
	if !p1.More {
		t.Fatal("first filtered page: More false, b is left")
	}
	p2, err := a.ListOnline(ctx, p1.Users[1].UserID, 2, match)
	if err != nil {
		t.Fatal(err)
	}
	sameUsers("second filtered page", p2.Users, want[4:])
	if p2.More {
		t.Fatal("second filtered page: More true, nothing is left")
	}
	p3, err := a.ListOnline(ctx, "", 10, func(string) bool { return false })
	if err != nil {
		t.Fatal(err)
	}
	if len(p3.Users) != 0 || p3.More {
		t.Fatalf("a filter that matches nothing: %+v", p3)
	}

	if n := a.Users(); n != 5 {
		t.Fatalf("Users = %d, want 5", n)
	}
	if n := b.Connections(); n != 9 {
		t.Fatalf("Connections = %d, want 9", n)
	}

	// One node's connections of Z9 leave: the other's remain.
	fa.setUser("Z9", 0, time.Time{})
	a.Left("Z9")
	eventually(t, "Z9's connections on a to be gone", func() bool { return conns(t, b, "Z9") == 1 })
	if p := presence(t, b, "Z9")[0]; !p.Since.Equal(t0) {
		t.Fatalf("Z9 since = %v, want %v", p.Since, t0)
	}
}

// 7. A broadcast reaches every node, with the excluded users; a topic
// message reaches only the nodes with subscribers.
func TestBroadcastAndPublishReachTheRightNodes(t *testing.T) {
	c := newCluster(t)
	fa, fb := newFakeNode(testConfig()), newFakeNode(testConfig())
	a := c.start("a", fa, redisengine.Options{}, nil)
	b := c.start("b", fb, redisengine.Options{}, nil)
	ctx := context.Background()

	fa.setUser("u1", 1, time.Now())
	join(t, a, gateway.JoinRequest{UserID: "u1", ConnID: "a1"})
	fb.setUser("u2", 2, time.Now())
	join(t, b, gateway.JoinRequest{UserID: "u2", ConnID: "b1"})

	p := gateway.Push{Type: "news", Kind: gateway.KindText, Data: []byte("to all"), TTL: time.Hour}
	s, err := b.Broadcast(ctx, p, []string{"u1"})
	if err != nil {
		t.Fatal(err)
	}
	if s.Connections != 2 {
		t.Fatalf("broadcast excluding u1: %d connections, want 2 (u2's)", s.Connections)
	}
	s2, err := a.Broadcast(ctx, p, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s2.Connections != 3 {
		t.Fatalf("broadcast: %d connections, want 3", s2.Connections)
	}
	s3, err := a.Broadcast(ctx, p, []string{"u1", "u2"})
	if err != nil {
		t.Fatal(err)
	}
	if s3.Connections != 0 {
		t.Fatalf("broadcast excluding everyone: %d connections, want 0", s3.Connections)
	}
	barrier(t, a, fa, fb)
	for name, f := range map[string]*fakeNode{"a": fa, "b": fb} {
		got := f.broadcastsBut(barrierType)
		if len(got) != 3 || got[0].msg.ID != s.ID || got[1].msg.ID != s2.ID || got[2].msg.ID != s3.ID {
			t.Fatalf("node %s was handed broadcasts %+v, want %s, %s, %s once each", name, got, s.ID, s2.ID, s3.ID)
		}
		if !slices.Equal(got[0].exclude, []string{"u1"}) || len(got[1].exclude) != 0 || !slices.Equal(got[2].exclude, []string{"u1", "u2"}) {
			t.Fatalf("node %s was handed excludes %q, %q, %q", name, got[0].exclude, got[1].exclude, got[2].exclude)
		}
		m := got[0].msg
		if m.Type != "news" || m.Kind != gateway.KindText || string(m.Data) != "to all" || m.TTL != 0 {
			t.Fatalf("node %s was handed broadcast %+v (a broadcast is live only)", name, m)
		}
	}
	if n := a.Inboxed(); n != 0 {
		t.Fatalf("broadcasts were stored: Inboxed = %d", n)
	}

	// Topics.
	fa.setTopic("news", 1)
	if err := a.Subscribe(ctx, "news"); err != nil {
		t.Fatal(err)
	}
	fa.setTopic("sports", 2)
	if err := a.Subscribe(ctx, "sports"); err != nil {
		t.Fatal(err)
	}
	fb.setTopic("sports", 1)
	if err := b.Subscribe(ctx, "sports"); err != nil {
		t.Fatal(err)
	}
	tp := gateway.Push{Type: "t", Kind: gateway.KindJSON, Data: []byte(`{"t":1}`), TTL: time.Hour}
	news, err := b.Publish(ctx, "news", tp)
	if err != nil {
		t.Fatal(err)
	}
	if news.Connections != 1 {
		t.Fatalf("publish to news: %d connections, want 1", news.Connections)
	}
	sports, err := b.Publish(ctx, "sports", tp)
	if err != nil {
		t.Fatal(err)
	}
	if sports.Connections != 3 {
		t.Fatalf("publish to sports: %d connections, want 3", sports.Connections)
	}
	none, err := b.Publish(ctx, "nobody-listens", tp)
	if err != nil {
		t.Fatal(err)
	}
	if none.Connections != 0 {
		t.Fatalf("publish to a topic with no subscribers: %d connections", none.Connections)
	}
	barrier(t, b, fa, fb)
	if ms := fa.topicMsgsOf(news.ID); len(ms) != 1 || ms[0].Topic != "news" || string(ms[0].Data) != `{"t":1}` || ms[0].TTL != 0 {
		t.Fatalf("node a was handed news %+v, want it once", ms)
	}
	if n := len(fb.topicMsgsOf(news.ID)); n != 0 {
		t.Fatalf("node b, with no news subscriber, was handed it %d times", n)
	}
	for name, f := range map[string]*fakeNode{"a": fa, "b": fb} {
		if ms := f.topicMsgsOf(sports.ID); len(ms) != 1 || ms[0].Topic != "sports" {
			t.Fatalf("node %s was handed sports %+v, want it once", name, ms)
		}
	}
	if n := fa.allTopicMsgs() + fb.allTopicMsgs(); n != 3 {
		t.Fatalf("the nodes were handed %d topic messages, want 3", n)
	}

	// News' subscriber leaves: news is no longer routed to a.
	fa.setTopic("news", 0)
	a.Unsubscribed("news")
	var last gateway.Sent
	eventually(t, "news to have no subscribers", func() bool {
		last, err = b.Publish(ctx, "news", tp)
		if err != nil {
			t.Fatal(err)
		}
		return last.Connections == 0
	})
	barrier(t, b, fa, fb)
	if n := len(fa.topicMsgsOf(last.ID)); n != 0 {
		t.Fatal("a publish that counted no subscribers reached node a")
	}
	if n := conns(t, a, "u1"); n != 1 {
		t.Fatalf("u1 has %d connections", n)
	}
}

// 8. With Redis down, calls fail as unavailable; when it comes back empty,
// the engine is up again, writes its state again (its users are online and
// reachable), and tells the node the epoch changed.
func TestRedisDownAndBackEmpty(t *testing.T) {
	c := newCluster(t)
	fa, fb := newFakeNode(testConfig()), newFakeNode(testConfig())
	opt := redisengine.Options{NodeTTL: 1500 * time.Millisecond, Timeout: time.Second}
	a := c.start("a", fa, opt, nil)
	b := c.start("b", fb, opt, nil)
	ctx := context.Background()

	fa.setUser("u", 1, time.Now())
	j := join(t, a, gateway.JoinRequest{UserID: "u", ConnID: "c1"})
	before := send(t, b, []string{"u"}, stored(`"before"`))

	c.srv.Kill()
	_, err := b.SendToUsers(ctx, []string{"u"}, stored(`"down"`))
	if !errors.Is(err, gateway.ErrUnavailable) {
		t.Fatalf("send with redis down: err = %v, want ErrUnavailable", err)
	}
	if _, err := a.Join(ctx, gateway.JoinRequest{UserID: "u", ConnID: "c2"}); !errors.Is(err, gateway.ErrUnavailable) {
		t.Fatalf("join with redis down: err = %v, want ErrUnavailable", err)
	}
	if _, err := a.Presence(ctx, []string{"u"}); !errors.Is(err, gateway.ErrUnavailable) {
		t.Fatalf("presence with redis down: err = %v, want ErrUnavailable", err)
	}
	if n := a.Users(); n != -1 {
		t.Fatalf("Users with redis down = %d, want -1", n)
	}
	eventually(t, "the engines to report down", func() bool { return !a.Up() && !b.Up() })
	if f := fa.forgotten(); len(f) != 0 {
		t.Fatalf("ForgetSeen called while redis was down: %v", f)
	}
	if n := fa.cutCount(); n != 0 {
		t.Fatalf("watchers cut %d times before redis came back", n)
	}

	c.srv.Restart() // empty
	eventually(t, "the engines to be up again", func() bool { return a.Up() && b.Up() })
	if fa.evicted() > 0 {
		// Down for longer than the node ttl: node a closed its clients;
		// this one comes back to it.
		fa.setUser("u", 1, time.Now())
		join(t, a, gateway.JoinRequest{UserID: "u", ConnID: "c1b"})
	}
	eventually(t, "node a to be told the epoch changed", func() bool { return len(fa.forgotten()) > 0 })
	// Its WatchEvents streams missed what was published meanwhile: they
	// are cut, to resume from their cursors.
	if fa.cutCount() == 0 {
		t.Fatal("watchers not cut after the subscription was lost")
	}
	eventually(t, "u to be online again (node a wrote its state again)", func() bool {
		p, err := b.Presence(ctx, []string{"u"})
		return err == nil && p[0].Connections == 1
	})
	s := send(t, b, []string{"u"}, stored(`"after"`))
	if want := []gateway.Delivery{{UserID: "u", Online: true, Delivered: 1, Stored: true}}; !reflect.DeepEqual(s.Users, want) {
		t.Fatalf("send after redis came back: users = %+v, want %+v", s.Users, want)
	}
	// At least once: a stored message may also come in the node's catch-up
	// (the hub skips what a connection already has).
	eventually(t, "node a to be handed the send", func() bool { return len(fa.deliveriesOf(s.ID)) >= 1 })

	fa.setUser("u", 2, time.Now())
	j2 := join(t, a, gateway.JoinRequest{UserID: "u", ConnID: "c3"})
	if j2.Epoch == j.Epoch {
		t.Fatalf("epoch %q unchanged after redis lost its data", j2.Epoch)
	}
	if f := fa.forgotten(); f[len(f)-1] != j2.Epoch {
		t.Fatalf("ForgetSeen calls %v; want the last with the new epoch %q", f, j2.Epoch)
	}
	if got := ids(j2.Replay); !slices.Equal(got, []string{s.ID}) {
		t.Fatalf("inbox after redis lost its data = %v, want only [%s]", got, s.ID)
	}
	// A client resuming from before the loss is told it lost messages.
	if j := join(t, a, gateway.JoinRequest{UserID: "u", ConnID: "c4", LastID: before.ID, Epoch: j.Epoch, Resume: true}); j.Complete {
		t.Fatal("resume with the old epoch after redis lost its data: Complete true")
	}
}

// cutDialer dials Redis until cut: then it closes every connection it made
// and refuses to dial, as if the node were cut off from the network.
type cutDialer struct {
	mu    sync.Mutex
	cut   bool
	conns []net.Conn
}

func (d *cutDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cut {
		return nil, errors.New("cut off (test)")
	}
	var nd net.Dialer
	c, err := nd.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	d.conns = append(d.conns, c)
	return c, nil
}

func (d *cutDialer) setCut(cut bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.cut = cut
	if cut {
		for _, c := range d.conns {
			_ = c.Close()
		}
		d.conns = nil
	}
}

// 9. A node that stops beating (cut off from Redis, without Close) is
// reaped: its users go offline within NodeTTL and a bit; sends to them are
// stored, not delivered. When it comes back it writes its state again and
// is handed the stored messages it missed.
func TestDeadNodeIsReapedAndComesBack(t *testing.T) {
	c := newCluster(t)
	nodeTTL := 1500 * time.Millisecond
	opt := redisengine.Options{NodeTTL: nodeTTL, Timeout: time.Second}
	fa, fd := newFakeNode(testConfig()), newFakeNode(testConfig())
	a := c.start("a", fa, opt, nil)
	var dialer cutDialer
	d := c.start("d", fd, opt, dialer.dial)
	ctx := context.Background()

	fd.setUser("u", 1, time.Now())
	join(t, d, gateway.JoinRequest{UserID: "u", ConnID: "d1"})
	fa.setUser("v", 1, time.Now())
	join(t, a, gateway.JoinRequest{UserID: "v", ConnID: "a1"})
	if n := conns(t, a, "u"); n != 1 {
		t.Fatalf("u has %d connections, want 1", n)
	}

	dialer.setCut(true)
	cutAt := time.Now()
	eventually(t, "the cut-off node to report down", func() bool { return !d.Up() })
	eventually(t, "the dead node's user to leave the online list", func() bool {
		page, err := a.ListOnline(ctx, "", 10, nil)
		if err != nil {
			t.Fatal(err)
		}
		// TotalUsers counts the online set: 1 once the node was reaped.
		return len(page.Users) == 1 && page.Users[0].UserID == "v" && page.TotalConnections == 1 && page.TotalUsers == 1
	})
	if took := time.Since(cutAt); took > nodeTTL+nodeTTL/3+5*time.Second {
		t.Fatalf("the dead node's users left after %v (node ttl %v)", took, nodeTTL)
	}
	if n := conns(t, a, "u"); n != 0 {
		t.Fatalf("the dead node's user has %d connections", n)
	}
	missed := send(t, a, []string{"u"}, stored(`"missed"`))
	if want := []gateway.Delivery{{UserID: "u", Online: false, Delivered: 0, Stored: true}}; !reflect.DeepEqual(missed.Users, want) {
		t.Fatalf("send to the dead node's user: users = %+v, want %+v", missed.Users, want)
	}
	if n := len(fd.deliveriesOf(missed.ID)); n != 0 {
		t.Fatal("the cut-off node was handed a message")
	}

	// Cut off for longer than the node ttl: the node closed its clients,
	// so that they resume on a node that can serve them.
	eventually(t, "the cut-off node to close its clients", func() bool { return fd.evicted() == 1 })

	// Back: the node is up again, and the client that comes back to it
	// resumes with the message it missed.
	dialer.setCut(false)
	eventually(t, "the node to be up again", func() bool { return d.Up() })
	fd.setUser("u", 1, time.Now())
	j := join(t, d, gateway.JoinRequest{UserID: "u", ConnID: "d2", LastID: "", Resume: false})
	if len(j.Replay) != 1 || j.Replay[0].ID != missed.ID || string(j.Replay[0].Data) != `"missed"` {
		t.Fatalf("replay after the node came back: %+v, want the missed message", j.Replay)
	}
	eventually(t, "u to be online again", func() bool { return conns(t, a, "u") == 1 })
	s := send(t, a, []string{"u"}, gateway.Push{Kind: gateway.KindText, Data: []byte("live again")})
	if want := []gateway.Delivery{{UserID: "u", Online: true, Delivered: 1}}; !reflect.DeepEqual(s.Users, want) {
		t.Fatalf("send after the node came back: users = %+v, want %+v", s.Users, want)
	}
	eventually(t, "the node to be handed the live send", func() bool { return len(fd.deliveriesOf(s.ID)) == 1 })
	if f := fd.forgotten(); len(f) != 0 {
		t.Fatalf("ForgetSeen %v, but redis kept its data", f)
	}
}

// gatedNode is a fakeNode whose second Connections call (the first is
// Start's beat, the second the beat that begins the receive loop's first
// restore) waits until release is closed.
type gatedNode struct {
	*fakeNode
	calls   atomic.Int32
	entered chan struct{}
	release chan struct{}
}

func (g *gatedNode) Connections() int64 {
	if g.calls.Add(1) == 2 {
		close(g.entered)
		<-g.release
	}
	return g.fakeNode.Connections()
}

// When Redis becomes unreachable while the node is busy writing to it
// (here: a beat held up by the node), Up goes false: the receive loop alone
// watches the subscription and is never held up by the writes.
func TestUpFalseWhenRedisLostDuringRestore(t *testing.T) {
	c := newCluster(t)
	g := &gatedNode{fakeNode: newFakeNode(testConfig()), entered: make(chan struct{}), release: make(chan struct{})}
	var dialer cutDialer
	e := c.startNode("g", g, redisengine.Options{Timeout: time.Second}, dialer.dial)
	t.Cleanup(func() { dialer.setCut(false) }) // runs before the engine's Close
	select {
	case <-g.entered:
	case <-time.After(waitFor):
		t.Fatal("the receive loop did not start its restore")
	}
	dialer.setCut(true)
	close(g.release)
	if _, err := e.Presence(context.Background(), []string{"u"}); !errors.Is(err, gateway.ErrUnavailable) {
		t.Fatalf("presence with redis cut off: err = %v, want ErrUnavailable", err)
	}
	eventually(t, "the engine to report down while redis is cut off", func() bool { return !e.Up() })
}
