package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pb "pushgate/gen/pushgate/v1"
	"pushgate/internal/notify/notifytest"
)

// TestNotifyWebhookSecretFile: the escalation webhook's secret read from
// --notify-webhook-secret-file signs the POST (the receiver checks it),
// and is nowhere in the logs.
func TestNotifyWebhookSecretFile(t *testing.T) {
	const secret = "file-webhook-secret-7Qz0c3Kp9Lm2Xv8Rb4"
	path := filepath.Join(t.TempDir(), "hook-secret")
	if err := os.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	hook := notifytest.NewWebhook([]byte(secret))
	defer hook.Close()
	s := startServer(t, "--notify-webhook-secret-file", path, "--notify-poll", "100ms", "--log-level", "debug")
	ctx := context.Background()
	if _, err := s.api.AddPushTarget(ctx, &pb.AddPushTargetRequest{UserId: "merchant",
		Target: &pb.PushTarget{Target: &pb.PushTarget_WebhookUrl{WebhookUrl: hook.URL + "/push"}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.api.SendToUser(ctx, &pb.SendToUserRequest{UserId: "merchant", Message: escalated(`1`, time.Hour, 0, orderNote)}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-hook.Calls:
	case <-time.After(waitFor):
		t.Fatalf("no webhook call; refused %q", hook.Rejected())
	}
	if rej := hook.Rejected(); len(rej) != 0 {
		t.Fatalf("signatures refused: %q", rej)
	}
	if strings.Contains(s.logs.String(), secret) {
		t.Fatal("the secret is in the logs")
	}
}
