package gateway

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"pushgate/internal/promtest"
	"pushgate/internal/wsframe"
)

// heartbeatHub is testHub with the registry of the hub's metrics.
func heartbeatHub(t *testing.T, cfg Config) (*Hub, string, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	h, srv := testHubReg(t, cfg, nil, MemoryEngine(), reg)
	return h, strings.TrimPrefix(srv.URL, "http://"), reg
}

// readFrame reads one server frame, returning the error instead of failing
// (the end of the stream is what some tests wait for).
func (c *rawClient) readFrame() (rawFrame, error) {
	var h [2]byte
	if _, err := io.ReadFull(c.br, h[:]); err != nil {
		return rawFrame{}, err
	}
	if h[1]&0x7F > 125 {
		return rawFrame{}, fmt.Errorf("frame of %d bytes: readFrame reads only small frames", h[1]&0x7F)
	}
	p := make([]byte, h[1]&0x7F)
	if _, err := io.ReadFull(c.br, p); err != nil {
		return rawFrame{}, err
	}
	if h[0]&0x80 == 0 || h[0]&0x70 != 0 || h[1]&0x80 != 0 {
		return rawFrame{}, fmt.Errorf("frame header % x: want FIN, no reserved bits, no mask", h)
	}
	return rawFrame{op: h[0] & 0x0F, payload: p}, nil
}

// The heartbeat schedule pings every connection each interval with an
// empty ping frame; a connection that answers stays through many rounds,
// and one that never answers is closed (no close frame: it is not
// listening) and counted as a heartbeat timeout, once.
func TestHeartbeatPingsAndClosesASilentPeer(t *testing.T) {
	h, addr, reg := heartbeatHub(t, Config{HeartbeatInterval: 200 * time.Millisecond, HeartbeatTimeout: 300 * time.Millisecond})
	alive := dialRaw(t, addr, "/ws/alive")
	silent := dialRaw(t, addr, "/ws/silent")
	waitConns(t, h, 2)

	silentDone := make(chan error, 1)
	go func() {
		pings := 0
		for {
			f, err := silent.readFrame()
			if err != nil {
				if pings == 0 {
					err = fmt.Errorf("closed before any ping: %w", err)
				} else {
					err = nil
				}
				silentDone <- err
				return
			}
			if f.op != wsframe.OpPing || len(f.payload) != 0 {
				silentDone <- fmt.Errorf("silent client got frame %#x %q, want only empty pings", f.op, f.payload)
				return
			}
			pings++
		}
	}()

	// Five rounds, each answered: 1 s, over three times the timeout.
	for i := range 5 {
		f, err := alive.readFrame()
		if err != nil {
			t.Fatalf("ping %d: %v", i, err)
		}
		if f.op != wsframe.OpPing || len(f.payload) != 0 {
			t.Fatalf("frame %d: %#x %q, want an empty ping", i, f.op, f.payload)
		}
		alive.send(t, wsframe.OpPong, f.payload)
	}
	if err := <-silentDone; err != nil {
		t.Fatal(err)
	}
	waitConns(t, h, 1)
	if v := promtest.Value(t, reg, "pushgate_heartbeat_timeouts_total"); v != 1 {
		t.Fatalf("heartbeat timeouts = %v, want 1", v)
	}
	if n, _ := h.UserConns("alive"); n != 1 {
		t.Fatalf("the answering client has %d connections, want 1", n)
	}
}

// A ping queued behind an envelope backlog goes out as a control frame of
// its own: the envelopes before and after it are joined, never the ping.
func TestPingIsNeverJoinedWithEnvelopes(t *testing.T) {
	h, srv := testHub(t, Config{HeartbeatInterval: time.Hour, QueueMessages: 1000, QueueBytes: 64 << 20, WriteTimeout: time.Minute}, nil)
	addr := strings.TrimPrefix(srv.URL, "http://")
	c := dialRaw(t, addr, "/ws/u?protocol="+Subprotocol)
	waitConns(t, h, 1)
	if f := c.read(t); !bytes.Contains(f.payload, []byte(`"op":"hello"`)) {
		t.Fatalf("first frame %q, want the hello", f.payload)
	}
	var conn *Conn
	for _, x := range h.allConns() {
		conn = x
	}
	ctx := context.Background()
	send := func(from, to int) {
		for i := from; i < to; i++ {
			// Large enough that the client, not reading, soon leaves
			// frames queued behind a full socket.
			p := fmt.Appendf(nil, `{"n":%d,"pad":"%s"}`, i, strings.Repeat("x", 64<<10))
			if _, err := h.Engine().SendToUsers(ctx, []string{"u"}, Push{Kind: KindJSON, Data: p}); err != nil {
				t.Fatal(err)
			}
		}
	}
	send(0, 30)
	conn.ping()
	send(30, 60)

	next, pings := 0, 0
	for next < 60 {
		f := c.read(t)
		if f.op == wsframe.OpPing {
			if len(f.payload) != 0 || next < 1 {
				t.Fatalf("ping %q after %d messages", f.payload, next)
			}
			pings++
			continue
		}
		for env := range bytes.SplitSeq(f.payload, []byte("\n")) {
			if want := fmt.Sprintf(`"data":{"n":%d,`, next); !bytes.Contains(env, []byte(want)) {
				t.Fatalf("envelope %.60q, want message %d", env, next)
			}
			next++
		}
	}
	if pings != 1 {
		t.Fatalf("%d pings, want 1", pings)
	}
}

// The schedules' bookkeeping: every connection sits in one slot at the
// position it records, removal (in any order) keeps that true, and a
// schedule's goroutine ends once its last connection has left.
func TestHeartbeatScheduleBookkeeping(t *testing.T) {
	// 10 minutes: more steps of 100 ms than a wheel holds; its goroutine
	// wakes every 0.6 s and ends at the first wake after the last leaves.
	h := newTestHub(t, Config{HeartbeatInterval: 10 * time.Minute})
	conns := make([]*Conn, 2000)
	for i := range conns {
		conns[i] = &Conn{id: uint64(i + 1), hub: h}
		h.heartbeats.add(conns[i])
	}
	check := func(want int) {
		t.Helper()
		total := 0
		for i := range h.heartbeats.shards {
			s := &h.heartbeats.shards[i]
			s.mu.Lock()
			n := 0
			for slot, cs := range s.slots {
				for pos, c := range cs {
					if !c.hbOn || int(c.hbSlot) != slot || int(c.hbPos) != pos || c.id%heartbeatShards != uint64(i) {
						s.mu.Unlock()
						t.Fatalf("conn %d in schedule %d slot %d at %d records on=%v slot %d at %d", c.id, i, slot, pos, c.hbOn, c.hbSlot, c.hbPos)
					}
					n++
				}
			}
			if n != s.n {
				s.mu.Unlock()
				t.Fatalf("schedule %d holds %d connections, counts %d", i, n, s.n)
			}
			s.mu.Unlock()
			total += n
		}
		if total != want {
			t.Fatalf("%d connections scheduled, want %d", total, want)
		}
	}
	check(len(conns))
	if n := len(h.heartbeats.shards[0].slots); n != maxHeartbeatSlots {
		t.Fatalf("a wheel for 10 minutes has %d slots, want %d", n, maxHeartbeatSlots)
	}
	// Each connection is placed 7.5 minutes or more ahead: no ping yet.
	for _, c := range conns {
		if c.pingSent.Load() != 0 {
			t.Fatal("pinged before its time")
		}
	}
	left := len(conns)
	for i := 0; i < len(conns); i += 3 { // every third, then the rest backwards
		h.heartbeats.remove(conns[i])
		h.heartbeats.remove(conns[i]) // again: a no-op
		left--
	}
	check(left)
	for i := len(conns) - 1; i >= 0; i-- {
		h.heartbeats.remove(conns[i])
	}
	check(0)
	waitGoroutinesGone(t, 30*time.Second, "pushgate/gateway.(*hbShard).run(")

	// A closing connection is not scheduled.
	c := &Conn{id: 1, hub: h, closing: true}
	h.heartbeats.add(c)
	check(0)
}

// waitFor waits up to 30 s for cond.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("waited 30 s for %s:\n%s", what, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// readLoops counts the goroutines running a connection's read loop.
func readLoops() int {
	buf := make([]byte, 1<<20)
	n := 0
	for g := range strings.SplitSeq(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
		if strings.Contains(g, "pushgate/gateway.(*Conn).readLoop(") {
			n++
		}
	}
	return n
}

// readerWaits reports whether a connection's read loop waits on its own
// goroutine in sock.waitReadable.
func readerWaits() bool {
	buf := make([]byte, 1<<20)
	for g := range strings.SplitSeq(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
		if strings.Contains(g, "pushgate/gateway.(*sock).waitReadable(") && strings.Contains(g, "pushgate/gateway.(*Conn).readLoop(") &&
			!strings.Contains(g, "github.com/coder/websocket.(*Conn).Read(") {
			return true
		}
	}
	return false
}

// slowSubscribe is the memory engine with Subscribe taking delay: the
// read loop that asked is held that long.
type slowSubscribe struct {
	Engine
	delay time.Duration
}

func (e slowSubscribe) Subscribe(ctx context.Context, topic string) error {
	time.Sleep(e.delay)
	return e.Engine.Subscribe(ctx, topic)
}

// A connection whose read loop is held (here by a slow engine call) while
// its client answers the pings is not closed: its pongs wait unread in the
// socket, and the deadline sees them there. Once the loop reads again the
// pongs count, and the heartbeat goes on.
func TestHeartbeatWaitsForABusyReader(t *testing.T) {
	hbCfg := Config{HeartbeatInterval: 100 * time.Millisecond, HeartbeatTimeout: 150 * time.Millisecond}
	reg := prometheus.NewRegistry()
	h, srv := testHubReg(t, hbCfg, nil, func(n Node) (Engine, error) {
		e, err := MemoryEngine()(n)
		return slowSubscribe{Engine: e, delay: time.Second}, err
	}, reg)
	c := dialRaw(t, strings.TrimPrefix(srv.URL, "http://"), "/ws/busy?protocol="+Subprotocol)
	waitConns(t, h, 1)
	if f := c.read(t); !bytes.Contains(f.payload, []byte(`"op":"hello"`)) {
		t.Fatalf("first frame %q, want the hello", f.payload)
	}
	c.send(t, wsframe.OpText, []byte(`{"op":"subscribe","ref":1,"topic":"news"}`))
	// Answer every ping until the reply comes (the read loop was held a
	// second: ten heartbeat intervals), then a few more rounds.
	pings, replied := 0, false
	for !replied || pings < 15 {
		f, err := c.readFrame()
		if err != nil {
			t.Fatalf("after %d pings: %v", pings, err)
		}
		switch f.op {
		case wsframe.OpPing:
			pings++
			c.send(t, wsframe.OpPong, f.payload)
		case wsframe.OpText:
			if string(f.payload) != `{"op":"subscribed","ref":1,"topic":"news"}` {
				t.Fatalf("got %q, want the subscribe reply", f.payload)
			}
			replied = true
		}
	}
	if v := promtest.Value(t, reg, "pushgate_heartbeat_timeouts_total"); v != 0 {
		t.Fatalf("heartbeat timeouts = %v, want 0", v)
	}
	if h.Connections() != 1 {
		t.Fatalf("%d connections, want 1", h.Connections())
	}
}

// Over TLS the socket has no file descriptor to wait on: the read loop
// waits inside the library's Read, and pings go out through the write
// loop; a client that answers them stays, and frames flow both ways.
func TestHeartbeatOverTLS(t *testing.T) {
	reg := prometheus.NewRegistry()
	h, err := NewHub(Config{HeartbeatInterval: 100 * time.Millisecond, HeartbeatTimeout: 300 * time.Millisecond},
		slog.New(slog.DiscardHandler), reg, MemoryEngine())
	if err != nil {
		t.Fatal(err)
	}
	srv := serveHub(t, h, nil, httptest.NewTLSServer)
	ctx := context.Background()
	c, _, err := websocket.Dial(ctx, "wss"+strings.TrimPrefix(srv.URL, "https")+"/ws/u", &websocket.DialOptions{HTTPClient: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	waitConns(t, h, 1)
	// The client answers pings while it reads: ten heartbeat rounds.
	for i := range 10 {
		if err := c.Write(ctx, websocket.MessageText, []byte("ping")); err != nil {
			t.Fatal(err)
		}
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, p, err := c.Read(rctx)
		cancel()
		if err != nil || string(p) != `{"type":"pong"}` {
			t.Fatalf("round %d: %q, %v", i, p, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if v := promtest.Value(t, reg, "pushgate_heartbeat_timeouts_total"); v != 0 {
		t.Fatalf("heartbeat timeouts = %v, want 0", v)
	}
	// The pongs (WebSocket control frames from the client) came back.
	var m dto.Metric
	if err := h.metrics.controlIn.Write(&m); err != nil || m.GetCounter().GetValue() < 3 {
		t.Fatalf("%v control frames from the client (%v), want the pongs of several rounds", m.GetCounter().GetValue(), err)
	}
	if h.Connections() != 1 {
		t.Fatalf("%d connections, want 1", h.Connections())
	}
}
