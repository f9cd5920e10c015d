package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TestMemoryEscalationInReceipt: the memory engine's receipt holds a
// recipient's escalation: scheduled with its due time, cancelled when
// claimed after an ack, fired otherwise, with the results reported, at
// most MaxEscalationResults; a trim makes it due at the trim.
func TestMemoryEscalationInReceipt(t *testing.T) {
	cfg := DefaultConfig()
	cfg.InboxMessages = 2
	h, err := NewHub(cfg, slog.New(slog.DiscardHandler), prometheus.NewRegistry(), MemoryEngine())
	if err != nil {
		t.Fatal(err)
	}
	e := h.Engine()
	defer e.Close(context.Background())
	s := e.(NotifyStore)
	ctx := context.Background()
	p := Push{Type: "t", Kind: KindJSON, Data: []byte(`{}`), TTL: time.Hour}
	acked, _ := e.SendToUsers(ctx, []string{"u"}, p)
	kept, _ := e.SendToUsers(ctx, []string{"u", "v"}, p)
	due := time.Now().Add(50 * time.Millisecond)
	for _, m := range []string{acked.ID, kept.ID} {
		if err := s.ScheduleEscalation(ctx, Escalation{UserID: "u", MessageID: m, Due: due, IfUnacked: true}, 10); err != nil {
			t.Fatal(err)
		}
	}
	esc := func(id, u string) *EscalationStatus {
		t.Helper()
		r, err := e.Receipt(ctx, id, []string{u}, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		return r.Recipients[0].Escalation
	}
	if g := esc(kept.ID, "u"); g == nil || g.State != EscalationScheduled || !g.Due.Equal(due) {
		t.Fatalf("scheduled: %+v", g)
	}
	if g := esc(kept.ID, "v"); g != nil {
		t.Fatalf("v asked for none: %+v", g)
	}
	if err := e.Ack(ctx, "u", "c1", []string{acked.ID}, false); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(due))
	cs, err := s.ClaimEscalations(ctx, time.Now(), 10)
	if err != nil || len(cs) != 2 {
		t.Fatalf("claimed %+v %v", cs, err)
	}
	if g := esc(acked.ID, "u"); g.State != EscalationCancelled || g.Time.Before(due) {
		t.Fatalf("acked: %+v", g)
	}
	for i := range MaxEscalationResults + 3 {
		s.RecordEscalationResult(ctx, "u", kept.ID, EscalationResult{Channel: "webpush", TargetID: fmt.Sprint(i), Result: "sent"})
	}
	if g := esc(kept.ID, "u"); g.State != EscalationFired || len(g.Results) != MaxEscalationResults || g.Results[0].TargetID != "0" {
		t.Fatalf("fired: %+v", g)
	}

	// Trimmed unacknowledged (two newer messages in an inbox of two): due
	// at the trim, and fired whatever comes next.
	first, _ := e.SendToUsers(ctx, []string{"w"}, p)
	later := time.Now().Add(time.Hour)
	if err := s.ScheduleEscalation(ctx, Escalation{UserID: "w", MessageID: first.ID, Due: later, IfUnacked: true}, 10); err != nil {
		t.Fatal(err)
	}
	e.SendToUsers(ctx, []string{"w"}, p)
	e.SendToUsers(ctx, []string{"w"}, p)
	if g := esc(first.ID, "w"); g.State != EscalationScheduled || !g.Due.Before(later) {
		t.Fatalf("trimmed: %+v, want due at the trim", g)
	}
	c, ok, err := s.ClaimEscalation(ctx, "w", first.ID, time.Now())
	if err != nil || !ok || c.Cancelled {
		t.Fatalf("trimmed claim %+v %v %v, want fired", c, ok, err)
	}
}
