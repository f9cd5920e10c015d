package app

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/extra/redisotel/v9"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/stats"

	pb "pushgate/gen/pushgate/v1"
	"pushgate/internal/config"
	"pushgate/internal/tracing"
	"pushgate/internal/version"
)

// Option changes how New wires pushgate, beyond its configuration.
type Option func(*options)

type options struct {
	tracer trace.TracerProvider
}

// WithTracerProvider traces with tp (an SDK provider with an exporter of
// the caller's) instead of the one --otlp-endpoint would make; the caller
// shuts it down.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(o *options) { o.tracer = tp }
}

// setupTracing sets a.tp: the provider of opts, or the OTLP exporter's of
// --otlp-endpoint, or none (tracing off: nothing is wrapped or
// instrumented).
func (a *App) setupTracing(cfg config.Config, opts []Option) error {
	var o options
	for _, f := range opts {
		f(&o)
	}
	if o.tracer != nil {
		a.tp = o.tracer
		return nil
	}
	if cfg.OTLPEndpoint == "" {
		return nil
	}
	tp, err := tracing.New(context.Background(), tracing.Config{
		Endpoint: cfg.OTLPEndpoint, Protocol: cfg.OTLPProtocol, SampleRatio: cfg.TraceSampleRatio,
		Node: cfg.NodeName, Version: version.Get().Version,
	})
	if err != nil {
		return fmt.Errorf("--otlp-endpoint: %w", err)
	}
	a.tp, a.tpShutdown = tp, tp.Shutdown
	return nil
}

// grpcTracing is the gRPC server's stats handler that starts a span per
// PushService call, a child of the caller's traceparent (gRPC metadata, or
// the HTTP header of an HTTP/JSON API call, which reaches the gRPC server
// as metadata). Health checks and reflection are not traced: probes would
// fill the traces.
func (a *App) grpcTracing() []grpc.ServerOption {
	if a.tp == nil {
		return nil
	}
	return []grpc.ServerOption{grpc.StatsHandler(otelgrpc.NewServerHandler(
		otelgrpc.WithTracerProvider(a.tp), otelgrpc.WithPropagators(tracing.Propagator()),
		otelgrpc.WithFilter(func(info *stats.RPCTagInfo) bool {
			return strings.HasPrefix(info.FullMethodName, "/"+pb.PushService_ServiceDesc.ServiceName+"/")
		})))}
}

// traceRedis adds a span per Redis command made in a traced call, without
// the command's arguments (they hold payloads and user ids).
func (a *App) traceRedis() error {
	if a.tp == nil {
		return nil
	}
	for _, rdb := range a.rdbs {
		if err := redisotel.InstrumentTracing(rdb, redisotel.WithTracerProvider(tracing.ChildOnly(a.tp)),
			redisotel.WithDBStatement(false), redisotel.WithCallerEnabled(false)); err != nil {
			return err
		}
	}
	return nil
}

// stopTracing flushes the spans not yet exported (for up to 5s) and stops
// the exporter that setupTracing made.
func (a *App) stopTracing() {
	if a.tpShutdown == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.tpShutdown(ctx); err != nil {
		a.log.Warn("could not export the last spans", "err", err)
	}
	a.tpShutdown = nil
}
