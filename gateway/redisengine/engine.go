// Package redisengine lets several pushgate nodes share presence, inboxes,
// topics and fan-out through Redis.
//
// Every call that changes shared state is one Lua script (scripts.lua), so
// it is atomic: a message gets its id, goes into the inbox and is published
// to the nodes holding its users in one step, and ids grow in the order the
// scripts run. Each node subscribes to its own channel (messages for its
// users and topics, kicks, and events when it has WatchEvents streams) and
// to the broadcast channel, and delivers what it receives in order. So
// every connection of a user, whatever its node, gets the user's messages in
// id order, and a connection that joins (one script: presence + replay)
// misses nothing and gets nothing twice.
//
// All keys share one Redis Cluster hash tag ({prefix}), so the engine runs
// on a single Redis, Sentinel or a Cluster (where one slot holds them).
package redisengine

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"pushgate/gateway"
)

//go:embed scripts.lua
var scriptSource string

// Options configure an Engine. The zero value of a field means its default.
type Options struct {
	// Node names this process in Redis; it must be unique in the cluster.
	// Default: host name, pid and a random suffix (a restarted process is a
	// new node; the old one is reaped).
	Node string
	// Prefix goes in front of every key and channel, as a Redis Cluster
	// hash tag. Default "pushgate".
	Prefix string
	// NodeTTL is how long a node that stops beating (killed, cut off) keeps
	// its users online; it beats every NodeTTL/3 and every node reaps dead
	// ones as often. Default 15s, so a dead node's users leave the online
	// list within NodeTTL + NodeTTL/3 = 20s.
	NodeTTL time.Duration
	// Timeout bounds one Redis call. Default 2s.
	Timeout time.Duration
	// WaitReplicas, when above 0, makes a stored send (ttl > 0) wait until
	// that many replicas have it (Redis WAIT, at most WaitTimeout) before it
	// answers: a send they do not all confirm in time fails with
	// ErrUnavailable, and the caller retries it with the same idempotency
	// key. Default 0: no waiting.
	WaitReplicas int
	// WaitTimeout bounds that wait; it must be below Timeout. Default 1s.
	WaitTimeout time.Duration
	// ShardedPubSub makes the node channels shard channels (SSUBSCRIBE,
	// and SPUBLISH in the scripts; Redis 7 or later): in a Redis Cluster a
	// message then travels only within the shard that owns its slot,
	// instead of to every node of the Cluster. Every node of a deployment
	// must agree. Default false.
	ShardedPubSub bool

	shard int // the shard this engine is of a sharded one (Event.Log)
}

func (o *Options) setDefaults() {
	if o.Prefix == "" {
		o.Prefix = "pushgate"
	}
	if o.NodeTTL <= 0 {
		o.NodeTTL = 15 * time.Second
	}
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Second
	}
	if o.WaitTimeout <= 0 {
		o.WaitTimeout = time.Second
	}
	if o.Node == "" {
		host, _ := os.Hostname()
		o.Node = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), strings.ToLower(gateway.NewID()[20:]))
	}
}

const stripes = 64

// Engine is the Redis engine of one node: it implements gateway.Engine and
// reaches this node's connections through its gateway.Node.
type Engine struct {
	node gateway.Node
	rdb  redis.UniversalClient
	log  *slog.Logger
	opt  Options
	cfg  gateway.Config
	seed maphash.Seed
	P    string // key prefix, "{prefix}"

	scripts map[string]*redis.Script

	nodeChan, allChan string

	watchMu sync.Mutex // orders the writes of the WatchEvents count

	// Presence and topic writes for one user (topic) are serialized by its
	// stripe: a write reads the local count and runs its script under it,
	// so writes reach Redis in the order of the counts they carry.
	umu [stripes]sync.Mutex
	tmu [stripes]sync.Mutex
	// The users (topics) this node may hold, per stripe, guarded by the
	// stripe's lock: added when one joins (subscribes), removed when a
	// write finds none left. A resync writes them all.
	users  [stripes]map[string]struct{}
	topics [stripes]map[string]struct{}
	// tusers: per topic, the users this node may hold subscriptions of
	// (topic presence), guarded by the topic's stripe lock like topics.
	tusers [stripes]map[string]map[string]struct{}

	dirtyMu     sync.Mutex
	dirtyUsers  map[string]struct{} // guarded by dirtyMu
	dirtyTopics map[string]struct{} // guarded by dirtyMu
	// dirtyTopicUsers: per topic, the users whose subscription count on
	// this node changed (TopicUserChanged); guarded by dirtyMu.
	dirtyTopicUsers map[string]map[string]struct{}
	resync          bool // guarded by dirtyMu: rewrite everything
	wake            chan struct{}

	flushMu      sync.Mutex  // one flush at a time (worker, restore)
	needRestore  atomic.Bool // the receive loop must restore before reading on
	epoch        atomic.Pointer[string]
	runid        atomic.Pointer[string] // the run id of the Redis the node last checked its mark on
	markMu       sync.Mutex
	mark         string       // guarded by markMu: the id of the last stored send Redis answered (scripts.lua, guard)
	markAt       time.Time    // guarded by markMu: when it was answered
	offlineUntil atomic.Int64 // unix ns: until then, report due offline events every second

	up        atomic.Bool
	downSince atomic.Int64           // unix ns when the node last went down; 0 while up
	gen       atomic.Pointer[string] // the lease's generation (beat)
	stop      chan struct{}
	stopped   sync.WaitGroup
	psMu      sync.Mutex
	ps        *redis.PubSub // guarded by psMu; replaced by the receive loop after a loss
	closed    atomic.Bool

	m metrics
}

type metrics struct {
	errors     *prometheus.CounterVec
	reconnects prometheus.Counter
	resyncs    prometheus.Counter
	reaped     prometheus.Counter
	received   prometheus.Counter
	evicted    prometheus.Counter
	epochs     prometheus.Counter
	waitFailed prometheus.Counter
}

// New returns the engine's constructor for gateway.NewHub.
func New(ctx context.Context, rdb redis.UniversalClient, log *slog.Logger, reg prometheus.Registerer, opt Options) gateway.NewEngine {
	return func(node gateway.Node) (gateway.Engine, error) { return Start(ctx, node, rdb, log, reg, opt) }
}

var _ gateway.Engine = (*Engine)(nil)

// Start connects the engine to Redis and starts it for node: it
// subscribes, writes the node's state and starts beating. It fails when
// Redis cannot be reached at start. Call Close when done.
func Start(ctx context.Context, node gateway.Node, rdb redis.UniversalClient, log *slog.Logger, reg prometheus.Registerer, opt Options) (*Engine, error) {
	opt.setDefaults()
	e := &Engine{
		node: node, rdb: rdb, log: log, opt: opt, cfg: node.Config(), seed: maphash.MakeSeed(),
		P:               "{" + opt.Prefix + "}",
		scripts:         make(map[string]*redis.Script),
		dirtyUsers:      make(map[string]struct{}),
		dirtyTopics:     make(map[string]struct{}),
		dirtyTopicUsers: make(map[string]map[string]struct{}),
		wake:            make(chan struct{}, 1),
		stop:            make(chan struct{}),
	}
	e.cfg.ReceiptRetention, e.cfg.ReceiptMax = gateway.ReceiptBounds(e.cfg)
	e.nodeChan, e.allChan = e.P+":n:"+opt.Node, e.P+":all"
	for i := range e.users {
		e.users[i] = make(map[string]struct{})
		e.topics[i] = make(map[string]struct{})
		e.tusers[i] = make(map[string]map[string]struct{})
	}
	if err := e.parseScripts(); err != nil {
		return nil, err
	}
	if err := e.notifyScripts(); err != nil {
		return nil, err
	}
	e.m = metrics{
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pushgate_redis_errors_total",
			Help: "Redis calls that failed, by operation."}, []string{"op"}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{Name: "pushgate_redis_reconnects_total",
			Help: "Times the node's Redis subscription was restored after a loss."}),
		resyncs: prometheus.NewCounter(prometheus.CounterOpts{Name: "pushgate_redis_resyncs_total",
			Help: "Times the node wrote its whole state to Redis again (after a reconnect or data loss)."}),
		reaped: prometheus.NewCounter(prometheus.CounterOpts{Name: "pushgate_redis_nodes_reaped_total",
			Help: "Dead nodes this node removed from Redis."}),
		received: prometheus.NewCounter(prometheus.CounterOpts{Name: "pushgate_redis_messages_received_total",
			Help: "Pub/sub messages this node received from Redis."}),
		evicted: prometheus.NewCounter(prometheus.CounterOpts{Name: "pushgate_redis_evicted_connections_total",
			Help: "Client connections closed (4003) because this node was cut off from Redis for longer than --node-ttl."}),
		epochs: prometheus.NewCounter(prometheus.CounterOpts{Name: "pushgate_redis_epoch_changes_total",
			Help: "Times this node saw the inbox epoch change because Redis lost data (a restart without it, a failover to a replica that lacked writes)."}),
		waitFailed: prometheus.NewCounter(prometheus.CounterOpts{Name: "pushgate_redis_wait_failures_total",
			Help: "Stored sends answered UNAVAILABLE because fewer than --redis-wait-replicas replicas confirmed them within --redis-wait-timeout."}),
	}
	up := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "pushgate_redis_up",
		Help: "1 while the node's Redis subscription is up."}, func() float64 {
		if e.up.Load() {
			return 1
		}
		return 0
	})
	for _, c := range []prometheus.Collector{e.m.errors, e.m.reconnects, e.m.resyncs, e.m.reaped, e.m.received, e.m.evicted, e.m.epochs, e.m.waitFailed, up} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}

	cctx, cancel := context.WithTimeout(ctx, opt.Timeout)
	defer cancel()
	if err := rdb.Ping(cctx).Err(); err != nil {
		return nil, fmt.Errorf("redis: %w", err)
	}
	for name, s := range e.scripts {
		if err := s.Load(cctx, rdb).Err(); err != nil {
			return nil, fmt.Errorf("redis: loading script %s: %w", name, err)
		}
	}
	if opt.ShardedPubSub {
		if err := e.checkShardedPubSub(cctx); err != nil {
			return nil, err
		}
	}
	e.ps = e.newPubSub(ctx)
	if err := e.subscribe(cctx, e.ps); err != nil {
		_ = e.ps.Close()
		return nil, fmt.Errorf("redis: subscribe: %w", err)
	}
	if err := e.register(cctx); err != nil {
		_ = e.ps.Close()
		return nil, fmt.Errorf("redis: %w", err)
	}
	e.up.Store(true)
	if err := e.checkEpoch(cctx); err != nil {
		_ = e.ps.Close()
		return nil, fmt.Errorf("redis: %w", err)
	}
	e.stopped.Add(4)
	go e.receiveLoop()
	go e.evictLoop()
	go e.workLoop()
	go e.leaseLoop()
	log.Info("redis engine started", "node", opt.Node, "prefix", opt.Prefix, "node_ttl", opt.NodeTTL)
	return e, nil
}

func (e *Engine) parseScripts() error {
	parts := strings.Split(scriptSource, "\n-- @")
	var prelude string
	for _, p := range parts[1:] {
		name, body, _ := strings.Cut(p, "\n")
		body = e.publishes(body)
		switch {
		case name == "prelude":
			prelude = fmt.Sprintf("local EVMAX, EVKEEP = %d, %d\n", e.cfg.EventLogMax, e.cfg.EventLogRetention.Milliseconds()) +
				"local TPEV = " + luaStrings(e.cfg.TopicPresenceEvents) + "\n" + body
		case strings.HasPrefix(name, "script "):
			e.scripts[strings.TrimPrefix(name, "script ")] = redis.NewScript(prelude + "\n" + body)
		default:
			return fmt.Errorf("scripts.lua: unknown section %q", name)
		}
	}
	return nil
}

// publishes returns script source with its PUBLISH calls made SPUBLISH
// with ShardedPubSub (the channels carry the keys' hash tag, so they are
// in the script's slot).
func (e *Engine) publishes(src string) string {
	if !e.opt.ShardedPubSub {
		return src
	}
	return strings.ReplaceAll(src, "redis.call('PUBLISH', ", "redis.call('SPUBLISH', ")
}

// newPubSub makes a subscription with no channel yet.
func (e *Engine) newPubSub(ctx context.Context) *redis.PubSub {
	if e.opt.ShardedPubSub {
		return e.rdb.SSubscribe(ctx)
	}
	return e.rdb.Subscribe(ctx)
}

// subscribe subscribes ps to the node's channels: shard channels with
// ShardedPubSub (its connection goes to the master of their slot).
func (e *Engine) subscribe(ctx context.Context, ps *redis.PubSub) error {
	if e.opt.ShardedPubSub {
		return ps.SSubscribe(ctx, e.nodeChan, e.allChan)
	}
	return ps.Subscribe(ctx, e.nodeChan, e.allChan)
}

// checkShardedPubSub refuses a Redis without shard channels (before 7).
func (e *Engine) checkShardedPubSub(ctx context.Context) error {
	info, err := e.infoServer(ctx)
	if err != nil {
		return fmt.Errorf("redis: reading its version: %w", err)
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "redis_version:"); ok {
			major, _, _ := strings.Cut(v, ".")
			if n, err := strconv.Atoi(major); err != nil || n < 7 {
				return fmt.Errorf("redis %s has no sharded pub/sub (SSUBSCRIBE): spreading over a Redis Cluster needs Redis 7 or later", v)
			}
			return nil
		}
	}
	return nil
}

// Up reports whether the node's Redis subscription is up (it can serve).
func (e *Engine) Up() bool { return e.up.Load() }

// Close stops the engine: pending presence writes are flushed, then the
// node removes itself from Redis (its users leave the online list at once
// unless held by another node). Call it after the hub's Shutdown.
func (e *Engine) Close(ctx context.Context) error {
	if e.closed.Swap(true) {
		return nil
	}
	close(e.stop)
	_ = e.pubsub().Close() // ends a read in progress
	e.stopped.Wait()
	cctx, cancel := context.WithTimeout(ctx, e.opt.Timeout)
	defer cancel()
	return e.run(cctx, "leave", e.opt.Node, graceMs(e.cfg.PresenceGrace)).Err()
}

// run calls a script with the prefix as ARGV[1].
func (e *Engine) run(ctx context.Context, name string, args ...any) *redis.Cmd {
	argv := make([]any, 0, len(args)+1)
	argv = append(argv, e.P)
	argv = append(argv, args...)
	cmd := e.scripts[name].Run(ctx, e.rdb, []string{e.P + ":lastid"}, argv...)
	if err := cmd.Err(); err != nil && !errors.Is(err, redis.Nil) {
		e.m.errors.WithLabelValues(name).Inc()
	}
	return cmd
}

// call runs a script for an API call: bounded by the engine's timeout, its
// failures are ErrUnavailable unless the caller gave up.
func (e *Engine) call(ctx context.Context, name string, args ...any) (any, error) {
	cctx, cancel := context.WithTimeout(ctx, e.opt.Timeout)
	defer cancel()
	v, err := e.run(cctx, name, args...).Result()
	if err != nil {
		return nil, e.wrap(ctx, name, err)
	}
	return v, nil
}

func (e *Engine) wrap(ctx context.Context, op string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	msg := err.Error()
	if strings.HasPrefix(msg, "IDEMPOTENCY_CONFLICT") {
		return gateway.ErrIdempotencyConflict
	}
	var rerr redis.Error
	if errors.As(err, &rerr) && strings.HasPrefix(msg, "ERR") && !mentionsTransient(msg) {
		return fmt.Errorf("redis %s: %w", op, err) // a script failed: a bug, INTERNAL
	}
	// Unreachable, timed out, loading, read-only after a failover, out of
	// memory, refused credentials: not now, so UNAVAILABLE.
	e.reloadCluster()
	return fmt.Errorf("%w: redis %s: %v", gateway.ErrUnavailable, op, err)
}

// reloadCluster has a Cluster client read the slots' masters again (in
// the background, at most one read at a time): after a failover the keys'
// slots have a new master, which the client would otherwise learn only at
// its next periodic reload (a minute), since commands are not retried or
// redirected here.
func (e *Engine) reloadCluster() {
	if cc, ok := e.rdb.(*redis.ClusterClient); ok {
		cc.ReloadState(context.Background())
	}
}

// mentionsTransient reports whether an ERR reply carries a "not now" error
// inside (Redis before 7 wraps errors raised in scripts so).
func mentionsTransient(msg string) bool {
	for _, p := range []string{"LOADING", "READONLY", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "BUSY", "NOSCRIPT", "MOVED", "ASK", "OOM", "NOAUTH", "WRONGPASS", "NOPERM"} {
		if strings.Contains(msg, p) {
			return true
		}
	}
	return false
}

// stripe returns the lock stripe of a user id or topic.
func (e *Engine) stripe(s string) int { return int(maphash.String(e.seed, s) % stripes) }

func (e *Engine) kick() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

func ms(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}
