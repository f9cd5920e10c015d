package gateway

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeNode is the Node a memory engine delivers through in these tests: it
// records every call, and a test sets what UserConns reports per user.
type fakeNode struct {
	// Node is nil: a Node method added later that the memory engine does
	// not call keeps this file compiling; one it calls panics until it is
	// written below.
	Node
	cfg Config

	mu          sync.Mutex
	conns       map[string]int       // what UserConns reports
	since       map[string]time.Time // what UserConns reports
	deliverN    map[string]int       // when set for a user, what Deliver counts for them instead of conns
	deliverHook func(userIDs []string)
	delivered   []fakeDelivery
	broadcasts  []fakeBroadcast
	topics      []*Message
	closed      []fakeClose
	evicted     []time.Duration
	events      []fakeEvent
	counts      InboxCounts
	countCalls  int
	watchers    []*Watcher
	changed     chan struct{} // closed (and replaced) whenever a call is recorded
}

type fakeDelivery struct {
	users []string
	msg   *Message
}

type fakeBroadcast struct {
	msg     *Message
	exclude []string
}

type fakeClose struct{ userID, text string }

type fakeEvent struct {
	Event
	at time.Time // when Emit was called
}

func newFakeNode(cfg Config) *fakeNode {
	cfg.setDefaults()
	return &fakeNode{
		cfg:      cfg,
		conns:    make(map[string]int),
		since:    make(map[string]time.Time),
		deliverN: make(map[string]int),
		changed:  make(chan struct{}),
	}
}

// changedLocked wakes waitFor. f.mu held.
func (f *fakeNode) changedLocked() {
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *fakeNode) Config() Config { return f.cfg }

func (f *fakeNode) Deliver(userIDs []string, m *Message) int {
	f.mu.Lock()
	f.delivered = append(f.delivered, fakeDelivery{slices.Clone(userIDs), m})
	n := 0
	for _, u := range userIDs {
		if d, ok := f.deliverN[u]; ok {
			n += d
		} else {
			n += f.conns[u]
		}
	}
	hook := f.deliverHook
	f.changedLocked()
	f.mu.Unlock()
	if hook != nil {
		hook(userIDs)
	}
	return n
}

func (f *fakeNode) DeliverBroadcast(m *Message, exclude []string) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.broadcasts = append(f.broadcasts, fakeBroadcast{m, slices.Clone(exclude)})
	var n int64
	for u, c := range f.conns {
		if !slices.Contains(exclude, u) {
			n += int64(c)
		}
	}
	f.changedLocked()
	return n
}

func (f *fakeNode) DeliverTopic(m *Message) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.topics = append(f.topics, m)
	f.changedLocked()
	return 3
}

func (f *fakeNode) CloseUser(userID, text string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = append(f.closed, fakeClose{userID, text})
	f.changedLocked()
	return f.conns[userID]
}

func (f *fakeNode) Evict(window time.Duration) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.evicted = append(f.evicted, window)
	f.changedLocked()
	n := 0
	for _, c := range f.conns {
		n += c
	}
	return n
}

func (f *fakeNode) Emit(e Event) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.events = append(f.events, fakeEvent{e, time.Now()})
	f.changedLocked()
}

func (f *fakeNode) Watch(kinds []EventKind, buffer int) *Watcher {
	c, lost := make(chan Event, buffer), make(chan struct{})
	w := &Watcher{C: c, Lost: lost, c: c, lost: lost}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.watchers = append(f.watchers, w)
	return w
}

func (f *fakeNode) Unwatch(w *Watcher) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.watchers = slices.DeleteFunc(f.watchers, func(x *Watcher) bool { return x == w })
}

func (f *fakeNode) Watchers() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.watchers)
}

func (f *fakeNode) UserConns(userID string) (int, time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.conns[userID], f.since[userID]
}

func (f *fakeNode) TopicConns(string) int { return 0 }

func (f *fakeNode) Connections() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	var n int64
	for _, c := range f.conns {
		n += int64(c)
	}
	return n
}

func (f *fakeNode) ForgetSeen(string) {}

func (f *fakeNode) CountInbox(c InboxCounts) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.counts.Acked += c.Acked
	f.counts.Trimmed += c.Trimmed
	f.counts.Expired += c.Expired
	f.counts.Replayed += c.Replayed
	f.countCalls++
	f.changedLocked()
}

// setConns sets what UserConns reports for userID: n connections, the
// oldest opened at since (when n > 0).
func (f *fakeNode) setConns(userID string, n int, since time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if n == 0 {
		delete(f.conns, userID)
		delete(f.since, userID)
		return
	}
	f.conns[userID], f.since[userID] = n, since
}

func (f *fakeNode) setDeliverN(userID string, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deliverN[userID] = n
}

func (f *fakeNode) setDeliverHook(h func(userIDs []string)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deliverHook = h
}

func (f *fakeNode) deliveries() []fakeDelivery {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.delivered)
}

// eventsOf returns the events emitted so far of kind for userID ("": any
// user).
func (f *fakeNode) eventsOf(kind EventKind, userID string) []fakeEvent {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.eventsOfLocked(kind, userID)
}

func (f *fakeNode) eventsOfLocked(kind EventKind, userID string) []fakeEvent {
	var out []fakeEvent
	for _, e := range f.events {
		if e.Kind == kind && (userID == "" || e.UserID == userID) {
			out = append(out, e)
		}
	}
	return out
}

func (f *fakeNode) inboxCounts() InboxCounts {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.counts
}

// waitFor waits until cond (called with f.mu held) is true, woken by every
// call the node records, and fails t after d.
func (f *fakeNode) waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		f.mu.Lock()
		ok := cond()
		ch := f.changed
		f.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("still waiting after %v for %s", d, what)
		}
	}
}

// newMemoryTest makes a memory engine over a fake node with cfg (defaults
// applied); the engine is closed when the test ends.
func newMemoryTest(t *testing.T, cfg Config) (*memoryEngine, *fakeNode) {
	t.Helper()
	f := newFakeNode(cfg)
	e := newMemoryEngine(f)
	t.Cleanup(func() {
		if err := e.Close(context.Background()); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return e, f
}

func mustJoin(t *testing.T, e Engine, j JoinRequest) Joined {
	t.Helper()
	out, err := e.Join(context.Background(), j)
	if err != nil {
		t.Fatalf("Join(%+v): %v", j, err)
	}
	return out
}

func mustSend(t *testing.T, e Engine, users []string, p Push) Sent {
	t.Helper()
	s, err := e.SendToUsers(context.Background(), users, p)
	if err != nil {
		t.Fatalf("SendToUsers(%v): %v", users, err)
	}
	return s
}

// memInbox returns the ids in userID's inbox in e, and whether it has one.
func memInbox(e *memoryEngine, userID string) ([]string, bool) {
	s := e.stripe(userID)
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.inboxes[userID]
	if b == nil {
		return nil, false
	}
	return inboxIDs(b), true
}

// goroutinesWith counts the goroutines whose stack contains every one of
// parts.
func goroutinesWith(parts ...string) int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		all := true
		for _, p := range parts {
			if !strings.Contains(g, p) {
				all = false
				break
			}
		}
		if all {
			count++
		}
	}
	return count
}

// waitGoroutines waits until at least n goroutines' stacks contain every
// one of parts, and fails t after d.
func waitGoroutines(t *testing.T, d time.Duration, n int, parts ...string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for goroutinesWith(parts...) < n {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Logf("goroutines:\n%s", buf[:runtime.Stack(buf, true)])
			t.Fatalf("after %v, %d goroutines with %q, want %d", d, goroutinesWith(parts...), parts, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// idemWaiting marks a call of idemTable.do that waits for the first call
// with its key: blocked in its select (runtime.Stack leaves out the runtime's
// frames, the goroutine's state says it).
var idemWaiting = []string{"pushgate/gateway.(*idemTable).do(", " [select"}

// One id for all the users of a send; ids grow from send to send; a message
// is stored only with a ttl; each user's Delivery comes from what Deliver
// returned and the engine's presence; Deliver gets each user once, with the
// message as pushed.
func TestMemorySendToUsers(t *testing.T) {
	e, f := newMemoryTest(t, Config{})
	since := time.Now().Add(-time.Minute)
	f.setConns("a", 2, since)
	mustJoin(t, e, JoinRequest{UserID: "a", ConnID: "a1"}) // online in the engine, 2 connections here
	f.setConns("b", 1, since)                              // on the node, never joined through the engine
	f.setConns("d", 1, since)
	mustJoin(t, e, JoinRequest{UserID: "d", ConnID: "d1"})
	f.setDeliverN("d", 0) // online in the engine, yet queued on nothing
	// c is offline.
	users := []string{"a", "b", "c", "d"}

	check := func(p Push, s Sent, before []fakeDelivery) *Message {
		t.Helper()
		if !ValidID(s.ID) {
			t.Fatalf("Sent.ID %q is not an id", s.ID)
		}
		if s.Time.IsZero() || time.Since(s.Time) > time.Minute {
			t.Fatalf("Sent.Time = %v", s.Time)
		}
		stored := p.TTL > 0
		want := []Delivery{
			{UserID: "a", Online: true, Delivered: 2, Stored: stored},
			{UserID: "b", Online: true, Delivered: 1, Stored: stored},
			{UserID: "c", Online: false, Delivered: 0, Stored: stored},
			{UserID: "d", Online: true, Delivered: 0, Stored: stored},
		}
		if !reflect.DeepEqual(s.Users, want) {
			t.Fatalf("Sent.Users = %+v\nwant %+v", s.Users, want)
		}
		ds := f.deliveries()[len(before):]
		if len(ds) != len(users) {
			t.Fatalf("%d Deliver calls, want %d: %+v", len(ds), len(users), ds)
		}
		m := ds[0].msg
		for i, d := range ds {
			if !slices.Equal(d.users, users[i:i+1]) {
				t.Fatalf("Deliver call %d for %v, want [%s]", i, d.users, users[i])
			}
			if d.msg != m {
				t.Fatalf("Deliver call %d got another *Message", i)
			}
		}
		if m.ID != s.ID || !m.Time.Equal(s.Time) || m.Type != p.Type || m.Kind != p.Kind || !bytes.Equal(m.Data, p.Data) ||
			m.TTL != p.TTL || m.stored != stored || m.Topic != "" || m.broadcast {
			t.Fatalf("delivered %+v\nfor push %+v, sent %+v", m, p, s)
		}
		return m
	}

	p := Push{Type: "order", Kind: KindJSON, Data: []byte(`{"n":1}`)}
	live := mustSend(t, e, users, p)
	check(p, live, nil)
	if n := e.Inboxed(); n != 0 {
		t.Fatalf("Inboxed = %d after a send without ttl", n)
	}
	for _, u := range users {
		if ids, ok := memInbox(e, u); ok {
			t.Fatalf("%s has an inbox %v after a send without ttl", u, ids)
		}
	}

	before := f.deliveries()
	ps := Push{Type: "note", Kind: KindBinary, Data: []byte{0, 1, 2}, TTL: time.Minute}
	stored := mustSend(t, e, users, ps)
	check(ps, stored, before)
	if stored.ID <= live.ID {
		t.Fatalf("second send's id %s not above the first's %s", stored.ID, live.ID)
	}
	if n := e.Inboxed(); n != int64(len(users)) {
		t.Fatalf("Inboxed = %d, want %d", n, len(users))
	}
	for _, u := range users {
		if ids, _ := memInbox(e, u); !slices.Equal(ids, []string{stored.ID}) {
			t.Fatalf("%s's inbox = %v, want [%s]", u, ids, stored.ID)
		}
	}

	// Ids only grow, whoever the recipients are.
	last := stored.ID
	for i := range 50 {
		s := mustSend(t, e, users[i%len(users):], Push{Kind: KindText, Data: []byte("x")})
		if s.ID <= last {
			t.Fatalf("send %d: id %s not above %s", i, s.ID, last)
		}
		last = s.ID
	}
}

// Concurrent sends to overlapping users: each user's messages reach Deliver
// in id order, and every stored message is in each recipient's inbox in
// that order.
func TestMemorySendOrderPerUser(t *testing.T) {
	e, f := newMemoryTest(t, Config{InboxMessages: 1000})
	users := []string{"u0", "u1", "u2", "u3", "u4"}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				to := []string{users[(w+i)%len(users)], users[(w+2*i+1)%len(users)]}
				if to[0] == to[1] {
					to = to[:1]
				}
				if _, err := e.SendToUsers(context.Background(), to, Push{Kind: KindText, Data: []byte("x"), TTL: time.Hour}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	per := make(map[string][]string)
	for _, d := range f.deliveries() {
		for _, u := range d.users {
			per[u] = append(per[u], d.msg.ID)
		}
	}
	total := 0
	for _, u := range users {
		ids := per[u]
		total += len(ids)
		for i := 1; i < len(ids); i++ {
			if ids[i] <= ids[i-1] {
				t.Fatalf("%s: Deliver got %s after %s", u, ids[i], ids[i-1])
			}
		}
		if got, _ := memInbox(e, u); !slices.Equal(got, ids) {
			t.Fatalf("%s: inbox %v, delivered %v", u, got, ids)
		}
	}
	if n := e.Inboxed(); n != int64(total) {
		t.Fatalf("Inboxed = %d, want %d", n, total)
	}
}

// Join records the node's count as the user's presence, reports the user
// online once, and returns the inbox after LastID with a Seq between the
// replay and the next send. A resume in the engine's epoch acknowledges what
// the client has; one from another epoch is not complete.
func TestMemoryJoin(t *testing.T) {
	e, f := newMemoryTest(t, Config{})
	ep := f.cfg.Epoch
	var stored []Sent
	for i := range 3 {
		stored = append(stored, mustSend(t, e, []string{"u"}, Push{Kind: KindText, Data: []byte{'a' + byte(i)}, TTL: time.Hour}))
	}
	mustSend(t, e, []string{"u"}, Push{Kind: KindText, Data: []byte("live")}) // not stored: never replayed
	if n := e.Users(); n != 0 {
		t.Fatalf("Users = %d before any join", n)
	}

	since := time.Now().Add(-time.Minute).Round(0)
	f.setConns("u", 1, since)
	j := mustJoin(t, e, JoinRequest{UserID: "u", ConnID: "c1"})
	if j.Epoch != ep || !j.Complete {
		t.Fatalf("Join: epoch %q complete %v, want %q true", j.Epoch, j.Complete, ep)
	}
	want := []string{stored[0].ID, stored[1].ID, stored[2].ID}
	if got := msgIDs(j.Replay); !slices.Equal(got, want) {
		t.Fatalf("Replay = %v, want %v", got, want)
	}
	if j.Replay[0].Data[0] != 'a' || !j.Replay[0].stored {
		t.Fatalf("replayed %+v", j.Replay[0])
	}
	if j.Seq < stored[2].ID {
		t.Fatalf("Seq %s below a replayed id %s", j.Seq, stored[2].ID)
	}
	if c := f.inboxCounts(); c.Replayed != 3 || c.Acked != 0 {
		t.Fatalf("counts %+v, want 3 replayed", c)
	}
	on := f.eventsOf(EventUserOnline, "")
	if len(on) != 1 || on[0].UserID != "u" || on[0].Time.IsZero() {
		t.Fatalf("online events %+v, want one for u", on)
	}
	if e.Users() != 1 || e.Connections() != 1 {
		t.Fatalf("Users %d Connections %d, want 1 1", e.Users(), e.Connections())
	}
	pr, _ := e.Presence(context.Background(), []string{"u", "nobody"})
	if want := []OnlineUser{{UserID: "u", Connections: 1, Since: since}, {UserID: "nobody"}}; !reflect.DeepEqual(pr, want) {
		t.Fatalf("Presence = %+v, want %+v", pr, want)
	}
	page, _ := e.ListOnline(context.Background(), "", 10, nil)
	if want := []OnlineUser{{UserID: "u", Connections: 1, Since: since}}; !reflect.DeepEqual(page.Users, want) ||
		page.More || page.TotalUsers != 1 || page.TotalConnections != 1 {
		t.Fatalf("ListOnline = %+v", page)
	}

	// The next send's id is above Seq.
	s3 := mustSend(t, e, []string{"u"}, Push{Kind: KindText, Data: []byte("d"), TTL: time.Hour})
	if s3.ID <= j.Seq {
		t.Fatalf("send after the join has id %s, not above Seq %s", s3.ID, j.Seq)
	}
	stored = append(stored, s3)

	// A second connection: no second online event, the totals follow.
	f.setConns("u", 2, since)
	f.setConns("v", 1, since)
	j2 := mustJoin(t, e, JoinRequest{UserID: "u", ConnID: "c2"})
	mustJoin(t, e, JoinRequest{UserID: "v", ConnID: "v1"})
	if len(j2.Replay) != 4 || j2.Seq <= j.Seq || j2.Seq < s3.ID {
		t.Fatalf("second join: replay %v seq %s (first seq %s)", msgIDs(j2.Replay), j2.Seq, j.Seq)
	}
	if n := len(f.eventsOf(EventUserOnline, "u")); n != 1 {
		t.Fatalf("%d online events for u after its second connection, want 1", n)
	}
	if e.Users() != 2 || e.Connections() != 3 {
		t.Fatalf("Users %d Connections %d, want 2 3", e.Users(), e.Connections())
	}
	if pr, _ := e.Presence(context.Background(), []string{"u"}); pr[0].Connections != 2 {
		t.Fatalf("Presence = %+v, want 2 connections", pr)
	}

	// Resume from stored[1] in this epoch: stored[0] and [1] are
	// acknowledged for the new connection, implicitly.
	inboxed := e.Inboxed()
	f.setConns("u", 3, since)
	j3 := mustJoin(t, e, JoinRequest{UserID: "u", ConnID: "c3", LastID: stored[1].ID, Epoch: ep, Resume: true})
	if got, want := msgIDs(j3.Replay), []string{stored[2].ID, stored[3].ID}; !slices.Equal(got, want) || !j3.Complete {
		t.Fatalf("resume: replay %v complete %v, want %v true", got, j3.Complete, want)
	}
	acked := f.eventsOf(EventMessageAcked, "u")
	if len(acked) != 2 {
		t.Fatalf("%d acked events after the resume, want 2: %+v", len(acked), acked)
	}
	for i, a := range acked {
		if a.MessageID != stored[i].ID || a.ConnID != "c3" || !a.Implicit || a.Time.IsZero() {
			t.Fatalf("acked event %d = %+v, want %s for c3, implicit", i, a.Event, stored[i].ID)
		}
	}
	if c := f.inboxCounts(); c.Acked != 2 {
		t.Fatalf("counts %+v, want 2 acked", c)
	}
	if n := e.Inboxed(); n != inboxed-2 {
		t.Fatalf("Inboxed = %d, want %d", n, inboxed-2)
	}
	// The next join does not replay them.
	j4 := mustJoin(t, e, JoinRequest{UserID: "u", ConnID: "c4"})
	if got, want := msgIDs(j4.Replay), []string{stored[2].ID, stored[3].ID}; !slices.Equal(got, want) {
		t.Fatalf("join after the resume replays %v, want %v", got, want)
	}
	// An unknown epoch ("") is taken as this one.
	j5 := mustJoin(t, e, JoinRequest{UserID: "u", ConnID: "c5", LastID: stored[2].ID, Resume: true})
	if got := msgIDs(j5.Replay); !slices.Equal(got, []string{stored[3].ID}) || !j5.Complete {
		t.Fatalf("resume without epoch: replay %v complete %v", got, j5.Complete)
	}
	if ids, _ := memInbox(e, "u"); !slices.Equal(ids, []string{stored[3].ID}) {
		t.Fatalf("inbox after the resume without epoch = %v", ids)
	}

	// Another epoch's last id: not complete, and nothing acknowledged.
	n := len(f.eventsOf(EventMessageAcked, ""))
	j6 := mustJoin(t, e, JoinRequest{UserID: "u", ConnID: "c6", LastID: stored[3].ID, Epoch: "another", Resume: true})
	if j6.Complete || j6.Epoch != ep {
		t.Fatalf("resume from another epoch: complete %v epoch %q, want false %q", j6.Complete, j6.Epoch, ep)
	}
	if m := len(f.eventsOf(EventMessageAcked, "")); m != n {
		t.Fatalf("a resume from another epoch acknowledged %d messages", m-n)
	}
	if ids, _ := memInbox(e, "u"); !slices.Equal(ids, []string{stored[3].ID}) {
		t.Fatalf("inbox after a resume from another epoch = %v", ids)
	}
	// Another epoch with no inbox at all is not complete either.
	f.setConns("w", 1, since)
	if j := mustJoin(t, e, JoinRequest{UserID: "w", ConnID: "w1", LastID: NewID(), Epoch: "another", Resume: true}); j.Complete || len(j.Replay) != 0 {
		t.Fatalf("resume of a user without inbox from another epoch: %+v", j)
	}
}

// A user whose last connection left is reported offline only after the
// grace, once; a user back within the grace is reported neither offline
// nor online again; a negative grace reports offline at once.
func TestMemoryPresenceGrace(t *testing.T) {
	const grace = 50 * time.Millisecond
	e, f := newMemoryTest(t, Config{PresenceGrace: grace})
	since := time.Now()

	f.setConns("u", 2, since)
	mustJoin(t, e, JoinRequest{UserID: "u", ConnID: "c1"})
	mustJoin(t, e, JoinRequest{UserID: "u", ConnID: "c2"})
	f.setConns("u", 1, since)
	e.Left("u") // one of two: still online
	if e.Users() != 1 || e.Connections() != 1 {
		t.Fatalf("after one of two left: Users %d Connections %d, want 1 1", e.Users(), e.Connections())
	}
	f.setConns("u", 0, time.Time{})
	leftAt := time.Now()
	e.Left("u")
	if e.Users() != 0 || e.Connections() != 0 {
		t.Fatalf("after the last left: Users %d Connections %d, want 0 0", e.Users(), e.Connections())
	}
	if pr, _ := e.Presence(context.Background(), []string{"u"}); pr[0].Connections != 0 || !pr[0].Since.IsZero() {
		t.Fatalf("Presence after the last left = %+v, want offline", pr[0])
	}
	if page, _ := e.ListOnline(context.Background(), "", 10, nil); len(page.Users) != 0 {
		t.Fatalf("ListOnline after the last left = %+v", page)
	}
	f.waitFor(t, 10*time.Second, "the offline event", func() bool { return len(f.eventsOfLocked(EventUserOffline, "u")) > 0 })
	off := f.eventsOf(EventUserOffline, "u")
	if len(off) != 1 {
		t.Fatalf("%d offline events, want 1", len(off))
	}
	if d := off[0].at.Sub(leftAt); d < grace {
		t.Fatalf("offline reported %v after the user left, before the %v grace", d, grace)
	}
	if n := len(f.eventsOf(EventUserOnline, "u")); n != 1 {
		t.Fatalf("%d online events, want 1", n)
	}
	// Left again while offline: nothing.
	e.Left("u")
	if e.Users() != 0 {
		t.Fatalf("Users = %d", e.Users())
	}

	// Back within the grace. The attempt only counts when the rejoin ran
	// before the grace could have ended; a stalled machine tries again.
	for attempt := 0; ; attempt++ {
		if attempt == 5 {
			t.Skip("could not rejoin within the grace in 5 attempts (machine too slow)")
		}
		u := fmt.Sprintf("r%d", attempt)
		f.setConns(u, 1, since)
		mustJoin(t, e, JoinRequest{UserID: u, ConnID: "c1"})
		f.setConns(u, 0, time.Time{})
		leftAt := time.Now()
		e.Left(u)
		f.setConns(u, 1, since)
		mustJoin(t, e, JoinRequest{UserID: u, ConnID: "c2"})
		if time.Since(leftAt) >= grace {
			continue
		}
		if pr, _ := e.Presence(context.Background(), []string{u}); pr[0].Connections != 1 {
			t.Fatalf("Presence after the rejoin = %+v", pr[0])
		}
		// The grace timer is gone; wait past the grace to be sure nothing
		// comes (an absence cannot be waited for otherwise).
		s := e.stripe(u)
		s.mu.Lock()
		_, leaving := s.leaving[u]
		s.mu.Unlock()
		if leaving {
			t.Fatal("the user is back, yet still leaving")
		}
		time.Sleep(time.Until(leftAt.Add(3 * grace)))
		if n := len(f.eventsOf(EventUserOffline, u)); n != 0 {
			t.Fatalf("%d offline events for a user back within the grace", n)
		}
		if n := len(f.eventsOf(EventUserOnline, u)); n != 1 {
			t.Fatalf("%d online events for a user back within the grace, want 1", n)
		}
		break
	}

	// Leaving twice in a row (gone, back, gone): one offline, after the
	// grace from the second leave.
	f.setConns("x", 1, since)
	mustJoin(t, e, JoinRequest{UserID: "x", ConnID: "c1"})
	f.setConns("x", 0, time.Time{})
	leftAt = time.Now()
	e.Left("x")
	f.setConns("x", 1, since)
	mustJoin(t, e, JoinRequest{UserID: "x", ConnID: "c2"})
	stalled := time.Since(leftAt) >= grace // the first timer may have fired
	f.setConns("x", 0, time.Time{})
	e.Left("x")
	f.waitFor(t, 10*time.Second, "x's offline event", func() bool { return len(f.eventsOfLocked(EventUserOffline, "x")) > 0 })
	time.Sleep(2 * grace) // a second timer would have fired by now
	if n := len(f.eventsOf(EventUserOffline, "x")); n != 1 && !stalled {
		t.Fatalf("%d offline events for x, want 1", n)
	}
}

func TestMemoryPresenceNegativeGrace(t *testing.T) {
	e, f := newMemoryTest(t, Config{PresenceGrace: -1})
	f.setConns("u", 1, time.Now())
	mustJoin(t, e, JoinRequest{UserID: "u", ConnID: "c1"})
	f.setConns("u", 0, time.Time{})
	e.Left("u")
	off := f.eventsOf(EventUserOffline, "u")
	if len(off) != 1 || off[0].Time.IsZero() {
		t.Fatalf("offline events right after Left: %+v, want one", off)
	}
	// Back: online again at once.
	f.setConns("u", 1, time.Now())
	mustJoin(t, e, JoinRequest{UserID: "u", ConnID: "c2"})
	if n := len(f.eventsOf(EventUserOnline, "u")); n != 2 {
		t.Fatalf("%d online events, want 2", n)
	}
}

// Ack removes the given ids from the inbox and reports each one that was
// there, with the connection and the implicit flag; unknown ids are
// ignored.
func TestMemoryAck(t *testing.T) {
	e, f := newMemoryTest(t, Config{})
	ctx := context.Background()
	var ids []string
	for range 4 {
		ids = append(ids, mustSend(t, e, []string{"u"}, Push{Kind: KindText, Data: []byte("x"), TTL: time.Hour}).ID)
	}
	if err := e.Ack(ctx, "u", "c1", []string{ids[0], ids[2], NewID(), ids[0], "garbage"}, false); err != nil {
		t.Fatal(err)
	}
	acked := f.eventsOf(EventMessageAcked, "")
	if len(acked) != 2 {
		t.Fatalf("%d acked events, want 2: %+v", len(acked), acked)
	}
	for i, id := range []string{ids[0], ids[2]} {
		a := acked[i]
		if a.UserID != "u" || a.ConnID != "c1" || a.MessageID != id || a.Implicit || a.Time.IsZero() {
			t.Fatalf("acked event %d = %+v, want %s by c1, explicit", i, a.Event, id)
		}
	}
	if got, _ := memInbox(e, "u"); !slices.Equal(got, []string{ids[1], ids[3]}) {
		t.Fatalf("inbox after the ack = %v", got)
	}
	if e.Inboxed() != 2 || f.inboxCounts().Acked != 2 {
		t.Fatalf("Inboxed %d, counts %+v; want 2, 2 acked", e.Inboxed(), f.inboxCounts())
	}
	f.setConns("u", 1, time.Now())
	if j := mustJoin(t, e, JoinRequest{UserID: "u", ConnID: "c2"}); !slices.Equal(msgIDs(j.Replay), []string{ids[1], ids[3]}) {
		t.Fatalf("replay after the ack = %v", msgIDs(j.Replay))
	}

	if err := e.Ack(ctx, "u", "c2", []string{ids[3], ids[1]}, true); err != nil {
		t.Fatal(err)
	}
	acked = f.eventsOf(EventMessageAcked, "")[2:]
	if len(acked) != 2 || acked[0].MessageID != ids[3] || acked[1].MessageID != ids[1] ||
		!acked[0].Implicit || !acked[1].Implicit || acked[0].ConnID != "c2" {
		t.Fatalf("implicit acked events %+v", acked)
	}
	if e.Inboxed() != 0 || f.inboxCounts().Acked != 4 {
		t.Fatalf("Inboxed %d, counts %+v; want 0, 4 acked", e.Inboxed(), f.inboxCounts())
	}
	if ids, ok := memInbox(e, "u"); ok {
		t.Fatalf("an inbox acknowledged to the end is kept: %v", ids)
	}

	// Nothing to acknowledge: no event, no count.
	f.mu.Lock()
	calls := f.countCalls
	f.mu.Unlock()
	if err := e.Ack(ctx, "u", "c2", []string{ids[0]}, false); err != nil {
		t.Fatal(err)
	}
	if err := e.Ack(ctx, "nobody", "c9", []string{ids[0]}, false); err != nil {
		t.Fatal(err)
	}
	if n := len(f.eventsOf(EventMessageAcked, "")); n != 4 {
		t.Fatalf("%d acked events after acks of nothing, want 4", n)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.countCalls != calls {
		t.Fatal("an ack of nothing was counted")
	}
}

// A repeat of a send with the same idempotency key and request gets the
// first result and sends nothing; another request under the key is an
// error; a concurrent repeat waits for the first; the key is forgotten after
// its window.
func TestMemoryIdempotency(t *testing.T) {
	e, f := newMemoryTest(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // a call that never returns fails the test
	defer cancel()
	f.setConns("u", 1, time.Now())
	h1, h2 := sha256.Sum256([]byte("request 1")), sha256.Sum256([]byte("request 2"))
	p := Push{Kind: KindText, Data: []byte("x"), TTL: time.Hour, Idempotency: Idempotency{Key: "caller/k1", Hash: h1, Window: time.Minute}}

	first := mustSend(t, e, []string{"u"}, p)
	again := mustSend(t, e, []string{"u"}, p)
	if !again.Replayed || first.Replayed {
		t.Fatalf("repeat Replayed %v, first %v: want only the repeat marked", again.Replayed, first.Replayed)
	}
	again.Replayed = false
	if !reflect.DeepEqual(again, first) {
		t.Fatalf("repeat returned %+v, want the first result %+v", again, first)
	}
	if n := len(f.deliveries()); n != 1 {
		t.Fatalf("%d deliveries after a send and its repeat, want 1", n)
	}
	if e.Inboxed() != 1 {
		t.Fatalf("Inboxed = %d, want 1", e.Inboxed())
	}

	other := p
	other.Idempotency.Hash = h2
	if _, err := e.SendToUsers(ctx, []string{"u"}, other); !errors.Is(err, ErrIdempotencyConflict) {
		t.Fatalf("same key, other request: err %v, want ErrIdempotencyConflict", err)
	}
	if n := len(f.deliveries()); n != 1 {
		t.Fatalf("%d deliveries after a conflict, want 1", n)
	}

	// Other keys, and no key, send.
	k2 := p
	k2.Idempotency.Key = "caller/k2"
	if s := mustSend(t, e, []string{"u"}, k2); s.ID == first.ID {
		t.Fatal("another key returned the first result")
	}
	none := p
	none.Idempotency = Idempotency{}
	a, b := mustSend(t, e, []string{"u"}, none), mustSend(t, e, []string{"u"}, none)
	if a.ID == b.ID || len(f.deliveries()) != 4 {
		t.Fatalf("sends without key: ids %s %s, %d deliveries (want 4)", a.ID, b.ID, len(f.deliveries()))
	}

	// A concurrent repeat waits for the first call and gets its result; one
	// whose context ends while it waits gives up.
	entered, release := make(chan struct{}), make(chan struct{})
	f.setDeliverHook(func(users []string) {
		if users[0] == "slow" {
			close(entered)
			<-release
		}
	})
	slow := p
	slow.Idempotency.Key = "caller/slow"
	type result struct {
		s   Sent
		err error
	}
	results := make(chan result, 2)
	send := func(ctx context.Context) {
		s, err := e.SendToUsers(ctx, []string{"slow"}, slow)
		results <- result{s, err}
	}
	go send(ctx)
	<-entered
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	defer unblock() // a failure must not leave the stripe locked for Close
	before := goroutinesWith(idemWaiting...)
	cctx, cancelWait := context.WithCancel(ctx)
	defer cancelWait()
	gave := make(chan error, 1)
	go func() {
		_, err := e.SendToUsers(cctx, []string{"slow"}, slow)
		gave <- err
	}()
	waitGoroutines(t, 10*time.Second, before+1, idemWaiting...)
	cancelWait()
	select {
	case err := <-gave:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("waiting repeat whose context ended: err %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a waiting repeat whose context ended still waits")
	}
	go send(ctx)
	waitGoroutines(t, 10*time.Second, before+1, idemWaiting...)
	unblock()
	r1, r2 := <-results, <-results
	if r1.s.Replayed == r2.s.Replayed {
		t.Fatalf("concurrent repeat: Replayed %v and %v, want one of them", r1.s.Replayed, r2.s.Replayed)
	}
	r1.s.Replayed, r2.s.Replayed = false, false
	if r1.err != nil || r2.err != nil || !reflect.DeepEqual(r1.s, r2.s) {
		t.Fatalf("concurrent repeat: %+v and %+v, want the same result", r1, r2)
	}
	n := 0
	for _, d := range f.deliveries() {
		if d.users[0] == "slow" {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d deliveries to slow, want 1", n)
	}
	f.setDeliverHook(nil)

	// Past its window a key sends again.
	short := p
	short.Idempotency = Idempotency{Key: "caller/short", Hash: h1, Window: 20 * time.Millisecond}
	s1 := mustSend(t, e, []string{"u"}, short)
	doneAt := time.Now()
	time.Sleep(time.Until(doneAt.Add(short.Idempotency.Window + 5*time.Millisecond)))
	short.Idempotency.Hash = h2 // and the key is free for another request
	s2 := mustSend(t, e, []string{"u"}, short)
	if s2.ID == s1.ID {
		t.Fatal("a key past its window returned its old result")
	}
}

var errSendFailed = errors.New("send failed")

// A send that fails is not remembered: the next call with its key runs,
// and so does a call that was waiting for it.
func TestIdemTableFailedSendIsForgotten(t *testing.T) {
	var tab idemTable
	tab.entries = make(map[string]*idemEntry)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // a call that never returns fails the test
	defer cancel()
	k := Idempotency{Key: "k", Hash: sha256.Sum256([]byte("r")), Window: time.Minute}
	runs := 0
	fail := func() (Sent, error) { runs++; return Sent{}, errSendFailed }
	ok := func(id string) func() (Sent, error) {
		return func() (Sent, error) { runs++; return Sent{ID: id}, nil }
	}

	if _, err := tab.do(ctx, k, fail); !errors.Is(err, errSendFailed) {
		t.Fatalf("err %v, want the send's", err)
	}
	if s, err := tab.do(ctx, k, ok("A")); err != nil || s.ID != "A" || runs != 2 {
		t.Fatalf("retry after a failure: %+v %v, %d runs; want A, 2 runs", s, err, runs)
	}
	if s, err := tab.do(ctx, k, ok("B")); err != nil || s.ID != "A" || runs != 2 {
		t.Fatalf("repeat after the retry: %+v %v, %d runs; want A, 2 runs", s, err, runs)
	}

	// A call waiting for a first one that fails runs its own send.
	k2 := k
	k2.Key = "k2"
	entered, release := make(chan struct{}), make(chan struct{})
	firstErr := make(chan error, 1)
	go func() {
		_, err := tab.do(ctx, k2, func() (Sent, error) {
			close(entered)
			<-release
			return Sent{}, errSendFailed
		})
		firstErr <- err
	}()
	<-entered
	before := goroutinesWith(idemWaiting...)
	second := make(chan Sent, 1)
	secondRan := make(chan struct{})
	go func() {
		s, err := tab.do(ctx, k2, func() (Sent, error) { close(secondRan); return Sent{ID: "second"}, nil })
		if err != nil {
			t.Error(err)
		}
		second <- s
	}()
	waitGoroutines(t, 10*time.Second, before+1, idemWaiting...)
	close(release)
	if err := <-firstErr; !errors.Is(err, errSendFailed) {
		t.Fatalf("first call: err %v", err)
	}
	if s := <-second; s.ID != "second" {
		t.Fatalf("waiting call got %+v, want its own send's result", s)
	}
	<-secondRan
	if s, err := tab.do(ctx, k2, ok("C")); err != nil || s.ID != "second" {
		t.Fatalf("repeat: %+v %v, want the second's result", s, err)
	}
}

// A key is remembered for its window from when its send finished, then
// forgotten (and swept from the table).
func TestIdemTableWindowExpires(t *testing.T) {
	var tab idemTable
	tab.entries = make(map[string]*idemEntry)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // a call that never returns fails the test
	defer cancel()
	const window = 30 * time.Millisecond
	k := Idempotency{Key: "k", Hash: sha256.Sum256([]byte("r")), Window: window}
	runs := 0
	send := func() (Sent, error) { runs++; return Sent{ID: fmt.Sprint(runs)}, nil }

	if s, _ := tab.do(ctx, k, send); s.ID != "1" {
		t.Fatalf("first: %+v", s)
	}
	doneAt := time.Now()
	s, _ := tab.do(ctx, k, send)
	if s.ID != "1" && time.Since(doneAt) < window {
		t.Fatalf("repeat within the window ran again: %+v", s)
	}
	time.Sleep(time.Until(doneAt.Add(window + 5*time.Millisecond)))
	k.Hash = sha256.Sum256([]byte("another request"))
	if s, err := tab.do(ctx, k, send); err != nil || s.ID == "1" {
		t.Fatalf("past the window: %+v %v, want a new send", s, err)
	}
	kept := time.Now()

	// Stale keys are swept by a later call with any key.
	other := Idempotency{Key: "other", Window: window}
	time.Sleep(time.Until(kept.Add(window + 5*time.Millisecond)))
	if _, err := tab.do(ctx, other, send); err != nil {
		t.Fatal(err)
	}
	tab.mu.Lock()
	defer tab.mu.Unlock()
	if _, ok := tab.entries["k"]; ok || len(tab.entries) != 1 {
		t.Fatalf("table after the sweep holds %d keys (k: %v), want only other", len(tab.entries), ok)
	}
}

// Entries with a short ttl leave the inbox (swept by the engine, or found
// expired by a join) as a loss: a resume from before them is not complete,
// and they are not acknowledged.
func TestMemoryExpiry(t *testing.T) {
	e, f := newMemoryTest(t, Config{})
	ep := f.cfg.Epoch
	keep := mustSend(t, e, []string{"u"}, Push{Kind: KindText, Data: []byte("keep"), TTL: time.Hour})
	x1 := mustSend(t, e, []string{"u"}, Push{Kind: KindText, Data: []byte("x1"), TTL: 50 * time.Millisecond})
	x2 := mustSend(t, e, []string{"u"}, Push{Kind: KindText, Data: []byte("x2"), TTL: 50 * time.Millisecond})
	if e.Inboxed() != 3 {
		t.Fatalf("Inboxed = %d, want 3", e.Inboxed())
	}
	f.waitFor(t, 10*time.Second, "the sweep", func() bool { return f.counts.Expired >= 2 })
	if c := f.inboxCounts(); c.Expired != 2 || c.Acked != 0 {
		t.Fatalf("counts %+v, want 2 expired", c)
	}
	if e.Inboxed() != 1 {
		t.Fatalf("Inboxed = %d after the sweep, want 1", e.Inboxed())
	}
	if ids, ok := memInbox(e, "u"); !ok || !slices.Equal(ids, []string{keep.ID}) {
		t.Fatalf("inbox after the sweep = %v (kept: %v)", ids, ok)
	}

	f.setConns("u", 1, time.Now())
	j := mustJoin(t, e, JoinRequest{UserID: "u", ConnID: "c1", LastID: keep.ID, Epoch: ep, Resume: true})
	if j.Complete || len(j.Replay) != 0 {
		t.Fatalf("resume from before the expired entries: replay %v complete %v; want none, false", msgIDs(j.Replay), j.Complete)
	}
	for _, a := range f.eventsOf(EventMessageAcked, "") {
		if a.MessageID != keep.ID {
			t.Fatalf("an expired entry was acknowledged: %+v", a.Event)
		}
	}
	if e.Inboxed() != 0 {
		t.Fatalf("Inboxed = %d, want 0", e.Inboxed())
	}
	if j := mustJoin(t, e, JoinRequest{UserID: "u", ConnID: "c2", LastID: x1.ID, Epoch: ep, Resume: true}); j.Complete {
		t.Fatal("resume from between the expired entries complete")
	}
	if j := mustJoin(t, e, JoinRequest{UserID: "u", ConnID: "c3", LastID: x2.ID, Epoch: ep, Resume: true}); !j.Complete {
		t.Fatal("resume from the last expired entry incomplete")
	}

	// An entry past its ttl that no sweep has reached: a join counts it
	// expired, not acknowledged, whoever gets there first.
	p := mustSend(t, e, []string{"v"}, Push{Kind: KindText, Data: []byte("p"), TTL: time.Hour})
	m := mustSend(t, e, []string{"v"}, Push{Kind: KindText, Data: []byte("m"), TTL: time.Millisecond})
	time.Sleep(time.Until(m.Time.Add(2 * time.Millisecond)))
	f.setConns("v", 1, time.Now())
	jv := mustJoin(t, e, JoinRequest{UserID: "v", ConnID: "v1", LastID: p.ID, Epoch: ep, Resume: true})
	if jv.Complete || len(jv.Replay) != 0 {
		t.Fatalf("resume from before an expired entry: replay %v complete %v; want none, false", msgIDs(jv.Replay), jv.Complete)
	}
	acked := f.eventsOf(EventMessageAcked, "v")
	if len(acked) != 1 || acked[0].MessageID != p.ID {
		t.Fatalf("acked events for v: %+v, want p only", acked)
	}
	if c := f.inboxCounts(); c.Expired != 3 {
		t.Fatalf("counts %+v, want 3 expired", c)
	}
	if e.Inboxed() != 0 {
		t.Fatalf("Inboxed = %d, want 0", e.Inboxed())
	}
}

// Past the inbox cap the oldest entry is trimmed (counted, Inboxed right),
// and the loss outlives the entries: once the rest is acknowledged, a
// resume from before the trimmed entry is still not complete.
func TestMemoryTrim(t *testing.T) {
	e, f := newMemoryTest(t, Config{InboxMessages: 2})
	ep := f.cfg.Epoch
	before := NewID()
	var ids []string
	for range 3 {
		ids = append(ids, mustSend(t, e, []string{"u"}, Push{Kind: KindText, Data: []byte("x"), TTL: time.Hour}).ID)
	}
	if c := f.inboxCounts(); c.Trimmed != 1 {
		t.Fatalf("counts %+v, want 1 trimmed", c)
	}
	if got, _ := memInbox(e, "u"); !slices.Equal(got, ids[1:]) || e.Inboxed() != 2 {
		t.Fatalf("inbox %v, Inboxed %d; want %v, 2", got, e.Inboxed(), ids[1:])
	}
	if err := e.Ack(context.Background(), "u", "c0", ids[1:], false); err != nil {
		t.Fatal(err)
	}
	if e.Inboxed() != 0 {
		t.Fatalf("Inboxed = %d, want 0", e.Inboxed())
	}
	f.setConns("u", 1, time.Now())
	if j := mustJoin(t, e, JoinRequest{UserID: "u", ConnID: "c1", LastID: before, Epoch: ep, Resume: true}); j.Complete || len(j.Replay) != 0 {
		t.Fatalf("resume from before a trimmed entry, the rest acknowledged: replay %v complete %v; want none, false", msgIDs(j.Replay), j.Complete)
	}
	if j := mustJoin(t, e, JoinRequest{UserID: "u", ConnID: "c2", LastID: ids[0], Epoch: ep, Resume: true}); !j.Complete {
		t.Fatal("resume from the trimmed entry itself is incomplete")
	}
}

// ListOnline pages through the online users by id, with no gap and no
// repeat whatever the page size, filters with match, and says when more
// follow.
func TestMemoryListOnlinePaging(t *testing.T) {
	e, f := newMemoryTest(t, Config{})
	ctx := context.Background()
	base := time.Now().Add(-time.Hour).Round(0)
	var online []OnlineUser
	totalConns := 0
	for i := range 10 {
		u := fmt.Sprintf("user-%02d", (i*7)%10) // joined out of order
		n := i%3 + 1
		f.setConns(u, n, base.Add(time.Duration(i)*time.Second))
		mustJoin(t, e, JoinRequest{UserID: u, ConnID: "c"})
		online = append(online, OnlineUser{UserID: u, Connections: n, Since: base.Add(time.Duration(i) * time.Second)})
		totalConns += n
	}
	// One who left is not listed.
	f.setConns("user-05b", 1, base)
	mustJoin(t, e, JoinRequest{UserID: "user-05b", ConnID: "c"})
	f.setConns("user-05b", 0, time.Time{})
	e.Left("user-05b")
	slices.SortFunc(online, func(a, b OnlineUser) int { return strings.Compare(a.UserID, b.UserID) })

	list := func(limit int, match func(string) bool) []OnlineUser {
		t.Helper()
		var all []OnlineUser
		after := ""
		for pages := 0; ; pages++ {
			if pages > 20 {
				t.Fatal("ListOnline does not end")
			}
			page, err := e.ListOnline(ctx, after, limit, match)
			if err != nil {
				t.Fatal(err)
			}
			if len(page.Users) > limit {
				t.Fatalf("limit %d: page of %d", limit, len(page.Users))
			}
			if page.TotalUsers != 10 || page.TotalConnections != int64(totalConns) {
				t.Fatalf("totals %d %d, want 10 %d", page.TotalUsers, page.TotalConnections, totalConns)
			}
			all = append(all, page.Users...)
			if !page.More {
				return all
			}
			if len(page.Users) == 0 {
				t.Fatalf("limit %d after %q: empty page with More", limit, after)
			}
			after = page.Users[len(page.Users)-1].UserID
		}
	}
	for limit := 1; limit <= 3; limit++ {
		if got := list(limit, nil); !reflect.DeepEqual(got, online) {
			t.Fatalf("limit %d: listed %+v\nwant %+v", limit, got, online)
		}
	}
	even := func(id string) bool { return (id[len(id)-1]-'0')%2 == 0 }
	var want []OnlineUser
	for _, u := range online {
		if even(u.UserID) {
			want = append(want, u)
		}
	}
	for limit := 1; limit <= 3; limit++ {
		if got := list(limit, even); !reflect.DeepEqual(got, want) {
			t.Fatalf("limit %d, even ids: listed %+v\nwant %+v", limit, got, want)
		}
	}

	// More is false when the page ends exactly at the last user.
	if page, _ := e.ListOnline(ctx, "", 10, nil); len(page.Users) != 10 || page.More {
		t.Fatalf("a page of all 10: %d users, more %v", len(page.Users), page.More)
	}
	if page, _ := e.ListOnline(ctx, online[4].UserID, 5, nil); len(page.Users) != 5 || page.More || page.Users[0] != online[5] {
		t.Fatalf("the last 5: %+v", page)
	}
	if page, _ := e.ListOnline(ctx, online[4].UserID, 4, nil); len(page.Users) != 4 || !page.More {
		t.Fatalf("4 of the last 5: %+v", page)
	}
	if page, _ := e.ListOnline(ctx, "zzz", 5, nil); len(page.Users) != 0 || page.More {
		t.Fatalf("after the last user: %+v", page)
	}
	if page, _ := e.ListOnline(ctx, "", 5, func(string) bool { return false }); len(page.Users) != 0 || page.More {
		t.Fatalf("nobody matches: %+v", page)
	}
}

// Broadcast and Publish are live only, Disconnect and Upstream go to the
// node, Watch to the node's streams.
func TestMemoryBroadcastPublishDisconnect(t *testing.T) {
	e, f := newMemoryTest(t, Config{})
	ctx := context.Background()
	f.setConns("a", 2, time.Now())
	f.setConns("b", 1, time.Now())
	p := Push{Type: "t", Kind: KindText, Data: []byte("hi"), TTL: time.Hour}
	s, err := e.Broadcast(ctx, p, []string{"b"})
	if err != nil || s.Connections != 2 || !ValidID(s.ID) {
		t.Fatalf("Broadcast: %+v %v", s, err)
	}
	s2, err := e.Publish(ctx, "news", p)
	if err != nil || s2.Connections != 3 || s2.ID <= s.ID {
		t.Fatalf("Publish: %+v %v", s2, err)
	}
	f.mu.Lock()
	bm, tm := f.broadcasts[0], f.topics[0]
	f.mu.Unlock()
	if bm.msg.ID != s.ID || !bm.msg.broadcast || bm.msg.stored || bm.msg.TTL != 0 || !slices.Equal(bm.exclude, []string{"b"}) {
		t.Fatalf("DeliverBroadcast got %+v", bm)
	}
	if tm.ID != s2.ID || tm.Topic != "news" || tm.stored || tm.TTL != 0 || tm.broadcast {
		t.Fatalf("DeliverTopic got %+v", tm)
	}
	if e.Inboxed() != 0 {
		t.Fatalf("Inboxed = %d after live sends", e.Inboxed())
	}
	if n, err := e.Disconnect(ctx, "a", "bye"); err != nil || n != 2 {
		t.Fatalf("Disconnect: %d %v", n, err)
	}
	f.mu.Lock()
	closed := slices.Clone(f.closed)
	f.mu.Unlock()
	if len(closed) != 1 || closed[0] != (fakeClose{"a", "bye"}) {
		t.Fatalf("CloseUser got %+v", closed)
	}
	if err := e.Upstream(ctx, Event{Kind: EventClientMessage, UserID: "a", Data: []byte("up")}); err != nil {
		t.Fatal(err)
	}
	if ev := f.eventsOf(EventClientMessage, "a"); len(ev) != 1 || string(ev[0].Data) != "up" {
		t.Fatalf("upstream events %+v", ev)
	}
	w := e.Watch([]EventKind{EventUserOnline}, 4)
	if f.Watchers() != 1 {
		t.Fatal("Watch did not reach the node")
	}
	e.Unwatch(w)
	if f.Watchers() != 0 {
		t.Fatal("Unwatch did not reach the node")
	}
}

// Close stops the expiry loop (no goroutine of it is left) and the grace
// timers, and may be called again.
func TestMemoryClose(t *testing.T) {
	f := newFakeNode(Config{PresenceGrace: time.Hour})
	e := newMemoryEngine(f)
	t.Cleanup(func() { go e.Close(context.Background()) }) // if the test stops early; Close may hang in a broken engine
	marker := fmt.Sprintf("pushgate/gateway.(*memoryEngine).expireLoop(%p", e)
	waitGoroutines(t, 10*time.Second, 1, marker) // the marker finds the loop
	if !e.Up() {
		t.Fatal("a new engine is not up")
	}
	f.setConns("u", 1, time.Now())
	mustJoin(t, e, JoinRequest{UserID: "u", ConnID: "c"})
	f.setConns("u", 0, time.Time{})
	e.Left("u") // a grace timer runs

	closed := make(chan error, 1)
	go func() { closed <- e.Close(context.Background()) }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close does not return")
	}
	waitGoroutinesGone(t, 10*time.Second, marker)
	if e.Up() {
		t.Fatal("a closed engine is up")
	}
	for i := range e.stripes {
		s := &e.stripes[i]
		s.mu.Lock()
		n := len(s.leaving)
		s.mu.Unlock()
		if n != 0 {
			t.Fatalf("stripe %d still has %d grace timers", i, n)
		}
	}
	if err := e.Close(context.Background()); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}
