package gateway

import (
	"context"
	"sync/atomic"
	"time"
)

// ScopedNode is what an engine over several stores (a sharded engine, each
// shard holding some of the users) needs on top of Node: Evict and
// ForgetSeen restricted to the users of one store. The hub implements it.
type ScopedNode interface {
	Node
	// EvictUsers closes, like Evict, this node's connections of the users
	// for which owns returns true, and returns how many.
	EvictUsers(owns func(userID string) bool, window time.Duration) int
	// ForgetSeenUsers is ForgetSeen for the connections of the users for
	// which owns returns true.
	ForgetSeenUsers(owns func(userID string) bool, epoch string)
	// SetPartition makes the node count its connections by part: of
	// returns a user's part, below n. Call it before connections are
	// made (from the engine's constructor).
	SetPartition(n int, of func(userID string) int)
	// PartConnections returns the connections of the users of part i
	// (SetPartition).
	PartConnections(i int) int64
}

// partition counts a hub's connections by the part of their user.
type partition struct {
	of     func(string) int
	counts []atomic.Int64
}

// SetPartition implements ScopedNode.
func (h *Hub) SetPartition(n int, of func(string) int) {
	h.part.Store(&partition{of: of, counts: make([]atomic.Int64, n)})
}

// PartConnections implements ScopedNode.
func (h *Hub) PartConnections(i int) int64 {
	if p := h.part.Load(); p != nil && i < len(p.counts) {
		return p.counts[i].Load()
	}
	return 0
}

func (h *Hub) countPart(userID string, d int64) {
	if p := h.part.Load(); p != nil {
		p.counts[p.of(userID)].Add(d)
	}
}

var _ ScopedNode = (*Hub)(nil)

// EvictUsers implements ScopedNode.
func (h *Hub) EvictUsers(owns func(string) bool, window time.Duration) int {
	var conns []*Conn
	for i := range h.shards {
		s := &h.shards[i]
		s.mu.RLock()
		for u, p := range s.users {
			if owns(u) {
				conns = append(conns, p.conns...)
			}
		}
		s.mu.RUnlock()
	}
	go closeSpread(context.Background(), conns, CloseEngineUnavailable, window)
	return len(conns)
}

// ForgetSeenUsers implements ScopedNode.
func (h *Hub) ForgetSeenUsers(owns func(string) bool, epoch string) {
	for i := range h.shards {
		s := &h.shards[i]
		s.mu.Lock()
		for u, p := range s.users {
			if !owns(u) {
				continue
			}
			for _, c := range p.conns {
				if c.epoch != epoch {
					c.last, c.joinSeq, c.epoch = "", "", epoch
				}
			}
		}
		s.mu.Unlock()
	}
}
