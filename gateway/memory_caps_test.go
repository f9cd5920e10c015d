package gateway

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"pushgate/internal/promtest"
)

// All inboxes together stay within InboxTotalMessages and InboxTotalBytes:
// past them a message is not stored (the caller is told), room made by an
// ack is used again, and a client resuming from before a message that was
// not stored is told it may have lost something.
func TestMemoryInboxTotalCaps(t *testing.T) {
	h, reg := hubWithRegistry(t, Config{InboxTotalMessages: 3, InboxTotalBytes: 1000})
	e := h.Engine()
	ctx := context.Background()
	before := NewID()
	p := Push{Kind: KindJSON, Data: []byte(`{}`), TTL: time.Minute}
	sent, err := e.SendToUsers(ctx, []string{"a", "b", "c", "d", "e"}, p)
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range sent.Users {
		if d.Stored != (i < 3) {
			t.Fatalf("user %d stored = %v, want %v", i, d.Stored, i < 3)
		}
	}
	if n := e.Inboxed(); n != 3 {
		t.Fatalf("inboxed = %d, want 3", n)
	}
	if v := promtest.Value(t, reg, "pushgate_inbox_full_total"); v != 2 {
		t.Fatalf("inbox full = %v, want 2", v)
	}
	// d resumes from before the message it did not get kept: a possible loss.
	j, err := e.Join(ctx, JoinRequest{UserID: "d", ConnID: "c1", LastID: before, Resume: true})
	if err != nil || j.Complete {
		t.Fatalf("resume from before the refused message: complete = %v, %v; want false", j.Complete, err)
	}
	j, err = e.Join(ctx, JoinRequest{UserID: "d", ConnID: "c2", LastID: sent.ID, Resume: true})
	if err != nil || !j.Complete {
		t.Fatalf("resume from the refused message on: complete = %v, %v; want true", j.Complete, err)
	}
	// An ack makes room.
	if err := e.Ack(ctx, "a", "c3", []string{sent.ID}, false); err != nil {
		t.Fatal(err)
	}
	if sent, _ = e.SendToUsers(ctx, []string{"e"}, p); !sent.Users[0].Stored {
		t.Fatal("not stored after an ack made room")
	}

	// The byte cap: a message counts in each inbox it is in.
	h2, _ := hubWithRegistry(t, Config{InboxTotalBytes: 250})
	big := Push{Kind: KindText, Data: make([]byte, 100), TTL: time.Minute}
	sent, _ = h2.Engine().SendToUsers(ctx, []string{"a", "b", "c"}, big)
	if got := fmt.Sprint(sent.Users[0].Stored, sent.Users[1].Stored, sent.Users[2].Stored); got != "true true false" {
		t.Fatalf("stored: %s, want true true false", got)
	}
	me := h2.Engine().(*memoryEngine)
	if n := me.inboxBytes.Load(); n != 200 {
		t.Fatalf("inbox bytes = %d, want 200", n)
	}
	// Expiry gives the bytes back too.
	me.expire(time.Now().Add(2 * time.Minute))
	if n, m := me.inboxBytes.Load(), me.inboxed.Load(); n != 0 || m != 0 {
		t.Fatalf("after expiry: %d bytes, %d messages, want none", n, m)
	}
}

// The idempotency table holds results of at most IdempotencyEntries weight
// (a SendToUsers result weighs one per user): a new key past it is refused,
// a remembered key still answers, and expired keys make room.
func TestMemoryIdempotencyCap(t *testing.T) {
	h := newTestHub(t, Config{IdempotencyEntries: 4})
	t.Cleanup(func() { h.Engine().Close(context.Background()) })
	e := h.Engine()
	ctx := context.Background()
	push := func(key string, window time.Duration) Push {
		return Push{Kind: KindJSON, Data: []byte(`{}`), Idempotency: Idempotency{Key: key, Window: window}}
	}
	first, err := e.SendToUsers(ctx, []string{"u"}, push("k1", time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.SendToUsers(ctx, []string{"u", "v", "w"}, push("k2", 100*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	_, err = e.SendToUsers(ctx, []string{"u"}, push("k3", time.Hour))
	if !errors.Is(err, ErrIdempotencyFull) {
		t.Fatalf("new key at the cap: %v, want ErrIdempotencyFull", err)
	}
	again, err := e.SendToUsers(ctx, []string{"u"}, push("k1", time.Hour))
	if err != nil || again.ID != first.ID {
		t.Fatalf("remembered key at the cap: %v, %v; want the first result", again.ID, err)
	}
	// k2 expires; its weight is given back (a full table is swept at most
	// once a second).
	time.Sleep(1100 * time.Millisecond)
	if _, err := e.SendToUsers(ctx, []string{"u"}, push("k3", time.Hour)); err != nil {
		t.Fatalf("new key after one expired: %v", err)
	}
	me := e.(*memoryEngine)
	me.idem.mu.Lock()
	weight, n := me.idem.weight, len(me.idem.entries)
	me.idem.mu.Unlock()
	if weight != 2 || n != 2 {
		t.Fatalf("table holds %d entries of weight %d, want 2 of 2", n, weight)
	}
}
