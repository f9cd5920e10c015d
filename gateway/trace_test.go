package gateway

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

func sampledContext(flags trace.TraceFlags) (context.Context, trace.SpanContext) {
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
		SpanID:     trace.SpanID{0xa, 0xb, 0xc, 0xd, 0xe, 0xf, 1, 2},
		TraceFlags: flags,
	})
	return trace.ContextWithSpanContext(context.Background(), sc), sc
}

// TestMessageTraceEncoding: a message of a sampled call carries its trace
// id, span id and flags between nodes (version 1+4); one of an unsampled
// call is encoded exactly as before (version 1) and decodes with no trace; a
// traced encoding cut short is refused.
func TestMessageTraceEncoding(t *testing.T) {
	p := Push{Type: "order.paid", Kind: KindJSON, Data: []byte(`{"a":1}`), TTL: time.Minute}
	ctx, sc := sampledContext(trace.FlagsSampled)
	m := p.NewMessage(NewID(), time.Unix(0, 1234), "", false)
	m.Trace = SampledSpan(ctx)
	b := EncodeMessage(m)
	if b[0] != msgVersion+msgTraced {
		t.Fatalf("version %d, want %d", b[0], msgVersion+msgTraced)
	}
	got, err := DecodeMessage(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Trace.TraceID() != sc.TraceID() || got.Trace.SpanID() != sc.SpanID() || !got.Trace.IsSampled() || !got.Trace.IsRemote() {
		t.Errorf("decoded trace %v, want %v (remote)", got.Trace, sc)
	}
	if got.ID != m.ID || got.Type != m.Type || !bytes.Equal(got.Data, m.Data) || got.TTL != m.TTL || !got.stored {
		t.Errorf("decoded %+v, want %+v", got, m)
	}
	if _, err := DecodeMessage(b[:45+traceBytes-1]); err == nil {
		t.Error("a traced encoding cut inside its trace was accepted")
	}

	unsampled, _ := sampledContext(0)
	m2 := p.NewMessage(m.ID, m.Time, "", false)
	m2.Trace = SampledSpan(unsampled)
	if m2.Trace.IsValid() {
		t.Fatalf("SampledSpan of an unsampled context = %v, want none", m2.Trace)
	}
	plain := EncodeMessage(m2)
	if plain[0] != msgVersion || len(plain) != len(b)-traceBytes {
		t.Errorf("untraced encoding: version %d, %d bytes; want %d, %d", plain[0], len(plain), msgVersion, len(b)-traceBytes)
	}
	got, err = DecodeMessage(plain)
	if err != nil || got.Trace.IsValid() {
		t.Errorf("untraced decode: %v, trace %v", err, got.Trace)
	}
}

// TestMessageTracedWithExtras: a traced message with excluded connections
// and a sender (version 1+2+4) carries all of them.
func TestMessageTracedWithExtras(t *testing.T) {
	p := Push{Type: "todo", Kind: KindText, Data: []byte("x")}
	ctx, sc := sampledContext(trace.FlagsSampled)
	m := p.NewMessage(NewID(), time.Unix(0, 1234), "todo:7", false)
	m.Trace = SampledSpan(ctx)
	m.Exclude, m.From = []string{"c3-AAAA"}, "bob"
	b := EncodeMessage(m)
	if b[0] != msgVersion+msgExtras+msgTraced {
		t.Fatalf("version %d, want %d", b[0], msgVersion+msgExtras+msgTraced)
	}
	got, err := DecodeMessage(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Trace.TraceID() != sc.TraceID() || got.Trace.SpanID() != sc.SpanID() || len(got.Exclude) != 1 || got.Exclude[0] != "c3-AAAA" ||
		got.From != "bob" || got.Topic != "todo:7" || string(got.Data) != "x" {
		t.Fatalf("round trip: %+v", got)
	}
}

// TestTracedAcksBounded: a node remembers at most maxTracedAcks traced
// messages for their acks, forgetting the oldest first, and its gauge says
// how many.
func TestTracedAcksBounded(t *testing.T) {
	reg := prometheus.NewRegistry()
	tr := newHubTracer(sdktrace.NewTracerProvider(), reg)
	_, sc := sampledContext(trace.FlagsSampled)
	for i := range maxTracedAcks + 10 {
		tr.remember(fmt.Sprintf("m%05d", i), sc)
	}
	tr.remember("m04100", sc) // again: no second entry
	for i, want := range map[int]bool{0: false, 9: false, 10: true, maxTracedAcks + 9: true} {
		if _, ok := tr.lookup(fmt.Sprintf("m%05d", i)); ok != want {
			t.Errorf("m%05d remembered = %v, want %v", i, ok, want)
		}
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(mfs) != 1 || mfs[0].GetName() != "pushgate_traced_messages" || mfs[0].Metric[0].GetGauge().GetValue() != maxTracedAcks {
		t.Errorf("gauge = %v, want pushgate_traced_messages %d", mfs, maxTracedAcks)
	}
	if newHubTracer(nil, reg) != nil {
		t.Error("no tracer provider: the hub should have no tracer")
	}
}

// BenchmarkSendToUserTraced is BenchmarkSendToUser with tracing on (spans
// made and dropped: no exporter): "unsampled", a call whose context is not
// sampled, pays what every untraced message pays when tracing is on;
// "sampled" pays for the deliver, write and ack spans. Compare with
// BenchmarkSendToUser (tracing off).
func BenchmarkSendToUserTraced(b *testing.B) {
	for _, sampled := range []bool{false, true} {
		name := map[bool]string{false: "unsampled", true: "sampled"}[sampled]
		b.Run(name, func(b *testing.B) {
			cfg := benchConfig()
			cfg.Tracer = sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()))
			var flags trace.TraceFlags
			if sampled {
				flags = trace.FlagsSampled
			}
			ctx, _ := sampledContext(flags)
			benchSendToUser(b, cfg, ctx)
		})
	}
}
