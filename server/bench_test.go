package server

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"

	"pushgate/gateway"
	pb "pushgate/gen/pushgate/v1"
)

// benchJSON is the 64-byte JSON document the benchmarks push.
const benchJSON = `{"type":"bench","seq":1234567,"body":"0123456789abcdefghijklmn"}`

// grpcHarness is a real hub behind a real gRPC server (the production
// interceptor chain, over TCP on 127.0.0.1) and a real HTTP server, with one
// real WebSocket client connected as user "u1". Its reader checks every frame
// against expect and signals each on recv.
type grpcHarness struct {
	// Immutable after newGRPCHarness.
	hub      *gateway.Hub
	svc      *Service
	httpSrv  *httptest.Server
	grpcSrv  *grpc.Server
	served   chan error
	cc       *grpc.ClientConn
	api      pb.PushServiceClient
	ws       *websocket.Conn
	readDone chan struct{}
	expect   []byte

	recv   chan struct{} // one value per frame read that equals expect
	bad    chan []byte   // a copy of each frame that did not
	timer  *time.Timer   // waitFrame's timeout, reused so that waiting allocates nothing
	closed bool
}

// newGRPCHarness starts the servers, logging to log, and connects user u1.
// The caller must call close.
func newGRPCHarness(tb testing.TB, log *slog.Logger) *grpcHarness {
	tb.Helper()
	h := &grpcHarness{
		hub:      newHub(tb, log),
		served:   make(chan error, 1),
		readDone: make(chan struct{}),
		expect:   []byte(benchJSON),
		recv:     make(chan struct{}, 1024),
		bad:      make(chan []byte, 16),
		timer:    time.NewTimer(time.Hour),
	}
	h.timer.Stop()
	h.svc = NewService(h.hub.Engine(), log, Options{})

	mux := http.NewServeMux()
	mux.Handle("GET /ws/{userID}", h.hub)
	h.httpSrv = httptest.NewServer(mux)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		h.httpSrv.Close()
		shutdownHub(tb, h.hub)
		tb.Fatal(err)
	}
	// Guarded as pushgate serves it (internal/app), defaults applied.
	guard := NewGuard(GuardConfig{MaxConnsPerAddr: DefaultMaxConnsPerAddr, ResetRate: DefaultResetRate}, nil)
	h.grpcSrv = NewGRPCServer(h.svc, health.NewServer(), ServerOptions{Guard: guard}, log)
	go func() { h.served <- h.grpcSrv.Serve(guard.Listener(ln)) }()
	h.cc, err = grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		h.close(tb)
		tb.Fatal(err)
	}
	h.api = pb.NewPushServiceClient(h.cc)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	url := "ws" + strings.TrimPrefix(h.httpSrv.URL, "http") + "/ws/u1"
	ws, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPClient: h.httpSrv.Client()})
	if err != nil {
		h.close(tb)
		tb.Fatalf("dial %s: %v", url, err)
	}
	h.ws = ws
	go h.read()
	for h.hub.Connections() != 1 {
		if ctx.Err() != nil {
			h.close(tb)
			tb.Fatal("the hub never registered the WebSocket connection")
		}
		time.Sleep(time.Millisecond)
	}
	return h
}

// read is the client's reader. It reads each message into one reused buffer
// (websocket.Conn.Read would allocate a new slice per message).
func (h *grpcHarness) read() {
	defer close(h.readDone)
	ctx := context.Background() // no Done channel: no per-read timer in the library
	buf := make([]byte, 256)
	for {
		typ, r, err := h.ws.Reader(ctx)
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
		// Never block: the reader must keep reading until the connection ends.
		if typ != websocket.MessageText || !bytes.Equal(buf[:n], h.expect) {
			select {
			case h.bad <- bytes.Clone(buf[:n]):
			default:
			}
			continue
		}
		select {
		case h.recv <- struct{}{}:
		default: // a harness bug: report it as a bad frame
			select {
			case h.bad <- []byte("(over 1024 frames read and not waited for)"):
			default:
			}
		}
	}
}

// waitFrame waits for the client to read one frame and fails tb if it is not
// the expected one or does not come within 10s. It allocates nothing.
func (h *grpcHarness) waitFrame(tb testing.TB) {
	h.timer.Reset(10 * time.Second)
	select {
	case <-h.recv:
		h.timer.Stop()
	case p := <-h.bad:
		h.timer.Stop()
		tb.Fatalf("the client read %q, want %q", p, h.expect)
	case <-h.timer.C:
		tb.Fatal("the client read nothing in 10s")
	}
}

// close disconnects the client and stops everything, waiting for the
// gateway's goroutines to end. Calling it again does nothing.
func (h *grpcHarness) close(tb testing.TB) {
	if h.closed {
		return
	}
	h.closed = true
	if h.ws != nil { // the reader is running
		_ = h.ws.CloseNow()
		<-h.readDone
	}
	deadline := time.Now().Add(10 * time.Second)
	for h.hub.Connections() > 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := h.hub.Connections(); n > 0 {
		tb.Errorf("the hub still has %d connections 10s after the client closed", n)
	}
	if h.cc != nil {
		_ = h.cc.Close()
	}
	h.grpcSrv.Stop()
	if err := <-h.served; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		tb.Errorf("grpc.Server.Serve: %v", err)
	}
	h.httpSrv.Close()
	shutdownHub(tb, h.hub)
	waitGoroutinesGone(tb, 10*time.Second,
		"pushgate/gateway.(*Hub).ServeHTTP(",
		"pushgate/gateway.(*Conn).",
		"pushgate/server.(*grpcHarness).read(",
		"pushgate/gateway.(*memoryEngine).expireLoop(",
	)
}

// newHub returns a hub with the memory engine.
func newHub(tb testing.TB, log *slog.Logger) *gateway.Hub {
	hub, err := gateway.NewHub(gateway.Config{HeartbeatInterval: time.Hour}, log, prometheus.NewRegistry(), gateway.MemoryEngine())
	if err != nil {
		tb.Fatal(err)
	}
	return hub
}

// shutdownHub stops hub and its engine, which ends their goroutines.
func shutdownHub(tb testing.TB, hub *gateway.Hub) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := hub.Shutdown(ctx, 0); err != nil {
		tb.Errorf("Hub.Shutdown: %v", err)
	}
	if err := hub.Engine().Close(ctx); err != nil {
		tb.Errorf("Engine.Close: %v", err)
	}
}

// waitGoroutinesGone waits up to d until no goroutine's stack contains one
// of markers, and fails tb if some still do.
func waitGoroutinesGone(tb testing.TB, d time.Duration, markers ...string) {
	tb.Helper()
	deadline := time.Now().Add(d)
	var buf []byte
	for {
		if n := runtime.NumGoroutine()*4096 + 1<<16; len(buf) < n {
			buf = make([]byte, n)
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

func sendToUserRequest(userID string) *pb.SendToUserRequest {
	return &pb.SendToUserRequest{
		UserId:  userID,
		Message: &pb.Message{Type: "bench", Payload: &pb.Message_Json{Json: benchJSON}},
	}
}

// TestGRPCHarness checks the benchmarks' harness: a SendToUser through gRPC
// reaches the connected user byte for byte and is reported delivered; one to
// an offline user reaches nobody; and closing leaves no goroutine behind.
func TestGRPCHarness(t *testing.T) {
	h := newGRPCHarness(t, slog.New(slog.DiscardHandler))
	defer h.close(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	resp, err := h.api.SendToUser(ctx, sendToUserRequest("u1"))
	if err != nil {
		t.Fatal(err)
	}
	if !resp.GetOnline() || resp.GetDeliveredConnections() != 1 || len(resp.GetMessageId()) != 26 {
		t.Fatalf("SendToUser(u1) = %v, want online, 1 delivery and a 26-character id", resp)
	}
	h.waitFrame(t)

	resp, err = h.api.SendToUser(ctx, sendToUserRequest("nobody"))
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetOnline() || resp.GetDeliveredConnections() != 0 {
		t.Fatalf("SendToUser(nobody) = %v, want offline and no delivery", resp)
	}

	// Direct calls take the same path minus gRPC. Frames arrive in order, so
	// if the one to nobody had reached u1, this wait would see two.
	if _, err := h.svc.SendToUser(ctx, sendToUserRequest("u1")); err != nil {
		t.Fatal(err)
	}
	h.waitFrame(t)
	select {
	case <-h.recv:
		t.Fatal("u1 read a frame it was not sent")
	case p := <-h.bad:
		t.Fatalf("u1 read %q, which it was not sent", p)
	case <-time.After(20 * time.Millisecond):
	}

	h.close(t)
	if n := h.hub.Connections(); n != 0 {
		t.Errorf("hub has %d connections after close, want 0", n)
	}
}

// BenchmarkSendToUserGRPC measures a SendToUser call through the real gRPC
// server (TCP on loopback, the production interceptor chain) to a user with
// one WebSocket connection, from the call until the client has read the
// frame. Allocations are the whole process's: gRPC client and server, the
// gateway, and the WebSocket library on both sides.
//
// The logging interceptor logs every call at INFO. log=discard uses
// slog.DiscardHandler, with which the interceptor is skipped (info is off);
// log=json writes JSON lines to io.Discard, which is what a production log
// costs short of the I/O.
func BenchmarkSendToUserGRPC(b *testing.B) {
	for _, l := range []struct {
		name string
		log  *slog.Logger
	}{
		{"log=discard", slog.New(slog.DiscardHandler)},
		{"log=json", slog.New(slog.NewJSONHandler(io.Discard, nil))},
	} {
		b.Run(l.name, func(b *testing.B) {
			h := newGRPCHarness(b, l.log)
			defer h.close(b)
			ctx := context.Background()
			req := sendToUserRequest("u1")
			for range 10 { // connect and warm up
				if _, err := h.api.SendToUser(ctx, req); err != nil {
					b.Fatal(err)
				}
				h.waitFrame(b)
			}

			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				resp, err := h.api.SendToUser(ctx, req)
				if err != nil {
					b.Fatal(err)
				}
				if resp.GetDeliveredConnections() != 1 {
					b.Fatalf("SendToUser = %v, want 1 delivery", resp)
				}
				h.waitFrame(b)
			}
			b.StopTimer()
		})
	}
}

// BenchmarkSendToUserHandler calls (*Service).SendToUser directly, without
// gRPC: offline measures the handler alone (the user has no connection, so
// nothing is queued or written); offline+validate adds the validation the
// interceptor does first; online sends to a user with one WebSocket
// connection and waits until the client has read the frame, so comparing it
// with BenchmarkSendToUserGRPC gives gRPC's share.
func BenchmarkSendToUserHandler(b *testing.B) {
	b.Run("offline", func(b *testing.B) {
		hub := newHub(b, slog.New(slog.DiscardHandler))
		defer shutdownHub(b, hub)
		svc := NewService(hub.Engine(), slog.New(slog.DiscardHandler), Options{})
		ctx := context.Background()
		req := sendToUserRequest("u1")
		b.ReportAllocs()
		for b.Loop() {
			resp, err := svc.SendToUser(ctx, req)
			if err != nil || resp.GetOnline() {
				b.Fatalf("SendToUser = %v, %v; want offline", resp, err)
			}
		}
	})

	b.Run("offline+validate", func(b *testing.B) {
		hub := newHub(b, slog.New(slog.DiscardHandler))
		defer shutdownHub(b, hub)
		svc := NewService(hub.Engine(), slog.New(slog.DiscardHandler), Options{})
		validate := Limits{}.UnaryInterceptor()
		info := &grpc.UnaryServerInfo{Server: svc, FullMethod: pb.PushService_SendToUser_FullMethodName}
		handler := func(ctx context.Context, req any) (any, error) {
			return svc.SendToUser(ctx, req.(*pb.SendToUserRequest))
		}
		ctx := context.Background()
		req := sendToUserRequest("u1")
		b.ReportAllocs()
		for b.Loop() {
			resp, err := validate(ctx, req, info, handler)
			if err != nil || resp.(*pb.SendToUserResponse).GetOnline() {
				b.Fatalf("SendToUser = %v, %v; want offline", resp, err)
			}
		}
	})

	b.Run("online", func(b *testing.B) {
		h := newGRPCHarness(b, slog.New(slog.DiscardHandler))
		defer h.close(b)
		ctx := context.Background()
		req := sendToUserRequest("u1")
		for range 10 {
			if _, err := h.svc.SendToUser(ctx, req); err != nil {
				b.Fatal(err)
			}
			h.waitFrame(b)
		}

		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			resp, err := h.svc.SendToUser(ctx, req)
			if err != nil || resp.GetDeliveredConnections() != 1 {
				b.Fatalf("SendToUser = %v, %v; want 1 delivery", resp, err)
			}
			h.waitFrame(b)
		}
		b.StopTimer()
	})
}
