package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"pushgate/gateway/redisengine/redistest"
	pb "pushgate/gen/pushgate/v1"
	"pushgate/internal/notify"
	"pushgate/internal/notify/notifytest"
)

// TestEscalationOfflineSenderKilled: with the Redis engine, the node that
// sends to an offline user is killed (SIGKILL) as soon as the call returns.
// The escalation was kept in Redis, due at once, so the other node fires
// it: the push service gets exactly one push. The killed node polls too
// seldom to claim it first (--notify-poll 1h), so only the engine's copy
// can have reached the push service.
func TestEscalationOfflineSenderKilled(t *testing.T) {
	rs := redistest.Start(t)
	priv, pub, err := notify.GenerateVAPID()
	if err != nil {
		t.Fatal(err)
	}
	ps := notifytest.NewPushService(pub)
	defer ps.Close()
	common := []string{"--engine", "redis", "--redis-url", rs.URL(), "--vapid-private-key", priv, "--vapid-subject", "mailto:ops@example.com",
		"--notify-allow-private"}
	victim := startProcess(t, append(common, "--notify-poll", "1h")...)
	other := startServer(t, append(common, "--notify-poll", "50ms")...)

	cc, err := grpc.NewClient(victim.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	api := pb.NewPushServiceClient(cc)
	ctx := context.Background()
	sub, id := ps.Subscribe()
	if _, err := api.AddPushTarget(ctx, &pb.AddPushTargetRequest{UserId: "merchant", Target: &pb.PushTarget{Target: &pb.PushTarget_Webpush{
		Webpush: &pb.WebPushSubscription{Endpoint: sub.Endpoint, P256Dh: sub.Keys.P256dh, Auth: sub.Keys.Auth}}}}); err != nil {
		t.Fatal(err)
	}
	resp, err := api.SendToUser(ctx, &pb.SendToUserRequest{UserId: "merchant", Message: escalated(`{"order":1}`, time.Hour, 30*time.Second, orderNote)})
	if err != nil || resp.GetOnline() {
		t.Fatalf("send: %v %v", resp, err)
	}
	if err := victim.cmd.Process.Kill(); err != nil { // SIGKILL: nothing runs after it
		t.Fatal(err)
	}
	<-victim.exited

	select {
	case m := <-ps.Messages:
		if m.Sub != id || !strings.Contains(string(m.Payload), resp.GetMessageId()) {
			t.Fatalf("push %s to %s", m.Payload, m.Sub)
		}
	case <-time.After(waitFor):
		t.Fatalf("no push; push service refused %q", ps.Rejected())
	}
	eventually(t, "nothing pending", func() bool {
		v, err := other.metricValue("pushgate_escalations_pending")
		return err == nil && v == 0
	})
	if v := other.metric(t, `pushgate_escalations_total{result="fired"}`); v != 1 {
		t.Fatalf("the node left fired %v, want 1", v)
	}
	time.Sleep(300 * time.Millisecond) // several polls of the node left
	select {
	case m := <-ps.Messages:
		t.Fatalf("second push %s", m.Payload)
	default:
	}
}
