package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"pushgate/gateway/redisengine/redistest"
	pb "pushgate/gen/pushgate/v1"
	"pushgate/internal/notify"
	"pushgate/internal/notify/notifytest"
)

// pushRig is a server with Web Push set up against a loopback push
// service emulator.
type pushRig struct {
	s  *testServer
	ps *notifytest.PushService
}

func startPushServer(t *testing.T, args ...string) pushRig {
	t.Helper()
	priv, pub, err := notify.GenerateVAPID()
	if err != nil {
		t.Fatal(err)
	}
	ps := notifytest.NewPushService(pub)
	t.Cleanup(ps.Close)
	s := startServer(t, append([]string{"--vapid-private-key", priv, "--vapid-subject", "mailto:ops@example.com", "--notify-poll", "100ms",
		"--notify-allow-private"}, args...)...) // the emulator is on loopback
	return pushRig{s: s, ps: ps}
}

// subscribe makes a push subscription on the emulator and registers it as
// user's target.
func (r pushRig) subscribe(t *testing.T, user string) (sub string, targetID string) {
	t.Helper()
	s, id := r.ps.Subscribe()
	resp, err := r.s.api.AddPushTarget(context.Background(), &pb.AddPushTargetRequest{UserId: user, Target: &pb.PushTarget{
		Target: &pb.PushTarget_Webpush{Webpush: &pb.WebPushSubscription{Endpoint: s.Endpoint, P256Dh: s.Keys.P256dh, Auth: s.Keys.Auth}}}})
	if err != nil {
		t.Fatal(err)
	}
	return id, resp.GetTarget().GetId()
}

func escalated(json string, ttl, after time.Duration, n *pb.Notification) *pb.Message {
	m := ttlMsg(json, ttl)
	if ttl == 0 {
		m.Ttl = nil
	}
	m.Notification = n
	m.Escalation = &pb.Escalation{After: durationpb.New(after)}
	return m
}

var orderNote = &pb.Notification{Title: "New order", Body: "#1042 paid: 88.00", Url: "/admin/orders/1042", Tag: "order-1042", Urgency: "high"}

// nextPush waits for the emulator's next accepted push.
func (r pushRig) nextPush(t *testing.T) notifytest.PushMessage {
	t.Helper()
	select {
	case m := <-r.ps.Messages:
		return m
	case <-time.After(waitFor):
		t.Fatalf("no push within %v; push service refused %q", waitFor, r.ps.Rejected())
	}
	return notifytest.PushMessage{}
}

func (r pushRig) noPush(t *testing.T) {
	t.Helper()
	select {
	case m := <-r.ps.Messages:
		t.Fatalf("unexpected push %s", m.Payload)
	default:
	}
}

func TestEscalationOfflineUserGetsWebPushAtOnce(t *testing.T) {
	r := startPushServer(t)
	w := r.s.watch(t, pb.EventKind_EVENT_KIND_MESSAGE_ESCALATED)
	sub, target := r.subscribe(t, "merchant")
	resp, err := r.s.api.SendToUser(context.Background(), &pb.SendToUserRequest{UserId: "merchant",
		Message: escalated(`{"order":1042}`, time.Hour, 30*time.Second, orderNote)})
	if err != nil {
		t.Fatal(err)
	}
	m := r.nextPush(t)
	var got notify.Push
	if err := json.Unmarshal(m.Payload, &got); err != nil {
		t.Fatal(err)
	}
	want := notify.Push{Notification: notify.Notification{Title: "New order", Body: "#1042 paid: 88.00", URL: "/admin/orders/1042", Tag: "order-1042"},
		MessageID: resp.GetMessageId(), UserID: "merchant"}
	if m.Sub != sub || string(m.Payload) != string(want.Payload()) {
		t.Fatalf("push %s to %s, want %s to %s", m.Payload, m.Sub, want.Payload(), sub)
	}
	if m.TTL < 3500 || m.TTL > 3600 || m.Urgency != "high" || m.Topic == "" {
		t.Fatalf("push headers TTL %d Urgency %q Topic %q", m.TTL, m.Urgency, m.Topic)
	}
	ev := w.next().GetEscalated()
	if ev.GetUserId() != "merchant" || ev.GetMessageId() != resp.GetMessageId() || ev.GetChannel() != "webpush" || ev.GetTargetId() != target || ev.GetResult() != "sent" {
		t.Fatalf("escalated event %v", ev)
	}
	eventually(t, "sends_total counted", func() bool {
		v, _ := r.s.metricValue(`pushgate_notify_sends_total{channel="webpush",result="sent"}`)
		return v == 1
	})
	// A retried call (same idempotency key) notifies nobody again.
	msg := escalated(`{"order":1043}`, time.Hour, 0, orderNote)
	msg.IdempotencyKey = "order-1043"
	for range 2 {
		if _, err := r.s.api.SendToUser(context.Background(), &pb.SendToUserRequest{UserId: "merchant", Message: msg}); err != nil {
			t.Fatal(err)
		}
	}
	r.nextPush(t)
	w.next()
	if v := r.s.metric(t, `pushgate_escalations_total{result="fired"}`); v != 2 {
		t.Fatalf("escalations fired %v, want 2 (the repeat fires none)", v)
	}
	r.noPush(t)
}

// TestEscalationAfterAck: an online envelope client that does not ack
// within after gets a push; one that acks in time, and a raw client (a
// write counts as an ack), do not.
func TestEscalationAfterAck(t *testing.T) {
	r := startPushServer(t)
	w := r.s.watch(t, pb.EventKind_EVENT_KIND_MESSAGE_ESCALATED)
	ctx := context.Background()
	r.subscribe(t, "slow")
	r.subscribe(t, "quick")
	r.subscribe(t, "raw")
	slow := r.s.dialEnv(t, "/slow")
	quick := r.s.dialEnv(t, "/quick")
	raw := r.s.dial(t, "raw")
	eventually(t, "all online", func() bool {
		return r.s.online(t, "slow") == 1 && r.s.online(t, "quick") == 1 && r.s.online(t, "raw") == 1
	})

	after := 1500 * time.Millisecond
	start := time.Now()
	resp, err := r.s.api.SendToUsers(ctx, &pb.SendToUsersRequest{UserIds: []string{"slow", "quick", "raw"},
		Message: escalated(`{"order":7}`, time.Hour, after, orderNote)})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range resp.GetResults() {
		if !d.GetOnline() {
			t.Fatalf("%v offline", d)
		}
	}
	if m := slow.nextMessage(); m.ID != resp.GetMessageId() {
		t.Fatal(m)
	}
	m := quick.nextMessage()
	quick.send(map[string]any{"op": "ack", "id": m.ID})
	raw.next()

	p := r.nextPush(t)
	if el := time.Since(start); el < after {
		t.Fatalf("pushed after %v, before after (%v)", el, after)
	}
	var got notify.Push
	json.Unmarshal(p.Payload, &got)
	if got.UserID != "slow" || got.MessageID != resp.GetMessageId() {
		t.Fatalf("push %s, want slow's", p.Payload)
	}
	if ev := w.next().GetEscalated(); ev.GetUserId() != "slow" || ev.GetResult() != "sent" {
		t.Fatalf("event %v", ev)
	}
	eventually(t, "the acked escalations claimed and cancelled", func() bool {
		v, _ := r.s.metricValue(`pushgate_escalations_total{result="cancelled"}`)
		return v == 2
	})
	r.noPush(t)
	if v := r.s.metric(t, `pushgate_escalations_total{result="scheduled"}`); v != 3 {
		t.Fatalf("scheduled %v, want 3", v)
	}
}

// TestEscalationGoneTargetRemoved: a subscription the push service no
// longer knows (410) is removed and reported.
func TestEscalationGoneTargetRemoved(t *testing.T) {
	r := startPushServer(t)
	w := r.s.watch(t, pb.EventKind_EVENT_KIND_MESSAGE_ESCALATED)
	ctx := context.Background()
	sub, target := r.subscribe(t, "u")
	r.ps.Unsubscribe(sub)
	if _, err := r.s.api.SendToUser(ctx, &pb.SendToUserRequest{UserId: "u", Message: escalated(`1`, 0, 0, orderNote)}); err != nil {
		t.Fatal(err)
	}
	if ev := w.next().GetEscalated(); ev.GetResult() != "gone" || ev.GetTargetId() != target || !strings.Contains(ev.GetDetail(), "410") {
		t.Fatalf("event %v", ev)
	}
	eventually(t, "the gone target removed", func() bool {
		l, err := r.s.api.ListPushTargets(ctx, &pb.ListPushTargetsRequest{UserId: "u"})
		return err == nil && len(l.GetTargets()) == 0
	})
	// With no target left, the next escalation says so.
	if _, err := r.s.api.SendToUser(ctx, &pb.SendToUserRequest{UserId: "u", Message: escalated(`2`, 0, 0, orderNote)}); err != nil {
		t.Fatal(err)
	}
	if ev := w.next().GetEscalated(); ev.GetResult() != "no_target" {
		t.Fatalf("event %v", ev)
	}
}

// TestEscalationWeChatAndWebhook: an offline user's WeChat openid gets a
// subscribe message and the backend's webhook a signed POST; WeChat's
// refusal (43101, no subscription quota) is reported as such.
func TestEscalationWeChatAndWebhook(t *testing.T) {
	wx := notifytest.NewWeChat("wx0123456789abcdef", "wechat-secret-0123456789abcdef")
	defer wx.Close()
	wx.Template("TPL_ORDER", "thing1", "amount2")
	wx.Subscribe("openid-merchant", 1)
	secret := "webhook-secret-0123456789abcdefXYZ"
	hook := notifytest.NewWebhook([]byte(secret))
	defer hook.Close()
	s := startServer(t, "--wechat-app-id", wx.AppID, "--wechat-app-secret", wx.Secret, "--wechat-api-url", wx.URL,
		"--notify-webhook-secret", secret)
	w := s.watch(t, pb.EventKind_EVENT_KIND_MESSAGE_ESCALATED)
	ctx := context.Background()
	for _, tg := range []*pb.PushTarget{
		{Target: &pb.PushTarget_WechatOpenid{WechatOpenid: "openid-merchant"}},
		{Target: &pb.PushTarget_WebhookUrl{WebhookUrl: hook.URL + "/push"}},
	} {
		if _, err := s.api.AddPushTarget(ctx, &pb.AddPushTargetRequest{UserId: "merchant", Target: tg}); err != nil {
			t.Fatal(err)
		}
	}
	n := &pb.Notification{Title: "New order", WechatTemplateId: "TPL_ORDER", WechatPage: "pages/order?id=1042",
		WechatData: map[string]string{"thing1": "Order #1042", "amount2": "88.00"}}
	resp, err := s.api.SendToUser(ctx, &pb.SendToUserRequest{UserId: "merchant", Message: escalated(`{"order":1042}`, time.Hour, 0, n)})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-wx.Messages:
		if m.ToUser != "openid-merchant" || m.Data["thing1"]["value"] != "Order #1042" || m.State != "formal" {
			t.Fatalf("WeChat got %+v", m)
		}
	case <-time.After(waitFor):
		t.Fatal("no subscribe message")
	}
	select {
	case c := <-hook.Calls:
		var b notify.WebhookBody
		json.Unmarshal(c.Body, &b)
		if b.UserID != "merchant" || b.MessageID != resp.GetMessageId() || b.WeChat == nil || b.Notification.Title != "New order" {
			t.Fatalf("webhook got %s", c.Body)
		}
	case <-time.After(waitFor):
		t.Fatal("no webhook call")
	}
	results := map[string]string{}
	for range 2 {
		ev := w.next().GetEscalated()
		results[ev.GetChannel()] = ev.GetResult()
	}
	if results["wechat"] != "sent" || results["webhook"] != "sent" {
		t.Fatalf("results %v", results)
	}
	// The quota of one subscription is used: the next is refused, 43101.
	hook.Answer(http.StatusServiceUnavailable) // and the webhook is retried
	if _, err := s.api.SendToUser(ctx, &pb.SendToUserRequest{UserId: "merchant", Message: escalated(`{"order":1043}`, time.Hour, 0, n)}); err != nil {
		t.Fatal(err)
	}
	results = map[string]string{}
	details := map[string]string{}
	for range 2 {
		ev := w.next().GetEscalated()
		results[ev.GetChannel()], details[ev.GetChannel()] = ev.GetResult(), ev.GetDetail()
	}
	if results["wechat"] != "refused" || !strings.Contains(details["wechat"], "43101") || results["webhook"] != "sent" {
		t.Fatalf("results %v %v", results, details)
	}
	if rej := hook.Rejected(); len(rej) != 0 {
		t.Fatalf("webhook signatures refused: %q", rej)
	}
	if strings.Contains(s.logs.String(), wx.Secret) || strings.Contains(s.logs.String(), secret) {
		t.Fatal("a secret is in the logs")
	}
}

// TestEscalationNeverBlocksSend: a push service that never answers holds
// the workers and fills the queue; sends still return at once, and the
// notifications past the queue are dropped and reported.
func TestEscalationNeverBlocksSend(t *testing.T) {
	hang := make(chan struct{})
	stuck := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hang:
		case <-r.Context().Done():
		}
	}))
	defer stuck.Close()
	defer close(hang)
	r := startPushServer(t, "--notify-workers", "1", "--notify-queue", "1")
	w := r.s.watch(t, pb.EventKind_EVENT_KIND_MESSAGE_ESCALATED)
	ctx := context.Background()
	sub, _ := r.ps.Subscribe()
	users := []string{"a", "b", "c", "d", "e"}
	for _, u := range users {
		if _, err := r.s.api.AddPushTarget(ctx, &pb.AddPushTargetRequest{UserId: u, Target: &pb.PushTarget{Target: &pb.PushTarget_Webpush{
			Webpush: &pb.WebPushSubscription{Endpoint: stuck.URL + "/push/" + u, P256Dh: sub.Keys.P256dh, Auth: sub.Keys.Auth}}}}); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	for range 3 {
		if _, err := r.s.api.SendToUsers(ctx, &pb.SendToUsersRequest{UserIds: users, Message: escalated(`1`, time.Minute, 0, orderNote)}); err != nil {
			t.Fatal(err)
		}
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("three sends took %v with the push service stuck", el)
	}
	dropped := 0
	for dropped < 13 { // 15 notifications: one in flight, one queued, the rest dropped
		if ev := w.next().GetEscalated(); ev.GetResult() == "dropped" {
			dropped++
		}
	}
}

func TestPushTargetsAndEscalationValidation(t *testing.T) {
	r := startPushServer(t, "--notify-max-targets", "2")
	ctx := context.Background()
	sub, _ := r.ps.Subscribe()
	wp := func(f func(*pb.WebPushSubscription)) *pb.PushTarget {
		s := &pb.WebPushSubscription{Endpoint: sub.Endpoint, P256Dh: sub.Keys.P256dh, Auth: sub.Keys.Auth}
		f(s)
		return &pb.PushTarget{Target: &pb.PushTarget_Webpush{Webpush: s}}
	}
	invalid := func(err error, field string) {
		t.Helper()
		if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.HasPrefix(st.Message(), field+": ") {
			t.Errorf("got %v, want INVALID_ARGUMENT naming %s", err, field)
		}
	}
	add := func(tg *pb.PushTarget) error {
		_, err := r.s.api.AddPushTarget(ctx, &pb.AddPushTargetRequest{UserId: "u", Target: tg})
		return err
	}
	invalid(add(nil), "target")
	invalid(add(wp(func(s *pb.WebPushSubscription) { s.Endpoint = "file:///etc/passwd" })), "target.webpush.endpoint")
	invalid(add(wp(func(s *pb.WebPushSubscription) { s.P256Dh = "not-a-key" })), "target.webpush.p256dh")
	invalid(add(wp(func(s *pb.WebPushSubscription) { s.Auth = "" })), "target.webpush.auth")
	invalid(add(&pb.PushTarget{Target: &pb.PushTarget_WebhookUrl{WebhookUrl: "javascript:alert(1)"}}), "target.webhook_url")
	invalid(add(&pb.PushTarget{Target: &pb.PushTarget_WechatOpenid{WechatOpenid: ""}}), "target.wechat_openid")

	send := func(m *pb.Message) error {
		_, err := r.s.api.SendToUser(ctx, &pb.SendToUserRequest{UserId: "u", Message: m})
		return err
	}
	m := escalated(`1`, time.Hour, 0, orderNote)
	m.Escalation.Channels = []string{"sms"}
	invalid(send(m), "message.escalation.channels[0]")
	invalid(send(escalated(`1`, time.Hour, 0, &pb.Notification{Title: "x", Body: strings.Repeat("b", 4000)})), "message.notification")
	invalid(send(escalated(`1`, time.Hour, 0, &pb.Notification{})), "message.notification.title")
	invalid(send(escalated(`1`, time.Hour, 0, &pb.Notification{Title: "x", Urgency: "now"})), "message.notification.urgency")
	invalid(send(escalated(`1`, 0, time.Second, orderNote)), "message.escalation.after")
	m = escalated(`1`, time.Hour, 0, orderNote)
	m.Escalation = nil
	invalid(send(m), "message.escalation")
	_, err := r.s.api.Broadcast(ctx, &pb.BroadcastRequest{Message: escalated(`1`, 0, 0, orderNote)})
	invalid(err, "message.notification")
	_, err = r.s.api.Publish(ctx, &pb.PublishRequest{Topic: "t", Message: escalated(`1`, 0, 0, orderNote)})
	invalid(err, "message.notification")

	// Bounded per user; the same address replaces; removal frees a place.
	first := wp(func(*pb.WebPushSubscription) {})
	if err := add(first); err != nil {
		t.Fatal(err)
	}
	if err := add(first); err != nil {
		t.Fatalf("same subscription again: %v", err)
	}
	hook := &pb.PushTarget{Target: &pb.PushTarget_WebhookUrl{WebhookUrl: "https://backend.example.com/push"}}
	if err := add(hook); err != nil {
		t.Fatal(err)
	}
	err = add(&pb.PushTarget{Target: &pb.PushTarget_WechatOpenid{WechatOpenid: "o1"}})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "--notify-max-targets") {
		t.Fatalf("third target: %v", err)
	}
	l, err := r.s.api.ListPushTargets(ctx, &pb.ListPushTargetsRequest{UserId: "u"})
	if err != nil || len(l.GetTargets()) != 2 {
		t.Fatalf("list %v %v", l, err)
	}
	for _, tg := range l.GetTargets() {
		if tg.GetWebhookUrl() != "" {
			rm, err := r.s.api.RemovePushTarget(ctx, &pb.RemovePushTargetRequest{UserId: "u", TargetId: tg.GetId()})
			if err != nil || !rm.GetRemoved() {
				t.Fatalf("remove %v %v", rm, err)
			}
		}
	}
	if err := add(&pb.PushTarget{Target: &pb.PushTarget_WechatOpenid{WechatOpenid: "o1"}}); err != nil {
		t.Fatalf("after a removal: %v", err)
	}
}

// TestEscalationClusterNodeGoneExactlyOnce: with the Redis engine, the
// node that sent a message stops before the escalation is due; of the two
// nodes left, exactly one fires it, and the push service gets one push.
func TestEscalationClusterNodeGoneExactlyOnce(t *testing.T) {
	rs := redistest.Start(t)
	priv, pub, err := notify.GenerateVAPID()
	if err != nil {
		t.Fatal(err)
	}
	ps := notifytest.NewPushService(pub)
	defer ps.Close()
	node := func() *testServer {
		return startServer(t, "--engine", "redis", "--redis-url", rs.URL(), "--vapid-private-key", priv,
			"--vapid-subject", "mailto:ops@example.com", "--notify-poll", "50ms", "--notify-allow-private")
	}
	a, b, c := node(), node(), node()
	ctx := context.Background()
	sub, id := ps.Subscribe()
	if _, err := a.api.AddPushTarget(ctx, &pb.AddPushTargetRequest{UserId: "merchant", Target: &pb.PushTarget{Target: &pb.PushTarget_Webpush{
		Webpush: &pb.WebPushSubscription{Endpoint: sub.Endpoint, P256Dh: sub.Keys.P256dh, Auth: sub.Keys.Auth}}}}); err != nil {
		t.Fatal(err)
	}
	page := b.dialEnv(t, "/merchant") // online, never acks
	eventually(t, "merchant online", func() bool { return a.online(t, "merchant") == 1 })
	resp, err := a.api.SendToUser(ctx, &pb.SendToUserRequest{UserId: "merchant", Message: escalated(`{"order":1}`, time.Hour, 2*time.Second, orderNote)})
	if err != nil || !resp.GetOnline() {
		t.Fatalf("send: %v %v", resp, err)
	}
	a.stop(t) // gone before after: it never claims
	if m := page.nextMessage(); m.ID != resp.GetMessageId() {
		t.Fatal(m)
	}
	select {
	case m := <-ps.Messages:
		if m.Sub != id || !strings.Contains(string(m.Payload), resp.GetMessageId()) {
			t.Fatalf("push %s", m.Payload)
		}
	case <-time.After(waitFor):
		t.Fatalf("no push; push service refused %q", ps.Rejected())
	}
	fired := func() float64 {
		n := 0.0
		for _, s := range []*testServer{b, c} {
			v, _ := s.metricValue(`pushgate_escalations_total{result="fired"}`) // not exposed: none
			n += v
		}
		return n
	}
	eventually(t, "nothing pending", func() bool {
		v, err := b.metricValue("pushgate_escalations_pending")
		return err == nil && v == 0
	})
	time.Sleep(200 * time.Millisecond) // several polls of both nodes
	if f := fired(); f != 1 {
		t.Fatalf("fired %v times across the nodes left, want 1", f)
	}
	select {
	case m := <-ps.Messages:
		t.Fatalf("second push %s", m.Payload)
	default:
	}
}

// TestEnvelopePushSubscribe: an envelope client hands its browser's push
// subscription over; it becomes one of its user's targets. A subscription
// that is malformed, or whose endpoint is not https, is refused naming the
// field; past --notify-max-targets, too_many_targets.
func TestEnvelopePushSubscribe(t *testing.T) {
	r := startPushServer(t, "--notify-max-targets", "1")
	sub, _ := r.ps.Subscribe()
	c := r.s.dialEnv(t, "/merchant")
	subscription := func(endpoint, p256dh string) map[string]any {
		return map[string]any{"endpoint": endpoint, "expirationTime": nil, "keys": map[string]string{"p256dh": p256dh, "auth": sub.Keys.Auth}}
	}
	c.send(map[string]any{"op": "push_subscribe", "ref": 1, "subscription": subscription("https://push.example.net/wpush/v2/abc", sub.Keys.P256dh)})
	f := c.next()
	if f.Op != "push_subscribed" || string(f.Ref) != "1" || !strings.HasPrefix(f.TargetID, "webpush:") {
		t.Fatalf("reply %+v", f)
	}
	l, err := r.s.api.ListPushTargets(context.Background(), &pb.ListPushTargetsRequest{UserId: "merchant"})
	if err != nil || len(l.GetTargets()) != 1 || l.GetTargets()[0].GetId() != f.TargetID || l.GetTargets()[0].GetWebpush().GetEndpoint() != "https://push.example.net/wpush/v2/abc" {
		t.Fatalf("targets %v %v", l, err)
	}
	for _, tc := range []struct {
		op       map[string]any
		code     string
		msgStart string
	}{
		{map[string]any{"op": "push_subscribe", "ref": 2, "subscription": subscription("http://push.example.net/x", sub.Keys.P256dh)}, "bad_request", "subscription.endpoint:"},
		{map[string]any{"op": "push_subscribe", "ref": 3, "subscription": subscription("https://push.example.net/x", "AAAA")}, "bad_request", "subscription.keys.p256dh:"},
		{map[string]any{"op": "push_subscribe", "ref": 4, "subscription": "endpoint"}, "bad_request", "subscription:"},
		{map[string]any{"op": "push_subscribe", "ref": 5}, "bad_request", "push_subscribe needs"},
		{map[string]any{"op": "push_subscribe", "ref": 6, "subscription": subscription("https://push.example.net/other", sub.Keys.P256dh)}, "too_many_targets", "this user has"},
	} {
		c.send(tc.op)
		f := c.next()
		if f.Op != "error" || f.Code != tc.code || !strings.HasPrefix(f.Message, tc.msgStart) {
			t.Errorf("%v: got %+v, want %s %q", tc.op["subscription"], f, tc.code, tc.msgStart)
		}
	}
}
