package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"pushgate/gateway/redisengine/redistest"
	pb "pushgate/gen/pushgate/v1"
	"pushgate/internal/app"
	"pushgate/internal/tracing"
)

// startTracedServer is startServer with tp as the server's tracer provider
// (and no engine chosen for it: args choose).
func startTracedServer(t testing.TB, tp trace.TracerProvider, args ...string) *testServer {
	t.Helper()
	return startAppServer(t, args, app.WithTracerProvider(tp))
}

// traceparent returns a W3C traceparent of a new sampled trace, and its
// trace and span ids.
func traceparent(seed byte) (string, trace.TraceID, trace.SpanID) {
	var tid trace.TraceID
	var sid trace.SpanID
	for i := range tid {
		tid[i] = seed + byte(i)
	}
	for i := range sid {
		sid[i] = 0xa0 + seed + byte(i)
	}
	return fmt.Sprintf("00-%s-%s-01", hex.EncodeToString(tid[:]), hex.EncodeToString(sid[:])), tid, sid
}

// spansOf returns the ended spans of trace tid by name (the first of each).
func spansOf(exp *tracetest.InMemoryExporter, tid trace.TraceID) map[string]tracetest.SpanStub {
	out := map[string]tracetest.SpanStub{}
	for _, s := range exp.GetSpans() {
		if s.SpanContext.TraceID() != tid {
			continue
		}
		if _, ok := out[s.Name]; !ok {
			out[s.Name] = s
		}
	}
	return out
}

func attr(s tracetest.SpanStub, key string) string {
	for _, a := range s.Attributes {
		if string(a.Key) == key {
			return a.Value.String()
		}
	}
	return ""
}

// TestTracingSendToUser: a SendToUser with a traceparent (gRPC metadata,
// then an HTTP/JSON header) makes one trace: the call's span a child of the
// given parent, the engine's span under it (with the Redis engine, its
// Redis commands under that), and the message's deliver, write and ack
// spans under the engine's, for an envelope client that acknowledges and a
// raw one whose write is its ack. Run on both engines.
func TestTracingSendToUser(t *testing.T) {
	for _, engine := range []string{"memory", "redis"} {
		t.Run(engine, func(t *testing.T) {
			var args []string
			if engine == "redis" {
				args = []string{"--engine", "redis", "--redis-url", redistest.Start(t).URL()}
			}
			exp := tracetest.NewInMemoryExporter()
			tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp), sdktrace.WithSampler(tracing.Sampler(0)))
			t.Cleanup(func() { tp.Shutdown(context.Background()) })
			s := startTracedServer(t, tp, args...)

			// gRPC, an envelope client that acknowledges.
			c := dialEnv(t, s.wsURL("alice"))
			eventually(t, "alice online", func() bool { return s.online(t, "alice") == 1 })
			tpHeader, tid, parent := traceparent(1)
			ctx := metadata.AppendToOutgoingContext(context.Background(), "traceparent", tpHeader)
			r, err := s.api.SendToUser(ctx, &pb.SendToUserRequest{UserId: "alice", Message: ttlMsg(`{"n":1}`, time.Minute)})
			if err != nil {
				t.Fatal(err)
			}
			m := c.nextMessage()
			if m.ID != r.MessageId {
				t.Fatalf("got message %s, sent %s", m.ID, r.MessageId)
			}
			c.send(map[string]any{"op": "ack", "id": m.ID})
			waitSpans(t, exp, tid)
			spans := spansOf(exp, tid)
			call := checkTrace(t, spans, "pushgate.v1.PushService/SendToUser", parent, r.MessageId)
			if got := attr(spans["pushgate.ack"], "pushgate.ack.implicit"); got != "false" {
				t.Errorf("envelope ack: implicit = %q, want false", got)
			}
			if got := attr(spans["pushgate.write"], "pushgate.protocol"); got != "envelope" {
				t.Errorf("write span protocol %q, want envelope", got)
			}
			if engine == "redis" {
				checkRedisSpans(t, exp, tid, spans["pushgate.engine.SendToUsers"].SpanContext.SpanID())
			}
			if call.SpanKind != trace.SpanKindServer {
				t.Errorf("call span kind %v, want server", call.SpanKind)
			}

			// HTTP/JSON, a raw client whose write acknowledges.
			w := s.dial(t, "bob")
			eventually(t, "bob online", func() bool { return s.online(t, "bob") == 1 })
			tpHeader, tid, parent = traceparent(2)
			req, _ := http.NewRequest(http.MethodPost, "http://"+s.app.HTTPAddr()+"/pushgate.v1.PushService/SendToUser",
				strings.NewReader(`{"userId":"bob","message":{"text":"hi","ttl":"60s"}}`))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("traceparent", tpHeader)
			a := s.jsonAPI(t, "").do(req)
			if a.status != http.StatusOK {
				t.Fatalf("HTTP SendToUser: %d %s", a.status, a.raw)
			}
			if got := <-w.msgs; string(got.data) != "hi" {
				t.Fatalf("bob got %q", got.data)
			}
			waitSpans(t, exp, tid)
			spans = spansOf(exp, tid)
			checkTrace(t, spans, "pushgate.v1.PushService/SendToUser", parent, a.body["messageId"].(string))
			if got := attr(spans["pushgate.ack"], "pushgate.ack.implicit"); got != "true" {
				t.Errorf("raw ack: implicit = %q, want true", got)
			}

			// Without a traceparent and a ratio of 0, nothing is traced;
			// nor is a health check.
			before := len(exp.GetSpans())
			if _, err := s.api.SendToUser(context.Background(), &pb.SendToUserRequest{UserId: "alice", Message: ttlMsg(`{"n":2}`, time.Minute)}); err != nil {
				t.Fatal(err)
			}
			c.send(map[string]any{"op": "ack", "id": c.nextMessage().ID})
			// Health checks are not traced, even with a traceparent.
			hp, _, _ := traceparent(5)
			hctx := metadata.AppendToOutgoingContext(context.Background(), "traceparent", hp)
			if _, err := healthpb.NewHealthClient(s.cc).Check(hctx, &healthpb.HealthCheckRequest{}); err != nil {
				t.Fatal(err)
			}
			// A traced call after them: once its spans are in, theirs
			// would be too.
			tpHeader, tid, _ = traceparent(3)
			ctx = metadata.AppendToOutgoingContext(context.Background(), "traceparent", tpHeader)
			if _, err := s.api.GetPresence(ctx, &pb.GetPresenceRequest{UserIds: []string{"alice"}}); err != nil {
				t.Fatal(err)
			}
			eventually(t, "the Presence span", func() bool { _, ok := spansOf(exp, tid)["pushgate.engine.Presence"]; return ok })
			for _, sp := range exp.GetSpans()[before:] {
				if sp.SpanContext.TraceID() != tid {
					t.Errorf("an untraced call made span %s", sp.Name)
				}
			}
		})
	}
}

// sendSpans are the spans of a traced send to a user that acknowledges.
var sendSpans = []string{"pushgate.v1.PushService/SendToUser", "pushgate.engine.SendToUsers", "pushgate.deliver", "pushgate.write", "pushgate.ack"}

// waitSpans waits until trace tid has every span of sendSpans: the call's
// span ends after its answer is sent, so it may come after the others.
func waitSpans(t *testing.T, exp *tracetest.InMemoryExporter, tid trace.TraceID) {
	t.Helper()
	eventually(t, "the spans of the send", func() bool {
		spans := spansOf(exp, tid)
		for _, name := range sendSpans {
			if _, ok := spans[name]; !ok {
				return false
			}
		}
		return true
	})
}

// checkTrace checks the spans of one traced send to a user and returns the
// call's span: call ← parent, engine ← call, deliver, write and ack ←
// engine, each naming the message.
func checkTrace(t *testing.T, spans map[string]tracetest.SpanStub, callName string, parent trace.SpanID, id string) tracetest.SpanStub {
	t.Helper()
	call, ok := spans[callName]
	if !ok {
		t.Fatalf("no span %q; have %v", callName, names(spans))
	}
	if call.Parent.SpanID() != parent || !call.Parent.IsRemote() {
		t.Errorf("call span's parent %v, want the caller's %v", call.Parent.SpanID(), parent)
	}
	eng := spans["pushgate.engine.SendToUsers"]
	if eng.Parent.SpanID() != call.SpanContext.SpanID() {
		t.Errorf("engine span's parent %v, want the call's %v (have %v)", eng.Parent.SpanID(), call.SpanContext.SpanID(), names(spans))
	}
	if got := attr(eng, "pushgate.message.id"); got != id {
		t.Errorf("engine span message id %q, want %q", got, id)
	}
	for _, name := range []string{"pushgate.deliver", "pushgate.write", "pushgate.ack"} {
		sp, ok := spans[name]
		if !ok {
			t.Errorf("no span %q; have %v", name, names(spans))
			continue
		}
		if sp.Parent.SpanID() != eng.SpanContext.SpanID() {
			t.Errorf("%s's parent %v, want the engine span %v", name, sp.Parent.SpanID(), eng.SpanContext.SpanID())
		}
		if got := attr(sp, "pushgate.message.id"); got != id {
			t.Errorf("%s: message id %q, want %q", name, got, id)
		}
	}
	if got := attr(spans["pushgate.deliver"], "pushgate.connections"); got != "1" {
		t.Errorf("deliver span: connections %q, want 1", got)
	}
	return call
}

// checkRedisSpans checks that the Redis engine's commands for the send are
// spans under the engine's span, without their arguments.
func checkRedisSpans(t *testing.T, exp *tracetest.InMemoryExporter, tid trace.TraceID, engine trace.SpanID) {
	t.Helper()
	n := 0
	for _, sp := range exp.GetSpans() {
		if sp.SpanContext.TraceID() != tid || attr(sp, "db.system") != "redis" {
			continue
		}
		if sp.Parent.SpanID() == engine {
			n++
		}
		if attr(sp, "db.statement") != "" || attr(sp, "db.query.text") != "" {
			t.Errorf("redis span %s records its command's arguments", sp.Name)
		}
	}
	if n == 0 {
		t.Errorf("no redis command span under the engine's span")
	}
}

func names(spans map[string]tracetest.SpanStub) []string {
	var out []string
	for n := range spans {
		out = append(out, n)
	}
	return out
}

// otlpCollector is a loopback OTLP receiver: gRPC (TraceService/Export) and
// HTTP (POST /v1/traces, protobuf), decoding what it gets with the OTLP
// protobuf definitions.
type otlpCollector struct {
	collectortrace.UnimplementedTraceServiceServer
	mu    sync.Mutex
	spans map[string][]string // trace id (hex) → span names
}

func (o *otlpCollector) Export(_ context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	o.add(req)
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

func (o *otlpCollector) add(req *collectortrace.ExportTraceServiceRequest) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, rs := range req.ResourceSpans {
		service := ""
		for _, a := range rs.GetResource().GetAttributes() {
			if a.Key == "service.name" {
				service = a.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.ScopeSpans {
			for _, sp := range ss.Spans {
				k := hex.EncodeToString(sp.TraceId)
				o.spans[k] = append(o.spans[k], service+"/"+sp.Name)
			}
		}
	}
}

func (o *otlpCollector) has(tid trace.TraceID, want ...string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	got := o.spans[hex.EncodeToString(tid[:])]
	for _, w := range want {
		found := false
		for _, g := range got {
			found = found || g == w
		}
		if !found {
			return false
		}
	}
	return true
}

func (o *otlpCollector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" {
		http.Error(w, "want POST /v1/traces application/x-protobuf", http.StatusBadRequest)
		return
	}
	body, err := io.ReadAll(r.Body)
	var req collectortrace.ExportTraceServiceRequest
	if err == nil {
		err = proto.Unmarshal(body, &req)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	o.add(&req)
	b, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.Write(b)
}

// TestTracingOTLPExport runs the server with --otlp-endpoint at a loopback
// OTLP receiver, over gRPC and over HTTP: a traced send's spans arrive,
// decoded from OTLP protobuf, under the service name pushgate.
func TestTracingOTLPExport(t *testing.T) {
	for _, protocol := range []string{"grpc", "http"} {
		t.Run(protocol, func(t *testing.T) {
			col := &otlpCollector{spans: map[string][]string{}}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			if protocol == "grpc" {
				gs := grpc.NewServer()
				collectortrace.RegisterTraceServiceServer(gs, col)
				go gs.Serve(ln)
				t.Cleanup(gs.Stop)
			} else {
				hs := &http.Server{Handler: col}
				go hs.Serve(ln)
				t.Cleanup(func() { hs.Close() })
			}
			s := startServer(t, "--otlp-endpoint", "http://"+ln.Addr().String(), "--otlp-protocol", protocol, "--trace-sample-ratio", "0")
			c := dialEnv(t, s.wsURL("carol"))
			eventually(t, "carol online", func() bool { return s.online(t, "carol") == 1 })
			tpHeader, tid, _ := traceparent(4)
			ctx := metadata.AppendToOutgoingContext(context.Background(), "traceparent", tpHeader)
			if _, err := s.api.SendToUser(ctx, &pb.SendToUserRequest{UserId: "carol", Message: textMsg("x")}); err != nil {
				t.Fatal(err)
			}
			c.nextMessage()
			// The batch goes out within the exporter's 2s batch timeout.
			eventually(t, "the spans at the collector", func() bool {
				return col.has(tid, "pushgate/pushgate.v1.PushService/SendToUser", "pushgate/pushgate.engine.SendToUsers",
					"pushgate/pushgate.deliver", "pushgate/pushgate.write")
			})
		})
	}
}
