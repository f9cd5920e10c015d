package server

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"pushgate/gateway"
	pb "pushgate/gen/pushgate/v1"
	"pushgate/internal/promtest"
)

// guarded serves a PushService on the memory engine behind a Guard, and
// returns a client connection, the health server and the metrics registry.
func guarded(t *testing.T, cfg GuardConfig, so ServerOptions, opts Options) (*grpc.ClientConn, *health.Server, *prometheus.Registry, net.Addr) {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	reg := prometheus.NewRegistry()
	hub, err := gateway.NewHub(gateway.Config{}, log, prometheus.NewRegistry(), gateway.MemoryEngine())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hub.Engine().Close(context.Background()) })
	hs := health.NewServer()
	g := NewGuard(cfg, reg)
	so.Guard, so.Registerer = g, reg
	opts.Registerer = prometheus.NewRegistry()
	srv := NewGRPCServer(NewService(hub.Engine(), log, opts), hs, so, log)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(g.Listener(ln))
	t.Cleanup(srv.Stop)
	cc, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc, hs, reg, ln.Addr()
}

// The request timeout ends only calls whose request has not arrived: a
// stream that sent its request lives on, and calls that end normally (or
// are cancelled after their request) never count as resets.
func TestGuardTimesOutOnlyCallsWithoutTheirRequest(t *testing.T) {
	const timeout = 200 * time.Millisecond
	cc, hs, reg, _ := guarded(t, GuardConfig{RequestTimeout: timeout, ResetRate: 1}, ServerOptions{}, Options{})
	ctx := context.Background()

	// A stream that sent its request: alive past the timeout.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	watch, err := healthpb.NewHealthClient(cc).Watch(wctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := watch.Recv(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * timeout)
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	if r, err := watch.Recv(); err != nil || r.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("a stream with its request, after the request timeout: %v, %v", r, err)
	}

	// Many calls, some cancelled after their request: none is a reset
	// (with a budget of 3, the connection would be closed).
	api := pb.NewPushServiceClient(cc)
	for i := range 300 {
		if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		if i%10 == 0 {
			sctx, scancel := context.WithCancel(ctx)
			st, err := api.WatchEvents(sctx, &pb.WatchEventsRequest{})
			if err == nil {
				_, err = st.Header()
			}
			scancel()
			if err != nil {
				t.Fatalf("watch %d: %v", i, err)
			}
		}
	}

	// A stream that never sends its request ends after the timeout.
	start := time.Now()
	refl, err := reflectionpb.NewServerReflectionClient(cc).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, err = refl.Recv()
	if status.Code(err) != codes.Canceled || time.Since(start) < timeout {
		t.Fatalf("a stream without its request: %v after %v, want CANCELLED after %v", err, time.Since(start), timeout)
	}
	if v := promtest.Value(t, reg, "pushgate_grpc_request_timeouts_total"); v != 1 {
		t.Fatalf("request timeouts = %v, want 1", v)
	}
	if v := promtest.Value(t, reg, "pushgate_grpc_reset_flood_closed_total"); v != 0 {
		t.Fatalf("connections closed for resets = %v, want 0", v)
	}
	if v := promtest.Value(t, reg, "pushgate_grpc_connections"); v != 1 {
		t.Fatalf("open connections = %v, want 1 (the same one throughout)", v)
	}
}

// Connections from one address beyond the cap are closed on accept; a
// closed one makes room.
func TestGuardConnectionsPerAddress(t *testing.T) {
	_, _, reg, addr := guarded(t, GuardConfig{MaxConnsPerAddr: 2}, ServerOptions{}, Options{})
	served := func(c net.Conn) bool {
		c.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		b := make([]byte, 9)
		_, err := io.ReadFull(c, b) // the server's SETTINGS frame header
		return err == nil && b[3] == 0x4
	}
	var conns []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", addr.String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	if !served(conns[0]) || !served(conns[1]) {
		t.Fatal("connections within the cap not served")
	}
	if served(conns[2]) {
		t.Fatal("a third connection from one address was served")
	}
	if v := promtest.Value(t, reg, "pushgate_grpc_connections_refused_total"); v != 1 {
		t.Fatalf("refused = %v, want 1", v)
	}
	conns[0].Close()
	deadline := time.Now().Add(5 * time.Second)
	for promtest.Value(t, reg, "pushgate_grpc_connections") != 1 {
		if time.Now().After(deadline) {
			t.Fatal("closed connection still counted")
		}
		time.Sleep(5 * time.Millisecond)
	}
	c, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !served(c) {
		t.Fatal("no room after a connection closed")
	}
}

// apiKeyOf is the test key of the caller named name.
func apiKeyOf(name string) string { return name + "-key-0123456789abcdef" }

// WatchEvents streams are capped per API key and per node, with
// RESOURCE_EXHAUSTED naming the limit; a closed stream gives its place back.
func TestWatchEventsCaps(t *testing.T) {
	keys, err := ParseAPIKeys("a:" + apiKeyOf("a") + ",b:" + apiKeyOf("b"))
	if err != nil {
		t.Fatal(err)
	}
	cc, _, _, _ := guarded(t, GuardConfig{}, ServerOptions{APIKeys: keys}, Options{MaxWatchers: 3, MaxWatchersPerKey: 2})
	api := pb.NewPushServiceClient(cc)
	as := func(ctx context.Context, key string) context.Context {
		return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+apiKeyOf(key))
	}
	watch := func(ctx context.Context) error {
		st, err := api.WatchEvents(ctx, &pb.WatchEventsRequest{})
		if err != nil {
			return err
		}
		if md, err := st.Header(); err != nil || md == nil {
			_, err := st.Recv()
			return err
		}
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	first, cancelFirst := context.WithCancel(as(ctx, "a"))
	for i, c := range []context.Context{first, as(ctx, "a")} {
		if err := watch(c); err != nil {
			t.Fatalf("key a, stream %d: %v", i+1, err)
		}
	}
	if err := watch(as(ctx, "a")); status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "--watch-max-per-key") {
		t.Fatalf("key a, stream 3: %v", err)
	}
	if err := watch(as(ctx, "b")); err != nil {
		t.Fatalf("key b, stream 1: %v", err)
	}
	if err := watch(as(ctx, "b")); status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "--watch-max)") {
		t.Fatalf("key b, stream 2 (4th on the node): %v", err)
	}
	cancelFirst()
	deadline := time.Now().Add(5 * time.Second)
	for watch(as(ctx, "b")) != nil {
		if time.Now().After(deadline) {
			t.Fatal("a closed stream did not give its place back")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
