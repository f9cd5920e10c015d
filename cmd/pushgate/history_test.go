package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"pushgate/gateway/redisengine/redistest"
	pb "pushgate/gen/pushgate/v1"
	"pushgate/internal/config"
)

// Topic history and resume (PROTOCOL.md, "Topic history and resume").

// publishSeq publishes {"seq":i} to topic for i in [from, to), every
// gap, on api, and reports the first error (nil when all went out).
func publishSeq(api pb.PushServiceClient, topic string, from, to int, gap time.Duration) chan error {
	done := make(chan error, 1)
	go func() {
		for i := from; i < to; i++ {
			if _, err := api.Publish(context.Background(), &pb.PublishRequest{Topic: topic, Message: jsonMsg(fmt.Sprintf(`{"seq":%d}`, i))}); err != nil {
				done <- fmt.Errorf("publish %d: %w", i, err)
				return
			}
			if gap > 0 {
				time.Sleep(gap)
			}
		}
		done <- nil
	}()
	return done
}

// expectSeq reads topic messages from c and checks they are seq from, from+1,
// ... to-1, in order, once; it returns the id of the last.
func (e *envClient) expectSeq(topic string, from, to int) string {
	e.t.Helper()
	last := ""
	for want := from; want < to; want++ {
		m := e.nextMessage()
		var seq int
		if _, err := fmt.Sscanf(string(m.Data), `{"seq":%d}`, &seq); err != nil || m.Topic != topic {
			e.t.Fatalf("message %+v: want seq %d on %s", m, want, topic)
		}
		if seq != want {
			e.t.Fatalf("got seq %d, want %d (a duplicate, a gap or out of order)", seq, want)
		}
		if m.ID <= last {
			e.t.Fatalf("id %s after %s: ids must grow within a topic", m.ID, last)
		}
		last = m.ID
	}
	return last
}

// subscribedFrame returns the next frame, which must be topic's subscribed.
func (e *envClient) subscribedFrame(topic string) env {
	e.t.Helper()
	f := e.next()
	if f.Op != "subscribed" || f.Topic != topic {
		e.t.Fatalf("got %+v, want subscribed %s", f, topic)
	}
	return f
}

// A page cut off for 5 s while 50 messages are published to its topic
// gets all 50 after it reconnects with its position, in order and once,
// then live ones, including those published while it reconnected.
func TestTopicResumeAfterCut(t *testing.T) {
	s := startServer(t, "--topic-history", "todo:*=100/10m")
	proxy := newCutProxy(t, s.app.HTTPAddr())
	const topic = "todo:team-7"
	base := "ws://" + proxy.ln.Addr().String() + "/ws/page?topics=" + topic

	c := dialEnv(t, base)
	sub := c.subscribedFrame(topic)
	if sub.Epoch == "" || sub.Recovered != nil {
		t.Fatalf("subscribed %+v: want an epoch (the topic keeps history) and no recovered (no position given)", sub)
	}
	if err := <-publishSeq(s.api, topic, 0, 10, 0); err != nil {
		t.Fatal(err)
	}
	last := c.expectSeq(topic, 0, 10)
	if n := proxy.cut(); n != 1 {
		t.Fatalf("cut %d connections, want 1", n)
	}
	if _, err := c.waitEnd(); err == nil {
		t.Fatal("connection did not end with the cut")
	}

	// 5 s away, while 50 messages are published.
	if err := <-publishSeq(s.api, topic, 10, 60, 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	// More are published while the page reconnects: none may overtake the
	// replay, none may come twice.
	live := publishSeq(s.api, topic, 60, 90, 2*time.Millisecond)
	c = dialEnv(t, base+"&topic_last_ids="+url.QueryEscape(topic+"="+last+"."+sub.Epoch))
	f := c.subscribedFrame(topic)
	if f.Recovered == nil || !*f.Recovered || f.Replayed < 50 || f.Epoch != sub.Epoch {
		t.Fatalf("subscribed %+v: want recovered true, at least the 50 missed replayed, epoch %s", f, sub.Epoch)
	}
	c.expectSeq(topic, 10, 90)
	if err := <-live; err != nil {
		t.Fatal(err)
	}
	if _, err := s.api.Publish(context.Background(), &pb.PublishRequest{Topic: topic, Message: jsonMsg(`{"seq":90}`)}); err != nil {
		t.Fatal(err)
	}
	c.expectSeq(topic, 90, 91) // nothing twice before it
	if v := s.metric(t, "pushgate_topic_history_stored_total"); v != 91 {
		t.Fatalf("pushgate_topic_history_stored_total = %v, want 91", v)
	}
	if v := s.metric(t, "pushgate_topic_history_replayed_total"); v < 50 {
		t.Fatalf("pushgate_topic_history_replayed_total = %v, want at least 50", v)
	}
}

// A cut longer than the history (more messages than it keeps, or older
// than its ttl), or a position from another epoch, says recovered: false;
// a topic without history too.
func TestTopicResumeBeyondHistoryNotRecovered(t *testing.T) {
	s := startServer(t, "--topic-history", "todo:*=5/10m,brief:*=100/1s")
	ctx := context.Background()
	var ids []string
	for i := range 8 {
		r, err := s.api.Publish(ctx, &pb.PublishRequest{Topic: "todo:1", Message: jsonMsg(fmt.Sprintf(`{"seq":%d}`, i))})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, r.GetMessageId())
	}
	c := s.dialEnv(t, "/u")
	// Over the count: seq 0, 1 and 2 were trimmed to keep 5, so a client
	// that has seq 0 missed two.
	c.send(map[string]any{"op": "subscribe", "topic": "todo:1", "last_id": ids[0], "ref": "s1"})
	f := c.subscribedFrame("todo:1")
	if string(f.Ref) != `"s1"` || f.Recovered == nil || *f.Recovered || f.Replayed != 5 {
		t.Fatalf("resume from before trimmed messages: %+v, want ref s1, recovered false, replayed 5", f)
	}
	epoch := f.Epoch
	c.expectSeq("todo:1", 3, 8)
	c.send(map[string]any{"op": "unsubscribe", "topic": "todo:1"})
	if f := c.next(); f.Op != "unsubscribed" {
		t.Fatalf("got %+v, want unsubscribed", f)
	}
	// From after the trimmed ones, with the epoch: complete.
	c.send(map[string]any{"op": "subscribe", "topic": "todo:1", "last_id": ids[2], "epoch": epoch})
	if f := c.subscribedFrame("todo:1"); f.Recovered == nil || !*f.Recovered || f.Replayed != 5 {
		t.Fatalf("resume after the trimmed ones: %+v, want recovered true, replayed 5", f)
	}
	c.expectSeq("todo:1", 3, 8)

	// Another epoch (a history that was lost) cannot be vouched for.
	c2 := s.dialEnv(t, "/u?topics=todo:1&topic_last_ids="+url.QueryEscape("todo:1="+ids[7]+".OTHEREPOCH"))
	if f := c2.subscribedFrame("todo:1"); f.Recovered == nil || *f.Recovered || f.Replayed != 0 {
		t.Fatalf("resume from another epoch: %+v, want recovered false, nothing replayed", f)
	}

	// Older than the ttl: the message expired.
	r, err := s.api.Publish(ctx, &pb.PublishRequest{Topic: "brief:1", Message: jsonMsg(`{"seq":0}`)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.api.Publish(ctx, &pb.PublishRequest{Topic: "brief:1", Message: jsonMsg(`{"seq":1}`)}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the brief message to expire", func() bool {
		f := s.resumeTopic(t, "brief:1", r.GetMessageId())
		return f.Recovered != nil && !*f.Recovered && f.Replayed == 0
	})
	c3 := s.dialEnv(t, "/u")
	if v := s.metric(t, `pushgate_topic_history_dropped_total{reason="trimmed"}`); v != 3 {
		t.Fatalf("trimmed = %v, want 3", v)
	}

	// A topic without history keeps nothing: a position in it is a loss.
	c3.send(map[string]any{"op": "subscribe", "topic": "live:1", "last_id": ids[0]})
	if f := c3.subscribedFrame("live:1"); f.Recovered == nil || *f.Recovered || f.Epoch != "" {
		t.Fatalf("position in a topic without history: %+v, want recovered false and no epoch", f)
	}
	// Without a position it is subscribed as ever.
	c3.send(map[string]any{"op": "subscribe", "topic": "live:2"})
	if f := c3.subscribedFrame("live:2"); f.Recovered != nil || f.Epoch != "" {
		t.Fatalf("subscribe to a live topic: %+v", f)
	}
}

// Bad positions get errors that name what is wrong.
func TestTopicResumeBadPositions(t *testing.T) {
	s := startServer(t, "--topic-history", "todo:*=100/10m")
	c := s.dialEnv(t, "/u")
	for _, tc := range []struct {
		op   map[string]any
		want string
	}{
		{map[string]any{"op": "subscribe", "topic": "todo:1", "last_id": "nope", "ref": 1}, "last_id: not a message id"},
		{map[string]any{"op": "subscribe", "topic": "todo:1", "epoch": "ABC", "ref": 2}, "epoch: only with last_id"},
		{map[string]any{"op": "subscribe", "topic": "todo:1", "last_id": "01KAMX3Q4N6ZQ2V8C4P7R5T9WB", "epoch": "a b", "ref": 3}, "epoch: character ' ' not allowed"},
	} {
		c.send(tc.op)
		f := c.next()
		if f.Op != "error" || f.Code != "bad_request" || !strings.Contains(f.Message, tc.want) {
			t.Fatalf("%v: got %+v, want bad_request %q", tc.op, f, tc.want)
		}
	}
	id := "01KAMX3Q4N6ZQ2V8C4P7R5T9WB"
	for _, tc := range []struct {
		query, want string
	}{
		{"topics=todo:1&topic_last_ids=" + url.QueryEscape("todo:1=bad"), `topic_last_ids: "todo:1=bad": "bad" is not a message id`},
		{"topics=todo:1&topic_last_ids=" + url.QueryEscape("todo:2="+id), "topic_last_ids: \"todo:2=" + id + "\": todo:2 is not in topics"},
		{"topics=todo:1&topic_last_ids=todo:1", `topic_last_ids: "todo:1": want topic=last_id or topic=last_id.epoch`},
		{"topics=todo:1&topic_last_ids=" + url.QueryEscape("todo:1="+id+",todo:1="+id), "topic_last_ids: \"todo:1=" + id + "\": todo:1 given twice"},
		{"topics=todo:1&topic_last_ids=" + url.QueryEscape("todo:1="+id+".x-y"), "topic_last_ids: \"todo:1=" + id + ".x-y\": epoch: character '-' not allowed"},
	} {
		status, body := s.handshake(t, "/ws/u?protocol=pushgate.v1&"+tc.query)
		if status != http.StatusBadRequest || !strings.Contains(body, tc.want) {
			t.Fatalf("%s: %d %q, want 400 %q", tc.query, status, body, tc.want)
		}
	}
	// Raw frames carry no ids: a raw client has no position to give.
	status, body := s.handshake(t, "/ws/u?topics=todo:1&topic_last_ids="+url.QueryEscape("todo:1="+id))
	if status != http.StatusBadRequest || !strings.Contains(body, "topic_last_ids: envelope mode only") {
		t.Fatalf("raw with topic_last_ids: %d %q", status, body)
	}
}

// resumeTopic connects with a position in topic and returns the topic's
// subscribed frame.
func (s *testServer) resumeTopic(t *testing.T, topic, lastID string) env {
	t.Helper()
	c := s.dialEnv(t, "/u?topics="+topic+"&topic_last_ids="+url.QueryEscape(topic+"="+lastID))
	defer c.c.CloseNow()
	return c.subscribedFrame(topic)
}

// handshake makes a WebSocket upgrade request to path and returns the
// status and body of a refusal.
func (s *testServer) handshake(t *testing.T, path string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+s.app.HTTPAddr()+path, nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// Publish takes a ttl for a topic with history, up to its rule's; other
// topics stay live only.
func TestPublishTTLOnHistoryTopics(t *testing.T) {
	s := startServer(t, "--topic-history", "todo:*=100/10m")
	ctx := context.Background()
	msg := func(ttl time.Duration) *pb.Message {
		return &pb.Message{Payload: &pb.Message_Json{Json: `{}`}, Ttl: durationpb.New(ttl)}
	}
	if _, err := s.api.Publish(ctx, &pb.PublishRequest{Topic: "todo:1", Message: msg(time.Minute)}); err != nil {
		t.Fatalf("ttl within the rule: %v", err)
	}
	for _, tc := range []struct {
		topic string
		ttl   time.Duration
		want  string
	}{
		{"todo:1", 11 * time.Minute, "message.ttl: at most 10m0s: topic todo:1 keeps messages that long (--topic-history todo:*=100/10m0s)"},
		{"live:1", time.Minute, "message.ttl: Broadcast and Publish are live only, except Publish to a topic with history (--topic-history)"},
	} {
		_, err := s.api.Publish(ctx, &pb.PublishRequest{Topic: tc.topic, Message: msg(tc.ttl)})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), tc.want) {
			t.Fatalf("Publish %s ttl %v: %v, want INVALID_ARGUMENT %q", tc.topic, tc.ttl, err, tc.want)
		}
	}
	// A shorter ttl is the message's own: it expires before the rule's.
	r, err := s.api.Publish(ctx, &pb.PublishRequest{Topic: "todo:2", Message: msg(time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.api.Publish(ctx, &pb.PublishRequest{Topic: "todo:2", Message: msg(time.Second)}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the 1s message to expire", func() bool {
		f := s.resumeTopic(t, "todo:2", r.GetMessageId())
		return f.Recovered != nil && !*f.Recovered
	})
}

// --topic-history is checked at start, with errors naming the flag.
func TestTopicHistoryConfig(t *testing.T) {
	for _, tc := range []struct {
		value, want string
	}{
		{"todo:*", `--topic-history: "todo:*": want pattern=messages/ttl`},
		{"todo:*=100", `--topic-history: "todo:*=100": want pattern=messages/ttl`},
		{"todo:*=0/10m", `--topic-history: "todo:*=0/10m": messages "0": must be a number from 1 to 1000`},
		{"todo:*=1001/10m", `messages "1001": must be a number from 1 to 1000`},
		{"todo:*=100/forever", `ttl "forever": must be a duration from 1s to 24h0m0s`},
		{"todo:*=100/25h", `ttl "25h": must be a duration from 1s to 24h0m0s`},
		{"to do=1/1m", `pattern "to do": character ' ' not allowed`},
	} {
		_, err := config.Parse([]string{"--topic-history", tc.value}, func(string) string { return "" }, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("--topic-history %q: %v, want %q", tc.value, err, tc.want)
		}
	}
	_, err := config.Parse([]string{"--topic-history", "todo:*=10/2h", "--inbox-max-ttl", "1h"}, func(string) string { return "" }, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "--topic-history: todo:*=10/2h0m0s: ttl 2h0m0s is longer than --inbox-max-ttl (1h0m0s)") {
		t.Fatalf("ttl over --inbox-max-ttl: %v", err)
	}
	cfg, err := config.Parse([]string{"--topic-history", "todo:*=100/10m, chat:room-1=50/1h,*=10/1m"}, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if rules, err := cfg.HistoryRules(); err != nil || len(rules) != 3 || rules[1].Pattern != "chat:room-1" || rules[1].Messages != 50 || rules[1].TTL != time.Hour || rules[2].Pattern != "*" {
		t.Fatalf("rules = %+v, %v", rules, err)
	}
}

// Two nodes on Redis: the page is on one, the publishes on the other; it
// resumes on the other node after a cut.
func TestClusterTopicResume(t *testing.T) {
	r := redistest.Start(t)
	n := startNodes(t, r, 2, "--topic-history", "todo:*=100/10m")
	a, b := n[0], n[1]
	const topic = "todo:team-7"
	c := a.dialEnv(t, "/page?topics="+topic)
	sub := c.subscribedFrame(topic)
	if err := <-publishSeq(b.api, topic, 0, 5, 0); err != nil {
		t.Fatal(err)
	}
	last := c.expectSeq(topic, 0, 5)
	c.c.CloseNow()
	if err := <-publishSeq(b.api, topic, 5, 55, 0); err != nil {
		t.Fatal(err)
	}
	live := publishSeq(a.api, topic, 55, 75, 2*time.Millisecond)
	c = b.dialEnv(t, "/page?topics="+topic+"&topic_last_ids="+url.QueryEscape(topic+"="+last+"."+sub.Epoch))
	f := c.subscribedFrame(topic)
	if f.Recovered == nil || !*f.Recovered || f.Replayed < 50 || f.Epoch != sub.Epoch {
		t.Fatalf("subscribed %+v: want recovered true, at least 50 replayed, epoch %s", f, sub.Epoch)
	}
	c.expectSeq(topic, 5, 75)
	if err := <-live; err != nil {
		t.Fatal(err)
	}
}

// A page that got no message of the topic yet resumes from the position
// its subscribed frame gave.
func TestTopicResumeFromSubscribedPosition(t *testing.T) {
	s := startServer(t, "--topic-history", "todo:*=100/10m")
	const topic = "todo:quiet"
	// Something was published before, so a fresh Redis has a last id too.
	if err := <-publishSeq(s.api, "other:1", 0, 1, 0); err != nil {
		t.Fatal(err)
	}
	c := s.dialEnv(t, "/page?topics="+topic)
	sub := c.subscribedFrame(topic)
	if sub.LastID == "" {
		t.Fatalf("subscribed %+v: want the topic's position (last_id)", sub)
	}
	c.c.CloseNow()
	if err := <-publishSeq(s.api, topic, 0, 3, 0); err != nil {
		t.Fatal(err)
	}
	c = s.dialEnv(t, "/page?topics="+topic+"&topic_last_ids="+url.QueryEscape(topic+"="+sub.LastID+"."+sub.Epoch))
	if f := c.subscribedFrame(topic); f.Recovered == nil || !*f.Recovered || f.Replayed != 3 {
		t.Fatalf("subscribed %+v: want recovered true, 3 replayed", f)
	}
	c.expectSeq(topic, 0, 3)
	// Subscribing again answers with the epoch, and replays nothing.
	c.send(map[string]any{"op": "subscribe", "topic": topic, "ref": "again"})
	if f := c.subscribedFrame(topic); f.Epoch != sub.Epoch || f.Recovered != nil {
		t.Fatalf("second subscribe: %+v", f)
	}
	if err := <-publishSeq(s.api, topic, 3, 4, 0); err != nil {
		t.Fatal(err)
	}
	c.expectSeq(topic, 3, 4)

	// A topic nothing was ever published to: its position missed nothing.
	c2 := s.dialEnv(t, "/page?topics=todo:never")
	never := c2.subscribedFrame("todo:never")
	c2.c.CloseNow()
	c2 = s.dialEnv(t, "/page?topics=todo:never&topic_last_ids="+url.QueryEscape("todo:never="+never.LastID+"."+never.Epoch))
	if f := c2.subscribedFrame("todo:never"); f.Recovered == nil || !*f.Recovered || f.Replayed != 0 {
		t.Fatalf("resume of a topic with nothing published: %+v, want recovered true, nothing replayed", f)
	}
}

// A node whose link to Redis stalls for less than the node ttl keeps its
// clients; once back, its subscribers of a topic with history get what was
// published meanwhile (the node catches up from the history), in order,
// once, before live messages.
func TestClusterTopicCatchUpAfterRedisStall(t *testing.T) {
	r := redistest.Start(t)
	p := newStallProxy(t, r.Addr())
	args := []string{"--engine", "redis", "--node-ttl", "6s", "--redis-timeout", "500ms", "--topic-history", "todo:*=100/10m"}
	a := startServer(t, append([]string{"--redis-url", "redis://" + p.addr() + "/0"}, args...)...)
	b := startServer(t, append([]string{"--redis-url", r.URL()}, args...)...)
	const topic = "todo:team-7"
	c := a.dialEnv(t, "/page?topics="+topic)
	c.subscribedFrame(topic)
	if err := <-publishSeq(b.api, topic, 0, 3, 0); err != nil {
		t.Fatal(err)
	}
	c.expectSeq(topic, 0, 3)

	p.stall()
	eventually(t, "node a to report not ready", func() bool { return readyz(t, a) == 503 })
	if err := <-publishSeq(b.api, topic, 3, 13, 0); err != nil { // a does not hear them
		t.Fatal(err)
	}
	p.thaw()
	eventually(t, "node a to be ready again", func() bool { return readyz(t, a) == 200 })
	if err := <-publishSeq(b.api, topic, 13, 15, 0); err != nil {
		t.Fatal(err)
	}
	c.expectSeq(topic, 3, 15)
}

// The memory engine keeps at most --topic-history-max-total messages in all
// topic histories together: past it a message is delivered but not kept,
// and a resume from before it says recovered: false.
func TestTopicHistoryMaxTotal(t *testing.T) {
	if testEngine == "redis" {
		t.Skip("the memory engine's bound (Redis is bounded by its maxmemory)")
	}
	s := startServer(t, "--topic-history", "todo:*=100/10m", "--topic-history-max-total", "3")
	c := s.dialEnv(t, "/u?topics=todo:1")
	sub := c.subscribedFrame("todo:1")
	if err := <-publishSeq(s.api, "todo:1", 0, 5, 0); err != nil {
		t.Fatal(err)
	}
	c.expectSeq("todo:1", 0, 5) // all delivered live
	if v := s.metric(t, `pushgate_topic_history_dropped_total{reason="full"}`); v != 2 {
		t.Fatalf("full = %v, want 2", v)
	}
	f := s.resumeTopic(t, "todo:1", sub.LastID)
	if f.Recovered == nil || *f.Recovered || f.Replayed != 3 {
		t.Fatalf("resume past messages not kept: %+v, want recovered false, 3 replayed", f)
	}
}
