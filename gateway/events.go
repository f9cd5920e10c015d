package gateway

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// EventKind is what an Event reports.
type EventKind uint8

const (
	EventUserOnline EventKind = iota + 1
	EventUserOffline
	EventMessageAcked
	EventClientMessage
)

// Event is something that happened on the client side, for WatchEvents.
type Event struct {
	Kind      EventKind
	Time      time.Time
	UserID    string
	ConnID    string
	MessageID string // EventMessageAcked
	Implicit  bool   // EventMessageAcked: written to a raw client
	Topic     string // EventClientMessage
	Type      string // EventClientMessage
	DataKind  Kind   // EventClientMessage
	Data      []byte // EventClientMessage
}

// Watcher receives events. C is closed when the watcher is removed; Lost is
// closed when it fell more than its buffer behind (and was removed).
type Watcher struct {
	C    <-chan Event
	Lost <-chan struct{}

	c    chan Event
	lost chan struct{}
	mask uint8
	once sync.Once
}

// watchers is the set of WatchEvents streams. emit never blocks.
type watchers struct {
	mu   sync.Mutex
	list atomic.Pointer[[]*Watcher] // copy-on-write
}

// Watch implements Node: it registers a watcher for the given kinds (none:
// all) with room for buffer events. Call Unwatch when done. (The API calls
// the engine's Watch, which makes sure events of every node reach it.)
func (h *Hub) Watch(kinds []EventKind, buffer int) *Watcher {
	w := &Watcher{c: make(chan Event, buffer), lost: make(chan struct{})}
	w.C, w.Lost = w.c, w.lost
	for _, k := range kinds {
		w.mask |= 1 << k
	}
	if w.mask == 0 {
		w.mask = 0xff
	}
	ws := &h.watchers
	ws.mu.Lock()
	var next []*Watcher
	if cur := ws.list.Load(); cur != nil {
		next = append(next, *cur...)
	}
	next = append(next, w)
	ws.list.Store(&next)
	ws.mu.Unlock()
	h.metrics.watchers.Inc()
	return w
}

// Unwatch implements Node: it removes w. Safe to call more than once.
func (h *Hub) Unwatch(w *Watcher) {
	ws := &h.watchers
	ws.mu.Lock()
	defer ws.mu.Unlock()
	cur := ws.list.Load()
	if cur == nil {
		return
	}
	next := make([]*Watcher, 0, len(*cur))
	found := false
	for _, x := range *cur {
		if x == w {
			found = true
			continue
		}
		next = append(next, x)
	}
	if found {
		ws.list.Store(&next)
		h.metrics.watchers.Dec()
	}
}

// Watchers returns the open WatchEvents streams on this node.
func (h *Hub) Watchers() int {
	if cur := h.watchers.list.Load(); cur != nil {
		return len(*cur)
	}
	return 0
}

// upstream hands a client's message to the engine, for the WatchEvents
// streams of every node.
func (h *Hub) upstream(e Event) error {
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.EngineTimeout)
	defer cancel()
	return h.eng.Upstream(ctx, e)
}

// Emit implements Node: it hands e to every watcher here that wants it. A
// watcher whose buffer is full is cut off (Lost closes) rather than allowed
// to stall delivery. Never blocks.
func (h *Hub) Emit(e Event) {
	cur := h.watchers.list.Load()
	if cur == nil || len(*cur) == 0 {
		return
	}
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	for _, w := range *cur {
		if w.mask&(1<<e.Kind) == 0 {
			continue
		}
		select {
		case w.c <- e:
		default:
			w.once.Do(func() {
				close(w.lost)
				h.metrics.watchersCut.Inc()
				go h.Unwatch(w)
			})
		}
	}
}
