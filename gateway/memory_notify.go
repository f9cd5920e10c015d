package gateway

import (
	"container/heap"
	"context"
	"slices"
	"strings"
	"sync"
	"time"
)

var _ NotifyStore = (*memoryEngine)(nil)

// memNotify is the memory engine's NotifyStore state.
type memNotify struct {
	mu      sync.Mutex
	targets map[string]map[string][]byte // user → id → data; guarded by mu
	due     escHeap                      // guarded by mu
	pending map[escKey]*escItem          // guarded by mu
}

type escKey struct{ user, msg string }

type escItem struct {
	Escalation
	index int
}

type escHeap []*escItem

func (h escHeap) Len() int { return len(h) }
func (h escHeap) Less(i, j int) bool {
	if !h[i].Due.Equal(h[j].Due) {
		return h[i].Due.Before(h[j].Due)
	}
	return h[i].MessageID < h[j].MessageID
}
func (h escHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i]; h[i].index = i; h[j].index = j }
func (h *escHeap) Push(x any)   { it := x.(*escItem); it.index = len(*h); *h = append(*h, it) }
func (h *escHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	*h = old[:len(old)-1]
	return it
}

func (n *memNotify) initLocked() {
	if n.targets == nil {
		n.targets = map[string]map[string][]byte{}
		n.pending = map[escKey]*escItem{}
	}
}

// AddTarget implements NotifyStore.
func (e *memoryEngine) AddTarget(_ context.Context, userID, id string, data []byte, max int) error {
	n := &e.notify
	n.mu.Lock()
	defer n.mu.Unlock()
	n.initLocked()
	ts := n.targets[userID]
	if _, ok := ts[id]; !ok && len(ts) >= max {
		return ErrTooManyTargets
	}
	if ts == nil {
		ts = map[string][]byte{}
		n.targets[userID] = ts
	}
	ts[id] = slices.Clone(data)
	return nil
}

// RemoveTarget implements NotifyStore.
func (e *memoryEngine) RemoveTarget(_ context.Context, userID, id string) (bool, error) {
	n := &e.notify
	n.mu.Lock()
	defer n.mu.Unlock()
	ts := n.targets[userID]
	if _, ok := ts[id]; !ok {
		return false, nil
	}
	delete(ts, id)
	if len(ts) == 0 {
		delete(n.targets, userID)
	}
	return true, nil
}

// Targets implements NotifyStore.
func (e *memoryEngine) Targets(_ context.Context, userID string) ([]StoredTarget, error) {
	n := &e.notify
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]StoredTarget, 0, len(n.targets[userID]))
	for id, d := range n.targets[userID] {
		out = append(out, StoredTarget{ID: id, Data: slices.Clone(d)})
	}
	slices.SortFunc(out, func(a, b StoredTarget) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// ScheduleEscalation implements NotifyStore.
func (e *memoryEngine) ScheduleEscalation(_ context.Context, esc Escalation, max int) error {
	n := &e.notify
	n.mu.Lock()
	defer n.mu.Unlock()
	n.initLocked()
	k := escKey{esc.UserID, esc.MessageID}
	if old := n.pending[k]; old != nil {
		heap.Remove(&n.due, old.index)
	} else if len(n.pending) >= max {
		return ErrTooManyEscalations
	}
	esc.Data = slices.Clone(esc.Data)
	it := &escItem{Escalation: esc}
	heap.Push(&n.due, it)
	n.pending[k] = it
	e.receipts.escalation(esc.MessageID, esc.UserID, time.Now(), func(s *EscalationStatus) {
		*s = EscalationStatus{State: EscalationScheduled, Due: esc.Due}
	})
	return nil
}

// claimed records c's claim in its receipt.
func (e *memoryEngine) claimed(c ClaimedEscalation, now time.Time) {
	e.receipts.escalation(c.MessageID, c.UserID, now, func(s *EscalationStatus) {
		s.State, s.Time = EscalationFired, now
		if c.Cancelled {
			s.State = EscalationCancelled
		}
	})
}

// RecordEscalationResult implements NotifyStore.
func (e *memoryEngine) RecordEscalationResult(_ context.Context, userID, messageID string, r EscalationResult) error {
	now := time.Now()
	e.receipts.escalation(messageID, userID, now, func(s *EscalationStatus) { s.RecordResult(r, now) })
	return nil
}

// ClaimEscalations implements NotifyStore.
func (e *memoryEngine) ClaimEscalations(_ context.Context, now time.Time, limit int) ([]ClaimedEscalation, error) {
	n := &e.notify
	var out []ClaimedEscalation
	n.mu.Lock()
	for len(out) < limit && len(n.due) > 0 && !n.due[0].Due.After(now) {
		it := heap.Pop(&n.due).(*escItem)
		delete(n.pending, escKey{it.UserID, it.MessageID})
		out = append(out, ClaimedEscalation{Escalation: it.Escalation})
	}
	n.mu.Unlock()
	for i := range out {
		out[i].Cancelled = out[i].IfUnacked && !e.inInbox(out[i].UserID, out[i].MessageID, now)
		e.claimed(out[i], now)
	}
	return out, nil
}

// ClaimEscalation implements NotifyStore.
func (e *memoryEngine) ClaimEscalation(_ context.Context, userID, messageID string, now time.Time) (ClaimedEscalation, bool, error) {
	n := &e.notify
	n.mu.Lock()
	it := n.pending[escKey{userID, messageID}]
	if it == nil || it.Due.After(now) {
		n.mu.Unlock()
		return ClaimedEscalation{}, false, nil
	}
	heap.Remove(&n.due, it.index)
	delete(n.pending, escKey{userID, messageID})
	n.mu.Unlock()
	c := ClaimedEscalation{Escalation: it.Escalation}
	c.Cancelled = c.IfUnacked && !e.inInbox(userID, messageID, now)
	e.claimed(c, now)
	return c, true, nil
}

// leftUnseen makes the escalations waiting for an ack of users[i]'s
// messages ids[i] due now and unconditional: those messages left the inbox
// (trimmed for room) without an ack, so nobody saw them.
func (e *memoryEngine) leftUnseen(users []string, ids [][]string, now time.Time) {
	n := &e.notify
	n.mu.Lock()
	defer n.mu.Unlock()
	for i, u := range users {
		for _, id := range ids[i] {
			it := n.pending[escKey{u, id}]
			if it == nil || !it.IfUnacked {
				continue
			}
			it.IfUnacked = false
			if it.Due.After(now) {
				it.Due = now
				heap.Fix(&n.due, it.index)
				e.receipts.escalation(id, u, now, func(s *EscalationStatus) { s.Due = now })
			}
		}
	}
}

// PendingEscalations implements NotifyStore.
func (e *memoryEngine) PendingEscalations() int64 {
	e.notify.mu.Lock()
	defer e.notify.mu.Unlock()
	return int64(len(e.notify.pending))
}

// inInbox reports whether messageID is in userID's inbox, unexpired.
func (e *memoryEngine) inInbox(userID, messageID string, now time.Time) bool {
	s := e.stripe(userID)
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.inboxes[userID]
	if b == nil {
		return false
	}
	for i, m := range b.entries {
		if m.ID == messageID {
			return now.Before(b.expires[i])
		}
	}
	return false
}
