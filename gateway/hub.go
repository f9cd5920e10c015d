package gateway

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"pushgate/gateway/limit"
	"pushgate/gateway/token"
)

// Config tunes the gateway. The zero value of a field means its default
// (DefaultConfig).
type Config struct {
	// HeartbeatInterval is how often the server pings each connection.
	//
	HeartbeatInterval time.Duration
	// HeartbeatTimeout is how long a ping may go unanswered before the
	// connection is closed.
	HeartbeatTimeout time.Duration
	// WriteTimeout bounds one batch of writes to a socket; a peer that takes
	// longer is closed as a slow consumer.
	WriteTimeout time.Duration
	// QueueMessages caps the messages waiting to be written to one
	// connection.
	QueueMessages int
	// QueueBytes caps the payload bytes waiting to be written to one
	// connection.
	QueueBytes int
	// ReadLimit is the largest frame accepted from a client, in bytes; a
	// larger one closes the connection with 1009.
	ReadLimit int64
	// MaxUserIDBytes is the longest user id accepted.
	MaxUserIDBytes int
	// OriginPatterns lists the cross-origin hosts allowed to open WebSockets
	// (see websocket.AcceptOptions.OriginPatterns). Same-origin is always
	// allowed; empty means same-origin only.
	OriginPatterns []string

	// InboxMessages and InboxBytes cap one user's inbox; past them the
	// oldest entries are dropped (and counted).
	InboxMessages int
	InboxBytes    int
	// InboxTotalMessages and InboxTotalBytes cap all inboxes together (the
	// memory engine's; Redis is bounded by its maxmemory): at the cap a
	// message is still delivered live but not stored (Delivery.Stored
	// false), and resuming clients from before it are told it may be lost.
	// IdempotencyEntries caps the results the memory engine remembers for
	// idempotency keys (a SendToUsers result counts once per user): at the
	// cap a send with a new key fails with ErrIdempotencyFull.
	InboxTotalMessages int
	InboxTotalBytes    int
	IdempotencyEntries int
	// InboxMaxTTL is the longest ttl a message may ask for, and how long a
	// loss (trimmed or expired entry) is remembered for resuming clients.
	InboxMaxTTL time.Duration
	// ReceiptRetention is how long a message's receipt is kept after the
	// send, or for a stored message after its ttl; ReceiptMax caps the recipients whose
	// receipts are kept, all messages together: past it the oldest
	// receipts are evicted.
	ReceiptRetention time.Duration
	ReceiptMax       int
	// PresenceGrace is how long a user may be gone before WatchEvents
	// reports them offline, so that a page reload reports nothing; negative
	// means report at once.
	PresenceGrace time.Duration
	// MaxTopicsPerConn caps one connection's subscriptions.
	MaxTopicsPerConn int
	// TopicHistory lists the topics that keep their last messages (the
	// first rule that matches a topic applies; history.go). Empty: every
	// topic is live only. TopicHistoryTotal caps the messages the memory
	// engine keeps in all topic histories together, and the topics it
	// keeps a record of: at the cap a message is still delivered live but
	// not kept, and clients resuming from before it are told
	// recovered:false (Redis is bounded by its maxmemory).
	TopicHistory      []TopicHistoryRule
	TopicHistoryTotal int
	// UpstreamUsers and UpstreamTopics say who may send messages upstream
	// (to WatchEvents): users whose id matches one of UpstreamUsers
	// (MatchUserPattern: path.Match's syntax, but '*' and '?' match '/'
	// too, so "*" is everyone), or envelope messages addressed to a topic
	// matching UpstreamTopics (exact or "prefix*"). Empty: nobody.
	UpstreamUsers  []string
	UpstreamTopics []string
	// ClientPublishTopics and ClientDirectUsers say what any envelope
	// client may publish besides what its token's "pub" and "dm" claims
	// allow: topics matching ClientPublishTopics (exact or "prefix*"), and
	// messages to users matching ClientDirectUsers (MatchUserPattern).
	// Empty: only what tokens allow. ClientPublishPerSecond limits one
	// connection's publishes (burst of twice that); past it the
	// connection is closed with 4002.
	ClientPublishTopics    []string
	ClientDirectUsers      []string
	ClientPublishPerSecond float64
	// TopicPresenceEvents: topics (exact or "prefix*") whose joins and
	// leaves (a user's first subscription in the deployment, its last)
	// are reported as events. Empty: none. ClientPresenceTopics: topics
	// whose presence any envelope client may read, besides what its
	// token's "presence" claim allows. Empty: only what tokens allow.
	TopicPresenceEvents  []string
	ClientPresenceTopics []string

	// EventLogMax caps the events the event log keeps (the oldest go
	// first), and EventLogRetention how long it keeps one (the newest
	// event older than that is kept too, so a consumer that saw it before
	// a quiet spell can resume): a WatchEvents stream can resume after
	// any kept event. With the Redis engine the cap is approximate (the
	// stream is trimmed a macro node at a time) and the age is enforced
	// by every node's reaper pass.
	EventLogMax       int
	EventLogRetention time.Duration

	// Epoch names the lifetime of the memory engine's inboxes: a client
	// resuming with another epoch's last_id is told recovered:false.
	// Default: random at start (memory inboxes die with the process). The
	// Redis engine keeps its own epoch in Redis.
	Epoch string
	// EngineTimeout bounds each engine call the hub makes for a connection
	// (join, subscribe, ack, upstream).
	EngineTimeout time.Duration

	// Auth, when set, identifies clients by token (JWT "sub") instead of
	// the development identity in the URL. The token comes from the
	// Authorization: Bearer header, the token query parameter, or the
	// TokenCookie cookie.
	Auth        *token.Verifier
	TokenCookie string

	// TrustedProxies are the proxies whose X-Forwarded-For is believed: a
	// connection from one of them is logged with the client address it
	// names. Empty: the socket's address.
	TrustedProxies []netip.Prefix

	// MaxConns caps open connections on this node (HTTP 503 past it);
	// MaxConnsPerUser caps one user's (HTTP 429). 0: no cap.
	MaxConns        int
	MaxConnsPerUser int
	// NewConnsPerSecond limits new connections on this node (HTTP 429 past
	// it, burst of one second's worth). 0: no limit.
	NewConnsPerSecond float64
	// UpstreamPerSecond limits the frames one client may send, data frames
	// and WebSocket ping and pong frames alike (burst of twice that), and
	// the message ids it may acknowledge (burst of a full inbox plus twice
	// that); past either the connection is closed with 4002. 0: no limit.
	UpstreamPerSecond float64

	// Tracer, when set, makes the hub's spans for messages sent by traced
	// calls (trace.go). nil: tracing off.
	Tracer trace.TracerProvider
}

// DefaultConfig returns the defaults of the fields that have one: the one
// place they are stated (the flags of package internal/config take theirs
// from here). NewHub fills every zero field from it.
func DefaultConfig() Config {
	return Config{
		HeartbeatInterval: 25 * time.Second,
		HeartbeatTimeout:  10 * time.Second,
		WriteTimeout:      10 * time.Second,
		EngineTimeout:     5 * time.Second,
		QueueMessages:     1024,
		QueueBytes:        4 << 20,
		ReadLimit:         16 << 10,
		MaxUserIDBytes:    128,
		InboxMessages:     100,
		InboxBytes:        256 << 10,
		InboxMaxTTL:       24 * time.Hour,
		PresenceGrace:     5 * time.Second,
		MaxTopicsPerConn:  64,
		TopicHistoryTotal: 100_000,

		InboxTotalMessages: 1_000_000,
		InboxTotalBytes:    512 << 20,
		IdempotencyEntries: 500_000,
		ReceiptRetention:   time.Hour,
		ReceiptMax:         1_000_000,
		EventLogMax:        100_000,
		EventLogRetention:  time.Hour,

		ClientPublishPerSecond: 5,
	}
}

func (c *Config) setDefaults() {
	d := DefaultConfig()
	if c.Epoch == "" {
		c.Epoch = NewID()[16:]
	}
	for _, f := range []struct{ v, d *time.Duration }{
		{&c.HeartbeatInterval, &d.HeartbeatInterval}, {&c.HeartbeatTimeout, &d.HeartbeatTimeout},
		{&c.WriteTimeout, &d.WriteTimeout}, {&c.EngineTimeout, &d.EngineTimeout},
		{&c.InboxMaxTTL, &d.InboxMaxTTL}, {&c.PresenceGrace, &d.PresenceGrace},
		{&c.ReceiptRetention, &d.ReceiptRetention},
		{&c.EventLogRetention, &d.EventLogRetention},
	} {
		if *f.v == 0 {
			*f.v = *f.d
		}
	}
	for _, f := range []struct{ v, d *int }{
		{&c.QueueMessages, &d.QueueMessages}, {&c.QueueBytes, &d.QueueBytes}, {&c.MaxUserIDBytes, &d.MaxUserIDBytes},
		{&c.InboxMessages, &d.InboxMessages}, {&c.InboxBytes, &d.InboxBytes}, {&c.MaxTopicsPerConn, &d.MaxTopicsPerConn},
		{&c.InboxTotalMessages, &d.InboxTotalMessages}, {&c.InboxTotalBytes, &d.InboxTotalBytes}, {&c.IdempotencyEntries, &d.IdempotencyEntries},
		{&c.ReceiptMax, &d.ReceiptMax}, {&c.TopicHistoryTotal, &d.TopicHistoryTotal},
		{&c.EventLogMax, &d.EventLogMax},
	} {
		if *f.v <= 0 {
			*f.v = *f.d
		}
	}
	if c.ReadLimit <= 0 {
		c.ReadLimit = d.ReadLimit
	}
	if c.ClientPublishPerSecond <= 0 {
		c.ClientPublishPerSecond = d.ClientPublishPerSecond
	}
}

const numShards = 64

// Hub is this node's registry of open connections (by user and by topic)
// and its WatchEvents streams, and the local half of delivery: it joins
// connections through the engine, queues what engines deliver on the right
// connections, and implements Node for its engine. What nodes share (ids,
// inboxes, presence, routing) is the engine's (doc.go).
//
// All methods are safe for concurrent use. No method writes to a socket:
// they enqueue on connections, whose own write loops do the I/O, so no lock
// of the Hub is ever held during network I/O; and no lock of the Hub is
// held while it calls its engine.
type Hub struct {
	// Immutable after construction.
	cfg     Config
	log     *slog.Logger
	metrics *Metrics
	seed    maphash.Seed
	eng     Engine
	// tag ends this hub's connection ids ("c17-<tag>"), so that an id
	// names one connection in the whole deployment: a node that starts
	// again counts from 1 under another tag.
	tag string
	tr  *hubTracer // nil: tracing off

	pushReg atomic.Pointer[PushRegistrar] // set once before serving (SetPushRegistrar)

	shards      [numShards]shard
	topicShards [numShards]topicShard
	watchers    watchers

	users   atomic.Int64
	conns   atomic.Int64
	part    atomic.Pointer[partition] // connections counted by engine shard (hub_scoped.go)
	envs    atomic.Int64              // envelope connections among conns
	nextID  atomic.Uint64
	closing atomic.Bool   // Shutdown started: refuse new connections
	live    atomic.Int64  // connection handlers still running
	newConn *limit.Bucket // nil: unlimited

	logBucket     *limit.Bucket
	logSuppressed atomic.Int64

	targets sync.Pool // *[]*Conn, fan-out scratch space

	heartbeats heartbeats // every connection's pings (heartbeat.go)
	reads      readPoller // the sockets of idle connections (readpoll.go)
	t0         time.Time  // clock's origin; immutable after construction
}

var _ Node = (*Hub)(nil)

type shard struct {
	mu    sync.RWMutex
	users map[string]*presence // guarded by mu
}

// presence is one user's connections on this node, oldest first.
type presence struct {
	conns []*Conn
}

// NewHub returns an empty hub whose metrics are registered on reg, and its
// engine, made by newEngine with the hub as its Node.
func NewHub(cfg Config, log *slog.Logger, reg prometheus.Registerer, newEngine NewEngine) (*Hub, error) {
	cfg.setDefaults()
	h := &Hub{cfg: cfg, log: log, seed: maphash.MakeSeed(), tag: NewID()[16:], t0: time.Now()}
	h.heartbeats.init(h)
	h.newConn = limit.NewBucket(cfg.NewConnsPerSecond, int(cfg.NewConnsPerSecond)+1)
	h.logBucket = limit.NewBucket(logBurst, logBurst)
	for i := range h.shards {
		h.shards[i].users = make(map[string]*presence)
		h.topicShards[i].topics = make(map[string]map[*Conn]struct{})
	}
	h.targets.New = func() any { s := make([]*Conn, 0, 256); return &s }
	h.metrics = NewMetrics(reg, h)
	h.tr = newHubTracer(cfg.Tracer, reg)
	eng, err := newEngine(h)
	if err != nil {
		return nil, err
	}
	h.eng = eng
	return h, nil
}

// clock is the monotonic time since the hub was made, in nanoseconds; never
// 0, which Conn.pingSent keeps for "no ping waiting".
func (h *Hub) clock() int64 { return int64(time.Since(h.t0)) + 1 }

// Engine returns the hub's engine: the API of the whole deployment.
func (h *Hub) Engine() Engine { return h.eng }

// Config returns the effective configuration (defaults applied).
func (h *Hub) Config() Config { return h.cfg }

// Users returns the number of users with at least one open connection here.
func (h *Hub) Users() int64 { return h.users.Load() }

// Connections returns the number of open connections here.
func (h *Hub) Connections() int64 { return h.conns.Load() }

func (h *Hub) shardIndex(userID string) int {
	return int(maphash.String(h.seed, userID) % numShards)
}

func (h *Hub) shard(userID string) *shard { return &h.shards[h.shardIndex(userID)] }

// errUserLimit: the user already holds MaxConnsPerUser connections.
var errUserLimit = errors.New("too many connections for this user")

// register adds c to the registry and joins it through the engine (doc.go,
// "Joining"): c enters the registry in the joining state, so that what is
// delivered to it meanwhile is held; the engine records it and returns the
// replay and the join's Seq; then, under the shard lock and c.mu, the hello,
// the replay and the held messages newer than Seq are queued in that order
// and c goes live. resume says whether the client gave a lastID.
func (h *Hub) register(c *Conn, lastID, epoch string, resume bool) error {
	s := h.shard(c.userID)
	c.mu.Lock()
	c.joining = true // before it is in the registry: every push is held
	c.mu.Unlock()
	s.mu.Lock()
	err := h.addConnLocked(s, c)
	s.mu.Unlock()
	if err != nil {
		return err
	}

	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.EngineTimeout)
	j, err := h.eng.Join(ctx, JoinRequest{UserID: c.userID, ConnID: c.idString(), LastID: lastID, Epoch: epoch, Resume: resume})
	cancel()
	if err != nil {
		c.closeWith(closeHandshakeFailed) // leaves the registry (and the engine, if it got there)
		if errors.Is(err, ErrUnavailable) {
			return err
		}
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}

	s.mu.Lock()
	c.mu.Lock()
	if c.closing {
		// Closed while joining (kicked, shutdown): nothing more to write.
		c.pending, c.joining, c.q.bytes = nil, false, 0
		c.mu.Unlock()
		s.mu.Unlock()
		return nil
	}
	c.q.bytes = 0 // what was held counted here; it is queued again below
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
		c.q.add(helloFrame(hl))
	}
	c.last, c.joinSeq, c.epoch = j.Seq, j.Seq, j.Epoch
	for _, m := range j.Replay {
		c.q.add(frame{msg: m})
		c.last = max(c.last, m.ID)
	}
	for _, m := range c.pending {
		// Not newer than the join: sent before the connection existed, or
		// in the replay. A stored message it already has (delivered twice
		// by an engine catching up) is skipped too.
		if m.ID <= j.Seq || m.stored && m.ID <= c.last {
			continue
		}
		c.q.add(frame{msg: m})
		if m.stored {
			c.last = m.ID
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
	return nil
}

// addConnLocked adds c to its user's connections on this node, within
// MaxConnsPerUser; s is c's shard, locked.
func (h *Hub) addConnLocked(s *shard, c *Conn) error {
	p := s.users[c.userID]
	if p != nil && h.cfg.MaxConnsPerUser > 0 && len(p.conns) >= h.cfg.MaxConnsPerUser {
		return errUserLimit
	}
	if p == nil {
		p = &presence{}
		s.users[c.userID] = p
		h.users.Add(1)
	}
	p.conns = append(p.conns, c)
	h.conns.Add(1)
	h.countPart(c.userID, 1)
	if c.envelope {
		h.envs.Add(1)
	}
	return nil
}

// remove takes c out of the registry and its topics and tells the engine;
// calling it again is a no-op. Called once c is closing.
func (h *Hub) remove(c *Conn) {
	c.mu.Lock()
	topics := c.topics
	c.topics = nil
	c.mu.Unlock()
	for t := range topics {
		h.dropSubscriber(c, t)
	}

	s := h.shard(c.userID)
	s.mu.Lock()
	removed := false
	if p := s.users[c.userID]; p != nil {
		if i := slices.Index(p.conns, c); i >= 0 {
			removed = true
			p.conns = slices.Delete(p.conns, i, i+1)
			h.conns.Add(-1)
			h.countPart(c.userID, -1)
			if c.envelope {
				h.envs.Add(-1)
			}
			if len(p.conns) == 0 {
				delete(s.users, c.userID)
				h.users.Add(-1)
			}
		}
	}
	s.mu.Unlock()
	if removed {
		h.eng.Left(c.userID)
	}
}

// deliver is Node.Deliver (trace.go). Connections whose queue overflowed
// are closed as slow consumers on another goroutine: the engine may hold
// its own locks around Deliver, and closing a connection calls the engine
// (Left). The write loops start once the shard locks are released
// (startWriters).
func (h *Hub) deliver(userIDs []string, m *Message) int {
	var overflow []*Conn
	sp := h.targets.Get().(*[]*Conn)
	starts := (*sp)[:0]
	n := 0
	for _, u := range userIDs {
		s := h.shard(u)
		s.mu.Lock()
		if p := s.users[u]; p != nil {
			for _, c := range p.conns {
				// A joining connection has neither yet: push holds m for
				// register, which filters it.
				if m.ID <= c.joinSeq || m.stored && m.ID <= c.last {
					continue
				}
				if m.stored {
					c.last = max(c.last, m.ID)
				}
				switch r, start := c.push(frame{msg: m}); r {
				case queued:
					n++
					if start {
						starts = append(starts, c)
					}
				case overflowed:
					overflow = append(overflow, c)
				}
			}
		}
		s.mu.Unlock()
	}
	startWriters(starts)
	*sp = starts[:0]
	h.targets.Put(sp)
	if len(overflow) > 0 {
		go closeSlow(overflow)
	}
	return n
}

func closeSlow(cs []*Conn) {
	for _, c := range cs {
		c.closeWith(CloseSlowConsumer)
	}
}

// fanout queues m on every connection in targets and returns how many took
// it; it closes the ones whose queue overflowed. The connections whose write
// loop must start are appended to starts, for the caller to start once the
// whole fan-out is queued (startWriters).
func fanout(targets []*Conn, m *Message, starts []*Conn) (int64, []*Conn) {
	var n int64
	f := frame{msg: m}
	for _, c := range targets {
		r, start := c.push(f)
		switch r {
		case queued:
			n++
			if start {
				starts = append(starts, c)
			}
		case overflowed:
			c.closeWith(CloseSlowConsumer)
		}
	}
	return n, starts
}

// startWriters starts the write loops fanout asked for, each with a
// non-blocking first round on this goroutine (Conn.writeNow), and clears
// the list.
func startWriters(starts []*Conn) {
	for _, c := range starts {
		c.writeNow()
	}
	clear(starts)
}

// preEncode makes m's envelope before a fan-out when envelope connections
// exist, so that their write loops do not wait on one another to make it.
func (h *Hub) preEncode(m *Message) {
	if h.envs.Load() > 0 {
		m.envelope()
	}
}

// skipConns returns the ids of this hub's connections among m's excluded
// connection ids (nil when none).
func (h *Hub) skipConns(m *Message) map[uint64]struct{} {
	var skip map[uint64]struct{}
	for _, id := range m.Exclude {
		num, tag, ok := strings.Cut(id, "-")
		if !ok || tag != h.tag || len(num) < 2 || num[0] != 'c' {
			continue
		}
		n, err := strconv.ParseUint(num[1:], 10, 64)
		if err != nil {
			continue
		}
		if skip == nil {
			skip = make(map[uint64]struct{}, len(m.Exclude))
		}
		skip[n] = struct{}{}
	}
	return skip
}

// dropSkipped removes the connections in skip from targets.
func dropSkipped(targets []*Conn, skip map[uint64]struct{}) []*Conn {
	if skip == nil {
		return targets
	}
	return slices.DeleteFunc(targets, func(c *Conn) bool {
		_, ok := skip[c.id]
		return ok
	})
}

// deliverBroadcast is Node.DeliverBroadcast (trace.go).
func (h *Hub) deliverBroadcast(m *Message, exclude []string) int64 {
	var skip map[string]struct{}
	if len(exclude) > 0 {
		skip = make(map[string]struct{}, len(exclude))
		for _, id := range exclude {
			skip[id] = struct{}{}
		}
	}
	skipConns := h.skipConns(m)
	h.preEncode(m)
	tp := h.targets.Get().(*[]*Conn)
	sp := h.targets.Get().(*[]*Conn)
	starts := (*sp)[:0]
	var n int64
	for i := range h.shards {
		s := &h.shards[i]
		targets := (*tp)[:0]
		s.mu.RLock()
		for id, p := range s.users {
			if skip != nil {
				if _, ok := skip[id]; ok {
					continue
				}
			}
			targets = append(targets, p.conns...)
		}
		s.mu.RUnlock()
		var k int64
		k, starts = fanout(dropSkipped(targets, skipConns), m, starts)
		n += k
		clear(targets)
		*tp = targets[:0]
	}
	startWriters(starts)
	*sp = starts[:0]
	h.targets.Put(tp)
	h.targets.Put(sp)
	return n
}

// deliverTopic is Node.DeliverTopic (trace.go).
func (h *Hub) deliverTopic(m *Message) int64 {
	h.preEncode(m)
	ts := h.topicShard(m.Topic)
	tp := h.targets.Get().(*[]*Conn)
	targets := (*tp)[:0]
	ts.mu.RLock()
	for c := range ts.topics[m.Topic] {
		targets = append(targets, c)
	}
	ts.mu.RUnlock()
	targets = dropSkipped(targets, h.skipConns(m))
	sp := h.targets.Get().(*[]*Conn)
	n, starts := fanout(targets, m, (*sp)[:0])
	startWriters(starts)
	*sp = starts[:0]
	clear(targets)
	*tp = targets[:0]
	h.targets.Put(tp)
	h.targets.Put(sp)
	return n
}

// ack hands acknowledged ids to the engine. implicit: written to a raw
// client (from its write loop).
func (h *Hub) ack(c *Conn, ids []string, implicit bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.EngineTimeout)
	defer cancel()
	if h.tr != nil {
		return h.tr.ack(ctx, c, ids, implicit, func(ctx context.Context) error {
			return h.eng.Ack(ctx, c.userID, c.idString(), ids, implicit)
		})
	}
	return h.eng.Ack(ctx, c.userID, c.idString(), ids, implicit)
}

// UserConns implements Node.
func (h *Hub) UserConns(userID string) (int, time.Time) {
	s := h.shard(userID)
	s.mu.RLock()
	defer s.mu.RUnlock()
	if p := s.users[userID]; p != nil {
		return len(p.conns), p.conns[0].opened
	}
	return 0, time.Time{}
}

// ForgetSeen implements Node.
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

// CountInbox implements Node.
func (h *Hub) CountInbox(c InboxCounts) {
	m := h.metrics
	m.acked.Add(float64(c.Acked))
	m.inboxTrimmed.Add(float64(c.Trimmed))
	m.inboxExpired.Add(float64(c.Expired))
	m.replayed.Add(float64(c.Replayed))
	m.inboxFull.Add(float64(c.Full))
	m.receiptsEvicted.Add(float64(c.ReceiptsEvicted))
	m.topicStored.Add(float64(c.TopicStored))
	m.topicTrimmed.Add(float64(c.TopicTrimmed))
	m.topicExpired.Add(float64(c.TopicExpired))
	m.topicFull.Add(float64(c.TopicFull))
}

// userConns appends userID's connections to dst, copied under the shard's
// read lock so that the caller acts on them without holding it.
func (h *Hub) userConns(dst []*Conn, userID string) []*Conn {
	s := h.shard(userID)
	s.mu.RLock()
	if p := s.users[userID]; p != nil {
		dst = append(dst, p.conns...)
	}
	s.mu.RUnlock()
	return dst
}

// CloseUser implements Node.
func (h *Hub) CloseUser(userID, text string) int {
	var buf [8]*Conn
	targets := h.userConns(buf[:0], userID)
	r := CloseKicked
	if text != "" {
		r.Text = text
	}
	for _, c := range targets {
		c.closeWith(r)
	}
	return len(targets)
}

// Evict implements Node.
func (h *Hub) Evict(window time.Duration) int {
	all := h.allConns()
	go closeSpread(context.Background(), all, CloseEngineUnavailable, window)
	return len(all)
}

// allConns returns every connection in the registry.
func (h *Hub) allConns() []*Conn {
	var all []*Conn
	for i := range h.shards {
		s := &h.shards[i]
		s.mu.RLock()
		for _, p := range s.users {
			all = append(all, p.conns...)
		}
		s.mu.RUnlock()
	}
	return all
}

// closeSpread closes conns with r at a steady pace over window, so that
// clients do not all reconnect at the same instant (all at once when ctx
// ends).
func closeSpread(ctx context.Context, conns []*Conn, r CloseReason, window time.Duration) {
	var step time.Duration
	if len(conns) > 0 {
		step = window / time.Duration(len(conns))
	}
	start := time.Now()
	for i, c := range conns {
		if d := time.Duration(i)*step - time.Since(start); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
			}
		}
		c.closeWith(r)
	}
}

// Shutdown refuses new connections and closes the open ones with 1001
// (going away) at a steady pace spread over window, so that clients do not
// all reconnect at the same instant. Messages already queued are written
// before each close frame. It returns when every connection is gone or ctx
// ends. The engine is the caller's to close after.
func (h *Hub) Shutdown(ctx context.Context, window time.Duration) error {
	if h.closing.Swap(true) {
		return nil
	}
	// Parked read loops are woken on the way out, even if ctx ends first:
	// each then waits on its own goroutine.
	defer h.reads.close()
	all := h.allConns()
	if len(all) > 0 {
		h.log.Info("closing client connections", "connections", len(all), "window", window)
	}
	closeSpread(ctx, all, CloseGoingAway, window)
	// Wait for the handlers to finish (they unregister on the way out).
	for h.live.Load() > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	return nil
}
