package server

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/tap"

	"pushgate/gateway/limit"
)

// GuardConfig bounds what a gRPC client can hold before anything has
// checked its API key: keys are checked once a call's request has arrived
// (unary calls) or its stream has started, so the connection and the streams
// before that need bounds of their own.
type GuardConfig struct {
	// MaxStreams caps the concurrent calls (HTTP/2 streams) of one
	// connection, announced in its SETTINGS: grpc-go clients wait for a free
	// one, a client that ignores it gets REFUSED_STREAM. 0: DefaultMaxStreams.
	MaxStreams uint32
	// RequestTimeout bounds the time from a call's headers to its request
	// message, and a new connection's TLS and HTTP/2 handshake: a call whose
	// request has not arrived by then ends with CANCELLED, a connection
	// whose handshake has not finished is closed. 0: DefaultRequestTimeout.
	RequestTimeout time.Duration
	// MaxConnsPerAddr caps the open connections from one client IP address
	// (Listener): past it a new connection is closed at once. 0: no cap.
	MaxConnsPerAddr int
	// ResetRate limits, per connection, the calls per second that end
	// before their request arrived, reset by the client (the HTTP/2 "rapid
	// reset" attack) or refused before any handler ran; bursts of twice that.
	// Past it the connection is closed. 0: no limit.
	ResetRate float64
}

// Defaults of GuardConfig (and of the flags that set it).
const (
	DefaultMaxStreams      = 100
	DefaultRequestTimeout  = 10 * time.Second
	DefaultMaxConnsPerAddr = 32
	DefaultResetRate       = 100
)

// Guard applies a GuardConfig: wrap the gRPC listener with Listener and pass
// the Guard in ServerOptions. Safe for concurrent use.
type Guard struct {
	cfg GuardConfig // immutable

	mu    sync.Mutex
	perIP map[string]int // guarded by mu: open connections by client IP
	// byAddr finds a call's connection by its peer address, the very value
	// the connection's RemoteAddr returns (compared as such: no formatting
	// per call). Guarded by mu.
	byAddr map[net.Addr]*guardedConn

	open        prometheus.Gauge
	refused     prometheus.Counter
	resetCuts   prometheus.Counter
	reqTimeouts prometheus.Counter
}

// NewGuard returns a Guard whose metrics are registered on reg (nil: not
// registered).
func NewGuard(cfg GuardConfig, reg prometheus.Registerer) *Guard {
	if cfg.MaxStreams == 0 {
		cfg.MaxStreams = DefaultMaxStreams
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	g := &Guard{
		cfg:    cfg,
		perIP:  make(map[string]int),
		byAddr: make(map[net.Addr]*guardedConn),
		open: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pushgate_grpc_connections",
			Help: "Open gRPC connections.",
		}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pushgate_grpc_connections_refused_total",
			Help: "gRPC connections closed on accept because their address already had --grpc-max-connections-per-address open.",
		}),
		resetCuts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pushgate_grpc_reset_flood_closed_total",
			Help: "gRPC connections closed for ending calls before their request faster than --grpc-reset-rate (rapid reset).",
		}),
		reqTimeouts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pushgate_grpc_request_timeouts_total",
			Help: "gRPC calls ended because their request did not arrive within --grpc-request-timeout.",
		}),
	}
	if reg != nil {
		reg.MustRegister(g.open, g.refused, g.resetCuts, g.reqTimeouts)
	}
	return g
}

// serverOptions are the grpc.Server options that apply the guard.
func (g *Guard) serverOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxConcurrentStreams(g.cfg.MaxStreams),
		grpc.ConnectionTimeout(g.cfg.RequestTimeout),
		grpc.InTapHandle(g.tap),
	}
}

// Listener returns ln with the per-address cap applied; the connections it
// accepts are the ones a reset flood can close.
func (g *Guard) Listener(ln net.Listener) net.Listener {
	return &guardedListener{Listener: ln, g: g}
}

type guardedListener struct {
	net.Listener
	g *Guard
}

// Accept returns the next connection within the per-address cap; the ones
// over it are closed here and never reach the gRPC server.
func (l *guardedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if gc := l.g.admit(c); gc != nil {
			return gc, nil
		}
		c.Close()
	}
}

// guardedConn is an accepted connection, counted until it closes.
type guardedConn struct {
	net.Conn
	g      *Guard
	ip     string
	addr   net.Addr      // its key in byAddr
	resets *limit.Bucket // nil: no limit
	cut    atomic.Bool   // closed for resets
	once   sync.Once
}

func clientIP(addr string) string {
	if ap, err := netip.ParseAddrPort(addr); err == nil {
		return ap.Addr().Unmap().String()
	}
	return addr
}

func (g *Guard) admit(c net.Conn) *guardedConn {
	addr := c.RemoteAddr()
	gc := &guardedConn{Conn: c, g: g, ip: clientIP(addr.String()), addr: addr}
	if g.cfg.ResetRate > 0 {
		gc.resets = limit.NewBucket(g.cfg.ResetRate, int(2*g.cfg.ResetRate)+1)
	}
	g.mu.Lock()
	if max := g.cfg.MaxConnsPerAddr; max > 0 && g.perIP[gc.ip] >= max {
		g.mu.Unlock()
		g.refused.Inc()
		return nil
	}
	g.perIP[gc.ip]++
	g.byAddr[addr] = gc
	g.mu.Unlock()
	g.open.Inc()
	return gc
}

// Close closes the connection and releases its place.
func (c *guardedConn) Close() error {
	c.once.Do(func() {
		g := c.g
		g.mu.Lock()
		if g.perIP[c.ip]--; g.perIP[c.ip] <= 0 {
			delete(g.perIP, c.ip)
		}
		if g.byAddr[c.addr] == c {
			delete(g.byAddr, c.addr)
		}
		g.mu.Unlock()
		g.open.Dec()
	})
	return c.Conn.Close()
}

// reset counts a call that ended before its request arrived, and closes the
// connection once they come faster than the guard's ResetRate.
func (c *guardedConn) reset() {
	if c.resets.Allow() {
		return
	}
	if !c.cut.Swap(true) {
		c.g.resetCuts.Inc()
		c.Close()
	}
}

func (g *Guard) conn(ctx context.Context) *guardedConn {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.byAddr[p.Addr]
}

// pendingCall is the context of a call whose request may not have arrived
// yet (see tap).
type pendingCall struct {
	context.Context
	state  atomic.Uint32 // callWaiting, then one of the others
	cancel context.CancelCauseFunc
	g      *Guard
	timer  *time.Timer
	conn   *guardedConn // nil: resets are not counted
	stop   func() bool  // deregisters ended; nil when resets are not counted
}

func (pc *pendingCall) Value(key any) any {
	if key == (pendingKey{}) {
		return pc
	}
	return pc.Context.Value(key)
}

// timedOut ends the call: its request did not arrive in time.
func (pc *pendingCall) timedOut() {
	if pc.state.CompareAndSwap(callWaiting, callTimedOut) {
		pc.g.reqTimeouts.Inc()
		pc.cancel(errRequestTimeout)
	}
}

// ended runs when the call's context ends: before its request arrived, the
// client reset it (or it was refused unread).
func (pc *pendingCall) ended() {
	if pc.state.CompareAndSwap(callWaiting, callEnded) {
		pc.timer.Stop()
		pc.conn.reset()
	}
}

const (
	callWaiting uint32 = iota
	callArrived
	callTimedOut
	callEnded
)

type pendingKey struct{}

var errRequestTimeout = errors.New("the call's request did not arrive in time")

// tap runs on the connection's reader for every new call, before any
// handler (grpc.InTapHandle): it gives the call RequestTimeout for its
// request to arrive, and arranges that a call ending before that counts
// against the connection's ResetRate. requestArrived, called by the
// outermost interceptors, lifts both.
func (g *Guard) tap(ctx context.Context, _ *tap.Info) (context.Context, error) {
	pc := &pendingCall{g: g, conn: g.conn(ctx)} // conn nil: not from Listener
	pc.Context, pc.cancel = context.WithCancelCause(ctx)
	pc.timer = time.AfterFunc(g.cfg.RequestTimeout, pc.timedOut)
	if pc.conn != nil && pc.conn.resets != nil {
		// The stream's context ends when the call does.
		pc.stop = context.AfterFunc(pc.Context, pc.ended)
	}
	return pc, nil
}

// requestArrived tells the guard that the call of ctx has its request: it
// is no longer timed or counted as a reset.
func requestArrived(ctx context.Context) {
	pc, ok := ctx.Value(pendingKey{}).(*pendingCall)
	if !ok || !pc.state.CompareAndSwap(callWaiting, callArrived) {
		return
	}
	pc.timer.Stop()
	if pc.stop != nil {
		pc.stop()
	}
}
