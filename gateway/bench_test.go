package gateway

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/sync/errgroup"
)

// The fan-out benchmarks run real WebSocket connections (real handshake, real
// http.Server, real Hub.ServeHTTP) over net.Pipe instead of TCP: 10,000 TCP
// connections need 20,000 file descriptors, more than one process may open
// here. The harness itself allocates nothing per message, so that the
// process-wide allocation counts the benchmarks report belong to the gateway
// (and the WebSocket library's server side).

// benchPayload is the 64-byte JSON document the benchmarks push.
var benchPayload = []byte(`{"type":"bench","seq":1234567,"body":"0123456789abcdefghijklmn"}`)

func init() {
	if len(benchPayload) != 64 {
		panic(fmt.Sprintf("benchPayload is %d bytes, want 64", len(benchPayload)))
	}
}

// benchConfig is the hub configuration of the benchmarks: defaults, except
// that heartbeats never fire during a run.
func benchConfig() Config {
	return Config{HeartbeatInterval: time.Hour}
}

// pipeListener is a net.Listener whose connections are net.Pipe ends: dial
// hands the other end to the caller.
type pipeListener struct {
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

func (l *pipeListener) dial(ctx context.Context) (net.Conn, error) {
	server, client := net.Pipe()
	select {
	case l.conns <- &timerConn{Conn: server}:
		return client, nil
	case <-l.closed:
	case <-ctx.Done():
	}
	server.Close()
	client.Close()
	return nil, net.ErrClosed
}

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }

// timerConn gives the server's end of a pipe TCP-like write deadlines.
// net.Pipe allocates a timer and a closure on every SetWriteDeadline, where a
// TCP socket allocates nothing, and the gateway sets two deadlines per batch
// of writes: left alone, the harness's allocations would hide the gateway's.
// timerConn keeps one timer per connection and, when it fires, expires the
// pipe's deadline, which fails the blocked write with os.ErrDeadlineExceeded
// exactly as a TCP socket would.
type timerConn struct {
	net.Conn

	mu       sync.Mutex
	timer    *time.Timer // nil until the first deadline
	deadline time.Time   // zero: none
	expired  bool        // the pipe's own write deadline has been set in the past
}

// aLongTimeAgo is a write deadline in the past.
var aLongTimeAgo = time.Unix(1, 0)

func (c *timerConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deadline = t
	if c.expired {
		c.expired = false
		if err := c.Conn.SetWriteDeadline(time.Time{}); err != nil {
			return err
		}
	}
	if t.IsZero() {
		if c.timer != nil {
			c.timer.Stop()
		}
		return nil
	}
	d := time.Until(t)
	if d <= 0 {
		c.expired = true
		return c.Conn.SetWriteDeadline(aLongTimeAgo)
	}
	if c.timer == nil {
		c.timer = time.AfterFunc(d, c.expire)
	} else {
		c.timer.Reset(d)
	}
	return nil
}

// expire runs on the timer's goroutine. The deadline may have moved since the
// timer was armed; only a deadline that has really passed expires the pipe.
func (c *timerConn) expire() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.deadline.IsZero() || time.Now().Before(c.deadline) || c.expired {
		return
	}
	c.expired = true
	_ = c.Conn.SetWriteDeadline(aLongTimeAgo)
}

func (c *timerConn) SetDeadline(t time.Time) error {
	if err := c.Conn.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

func (c *timerConn) Close() error {
	c.mu.Lock()
	if c.timer != nil {
		c.timer.Stop()
	}
	c.deadline = time.Time{}
	c.mu.Unlock()
	return c.Conn.Close()
}

// pipeHarness is a Hub served by a real http.Server on a pipeListener, with
// real WebSocket clients, each reading on its own goroutine.
//
// Clients count the messages they receive in got; when got reaches want, one
// value is sent on reached. A test sets want before it makes the hub send,
// then waits.
type pipeHarness struct {
	// Immutable after newPipeHarness.
	hub     *Hub
	ln      *pipeListener
	srv     *http.Server
	served  chan error
	tr      *http.Transport
	clients []*pipeClient
	conns   []*Conn // the server's side of clients, in no particular order
	opts    pipeOptions
	envTail []byte // with opts.envelope: how an envelope of opts.expect ends

	got     atomic.Int64
	want    atomic.Int64
	bad     atomic.Int64 // messages of the wrong type or content
	reached chan struct{}
	timer   *time.Timer // wait's timeout; reused so that waiting allocates nothing
	closed  bool
}

// pipeClient is one client connection.
type pipeClient struct {
	userID string
	ws     *websocket.Conn
	done   chan struct{} // closed when the reader has returned

	mu       sync.Mutex
	messages [][]byte // guarded by mu; filled only when the harness records
}

// pipeOptions say how a harness's clients speak and what they check.
type pipeOptions struct {
	// envelope: clients ask for the envelope subprotocol. A message is then
	// one envelope (several may share a frame); the hello is not counted.
	// Otherwise a message is one raw frame.
	envelope bool
	// record: clients keep a copy of every message (tests). Otherwise each
	// must carry expect: be it (raw), or end with it as the data (envelope).
	record bool
	expect []byte
}

var (
	helloPrefix   = []byte(`{"op":"hello"`)
	messagePrefix = []byte(`{"op":"message"`)
)

// newPipeHarness starts a hub and n clients, one per user "u0".."u<n-1>",
// and returns once the hub has registered all of them. The caller must call
// close.
func newPipeHarness(tb testing.TB, cfg Config, n int, opts pipeOptions) *pipeHarness {
	tb.Helper()
	h := &pipeHarness{
		hub:     newTestHub(tb, cfg),
		ln:      newPipeListener(),
		served:  make(chan error, 1),
		opts:    opts,
		envTail: append(append([]byte(`,"data":`), opts.expect...), '}'),
		reached: make(chan struct{}, 1),
		timer:   time.NewTimer(time.Hour),
	}
	h.timer.Stop()
	mux := http.NewServeMux()
	mux.Handle("GET /ws/{userID}", h.hub)
	h.srv = &http.Server{Handler: mux, ErrorLog: log.New(io.Discard, "", 0)}
	go func() { h.served <- h.srv.Serve(h.ln) }()
	h.tr = &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) { return h.ln.dial(ctx) },
	}

	dialOpts := websocket.DialOptions{HTTPClient: &http.Client{Transport: h.tr}}
	if opts.envelope {
		dialOpts.Subprotocols = []string{Subprotocol}
	}
	h.clients = make([]*pipeClient, n)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var g errgroup.Group
	g.SetLimit(4 * runtime.GOMAXPROCS(0))
	for i := range h.clients {
		c := &pipeClient{userID: fmt.Sprintf("u%d", i), done: make(chan struct{})}
		h.clients[i] = c
		g.Go(func() error {
			ws, _, err := websocket.Dial(ctx, "ws://pipe/ws/"+c.userID, &dialOpts)
			if err != nil {
				close(c.done)
				return fmt.Errorf("dial %s: %w", c.userID, err)
			}
			if opts.envelope && ws.Subprotocol() != Subprotocol {
				_ = ws.CloseNow()
				close(c.done)
				return fmt.Errorf("dial %s: subprotocol %q, want %q", c.userID, ws.Subprotocol(), Subprotocol)
			}
			c.ws = ws
			go h.read(c)
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		h.close(tb)
		tb.Fatal(err)
	}
	// Every client is through its handshake; make sure the hub counts them
	// all before looking for their server sides.
	for h.hub.Connections() != int64(n) {
		if ctx.Err() != nil {
			h.close(tb)
			tb.Fatalf("hub has %d connections, want %d", h.hub.Connections(), n)
		}
		time.Sleep(time.Millisecond)
	}
	for i := range h.hub.shards {
		s := &h.hub.shards[i]
		s.mu.RLock()
		for _, p := range s.users {
			h.conns = append(h.conns, p.conns...)
		}
		s.mu.RUnlock()
	}
	return h
}

// read is a client's reader. It reads each message into one reused buffer
// (websocket.Conn.Read would allocate a new slice per message).
func (h *pipeHarness) read(c *pipeClient) {
	defer close(c.done)
	ctx := context.Background() // no Done channel: no per-read timer in the library
	buf := make([]byte, 256)
	for {
		typ, r, err := c.ws.Reader(ctx)
		if err != nil {
			return
		}
		n := 0
		for {
			if n == len(buf) {
				buf = append(buf, make([]byte, len(buf))...)
			}
			m, err := r.Read(buf[n:])
			n += m
			if err == io.EOF {
				break
			}
			if err != nil {
				return
			}
		}
		p := buf[:n]
		if typ != websocket.MessageText {
			h.bad.Add(1)
			h.count(1)
			continue
		}
		if !h.opts.envelope {
			h.check(c, p)
			h.count(1)
			continue
		}
		k := 0
		for len(p) > 0 {
			line := p
			if i := bytes.IndexByte(p, '\n'); i >= 0 {
				line, p = p[:i], p[i+1:]
			} else {
				p = nil
			}
			if bytes.HasPrefix(line, helloPrefix) {
				continue
			}
			h.check(c, line)
			k++
		}
		h.count(k)
	}
}

// check records or checks one message.
func (h *pipeHarness) check(c *pipeClient, m []byte) {
	switch {
	case h.opts.record:
		c.mu.Lock()
		c.messages = append(c.messages, bytes.Clone(m))
		c.mu.Unlock()
	case h.opts.envelope:
		if !bytes.HasPrefix(m, messagePrefix) || !bytes.HasSuffix(m, h.envTail) {
			h.bad.Add(1)
		}
	case !bytes.Equal(m, h.opts.expect):
		h.bad.Add(1)
	}
}

// count adds k received messages and signals reached if that makes the
// expected total.
func (h *pipeHarness) count(k int) {
	if k == 0 {
		return
	}
	n, w := h.got.Add(int64(k)), h.want.Load()
	if n >= w && n-int64(k) < w {
		select {
		case h.reached <- struct{}{}:
		default:
		}
	}
}

// expectTotal sets how many frames, counted since the start, wait waits for.
func (h *pipeHarness) expectTotal(n int64) {
	h.want.Store(n)
	if h.got.Load() >= n { // already there (or past it: wait reports that)
		select {
		case h.reached <- struct{}{}:
		default:
		}
	}
}

// wait blocks until the clients have received the expected total, and fails
// tb after 30s. It allocates nothing.
func (h *pipeHarness) wait(tb testing.TB) {
	h.timer.Reset(30 * time.Second)
	select {
	case <-h.reached:
		h.timer.Stop()
	case <-h.timer.C:
		tb.Fatalf("clients received %d frames, want %d", h.got.Load(), h.want.Load())
	}
	if got, want := h.got.Load(), h.want.Load(); got != want {
		tb.Fatalf("clients received %d frames, want %d", got, want)
	}
	if bad := h.bad.Load(); bad > 0 {
		tb.Fatalf("clients received %d frames of the wrong type or content", bad)
	}
}

// waitIdle waits until no connection has a write loop running, so that the
// next message finds every connection idle, as pushes that are not
// back-to-back do in production. (A client receives its frame a little before
// the write loop that wrote it has noticed its queue is empty and exited.)
func (h *pipeHarness) waitIdle(tb testing.TB) {
	deadline := time.Now().Add(30 * time.Second)
	for _, c := range h.conns {
		for {
			c.mu.Lock()
			writing := c.writing
			c.mu.Unlock()
			if !writing {
				break
			}
			if time.Now().After(deadline) {
				tb.Fatalf("connection %d still has a write loop running after 30s", c.id)
			}
			runtime.Gosched()
		}
	}
}

// close closes every client, waits for the server side of each connection
// and every reader to end, and stops the HTTP server. Goroutines of the
// gateway still running 10s later fail tb. Calling it again does nothing.
func (h *pipeHarness) close(tb testing.TB) {
	if h.closed {
		return
	}
	h.closed = true
	for _, c := range h.clients {
		if c != nil && c.ws != nil {
			_ = c.ws.CloseNow()
		}
	}
	for _, c := range h.clients {
		if c != nil {
			<-c.done
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for h.hub.Connections() > 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := h.hub.Connections(); n > 0 {
		tb.Errorf("the hub still has %d connections 10s after the clients closed", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.hub.Shutdown(ctx, 0); err != nil {
		tb.Errorf("Hub.Shutdown: %v", err)
	}
	if err := h.hub.Engine().Close(ctx); err != nil { // stops the engine's goroutine
		tb.Errorf("Engine.Close: %v", err)
	}
	_ = h.srv.Close()
	if err := <-h.served; err != http.ErrServerClosed {
		tb.Errorf("http.Server.Serve: %v", err)
	}
	h.tr.CloseIdleConnections()
	waitGoroutinesGone(tb, 10*time.Second,
		"pushgate/gateway.(*Hub).ServeHTTP(",
		"pushgate/gateway.(*Conn).",
		"pushgate/gateway.(*pipeHarness).read(",
		fmt.Sprintf("pushgate/gateway.(*memoryEngine).expireLoop(%p", h.hub.Engine()),
	)
}

// waitGoroutinesGone waits up to d until no goroutine's stack contains one
// of markers, and fails tb if some still do.
func waitGoroutinesGone(tb testing.TB, d time.Duration, markers ...string) {
	tb.Helper()
	deadline := time.Now().Add(d)
	var buf []byte
	for {
		n := runtime.NumGoroutine()
		if len(buf) < n*4096 {
			buf = make([]byte, n*4096+1<<16)
		}
		all := string(buf[:runtime.Stack(buf, true)])
		var leaked []string
		for g := range strings.SplitSeq(all, "\n\n") {
			for _, m := range markers {
				if strings.Contains(g, m) {
					leaked = append(leaked, g)
					break
				}
			}
		}
		if len(leaked) == 0 {
			return
		}
		if time.Now().After(deadline) {
			tb.Errorf("%d goroutines still running; the first:\n%s", len(leaked), leaked[0])
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestPipeHarness checks the benchmarks' harness: a broadcast to 50 pipe
// connections reaches each exactly once, byte for byte; a SendToUser reaches
// only its user; and closing leaves no goroutine behind.
func TestPipeHarness(t *testing.T) {
	const n = 50
	h := newPipeHarness(t, benchConfig(), n, pipeOptions{record: true})
	defer h.close(t)
	ctx := context.Background()

	h.expectTotal(n)
	sent, err := h.hub.Engine().Broadcast(ctx, Push{Kind: KindJSON, Data: benchPayload}, nil)
	if err != nil || sent.Connections != n {
		t.Fatalf("Broadcast = %d, %v; want %d, nil", sent.Connections, err, n)
	}
	h.wait(t)

	one := []byte(`{"to":"u7"}`)
	h.expectTotal(n + 1)
	r, err := h.hub.Engine().SendToUsers(ctx, []string{"u7"}, Push{Kind: KindJSON, Data: one})
	if err != nil || len(r.Users) != 1 {
		t.Fatalf("SendToUsers = %+v, %v", r, err)
	}
	if d := r.Users[0]; d.UserID != "u7" || !d.Online || d.Delivered != 1 {
		t.Fatalf("SendToUsers = %+v", d)
	}
	h.wait(t)

	for _, c := range h.clients {
		want := [][]byte{benchPayload}
		if c.userID == "u7" {
			want = append(want, one)
		}
		checkMessages(t, c, want, bytes.Equal)
	}

	h.close(t)
	if got := h.hub.Connections(); got != 0 {
		t.Errorf("hub still has %d connections after the clients closed", got)
	}
}

// TestPipeHarnessEnvelope checks the harness with envelope clients: the
// hello is not counted, and each client gets the broadcast as one envelope
// whose data is the payload.
func TestPipeHarnessEnvelope(t *testing.T) {
	const n = 20
	h := newPipeHarness(t, benchConfig(), n, pipeOptions{envelope: true, record: true})
	defer h.close(t)

	h.expectTotal(n)
	m, err := h.hub.Engine().Broadcast(context.Background(), Push{Type: "bench", Kind: KindJSON, Data: benchPayload}, nil)
	if err != nil || m.Connections != n {
		t.Fatalf("Broadcast = %d, %v; want %d, nil", m.Connections, err, n)
	}
	h.wait(t)
	want := []byte(`{"op":"message","id":"` + m.ID + `","type":"bench","broadcast":true,"ts":`)
	tail := append(append([]byte(`,"data":`), benchPayload...), '}')
	for _, c := range h.clients {
		checkMessages(t, c, [][]byte{want}, func(got, want []byte) bool {
			return bytes.HasPrefix(got, want) && bytes.HasSuffix(got, tail)
		})
	}
}

// checkMessages checks what client c recorded against want.
func checkMessages(t *testing.T, c *pipeClient, want [][]byte, match func(got, want []byte) bool) {
	t.Helper()
	c.mu.Lock()
	got := c.messages
	c.mu.Unlock()
	if len(got) != len(want) {
		t.Errorf("%s received %d messages %q, want %d", c.userID, len(got), got, len(want))
		return
	}
	for i := range want {
		if !match(got[i], want[i]) {
			t.Errorf("%s message %d = %s, want %s", c.userID, i, got[i], want[i])
		}
	}
}

// TestPipeHarnessWriteDeadline checks that the harness's write deadlines
// behave like a socket's: a client that stops reading is closed as a slow
// consumer once WriteTimeout passes, while the others keep receiving.
func TestPipeHarnessWriteDeadline(t *testing.T) {
	cfg := benchConfig()
	cfg.WriteTimeout = 50 * time.Millisecond
	h := newPipeHarness(t, cfg, 2, pipeOptions{record: true})
	defer h.close(t)
	ctx := context.Background()

	// A client that never reads: the server's write to it blocks (net.Pipe
	// has no buffer) until the write deadline fails it.
	ws, _, err := websocket.Dial(ctx, "ws://pipe/ws/stuck", &websocket.DialOptions{
		HTTPClient: &http.Client{Transport: h.tr},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	for h.hub.Connections() != 3 {
		time.Sleep(time.Millisecond)
	}

	h.expectTotal(2)
	if _, err := h.hub.Engine().Broadcast(ctx, Push{Kind: KindJSON, Data: benchPayload}, nil); err != nil {
		t.Fatal(err)
	}
	h.wait(t)

	deadline := time.Now().Add(10 * time.Second)
	for h.hub.Connections() != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("the connection nobody reads is still open after its write deadline")
		}
		time.Sleep(time.Millisecond)
	}
	// Nothing of the frame reached the stuck client; at most the close frame.
	_, _, err = ws.Read(ctx)
	if err == nil {
		t.Fatalf("the slow client read a message, want the connection closed")
	}
	if code := websocket.CloseStatus(err); code != -1 && code != CloseSlowConsumer.Code {
		t.Errorf("the slow client was closed with %d, want %d", code, CloseSlowConsumer.Code)
	}
}

// The fan-out benchmarks: one sub-benchmark per connection count.
var fanoutConns = []int{1, 100, 10000}

// withHarness runs bench as the sub-benchmark name on a harness of n
// connections. The harness is built the first time the testing package calls
// the sub-benchmark and shared by its later calls (it calls it with b.N=1
// first, then with the real b.N), so that 10,000 connections are set up once.
func withHarness(b *testing.B, name string, n int, envelope bool, bench func(b *testing.B, h *pipeHarness)) {
	var h *pipeHarness
	b.Run(name, func(b *testing.B) {
		if h == nil {
			h = newPipeHarness(b, benchConfig(), n, pipeOptions{envelope: envelope, expect: benchPayload})
			warm(b, h, 3)
		}
		bench(b, h)
	})
	if h != nil {
		h.close(b)
	}
}

// newBenchMessage returns a push of benchPayload.
func newBenchMessage() Push {
	return Push{Type: "bench", Kind: KindJSON, Data: benchPayload}
}

// benchMessages returns n new messages, made before a benchmark's loop so
// that its allocation counts are the hub's alone.
func benchMessages(n int) []Push {
	ms := make([]Push, n)
	for i := range ms {
		ms[i] = newBenchMessage()
	}
	return ms
}

// warm sends k broadcasts, so that per-connection buffers (the queue and its
// spare, the library's write buffers) exist before the loop starts.
func warm(b *testing.B, h *pipeHarness, k int) {
	b.Helper()
	n := int64(len(h.clients))
	for range k {
		h.expectTotal(h.got.Load() + n)
		if _, err := h.hub.Engine().Broadcast(context.Background(), newBenchMessage(), nil); err != nil {
			b.Fatal(err)
		}
		h.wait(b)
	}
}

// The harness benchmarks start each op with every connection idle (see
// waitIdle) and measure only part of the loop, but they do not stop the
// benchmark timer around that part: b.StartTimer and b.StopTimer read
// MemStats, which stops the world, and an op that starts right after a
// stop-the-world runs several times slower (a Broadcast to one connection:
// about 13µs instead of 1.4µs). They time the measured part with time.Now
// instead and report it as ns/op, which replaces the framework's; b.N still
// follows the whole loop, so a run's length stays near -benchtime.
//
// allocs/op and B/op stay the framework's: every allocation in the process
// during the loop, divided by b.N. The harness allocates nothing per message
// (messages are made before the loop), so they are the gateway's and the
// WebSocket library's.

// reportTimed replaces ns/op with timed/b.N and adds per-delivery metrics
// for n deliveries per op, allocations taken from the MemStats around the
// loop.
func reportTimed(b *testing.B, timed time.Duration, n int, unit string, before, after *runtime.MemStats) {
	ops := float64(b.N)
	b.ReportMetric(float64(timed.Nanoseconds())/ops, "ns/op")
	b.ReportMetric(float64(timed.Nanoseconds())/(ops*float64(n)), "ns/"+unit)
	if before != nil {
		b.ReportMetric(float64(after.Mallocs-before.Mallocs)/(ops*float64(n)), "allocs/"+unit)
	}
}

// BenchmarkFanout measures one Hub.Broadcast of a 64-byte JSON message to N
// idle connections of the raw protocol, from the call until every client has
// read the frame. ns/delivery and allocs/delivery divide by b.N×N.
func BenchmarkFanout(b *testing.B) { benchmarkFanout(b, false) }

// BenchmarkFanoutEnvelope is BenchmarkFanout with clients of the envelope
// protocol: the message is encoded once and the encoding shared.
func BenchmarkFanoutEnvelope(b *testing.B) { benchmarkFanout(b, true) }

func benchmarkFanout(b *testing.B, envelope bool) {
	for _, n := range fanoutConns {
		withHarness(b, fmt.Sprintf("conns=%d", n), n, envelope, func(b *testing.B, h *pipeHarness) {
			ctx := context.Background()
			msgs := benchMessages(b.N)
			var before, after runtime.MemStats
			var timed time.Duration
			runtime.ReadMemStats(&before)
			b.ReportAllocs()
			b.ResetTimer()
			base := h.got.Load()
			for i := range b.N {
				h.waitIdle(b)
				h.expectTotal(base + int64(i+1)*int64(n))
				start := time.Now()
				sent, _ := h.hub.Engine().Broadcast(ctx, msgs[i], nil)
				h.wait(b)
				timed += time.Since(start)
				if sent.Connections != int64(n) {
					b.Fatalf("Broadcast queued on %d connections, want %d", sent.Connections, n)
				}
			}
			b.StopTimer()
			runtime.ReadMemStats(&after)
			reportTimed(b, timed, n, "delivery", &before, &after)
		})
	}
}

// BenchmarkFanoutEnqueue measures Hub.Broadcast alone: the time to queue a
// message on N idle connections and start each one's write loop, with the
// clients connected and draining. ns/op and ns/enqueue time the call only;
// the writes and reads it sets off are waited for before the next op. Its
// allocations are the same as BenchmarkFanout's, since in the steady state
// neither the write loops nor the clients allocate.
func BenchmarkFanoutEnqueue(b *testing.B) {
	for _, n := range fanoutConns {
		withHarness(b, fmt.Sprintf("conns=%d", n), n, false, func(b *testing.B, h *pipeHarness) {
			ctx := context.Background()
			msgs := benchMessages(b.N)
			var timed time.Duration
			b.ReportAllocs()
			b.ResetTimer()
			base := h.got.Load()
			for i := range b.N {
				h.waitIdle(b)
				h.expectTotal(base + int64(i+1)*int64(n))
				start := time.Now()
				sent, _ := h.hub.Engine().Broadcast(ctx, msgs[i], nil)
				timed += time.Since(start)
				if sent.Connections != int64(n) {
					b.Fatalf("Broadcast queued on %d connections, want %d", sent.Connections, n)
				}
				h.wait(b)
			}
			b.StopTimer()
			reportTimed(b, timed, n, "enqueue", nil, nil)
		})
	}
}

// BenchmarkSendToUser measures Hub.SendToUser to a user with one idle
// connection, from the call until the client has read the frame.
func BenchmarkSendToUser(b *testing.B) {
	benchSendToUser(b, benchConfig(), context.Background())
}

// benchSendToUser times SendToUser calls made with ctx, one at a time, each
// until its frame arrived, on a hub with cfg.
func benchSendToUser(b *testing.B, cfg Config, ctx context.Context) {
	h := newPipeHarness(b, cfg, 1, pipeOptions{expect: benchPayload})
	defer h.close(b)
	warm(b, h, 3)
	user := h.clients[0].userID
	msgs := benchMessages(b.N)
	var timed time.Duration

	b.ReportAllocs()
	b.ResetTimer()
	base := h.got.Load()
	for i := range b.N {
		h.waitIdle(b)
		h.expectTotal(base + int64(i+1))
		start := time.Now()
		r, _ := h.hub.Engine().SendToUsers(ctx, []string{user}, msgs[i])
		d := r.Users[0]
		h.wait(b)
		timed += time.Since(start)
		if d.Delivered != 1 {
			b.Fatalf("SendToUser = %+v, want one delivery", d)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(timed.Nanoseconds())/float64(b.N), "ns/op")
}

// BenchmarkRawFrame measures framing a message for a raw connection, which
// the write loop does for each frame it writes.
func BenchmarkRawFrame(b *testing.B) {
	for _, k := range []struct {
		name string
		kind Kind
	}{{"json", KindJSON}, {"binary", KindBinary}} {
		b.Run(k.name, func(b *testing.B) {
			m := &Message{ID: NewID(), Kind: k.kind, Data: benchPayload}
			b.ReportAllocs()
			var data []byte
			for b.Loop() {
				_, data = m.raw()
			}
			if len(data) != len(benchPayload) {
				b.Fatalf("frame is %d bytes, want %d", len(data), len(benchPayload))
			}
		})
	}
}

// BenchmarkEnvelope measures encoding a message for envelope connections,
// which happens once per message however many connections it goes to.
func BenchmarkEnvelope(b *testing.B) {
	for _, k := range []struct {
		name string
		kind Kind
	}{{"json", KindJSON}, {"text", KindText}, {"binary", KindBinary}} {
		b.Run(k.name, func(b *testing.B) {
			id, now := NewID(), time.Now()
			m := new(Message)
			b.ReportAllocs()
			var env []byte
			for b.Loop() {
				// A new message each time (the encoding is made once per message);
				// reset in place so that allocating it is not counted.
				*m = Message{ID: id, Type: "bench", Kind: k.kind, Data: benchPayload, Time: now}
				env = m.envelope()
			}
			if !bytes.HasPrefix(env, []byte(`{"op":"message","id":"`+id+`"`)) {
				b.Fatalf("envelope %s does not start with the op and id", env)
			}
		})
	}
}

// BenchmarkNewID measures making a message id, from one goroutine and from
// all Ps at once (ids share one lock).
func BenchmarkNewID(b *testing.B) {
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		var id string
		for b.Loop() {
			id = NewID()
		}
		if len(id) != 26 {
			b.Fatalf("id %q is %d characters, want 26", id, len(id))
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			id := NewID()
			for pb.Next() {
				id = NewID()
			}
			if len(id) != 26 {
				b.Errorf("id %q is %d characters, want 26", id, len(id))
			}
		})
	})
}
