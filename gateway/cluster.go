package gateway

import (
	"context"
	"encoding/binary"
	"errors"
	"time"
)

// Cluster is an engine that several nodes share (package redisengine):
// presence, inboxes and ids live in it, and every message for a user
// reaches the user's node through it, so that all nodes deliver a user's
// messages in one order. With a Cluster the hub keeps only this node's
// connections; Hub.SetCluster installs one before the hub serves.
type Cluster interface {
	// Join records that this node holds userID (sends that run after it
	// reach the node live) and returns what the new connection must see
	// first. It reads the node's count with LocalPresence.
	Join(ctx context.Context, j JoinRequest) (Joined, error)
	// PresenceChanged says the node's connections of userID changed; the
	// engine writes the new count soon, in order. Never blocks.
	PresenceChanged(userID string)
	// SubscribeTopic makes sure the engine routes topic to this node before
	// it returns. TopicChanged says the node's subscribers of topic changed
	// (never blocks).
	SubscribeTopic(ctx context.Context, topic string) error
	TopicChanged(topic string)
	// Ack removes acknowledged messages from userID's inbox (reporting them
	// to WatchEvents cluster-wide).
	Ack(ctx context.Context, userID, connID string, ids []string, implicit bool) error
	// Upstream hands a client's message to the watchers of every node.
	Upstream(e Event) error
}

// JoinRequest is a connection joining through a Cluster.
type JoinRequest struct {
	UserID string
	ConnID string
	LastID string // resume after this id ("" for the whole inbox)
	Epoch  string // the epoch the client's LastID is from ("" unknown)
	Resume bool   // the client asked to resume (gave a last_id)
}

// Joined is what a joining connection must see first.
type Joined struct {
	Epoch    string     // the cluster's inbox epoch, for the hello
	Seq      string     // the last id handed out when the node joined: live messages up to it are not this connection's
	Replay   []*Message // the inbox after LastID, in order
	Complete bool       // nothing after LastID was lost
}

// ErrUnavailable marks errors that mean the cluster engine cannot be
// reached; the gRPC API answers them with UNAVAILABLE.
var ErrUnavailable = errors.New("push engine unavailable")

// SetCluster makes the hub deliver through cl. Call it before the hub
// serves connections.
func (h *Hub) SetCluster(cl Cluster) { h.cl = cl }

// LocalPresence returns this node's connections of userID and when the
// oldest of them opened.
func (h *Hub) LocalPresence(userID string) (int, time.Time) {
	s := h.shard(userID)
	s.mu.RLock()
	defer s.mu.RUnlock()
	if p := s.users[userID]; p != nil {
		return len(p.conns), p.conns[0].opened
	}
	return 0, time.Time{}
}

// LocalUsers returns the users with connections on this node.
func (h *Hub) LocalUsers() []string {
	var out []string
	for i := range h.shards {
		s := &h.shards[i]
		s.mu.RLock()
		for id := range s.users {
			out = append(out, id)
		}
		s.mu.RUnlock()
	}
	return out
}

// ForgetSeen makes this node's connections that joined before epoch
// forget which ids they have seen: the cluster's ids started again (its
// Redis lost its data). Connections that joined in epoch keep theirs.
func (h *Hub) ForgetSeen(epoch string) {
	for i := range h.shards {
		s := &h.shards[i]
		s.mu.Lock()
		for _, p := range s.users {
			for _, c := range p.conns {
				if c.epoch != epoch {
					c.last, c.joinSeq, c.epoch = "", "", epoch
				}
			}
		}
		s.mu.Unlock()
	}
}

// WatcherCount returns the open watchers on this node.
func (h *Hub) WatcherCount() int {
	if cur := h.watchers.list.Load(); cur != nil {
		return len(*cur)
	}
	return 0
}

// LocalTopic returns this node's subscribers of topic.
func (h *Hub) LocalTopic(topic string) int {
	ts := h.topicShard(topic)
	ts.mu.RLock()
	defer ts.mu.RUnlock()
	return len(ts.topics[topic])
}

// LocalTopics returns the topics with subscribers on this node.
func (h *Hub) LocalTopics() []string {
	var out []string
	for i := range h.topicShards {
		ts := &h.topicShards[i]
		ts.mu.RLock()
		for t := range ts.topics {
			out = append(out, t)
		}
		ts.mu.RUnlock()
	}
	return out
}

// CatchUpFrom returns the id after which userID's connections here may have
// missed stored messages: the lowest last id they were given. ok is false
// when the user has no joined connection here.
func (h *Hub) CatchUpFrom(userID string) (last string, ok bool) {
	s := h.shard(userID)
	s.mu.RLock()
	defer s.mu.RUnlock()
	p := s.users[userID]
	if p == nil {
		return "", false
	}
	for _, c := range p.conns {
		c.mu.Lock()
		joining := c.joining
		c.mu.Unlock()
		cl := c.last
		if joining {
			// What it is sent now is held and filtered by its join; a
			// stored message from after its join script may be missing.
			cl = ""
		}
		if !ok || cl < last {
			last, ok = cl, true
		}
	}
	return last, ok
}

// registerCluster is register with a Cluster: the connection joins the
// local registry in the joining state (live messages for it are held),
// then the cluster, which returns the replay; hello, replay and the held
// messages newer than the join are queued in that order.
func (h *Hub) registerCluster(c *Conn, lastID, epoch string, resume bool) error {
	s := h.shard(c.userID)
	c.mu.Lock()
	c.joining = true // before it is in the registry: every push is held
	c.mu.Unlock()
	s.mu.Lock()
	_, err := h.addConnLocked(s, c)
	s.mu.Unlock()
	if err != nil {
		return err
	}

	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.WriteTimeout)
	j, err := h.cl.Join(ctx, JoinRequest{UserID: c.userID, ConnID: c.idString(), LastID: lastID, Epoch: epoch, Resume: resume})
	cancel()
	if err != nil {
		c.closeWith(closeHandshakeFailed) // leaves the registry (and the cluster, if it got there)
		return ErrUnavailable
	}

	// Under the shard lock (c.last, c.joinSeq) and then c.mu (the queue and
	// what was held): hello, replay, then the held messages newer than the
	// join, and the connection is live.
	s.mu.Lock()
	c.mu.Lock()
	if c.closing {
		// Closed while joining (kicked, shutdown): nothing more to write.
		c.pending, c.joining, c.queued = nil, false, 0
		c.mu.Unlock()
		s.mu.Unlock()
		return nil
	}
	c.queued = 0 // what was held counted here; it is queued again below
	queue := func(f frame) {
		if len(c.queue) == 0 {
			c.since = time.Now()
		}
		c.queue = append(c.queue, f)
		c.queued += f.size()
	}
	if c.envelope {
		hl := hello{
			ConnID: c.idString(), UserID: c.userID, Replayed: len(j.Replay),
			Heartbeat: helloHeartbeat{h.cfg.HeartbeatInterval.Milliseconds(), h.cfg.HeartbeatTimeout.Milliseconds()},
			Topics:    c.topicList,
			Epoch:     j.Epoch,
		}
		if resume {
			complete := j.Complete
			hl.Recovered = &complete
		}
		queue(helloFrame(hl))
	}
	c.last, c.joinSeq, c.epoch = j.Seq, j.Seq, j.Epoch
	for _, m := range j.Replay {
		queue(frame{msg: m})
		c.last = max(c.last, m.ID)
	}
	for _, m := range c.pending {
		// Older than the join: sent before the connection existed, or
		// in the replay.
		if m.ID > j.Seq {
			queue(frame{msg: m})
			if m.stored {
				c.last = max(c.last, m.ID)
			}
		}
	}
	c.pending = nil
	c.joining = false
	start := c.startWriterLocked()
	c.mu.Unlock()
	s.mu.Unlock()
	if start {
		go c.writeFn()
	}
	h.metrics.replayed.Add(float64(len(j.Replay)))
	return nil
}

// removeCluster takes c out of the local registry and tells the cluster.
func (h *Hub) removeCluster(c *Conn) {
	s := h.shard(c.userID)
	s.mu.Lock()
	removed, _ := h.removeConnLocked(s, c)
	s.mu.Unlock()
	if removed {
		h.cl.PresenceChanged(c.userID)
	}
}

// DeliverLocal queues m on the connections of userIDs on this node, once
// per connection. Message ids grow in the order the cluster hands messages
// to nodes, so: a joining connection holds m until its replay is queued; a
// connection skips m if m is from before it joined, or if m is stored and
// the connection already has it or a later stored message (replayed, or
// caught up after a lost subscription). It returns the connections m was
// queued on.
func (h *Hub) DeliverLocal(userIDs []string, m *Message) int {
	var overflow []*Conn
	n := 0
	for _, u := range userIDs {
		s := h.shard(u)
		s.mu.Lock()
		if p := s.users[u]; p != nil {
			for _, c := range p.conns {
				// A joining connection has neither yet: push holds m for
				// registerCluster, which filters it.
				if m.ID <= c.joinSeq || m.stored && m.ID <= c.last {
					continue
				}
				if m.stored {
					c.last = max(c.last, m.ID)
				}
				switch c.enqueue(frame{msg: m}) {
				case queued:
					n++
				case overflowed:
					overflow = append(overflow, c)
				}
			}
		}
		s.mu.Unlock()
	}
	closeSlow(overflow)
	return n
}

// BroadcastLocal queues m (id already set) on every connection here except
// those of the users in exclude.
func (h *Hub) BroadcastLocal(m *Message, exclude []string) int64 {
	m.broadcast = true
	return h.broadcast(m, exclude)
}

// PublishLocal queues m (id already set) on this node's subscribers of topic.
func (h *Hub) PublishLocal(topic string, m *Message) int64 {
	m.Topic = topic
	return h.publish(topic, m)
}

// DisconnectLocal closes userID's connections on this node.
func (h *Hub) DisconnectLocal(userID, text string) int {
	n, _ := h.disconnect(userID, text)
	return n
}

// CountInbox adds what the cluster engine did to the inbox metrics.
func (h *Hub) CountInbox(trimmed, expired int) {
	h.metrics.inboxTrimmed.Add(float64(trimmed))
	h.metrics.inboxExpired.Add(float64(expired))
}

// EncodeBroadcast marks m as a broadcast and returns its cluster encoding.
func EncodeBroadcast(m *Message) []byte {
	m.broadcast = true
	return EncodeMessage(m)
}

// EmitLocal hands e to this node's watchers.
func (h *Hub) EmitLocal(e Event) { h.emitLocal(e) }

// Message encoding for the cluster: a version byte, the 26-byte id (at a
// fixed place, so the engine can set it), kind, flags, time and ttl (ns,
// big-endian), the lengths of type and topic (uvarint) and the three byte
// strings.
const (
	msgVersion     = 1
	flagBroadcast  = 1
	flagStored     = 2
	encodedIDStart = 1
)

// EncodeMessage returns m's cluster encoding. An empty m.ID is written as
// 26 zeros for the engine to fill in.
func EncodeMessage(m *Message) []byte {
	b := make([]byte, 0, 64+len(m.Type)+len(m.Topic)+len(m.Data))
	b = append(b, msgVersion)
	if len(m.ID) == 26 {
		b = append(b, m.ID...)
	} else {
		b = append(b, "00000000000000000000000000"...)
	}
	var flags byte
	if m.broadcast {
		flags |= flagBroadcast
	}
	if m.TTL > 0 {
		flags |= flagStored
	}
	b = append(b, byte(m.Kind), flags)
	b = binary.BigEndian.AppendUint64(b, uint64(m.Time.UnixNano()))
	b = binary.BigEndian.AppendUint64(b, uint64(m.TTL))
	b = binary.AppendUvarint(b, uint64(len(m.Type)))
	b = binary.AppendUvarint(b, uint64(len(m.Topic)))
	b = append(b, m.Type...)
	b = append(b, m.Topic...)
	return append(b, m.Data...)
}

var errBadEncoding = errors.New("bad message encoding")

// DecodeMessage parses EncodeMessage's output.
func DecodeMessage(b []byte) (*Message, error) {
	if len(b) < 1+26+2+16 || b[0] != msgVersion {
		return nil, errBadEncoding
	}
	m := &Message{ID: string(b[1:27]), Kind: Kind(b[27])}
	flags := b[28]
	m.broadcast = flags&flagBroadcast != 0
	m.stored = flags&flagStored != 0
	m.Time = time.Unix(0, int64(binary.BigEndian.Uint64(b[29:37])))
	m.TTL = time.Duration(binary.BigEndian.Uint64(b[37:45]))
	rest := b[45:]
	nt, k := binary.Uvarint(rest)
	if k <= 0 {
		return nil, errBadEncoding
	}
	rest = rest[k:]
	np, k := binary.Uvarint(rest)
	if k <= 0 || uint64(len(rest)-k) < nt+np {
		return nil, errBadEncoding
	}
	rest = rest[k:]
	m.Type = string(rest[:nt])
	m.Topic = string(rest[nt : nt+np])
	m.Data = rest[nt+np:]
	if m.Kind < KindJSON || m.Kind > KindBinary || !ValidID(m.ID) {
		return nil, errBadEncoding
	}
	return m, nil
}

// Idempotency is a call's idempotency key, for a Cluster that records keys
// itself, atomically with the send.
type Idempotency struct {
	Key    string        // the caller and its key
	Hash   [32]byte      // of the method and the request
	Window time.Duration // how long the first result is kept
}

type idemKey struct{}

// WithIdempotency returns ctx carrying a call's idempotency key.
func WithIdempotency(ctx context.Context, k Idempotency) context.Context {
	return context.WithValue(ctx, idemKey{}, k)
}

// IdempotencyFrom returns the key WithIdempotency put in ctx.
func IdempotencyFrom(ctx context.Context) (Idempotency, bool) {
	k, ok := ctx.Value(idemKey{}).(Idempotency)
	return k, ok
}

// ErrIdempotencyConflict: the key was used for a different request within
// its window.
var ErrIdempotencyConflict = errors.New("idempotency key already used for a different request")
