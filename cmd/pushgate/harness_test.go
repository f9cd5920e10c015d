package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"pushgate/gateway/redisengine/redistest"
	pb "pushgate/gen/pushgate/v1"
	"pushgate/internal/app"
	"pushgate/internal/config"
)

func TestMain(m *testing.M) {
	// The end-to-end tests run this test binary as the real pushgate
	// command (see startProcess): same main, same flags, same signals.
	if os.Getenv("PUSHGATE_TEST_RUN_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// testServer is a pushgate started in-process with the same wiring as run,
// on free loopback ports.
type testServer struct {
	app    *app.App
	cc     *grpc.ClientConn
	api    pb.PushServiceClient
	cancel context.CancelFunc
	done   chan error
	logs   *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// keepLast drops what was written so far once it exceeds max bytes.
func (s *syncBuffer) keepLast(max int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.b.Len() > max {
		s.b.Reset()
	}
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testEngine is the engine the shared suites run on: "memory" (default) or
// "redis" (PUSHGATE_TEST_ENGINE=redis; `make test` runs both).
var testEngine = cmp.Or(os.Getenv("PUSHGATE_TEST_ENGINE"), "memory")

// testShards is how many Redis shards the cluster suite's nodes share
// (startNodes): PUSHGATE_TEST_SHARDS, default 1.
var testShards = func() int {
	n, err := strconv.Atoi(cmp.Or(os.Getenv("PUSHGATE_TEST_SHARDS"), "1"))
	if err != nil || n < 1 {
		panic("PUSHGATE_TEST_SHARDS must be a positive number")
	}
	return n
}()

// engineArgs returns the flags that put a server started with args on the
// test engine: with "redis", a redis-server of its own (so every server
// starts with empty state, as the memory engine does), unless args already
// choose an engine.
func engineArgs(t testing.TB, args []string) []string {
	if testEngine != "redis" || slices.Contains(args, "--engine") {
		return args
	}
	r := redistest.Start(t)
	return append([]string{"--engine", "redis", "--redis-url", r.URL()}, args...)
}

func startServer(t testing.TB, args ...string) *testServer {
	t.Helper()
	return startAppServer(t, engineArgs(t, args))
}

// startAppServer starts an in-process server on loopback with args (no
// engine chosen for it) and the app options opts.
func startAppServer(t testing.TB, args []string, opts ...app.Option) *testServer {
	t.Helper()
	args = append([]string{"--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", "--drain-window", "100ms"}, args...)
	cfg, err := config.Parse(args, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	logs := &syncBuffer{}
	var lvl slog.Level
	lvl.UnmarshalText([]byte(cfg.LogLevel))
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: lvl}))
	a, err := app.New(cfg, log, opts...)
	if err != nil {
		t.Fatalf("app.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &testServer{app: a, cancel: cancel, done: make(chan error, 1), logs: logs}
	go func() { s.done <- a.Serve(ctx) }()
	cc, err := grpc.NewClient(a.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	s.cc, s.api = cc, pb.NewPushServiceClient(cc)
	t.Cleanup(func() {
		cc.Close()
		s.stop(t)
	})
	return s
}

// stop shuts the server down and waits for Serve to return.
func (s *testServer) stop(t testing.TB) {
	s.cancel()
	select {
	case err := <-s.done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
		s.done <- err // let a second stop return too
	case <-time.After(30 * time.Second):
		t.Errorf("server did not stop within 30s")
	}
}

func (s *testServer) wsURL(userID string) string {
	return "ws://" + s.app.HTTPAddr() + "/ws/" + userID
}

// wsMsg is one message a test client received.
type wsMsg struct {
	typ  websocket.MessageType
	data []byte
}

// wsClient is a real WebSocket client whose reader pushes every message to
// msgs and the final error (a websocket.CloseError for a close frame) to end.
type wsClient struct {
	t    testing.TB
	c    *websocket.Conn
	msgs chan wsMsg
	end  chan error
}

func dialWS(t testing.TB, url string) *wsClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	if resp.Body != nil {
		resp.Body.Close()
	}
	c.SetReadLimit(-1)
	w := &wsClient{t: t, c: c, msgs: make(chan wsMsg, 4096), end: make(chan error, 1)}
	go func() {
		for {
			typ, data, err := c.Read(context.Background())
			if err != nil {
				w.end <- err
				close(w.msgs)
				return
			}
			w.msgs <- wsMsg{typ, data}
		}
	}()
	t.Cleanup(func() { c.CloseNow() })
	return w
}

// dial connects a client for userID that reads in the background.
func (s *testServer) dial(t testing.TB, userID string) *wsClient {
	t.Helper()
	return dialWS(t, s.wsURL(userID))
}

const waitFor = 15 * time.Second

// next returns the next message or fails the test after waitFor.
func (w *wsClient) next() wsMsg {
	w.t.Helper()
	select {
	case m, ok := <-w.msgs:
		if !ok {
			w.t.Fatalf("connection ended while waiting for a message: %v", <-w.end)
		}
		return m
	case <-time.After(waitFor):
		w.t.Fatalf("no message within %v", waitFor)
	}
	return wsMsg{}
}

// expect fails unless the next message is exactly want as a text frame.
func (w *wsClient) expect(want string) {
	w.t.Helper()
	m := w.next()
	if m.typ != websocket.MessageText || string(m.data) != want {
		w.t.Fatalf("got %v %q, want text %q", m.typ, m.data, want)
	}
}

// closeCode waits for the connection to end and returns the close code the
// server sent (-1 if it ended without a close frame).
func (w *wsClient) closeCode() websocket.StatusCode {
	w.t.Helper()
	deadline := time.After(waitFor)
	for {
		select {
		case _, ok := <-w.msgs:
			if !ok {
				err := <-w.end
				w.end <- err
				return websocket.CloseStatus(err)
			}
		case <-deadline:
			w.t.Fatalf("connection still open after %v", waitFor)
			return 0
		}
	}
}

// eventually polls cond until it holds or waitFor passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func jsonMsg(s string) *pb.Message {
	return &pb.Message{Payload: &pb.Message_Json{Json: s}}
}

func textMsg(s string) *pb.Message {
	return &pb.Message{Payload: &pb.Message_Text{Text: s}}
}

// metric scrapes /metrics and returns the value of the exact series name
// (with labels, as exposed), or fails.
func (s *testServer) metric(t testing.TB, series string) float64 {
	t.Helper()
	return s.metricVia(t, http.DefaultClient, series)
}

// metricVia is metric with a client of the caller's choosing.
func (s *testServer) metricVia(t testing.TB, c *http.Client, series string) float64 {
	t.Helper()
	v, err := s.scrape(c, series)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// metricValue is metric without failing the test: a series that is not
// exposed is an error.
func (s *testServer) metricValue(series string) (float64, error) {
	return s.scrape(http.DefaultClient, series)
}

// scrape reads /metrics through c and returns the value of series.
func (s *testServer) scrape(c *http.Client, series string) (float64, error) {
	resp, err := c.Get("http://" + s.app.HTTPAddr() + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			var v float64
			if _, err := fmt.Sscan(rest, &v); err != nil {
				return 0, fmt.Errorf("metric %s: %v", series, err)
			}
			return v, nil
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("metric %s not exposed", series)
}

// online reports how many connections userID has, per GetPresence.
func (s *testServer) online(t testing.TB, userID string) int32 {
	t.Helper()
	resp, err := s.api.GetPresence(context.Background(), &pb.GetPresenceRequest{UserIds: []string{userID}})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetUsers()[0].GetConnections()
}

// stallProxy forwards TCP to target. While stalled it moves no byte in
// either direction, holding what it has read, but keeps every socket open
// (no FIN, no RST), as a frozen network link does; when it thaws, the held
// bytes go on, late.
type stallProxy struct {
	ln     net.Listener
	target string

	mu      sync.Mutex
	stalled bool
	thawed  *sync.Cond
	conns   []net.Conn
}

func newStallProxy(t testing.TB, target string) *stallProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &stallProxy{ln: ln, target: target}
	p.thawed = sync.NewCond(&p.mu)
	go p.serve()
	t.Cleanup(func() {
		p.thaw()
		ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
	})
	return p
}

func (p *stallProxy) addr() string { return p.ln.Addr().String() }

func (p *stallProxy) stall() { p.mu.Lock(); p.stalled = true; p.mu.Unlock() }

func (p *stallProxy) thaw() {
	p.mu.Lock()
	p.stalled = false
	p.thawed.Broadcast()
	p.mu.Unlock()
}

// wait blocks while the proxy is stalled.
func (p *stallProxy) wait() {
	p.mu.Lock()
	for p.stalled {
		p.thawed.Wait()
	}
	p.mu.Unlock()
}

func (p *stallProxy) serve() {
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		go func() {
			p.wait() // a connection made while stalled gets nowhere until the thaw
			out, err := net.Dial("tcp", p.target)
			if err != nil {
				in.Close()
				return
			}
			p.mu.Lock()
			p.conns = append(p.conns, in, out)
			p.mu.Unlock()
			go p.pipe(out, in)
			go p.pipe(in, out)
		}()
	}
}

func (p *stallProxy) pipe(dst, src net.Conn) {
	defer dst.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.wait()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
