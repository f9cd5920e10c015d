package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "pushgate/gen/pushgate/v1"
)

func ttlMsg(json string, ttl time.Duration) *pb.Message {
	return &pb.Message{Type: "order.paid", Payload: &pb.Message_Json{Json: json}, Ttl: durationpb.New(ttl)}
}

func (s *testServer) sendTTL(t testing.TB, user, json string) *pb.SendToUserResponse {
	t.Helper()
	r, err := s.api.SendToUser(context.Background(), &pb.SendToUserRequest{UserId: user, Message: ttlMsg(json, time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestOfflineInboxThenLive(t *testing.T) {
	s := startServer(t)
	var ids []string
	for i := range 5 {
		r := s.sendTTL(t, "merchant-42", fmt.Sprintf(`{"type":1,"orderId":%d}`, 1786543212345678901+i))
		if r.GetOnline() || !r.GetStored() || r.GetDeliveredConnections() != 0 {
			t.Fatalf("offline send %d: %v", i, r)
		}
		ids = append(ids, r.GetMessageId())
	}
	c := s.dialEnv(t, "/merchant-42")
	if c.hello.Replayed != 5 || c.hello.Recovered != nil || c.hello.UserID != "merchant-42" || c.hello.ConnID == "" {
		t.Fatalf("hello = %+v", c.hello)
	}
	for i := range 5 {
		m := c.nextMessage()
		if m.ID != ids[i] || string(m.Data) != fmt.Sprintf(`{"type":1,"orderId":%d}`, 1786543212345678901+i) || m.Type != "order.paid" {
			t.Fatalf("replayed %d = %+v", i, m)
		}
	}
	live := s.sendTTL(t, "merchant-42", `{"type":2}`)
	if !live.GetOnline() || live.GetDeliveredConnections() != 1 {
		t.Fatalf("live send: %v", live)
	}
	if m := c.nextMessage(); m.ID != live.GetMessageId() {
		t.Fatalf("live message = %+v", m)
	}
	// None twice: the next thing is a sentinel.
	s.api.SendToUser(context.Background(), &pb.SendToUserRequest{UserId: "merchant-42", Message: textMsg("end")})
	if m := c.nextMessage(); string(m.Data) != `"end"` {
		t.Fatalf("after the live message: %+v", m)
	}
}

func TestRawPageGetsInboxOnceAcrossReloads(t *testing.T) {
	s := startServer(t)
	for i := range 3 {
		s.sendTTL(t, "shop", fmt.Sprintf(`{"n":%d}`, i))
	}
	page := s.dial(t, "shop")
	for i := range 3 {
		page.expect(fmt.Sprintf(`{"n":%d}`, i))
	}
	// Written to a raw page counts as delivered: the inbox empties, so a
	// reload does not pop the same orders up again.
	eventually(t, "inbox empty", func() bool { return s.app.Engine().Inboxed() == 0 })
	page.c.Close(websocket.StatusNormalClosure, "reload")
	reloaded := s.dial(t, "shop")
	s.api.SendToUser(context.Background(), &pb.SendToUserRequest{UserId: "shop", Message: textMsg("fresh")})
	reloaded.expect("fresh")
}

// TestResumeAcrossTwentyCutsLosesNothing cuts the client's link 20 times
// while 2000 messages flow, each cut at a random message. Whatever the client
// had buffered past that message is dropped with the link, as if it had been
// lost in flight, so each cut ends the connection that was being read, and
// the client resumes with last_id = the last message it processed. Over the
// 21 connections it must get every message exactly once, in order.
func TestResumeAcrossTwentyCutsLosesNothing(t *testing.T) {
	s := startServer(t, "--inbox-max-messages", "3000", "--inbox-max-bytes", "4194304", "--queue-max-messages", "4096")
	proxy := newCutProxy(t, s.app.HTTPAddr())
	const total, cuts = 2000, 20
	cutAt := map[int]bool{}
	for len(cutAt) < cuts {
		cutAt[1+rand.IntN(total-2)] = true
	}

	sendErr := make(chan error, 1)
	go func() {
		for i := range total {
			_, err := s.api.SendToUser(context.Background(), &pb.SendToUserRequest{
				UserId: "roamer", Message: ttlMsg(fmt.Sprintf(`{"seq":%d}`, i), time.Minute)})
			if err != nil {
				sendErr <- err
				return
			}
		}
		sendErr <- nil
	}()

	got := 0 // messages processed; the next one must be seq got
	lastID := ""
	connects, cutsDone, dropped := 0, 0, 0
	var c *envClient
	for got < total {
		q := "/roamer"
		if lastID != "" {
			q += "?last_id=" + url.QueryEscape(lastID)
		}
		c = dialEnv(t, "ws://"+proxy.ln.Addr().String()+"/ws"+q)
		connects++
		if lastID != "" && (c.hello.Recovered == nil || !*c.hello.Recovered) {
			t.Fatalf("reconnect %d: hello %+v, want recovered", connects, c.hello)
		}
		var unacked []string
		cut := false
		for got < total && !cut {
			var f env
			select {
			case fr, ok := <-c.frames:
				if !ok {
					t.Fatalf("connection %d ended after %d messages without a cut: %v", connects, got, <-c.end)
				}
				f = fr
			case <-time.After(waitFor):
				t.Fatalf("connection %d: stalled after %d messages", connects, got)
			}
			if f.Op != "message" {
				t.Fatalf("connection %d: unexpected frame %+v", connects, f)
			}
			var seq int
			if _, err := fmt.Sscanf(string(f.Data), `{"seq":%d}`, &seq); err != nil {
				t.Fatalf("connection %d: message %+v: %v", connects, f, err)
			}
			if seq != got {
				t.Fatalf("connection %d (resumed after %q): message %d is seq %d (duplicate or gap)", connects, lastID, got, seq)
			}
			got++
			lastID = f.ID
			unacked = append(unacked, f.ID)
			if len(unacked) == 50 { // at most 40 acks a connection: within the default --upstream-rate burst (41)
				b, _ := json.Marshal(map[string]any{"op": "ack", "ids": unacked})
				if err := c.c.Write(context.Background(), websocket.MessageText, b); err != nil {
					t.Fatalf("connection %d: ack: %v", connects, err)
				}
				unacked = nil
			}
			if cutAt[got] {
				delete(cutAt, got)
				if n := proxy.cut(); n != 1 {
					t.Fatalf("cut after message %d dropped %d connections, want 1 (connection %d)", got, n, connects)
				}
				cutsDone++
				n, err := c.waitEnd()
				if code := websocket.CloseStatus(err); code != -1 {
					t.Fatalf("connection %d ended with close code %d after the cut, want no close frame: %v", connects, code, err)
				}
				dropped += n
				cut = true
			}
		}
	}
	if err := <-sendErr; err != nil {
		t.Fatal(err)
	}
	if cutsDone != cuts || connects != cuts+1 {
		t.Fatalf("%d cuts over %d connections, want %d cuts over %d connections", cutsDone, connects, cuts, cuts+1)
	}
	// Nothing twice at the end either: the last connection's next message is
	// a sentinel sent after all of them.
	if _, err := s.api.SendToUser(context.Background(), &pb.SendToUserRequest{UserId: "roamer", Message: textMsg("end")}); err != nil {
		t.Fatal(err)
	}
	if m := c.nextMessage(); string(m.Data) != `"end"` {
		t.Fatalf("after message %d: %+v, want the sentinel", total-1, m)
	}
	t.Logf("%d messages over %d connections; %d frames read past a cut were dropped with it", total, connects, dropped)
}

func TestResumeFromTrimmedOrExpiredSaysNotRecovered(t *testing.T) {
	s := startServer(t, "--inbox-max-messages", "3")
	var ids []string
	for i := range 5 {
		ids = append(ids, s.sendTTL(t, "u", fmt.Sprintf(`{"n":%d}`, i)).GetMessageId())
	}
	// ids[0] and ids[1] were trimmed to keep 3.
	c := s.dialEnv(t, "/u?last_id="+ids[0])
	if c.hello.Recovered == nil || *c.hello.Recovered || c.hello.Replayed != 3 {
		t.Fatalf("resume from before a trimmed message: hello %+v, want recovered false, replayed 3", c.hello)
	}
	c.c.CloseNow()
	c = s.dialEnv(t, "/u?last_id="+ids[2])
	if c.hello.Recovered == nil || !*c.hello.Recovered || c.hello.Replayed != 2 {
		t.Fatalf("resume after the trimmed ones: hello %+v, want recovered true, replayed 2", c.hello)
	}
	if m := c.nextMessage(); m.ID != ids[3] {
		t.Fatalf("first replayed = %s, want %s", m.ID, ids[3])
	}
	// The same resume point from another epoch (inboxes of a server that
	// restarted) cannot be vouched for.
	c.c.CloseNow()
	c = s.dialEnv(t, "/u?last_id="+ids[2]+"&epoch=OTHEREPOCH")
	if c.hello.Recovered == nil || *c.hello.Recovered {
		t.Fatalf("resume from another epoch: hello %+v, want recovered false", c.hello)
	}
	c.c.CloseNow()
	c = s.dialEnv(t, "/u?last_id="+ids[2]+"&epoch="+c.hello.Epoch)
	if c.hello.Recovered == nil || !*c.hello.Recovered {
		t.Fatalf("resume with the hello's epoch: hello %+v, want recovered true", c.hello)
	}
	if v := s.metric(t, "pushgate_inbox_trimmed_total"); v != 2 {
		t.Fatalf("trimmed = %v, want 2", v)
	}

	// Expiry: a message whose ttl passed is a gap too.
	r, err := s.api.SendToUser(context.Background(), &pb.SendToUserRequest{UserId: "v", Message: ttlMsg(`{}`, 50*time.Millisecond)})
	if err != nil {
		t.Fatal(err)
	}
	before := s.sendTTL(t, "w", `{}`).GetMessageId() // an id from before the expiry, as a resume point
	_ = before
	eventually(t, "expired", func() bool { return s.metric(t, "pushgate_inbox_expired_total") == 1 })
	c = s.dialEnv(t, "/v?last_id="+firstID(r.GetMessageId()))
	if c.hello.Recovered == nil || *c.hello.Recovered || c.hello.Replayed != 0 {
		t.Fatalf("resume across an expired message: hello %+v", c.hello)
	}
}

// firstID returns an id that sorts just before id (same time, counter 0).
func firstID(id string) string { return id[:10] + strings.Repeat("0", 16) }

func TestAckRemovesFromInboxForOtherDevices(t *testing.T) {
	s := startServer(t)
	w := s.watch(t, pb.EventKind_EVENT_KIND_MESSAGE_ACKED)
	phone := s.dialEnv(t, "/merchant")
	a := s.sendTTL(t, "merchant", `{"order":"A"}`)
	b := s.sendTTL(t, "merchant", `{"order":"B"}`)
	if m := phone.nextMessage(); m.ID != a.GetMessageId() {
		t.Fatal(m)
	}
	if m := phone.nextMessage(); m.ID != b.GetMessageId() {
		t.Fatal(m)
	}
	phone.send(map[string]any{"op": "ack", "id": a.GetMessageId()})
	ev := w.next()
	if ack := ev.GetMessageAcked(); ack.GetMessageId() != a.GetMessageId() || ack.GetUserId() != "merchant" || ack.GetImplicit() || ack.GetConnectionId() != phone.hello.ConnID {
		t.Fatalf("ack event = %v", ev)
	}
	// A second device connecting later gets only the unacked one.
	laptop := s.dialEnv(t, "/merchant")
	if laptop.hello.Replayed != 1 {
		t.Fatalf("laptop hello = %+v, want 1 replayed", laptop.hello)
	}
	if m := laptop.nextMessage(); m.ID != b.GetMessageId() {
		t.Fatalf("laptop got %+v, want B", m)
	}
	// Acking what is not in the inbox (already acked, or never stored) is
	// harmless and reports nothing.
	laptop.send(map[string]any{"op": "ack", "ids": []string{a.GetMessageId(), b.GetMessageId()}})
	if ev := w.next(); ev.GetMessageAcked().GetMessageId() != b.GetMessageId() {
		t.Fatalf("second ack event = %v", ev)
	}
	eventually(t, "inbox empty", func() bool { return s.app.Engine().Inboxed() == 0 })
}

func TestTopicIsolation(t *testing.T) {
	s := startServer(t)
	one := s.dialEnv(t, "/alice?topics=store:1")
	if len(one.hello.Topics) != 1 || one.hello.Topics[0] != "store:1" {
		t.Fatalf("hello topics = %v", one.hello.Topics)
	}
	two := s.dialEnv(t, "/bob")
	two.send(map[string]any{"op": "subscribe", "topic": "store:2", "ref": 7})
	if f := two.next(); f.Op != "subscribed" || f.Topic != "store:2" || string(f.Ref) != "7" {
		t.Fatalf("subscribe reply = %+v", f)
	}
	rawSub := s.dial(t, "carol?topics=store:2") // raw pages can join at connect
	eventually(t, "subscribed", func() bool { return s.metric(t, "pushgate_subscriptions") == 3 })

	ctx := context.Background()
	for _, topic := range []string{"store:2", "store:1", "store:2"} {
		r, err := s.api.Publish(ctx, &pb.PublishRequest{Topic: topic, Message: jsonMsg(`{"topic":"` + topic + `"}`)})
		if err != nil {
			t.Fatal(err)
		}
		want := int64(2)
		if topic == "store:1" {
			want = 1
		}
		if r.GetDeliveredConnections() != want {
			t.Fatalf("publish %s reached %d, want %d", topic, r.GetDeliveredConnections(), want)
		}
	}
	if m := one.nextMessage(); m.Topic != "store:1" {
		t.Fatalf("store:1 subscriber got %+v", m)
	}
	for range 2 {
		if m := two.nextMessage(); m.Topic != "store:2" || string(m.Data) != `{"topic":"store:2"}` {
			t.Fatalf("store:2 subscriber got %+v", m)
		}
		rawSub.expect(`{"topic":"store:2"}`)
	}
	// Isolation: the store:1 subscriber's next message is the sentinel.
	s.api.SendToUser(ctx, &pb.SendToUserRequest{UserId: "alice", Message: textMsg("end")})
	if m := one.nextMessage(); string(m.Data) != `"end"` {
		t.Fatalf("store:1 subscriber saw %+v", m)
	}

	// Bad topic names get an error frame, not silence.
	two.send(map[string]any{"op": "subscribe", "topic": "no spaces", "ref": "x"})
	if f := two.next(); f.Op != "error" || f.Code != "bad_topic" || string(f.Ref) != `"x"` {
		t.Fatalf("bad topic reply = %+v", f)
	}
	two.send(map[string]any{"op": "unsubscribe", "topic": "store:2"})
	if f := two.next(); f.Op != "unsubscribed" {
		t.Fatalf("unsubscribe reply = %+v", f)
	}
	// The engine hears of the unsubscribe without the client waiting for
	// it (with Redis, the node's count there follows a moment later).
	eventually(t, "publish to store:2 reaches only the raw subscriber", func() bool {
		r, err := s.api.Publish(ctx, &pb.PublishRequest{Topic: "store:2", Message: jsonMsg(`{}`)})
		return err == nil && r.GetDeliveredConnections() == 1
	})
	// A ttl on Publish is refused: topics are live only.
	_, err := s.api.Publish(ctx, &pb.PublishRequest{Topic: "store:2", Message: ttlMsg(`{}`, time.Minute)})
	if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.HasPrefix(st.Message(), "message.ttl") {
		t.Fatalf("publish with ttl: %v", err)
	}
}

// eventWatcher reads a WatchEvents stream.
type eventWatcher struct {
	t  testing.TB
	ch chan *pb.Event
}

func (s *testServer) watch(t testing.TB, kinds ...pb.EventKind) *eventWatcher {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	st, err := s.api.WatchEvents(ctx, &pb.WatchEventsRequest{Kinds: kinds})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Header(); err != nil { // the watch is in place
		t.Fatal(err)
	}
	w := &eventWatcher{t: t, ch: make(chan *pb.Event, 1024)}
	go func() {
		defer close(w.ch)
		for {
			e, err := st.Recv()
			if err != nil {
				return
			}
			w.ch <- e
		}
	}()
	return w
}

func (w *eventWatcher) next() *pb.Event {
	w.t.Helper()
	select {
	case e, ok := <-w.ch:
		if !ok {
			w.t.Fatal("event stream ended")
		}
		return e
	case <-time.After(waitFor):
		w.t.Fatal("no event")
	}
	return nil
}

func TestWatchEventsOnlineOfflineAckUpstream(t *testing.T) {
	s := startServer(t, "--presence-grace", "300ms", "--upstream-users", "merchant-*")
	w := s.watch(t)

	c := s.dialEnv(t, "/merchant-1")
	if e := w.next(); e.GetUserOnline().GetUserId() != "merchant-1" {
		t.Fatalf("want online, got %v", e)
	}
	r := s.sendTTL(t, "merchant-1", `{"type":1}`)
	c.nextMessage()
	c.send(map[string]any{"op": "ack", "id": r.GetMessageId()})
	if e := w.next(); e.GetMessageAcked().GetMessageId() != r.GetMessageId() {
		t.Fatalf("want ack, got %v", e)
	}
	c.send(map[string]any{"op": "send", "type": "reply", "data": map[string]any{"text": "on my way"}, "ref": 1})
	if f := c.next(); f.Op != "sent" {
		t.Fatalf("send reply = %+v", f)
	}
	if e := w.next(); e.GetClientMessage().GetJson() != `{"text":"on my way"}` || e.GetClientMessage().GetType() != "reply" {
		t.Fatalf("want client message, got %v", e)
	}
	// A user who may not send upstream gets an error frame.
	other := s.dialEnv(t, "/customer-9")
	if e := w.next(); e.GetUserOnline().GetUserId() != "customer-9" {
		t.Fatalf("want online, got %v", e)
	}
	other.send(map[string]any{"op": "send", "data": 1})
	if f := other.next(); f.Op != "error" || f.Code != "forbidden" {
		t.Fatalf("forbidden send reply = %+v", f)
	}

	// A reload within the grace: no offline/online pair.
	c.c.Close(websocket.StatusNormalClosure, "reload")
	eventually(t, "closed", func() bool { return s.online(t, "merchant-1") == 0 })
	c = s.dialEnv(t, "/merchant-1")
	// Leaving for good: offline after the grace, and nothing before it.
	c.c.Close(websocket.StatusNormalClosure, "bye")
	other.c.Close(websocket.StatusNormalClosure, "bye")
	got := map[string]bool{}
	for range 2 {
		e := w.next()
		if e.GetUserOffline() == nil {
			t.Fatalf("want offline events only, got %v", e)
		}
		got[e.GetUserOffline().GetUserId()] = true
	}
	if !got["merchant-1"] || !got["customer-9"] {
		t.Fatalf("offline events for %v", got)
	}
}

func TestSlowWatcherIsCutOff(t *testing.T) {
	s := startServer(t, "--watch-buffer", "8", "--presence-grace", "0")
	ctx := context.Background()
	st, err := s.api.WatchEvents(ctx, &pb.WatchEventsRequest{}, grpc.MaxCallRecvMsgSize(1<<20))
	if err != nil {
		t.Fatal(err)
	}
	st.Header()
	// The watcher does not read; events pile up past its buffer (and past
	// what the transport buffers).
	for i := range 3000 {
		c := s.dial(t, fmt.Sprint("flap-", i%20))
		c.c.CloseNow()
		if i%100 == 0 && s.metric(t, "pushgate_watchers_cut_total") == 1 {
			break
		}
	}
	eventually(t, "watcher cut", func() bool { return s.metric(t, "pushgate_watchers_cut_total") == 1 })
	for {
		_, err := st.Recv()
		if err != nil {
			if status.Code(err) != codes.ResourceExhausted {
				t.Fatalf("stream ended with %v, want RESOURCE_EXHAUSTED", err)
			}
			break
		}
	}
	// Delivery was never stalled by it.
	c := s.dial(t, "after")
	s.api.SendToUser(ctx, &pb.SendToUserRequest{UserId: "after", Message: textMsg("ok")})
	c.expect("ok")
}

func TestIdempotencyKeyDeliversOnce(t *testing.T) {
	s := startServer(t)
	c := s.dial(t, "merchant-42")
	req := &pb.SendToUserRequest{UserId: "merchant-42", Message: &pb.Message{
		Payload: &pb.Message_Json{Json: newOrder}, IdempotencyKey: "order-20261122001-paid"}}
	ctx := context.Background()

	var wg sync.WaitGroup
	resps := make([]*pb.SendToUserResponse, 6)
	for i := range resps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := s.api.SendToUser(ctx, req)
			if err != nil {
				t.Error(err)
				return
			}
			resps[i] = r
		}()
	}
	wg.Wait()
	for _, r := range resps[1:] {
		if !proto.Equal(r, resps[0]) {
			t.Fatalf("responses differ: %v vs %v", r, resps[0])
		}
	}
	if resps[0].GetDeliveredConnections() != 1 {
		t.Fatalf("response = %v", resps[0])
	}
	// A later retry, too.
	r, err := s.api.SendToUser(ctx, req)
	if err != nil || !proto.Equal(r, resps[0]) {
		t.Fatalf("retry = %v, %v", r, err)
	}
	c.expect(newOrder)
	s.api.SendToUser(ctx, &pb.SendToUserRequest{UserId: "merchant-42", Message: textMsg("end")})
	c.expect("end") // exactly one delivery

	// The same key for a different request is refused.
	other := proto.Clone(req).(*pb.SendToUserRequest)
	other.UserId = "merchant-43"
	_, err = s.api.SendToUser(ctx, other)
	if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.HasPrefix(st.Message(), "message.idempotency_key") {
		t.Fatalf("key reuse: %v", err)
	}
}

func TestInboxLimitsExpiryAndMemory(t *testing.T) {
	// A loss is remembered for --inbox-max-ttl (for resuming clients), and
	// a message's receipt for --receipt-retention after its ttl; keep them
	// short so that everything is gone within the test.
	s := startServer(t, "--inbox-max-messages", "5", "--inbox-max-bytes", "100", "--inbox-max-ttl", "5s",
		"--receipt-retention", "1s",
		"--log-level", "warn") // logs are kept in memory by the test server
	ctx := context.Background()
	// Count: 8 small messages keep 5.
	send := func(user, json string, ttl time.Duration) {
		if _, err := s.api.SendToUser(ctx, &pb.SendToUserRequest{UserId: user, Message: ttlMsg(json, ttl)}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 8 {
		send("count", fmt.Sprintf(`{"i":%d}`, i), 5*time.Second)
	}
	// Bytes: 4 messages of 40 bytes keep 2 (80 <= 100).
	for range 4 {
		send("bytes", `"`+strings.Repeat("b", 38)+`"`, 5*time.Second)
	}
	if v := s.metric(t, "pushgate_inbox_trimmed_total"); v != 3+2 {
		t.Fatalf("trimmed = %v, want 5", v)
	}
	if v := s.metric(t, "pushgate_inbox_messages"); v != 5+2 {
		t.Fatalf("inbox messages = %v, want 7", v)
	}
	c := s.dialEnv(t, "/count")
	if c.hello.Replayed != 5 {
		t.Fatalf("count inbox replayed %d, want 5", c.hello.Replayed)
	}
	if m := c.nextMessage(); string(m.Data) != `{"i":3}` {
		t.Fatalf("oldest kept = %s, want {\"i\":3}", m.Data)
	}
	c.c.CloseNow()

	// Expiry, and memory back to its baseline afterwards. With the Redis
	// engine the inboxes are in Redis: this process's heap barely grows
	// (what is left after is noise of that size), so only expiry is checked.
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	const users = 5000
	for i := range users {
		_, err := s.api.SendToUser(ctx, &pb.SendToUserRequest{UserId: fmt.Sprint("exp-", i),
			Message: ttlMsg(`"`+strings.Repeat("m", 90)+`"`, time.Second)})
		if err != nil {
			t.Fatal(err)
		}
	}
	var peak runtime.MemStats
	runtime.ReadMemStats(&peak)
	eventually(t, "all expired", func() bool { return s.metric(t, "pushgate_inbox_expired_total") >= users })
	eventually(t, "inboxes empty", func() bool { return s.app.Engine().Inboxed() == 0 })
	if testEngine != "memory" {
		return
	}
	// What stays is what maps and pools keep for reuse, not the inboxes:
	// allow a quarter of the growth they caused.
	grown := int64(peak.HeapAlloc) - int64(before.HeapAlloc)
	var after runtime.MemStats
	deadline := time.Now().Add(waitFor)
	for {
		runtime.GC()
		runtime.ReadMemStats(&after)
		if int64(after.HeapAlloc)-int64(before.HeapAlloc) < grown/4 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("heap: %d KiB before, %d KiB with %d inboxes, %d KiB after expiry",
		before.HeapAlloc>>10, peak.HeapAlloc>>10, users, after.HeapAlloc>>10)
	if left := int64(after.HeapAlloc) - int64(before.HeapAlloc); left >= grown/4 {
		t.Fatalf("%d KiB of the %d KiB the inboxes took is still held after every inbox expired", left>>10, grown>>10)
	}
}
