package gateway

import (
	"context"
	"math"
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
	EventMessageEscalated
	// EventTopicJoin and EventTopicLeave: a user's first subscription to
	// a topic in the deployment opened, or its last one closed (Topic
	// set); only for topics matching Config.TopicPresenceEvents.
	EventTopicJoin
	EventTopicLeave
)

// Event is something that happened on the client side, for WatchEvents.
type Event struct {
	Kind      EventKind
	Time      time.Time
	UserID    string
	ConnID    string
	MessageID string // EventMessageAcked
	Implicit  bool   // EventMessageAcked: written to a raw client
	Topic     string // EventClientMessage, EventTopicJoin, EventTopicLeave
	Type      string // EventClientMessage
	DataKind  Kind   // EventClientMessage
	Data      []byte // EventClientMessage
	// Cursor is the event's place in the event log (eventlog.go), Pos
	// its position there; set by the engine when it logs the event.
	Cursor string
	Pos    EventPos
	// Log is which of the engine's logs holds the event (a shard's, with
	// the sharded Redis engine; 0 with one log): see ReadPos.
	Log int
	// EventMessageEscalated (MessageID set too): the channel and target a
	// notification went to, the result (internal/notify's Result) and the
	// provider's reason.
	Escalation *EscalationResult
}

// EscalationResult is what an escalation to one push target came to.
type EscalationResult struct {
	Channel  string `json:"ch,omitempty"`
	TargetID string `json:"tg,omitempty"`
	Result   string `json:"r"`
	Detail   string `json:"dt,omitempty"`
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
	// since is the last event queued before the watcher was registered:
	// it gets only later ones.
	since atomic.Uint64
}

// maxEventQueue caps the events waiting for the dispatcher (Emit). Past it
// an event cannot reach the streams, which are then all cut, as a stream
// that falls more than its buffer behind is.
const maxEventQueue = 1 << 16

// watchers is this node's WatchEvents streams and the queue of events on
// their way to them. Emit only appends to the queue (never blocks, costs the
// same however many streams there are), so an engine may call it under its
// own locks; one goroutine, dispatchEvents, running while the queue is not
// empty, hands each event to the streams that want it, in the order Emit was
// called.
type watchers struct {
	mu   sync.Mutex                 // serializes changes of list
	list atomic.Pointer[[]*Watcher] // copy-on-write

	qmu     sync.Mutex
	queue   []queuedEvent // guarded by qmu
	spare   []queuedEvent // guarded by qmu: the dispatcher's last batch, reused
	seq     uint64        // guarded by qmu: events queued so far
	lostAt  uint64        // guarded by qmu: the last event dropped on a full queue (0: none)
	running bool          // guarded by qmu: dispatchEvents is running
}

type queuedEvent struct {
	Event
	seq uint64
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
	// Nothing reaches it until since is set, and since is set under qmu
	// after it is in the list: every event queued after that reaches it,
	// none queued before.
	w.since.Store(math.MaxUint64)
	ws := &h.watchers
	ws.mu.Lock()
	var next []*Watcher
	if cur := ws.list.Load(); cur != nil {
		next = append(next, *cur...)
	}
	next = append(next, w)
	ws.list.Store(&next)
	ws.mu.Unlock()
	ws.qmu.Lock()
	w.since.Store(ws.seq)
	ws.qmu.Unlock()
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

// CutWatchers implements Node.
func (h *Hub) CutWatchers() {
	if cur := h.watchers.list.Load(); cur != nil {
		for _, w := range *cur {
			h.cut(w)
		}
	}
}

// upstream hands a client's message to the engine, for the WatchEvents
// streams of every node.
func (h *Hub) upstream(e Event) error {
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.EngineTimeout)
	defer cancel()
	return h.eng.Upstream(ctx, e)
}

// Emit implements Node: it queues e for the watchers here. It never blocks
// and does no per-watcher work: engines call it under their own locks (the
// memory engine under the user's stripe), so the order of one user's events
// is the order of the calls, which the dispatcher keeps.
func (h *Hub) Emit(e Event) {
	if cur := h.watchers.list.Load(); cur == nil || len(*cur) == 0 {
		return
	}
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	ws := &h.watchers
	ws.qmu.Lock()
	ws.seq++
	if len(ws.queue) >= maxEventQueue {
		ws.lostAt = ws.seq // the dispatcher cuts the watchers that miss it
	} else {
		ws.queue = append(ws.queue, queuedEvent{e, ws.seq})
	}
	start := !ws.running
	ws.running = true
	ws.qmu.Unlock()
	if start {
		go h.dispatchEvents()
	}
}

// dispatchEvents hands the queued events to the watchers, in order, until
// the queue is empty. A watcher whose buffer is full is cut off (Lost
// closes) rather than allowed to stall the others.
func (h *Hub) dispatchEvents() {
	ws := &h.watchers
	for {
		ws.qmu.Lock()
		batch, lostAt := ws.queue, ws.lostAt
		ws.lostAt = 0
		if len(batch) == 0 && lostAt == 0 {
			ws.running = false
			ws.qmu.Unlock()
			return
		}
		ws.queue, ws.spare = ws.spare[:0], nil
		ws.qmu.Unlock()

		cur := ws.list.Load()
		if cur != nil && lostAt > 0 {
			for _, w := range *cur {
				if w.since.Load() < lostAt {
					h.cut(w) // an event it wanted was dropped
				}
			}
		}
		for i := range batch {
			if cur != nil {
				h.fanoutEvent(*cur, &batch[i])
			}
		}
		clear(batch)
		ws.qmu.Lock()
		if cap(batch) <= 1024 {
			ws.spare = batch[:0]
		}
		ws.qmu.Unlock()
	}
}

func (h *Hub) fanoutEvent(list []*Watcher, e *queuedEvent) {
	for _, w := range list {
		if w.mask&(1<<e.Kind) == 0 || e.seq <= w.since.Load() {
			continue
		}
		select {
		case w.c <- e.Event:
		default:
			h.cut(w)
		}
	}
}

// cut ends w: it fell behind.
func (h *Hub) cut(w *Watcher) {
	w.once.Do(func() {
		close(w.lost)
		h.metrics.watchersCut.Inc()
		go h.Unwatch(w)
	})
}
