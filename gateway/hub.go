package gateway

import (
	"cmp"
	"container/heap"
	"context"
	"hash/maphash"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Config tunes the gateway. The zero value of a field means its default.
type Config struct {
	// HeartbeatInterval is how often the server pings each connection.
	// Default 25s. Negative turns pings off.
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
}

func (c *Config) setDefaults() {
	def := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.HeartbeatInterval, 25*time.Second)
	def(&c.HeartbeatTimeout, 10*time.Second)
	def(&c.WriteTimeout, 10*time.Second)
	if c.QueueMessages <= 0 {
		c.QueueMessages = 1024
	}
	if c.QueueBytes <= 0 {
		c.QueueBytes = 4 << 20
	}
	if c.ReadLimit <= 0 {
		c.ReadLimit = 16 << 10
	}
	if c.MaxUserIDBytes <= 0 {
		c.MaxUserIDBytes = 128
	}
}

const numShards = 64

// Hub is the registry of open connections on this node, indexed by user, and
// the fan-out that pushes messages to them.
//
// All methods are safe for concurrent use. No method writes to a socket:
// they enqueue on connections, whose own write loops do the I/O, so no lock
// of the Hub is ever held during network I/O.
type Hub struct {
	// Immutable after construction.
	cfg     Config
	log     *slog.Logger
	metrics *Metrics
	seed    maphash.Seed

	shards  [numShards]shard
	users   atomic.Int64
	conns   atomic.Int64
	nextID  atomic.Uint64
	closing atomic.Bool  // Shutdown started: refuse new connections
	live    atomic.Int64 // connection handlers still running

	targets sync.Pool // *[]*Conn, fan-out scratch space
}

type shard struct {
	mu    sync.RWMutex
	users map[string]*presence // guarded by mu
}

// presence is one online user's connections, oldest first.
type presence struct {
	conns []*Conn
}

// NewHub returns an empty hub whose metrics are registered on reg.
func NewHub(cfg Config, log *slog.Logger, reg prometheus.Registerer) *Hub {
	cfg.setDefaults()
	h := &Hub{cfg: cfg, log: log, seed: maphash.MakeSeed()}
	for i := range h.shards {
		h.shards[i].users = make(map[string]*presence)
	}
	h.targets.New = func() any { s := make([]*Conn, 0, 256); return &s }
	h.metrics = NewMetrics(reg, h)
	return h
}

// Config returns the effective configuration (defaults applied).
func (h *Hub) Config() Config { return h.cfg }

// Users returns the number of users with at least one open connection.
func (h *Hub) Users() int64 { return h.users.Load() }

// Connections returns the number of open connections.
func (h *Hub) Connections() int64 { return h.conns.Load() }

func (h *Hub) shard(userID string) *shard {
	return &h.shards[maphash.String(h.seed, userID)%numShards]
}

func (h *Hub) add(c *Conn) {
	s := h.shard(c.userID)
	s.mu.Lock()
	p := s.users[c.userID]
	if p == nil {
		p = &presence{}
		s.users[c.userID] = p
		h.users.Add(1)
	}
	p.conns = append(p.conns, c)
	h.conns.Add(1)
	s.mu.Unlock()
}

// remove takes c out of the registry; calling it again is a no-op.
func (h *Hub) remove(c *Conn) {
	s := h.shard(c.userID)
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.users[c.userID]
	if p == nil {
		return
	}
	i := slices.Index(p.conns, c)
	if i < 0 {
		return
	}
	p.conns = slices.Delete(p.conns, i, i+1)
	h.conns.Add(-1)
	if len(p.conns) == 0 {
		delete(s.users, c.userID)
		h.users.Add(-1)
	}
}

// Delivery is the outcome of a message for one user.
type Delivery struct {
	UserID    string
	Online    bool // the user had at least one open connection
	Delivered int  // connections the message was queued on
}

// SendToUser queues m on every connection of userID.
func (h *Hub) SendToUser(_ context.Context, userID string, m *Message) (Delivery, error) {
	var buf [8]*Conn
	targets := h.userConns(buf[:0], userID)
	d := Delivery{UserID: userID, Online: len(targets) > 0}
	f := m.rawFrame()
	for _, c := range targets {
		if c.enqueue(f) {
			d.Delivered++
		}
	}
	clear(targets)
	return d, nil
}

// SendToUsers queues m on every connection of each user. Results are in the
// order of userIDs; a repeated id is delivered and reported once.
func (h *Hub) SendToUsers(ctx context.Context, userIDs []string, m *Message) ([]Delivery, error) {
	out := make([]Delivery, 0, len(userIDs))
	seen := make(map[string]struct{}, len(userIDs))
	for _, id := range userIDs {
		if _, dup := seen[id]; dup {
			continue
		}
		seen[id] = struct{}{}
		d, err := h.SendToUser(ctx, id, m)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, nil
}

// userConns appends userID's connections to dst, copied under the shard's
// read lock so that the caller enqueues without holding it.
func (h *Hub) userConns(dst []*Conn, userID string) []*Conn {
	s := h.shard(userID)
	s.mu.RLock()
	if p := s.users[userID]; p != nil {
		dst = append(dst, p.conns...)
	}
	s.mu.RUnlock()
	return dst
}

// Broadcast queues m on every connection except those of the users in
// exclude, and returns how many connections it was queued on.
func (h *Hub) Broadcast(_ context.Context, m *Message, exclude []string) (int64, error) {
	var skip map[string]struct{}
	if len(exclude) > 0 {
		skip = make(map[string]struct{}, len(exclude))
		for _, id := range exclude {
			skip[id] = struct{}{}
		}
	}
	f := m.rawFrame()
	tp := h.targets.Get().(*[]*Conn)
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
		for _, c := range targets {
			if c.enqueue(f) {
				n++
			}
		}
		clear(targets)
		*tp = targets[:0]
	}
	h.targets.Put(tp)
	return n, nil
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
func (h *Hub) ListOnline(_ context.Context, after string, limit int) (OnlinePage, error) {
	// A max-heap of the limit+1 smallest ids after `after`; the extra one
	// tells whether there is a next page.
	top := &userHeap{}
	keep := limit + 1
	for i := range h.shards {
		s := &h.shards[i]
		s.mu.RLock()
		for id, p := range s.users {
			if id <= after && after != "" {
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

// Disconnect closes every connection of userID with CloseKicked (and the
// given close-frame text, if any) and returns how many it closed.
func (h *Hub) Disconnect(_ context.Context, userID, text string) (int, error) {
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
// (going away) at a steady pace: spread over window, or 1,000 per second
// when that is faster, so clients do not all reconnect at the same instant.
// Messages already queued are written before each close frame. It returns
// when every connection is gone or ctx ends.
func (h *Hub) Shutdown(ctx context.Context, window time.Duration) error {
	h.closing.Store(true)
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
	step := time.Millisecond
	if len(all) > 0 && window/time.Duration(len(all)) < step {
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
