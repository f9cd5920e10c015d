package server

import (
	"context"
	"log/slog"
	"runtime/debug"
	"strings"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/ratelimit"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/selector"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"pushgate/gateway/limit"
	pb "pushgate/gen/pushgate/v1"
)

// ServerOptions configure the gRPC server around the service.
type ServerOptions struct {
	Limits Limits
	// APIKeys, when it holds keys, must authenticate every PushService call.
	// Health and reflection stay open.
	APIKeys *APIKeys
	// RatePerCaller limits PushService calls per second per API caller
	// (RESOURCE_EXHAUSTED past it; burst of one second's worth). 0: none.
	RatePerCaller float64
	// NoReflection turns server reflection off.
	NoReflection bool
	// Registerer receives the gRPC metrics; nil: not registered.
	Registerer prometheus.Registerer
	// GRPC are extra server options (TLS credentials, message sizes).
	GRPC []grpc.ServerOption
	// Guard, when set, bounds connections and streams before calls are
	// authenticated (serve on Guard.Listener).
	Guard *Guard

	metrics *grpcMetrics
}

type grpcMetrics struct {
	calls        *prometheus.CounterVec
	latency      *prometheus.HistogramVec
	authFailures *prometheus.CounterVec
	rateLimited  prometheus.Counter
}

func newGRPCMetrics(reg prometheus.Registerer) *grpcMetrics {
	m := &grpcMetrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushgate_grpc_calls_total",
			Help: "gRPC calls handled, by API caller, method and status code.",
		}, []string{"caller", "method", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pushgate_grpc_call_seconds",
			Help:    "gRPC unary call latency, by method.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1},
		}, []string{"method"}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushgate_grpc_auth_failures_total",
			Help: "gRPC calls refused for their API key, by reason (missing_key, bad_key).",
		}, []string{"reason"}),
		rateLimited: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pushgate_grpc_rate_limited_total",
			Help: "gRPC calls refused with RESOURCE_EXHAUSTED by --grpc-rate.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.calls, m.latency, m.authFailures, m.rateLimited)
	}
	return m
}

// grpcWorkers is how many goroutines take gRPC calls (grpc.NumStreamWorkers):
// enough for the callers of a busy node to find one free while a call
// waits on Redis; an idle one costs its stack.
const grpcWorkers = 64

// NewGRPCServer returns a gRPC server with the PushService, gRPC health and
// (unless turned off) server reflection registered. The interceptor chain
// is fixed: caller slot → logging and metrics (outermost, so they see the
// final status and the caller) → API-key auth and per-caller rate limit
// (PushService only) → validation → recovery (innermost, so a panic in a
// handler becomes INTERNAL and is logged with its stack).
func NewGRPCServer(svc *Service, hs *health.Server, o ServerOptions, log *slog.Logger) *grpc.Server {
	o.metrics = newGRPCMetrics(o.Registerer)
	logOpts := []logging.Option{
		logging.WithLogOnEvents(logging.FinishCall),
		logging.WithFieldsFromContext(func(ctx context.Context) logging.Fields {
			if c := Caller(ctx); c != "" {
				return logging.Fields{"caller", c}
			}
			return nil
		}),
	}
	recOpts := []recovery.Option{recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		log.ErrorContext(ctx, "panic in gRPC handler", "panic", p, "stack", string(debug.Stack()))
		return status.Error(codes.Internal, "internal error")
	})}
	pushOnly := selector.MatchFunc(func(_ context.Context, c interceptors.CallMeta) bool {
		return c.Service == pb.PushService_ServiceDesc.ServiceName
	})
	limiter := callerLimiter{buckets: limit.NewKeyed(o.RatePerCaller, int(o.RatePerCaller)+1), metrics: o.metrics}
	opts := append([]grpc.ServerOption(nil), o.GRPC...)
	if o.Guard != nil {
		opts = append(opts, o.Guard.serverOptions()...)
	}
	opts = append(opts,
		// Pings keep idle streams (WatchEvents) alive through proxies and
		// NAT, and find dead callers.
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		// Calls run on goroutines kept from call to call, whose stacks
		// have grown already: a new goroutine per call grew its stack
		// through the interceptors and the socket write, a sixth of a
		// unicast call's CPU (runtime.morestack). A call that finds every
		// worker busy gets a goroutine of its own, as without them.
		grpc.NumStreamWorkers(grpcWorkers),
		grpc.ChainUnaryInterceptor(
			unaryCallerSlot,
			whenInfo(log, logging.UnaryServerInterceptor(slogAdapter(log), logOpts...)),
			o.metrics.unary,
			selector.UnaryServerInterceptor(auth.UnaryServerInterceptor(o.authenticate), pushOnly),
			selector.UnaryServerInterceptor(ratelimit.UnaryServerInterceptor(limiter), pushOnly),
			o.Limits.UnaryInterceptor(),
			recovery.UnaryServerInterceptor(recOpts...),
		),
		grpc.ChainStreamInterceptor(
			streamCallerSlot,
			logging.StreamServerInterceptor(slogAdapter(log), logOpts...),
			o.metrics.stream,
			selector.StreamServerInterceptor(auth.StreamServerInterceptor(o.authenticate), pushOnly),
			selector.StreamServerInterceptor(ratelimit.StreamServerInterceptor(limiter), pushOnly),
			recovery.StreamServerInterceptor(recOpts...),
		),
	)
	s := grpc.NewServer(opts...)
	pb.RegisterPushServiceServer(s, svc)
	healthpb.RegisterHealthServer(s, hs)
	if !o.NoReflection {
		reflection.Register(s)
	}
	return s
}

// whenInfo runs the call-logging interceptor only while info lines are
// enabled: it builds its fields before the logger could drop them, which is
// a large share of a call's cost when nothing is written.
func whenInfo(log *slog.Logger, i grpc.UnaryServerInterceptor) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if !log.Enabled(ctx, slog.LevelInfo) {
			return handler(ctx, req)
		}
		return i(ctx, req, info, handler)
	}
}

// unaryCallerSlot is the outermost unary interceptor: it runs once the
// request has arrived.
func unaryCallerSlot(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	requestArrived(ctx)
	ctx, _ = withCallerSlot(ctx)
	return handler(ctx, req)
}

func streamCallerSlot(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx, _ := withCallerSlot(ss.Context())
	return handler(srv, &ctxStream{ss, ctx})
}

type ctxStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *ctxStream) Context() context.Context { return s.ctx }

// RecvMsg tells the guard when the stream's first request has arrived.
func (s *ctxStream) RecvMsg(m any) error {
	err := s.ServerStream.RecvMsg(m)
	if err == nil {
		requestArrived(s.ctx)
	}
	return err
}

func (m *grpcMetrics) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := handler(ctx, req)
	method := info.FullMethod[strings.LastIndexByte(info.FullMethod, '/')+1:]
	m.latency.WithLabelValues(method).Observe(time.Since(start).Seconds())
	m.calls.WithLabelValues(Caller(ctx), method, status.Code(err).String()).Inc()
	return resp, err
}

func (m *grpcMetrics) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	err := handler(srv, ss)
	method := info.FullMethod[strings.LastIndexByte(info.FullMethod, '/')+1:]
	m.calls.WithLabelValues(Caller(ss.Context()), method, status.Code(err).String()).Inc()
	return err
}

func slogAdapter(l *slog.Logger) logging.Logger {
	return logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
		l.Log(ctx, slog.Level(lvl), msg, fields...)
	})
}
