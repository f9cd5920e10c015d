package redisengine_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"pushgate/gateway"
	"pushgate/gateway/redisengine"
)

// TestTargetsBoundedPerUser: targets are kept per user, replaced by id,
// bounded, and every node sees the same.
func TestTargetsBoundedPerUser(t *testing.T) {
	c := newCluster(t)
	cfg := gateway.DefaultConfig()
	a := c.start("a", newFakeNode(cfg), redisengine.Options{}, nil)
	b := c.start("b", newFakeNode(cfg), redisengine.Options{}, nil)
	ctx := context.Background()
	for _, id := range []string{"t2", "t1", "t1"} {
		if err := a.AddTarget(ctx, "u", id, []byte("data-"+id), 2); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.AddTarget(ctx, "u", "t3", []byte("x"), 2); !errors.Is(err, gateway.ErrTooManyTargets) {
		t.Fatalf("third target: %v, want ErrTooManyTargets", err)
	}
	ts, err := b.Targets(ctx, "u")
	if err != nil || len(ts) != 2 || ts[0].ID != "t1" || string(ts[0].Data) != "data-t1" || ts[1].ID != "t2" {
		t.Fatalf("targets %+v, %v", ts, err)
	}
	if ok, err := b.RemoveTarget(ctx, "u", "t1"); !ok || err != nil {
		t.Fatalf("remove: %v %v", ok, err)
	}
	if ok, _ := a.RemoveTarget(ctx, "u", "t1"); ok {
		t.Fatal("removed twice")
	}
	if err := a.AddTarget(ctx, "u", "t3", []byte("x"), 2); err != nil {
		t.Fatalf("after a removal: %v", err)
	}
}

// TestEscalationClaimedOnceAcrossNodes: an escalation scheduled by a node
// that then dies is claimed by exactly one of the nodes left, however
// many ask at once; one whose message was acknowledged first comes back
// cancelled.
func TestEscalationClaimedOnceAcrossNodes(t *testing.T) {
	c := newCluster(t)
	cfg := gateway.DefaultConfig()
	ctx := context.Background()
	dead := c.start("dead", newFakeNode(cfg), redisengine.Options{}, nil)
	nodes := []*redisengine.Engine{
		c.start("b", newFakeNode(cfg), redisengine.Options{}, nil),
		c.start("c", newFakeNode(cfg), redisengine.Options{}, nil),
	}
	acked := send(t, dead, []string{"u"}, stored(`{"n":1}`))
	kept := send(t, dead, []string{"u"}, stored(`{"n":2}`))
	due := time.Now().Add(300 * time.Millisecond)
	for _, s := range []gateway.Sent{acked, kept} {
		if err := dead.ScheduleEscalation(ctx, gateway.Escalation{UserID: "u", MessageID: s.ID, Due: due, IfUnacked: true, Data: []byte("n-" + s.ID)}, 100); err != nil {
			t.Fatal(err)
		}
	}
	if err := dead.ScheduleEscalation(ctx, gateway.Escalation{UserID: "v", MessageID: kept.ID, Due: due, Data: []byte("always")}, 2); !errors.Is(err, gateway.ErrTooManyEscalations) {
		t.Fatalf("third pending escalation with a bound of 2: %v", err)
	}
	if err := dead.Ack(ctx, "u", "conn", []string{acked.ID}, false); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := nodes[0].ClaimEscalation(ctx, "u", kept.ID, time.Now()); ok {
		t.Fatal("claimed before it was due")
	}
	if err := dead.Close(ctx); err != nil { // it never claims
		t.Fatal(err)
	}
	var mu sync.Mutex
	got := map[string]gateway.ClaimedEscalation{}
	var claims atomic.Int32
	deadline := time.Now().Add(20 * time.Second)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e := nodes[i%2]
			for time.Now().Before(deadline) {
				var cs []gateway.ClaimedEscalation
				if i == 0 {
					if c, ok, err := e.ClaimEscalation(ctx, "u", kept.ID, time.Now()); err == nil && ok {
						cs = append(cs, c)
					}
				} else {
					cs, _ = e.ClaimEscalations(ctx, time.Now(), 10)
				}
				mu.Lock()
				for _, c := range cs {
					claims.Add(1)
					got[c.MessageID] = c
				}
				n := len(got)
				mu.Unlock()
				if n == 2 {
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}
	wg.Wait()
	if claims.Load() != 2 {
		t.Fatalf("%d claims for 2 escalations: %+v", claims.Load(), got)
	}
	if g := got[kept.ID]; g.Cancelled || string(g.Data) != "n-"+kept.ID || g.UserID != "u" {
		t.Fatalf("unacked message: %+v", g)
	}
	if g := got[acked.ID]; !g.Cancelled {
		t.Fatalf("acked message: %+v, want cancelled", g)
	}
	if n := nodes[0].PendingEscalations(); n != 0 {
		t.Fatalf("%d pending after the claims", n)
	}
}
