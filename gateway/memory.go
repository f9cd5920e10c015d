package gateway

import (
	"cmp"
	"container/heap"
	"context"
	"fmt"
	"hash/maphash"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// MemoryEngine is the engine of a single node, with nothing to install:
// ids, inboxes, presence and idempotency keys live in this process and die
// with it (a new epoch at every start, so resuming clients are told
// recovered:false).
//
// It delivers through its Node exactly as the Redis engine does: a send
// takes the lock stripes of its users, gets its id, goes into the inboxes
// and is handed to Node.Deliver while they are held, so ids grow in the
// order each user's messages are delivered; a join takes the user's stripe
// to read the node's count, the replay and the join's Seq.
func MemoryEngine() NewEngine {
	return func(node Node) (Engine, error) { return newMemoryEngine(node), nil }
}

// memoryEngine implements Engine for one node.
type memoryEngine struct {
	// Immutable after construction.
	node Node
	cfg  Config
	seed maphash.Seed
	stop chan struct{}
	done chan struct{}

	stripes  [numShards]memStripe
	tstripes [numShards]memTopicStripe // topic histories (history.go)
	idem     idemTable
	receipts *receiptStore
	notify   memNotify // push targets and escalations (memory_notify.go)
	events   *memLog
	topics   memTopics // topic presence (presence.go)

	consumersMu sync.Mutex
	consumers   map[string]*memConsumer // guarded by consumersMu

	users     atomic.Int64 // users with connections
	conns     atomic.Int64 // their connections, as last read from the node
	inboxed   atomic.Int64 // messages in all inboxes
	topicKept atomic.Int64 // messages in all topic histories
	// topicRecords counts the topics with a record (tstripes); at
	// Config.TopicHistoryTotal a new topic gets none, and topicUnrecorded
	// (unix nanoseconds, only grows) is the time of its message: a
	// resume of a topic with no record from before it cannot tell what
	// it missed.
	topicRecords    atomic.Int64
	topicUnrecorded atomic.Int64
	inboxBytes      atomic.Int64 // their payload bytes (a message in several inboxes counts in each)
	closed          atomic.Bool

	// full remembers the last message not stored because all inboxes were
	// at their cap: a client resuming from before it may have lost it.
	full struct {
		mu    sync.Mutex
		id    string    // guarded by mu
		until time.Time // guarded by mu
	}
}

// memStripe holds the users that hash to it. Lock order: a stripe (several
// in index order), then the hub's locks (inside Node calls).
type memStripe struct {
	mu      sync.Mutex
	online  map[string]memPresence // guarded by mu
	inboxes map[string]*inbox      // guarded by mu
	leaving map[string]*time.Timer // users within PresenceGrace of going offline; guarded by mu
}

// memPresence is one online user's connections, as read from the node.
type memPresence struct {
	conns int
	since time.Time
}

var _ Engine = (*memoryEngine)(nil)

func newMemoryEngine(node Node) *memoryEngine {
	e := &memoryEngine{node: node, cfg: node.Config(), seed: maphash.MakeSeed(), stop: make(chan struct{}), done: make(chan struct{})}
	for i := range e.stripes {
		s := &e.stripes[i]
		s.online = make(map[string]memPresence)
		s.inboxes = make(map[string]*inbox)
		s.leaving = make(map[string]*time.Timer)
		e.tstripes[i].topics = make(map[string]*topicHist)
	}
	e.idem.entries = make(map[string]*idemEntry)
	e.idem.max = e.cfg.IdempotencyEntries
	retention, most := ReceiptBounds(e.cfg)
	e.receipts = newReceiptStore(most, retention)
	e.topics.seed = maphash.MakeSeed()
	e.events = newMemLog(e.cfg.Epoch, e.cfg.EventLogMax, e.cfg.EventLogRetention)
	go e.expireLoop()
	return e
}

func (e *memoryEngine) stripeIndex(userID string) int {
	return int(maphash.String(e.seed, userID) % numShards)
}

func (e *memoryEngine) stripe(userID string) *memStripe { return &e.stripes[e.stripeIndex(userID)] }

// SendToUsers implements Engine.
func (e *memoryEngine) SendToUsers(ctx context.Context, userIDs []string, p Push) (Sent, error) {
	return e.idem.do(ctx, p.Idempotency, func() (Sent, error) {
		var locked [numShards]bool
		for _, u := range userIDs {
			locked[e.stripeIndex(u)] = true
		}
		for i := range e.stripes {
			if locked[i] {
				e.stripes[i].mu.Lock()
			}
		}
		now := time.Now()
		m := p.NewMessage(NewID(), now, "", false)
		m.Trace = SampledSpan(ctx)
		out := Sent{ID: m.ID, Time: now, Users: make([]Delivery, len(userIDs))}
		var c InboxCounts
		var rt receiptTrims
		for i, u := range userIDs {
			s := e.stripe(u)
			d := Delivery{UserID: u}
			switch {
			case m.stored && e.inboxesFull(len(m.Data)):
				// Delivered live below, not kept: the caller sees
				// Stored false, resuming clients a possible loss.
				c.Full++
				e.markFull(m.ID, now)
				rt.full(len(userIDs), i)
			case m.stored:
				b := s.inboxes[u]
				if b == nil {
					b = &inbox{}
					s.inboxes[u] = b
				}
				before := b.bytes
				trimmed := rt.add(u, b, m, now, &e.cfg)
				e.inboxed.Add(int64(1 - trimmed))
				e.inboxBytes.Add(int64(b.bytes - before))
				c.Trimmed += trimmed
				d.Stored = true
			}
			_, d.Online = s.online[u]
			d.Delivered = e.node.Deliver(userIDs[i:i+1], m)
			d.Online = d.Online || d.Delivered > 0
			out.Users[i] = d
		}
		c.ReceiptsEvicted = rt.record(e.receipts, m, now, out.Users)
		for i := range e.stripes {
			if locked[i] {
				e.stripes[i].mu.Unlock()
			}
		}
		if len(rt.users) > 0 {
			e.leftUnseen(rt.users, rt.ids, now)
		}
		if c.Trimmed > 0 || c.Full > 0 || c.ReceiptsEvicted > 0 {
			e.node.CountInbox(c)
		}
		return out, nil
	})
}

// inboxesFull reports whether all inboxes together are at their cap, for a
// message of size payload bytes.
func (e *memoryEngine) inboxesFull(size int) bool {
	return e.inboxed.Load() >= int64(e.cfg.InboxTotalMessages) || e.inboxBytes.Load()+int64(size) > int64(e.cfg.InboxTotalBytes)
}

// markFull remembers that message id was not stored.
func (e *memoryEngine) markFull(id string, now time.Time) {
	f := &e.full
	f.mu.Lock()
	f.id = max(f.id, id)
	f.until = now.Add(e.cfg.InboxMaxTTL)
	f.mu.Unlock()
}

// lostFull reports whether a message after lastID was not stored because
// the inboxes were full.
func (e *memoryEngine) lostFull(lastID string, now time.Time) bool {
	f := &e.full
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.id > lastID && now.Before(f.until)
}

// Broadcast implements Engine.
func (e *memoryEngine) Broadcast(ctx context.Context, p Push, exclude []string) (Sent, error) {
	return e.idem.do(ctx, p.Idempotency, func() (Sent, error) {
		now := time.Now()
		m := p.NewMessage(NewID(), now, "", true)
		m.Trace = SampledSpan(ctx)
		n := e.node.DeliverBroadcast(m, exclude)
		return Sent{ID: m.ID, Time: now, Connections: n}, nil
	})
}

// Publish implements Engine. A topic with history takes its stripe, so
// that its ids grow in the order its messages are delivered and kept
// (history.go).
func (e *memoryEngine) Publish(ctx context.Context, topic string, p Push) (Sent, error) {
	if rule, ok := e.cfg.HistoryOf(topic); ok {
		return e.idem.do(ctx, p.Idempotency, func() (Sent, error) {
			return e.publishKept(ctx, topic, rule, p), nil
		})
	}
	return e.idem.do(ctx, p.Idempotency, func() (Sent, error) {
		now := time.Now()
		m := p.NewMessage(NewID(), now, topic, false)
		m.Trace = SampledSpan(ctx)
		n := e.node.DeliverTopic(m)
		return Sent{ID: m.ID, Time: now, Connections: n}, nil
	})
}

// memTopicStripe holds the histories of the topics that hash to it. Lock
// order: a topic stripe, then the hub's locks (inside Node calls).
type memTopicStripe struct {
	mu     sync.Mutex
	topics map[string]*topicHist // guarded by mu
}

// topicHist is one topic's history: its kept messages (an inbox: entries
// in id order, each with its expiry, and the highest id lost), and the
// last id the topic handed out, remembered for Config.InboxMaxTTL after
// it (a resume from a topic with no record says recovered:false).
type topicHist struct {
	inbox
	last   string
	lastAt time.Time
}

func (e *memoryEngine) topicStripe(topic string) *memTopicStripe {
	return &e.tstripes[maphash.String(e.seed, topic)%numShards]
}

// publishKept publishes p to a topic with history: under the topic's
// stripe the message gets its id, is kept (unless every history together
// is at Config.TopicHistoryTotal) and is delivered.
func (e *memoryEngine) publishKept(ctx context.Context, topic string, rule TopicHistoryRule, p Push) Sent {
	ts := e.topicStripe(topic)
	var c InboxCounts
	ts.mu.Lock()
	now := time.Now()
	m := p.NewMessage(NewID(), now, topic, false)
	m.TTL = TopicHistoryTTL(rule, p.TTL)
	m.Trace = SampledSpan(ctx)
	h := ts.topics[topic]
	if h == nil {
		if e.topicRecords.Load() >= int64(e.cfg.TopicHistoryTotal) {
			// As many topics have a record as messages may be kept in
			// all: delivered, neither kept nor recorded.
			for {
				old := e.topicUnrecorded.Load()
				if old >= now.UnixNano() || e.topicUnrecorded.CompareAndSwap(old, now.UnixNano()) {
					break
				}
			}
			n := e.node.DeliverTopic(m)
			ts.mu.Unlock()
			e.node.CountInbox(InboxCounts{TopicFull: 1})
			return Sent{ID: m.ID, Time: now, Connections: n}
		}
		h = &topicHist{}
		ts.topics[topic] = h
		e.topicRecords.Add(1)
	}
	if n := h.expire(now, e.cfg.InboxMaxTTL); n > 0 {
		e.topicKept.Add(int64(-n))
		c.TopicExpired += n
	}
	if e.topicKept.Load() >= int64(e.cfg.TopicHistoryTotal) {
		// Delivered, not kept: resuming clients from before it are told.
		h.lost = max(h.lost, m.ID)
		h.lostUntil = now.Add(e.cfg.InboxMaxTTL)
		c.TopicFull++
	} else {
		trimmed := h.add(m, now, rule.Messages, math.MaxInt, e.cfg.InboxMaxTTL)
		e.topicKept.Add(int64(1 - trimmed))
		c.TopicStored++
		c.TopicTrimmed += trimmed
	}
	h.last, h.lastAt = m.ID, now
	n := e.node.DeliverTopic(m)
	ts.mu.Unlock()
	e.node.CountInbox(c)
	return Sent{ID: m.ID, Time: now, Connections: n}
}

// TopicHistory implements Engine.
func (e *memoryEngine) TopicHistory(_ context.Context, r TopicHistoryRequest) (TopicHistory, error) {
	out := TopicHistory{Epoch: e.cfg.Epoch, Complete: true}
	ts := e.topicStripe(r.Topic)
	now := time.Now()
	var c InboxCounts
	ts.mu.Lock()
	out.Seq = NewID() // the topic's later ids are made under this lock: greater
	h := ts.topics[r.Topic]
	switch {
	case r.LastID == "":
	case h == nil || !now.Before(h.lastAt.Add(e.cfg.InboxMaxTTL)):
		// No record of the topic: nothing was published to it for
		// InboxMaxTTL. A position from within that time missed nothing;
		// what followed an older one is forgotten.
		// (Nor was a message published after it to a topic that got no
		// record for want of room.)
		at := idTime(r.LastID)
		out.Complete = now.Sub(at) < e.cfg.InboxMaxTTL && at.UnixNano() > e.topicUnrecorded.Load()
	default:
		if n := h.expire(now, e.cfg.InboxMaxTTL); n > 0 {
			e.topicKept.Add(int64(-n))
			c.TopicExpired += n
		}
		out.Replay, out.Complete = h.after(r.LastID, now)
		if h.last <= r.LastID {
			out.Complete = true // nothing was published after it
		}
	}
	ts.mu.Unlock()
	if r.Epoch != "" && r.Epoch != e.cfg.Epoch {
		out.Complete = false // LastID is from histories that no longer exist
	}
	if c.TopicExpired > 0 {
		e.node.CountInbox(c)
	}
	return out, nil
}

// expireTopics drops expired history entries, and the histories with
// nothing left to remember.
func (e *memoryEngine) expireTopics(now time.Time) {
	var c InboxCounts
	for i := range e.tstripes {
		ts := &e.tstripes[i]
		ts.mu.Lock()
		for t, h := range ts.topics {
			if n := h.expire(now, e.cfg.InboxMaxTTL); n > 0 {
				e.topicKept.Add(int64(-n))
				c.TopicExpired += n
			}
			if h.empty(now) && !now.Before(h.lastAt.Add(e.cfg.InboxMaxTTL)) {
				delete(ts.topics, t)
				e.topicRecords.Add(-1)
			}
		}
		ts.mu.Unlock()
	}
	if c.TopicExpired > 0 {
		e.node.CountInbox(c)
	}
}

// Disconnect implements Engine.
func (e *memoryEngine) Disconnect(_ context.Context, userID, text string) (int, error) {
	return e.node.CloseUser(userID, text), nil
}

// Presence implements Engine.
func (e *memoryEngine) Presence(_ context.Context, userIDs []string) ([]OnlineUser, error) {
	out := make([]OnlineUser, len(userIDs))
	for i, u := range userIDs {
		s := e.stripe(u)
		s.mu.Lock()
		p, ok := s.online[u]
		s.mu.Unlock()
		out[i] = OnlineUser{UserID: u}
		if ok {
			out[i].Connections, out[i].Since = p.conns, p.since
		}
	}
	return out, nil
}

// ListOnline implements Engine. Cost is O(users × log limit) per page.
func (e *memoryEngine) ListOnline(_ context.Context, after string, limit int, match func(string) bool) (OnlinePage, error) {
	// The limit+1 smallest ids after `after`; the extra one tells whether
	// there is a next page.
	top := newSmallest(limit+1, func(u OnlineUser) string { return u.UserID })
	for i := range e.stripes {
		s := &e.stripes[i]
		s.mu.Lock()
		for id, p := range s.online {
			if id <= after && after != "" || match != nil && !match(id) {
				continue
			}
			if top.wants(id) {
				top.add(OnlineUser{UserID: id, Connections: p.conns, Since: p.since})
			}
		}
		s.mu.Unlock()
	}
	users := top.sorted()
	page := OnlinePage{TotalUsers: e.users.Load(), TotalConnections: e.conns.Load()}
	if len(users) > limit {
		users, page.More = users[:limit], true
	}
	page.Users = users
	return page, nil
}

// smallest keeps the n items with the smallest ids it is given: a
// max-heap by id, so that the largest kept is the one to replace.
type smallest[T any] struct {
	n     int
	id    func(T) string
	items []T
}

func newSmallest[T any](n int, id func(T) string) *smallest[T] {
	return &smallest[T]{n: n, id: id}
}

// wants reports whether an item with this id would be kept.
func (s *smallest[T]) wants(id string) bool {
	return len(s.items) < s.n || id < s.id(s.items[0])
}

// add keeps x, dropping the largest kept when n are kept; call it only
// when wants(x's id).
func (s *smallest[T]) add(x T) {
	if len(s.items) < s.n {
		heap.Push(s, x)
		return
	}
	s.items[0] = x
	heap.Fix(s, 0)
}

// sorted returns the kept items in id order.
func (s *smallest[T]) sorted() []T {
	slices.SortFunc(s.items, func(a, b T) int { return cmp.Compare(s.id(a), s.id(b)) })
	return s.items
}

func (s *smallest[T]) Len() int           { return len(s.items) }
func (s *smallest[T]) Less(i, j int) bool { return s.id(s.items[i]) > s.id(s.items[j]) }
func (s *smallest[T]) Swap(i, j int)      { s.items[i], s.items[j] = s.items[j], s.items[i] }
func (s *smallest[T]) Push(x any)         { s.items = append(s.items, x.(T)) }
func (s *smallest[T]) Pop() any {
	x := s.items[len(s.items)-1]
	s.items = s.items[:len(s.items)-1]
	return x
}

// Watch implements Engine: this node's streams are all there are.
func (e *memoryEngine) Watch(kinds []EventKind, buffer int) *Watcher {
	return e.node.Watch(kinds, buffer)
}

// Unwatch implements Engine.
func (e *memoryEngine) Unwatch(w *Watcher) { e.node.Unwatch(w) }

// emit logs ev and hands it to the node's streams, in log order. Callers
// hold the stripe of ev's user (or none, for an upstream message).
func (e *memoryEngine) emit(ev Event) { e.events.append(ev, e.node.Emit) }

// EventsAfter implements Engine.
func (e *memoryEngine) EventsAfter(_ context.Context, cursor string, limit int) ([]Event, error) {
	return e.events.after(cursor, limit)
}

// EventReadPos implements Engine: one log.
func (e *memoryEngine) EventReadPos(_ context.Context, cursor string) (*ReadPos, error) {
	return NewReadPos(cursor, 1)
}

// Consumer implements Engine.
func (e *memoryEngine) Consumer(name string) Consumer {
	e.consumersMu.Lock()
	defer e.consumersMu.Unlock()
	if e.consumers == nil {
		e.consumers = make(map[string]*memConsumer)
	}
	c := e.consumers[name]
	if c == nil {
		c = &memConsumer{}
		e.consumers[name] = c
	}
	return c
}

// EventLogLen implements Engine.
func (e *memoryEngine) EventLogLen() int64 { return int64(e.events.len()) }

func (e *memoryEngine) Users() int64       { return e.users.Load() }
func (e *memoryEngine) Connections() int64 { return e.conns.Load() }
func (e *memoryEngine) Inboxed() int64     { return e.inboxed.Load() }
func (e *memoryEngine) Up() bool           { return !e.closed.Load() }
func (e *memoryEngine) Receipts() int64    { return e.receipts.kept() }

// Receipt implements Engine.
func (e *memoryEngine) Receipt(_ context.Context, id string, users []string, offset, limit int) (Receipt, error) {
	return e.receipts.get(id, users, offset, limit, time.Now())
}

// setPresenceLocked records userID's connections as the node counts them
// now, reporting the user online or (after the grace) offline when that
// changes. s is the user's stripe, locked.
func (e *memoryEngine) setPresenceLocked(s *memStripe, userID string, now time.Time) {
	n, since := e.node.UserConns(userID)
	old, was := s.online[userID]
	switch {
	case n > 0:
		s.online[userID] = memPresence{conns: n, since: since}
		e.conns.Add(int64(n - old.conns))
		if was {
			return
		}
		e.users.Add(1)
		if t, ok := s.leaving[userID]; ok {
			t.Stop() // back within the grace: no offline, no online
			delete(s.leaving, userID)
			return
		}
		e.emit(Event{Kind: EventUserOnline, UserID: userID, Time: now})
	case was:
		delete(s.online, userID)
		e.conns.Add(int64(-old.conns))
		e.users.Add(-1)
		if e.cfg.PresenceGrace < 0 {
			e.emit(Event{Kind: EventUserOffline, UserID: userID, Time: now})
			return
		}
		var t *time.Timer
		t = time.AfterFunc(e.cfg.PresenceGrace, func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.leaving[userID] != t {
				return // came back, or a newer timer owns it
			}
			delete(s.leaving, userID)
			e.emit(Event{Kind: EventUserOffline, UserID: userID})
		})
		if old := s.leaving[userID]; old != nil {
			old.Stop()
		}
		s.leaving[userID] = t
	}
}

// Join implements Engine.
func (e *memoryEngine) Join(_ context.Context, j JoinRequest) (Joined, error) {
	s := e.stripe(j.UserID)
	now := time.Now()
	out := Joined{Epoch: e.cfg.Epoch, Complete: true}
	var c InboxCounts
	s.mu.Lock()
	e.setPresenceLocked(s, j.UserID, now)
	sameEpoch := j.Epoch == "" || j.Epoch == e.cfg.Epoch
	if b := s.inboxes[j.UserID]; b != nil {
		before := b.bytes
		// Entries past their ttl that the sweep has not reached yet are a
		// loss, not an ack.
		if n := b.expire(now, e.cfg.InboxMaxTTL); n > 0 {
			e.inboxed.Add(int64(-n))
			c.Expired += n
		}
		out.Replay, out.Complete = b.after(j.LastID, now)
		if j.Resume && sameEpoch {
			// The client has everything up to LastID: that counts as its
			// ack, even if an ack frame was lost with the old connection.
			acked := b.ackThrough(j.LastID)
			e.receipts.ack(j.UserID, j.ConnID, acked, true, now)
			for _, id := range acked {
				e.inboxed.Add(-1)
				c.Acked++
				e.emit(Event{Kind: EventMessageAcked, UserID: j.UserID, ConnID: j.ConnID, MessageID: id, Implicit: true, Time: now})
			}
		}
		e.inboxBytes.Add(int64(b.bytes - before))
	}
	if j.Resume && out.Complete && e.lostFull(j.LastID, now) {
		out.Complete = false
	}
	// Every send to this user from now on gets a greater id, and reaches
	// the connection (it is in the node's registry).
	out.Seq = NewID()
	s.mu.Unlock()
	if !sameEpoch {
		out.Complete = false // LastID is from inboxes that no longer exist
	}
	c.Replayed = len(out.Replay)
	e.receipts.delivered(j.UserID, out.Replay, now)
	e.node.CountInbox(c)
	return out, nil
}

// Left implements Engine.
func (e *memoryEngine) Left(userID string) {
	s := e.stripe(userID)
	s.mu.Lock()
	e.setPresenceLocked(s, userID, time.Now())
	s.mu.Unlock()
}

// Subscribe implements Engine: every topic is routed to the only node.
func (e *memoryEngine) Subscribe(context.Context, string) error { return nil }

// Unsubscribed implements Engine.
func (e *memoryEngine) Unsubscribed(string) {}

// Ack implements Engine.
func (e *memoryEngine) Ack(_ context.Context, userID, connID string, ids []string, implicit bool) error {
	s := e.stripe(userID)
	now := time.Now()
	var c InboxCounts
	s.mu.Lock()
	if b := s.inboxes[userID]; b != nil {
		before := b.bytes
		for _, id := range ids {
			if b.ack(id) {
				e.inboxed.Add(-1)
				c.Acked++
				e.emit(Event{Kind: EventMessageAcked, UserID: userID, ConnID: connID, MessageID: id, Implicit: implicit, Time: now})
			}
		}
		e.inboxBytes.Add(int64(b.bytes - before))
		if b.empty(now) {
			delete(s.inboxes, userID)
		}
	}
	s.mu.Unlock()
	// Every id, stored or not: a live message acknowledged counts too.
	e.receipts.ack(userID, connID, ids, implicit, now)
	if c.Acked > 0 {
		e.node.CountInbox(c)
	}
	return nil
}

// Upstream implements Engine.
func (e *memoryEngine) Upstream(_ context.Context, ev Event) error {
	e.emit(ev)
	return nil
}

// Close implements Engine: the expiry loop and the presence timers stop.
func (e *memoryEngine) Close(context.Context) error {
	if e.closed.Swap(true) {
		return nil
	}
	close(e.stop)
	<-e.done
	for i := range e.stripes {
		s := &e.stripes[i]
		s.mu.Lock()
		for u, t := range s.leaving {
			t.Stop()
			delete(s.leaving, u)
		}
		s.mu.Unlock()
	}
	return nil
}

// expireLoop drops expired inbox entries once a second until Close.
func (e *memoryEngine) expireLoop() {
	defer close(e.done)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-e.stop:
			return
		case now := <-t.C:
			e.expire(now)
			e.expireTopics(now)
			e.receipts.sweep(now)
		}
	}
}

func (e *memoryEngine) expire(now time.Time) {
	var c InboxCounts
	for i := range e.stripes {
		s := &e.stripes[i]
		s.mu.Lock()
		for id, b := range s.inboxes {
			before := b.bytes
			if n := b.expire(now, e.cfg.InboxMaxTTL); n > 0 {
				e.inboxBytes.Add(int64(b.bytes - before))
				e.inboxed.Add(int64(-n))
				c.Expired += n
			}
			if b.empty(now) {
				delete(s.inboxes, id)
			}
		}
		s.mu.Unlock()
	}
	if c.Expired > 0 {
		e.node.CountInbox(c)
	}
}

// idemTable remembers the results of sends made with an idempotency key for
// their window. A repeat gets the first result and sends nothing; a
// concurrent repeat waits for the first to finish. A send that fails is
// forgotten, so its retry runs again. It holds results of at most max
// weight (one per entry, or per user of a SendToUsers result): past it a
// send with a new key fails with ErrIdempotencyFull. Safe for concurrent use.
type idemTable struct {
	max       int // immutable after construction
	mu        sync.Mutex
	entries   map[string]*idemEntry // guarded by mu
	weight    int                   // guarded by mu: of the entries
	nextSweep time.Time             // guarded by mu
	lastFull  time.Time             // guarded by mu: the last sweep made because the table was full
}

type idemEntry struct {
	hash    [32]byte
	done    chan struct{} // closed when sent/err are set
	sent    Sent
	err     error
	expires time.Time // guarded by idemTable.mu
	weight  int       // guarded by idemTable.mu
}

// sweepLocked drops the expired entries.
func (t *idemTable) sweepLocked(now time.Time) {
	for key, e := range t.entries {
		if now.After(e.expires) {
			t.deleteLocked(key, e)
		}
	}
}

func (t *idemTable) deleteLocked(key string, e *idemEntry) {
	delete(t.entries, key)
	t.weight -= e.weight
}

// fullLocked reports whether a new entry has no room, after sweeping the
// expired ones (at most once a second: a full table is not swept per call).
func (t *idemTable) fullLocked(now time.Time) bool {
	if t.max <= 0 || t.weight < t.max {
		return false
	}
	if now.Sub(t.lastFull) >= time.Second {
		t.lastFull = now
		t.sweepLocked(now)
	}
	return t.weight >= t.max
}

// do runs send once per key within k.Window and returns its result to
// every call with that key.
func (t *idemTable) do(ctx context.Context, k Idempotency, send func() (Sent, error)) (Sent, error) {
	if k.Key == "" {
		return send()
	}
	for {
		now := time.Now()
		t.mu.Lock()
		if now.After(t.nextSweep) {
			t.sweepLocked(now)
			t.nextSweep = now.Add(k.Window / 10)
		}
		e, ok := t.entries[k.Key]
		if ok && now.After(e.expires) {
			t.deleteLocked(k.Key, e)
			ok = false
		}
		if !ok {
			if t.fullLocked(now) {
				t.mu.Unlock()
				return Sent{}, fmt.Errorf("%w: %d, the most this node keeps; retry when older keys expire", ErrIdempotencyFull, t.max)
			}
			e = &idemEntry{hash: k.Hash, done: make(chan struct{}), expires: now.Add(k.Window), weight: 1}
			t.entries[k.Key] = e
			t.weight++
			t.mu.Unlock()
			sent, err := send()
			t.mu.Lock()
			e.sent, e.err = sent, err
			if t.entries[k.Key] == e {
				w := max(1, len(sent.Users))
				t.weight += w - e.weight
				e.weight = w
			}
			if err != nil && t.entries[k.Key] == e {
				t.deleteLocked(k.Key, e) // not remembered: a retry runs again
			} else {
				e.expires = time.Now().Add(k.Window)
			}
			t.mu.Unlock()
			close(e.done)
			return sent, err
		}
		t.mu.Unlock()
		if e.hash != k.Hash {
			return Sent{}, ErrIdempotencyConflict
		}
		select {
		case <-e.done:
		case <-ctx.Done():
			return Sent{}, ctx.Err()
		}
		if e.err == nil {
			sent := e.sent
			sent.Replayed = true
			return sent, nil
		}
		// The first call failed and was forgotten: try again.
	}
}
