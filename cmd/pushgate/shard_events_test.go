package main

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"pushgate/gateway"
	pb "pushgate/gen/pushgate/v1"
)

// saidTracker checks a stream of client messages from several users: each
// user's numbers must come in order, each once, from the first one
// expected.
type saidTracker struct {
	t    testing.TB
	next map[string]int
	last string // the last event's cursor
}

// takeUntil reads and checks events from w until done.
func (k *saidTracker) takeUntil(w *cursorWatcher, done func() bool) {
	k.t.Helper()
	for !done() {
		e := w.next()
		cm := e.GetClientMessage()
		u := cm.GetUserId()
		want, ok := k.next[u]
		if !ok || cm.GetJson() != strconv.Itoa(want) {
			k.t.Fatalf("event %v: want %s's message %d (order per user, each once)", e, u, want)
		}
		if c := e.GetCursor(); c == "" || len(c) > gateway.MaxCursorsBytes || !gateway.IsCursors(c) {
			k.t.Fatalf("event %v: cursor %q is not a composite cursor", e, c)
		}
		k.next[u]++
		k.last = e.GetCursor()
	}
}

// sayAll has every client say n messages numbered from first, in rounds
// (one of each user's per round).
func sayAll(cs []*envClient, first, n int) {
	for i := first; i < first+n; i++ {
		for _, c := range cs {
			c.say(i, 1)
		}
	}
}

// speakers are envelope clients that say numbered client messages, each
// counting its own.
type speakers struct {
	users []string
	cs    []*envClient
	said  []int // the next number of each
}

// say has the clients at idx (none: all) say n messages each, in rounds.
func (sp *speakers) say(n int, idx ...int) {
	if len(idx) == 0 {
		for i := range sp.cs {
			idx = append(idx, i)
		}
	}
	for range n {
		for _, i := range idx {
			sp.cs[i].say(sp.said[i], 1)
			sp.said[i]++
		}
	}
}

// tracker expects each user's messages from the next one said.
func (sp *speakers) tracker(t testing.TB) *saidTracker {
	k := &saidTracker{t: t, next: map[string]int{}}
	for i, u := range sp.users {
		k.next[u] = sp.said[i]
	}
	return k
}

// until is a done condition for takeUntil: every user's messages up to
// what they have said so far.
func (sp *speakers) until(k *saidTracker) func() bool {
	want := slices.Clone(sp.said)
	return func() bool {
		for i, u := range sp.users {
			if k.next[u] < want[i] {
				return false
			}
		}
		return true
	}
}

// WatchEvents over 2 and 3 shards: a live stream starts where each shard's
// log ends (what was said before it is not its own), and its cursor (its
// place in every shard's log, even one it has seen nothing of yet) resumes
// on another node after a cut with exactly the events it missed, from
// users of every shard, each user's in order, while more keep coming;
// then live ones, nothing twice.
func TestShardsWatchEventsResume(t *testing.T) {
	for _, shards := range []int{2, 3} {
		t.Run(fmt.Sprint(shards, "shards"), func(t *testing.T) {
			_, url := startShards(t, shards)
			n := startEngineNodes(t, 2, "--redis-url", url, "--upstream-users", "merchant-*", "--upstream-rate", "0")
			sp := &speakers{}
			var first []int // the clients of shard 0's users
			for k, us := range usersOn(shards, 2, "merchant-") {
				for j, u := range us {
					if k == 0 {
						first = append(first, len(sp.cs))
					}
					sp.users = append(sp.users, u)
					sp.cs = append(sp.cs, n[(k+j)%2].dialEnv(t, "/"+u))
					sp.said = append(sp.said, 0)
				}
			}
			kind := pb.EventKind_EVENT_KIND_CLIENT_MESSAGE
			sp.say(2) // before the stream: not its own
			w := n[0].watchAfter(t, "", kind)
			k := sp.tracker(t)
			sp.say(5, first...) // the stream sees only shard 0's users speak
			k.takeUntil(w, sp.until(k))
			if len(k.last) > gateway.MaxCursorBytes {
				t.Errorf("a cursor over %d shards takes %d bytes: %s", shards, len(k.last), k.last)
			}
			w.cancel()
			w.end()

			sp.say(100) // while the consumer is away: over a page of the log in all
			var wg sync.WaitGroup
			wg.Add(1)
			go func() { // and while it replays
				defer wg.Done()
				sp.say(40)
			}()
			w = n[1].watchAfter(t, k.last, kind)
			wg.Wait()
			k.takeUntil(w, sp.until(k))
			sp.say(2)
			k.takeUntil(w, sp.until(k))

			// From "0": every kept event of every shard.
			all := &saidTracker{t: t, next: map[string]int{}}
			for _, u := range sp.users {
				all.next[u] = 0
			}
			all.takeUntil(n[0].watchAfter(t, "0", kind), sp.until(all))
			if got := n[1].metric(t, "pushgate_events_replayed_total"); got < 100*float64(len(sp.users)) {
				t.Fatalf("pushgate_events_replayed_total = %v, want at least %d", got, 100*len(sp.users))
			}
		})
	}
}

// oldestCursor reads the OUT_OF_RANGE answer to a WatchEvents call from
// cursor, and returns its oldest_cursor's positions.
func oldestCursor(t *testing.T, s *testServer, cursor string) (string, []gateway.LogPos) {
	t.Helper()
	st := status.Convert(s.watchAfter(t, cursor, pb.EventKind_EVENT_KIND_CLIENT_MESSAGE).end())
	if st.Code() != codes.OutOfRange || !strings.HasPrefix(st.Message(), "after_cursor: ") {
		t.Fatalf("cursor trimmed on one shard: %v, want OUT_OF_RANGE naming after_cursor", st.Err())
	}
	var oldest string
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			oldest = info.GetMetadata()["oldest_cursor"]
		}
	}
	ps, err := gateway.ParseCursors(oldest)
	if err != nil || !strings.Contains(st.Message(), oldest) {
		t.Fatalf("oldest_cursor %q (%v) in %q", oldest, err, st.Message())
	}
	return oldest, ps
}

// One shard no longer keeps its part of a cursor: OUT_OF_RANGE, whose
// oldest_cursor keeps the other shard's position and starts the trimmed
// one at its oldest kept event. So too when the stream started while that
// shard's log was empty and it has been trimmed since. A cursor of
// another layout (one Redis's) is out of range too.
func TestShardsEventCursorOutOfRange(t *testing.T) {
	_, url := startShards(t, 2)
	s := startEngineNodes(t, 1, "--redis-url", url, "--upstream-users", "merchant-*", "--upstream-rate", "0", "--event-log-max", "20")[0]
	us := usersOn(2, 1, "merchant-")
	quiet, busy := us[0][0], us[1][0]
	kind := pb.EventKind_EVENT_KIND_CLIENT_MESSAGE
	cq := s.dialEnv(t, "/"+quiet)
	w := s.watchAfter(t, "", kind) // shard 1's log is empty yet
	cq.say(0, 3)
	k := &saidTracker{t: t, next: map[string]int{quiet: 0, busy: 0}}
	k.takeUntil(w, func() bool { return k.next[quiet] == 3 })
	fromEmpty := k.last

	cb := s.dialEnv(t, "/"+busy)
	cb.say(0, 5)
	r := s.watchAfter(t, fromEmpty, kind) // nothing trimmed yet: all of it
	kr := &saidTracker{t: t, next: map[string]int{quiet: 3, busy: 0}}
	kr.takeUntil(r, func() bool { return kr.next[busy] == 5 })
	cb.say(5, 45) // shard 1 keeps the last 20: 30 to 49
	oldest, ps := oldestCursor(t, s, fromEmpty)
	if at, _ := gateway.ParseCursors(fromEmpty); ps[0] != at[0] || ps[1] != (gateway.LogPos{}) {
		t.Fatalf("oldest_cursor positions %v, want shard 0's kept (%v) and shard 1 from its oldest", ps, at[0])
	}
	r = s.watchAfter(t, oldest, kind)
	kr = &saidTracker{t: t, next: map[string]int{quiet: 3, busy: 30}}
	kr.takeUntil(r, func() bool { return kr.next[busy] == 50 })

	// A cursor whose position in shard 1 was trimmed since.
	k.takeUntil(w, func() bool { return k.next[busy] == 50 })
	cursor := k.last
	cb.say(50, 30) // shard 1 keeps 60 to 79
	cq.say(3, 2)
	oldest, ps = oldestCursor(t, s, cursor)
	if at, _ := gateway.ParseCursors(cursor); ps[0] != at[0] || ps[1] != (gateway.LogPos{}) {
		t.Fatalf("oldest_cursor positions %v, want shard 0's kept (%v) and shard 1 from its oldest", ps, at[0])
	}
	// From it: the quiet shard's 2 after the cursor, the busy one's kept 20.
	r = s.watchAfter(t, oldest, kind)
	kr = &saidTracker{t: t, next: map[string]int{quiet: 3, busy: 60}}
	kr.takeUntil(r, func() bool { return kr.next[quiet] == 5 && kr.next[busy] == 80 })
	if n := s.metric(t, "pushgate_event_cursor_out_of_range_total"); n != 2 {
		t.Fatalf("pushgate_event_cursor_out_of_range_total = %v", n)
	}

	// A cursor of one Redis, before the deployment was sharded.
	single := ps[0].Epoch + "." + ps[0].Pos.String()
	if err := s.watchAfter(t, single, kind).end(); status.Code(err) != codes.OutOfRange || !strings.Contains(err.Error(), "another layout") {
		t.Fatalf("one-log cursor over shards: %v, want OUT_OF_RANGE naming the layout", err)
	}
	if err := s.watchAfter(t, "Anope", kind).end(); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("bad composite cursor: %v, want INVALID_ARGUMENT", err)
	}
}

// The event webhook over 2 shards: events of users of both shards are
// posted in each user's order, each delivery following the one before;
// after every node stopped, a new one continues from the committed
// (composite) cursor, with no gap and nothing posted twice.
func TestShardsEventWebhook(t *testing.T) {
	_, url := startShards(t, 2)
	r := newHookReceiver(t, "127.0.0.1:0")
	args := append([]string{"--redis-url", url, "--node-ttl", "3s"}, hookArgs(r.url(), "--event-webhook-kinds", "client_message")...)
	nodes := startEngineNodes(t, 2, args...)
	var cs []*envClient
	for k, us := range usersOn(2, 2, "merchant-") {
		for _, u := range us {
			cs = append(cs, nodes[k].dialEnv(t, "/"+u))
		}
	}
	sayAll(cs, 0, 10)
	ds := r.waitFor(40)
	checkChain(t, ds, "")
	for _, d := range ds {
		if !gateway.IsCursors(d.Cursor) {
			t.Fatalf("delivery cursor %q is not a composite cursor", d.Cursor)
		}
	}
	delivered := func() float64 {
		return nodes[0].metric(t, "pushgate_event_webhook_delivered_total") + nodes[1].metric(t, "pushgate_event_webhook_delivered_total")
	}
	eventually(t, "40 deliveries counted", func() bool { return delivered() == 40 })
	for _, c := range cs {
		c.c.CloseNow()
	}
	nodes[0].stop(t)
	nodes[1].stop(t)

	n := startEngineNodes(t, 1, args...)[0]
	cs = cs[:0]
	for _, us := range usersOn(2, 2, "merchant-") {
		for _, u := range us {
			cs = append(cs, n.dialEnv(t, "/"+u))
		}
	}
	sayAll(cs, 10, 5)
	ds = r.waitFor(60)
	checkChain(t, ds, "")
	eventually(t, "20 deliveries counted", func() bool { return n.metric(t, "pushgate_event_webhook_delivered_total") >= 20 })
	if len(ds) != 60 || n.metric(t, "pushgate_event_webhook_delivered_total") != 20 {
		t.Fatalf("%d deliveries, the new node made %v", len(ds), n.metric(t, "pushgate_event_webhook_delivered_total"))
	}
}
