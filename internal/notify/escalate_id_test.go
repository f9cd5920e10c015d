package notify

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"pushgate/gateway"
)

// A recipient whose copy got another id than the send's (a sharded engine,
// Delivery.MessageID) has its escalation recorded under that id, the one
// its inbox and acks know; the others under the send's.
func TestEscalateUsesEachRecipientsID(t *testing.T) {
	hub, err := gateway.NewHub(gateway.Config{}, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry(), gateway.MemoryEngine())
	if err != nil {
		t.Fatal(err)
	}
	store := hub.Engine().(Store)
	x := NewEscalator(store, NewDispatcher(Config{}, prometheus.NewRegistry()), EscalatorConfig{}, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	now := time.Now()
	sent := gateway.Sent{ID: "01M8Y0WKCZ501VQNE052S3S086", Time: now, Users: []gateway.Delivery{
		{UserID: "a", Online: true, Delivered: 1},
		{UserID: "b", Online: true, Delivered: 1, MessageID: "01M8Y0WKCZ501VQNE052S3S087"},
	}}
	x.Escalate(context.Background(), sent, Spec{After: time.Minute, Deadline: now.Add(time.Hour)})
	later := now.Add(2 * time.Minute)
	for _, c := range []struct{ user, id string }{{"a", sent.ID}, {"b", sent.Users[1].MessageID}} {
		if _, ok, err := store.ClaimEscalation(context.Background(), c.user, c.id, later); err != nil || !ok {
			t.Fatalf("escalation of %s under %s: ok %v, err %v", c.user, c.id, ok, err)
		}
	}
	if _, ok, _ := store.ClaimEscalation(context.Background(), "b", sent.ID, later); ok {
		t.Fatal("b's escalation recorded under the send's id")
	}
}
