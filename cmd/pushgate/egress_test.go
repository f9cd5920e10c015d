package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "pushgate/gen/pushgate/v1"
	"pushgate/internal/notify"
	"pushgate/internal/notify/notifytest"
)

// TestEgressPrivatePushEndpoints: without --notify-allow-private, a push
// endpoint on a private or loopback address is refused when registered
// (by the backend or a client), and one whose name resolves to loopback
// is refused when connected to: the push service on loopback gets nothing.
func TestEgressPrivatePushEndpoints(t *testing.T) {
	priv, pub, err := notify.GenerateVAPID()
	if err != nil {
		t.Fatal(err)
	}
	ps := notifytest.NewPushService(pub)
	defer ps.Close()
	s := startServer(t, "--vapid-private-key", priv, "--vapid-subject", "mailto:ops@example.com", "--notify-poll", "100ms")
	ctx := context.Background()
	add := func(endpoint string) error {
		sub, _ := ps.Subscribe()
		_, err := s.api.AddPushTarget(ctx, &pb.AddPushTargetRequest{UserId: "merchant", Target: &pb.PushTarget{Target: &pb.PushTarget_Webpush{
			Webpush: &pb.WebPushSubscription{Endpoint: endpoint, P256Dh: sub.Keys.P256dh, Auth: sub.Keys.Auth}}}})
		return err
	}
	for _, ep := range []string{"http://127.0.0.1:8080/push/x", "https://10.1.2.3/push/x", "https://[::1]/x", "https://169.254.169.254/latest",
		"https://100.64.0.9/x", "https://[::ffff:192.168.1.1]/x", "https://0.0.0.0/x"} {
		err := add(ep)
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "target.webpush.endpoint: ") ||
			!strings.Contains(err.Error(), "--notify-allow-private") {
			t.Errorf("%s: %v, want INVALID_ARGUMENT naming target.webpush.endpoint", ep, err)
		}
	}
	c := s.dialEnv(t, "/merchant")
	sub, _ := ps.Subscribe()
	c.send(map[string]any{"op": "push_subscribe", "ref": 1, "subscription": map[string]any{"endpoint": "https://192.168.0.10/push/x",
		"keys": map[string]string{"p256dh": sub.Keys.P256dh, "auth": sub.Keys.Auth}}})
	if f := c.next(); f.Op != "error" || !strings.HasPrefix(f.Message, "subscription.endpoint: ") {
		t.Fatalf("client's private endpoint: %+v", f)
	}

	// A name is only known to be inside when resolved: refused at connect.
	w := s.watch(t, pb.EventKind_EVENT_KIND_MESSAGE_ESCALATED)
	sub, _ = ps.Subscribe()
	byName := strings.Replace(sub.Endpoint, "127.0.0.1", "localhost", 1)
	resp, err := s.api.AddPushTarget(ctx, &pb.AddPushTargetRequest{UserId: "offline", Target: &pb.PushTarget{Target: &pb.PushTarget_Webpush{
		Webpush: &pb.WebPushSubscription{Endpoint: byName, P256Dh: sub.Keys.P256dh, Auth: sub.Keys.Auth}}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.api.SendToUser(ctx, &pb.SendToUserRequest{UserId: "offline", Message: escalated(`1`, time.Hour, 0, orderNote)}); err != nil {
		t.Fatal(err)
	}
	ev := w.next().GetEscalated()
	if ev.GetTargetId() != resp.GetTarget().GetId() || ev.GetResult() != "refused" || !strings.Contains(ev.GetDetail(), "--notify-allow-private") {
		t.Fatalf("event %v, want refused naming --notify-allow-private", ev)
	}
	select {
	case m := <-ps.Messages:
		t.Fatalf("the loopback push service got %s", m.Payload)
	default:
	}
	if v, _ := s.metricValue(`pushgate_notify_retries_total{channel="webpush"}`); v != 0 {
		t.Fatalf("%v retries of a refused endpoint", v)
	}
}

// TestEgressWebhookHosts: with --notify-webhook-hosts, a webhook target
// must name one of its hosts (or a subdomain of a *. entry); webhooks are
// backend-chosen and may be on inside addresses, so an allowed loopback
// receiver gets its call.
func TestEgressWebhookHosts(t *testing.T) {
	const secret = "egress-webhook-secret-0123456789abcdefXY"
	hook := notifytest.NewWebhook([]byte(secret))
	defer hook.Close()
	s := startServer(t, "--notify-webhook-secret", secret, "--notify-webhook-hosts", "localhost,hooks.example.com,*.corp.example",
		"--notify-poll", "100ms")
	ctx := context.Background()
	add := func(u string) error {
		_, err := s.api.AddPushTarget(ctx, &pb.AddPushTargetRequest{UserId: "merchant", Target: &pb.PushTarget{Target: &pb.PushTarget_WebhookUrl{WebhookUrl: u}}})
		return err
	}
	for _, u := range []string{"http://127.0.0.1:9/x", "https://evil.example.com/x", "https://corp.example/x", "https://hooks.example.com.evil.net/x"} {
		if err := add(u); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "target.webhook_url: host ") ||
			!strings.Contains(err.Error(), "--notify-webhook-hosts") {
			t.Errorf("%s: %v, want INVALID_ARGUMENT naming target.webhook_url", u, err)
		}
	}
	for _, u := range []string{"https://hooks.example.com/sms", "https://a.b.corp.example/x", strings.Replace(hook.URL, "127.0.0.1", "localhost", 1) + "/push"} {
		if err := add(u); err != nil {
			t.Errorf("%s: %v", u, err)
		}
	}
	l, err := s.api.ListPushTargets(ctx, &pb.ListPushTargetsRequest{UserId: "merchant"})
	if err != nil || len(l.GetTargets()) != 3 {
		t.Fatalf("targets %v %v", l, err)
	}
	// The hosts outside this machine are not called: removed first.
	for _, tg := range l.GetTargets() {
		if !strings.Contains(tg.GetWebhookUrl(), "localhost") {
			if _, err := s.api.RemovePushTarget(ctx, &pb.RemovePushTargetRequest{UserId: "merchant", TargetId: tg.GetId()}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := s.api.SendToUser(ctx, &pb.SendToUserRequest{UserId: "merchant", Message: escalated(`1`, time.Hour, 0, orderNote)}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-hook.Calls:
	case <-time.After(waitFor):
		t.Fatalf("no webhook call; refused %q", hook.Rejected())
	}
}
