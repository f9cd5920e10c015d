package gateway

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TestMemoryNotifyStore: the memory engine keeps targets bounded per
// user, and hands each due escalation out once, cancelled when its
// message was acknowledged first.
func TestMemoryNotifyStore(t *testing.T) {
	h, err := NewHub(DefaultConfig(), slog.New(slog.DiscardHandler), prometheus.NewRegistry(), MemoryEngine())
	if err != nil {
		t.Fatal(err)
	}
	defer h.Engine().Close(context.Background())
	s := h.Engine().(NotifyStore)
	ctx := context.Background()
	for _, id := range []string{"t2", "t1", "t1"} {
		if err := s.AddTarget(ctx, "u", id, []byte("data-"+id), 2); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.AddTarget(ctx, "u", "t3", nil, 2); !errors.Is(err, ErrTooManyTargets) {
		t.Fatalf("third target: %v", err)
	}
	ts, _ := s.Targets(ctx, "u")
	if len(ts) != 2 || ts[0].ID != "t1" || string(ts[0].Data) != "data-t1" || ts[1].ID != "t2" {
		t.Fatalf("targets %+v", ts)
	}
	if ok, _ := s.RemoveTarget(ctx, "u", "t1"); !ok {
		t.Fatal("not removed")
	}
	if ok, _ := s.RemoveTarget(ctx, "u", "t1"); ok {
		t.Fatal("removed twice")
	}

	p := Push{Type: "t", Kind: KindJSON, Data: []byte(`{}`), TTL: time.Hour}
	acked, _ := h.Engine().SendToUsers(ctx, []string{"u"}, p)
	kept, _ := h.Engine().SendToUsers(ctx, []string{"u"}, p)
	now := time.Now()
	for _, m := range []string{acked.ID, kept.ID} {
		if err := s.ScheduleEscalation(ctx, Escalation{UserID: "u", MessageID: m, Due: now.Add(time.Minute), IfUnacked: true, Data: []byte(m)}, 2); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.ScheduleEscalation(ctx, Escalation{UserID: "v", MessageID: kept.ID, Due: now}, 2); !errors.Is(err, ErrTooManyEscalations) {
		t.Fatalf("third escalation: %v", err)
	}
	h.Engine().Ack(ctx, "u", "c", []string{acked.ID}, false)
	if cs, _ := s.ClaimEscalations(ctx, now, 10); len(cs) != 0 {
		t.Fatalf("claimed before due: %+v", cs)
	}
	later := now.Add(2 * time.Minute)
	c, ok, _ := s.ClaimEscalation(ctx, "u", kept.ID, later)
	if !ok || c.Cancelled || string(c.Data) != kept.ID {
		t.Fatalf("claim of the unacked message: %+v %v", c, ok)
	}
	cs, _ := s.ClaimEscalations(ctx, later, 10)
	if len(cs) != 1 || cs[0].MessageID != acked.ID || !cs[0].Cancelled {
		t.Fatalf("claims %+v, want the acked message, cancelled", cs)
	}
	if cs, _ := s.ClaimEscalations(ctx, later, 10); len(cs) != 0 || s.PendingEscalations() != 0 {
		t.Fatalf("claimed again: %+v", cs)
	}
}
