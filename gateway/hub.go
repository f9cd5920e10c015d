package gateway

import (
	"cmp"
	"container/heap"
	"context"
	"errors"
	"hash/maphash"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"pushgate/gateway/limit"
	"pushgate/gateway/token"
)

// Config tunes the gateway. The zero value of a field means its default.
type Config struct {
	// HeartbeatInterval is how often the server pings each connection.
	// Default 25s.
	HeartbeatInterval time.Duration
	// HeartbeatTimeout is how long a ping may go unanswered before the
	// connection is closed. Default 10s.
	HeartbeatTimeout time.Duration
	// WriteTimeout bounds one batch of writes to a socket; a peer that takes
	// longer is closed as a slow consumer. Default 10s.
	WriteTimeout time.Duration
	// QueueMessages caps the messages waiting to be written to one
	// connection. Default 1024.
	QueueMessages int
	// QueueBytes caps the payload bytes waiting to be written to one
	// connection. Default 4 MiB.
	QueueBytes int
	// ReadLimit is the largest frame accepted from a client, in bytes; a
	// larger one closes the connection with 1009. Default 16 KiB.
	ReadLimit int64
	// MaxUserIDBytes is the longest user id accepted. Default 128.
	MaxUserIDBytes int
	// OriginPatterns lists the cross-origin hosts allowed to open WebSockets
	// (see websocket.AcceptOptions.OriginPatterns). Same-origin is always
	// allowed; empty means same-origin only.
	OriginPatterns []string

	// InboxMessages and InboxBytes cap one user's inbox; past them the
	// oldest entries are dropped (and counted). Defaults 100 and 256 KiB.
	InboxMessages int
	InboxBytes    int
	// InboxMaxTTL is the longest ttl a message may ask for, and how long a
	// loss (trimmed or expired entry) is remembered for resuming clients.
	// Default 24h.
	InboxMaxTTL time.Duration
	// PresenceGrace is how long a user may be gone before WatchEvents
	// reports them offline, so that a page reload reports nothing. Default
	// 5s; negative means report at once.
	PresenceGrace time.Duration
	// MaxTopicsPerConn caps one connection's subscriptions. Default 64.
	MaxTopicsPerConn int
	// UpstreamUsers and UpstreamTopics say who may send messages upstream
	// (to WatchEvents): users whose id matches one of UpstreamUsers (path.Match
	// patterns, "*" for everyone), or envelope messages addressed to a topic
	// matching UpstreamTopics (exact or "prefix*"). Empty: nobody.
	UpstreamUsers  []string
	UpstreamTopics []string

	// Epoch names the lifetime of the inboxes: a client resuming with
	// another epoch's last_id is told recovered:false. Default: random at
	// start (memory inboxes die with the process).
	Epoch string

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
	// UpstreamPerSecond limits the frames one client may send (burst of
	// twice that); past it the connection is closed with 4002. 0: no limit.
	UpstreamPerSecond float64
}

func (c *Config) setDefaults() {
	def := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	if c.Epoch == "" {
		c.Epoch = NewID()[16:]
	}
	def(&c.HeartbeatInterval, 25*time.Second)
	def(&c.HeartbeatTimeout, 10*time.Second)
	def(&c.WriteTimeout, 10*time.Second)
	def(&c.InboxMaxTTL, 24*time.Hour)
	def(&c.PresenceGrace, 5*time.Second)
	defInt := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defInt(&c.QueueMessages, 1024)
	defInt(&c.QueueBytes, 4<<20)
	defInt(&c.MaxUserIDBytes, 128)
	defInt(&c.InboxMessages, 100)
	defInt(&c.InboxBytes, 256<<10)
	defInt(&c.MaxTopicsPerConn, 64)
	if c.ReadLimit <= 0 {
		c.ReadLimit = 16 << 10
	}
}

const numShards = 64

// Hub is the registry of open connections on this node (by user and by
// topic), the users' inboxes, and the fan-out that pushes messages.
//
// All methods are safe for concurrent use. No method writes to a socket:
// they enqueue on connections, whose own write loops do the I/O, so no lock
// of the Hub is ever held during network I/O.
//
// Ordering: a message to a user gets its id, goes into the inbox and is
// queued on the user's connections in one critical section of the user's
// shard, so every connection of a user receives that user's messages in id
// order, and resuming "after id X" is exact.
type Hub struct {
	// Immutable after construction.
	cfg     Config
	log     *slog.Logger
	metrics *Metrics
	seed    maphash.Seed

	shards      [numShards]shard
	topicShards [numShards]topicShard
	watchers    watchers

	users   atomic.Int64
	conns   atomic.Int64
	envs    atomic.Int64 // envelope connections among conns
	inboxed atomic.Int64 // messages in all inboxes
	nextID  atomic.Uint64
	closing atomic.Bool  // Shutdown started: refuse new connections
	live    atomic.Int64 // connection handlers still running
	stop    chan struct{}
	newConn *limit.Bucket // nil: unlimited

	logBucket     *limit.Bucket
	logSuppressed atomic.Int64

	targets sync.Pool // *[]*Conn, fan-out scratch space

	cl Cluster // nil: memory engine (this node only); set by SetCluster before serving
}

type shard struct {
	mu      sync.RWMutex
	users   map[string]*presence   // guarded by mu
	inboxes map[string]*inbox      // guarded by mu
	leaving map[string]*time.Timer // users within PresenceGrace of going offline; guarded by mu
}

// presence is one online user's connections, oldest first.
type presence struct {
	conns []*Conn
}

// NewHub returns an empty hub whose metrics are registered on reg. It runs
// one goroutine (inbox expiry) until Shutdown.
func NewHub(cfg Config, log *slog.Logger, reg prometheus.Registerer) *Hub {
	cfg.setDefaults()
	h := &Hub{cfg: cfg, log: log, seed: maphash.MakeSeed(), stop: make(chan struct{})}
	h.newConn = limit.NewBucket(cfg.NewConnsPerSecond, int(cfg.NewConnsPerSecond)+1)
	h.logBucket = limit.NewBucket(logBurst, logBurst)
	for i := range h.shards {
		h.shards[i].users = make(map[string]*presence)
		h.shards[i].inboxes = make(map[string]*inbox)
		h.shards[i].leaving = make(map[string]*time.Timer)
		h.topicShards[i].topics = make(map[string]map[*Conn]struct{})
	}
	h.targets.New = func() any { s := make([]*Conn, 0, 256); return &s }
	h.metrics = NewMetrics(reg, h)
	go h.expireLoop()
	return h
}

// Config returns the effective configuration (defaults applied).
func (h *Hub) Config() Config { return h.cfg }

// Users returns the number of users with at least one open connection.
func (h *Hub) Users() int64 { return h.users.Load() }

// Connections returns the number of open connections.
func (h *Hub) Connections() int64 { return h.conns.Load() }

// Inboxed returns the number of messages held in inboxes.
func (h *Hub) Inboxed() int64 { return h.inboxed.Load() }

func (h *Hub) shardIndex(userID string) int {
	return int(maphash.String(h.seed, userID) % numShards)
}

func (h *Hub) shard(userID string) *shard { return &h.shards[h.shardIndex(userID)] }

// errUserLimit: the user already holds MaxConnsPerUser connections.
var errUserLimit = errors.New("too many connections for this user")

// register adds c to the registry and, in the same critical section, queues
// what the connection must see first: for envelope connections the hello,
// then the inbox entries after lastID (all of them when lastID is ""; raw
// clients have no ids and normally pass none). resume says whether the
// client gave a lastID.
func (h *Hub) register(c *Conn, lastID, epoch string, resume bool) error {
	if h.cl != nil {
		return h.registerCluster(c, lastID, epoch, resume)
	}
	s := h.shard(c.userID)
	now := time.Now()
	s.mu.Lock()
	first, err := h.addConnLocked(s, c)
	if err != nil {
		s.mu.Unlock()
		return err
	}
	if first {
		if t, ok := s.leaving[c.userID]; ok {
			t.Stop() // back within the grace: no offline, no online
			delete(s.leaving, c.userID)
		} else {
			h.emit(Event{Kind: EventUserOnline, UserID: c.userID, ConnID: c.idString(), Time: now})
		}
	}

	var replay []*Message
	complete := true
	sameEpoch := epoch == "" || epoch == h.cfg.Epoch
	if b := s.inboxes[c.userID]; b != nil {
		// Entries past their ttl that the sweep has not reached yet are a
		// loss, not an ack.
		if n := b.expire(now, h.cfg.InboxMaxTTL); n > 0 {
			h.inboxed.Add(int64(-n))
			h.metrics.inboxExpired.Add(float64(n))
		}
		replay, complete = b.after(lastID, now)
		if resume && sameEpoch {
			// The client has everything up to lastID: that counts as its
			// ack, even if an ack frame was lost with the old connection.
			for _, id := range b.ackThrough(lastID) {
				h.inboxed.Add(-1)
				h.metrics.acked.Inc()
				h.emit(Event{Kind: EventMessageAcked, UserID: c.userID, ConnID: c.idString(), MessageID: id, Implicit: true, Time: now})
			}
		}
	}
	if !sameEpoch {
		complete = false // last_id is from inboxes that no longer exist
	}
	if c.envelope {
		hl := hello{
			ConnID: c.idString(), UserID: c.userID, Replayed: len(replay),
			Heartbeat: helloHeartbeat{h.cfg.HeartbeatInterval.Milliseconds(), h.cfg.HeartbeatTimeout.Milliseconds()},
			Topics:    c.topicList,
			Epoch:     h.cfg.Epoch,
		}
		if resume {
			hl.Recovered = &complete
		}
		c.queueLocked(helloFrame(hl))
	}
	for _, m := range replay {
		c.queueLocked(frame{msg: m})
	}
	s.mu.Unlock()
	h.metrics.replayed.Add(float64(len(replay)))
	return nil
}

// addConnLocked adds c to its user's connections on this node, within
// MaxConnsPerUser; s is c's shard, locked. first: the user had none here.
func (h *Hub) addConnLocked(s *shard, c *Conn) (first bool, err error) {
	p := s.users[c.userID]
	if p != nil && h.cfg.MaxConnsPerUser > 0 && len(p.conns) >= h.cfg.MaxConnsPerUser {
		return false, errUserLimit
	}
	if p == nil {
		p = &presence{}
		s.users[c.userID] = p
		h.users.Add(1)
	}
	p.conns = append(p.conns, c)
	h.conns.Add(1)
	if c.envelope {
		h.envs.Add(1)
	}
	return len(p.conns) == 1, nil
}

// removeConnLocked takes c out of its user's connections on this node; s
// is c's shard, locked. removed: c was there; last: it was the user's last
// connection here.
func (h *Hub) removeConnLocked(s *shard, c *Conn) (removed, last bool) {
	p := s.users[c.userID]
	if p == nil {
		return false, false
	}
	i := slices.Index(p.conns, c)
	if i < 0 {
		return false, false
	}
	p.conns = slices.Delete(p.conns, i, i+1)
	h.conns.Add(-1)
	if c.envelope {
		h.envs.Add(-1)
	}
	if len(p.conns) > 0 {
		return true, false
	}
	delete(s.users, c.userID)
	h.users.Add(-1)
	return true, true
}

// remove takes c out of the registry and its topics; calling it again is a
// no-op. Called once c is closing.
func (h *Hub) remove(c *Conn) {
	c.mu.Lock()
	topics := c.topics
	c.topics = nil
	c.mu.Unlock()
	for t := range topics {
		h.dropSubscriber(c, t)
	}
	if h.cl != nil {
		h.removeCluster(c)
		return
	}

	s := h.shard(c.userID)
	s.mu.Lock()
	defer s.mu.Unlock()
	if removed, last := h.removeConnLocked(s, c); !removed || !last {
		return
	}
	userID := c.userID
	if h.cfg.PresenceGrace < 0 {
		h.emit(Event{Kind: EventUserOffline, UserID: userID})
		return
	}
	var t *time.Timer
	t = time.AfterFunc(h.cfg.PresenceGrace, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.leaving[userID] != t {
			return // came back, or a newer timer owns it
		}
		delete(s.leaving, userID)
		h.emit(Event{Kind: EventUserOffline, UserID: userID})
	})
	if old := s.leaving[userID]; old != nil {
		old.Stop()
	}
	s.leaving[userID] = t
}

// Delivery is the outcome of a message for one user.
type Delivery struct {
	UserID    string
	Online    bool // the user had at least one open connection
	Delivered int  // connections the message was queued on
	Stored    bool // the message went into the user's inbox
}

// SendToUser queues m on every connection of userID and, when m.TTL > 0,
// keeps it in the user's inbox. It sets m.ID and m.Time.
func (h *Hub) SendToUser(_ context.Context, userID string, m *Message) (Delivery, error) {
	s := h.shard(userID)
	var slow [4]*Conn
	m.stored = m.TTL > 0 // set before any write loop can see m
	s.mu.Lock()
	m.ID, m.Time = NewID(), time.Now()
	d, overflow := h.sendLocked(s, userID, m, slow[:0])
	s.mu.Unlock()
	closeSlow(overflow)
	return d, nil
}

// SendToUsers queues m for each user, like SendToUser, with one id for all.
// Results are in the order of userIDs; a repeated id is delivered and
// reported once. The shards of all the users are locked together (in index
// order) so that the shared id keeps every user's stream in id order.
func (h *Hub) SendToUsers(_ context.Context, userIDs []string, m *Message) ([]Delivery, error) {
	seen := make(map[string]struct{}, len(userIDs))
	ids := make([]string, 0, len(userIDs))
	var locked [numShards]bool
	for _, id := range userIDs {
		if _, dup := seen[id]; dup {
			continue
		}
		seen[id] = struct{}{}
		ids = append(ids, id)
		locked[h.shardIndex(id)] = true
	}
	m.stored = m.TTL > 0 // set before any write loop can see m
	for i := range h.shards {
		if locked[i] {
			h.shards[i].mu.Lock()
		}
	}
	m.ID, m.Time = NewID(), time.Now()
	out := make([]Delivery, len(ids))
	var overflow []*Conn
	for i, id := range ids {
		out[i], overflow = h.sendLocked(h.shard(id), id, m, overflow)
	}
	for i := range h.shards {
		if locked[i] {
			h.shards[i].mu.Unlock()
		}
	}
	closeSlow(overflow)
	return out, nil
}

// sendLocked stores and queues m for one user; s is locked. Connections
// whose queue overflowed are appended to overflow, to be closed by the
// caller once the lock is released.
func (h *Hub) sendLocked(s *shard, userID string, m *Message, overflow []*Conn) (Delivery, []*Conn) {
	d := Delivery{UserID: userID}
	if m.TTL > 0 {
		b := s.inboxes[userID]
		if b == nil {
			b = &inbox{}
			s.inboxes[userID] = b
		}
		trimmed := b.add(m, m.Time, h.cfg.InboxMessages, h.cfg.InboxBytes, h.cfg.InboxMaxTTL)
		h.inboxed.Add(int64(1 - trimmed))
		h.metrics.inboxTrimmed.Add(float64(trimmed))
		d.Stored = true
	}
	if p := s.users[userID]; p != nil {
		d.Online = true
		for _, c := range p.conns {
			switch c.enqueue(frame{msg: m}) {
			case queued:
				d.Delivered++
			case overflowed:
				overflow = append(overflow, c)
			}
		}
	}
	return d, overflow
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

// startWriters starts the write loops fanout asked for, and clears the list.
func startWriters(starts []*Conn) {
	for _, c := range starts {
		go c.writeFn()
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

// Broadcast queues m on every connection except those of the users in
// exclude, and returns how many connections it was queued on. Broadcasts are
// live only (never stored). It sets m.ID and m.Time.
func (h *Hub) Broadcast(_ context.Context, m *Message, exclude []string) (int64, error) {
	m.ID, m.Time, m.broadcast = NewID(), time.Now(), true
	return h.broadcast(m, exclude), nil
}

func (h *Hub) broadcast(m *Message, exclude []string) int64 {
	var skip map[string]struct{}
	if len(exclude) > 0 {
		skip = make(map[string]struct{}, len(exclude))
		for _, id := range exclude {
			skip[id] = struct{}{}
		}
	}
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
		k, starts = fanout(targets, m, starts)
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

// Publish queues m on every connection subscribed to topic and returns how
// many. Topic messages are live only. It sets m.ID, m.Time and m.Topic.
func (h *Hub) Publish(_ context.Context, topic string, m *Message) (int64, error) {
	m.ID, m.Time, m.Topic = NewID(), time.Now(), topic
	return h.publish(topic, m), nil
}

func (h *Hub) publish(topic string, m *Message) int64 {
	h.preEncode(m)
	ts := h.topicShard(topic)
	tp := h.targets.Get().(*[]*Conn)
	targets := (*tp)[:0]
	ts.mu.RLock()
	for c := range ts.topics[topic] {
		targets = append(targets, c)
	}
	ts.mu.RUnlock()
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

// ack removes acknowledged messages from c's user's inbox and reports each
// one that was there to the watchers. implicit: written to a raw client.
func (h *Hub) ack(c *Conn, ids []string, implicit bool) error {
	if h.cl != nil {
		if implicit {
			// From a write loop, which must not wait on the engine.
			go func() { _ = h.cl.Ack(context.Background(), c.userID, c.idString(), ids, true) }()
			return nil
		}
		ctx, cancel := context.WithTimeout(context.Background(), h.cfg.WriteTimeout)
		defer cancel()
		return h.cl.Ack(ctx, c.userID, c.idString(), ids, false)
	}
	s := h.shard(c.userID)
	now := time.Now()
	s.mu.Lock()
	b := s.inboxes[c.userID]
	if b == nil {
		s.mu.Unlock()
		return nil
	}
	for _, id := range ids {
		if b.ack(id) {
			h.inboxed.Add(-1)
			h.metrics.acked.Inc()
			h.emit(Event{Kind: EventMessageAcked, UserID: c.userID, ConnID: c.idString(), MessageID: id, Implicit: implicit, Time: now})
		}
	}
	if b.empty(now) {
		delete(s.inboxes, c.userID)
	}
	s.mu.Unlock()
	return nil
}

// expireLoop drops expired inbox entries once a second until Shutdown.
func (h *Hub) expireLoop() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-h.stop:
			return
		case now := <-t.C:
			h.expire(now)
		}
	}
}

func (h *Hub) expire(now time.Time) {
	for i := range h.shards {
		s := &h.shards[i]
		s.mu.Lock()
		for id, b := range s.inboxes {
			if n := b.expire(now, h.cfg.InboxMaxTTL); n > 0 {
				h.inboxed.Add(int64(-n))
				h.metrics.inboxExpired.Add(float64(n))
			}
			if b.empty(now) {
				delete(s.inboxes, id)
			}
		}
		s.mu.Unlock()
	}
}

// OnlineUser is the presence of one user on this node.
type OnlineUser struct {
	UserID      string
	Connections int
	Since       time.Time // when the oldest open connection was opened; zero when offline
}

func (p *presence) online(userID string) OnlineUser {
	return OnlineUser{UserID: userID, Connections: len(p.conns), Since: p.conns[0].opened}
}

// Presence reports each of userIDs, in order; offline users have
// Connections == 0.
func (h *Hub) Presence(_ context.Context, userIDs []string) ([]OnlineUser, error) {
	out := make([]OnlineUser, len(userIDs))
	for i, id := range userIDs {
		s := h.shard(id)
		s.mu.RLock()
		if p := s.users[id]; p != nil {
			out[i] = p.online(id)
		} else {
			out[i] = OnlineUser{UserID: id}
		}
		s.mu.RUnlock()
	}
	return out, nil
}

// OnlinePage is one page of ListOnline.
type OnlinePage struct {
	Users            []OnlineUser // ordered by UserID (byte order)
	More             bool         // users sorting after the last one exist
	TotalUsers       int64
	TotalConnections int64
}

// ListOnline returns up to limit online users whose id sorts after the given
// one ("" for the first page). Cost is O(users × log limit) per page.
func (h *Hub) ListOnline(ctx context.Context, after string, limit int) (OnlinePage, error) {
	return h.ListOnlineMatching(ctx, after, limit, nil)
}

// ListOnlineMatching is ListOnline restricted to the user ids for which
// match returns true (nil: all).
func (h *Hub) ListOnlineMatching(_ context.Context, after string, limit int, match func(userID string) bool) (OnlinePage, error) {
	// A max-heap of the limit+1 smallest ids after `after`; the extra one
	// tells whether there is a next page.
	top := &userHeap{}
	keep := limit + 1
	for i := range h.shards {
		s := &h.shards[i]
		s.mu.RLock()
		for id, p := range s.users {
			if id <= after && after != "" || match != nil && !match(id) {
				continue
			}
			if top.Len() < keep {
				heap.Push(top, p.online(id))
			} else if id < (*top)[0].UserID {
				(*top)[0] = p.online(id)
				heap.Fix(top, 0)
			}
		}
		s.mu.RUnlock()
	}
	users := []OnlineUser(*top)
	slices.SortFunc(users, func(a, b OnlineUser) int { return cmp.Compare(a.UserID, b.UserID) })
	page := OnlinePage{TotalUsers: h.users.Load(), TotalConnections: h.conns.Load()}
	if len(users) > limit {
		users, page.More = users[:limit], true
	}
	page.Users = users
	return page, nil
}

// userHeap is a max-heap by UserID.
type userHeap []OnlineUser

func (u userHeap) Len() int           { return len(u) }
func (u userHeap) Less(i, j int) bool { return u[i].UserID > u[j].UserID }
func (u userHeap) Swap(i, j int)      { u[i], u[j] = u[j], u[i] }
func (u *userHeap) Push(x any)        { *u = append(*u, x.(OnlineUser)) }
func (u *userHeap) Pop() any {
	old := *u
	x := old[len(old)-1]
	*u = old[:len(old)-1]
	return x
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

// Disconnect closes every connection of userID with CloseKicked (and the
// given close-frame text, if any) and returns how many it closed.
func (h *Hub) Disconnect(_ context.Context, userID, text string) (int, error) {
	return h.disconnect(userID, text)
}

func (h *Hub) disconnect(userID, text string) (int, error) {
	var buf [8]*Conn
	targets := h.userConns(buf[:0], userID)
	r := CloseKicked
	if text != "" {
		r.Text = text
	}
	for _, c := range targets {
		c.closeWith(r)
	}
	return len(targets), nil
}

// Shutdown refuses new connections and closes the open ones with 1001
// (going away) at a steady pace spread over window, so that clients do not
// all reconnect at the same instant. Messages already queued are written before each close frame;
// inboxes are kept until the process ends. It returns when every connection
// is gone or ctx ends.
func (h *Hub) Shutdown(ctx context.Context, window time.Duration) error {
	if h.closing.Swap(true) {
		return nil
	}
	close(h.stop)
	var all []*Conn
	for i := range h.shards {
		s := &h.shards[i]
		s.mu.RLock()
		for _, p := range s.users {
			all = append(all, p.conns...)
		}
		s.mu.RUnlock()
	}
	if len(all) > 0 {
		h.log.Info("closing client connections", "connections", len(all), "window", window)
	}
	var step time.Duration
	if len(all) > 0 {
		step = window / time.Duration(len(all))
	}
	start := time.Now()
	for i, c := range all {
		if d := time.Duration(i)*step - time.Since(start); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
			}
		}
		c.closeWith(CloseGoingAway)
	}
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
