package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"pushgate/gateway/redisengine/redistest"
	pb "pushgate/gen/pushgate/v1"
	"pushgate/internal/eventsink"
	"pushgate/internal/webhook"
)

const hookSecret = "k3Jq9Zr0-event-hook-secret-0cf7a1d4e2b8"

// hookReceiver is an HTTP server that takes the event webhook's POSTs,
// checks each signature, and records the deliveries in arrival order.
type hookReceiver struct {
	t    testing.TB
	ln   net.Listener
	srv  *http.Server
	hold chan struct{} // while open, each POST waits (a slow receiver)

	mu   sync.Mutex
	got  []hookDelivery
	bad  []string
	seen map[string]bool
}

type hookDelivery struct {
	eventsink.Delivery
	ev *pb.Event
}

// newHookReceiver listens on addr ("127.0.0.1:0" for any port).
func newHookReceiver(t testing.TB, addr string) *hookReceiver {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	r := &hookReceiver{t: t, ln: ln, seen: map[string]bool{}}
	r.srv = &http.Server{Handler: http.HandlerFunc(r.serve)}
	go r.srv.Serve(ln)
	t.Cleanup(r.close)
	return r
}

func (r *hookReceiver) close() { r.srv.Close() }

func (r *hookReceiver) url() string { return "http://" + r.ln.Addr().String() + "/events" }

func (r *hookReceiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	hold := r.hold
	r.mu.Unlock()
	if hold != nil {
		<-hold
	}
	if err := webhook.Verify([]byte(hookSecret), req.Header.Get(webhook.Header), body, time.Now(), 5*time.Minute); err != nil {
		r.mu.Lock()
		r.bad = append(r.bad, err.Error())
		r.mu.Unlock()
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	var d hookDelivery
	if err := json.Unmarshal(body, &d.Delivery); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	d.ev = &pb.Event{}
	if err := protojson.Unmarshal(d.Event, d.ev); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	if !r.seen[d.Cursor] { // a receiver dedupes by cursor
		r.seen[d.Cursor] = true
		r.got = append(r.got, d)
	}
	r.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (r *hookReceiver) deliveries() []hookDelivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.bad) > 0 {
		r.t.Fatalf("bad signatures: %v", r.bad)
	}
	return append([]hookDelivery(nil), r.got...)
}

func (r *hookReceiver) waitFor(n int) []hookDelivery {
	r.t.Helper()
	eventually(r.t, fmt.Sprintf("%d webhook deliveries", n), func() bool { return len(r.deliveries()) >= n })
	return r.deliveries()
}

// checkChain checks that each delivery follows the one before it (no gap)
// and that each user's client messages are numbered in order.
func checkChain(t testing.TB, ds []hookDelivery, follows string) {
	t.Helper()
	next := map[string]int{}
	for i, d := range ds {
		if d.Follows != follows || d.Dropped != 0 {
			t.Fatalf("delivery %d follows %q (dropped %d), want %q", i, d.Follows, d.Dropped, follows)
		}
		if d.ev.GetCursor() != d.Cursor {
			t.Fatalf("delivery %d: cursor %q, event's %q", i, d.Cursor, d.ev.GetCursor())
		}
		follows = d.Cursor
		if cm := d.ev.GetClientMessage(); cm != nil {
			u := cm.GetUserId()
			if cm.GetJson() != fmt.Sprint(next[u]) {
				t.Fatalf("delivery %d: %s said %s, want %d", i, u, cm.GetJson(), next[u])
			}
			next[u]++
		}
	}
}

func hookArgs(url string, more ...string) []string {
	return append([]string{"--event-webhook-url", url, "--event-webhook-secret", hookSecret,
		"--upstream-users", "merchant-*", "--upstream-rate", "0"}, more...)
}

// The receiver is down for a while, then up: every event arrives, in
// order, each user's in order, with a valid signature.
func TestEventWebhookReceiverDownThenUp(t *testing.T) {
	down, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := down.Addr().String()
	down.Close() // connections refused until the receiver starts
	s := startServer(t, hookArgs("http://"+addr+"/events")...)
	a := s.dialEnv(t, "/merchant-1")
	b := s.dialEnv(t, "/merchant-2")
	for i := range 30 {
		a.say(i, 1)
		b.say(i, 1)
	}
	eventually(t, "failed deliveries", func() bool { return s.metric(t, "pushgate_event_webhook_failures_total") >= 3 })

	r := newHookReceiver(t, addr)
	ds := r.waitFor(62) // two online events, sixty client messages
	checkChain(t, ds, "")
	if ds[0].ev.GetUserOnline().GetUserId() != "merchant-1" || ds[1].ev.GetUserOnline().GetUserId() != "merchant-2" {
		t.Fatalf("first deliveries %v, %v", ds[0].ev, ds[1].ev)
	}
	// Then live.
	a.say(30, 1)
	checkChain(t, r.waitFor(63), "")
	if n := s.metric(t, "pushgate_event_webhook_dropped_total"); n != 0 {
		t.Fatalf("dropped %v", n)
	}
}

// A receiver that does not answer: the sink's queue fills, events past it
// are dropped and counted, the next delivery says so, and neither clients
// nor WatchEvents streams wait for it.
func TestEventWebhookSlowReceiverDropsPastQueue(t *testing.T) {
	r := newHookReceiver(t, "127.0.0.1:0")
	release := make(chan struct{})
	r.hold = release
	s := startServer(t, hookArgs(r.url(), "--event-webhook-queue", "10", "--event-webhook-kinds", "client_message", "--event-webhook-timeout", "1m")...)
	c := s.dialEnv(t, "/merchant-1")
	w := s.watchAfter(t, "", pb.EventKind_EVENT_KIND_CLIENT_MESSAGE)
	const n = 100
	start := time.Now()
	c.say(0, n)
	w.expectSaid(0, n) // the stream is not held up by the webhook
	phone := s.dial(t, "merchant-1-phone")
	if _, err := s.api.SendToUser(t.Context(), &pb.SendToUserRequest{UserId: "merchant-1-phone", Message: textMsg("hi")}); err != nil {
		t.Fatal(err)
	}
	phone.expect("hi")
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("clients and streams took %v with a stuck webhook", d)
	}
	// One in flight, ten queued, the rest dropped.
	eventually(t, "drops counted", func() bool {
		return s.metric(t, "pushgate_event_webhook_dropped_total")+s.metric(t, "pushgate_event_webhook_queue") == n-1
	})
	if q := s.metric(t, "pushgate_event_webhook_queue"); q != 10 {
		t.Fatalf("queue %v, want 10", q)
	}
	dropped := s.metric(t, "pushgate_event_webhook_dropped_total")
	close(release)
	eventually(t, "queue delivered", func() bool {
		return s.metric(t, "pushgate_event_webhook_delivered_total") == n-dropped
	})
	// One more event: its delivery announces the drops just before it.
	c.say(n, 1)
	defer func() {
		if t.Failed() {
			t.Logf("got %d; logs:\n%s", len(r.deliveries()), s.logs.String())
		}
	}()
	ds := r.waitFor(n - int(dropped) + 1)
	follows, sum, last := "", int64(0), -1
	for i, d := range ds {
		var k int
		fmt.Sscan(d.ev.GetClientMessage().GetJson(), &k)
		if k <= last {
			t.Fatalf("delivery %d: message %d after %d", i, k, last)
		}
		if gap := k - last - 1; int64(gap) != d.Dropped || (gap > 0) == (d.Follows == follows) {
			t.Fatalf("delivery %d (message %d after %d): dropped %d, follows %q (previous %q)", i, k, last, d.Dropped, d.Follows, follows)
		}
		sum += d.Dropped
		follows, last = d.Cursor, k
	}
	if float64(sum) != dropped || last != n {
		t.Fatalf("deliveries announce %d drops up to message %d; counted %v", sum, last, dropped)
	}
}

// With the Redis engine one node delivers (the lease) and the committed
// cursor is in Redis: the nodes are restarted and a new one continues
// after the last event delivered, with nothing twice and nothing missed.
func TestEventWebhookRedisLeaseSurvivesRestart(t *testing.T) {
	rd := redistest.Start(t)
	r := newHookReceiver(t, "127.0.0.1:0")
	args := append([]string{"--redis-url", rd.URL(), "--node-ttl", "3s"}, hookArgs(r.url(), "--event-webhook-kinds", "client_message")...)
	nodes := startEngineNodes(t, 2, args...)
	c := nodes[0].dialEnv(t, "/merchant-1")
	c.say(0, 40)
	ds := r.waitFor(40)
	checkChain(t, ds, "")
	// A node counts a delivery once the receiver has answered it: the
	// count may trail what the receiver saw by a moment.
	delivered := func() (float64, float64) {
		return nodes[0].metric(t, "pushgate_event_webhook_delivered_total"), nodes[1].metric(t, "pushgate_event_webhook_delivered_total")
	}
	eventually(t, "40 deliveries counted", func() bool { a, b := delivered(); return a+b == 40 })
	if a, b := delivered(); a*b != 0 {
		t.Fatalf("nodes delivered %v and %v, want one node all 40", a, b)
	}
	c.c.CloseNow()
	nodes[0].stop(t)
	nodes[1].stop(t)

	n := startEngineNodes(t, 1, args...)[0]
	c = n.dialEnv(t, "/merchant-1")
	c.say(40, 20)
	ds = r.waitFor(60)
	checkChain(t, ds, "")
	eventually(t, "20 deliveries counted", func() bool { return n.metric(t, "pushgate_event_webhook_delivered_total") >= 20 })
	if len(ds) != 60 || n.metric(t, "pushgate_event_webhook_delivered_total") != 20 {
		t.Fatalf("%d deliveries, the new node made %v", len(ds), n.metric(t, "pushgate_event_webhook_delivered_total"))
	}
}

// The receiver of docs/events.md (examples/webhook-receiver/receiver.py,
// the same text) verifies real deliveries and refuses a forged one.
func TestEventWebhookExampleReceiver(t *testing.T) {
	src, err := os.ReadFile("../../examples/webhook-receiver/receiver.py")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile("../../docs/events.md")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(doc, []byte("```python\n"+string(src)+"```")) {
		t.Fatal("docs/events.md does not show examples/webhook-receiver/receiver.py as it is")
	}
	if _, err := exec.LookPath("python3"); err != nil {
		missingToolchain(t, "python3 not found", "python3")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cmd := exec.Command("python3", "../../examples/webhook-receiver/receiver.py", fmt.Sprint(port))
	cmd.Env = append(os.Environ(), "PUSHGATE_EVENT_WEBHOOK_SECRET="+hookSecret)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	url := fmt.Sprintf("http://127.0.0.1:%d/events", port)
	eventually(t, "the receiver to listen", func() bool {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	// A forged delivery is refused and not handled.
	resp, err := http.Post(url, "application/json", strings.NewReader(`{"cursor":"x","follows":"","event":{}}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("forged delivery: %s, want 401", resp.Status)
	}

	s := startServer(t, hookArgs(url, "--event-webhook-kinds", "client_message")...)
	c := s.dialEnv(t, "/merchant-1")
	c.say(0, 3)
	for i := range 3 {
		select {
		case l := <-lines:
			f := strings.Fields(l)
			if len(f) < 3 || f[1] != "clientMessage" || !strings.Contains(l, fmt.Sprintf(`"json": "%d"`, i)) || !strings.Contains(l, `"userId": "merchant-1"`) {
				t.Fatalf("receiver printed %q for message %d", l, i)
			}
		case <-time.After(waitFor):
			t.Fatalf("receiver printed nothing for message %d", i)
		}
	}
}

// The webhook was off for longer than the log keeps: it goes on from the
// oldest kept event, and the delivery says the events before it are
// unknown (follows "").
func TestEventWebhookRedisCursorTrimmed(t *testing.T) {
	rd := redistest.Start(t)
	r := newHookReceiver(t, "127.0.0.1:0")
	base := []string{"--redis-url", rd.URL(), "--event-log-max", "20", "--upstream-users", "merchant-*", "--upstream-rate", "0"}
	hook := append(append([]string{}, base...), "--event-webhook-url", r.url(), "--event-webhook-secret", hookSecret, "--event-webhook-kinds", "client_message")
	b := startEngineNodes(t, 1, base...)[0] // no webhook
	a := startEngineNodes(t, 1, hook...)[0]
	c := b.dialEnv(t, "/merchant-1")
	c.say(0, 5)
	checkChain(t, r.waitFor(5), "")
	a.stop(t)

	c.say(5, 50) // the log keeps the last 20

	n := startEngineNodes(t, 1, hook...)[0]
	ds := r.waitFor(25)
	if len(ds) != 25 || ds[5].Follows != "" || ds[5].Dropped != 0 || ds[5].ev.GetClientMessage().GetJson() != "35" {
		t.Fatalf("%d deliveries; the first after the gap: %+v %v", len(ds), ds[5].Delivery, ds[5].ev)
	}
	for i := 6; i < len(ds); i++ {
		if ds[i].Follows != ds[i-1].Cursor || ds[i].ev.GetClientMessage().GetJson() != fmt.Sprint(30+i) {
			t.Fatalf("delivery %d: %+v %v", i, ds[i].Delivery, ds[i].ev)
		}
	}
	if g := n.metric(t, "pushgate_event_webhook_gaps_total"); g != 1 {
		t.Fatalf("pushgate_event_webhook_gaps_total = %v", g)
	}
}
