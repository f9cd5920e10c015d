package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"pushgate/gateway"
	"pushgate/gateway/web"
	"pushgate/server"
)

// App is one running pushgate: the hub, the gRPC server and the HTTP server,
// wired together. Tests build it with newApp on port 0, exactly as run does.
type App struct {
	cfg    Config
	log    *slog.Logger
	hub    *gateway.Hub
	health *health.Server
	svc    *server.Service
	grpc   *grpc.Server
	http   *http.Server
	grpcLn net.Listener
	httpLn net.Listener
	ready  atomic.Bool
}

// newApp wires pushgate and binds its listeners (so their addresses are known
// before Serve), refusing network-reachable addresses in protected mode.
func newApp(cfg Config, log *slog.Logger) (*App, error) {
	if !cfg.Insecure {
		for _, a := range []struct{ flag, addr string }{{"--http-addr", cfg.HTTPAddr}, {"--grpc-addr", cfg.GRPCAddr}} {
			if !loopbackOnly(a.addr) {
				return nil, fmt.Errorf("protected mode: refusing to listen on %s (%s) without client authentication, "+
					"because anyone who can reach it could connect as any user and call the API; "+
					"use a loopback address such as 127.0.0.1, or pass --insecure (PUSHGATE_INSECURE=true) to accept the risk", a.addr, a.flag)
			}
		}
		log.Info("protected mode: no client authentication configured, listening on loopback only")
	} else {
		log.Warn("insecure mode: no client authentication, and the listeners may be reachable from the network; anyone can connect as any user and call the API")
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	a := &App{cfg: cfg, log: log}
	a.hub = gateway.NewHub(gateway.Config{
		HeartbeatInterval: cfg.HeartbeatInterval,
		HeartbeatTimeout:  cfg.HeartbeatTimeout,
		WriteTimeout:      cfg.WriteTimeout,
		QueueMessages:     cfg.QueueMessages,
		QueueBytes:        cfg.QueueBytes,
		ReadLimit:         int64(cfg.ReadLimit),
		MaxUserIDBytes:    cfg.MaxUserIDBytes,
		OriginPatterns:    list(cfg.AllowedOrigins),
		InboxMessages:     cfg.InboxMessages,
		InboxBytes:        cfg.InboxBytes,
		InboxMaxTTL:       cfg.InboxMaxTTL,
		PresenceGrace:     cfg.PresenceGrace,
		MaxTopicsPerConn:  cfg.MaxTopicsPerConn,
		UpstreamUsers:     list(cfg.UpstreamUsers),
		UpstreamTopics:    list(cfg.UpstreamTopics),
	}, log, reg)

	a.health = health.NewServer()
	limits := server.Limits{MaxUserIDBytes: cfg.MaxUserIDBytes, MaxPayloadBytes: cfg.MaxPayloadBytes, MaxBatchUsers: cfg.MaxBatchUsers, MaxTTL: cfg.InboxMaxTTL}
	a.svc = server.NewService(a.hub, log, server.Options{IdempotencyWindow: cfg.IdempotencyWindow, WatchBuffer: cfg.WatchBuffer})
	a.grpc = server.NewGRPCServer(a.svc, a.health, limits, log)

	var err error
	if a.grpcLn, err = net.Listen("tcp", cfg.GRPCAddr); err != nil {
		return nil, fmt.Errorf("--grpc-addr: %w", err)
	}
	if a.httpLn, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
		a.grpcLn.Close()
		return nil, fmt.Errorf("--http-addr: %w", err)
	}

	demo, err := web.DemoHandler(a.grpcLn.Addr().String())
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /ws", a.hub)
	mux.Handle("GET /ws/{userID}", a.hub)
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !a.ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.Handle("GET /{$}", demo)
	a.http = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	return a, nil
}

// httpStopTimeout bounds plain HTTP requests (metrics scrapes, the demo
// page) still running at shutdown.
const httpStopTimeout = 5 * time.Second

// browsable turns a listen address into one a browser on this machine can
// open: an unspecified host (0.0.0.0, ::) becomes 127.0.0.1.
func browsable(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// HTTPAddr and GRPCAddr are the bound addresses.
func (a *App) HTTPAddr() string { return a.httpLn.Addr().String() }
func (a *App) GRPCAddr() string { return a.grpcLn.Addr().String() }

// Serve runs until ctx ends or a server fails, then shuts down in order:
// not ready → stop accepting → in-flight gRPC calls finish (GracefulStop,
// cut after --grpc-stop-timeout) → clients closed with 1001 spread over
// --drain-window. It returns nil after a clean shutdown.
func (a *App) Serve(ctx context.Context) error {
	errc := make(chan error, 2)
	go func() { errc <- a.grpc.Serve(a.grpcLn) }()
	go func() {
		err := a.http.Serve(a.httpLn)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		errc <- err
	}()
	a.ready.Store(true)
	a.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	a.log.Info("pushgate started", "http", a.HTTPAddr(), "grpc", a.GRPCAddr(),
		"demo", "http://"+browsable(a.HTTPAddr())+"/")

	var serveErr error
	select {
	case <-ctx.Done():
		a.log.Info("shutting down")
	case serveErr = <-errc:
		a.log.Error("server failed, shutting down", "err", serveErr)
	}
	a.shutdown()
	return serveErr
}

func (a *App) shutdown() {
	start := time.Now()
	a.ready.Store(false)
	a.health.Shutdown() // every service NOT_SERVING
	if a.cfg.ShutdownDelay > 0 {
		a.log.Info("not ready; waiting before refusing connections", "delay", a.cfg.ShutdownDelay)
		time.Sleep(a.cfg.ShutdownDelay)
	}

	// Stop accepting HTTP (WebSocket upgrades included). Hijacked WebSocket
	// connections are not the HTTP server's to wait for; the hub closes them.
	httpDone := make(chan struct{})
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), httpStopTimeout)
		defer cancel()
		_ = a.http.Shutdown(ctx)
		close(httpDone)
	}()

	// In-flight gRPC calls finish before clients are closed, so that what
	// they queued is written first.
	a.svc.Drain() // WatchEvents streams end now; GracefulStop waits for the rest
	stopped := make(chan struct{})
	go func() { a.grpc.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(a.cfg.GRPCStopTimeout):
		a.log.Warn("gRPC calls still running after --grpc-stop-timeout, cutting them", "timeout", a.cfg.GRPCStopTimeout)
		a.grpc.Stop()
		<-stopped
	}

	// Closes are spread over the drain window; allow a little more for the
	// last close handshakes.
	ctx, cancel := context.WithTimeout(context.Background(), a.cfg.DrainWindow+5*time.Second)
	defer cancel()
	if err := a.hub.Shutdown(ctx, a.cfg.DrainWindow); err != nil {
		a.log.Warn("some client connections did not close in time", "remaining", a.hub.Connections())
	}
	<-httpDone
	a.log.Info("pushgate stopped", "took", time.Since(start).Round(time.Millisecond))
}
