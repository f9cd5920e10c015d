package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"pushgate/gateway/redisengine/redistest"
	pb "pushgate/gen/pushgate/v1"
)

// cursorWatcher reads a WatchEvents stream opened with after_cursor; err
// is how it ended.
type cursorWatcher struct {
	t      testing.TB
	ch     chan *pb.Event
	err    error // set before ch is closed
	cancel context.CancelFunc
}

// watchAfter opens WatchEvents with after_cursor (its headers received:
// the watch is in place).
func (s *testServer) watchAfter(t testing.TB, cursor string, kinds ...pb.EventKind) *cursorWatcher {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	st, err := s.api.WatchEvents(ctx, &pb.WatchEventsRequest{Kinds: kinds, AfterCursor: cursor})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Header(); err != nil {
		t.Fatal(err)
	}
	w := &cursorWatcher{t: t, ch: make(chan *pb.Event, 4096), cancel: cancel}
	go func() {
		defer close(w.ch)
		for {
			e, err := st.Recv()
			if err != nil {
				w.err = err
				return
			}
			w.ch <- e
		}
	}()
	return w
}

func (w *cursorWatcher) next() *pb.Event {
	w.t.Helper()
	select {
	case e, ok := <-w.ch:
		if !ok {
			w.t.Fatalf("event stream ended: %v", w.err)
		}
		return e
	case <-time.After(waitFor):
		w.t.Fatal("no event")
	}
	return nil
}

// end waits for the stream to end and returns its error.
func (w *cursorWatcher) end() error {
	w.t.Helper()
	deadline := time.After(waitFor)
	for {
		select {
		case _, ok := <-w.ch:
			if !ok {
				return w.err
			}
		case <-deadline:
			w.t.Fatal("stream did not end")
		}
	}
}

// say sends n client messages upstream from c, numbered from first, each
// confirmed by the server: one event each.
func (e *envClient) say(first, n int) {
	e.t.Helper()
	for i := first; i < first+n; i++ {
		e.send(map[string]any{"op": "send", "type": "n", "data": i, "ref": i})
		if f := e.next(); f.Op != "sent" {
			e.t.Fatalf("send %d: got %+v, want sent", i, f)
		}
	}
}

// expectSaid reads n events that must be client messages numbered from
// first, in order, and returns the last one's cursor.
func (w *cursorWatcher) expectSaid(first, n int) string {
	w.t.Helper()
	var cursor string
	for i := first; i < first+n; i++ {
		e := w.next()
		if got := e.GetClientMessage().GetJson(); got != fmt.Sprint(i) {
			w.t.Fatalf("event %d: got %v, want client message %d", i, e, i)
		}
		if e.GetCursor() == "" || len(e.GetCursor()) > 64 {
			w.t.Fatalf("event %d: cursor %q", i, e.GetCursor())
		}
		cursor = e.GetCursor()
	}
	return cursor
}

// The order service is deployed mid-stream: its WatchEvents stream is cut,
// 200 events happen, it resumes with its cursor and receives exactly those
// 200, in order, then live events; a second consumer on another cursor
// gets its own share the same way.
func TestWatchEventsResumeAfterDeploy(t *testing.T) {
	s := startServer(t, "--upstream-users", "merchant-*", "--upstream-rate", "0")
	c := s.dialEnv(t, "/merchant-1")
	orders := s.watchAfter(t, "")
	billing := s.watchAfter(t, "")
	c.say(0, 10)
	orderCursor := orders.expectSaid(0, 10)
	billingCursor := billing.expectSaid(0, 4) // billing handled fewer before it went down
	orders.cancel()
	billing.cancel()
	orders.end()
	billing.end()

	c.say(10, 200)

	orders = s.watchAfter(t, orderCursor)
	billing = s.watchAfter(t, billingCursor)
	orders.expectSaid(10, 200)
	billing.expectSaid(4, 206)
	// Then live, and nothing twice.
	c.say(210, 3)
	orders.expectSaid(210, 3)
	billing.expectSaid(210, 3)
	if n := s.metric(t, "pushgate_event_replays_total"); n != 2 {
		t.Fatalf("pushgate_event_replays_total = %v, want 2", n)
	}
	if n := s.metric(t, "pushgate_events_replayed_total"); n != 406 {
		t.Fatalf("pushgate_events_replayed_total = %v, want 406", n)
	}
}

// A resume races live events: events keep coming while the stream replays,
// and each arrives once, in order.
func TestWatchEventsResumeWhileEventsFlow(t *testing.T) {
	s := startServer(t, "--upstream-users", "merchant-*", "--upstream-rate", "0")
	c := s.dialEnv(t, "/merchant-1")
	w := s.watchAfter(t, "", pb.EventKind_EVENT_KIND_CLIENT_MESSAGE)
	c.say(0, 1)
	cursor := w.expectSaid(0, 1)
	w.cancel()
	w.end()
	c.say(1, 600) // more than one page of the log
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.say(601, 300)
	}()
	w = s.watchAfter(t, cursor, pb.EventKind_EVENT_KIND_CLIENT_MESSAGE)
	w.expectSaid(1, 900)
	<-done
	c.say(901, 1)
	w.expectSaid(901, 1)
}

// A cursor whose events are no longer all kept gets OUT_OF_RANGE with the
// oldest cursor kept, from which the consumer can start again; "0" starts
// at the oldest; a cursor that is not one is INVALID_ARGUMENT.
func TestWatchEventsCursorOutOfRange(t *testing.T) {
	s := startServer(t, "--upstream-users", "merchant-*", "--upstream-rate", "0", "--event-log-max", "50")
	c := s.dialEnv(t, "/merchant-1") // one online event
	w := s.watchAfter(t, "", pb.EventKind_EVENT_KIND_CLIENT_MESSAGE)
	c.say(0, 1)
	first := w.expectSaid(0, 1)
	c.say(1, 99)
	w.expectSaid(1, 99)

	err := s.watchAfter(t, first).end()
	st := status.Convert(err)
	if st.Code() != codes.OutOfRange || !strings.HasPrefix(st.Message(), "after_cursor: ") {
		t.Fatalf("old cursor: %v, want OUT_OF_RANGE naming after_cursor", err)
	}
	var oldest string
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			oldest = info.GetMetadata()["oldest_cursor"]
		}
	}
	if oldest == "" || !strings.Contains(st.Message(), oldest) {
		t.Fatalf("no oldest_cursor in %v", st.Proto())
	}
	if n := s.metric(t, "pushgate_event_cursor_out_of_range_total"); n != 1 {
		t.Fatalf("pushgate_event_cursor_out_of_range_total = %v", n)
	}
	// The log kept the last 50 events: the 50 newest client messages.
	from := s.watchAfter(t, "0")
	from.expectSaid(50, 50)
	if n := s.metric(t, "pushgate_event_log_entries"); n != 50 {
		t.Fatalf("pushgate_event_log_entries = %v, want 50", n)
	}
	// From the oldest cursor: the 49 after it.
	s.watchAfter(t, oldest).expectSaid(51, 49)

	// A cursor of another log (a lost one, or another deployment's).
	other := "ZZZZZZZZZZ" + oldest[strings.Index(oldest, "."):]
	if err := s.watchAfter(t, other).end(); status.Code(err) != codes.OutOfRange {
		t.Fatalf("cursor of another epoch: %v, want OUT_OF_RANGE", err)
	}
	for _, bad := range []string{"nope", "x.1", "e.1-2-3", strings.Repeat("a", 65)} {
		err := s.watchAfter(t, bad).end()
		if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.HasPrefix(st.Message(), "after_cursor: ") {
			t.Fatalf("cursor %q: %v, want INVALID_ARGUMENT after_cursor", bad, err)
		}
	}
}

// A consumer too slow for its buffer is cut, as before, and resumes from
// the last event it handled without a gap.
func TestSlowWatcherCutThenResumes(t *testing.T) {
	s := startServer(t, "--upstream-users", "merchant-*", "--upstream-rate", "0", "--watch-buffer", "8")
	c := s.dialEnv(t, "/merchant-1")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := s.api.WatchEvents(ctx, &pb.WatchEventsRequest{Kinds: []pb.EventKind{pb.EventKind_EVENT_KIND_CLIENT_MESSAGE}}, grpc.MaxCallRecvMsgSize(1<<20))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Header(); err != nil {
		t.Fatal(err)
	}
	// The consumer reads nothing while events pile up past its buffer and
	// what the transport holds.
	pad := strings.Repeat("x", 2000)
	n := 0
	for s.metric(t, "pushgate_watchers_cut_total") == 0 {
		if n >= 5000 {
			t.Fatal("watcher not cut after 5000 events")
		}
		for range 50 {
			c.send(map[string]any{"op": "send", "type": "n", "data": map[string]any{"i": n, "pad": pad}, "ref": n})
			if f := c.next(); f.Op != "sent" {
				t.Fatalf("send %d: %+v", n, f)
			}
			n++
		}
	}
	// It handles what reached it, then learns it was cut.
	cursor, got := "", 0
	for {
		e, err := st.Recv()
		if err != nil {
			if status.Code(err) != codes.ResourceExhausted {
				t.Fatalf("stream ended with %v, want RESOURCE_EXHAUSTED", err)
			}
			break
		}
		if want := fmt.Sprintf(`{"i":%d,`, got); !strings.HasPrefix(e.GetClientMessage().GetJson(), want) {
			t.Fatalf("event %d: %.40s", got, e.GetClientMessage().GetJson())
		}
		cursor = e.GetCursor()
		got++
	}
	if cursor == "" {
		cursor = "0" // nothing reached it: from the start of the log
	}
	w := s.watchAfter(t, cursor, pb.EventKind_EVENT_KIND_CLIENT_MESSAGE)
	for ; got < n; got++ {
		e := w.next()
		if want := fmt.Sprintf(`{"i":%d,`, got); !strings.HasPrefix(e.GetClientMessage().GetJson(), want) {
			t.Fatalf("resumed event %d: %.40s", got, e.GetClientMessage().GetJson())
		}
	}
	c.say(n, 1)
	w.expectSaid(n, 1)
}

// With the Redis engine the log is shared by the nodes and outlives them:
// the order service's node is restarted, 200 events happen on another
// node meanwhile, and the consumer resumes on the restarted node with its
// cursor. When Redis loses its data the log is gone: the cursor gets
// OUT_OF_RANGE.
func TestEventLogRedisNodeRestart(t *testing.T) {
	r := redistest.Start(t)
	args := []string{"--redis-url", r.URL(), "--upstream-users", "merchant-*", "--upstream-rate", "0"}
	a := startEngineNodes(t, 1, args...)[0]
	b := startEngineNodes(t, 1, args...)[0]
	c := b.dialEnv(t, "/merchant-1")
	w := a.watchAfter(t, "", pb.EventKind_EVENT_KIND_CLIENT_MESSAGE)
	c.say(0, 5)
	cursor := w.expectSaid(0, 5)
	a.stop(t)

	c.say(5, 200)

	a = startEngineNodes(t, 1, args...)[0]
	w = a.watchAfter(t, cursor, pb.EventKind_EVENT_KIND_CLIENT_MESSAGE)
	w.expectSaid(5, 200)
	c.say(205, 2)
	cursor = w.expectSaid(205, 2)
	w.cancel()
	w.end()

	r.Restart() // its data is gone, and with it the log
	eventually(t, "node a back on the new redis", func() bool {
		return a.metric(t, "pushgate_redis_reconnects_total") >= 1 && readyz(t, a) == 200
	})
	err := a.watchAfter(t, cursor).end()
	if st := status.Convert(err); st.Code() != codes.OutOfRange {
		t.Fatalf("cursor of a lost log: %v, want OUT_OF_RANGE", err)
	}
}

// The log keeps events for --event-log-retention, and the newest older
// one, so a consumer that saw it before a quiet spell can still resume.
func TestEventLogRetention(t *testing.T) {
	s := startServer(t, "--upstream-users", "merchant-*", "--upstream-rate", "0", "--event-log-retention", "2s", "--node-ttl", "3s")
	c := s.dialEnv(t, "/merchant-1")
	w := s.watchAfter(t, "", pb.EventKind_EVENT_KIND_CLIENT_MESSAGE)
	c.say(0, 1)
	first := w.expectSaid(0, 1)
	c.say(1, 4)
	last := w.expectSaid(1, 4)
	w.cancel()
	eventually(t, "old events dropped", func() bool { return s.metric(t, "pushgate_event_log_entries") == 1 })
	s.watchAfter(t, "0").expectSaid(4, 1)
	if err := s.watchAfter(t, first).end(); status.Code(err) != codes.OutOfRange {
		t.Fatalf("cursor past the retention: %v, want OUT_OF_RANGE", err)
	}
	// After the quiet spell a new event comes; the one before it stays
	// (past the retention, but the newest such), for a consumer there. The
	// Redis engine trims every second (a third of the node ttl).
	c.say(5, 1)
	time.Sleep(1500 * time.Millisecond)
	if n := s.metric(t, "pushgate_event_log_entries"); n != 2 {
		t.Fatalf("pushgate_event_log_entries = %v after a trim, want 2", n)
	}
	r := s.watchAfter(t, last)
	r.expectSaid(5, 1)
	c.say(6, 1)
	r.expectSaid(6, 1)
}

// A node whose link to Redis stalls misses the events published meanwhile:
// when its subscription is back its WatchEvents streams are ended, and a
// stream that resumes from its cursor gets every event once, in order.
func TestClusterWatcherResumesAfterRedisLinkLoss(t *testing.T) {
	r := redistest.Start(t)
	p := newStallProxy(t, r.Addr())
	args := []string{"--engine", "redis", "--node-ttl", "3s", "--redis-timeout", "500ms", "--upstream-users", "merchant-*", "--upstream-rate", "0"}
	a := startServer(t, append([]string{"--redis-url", "redis://" + p.addr() + "/0"}, args...)...)
	b := startServer(t, append([]string{"--redis-url", r.URL()}, args...)...)
	c := b.dialEnv(t, "/merchant-1")
	w := a.watchAfter(t, "", pb.EventKind_EVENT_KIND_CLIENT_MESSAGE)
	c.say(0, 5)
	cursor := w.expectSaid(0, 5)

	p.stall()
	eventually(t, "node a to count itself cut off", func() bool { return readyz(t, a) == 503 })
	c.say(5, 20)
	p.thaw()

	next := 5
	deadline := time.After(waitFor)
	for ended := false; !ended; { // whatever reached it, in order, then the cut
		select {
		case e, ok := <-w.ch:
			if !ok {
				ended = true
				break
			}
			if got := e.GetClientMessage().GetJson(); got != fmt.Sprint(next) {
				t.Fatalf("before the cut: got %s, want %d", got, next)
			}
			cursor = e.GetCursor()
			next++
		case <-deadline:
			t.Fatalf("stream not ended after the link came back (%d events reached it)", next-5)
		}
	}
	if status.Code(w.err) != codes.ResourceExhausted {
		t.Fatalf("stream ended with %v, want RESOURCE_EXHAUSTED", w.err)
	}
	eventually(t, "node a ready again", func() bool { return readyz(t, a) == 200 })
	w = a.watchAfter(t, cursor, pb.EventKind_EVENT_KIND_CLIENT_MESSAGE)
	w.expectSaid(next, 25-next)
	c.say(25, 1)
	w.expectSaid(25, 1)
}
