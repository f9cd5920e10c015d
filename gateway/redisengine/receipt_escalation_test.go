package redisengine_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"pushgate/gateway"
	"pushgate/gateway/redisengine"
)

// TestEscalationInReceipt: a recipient's escalation is in the message's
// receipt as every node reads it: scheduled with its due time by one
// node, fired by the node that claims it, and its results as reported,
// at most gateway.MaxEscalationResults, their text kept as it was.
func TestEscalationInReceipt(t *testing.T) {
	c := newCluster(t)
	cfg := gateway.DefaultConfig()
	a := c.start("a", newFakeNode(cfg), redisengine.Options{}, nil)
	b := c.start("b", newFakeNode(cfg), redisengine.Options{}, nil)
	ctx := context.Background()
	s := send(t, a, []string{"u", "v"}, stored(`{"n":1}`))
	due := time.Now().Add(200 * time.Millisecond)
	if err := a.ScheduleEscalation(ctx, gateway.Escalation{UserID: "u", MessageID: s.ID, Due: due, IfUnacked: true, Data: []byte("d")}, 10); err != nil {
		t.Fatal(err)
	}
	r, err := b.Receipt(ctx, s.ID, []string{"u", "v"}, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	e := r.Recipients[0].Escalation
	if e == nil || e.State != gateway.EscalationScheduled || e.Due.Sub(due).Abs() > 100*time.Millisecond || !e.Time.IsZero() || r.Recipients[1].Escalation != nil {
		t.Fatalf("scheduled: %+v, v's %+v", e, r.Recipients[1].Escalation)
	}
	var claimed bool
	for end := time.Now().Add(10 * time.Second); !claimed && time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		_, claimed, err = b.ClaimEscalation(ctx, "u", s.ID, time.Now())
		if err != nil {
			t.Fatal(err)
		}
	}
	if !claimed {
		t.Fatal("never claimed")
	}
	detail := `410 Gone: {"error":"unsubscribed"} — 已退订`
	for i := range gateway.MaxEscalationResults + 4 {
		if err := b.RecordEscalationResult(ctx, "u", s.ID, gateway.EscalationResult{Channel: "webpush", TargetID: fmt.Sprintf("webpush:%02d", i), Result: "gone", Detail: detail}); err != nil {
			t.Fatal(err)
		}
	}
	r, err = a.Receipt(ctx, s.ID, []string{"u"}, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	e = r.Recipients[0].Escalation
	if e.State != gateway.EscalationFired || e.Time.Before(due.Add(-50*time.Millisecond)) || len(e.Results) != gateway.MaxEscalationResults {
		t.Fatalf("fired: %+v", e)
	}
	if g := e.Results[3]; g.TargetID != "webpush:03" || g.Detail != detail || g.Result != "gone" || g.Channel != "webpush" || g.Time.IsZero() {
		t.Fatalf("result %+v", g)
	}
	// A result for a recipient never scheduled: not scheduled.
	if err := a.RecordEscalationResult(ctx, "v", s.ID, gateway.EscalationResult{Result: "dropped", Detail: "not scheduled: too many"}); err != nil {
		t.Fatal(err)
	}
	r, _ = b.Receipt(ctx, s.ID, []string{"v"}, 0, 0)
	if e := r.Recipients[0].Escalation; e == nil || e.State != gateway.EscalationNotScheduled || len(e.Results) != 1 {
		t.Fatalf("v: %+v", e)
	}
}
