package redisengine_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"pushgate/gateway"
	"pushgate/gateway/redisengine"
)

func receipt(e *redisengine.Engine, id string, users ...string) (gateway.Receipt, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return e.Receipt(ctx, id, users, 0, 100)
}

// Receipts in Redis are evicted oldest first past the cap, expire with
// their retention (counted from the ttl's end for a stored message), and
// the count of recipients kept follows both.
func TestReceiptRetentionAndCap(t *testing.T) {
	c := newCluster(t)
	cfg := testConfig()
	cfg.ReceiptRetention, cfg.ReceiptMax = 3*time.Second, 3
	f := newFakeNode(cfg)
	e := c.start("a", f, redisengine.Options{}, nil)
	live := gateway.Push{Kind: gateway.KindJSON, Data: []byte(`1`)}

	first := send(t, e, []string{"u1", "u2"}, live).ID
	stored := send(t, e, []string{"u1"}, gateway.Push{Kind: gateway.KindJSON, Data: []byte(`2`), TTL: 200 * time.Millisecond}).ID
	if n := e.Receipts(); n != 3 {
		t.Fatalf("recipients kept %d, want 3", n)
	}
	eventually(t, "the stored message to read as expired", func() bool {
		r, err := receipt(e, stored, "u1")
		if err != nil {
			t.Fatalf("the stored message's receipt: %v", err)
		}
		return r.Recipients[0].State == gateway.StateExpired && r.Recipients[0].EndTime.Equal(r.Expires)
	})

	// Past the cap the oldest receipt is evicted.
	a := send(t, e, []string{"v1", "v2"}, gateway.Push{Kind: gateway.KindJSON, Data: []byte(`3`), TTL: time.Hour}).ID // kept until evicted
	if _, err := receipt(e, first); !errors.Is(err, gateway.ErrNoReceipt) || !strings.Contains(err.Error(), "evicted;") {
		t.Fatalf("oldest receipt past the cap: %v", err)
	}
	if n := e.Receipts(); n != 3 {
		t.Fatalf("recipients kept %d, want 3", n)
	}

	// The stored message's receipt goes with its retention after the ttl;
	// the next send drops it from the count and evicts past the cap.
	eventually(t, "the stored message's receipt to go", func() bool {
		_, err := receipt(e, stored)
		return errors.Is(err, gateway.ErrNoReceipt)
	})
	b := send(t, e, []string{"v3", "v4"}, live).ID
	if _, err := receipt(e, a); !errors.Is(err, gateway.ErrNoReceipt) || !strings.Contains(err.Error(), "evicted") {
		t.Fatalf("receipt past the cap: %v", err)
	}
	if r, err := receipt(e, b); err != nil || r.Total != 2 || len(r.Recipients) != 2 || r.Recipients[0].State != gateway.StateUndelivered {
		t.Fatalf("newest receipt: %+v, %v", r, err)
	}
	if n := e.Receipts(); n != 2 {
		t.Fatalf("recipients kept %d, want 2", n)
	}
	if ev := f.inboxCounts().ReceiptsEvicted; ev != 2 {
		t.Fatalf("evictions counted %d, want 2", ev)
	}
}
