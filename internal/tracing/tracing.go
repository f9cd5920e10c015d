// Package tracing sets up OpenTelemetry tracing: the tracer provider that
// exports spans over OTLP (--otlp-endpoint, off by default), its sampler
// (--trace-sample-ratio, the caller's traceparent deciding for its own
// calls) and the W3C trace context propagator that reads traceparent from
// gRPC metadata and HTTP headers. The spans pushgate makes are described in
// docs/operations.md ("Tracing").
package tracing

import (
	"context"
	"fmt"
	"net/url"
	"time"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/embedded"
)

// Config is where and how much to trace.
type Config struct {
	Endpoint    string  // collector URL: http:// or https:// ("": off)
	Protocol    string  // "grpc" or "http"
	SampleRatio float64 // share of root calls sampled, 0 to 1
	Node        string  // this node's name (service.instance.id)
	Version     string  // pushgate's version (service.version)
}

// Propagator is the trace context format pushgate reads from its callers:
// W3C traceparent and tracestate.
func Propagator() propagation.TextMapPropagator { return propagation.TraceContext{} }

// Sampler samples what the caller's traceparent says, and ratio of the
// calls that come without one.
func Sampler(ratio float64) sdktrace.Sampler {
	return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio))
}

// Resource names this process in the spans it exports.
func Resource(node, version string) *resource.Resource {
	return resource.NewWithAttributes(semconv.SchemaURL,
		semconv.ServiceName("pushgate"),
		semconv.ServiceVersion(version),
		semconv.ServiceInstanceID(node),
	)
}

// New returns the tracer provider that exports to cfg.Endpoint in batches.
// Exports are retried and dropped in the background: a collector that is
// down never slows a call. Shut it down to flush what is left.
func New(ctx context.Context, cfg Config) (*sdktrace.TracerProvider, error) {
	exp, err := exporter(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp, sdktrace.WithBatchTimeout(2*time.Second)),
		sdktrace.WithSampler(Sampler(cfg.SampleRatio)),
		sdktrace.WithResource(Resource(cfg.Node, cfg.Version)),
	), nil
}

// exporter makes the OTLP exporter for cfg: the URL's scheme says whether
// it uses TLS; with HTTP, a URL without a path gets the standard
// /v1/traces.
func exporter(ctx context.Context, cfg Config) (sdktrace.SpanExporter, error) {
	u, err := url.Parse(cfg.Endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("--otlp-endpoint must be an http:// or https:// URL, got %q", cfg.Endpoint)
	}
	switch cfg.Protocol {
	case "grpc":
		opts := []otlptracegrpc.Option{otlptracegrpc.WithEndpoint(u.Host)}
		if u.Scheme == "http" {
			opts = append(opts, otlptracegrpc.WithInsecure())
		}
		return otlptracegrpc.New(ctx, opts...)
	case "http":
		path := u.Path
		if path == "" || path == "/" {
			path = "/v1/traces"
		}
		opts := []otlptracehttp.Option{otlptracehttp.WithEndpoint(u.Host), otlptracehttp.WithURLPath(path)}
		if u.Scheme == "http" {
			opts = append(opts, otlptracehttp.WithInsecure())
		}
		return otlptracehttp.New(ctx, opts...)
	}
	return nil, fmt.Errorf("--otlp-protocol must be grpc or http, got %q", cfg.Protocol)
}

// ChildOnly returns tp with tracers that start a span only under a valid
// parent in the context: for instrumentation (the Redis client's) that
// also runs in the background, where a root span per command would trace
// the node's own housekeeping instead of the calls.
func ChildOnly(tp trace.TracerProvider) trace.TracerProvider { return childOnly{tp: tp} }

type childOnly struct {
	embedded.TracerProvider
	tp trace.TracerProvider
}

func (c childOnly) Tracer(name string, opts ...trace.TracerOption) trace.Tracer {
	return childTracer{t: c.tp.Tracer(name, opts...)}
}

type childTracer struct {
	embedded.Tracer
	t trace.Tracer
}

func (c childTracer) Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return ctx, trace.SpanFromContext(ctx) // not recording
	}
	return c.t.Start(ctx, name, opts...)
}
