// Package app wires pushgate together: the hub (and the Redis engine), the
// gRPC and HTTP servers, the ops listener, the admin page and pprof, and
// their ordered shutdown.
package app

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"pushgate/gateway"
	"pushgate/gateway/redisengine"
	"pushgate/gateway/token"
	"pushgate/gateway/web"
	"pushgate/internal/config"
	"pushgate/internal/eventsink"
	"pushgate/internal/notify"
	"pushgate/internal/version"
	"pushgate/server"
)

// App is one running pushgate: the hub, the gRPC server and the HTTP server,
// wired together. Tests build it with New on port 0, exactly as the command
// does.
type App struct {
	cfg    config.Config
	log    *slog.Logger
	hub    *gateway.Hub
	eng    gateway.Engine          // the hub's engine: memory or Redis
	rdb    redis.UniversalClient   // the Redis engine's client (its first shard's); nil with the memory engine
	rdbs   []redis.UniversalClient // every shard's client
	health *health.Server
	svc    *server.Service
	grpc   *grpc.Server
	http   *http.Server
	grpcLn net.Listener
	httpLn *connGate
	sink   *eventsink.Sink // nil without --event-webhook-url
	ops    *http.Server    // nil without --ops-addr
	opsLn  *connGate       // nil without --ops-addr
	ready  atomic.Bool

	// httpAPI is the HTTP/JSON API on the HTTP listener; nil when off.
	httpAPI *server.HTTPAPI
	disp    *notify.Dispatcher // offline notification sends
	esc     *notify.Escalator  // fires due escalations (Serve runs it)
	escStop context.CancelFunc // ends the escalator's run
	// vapidPublic is the Web Push application server key browsers
	// subscribe with ("" without --vapid-private-key).
	vapidPublic string

	tp         trace.TracerProvider        // nil: tracing off (tracing.go)
	tpShutdown func(context.Context) error // flushes the exporter New made
}

// New wires pushgate and binds its listeners (so their addresses are known
// before Serve), refusing network-reachable addresses in protected mode.
// When it fails, everything it had started is released again: the engine
// (its node leaves Redis), the listeners and the hub.
func New(cfg config.Config, log *slog.Logger, opts ...Option) (_ *App, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	recent := web.NewRecent(log.Handler(), 100) // recent warnings and errors, for the admin page
	log = slog.New(recent)
	var verifier *token.Verifier
	if cfg.Auth == "jwt" {
		var err error
		verifier, err = token.NewVerifier(token.Config{
			Secret:        []byte(cfg.JWTSecret),
			PublicKeyFile: cfg.JWTPublicKey,
			JWKSFile:      cfg.JWTJWKS,
			Audience:      cfg.JWTAudience,
			Issuer:        cfg.JWTIssuer,
			Leeway:        cfg.JWTLeeway,
			MaxLifetime:   cfg.JWTMaxLifetime,
		})
		if err != nil {
			return nil, fmt.Errorf("--auth jwt: %w", err)
		}
	}
	keys, err := server.ParseAPIKeys(cfg.APIKeys)
	if err != nil {
		return nil, fmt.Errorf("--api-keys (PUSHGATE_API_KEYS): %w", err)
	}
	if cfg.APIKeysFile != "" {
		fileKeys, err := server.LoadAPIKeys(cfg.APIKeysFile)
		if err != nil {
			return nil, fmt.Errorf("--api-keys-file (PUSHGATE_API_KEYS_FILE): %w", err)
		}
		if keys, err = keys.Merge(fileKeys); err != nil {
			return nil, err
		}
	}
	// Client certificates (mTLS) do not count: see ProtectedMode.
	if err := ProtectedMode(cfg, verifier != nil, keys.Len() > 0, log); err != nil {
		return nil, err
	}

	proxies, _ := cfg.Proxies() // validated with the config
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	build := version.Get()
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "pushgate_build_info",
		Help: "Always 1; the labels say which build of pushgate this node runs.",
		ConstLabels: prometheus.Labels{"version": build.Version, "commit": build.Commit, "build_date": build.Date,
			"goversion": build.GoVersion},
	}, func() float64 { return 1 }))

	a := &App{cfg: cfg, log: log}
	defer func() {
		if err != nil {
			a.release()
		}
	}()
	if err := a.setupTracing(cfg, opts); err != nil {
		return nil, err
	}
	newEngine := gateway.MemoryEngine()
	if cfg.Engine == "redis" {
		all, _ := cfg.RedisShardOptions() // validated with the config
		// go-redis's logger is process-wide.
		redisLogOnce.Do(func() { redis.SetLogger(redisLog{log}) })
		var shards []redisengine.Shard
		tags := redisengine.ClusterTags(cfg.RedisPrefix, cfg.RedisClusterTags)
		for _, opts := range all {
			c := redis.NewUniversalClient(opts)
			a.rdbs = append(a.rdbs, c)
			name := strings.Join(opts.Addrs, ",")
			if len(tags) == 1 {
				shards = append(shards, redisengine.Shard{Client: c, Name: name})
				continue
			}
			for _, tag := range tags { // virtual shards of one Cluster
				shards = append(shards, redisengine.Shard{Client: c, Name: name + " {" + tag + "}", Prefix: tag})
			}
		}
		a.rdb = a.rdbs[0]
		if err := a.traceRedis(); err != nil {
			return nil, fmt.Errorf("tracing redis: %w", err)
		}
		newEngine = redisengine.NewSharded(context.Background(), shards, log, reg, redisengine.Options{
			Prefix: cfg.RedisPrefix, NodeTTL: cfg.NodeTTL, Timeout: cfg.RedisTimeout,
			WaitReplicas: cfg.RedisWaitReplicas, WaitTimeout: cfg.RedisWaitTimeout,
			ShardedPubSub: cfg.RedisClusterTags > 1,
		})
	}
	historyRules, err := cfg.HistoryRules()
	if err != nil {
		return nil, fmt.Errorf("--topic-history: %w", err)
	}
	a.hub, err = gateway.NewHub(gateway.Config{
		HeartbeatInterval: cfg.HeartbeatInterval,
		HeartbeatTimeout:  cfg.HeartbeatTimeout,
		WriteTimeout:      cfg.WriteTimeout,
		EngineTimeout:     cfg.EngineTimeout,
		QueueMessages:     cfg.QueueMessages,
		QueueBytes:        cfg.QueueBytes,
		ReadLimit:         int64(cfg.ReadLimit),
		MaxUserIDBytes:    cfg.MaxUserIDBytes,
		OriginPatterns:    config.List(cfg.AllowedOrigins),
		InboxMessages:     cfg.InboxMessages,
		InboxBytes:        cfg.InboxBytes,
		InboxMaxTTL:       cfg.InboxMaxTTL,
		PresenceGrace:     presenceGrace(cfg.PresenceGrace),
		MaxTopicsPerConn:  cfg.MaxTopicsPerConn,
		TopicHistory:      historyRules,
		TopicHistoryTotal: cfg.TopicHistoryTotal,
		UpstreamUsers:     config.List(cfg.UpstreamUsers),
		UpstreamTopics:    config.List(cfg.UpstreamTopics),

		ClientPublishTopics:    config.List(cfg.PublishTopics),
		ClientDirectUsers:      config.List(cfg.DirectUsers),
		ClientPublishPerSecond: cfg.PublishRate,
		TopicPresenceEvents:    config.List(cfg.PresenceEvents),
		ClientPresenceTopics:   config.List(cfg.PresenceTopics),
		Auth:                   verifier,
		TokenCookie:            cfg.TokenCookie,
		MaxConns:               cfg.MaxConns,
		MaxConnsPerUser:        cfg.MaxConnsPerUser,
		NewConnsPerSecond:      cfg.NewConnsPerSec,
		UpstreamPerSecond:      cfg.UpstreamRate,
		TrustedProxies:         proxies,

		InboxTotalMessages: cfg.InboxTotalMessages,
		InboxTotalBytes:    cfg.InboxTotalBytes,
		IdempotencyEntries: cfg.IdempotencyEntries,
		ReceiptRetention:   cfg.ReceiptRetention,
		ReceiptMax:         cfg.ReceiptMax,
		EventLogMax:        cfg.EventLogMax,
		EventLogRetention:  cfg.EventLogRetention,
		Tracer:             a.tp,
	}, log, reg, newEngine)
	if err != nil {
		return nil, fmt.Errorf("--engine %s: %w", cfg.Engine, err)
	}
	a.eng = a.hub.Engine()
	api := apiWithConfig{a.eng, a.hub.Config()}

	a.health = health.NewServer()
	grpcOpts, err := grpcTLS(cfg)
	if err != nil {
		return nil, err
	}
	grpcOpts = append(grpcOpts, a.grpcTracing()...)
	notifier, err := a.notifier(cfg, reg)
	if err != nil {
		return nil, err
	}
	if a.esc != nil {
		a.hub.SetPushRegistrar(a.esc)
	}
	var gw server.Gateway = a.eng
	if a.tp != nil {
		gw = server.TracedGateway(a.eng, a.tp)
	}
	a.svc = server.NewService(gw, log, server.Options{
		IdempotencyWindow: cfg.IdempotencyWindow, WatchBuffer: cfg.WatchBuffer,
		MaxWatchers: cfg.WatchMax, MaxWatchersPerKey: cfg.WatchMaxPerKey, Registerer: reg,
		Notifier: notifier,
	})
	if cfg.EventWebhookURL != "" {
		kinds, _ := cfg.WebhookKinds() // validated
		a.sink, err = eventsink.New(a.eng, eventsink.Options{
			URL: cfg.EventWebhookURL, Secret: []byte(cfg.EventWebhookSecret), Kinds: kinds,
			Queue: cfg.EventWebhookQueue, Timeout: cfg.EventWebhookTimeout, LeaseTTL: cfg.NodeTTL,
			Log: log, Registerer: reg,
		})
		if err != nil {
			return nil, fmt.Errorf("--event-webhook-url: %w", err)
		}
	}
	guard := server.NewGuard(server.GuardConfig{
		MaxStreams: uint32(cfg.GRPCMaxStreams), RequestTimeout: cfg.GRPCRequestTimeout,
		MaxConnsPerAddr: cfg.GRPCMaxConnsPerIP, ResetRate: cfg.GRPCResetRate,
	}, reg)
	a.grpc = server.NewGRPCServer(a.svc, a.health, server.ServerOptions{
		Limits:        server.Limits{MaxUserIDBytes: cfg.MaxUserIDBytes, MaxPayloadBytes: cfg.MaxPayloadBytes, MaxBatchUsers: cfg.MaxBatchUsers, MaxTTL: cfg.InboxMaxTTL, TopicHistory: historyRules},
		APIKeys:       keys,
		RatePerCaller: cfg.GRPCRate,
		NoReflection:  cfg.NoReflection,
		Registerer:    reg,
		GRPC:          grpcOpts,
		Guard:         guard,
	}, log)

	if a.grpcLn, err = net.Listen("tcp", cfg.GRPCAddr); err != nil {
		return nil, fmt.Errorf("--grpc-addr: %w", err)
	}
	a.grpcLn = guard.Listener(a.grpcLn)
	// Connections on the HTTP listeners that are not (yet) WebSockets.
	httpConns := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pushgate_http_connections_refused_total",
		Help: "Connections closed unanswered because the listener held --max-http-connections that are not WebSockets.",
	}, []string{"listener"})
	reg.MustRegister(httpConns)
	gate := func(name string, ln net.Listener) *connGate {
		g := newConnGate(ln, cfg.MaxHTTPConns, httpConns.WithLabelValues(name))
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "pushgate_http_connections",
			Help:        "Open connections on an HTTP listener that are not WebSockets: requests being read or answered, idle keep-alive connections.",
			ConstLabels: prometheus.Labels{"listener": name},
		}, func() float64 { return float64(g.Open()) }))
		return g
	}
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return nil, fmt.Errorf("--http-addr: %w", err)
	}
	a.httpLn = gate("http", ln)

	// The demo's backend panel may send for real only in local development:
	// no client auth, loopback only.
	devSend := verifier == nil && keys.Len() == 0 && config.LoopbackOnly(cfg.HTTPAddr)
	// The admin page and the demo's send endpoint take what the gRPC API
	// takes.
	sendLimits := web.SendLimits{MaxPayloadBytes: cfg.MaxPayloadBytes, MaxTTL: cfg.InboxMaxTTL}
	demo, err := web.DemoHandler(a.grpcLn.Addr().String(), devSend, verifier != nil)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /ws", a.hub)
	mux.Handle("GET /ws/{userID}", a.hub)
	mux.Handle("GET /{$}", demo)
	mux.Handle("GET /favicon.svg", web.FaviconHandler())
	client := web.ClientHandler()
	for _, f := range []string{"/pushgate.js", "/pushgate.mjs", "/pushgate.d.ts", "/pushgate-sw.js"} {
		mux.Handle("GET "+f, client)
	}
	if a.vapidPublic != "" {
		mux.Handle("GET /push/vapid-public-key", vapidKeyHandler(a.vapidPublic))
	}
	if devSend {
		mux.Handle("POST /demo/send", loopbackHostOnly(web.DevSendHandler(api, sendLimits)))
	}
	if err := a.mountHTTPAPI(mux, keys.Len() > 0, reg); err != nil {
		return nil, err
	}
	var handler http.Handler = mux
	if verifier == nil && config.LoopbackOnly(cfg.HTTPAddr) {
		// Nothing authenticates this listener; only this machine may use it.
		handler = loopbackHostOnly(mux)
	}
	a.http = a.httpServer(handler, a.httpLn)

	// Metrics, health, admin and pprof: on the ops listener if there is one,
	// else next to /ws.
	ops, opsAddr := mux, cfg.HTTPAddr
	if cfg.OpsAddr != "" {
		ln, err := net.Listen("tcp", cfg.OpsAddr)
		if err != nil {
			return nil, fmt.Errorf("--ops-addr: %w", err)
		}
		a.opsLn = gate("ops", ln)
		ops, opsAddr = http.NewServeMux(), cfg.OpsAddr
		var handler http.Handler = ops
		if cfg.AdminPassword == "" && keys.Len() == 0 && config.LoopbackOnly(opsAddr) {
			handler = loopbackHostOnly(ops)
		}
		a.ops = a.httpServer(handler, a.opsLn)
	}
	ops.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	ops.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	ops.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !a.ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		var down []string
		if sh, ok := a.eng.(interface{ Unreachable() []string }); ok {
			down = sh.Unreachable()
		}
		if !a.eng.Up() {
			// New connections and calls would fail here: let the load
			// balancer send them to a node that reaches Redis.
			msg := "not ready: redis unreachable"
			if len(down) > 0 {
				msg += ": shards " + strings.Join(down, ", ")
			}
			http.Error(w, msg, http.StatusServiceUnavailable)
			return
		}
		if len(down) > 0 {
			// Some shards only: their users get UNAVAILABLE on every node
			// alike, so this node stays in service for the others.
			fmt.Fprintf(w, "ready; redis shards unreachable: %s\n", strings.Join(down, ", "))
			return
		}
		fmt.Fprintln(w, "ready")
	})
	admin := web.AdminConfig{
		Hub: api, Node: cfg.NodeName, Cluster: cfg.Engine == "redis", Errors: recent.Entries, Password: cfg.AdminPassword, Started: time.Now(),
		Local:  a.hub,
		Limits: sendLimits, Logins: web.NewLogins(log, reg),
		Counters: func() map[string]float64 {
			return counters(reg, map[string]string{
				"pushgate_messages_delivered_total": "delivered",
				"pushgate_slow_consumers_total":     "slow_consumers",
			})
		},
	}
	if keys.Len() > 0 {
		admin.APIKey = keys.Valid
	}
	// The admin page and pprof need a password or an API key, unless only
	// this machine can reach them. Then they are open only because their
	// listener is on loopback, and refuse other Host names (DNS rebinding)
	// whatever guards the rest of the listener: with --auth jwt and no
	// --ops-addr, /ws next to them takes any Host, they must not.
	guarded := admin.Password != "" || admin.APIKey != nil || config.LoopbackOnly(opsAddr)
	localOnly := func(h http.Handler) http.Handler { return h }
	if admin.Password == "" && admin.APIKey == nil {
		localOnly = loopbackHostOnly
	}
	switch {
	case guarded:
		adminHandler := localOnly(web.AdminHandler(admin))
		ops.Handle("/admin", adminHandler)
		ops.Handle("/admin/", adminHandler)
	default:
		log.Warn("admin page off: it would be reachable from the network with no password; set --admin-password or API keys", "addr", opsAddr)
	}
	switch {
	case cfg.Pprof && guarded:
		prof := http.NewServeMux()
		prof.HandleFunc("/debug/pprof/", pprof.Index)
		// Not pprof.Cmdline: the command line may hold a --jwt-secret or
		// --api-keys, which whoever the guard lets in (any API key holder)
		// must not read.
		prof.HandleFunc("/debug/pprof/cmdline", func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "not served: the command line may hold secrets", http.StatusNotFound)
		})
		prof.HandleFunc("/debug/pprof/profile", pprof.Profile)
		prof.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		prof.HandleFunc("/debug/pprof/trace", pprof.Trace)
		ops.Handle("/debug/pprof/", localOnly(admin.Guard(prof)))
	case cfg.Pprof:
		log.Warn("pprof off: it would be reachable from the network with no password; set --admin-password or API keys", "addr", opsAddr)
	}
	return a, nil
}

// loopbackHostOnly refuses requests whose Host is not a loopback name or
// address. A listener that only this machine can reach, and that nothing
// authenticates, is otherwise open to DNS rebinding: a web page whose name
// resolves to 127.0.0.1 would be same-origin with it.
func loopbackHostOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		ip := net.ParseIP(strings.Trim(host, "[]"))
		if host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			http.Error(w, "this listener serves requests to localhost only (Host "+strconv.Quote(r.Host)+"); configure authentication to serve other names", http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// httpServer serves h on a listener gated by g. Reading a request is
// bounded twice: its headers by --read-header-timeout, all of it, body
// included, by --read-timeout. net/http lifts that deadline once the
// request has been read (connReader.startBackgroundRead), so handlers may
// run longer (a 30-second CPU profile); a body the handler leaves unread
// keeps it, so the server's own read of the rest, before it answers, is
// bounded too. Hijacking (a WebSocket) clears the connection's deadlines.
// There is no write timeout: pprof profiles and traces stream for as long
// as asked, and WebSockets set their own.
func (a *App) httpServer(h http.Handler, g *connGate) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: a.cfg.ReadHeaderTimeout,
		ReadTimeout:       a.cfg.ReadTimeout,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
		ConnState:         g.connState,
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelDebug),
	}
}

// counters reads the current value of the named counters from reg, keyed
// by the given short names.
func counters(reg prometheus.Gatherer, names map[string]string) map[string]float64 {
	out := map[string]float64{}
	mfs, err := reg.Gather()
	if err != nil {
		return out
	}
	for _, mf := range mfs {
		short, ok := names[mf.GetName()]
		if !ok {
			continue
		}
		for _, m := range mf.GetMetric() {
			out[short] += m.GetCounter().GetValue()
		}
	}
	return out
}

// ProtectedMode refuses listeners reachable from the network when nothing
// guards them: the WebSocket side needs client auth (--auth jwt), the gRPC
// side needs API keys. Client certificates (--grpc-client-ca) do not count
// for the gRPC side: pushgate does not tell callers apart by certificate
// (any certificate the CA signed may do everything, and CAs are often
// shared by many services), while keys are pushgate's own and name their
// caller in logs, metrics and the rate limit. --insecure overrides, with a
// warning.
func ProtectedMode(cfg config.Config, clientAuth, apiKeys bool, log *slog.Logger) error {
	var open []string
	for _, l := range []struct {
		flag, addr, guard string
		guarded           bool
	}{
		{"--http-addr", cfg.HTTPAddr, "--auth jwt", clientAuth},
		{"--grpc-addr", cfg.GRPCAddr, "--api-keys", apiKeys},
	} {
		if l.guarded || config.LoopbackOnly(l.addr) {
			continue
		}
		if !cfg.Insecure {
			return fmt.Errorf("protected mode: refusing to listen on %s (%s) without %s, "+
				"because anyone who can reach it could connect as any user or call the API; "+
				"use a loopback address such as 127.0.0.1, configure %s, or pass --insecure (PUSHGATE_INSECURE=true) to accept the risk",
				l.addr, l.flag, l.guard, l.guard)
		}
		open = append(open, l.flag+" "+l.addr)
	}
	switch {
	case len(open) > 0:
		log.Warn("insecure mode: reachable from the network with no authentication on " + strings.Join(open, " and ") + "; anyone can connect as any user or call the API")
	case !clientAuth || !apiKeys:
		log.Info(fmt.Sprintf("protected mode: client auth %s, API keys %s; unauthenticated listeners are on loopback only", onOff(clientAuth), onOff(apiKeys)))
	default:
		log.Info("client auth (jwt) and API keys are on")
	}
	return nil
}

// presenceGrace maps --presence-grace 0 ("report at once") to the hub's
// negative value for it (its zero means the default).
func presenceGrace(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// grpcTLS returns the gRPC server's TLS credentials, if configured, with
// client certificates required when a client CA is given (mTLS).
func grpcTLS(cfg config.Config) ([]grpc.ServerOption, error) {
	if cfg.GRPCTLSCert == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(cfg.GRPCTLSCert, cfg.GRPCTLSKey)
	if err != nil {
		return nil, fmt.Errorf("--grpc-tls-cert: %w", err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if cfg.GRPCClientCA != "" {
		pemBytes, err := os.ReadFile(cfg.GRPCClientCA)
		if err != nil {
			return nil, fmt.Errorf("--grpc-client-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemBytes) {
			return nil, fmt.Errorf("--grpc-client-ca: no certificates in %s", cfg.GRPCClientCA)
		}
		tc.ClientCAs = pool
		tc.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return []grpc.ServerOption{grpc.Creds(credentials.NewTLS(tc))}, nil
}

// HTTPStopTimeout bounds plain HTTP requests (metrics scrapes, the demo
// page) still running at shutdown.
const HTTPStopTimeout = 5 * time.Second

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

// OpsAddr is the ops listener's address (the HTTP one without --ops-addr).
func (a *App) OpsAddr() string {
	if a.opsLn != nil {
		return a.opsLn.Addr().String()
	}
	return a.HTTPAddr()
}

// HTTPConns is how many connections the HTTP listener holds that are not
// WebSockets (--max-http-connections bounds them).
func (a *App) HTTPConns() int64 { return a.httpLn.Open() }

// HTTPAddr and GRPCAddr are the bound addresses.
func (a *App) HTTPAddr() string { return a.httpLn.Addr().String() }
func (a *App) GRPCAddr() string { return a.grpcLn.Addr().String() }

// Hub is the node's hub: its connections and users.
func (a *App) Hub() *gateway.Hub { return a.hub }

// Engine is the node's engine: the whole deployment's sends, presence and
// inboxes.
func (a *App) Engine() gateway.Engine { return a.eng }

// Close releases an App that will not be served: its listeners, the engine
// (the node leaves Redis) and the hub. Serve releases them itself.
func (a *App) Close() { a.release() }

// release frees whatever New has started so far, in shutdown's order:
// listeners, then the hub, then the engine and its client. Each step may
// run again (Close after Serve) without harm.
func (a *App) release() {
	if a.grpc != nil {
		a.grpc.Stop()
	}
	if a.grpcLn != nil {
		a.grpcLn.Close()
	}
	for _, ln := range []*connGate{a.httpLn, a.opsLn} {
		if ln != nil {
			ln.Close()
		}
	}
	if a.hub != nil {
		a.hub.Shutdown(context.Background(), 0)
	}
	if a.escStop != nil {
		a.escStop()
	}
	if a.disp != nil {
		a.disp.Close() // before the engine: finished sends report through it
	}
	if a.sink != nil {
		a.sink.Close()
	}
	if a.eng != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := a.eng.Close(ctx); err != nil {
			a.log.Warn("could not remove this node from the engine; other nodes will reap it", "err", err)
		}
		cancel()
	}
	for _, c := range a.rdbs {
		c.Close()
	}
	a.stopTracing()
}

// Serve runs until ctx ends or a server fails, then shuts down in order:
// not ready → stop accepting → in-flight gRPC calls finish (GracefulStop,
// cut after --grpc-stop-timeout) → clients closed with 1001 spread over
// --drain-window. It returns nil after a clean shutdown.
func (a *App) Serve(ctx context.Context) error {
	errc := make(chan error, 2)
	go func() { errc <- a.grpc.Serve(a.grpcLn) }()
	if a.ops != nil {
		go func() {
			if err := a.ops.Serve(a.opsLn); !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		}()
	}
	go func() {
		var err error
		if a.cfg.HTTPTLSCert != "" {
			err = a.http.ServeTLS(a.httpLn, a.cfg.HTTPTLSCert, a.cfg.HTTPTLSKey)
		} else {
			err = a.http.Serve(a.httpLn)
		}
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		errc <- err
	}()
	if a.sink != nil {
		a.sink.Start()
	}
	a.ready.Store(true)
	a.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	go a.followEngine(ctx)
	if a.esc != nil {
		escCtx, stop := context.WithCancel(ctx)
		a.escStop = stop
		go a.esc.Run(escCtx)
	}
	scheme := "http://"
	if a.cfg.HTTPTLSCert != "" {
		scheme = "https://"
	}
	build := version.Get()
	a.log.Info("pushgate started", "version", build.Version, "commit", build.Commit, "http", a.HTTPAddr(), "grpc", a.GRPCAddr(), "ops", a.OpsAddr(),
		"demo", scheme+browsable(a.HTTPAddr())+"/")

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
		ctx, cancel := context.WithTimeout(context.Background(), HTTPStopTimeout)
		defer cancel()
		_ = a.http.Shutdown(ctx)
		close(httpDone)
	}()

	// In-flight gRPC calls finish before clients are closed, so that what
	// they queued is written first.
	a.svc.Drain() // WatchEvents streams end now; GracefulStop waits for the rest
	grpcStop := time.After(a.cfg.GRPCStopTimeout)
	if a.httpAPI != nil {
		// GracefulStop would cut the calls the HTTP/JSON API has running.
		select {
		case <-a.httpAPI.Idle():
		case <-grpcStop:
		}
	}
	stopped := make(chan struct{})
	go func() { a.grpc.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-grpcStop:
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
	if a.sink != nil {
		a.sink.Close()
	}
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	if err := a.eng.Close(ctx); err != nil {
		a.log.Warn("could not remove this node from the engine; other nodes will reap it", "err", err)
	}
	cancel()
	for _, c := range a.rdbs {
		c.Close()
	}
	if a.ops != nil { // last, so health and metrics answered during the drain
		ctx, cancel := context.WithTimeout(context.Background(), HTTPStopTimeout)
		_ = a.ops.Shutdown(ctx)
		cancel()
	}
	a.stopTracing()
	a.log.Info("pushgate stopped", "took", time.Since(start).Round(time.Millisecond))
}

// apiWithConfig is the engine with the gateway's configuration, for the
// admin page and the demo's send endpoint.
type apiWithConfig struct {
	gateway.Engine
	cfg gateway.Config
}

func (a apiWithConfig) Config() gateway.Config { return a.cfg }

// redisLog passes go-redis's own messages (dial retries and the like) to
// the log at debug level; the engine logs what matters (lost and restored
// subscriptions, failed writes) itself.
type redisLog struct{ log *slog.Logger }

var redisLogOnce sync.Once

func (l redisLog) Printf(ctx context.Context, format string, v ...any) {
	l.log.DebugContext(ctx, "redis client: "+fmt.Sprintf(format, v...))
}

// followEngine makes gRPC health follow the engine: NOT_SERVING while it
// cannot serve (the Redis engine cut off from Redis: calls would answer
// UNAVAILABLE), SERVING again when it can. Shutdown's NOT_SERVING is final
// (health.Server).
func (a *App) followEngine(ctx context.Context) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	up := true
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if now := a.eng.Up(); now != up {
			up = now
			st := healthpb.HealthCheckResponse_NOT_SERVING
			if up {
				st = healthpb.HealthCheckResponse_SERVING
			}
			a.health.SetServingStatus("", st)
		}
	}
}

// notifier sets up offline notification: the channels configured, their
// dispatcher, and the escalator over the engine's store. A channel not
// configured reports "unconfigured" for targets that need it.
func (a *App) notifier(cfg config.Config, reg prometheus.Registerer) (server.Notifier, error) {
	store, ok := a.eng.(notify.Store)
	if !ok {
		return nil, nil
	}
	client := notify.NewHTTPClient()
	egress := notify.Egress{WebhookHosts: config.List(cfg.NotifyWebhookHosts), AllowPrivate: cfg.NotifyAllowPrivate}
	pushClient := client // push endpoints are chosen by clients: public addresses only, unless allowed
	if !egress.AllowPrivate {
		pushClient = notify.PublicHTTPClient()
	}
	nc := notify.Config{Workers: cfg.NotifyWorkers, Queue: cfg.NotifyQueue}
	if cfg.VAPIDPrivateKey != "" {
		v, err := notify.ParseVAPID(cfg.VAPIDPrivateKey, cfg.VAPIDSubject)
		if err != nil {
			return nil, fmt.Errorf("--vapid-private-key / --vapid-subject: %v", err)
		}
		nc.WebPush = &notify.WebPush{VAPID: v, Client: pushClient, Now: time.Now}
		a.vapidPublic = v.Public
	}
	if cfg.WeChatAppID != "" {
		nc.WeChat = &notify.WeChat{BaseURL: cfg.WeChatAPIURL, AppID: cfg.WeChatAppID, Secret: cfg.WeChatAppSecret,
			State: cfg.WeChatState, Client: client, Now: time.Now}
	}
	if cfg.WebhookSecret != "" {
		nc.Webhook = &notify.Webhook{Secret: []byte(cfg.WebhookSecret), Client: client, Now: time.Now, Hosts: egress}
	}
	a.disp = notify.NewDispatcher(nc, reg)
	a.esc = notify.NewEscalator(store, a.disp, notify.EscalatorConfig{
		MaxTargets: cfg.NotifyMaxTargets, MaxPending: cfg.NotifyMaxPending, Poll: cfg.NotifyPoll, Egress: egress,
	}, a.log, reg)
	return a.esc, nil
}

// vapidKeyHandler serves the VAPID public key, for a page's
// pushManager.subscribe({applicationServerKey}).
func vapidKeyHandler(key string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-cache")
		fmt.Fprint(w, key)
	})
}
