package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"pushgate/internal/promtest"
)

// hubWithRegistry is newTestHub with the registry its metrics are on.
func hubWithRegistry(t *testing.T, cfg Config) (*Hub, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	h, err := NewHub(cfg, slog.New(slog.DiscardHandler), reg, MemoryEngine())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Engine().Close(context.Background()) })
	return h, reg
}

func recvEvent(t *testing.T, w *Watcher) Event {
	t.Helper()
	select {
	case e := <-w.C:
		return e
	case <-w.Lost:
		t.Fatal("watcher cut")
	case <-time.After(10 * time.Second):
		t.Fatal("no event")
	}
	return Event{}
}

// Events reach each watcher in the order Emit was called, whoever calls it;
// a watcher gets exactly the events emitted after Watch returned.
func TestEmitKeepsOrderAndStartsAtWatch(t *testing.T) {
	h := newTestHub(t, Config{})
	early := h.Watch(nil, 1000)
	var mu sync.Mutex // an engine's lock: Emit is called under it
	emit := func(from, to int) {
		for i := from; i < to; i++ {
			mu.Lock()
			h.Emit(Event{Kind: EventClientMessage, UserID: "u", Type: fmt.Sprint(i)})
			mu.Unlock()
		}
	}
	emit(0, 100)
	late := h.Watch([]EventKind{EventClientMessage}, 1000)
	emit(100, 200)
	for i := range 200 {
		if e := recvEvent(t, early); e.Type != fmt.Sprint(i) {
			t.Fatalf("early watcher: event %d is %s", i, e.Type)
		}
	}
	for i := 100; i < 200; i++ {
		if e := recvEvent(t, late); e.Type != fmt.Sprint(i) {
			t.Fatalf("late watcher: event %d is %s", i-100, e.Type)
		}
	}
	select {
	case e := <-late.C:
		t.Fatalf("late watcher got %s as well", e.Type)
	default:
	}
	// A kind it did not ask for does not reach it.
	h.Emit(Event{Kind: EventUserOnline, UserID: "v"})
	h.Emit(Event{Kind: EventClientMessage, UserID: "v", Type: "last"})
	if e := recvEvent(t, late); e.Type != "last" {
		t.Fatalf("late watcher got %+v, want the client message", e)
	}
}

// A watcher that does not read is cut when its buffer is full; the others
// go on receiving.
func TestSlowWatcherIsCutAndOthersReceive(t *testing.T) {
	h, reg := hubWithRegistry(t, Config{})
	slow := h.Watch(nil, 4)
	fast := h.Watch(nil, 100)
	for i := range 50 {
		h.Emit(Event{Kind: EventUserOnline, UserID: fmt.Sprint(i)})
		if e := recvEvent(t, fast); e.UserID != fmt.Sprint(i) {
			t.Fatalf("fast watcher: %+v", e)
		}
	}
	select {
	case <-slow.Lost:
	case <-time.After(10 * time.Second):
		t.Fatal("slow watcher not cut")
	}
	if v := promtest.Value(t, reg, "pushgate_watchers_cut_total"); v != 1 {
		t.Fatalf("watchers cut = %v, want 1", v)
	}
	for h.Watchers() != 1 {
		time.Sleep(time.Millisecond)
	}
}

// Events that find the queue full are dropped, and every watcher that
// would have got them is cut (it fell behind), not left with a gap.
func TestFullEventQueueCutsWatchers(t *testing.T) {
	h := newTestHub(t, Config{})
	w := h.Watch(nil, maxEventQueue+10)
	ws := &h.watchers
	ws.qmu.Lock()
	ws.running = true // as if the dispatcher were busy: events only queue
	ws.qmu.Unlock()
	for range maxEventQueue + 1 {
		h.Emit(Event{Kind: EventUserOnline, UserID: "u"})
	}
	h.dispatchEvents() // what the dispatcher would have done, then it stops
	select {
	case <-w.Lost:
	default:
		t.Fatal("a watcher that missed an event was not cut")
	}
	// A watcher registered after the drop is not concerned.
	later := h.Watch(nil, 10)
	h.Emit(Event{Kind: EventUserOffline, UserID: "u"})
	if e := recvEvent(t, later); e.Kind != EventUserOffline {
		t.Fatalf("later watcher got %+v", e)
	}
}
