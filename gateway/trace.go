package gateway

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// Tracing (docs/operations.md, "Tracing"). A message sent by a traced call
// carries the call's span context (Message.Trace, across nodes in its
// encoding), and only such a message costs anything here: the hub makes
// one deliver span per Deliver call (with its counts, never one per
// connection), a write span when a user's message is written to a
// connection, and an ack span when the connection acknowledges it. With
// tracing off (Config.Tracer nil) or for a message that is not sampled, the
// send path pays one nil check per Deliver and per write.

// tracerName is the instrumentation scope of the hub's spans.
const tracerName = "pushgate/gateway"

// maxTracedAcks caps the sampled messages a node remembers so that their
// acks join their traces; past it the oldest are forgotten (their acks are
// then not traced).
const maxTracedAcks = 4096

// Attribute keys of pushgate's spans.
const (
	AttrMessageID   = attribute.Key("pushgate.message.id")
	AttrUsers       = attribute.Key("pushgate.users")
	AttrConnections = attribute.Key("pushgate.connections")
	AttrTarget      = attribute.Key("pushgate.target")
	AttrConnID      = attribute.Key("pushgate.connection.id")
	AttrUserID      = attribute.Key("pushgate.user.id")
	AttrProtocol    = attribute.Key("pushgate.protocol")
	AttrImplicit    = attribute.Key("pushgate.ack.implicit")
	AttrMessages    = attribute.Key("pushgate.messages")
)

// SampledSpan returns the span context of ctx when it is sampled, for
// Message.Trace: engines call it when they make a message, so that a
// message whose call is not traced carries nothing.
func SampledSpan(ctx context.Context) trace.SpanContext {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsSampled() {
		return trace.SpanContext{}
	}
	return sc
}

// hubTracer makes the hub's spans; nil when tracing is off.
type hubTracer struct {
	tracer trace.Tracer

	mu     sync.Mutex
	traced map[string]trace.SpanContext // message id → its trace, for acks
	order  []string                     // ring of traced's keys, oldest at next
	next   int
}

func newHubTracer(tp trace.TracerProvider, reg prometheus.Registerer) *hubTracer {
	if tp == nil {
		return nil
	}
	t := &hubTracer{tracer: tp.Tracer(tracerName), traced: make(map[string]trace.SpanContext)}
	if reg != nil {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "pushgate_traced_messages",
			Help: "Sampled messages this node remembers so that their acks join their traces (at most 4096; with --otlp-endpoint).",
		}, func() float64 {
			t.mu.Lock()
			defer t.mu.Unlock()
			return float64(len(t.traced))
		}))
	}
	return t
}

// remember records that id belongs to the trace sc, forgetting the oldest
// past maxTracedAcks.
func (t *hubTracer) remember(id string, sc trace.SpanContext) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.traced[id]; ok {
		return
	}
	if len(t.order) < maxTracedAcks {
		t.order = append(t.order, id)
	} else {
		delete(t.traced, t.order[t.next])
		t.order[t.next] = id
		t.next = (t.next + 1) % maxTracedAcks
	}
	t.traced[id] = sc
}

func (t *hubTracer) lookup(id string) (trace.SpanContext, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	sc, ok := t.traced[id]
	return sc, ok
}

// startDeliver starts the deliver span of m, a child of the span that sent
// it.
func (t *hubTracer) startDeliver(m *Message, target string) trace.Span {
	ctx := trace.ContextWithRemoteSpanContext(context.Background(), m.Trace)
	_, span := t.tracer.Start(ctx, "pushgate.deliver", trace.WithAttributes(AttrMessageID.String(m.ID), AttrTarget.String(target)))
	return span
}

// Deliver implements Node (deliver, in a deliver span when m is traced).
func (h *Hub) Deliver(userIDs []string, m *Message) int {
	if h.tr == nil || !m.Trace.IsSampled() {
		return h.deliver(userIDs, m)
	}
	span := h.tr.startDeliver(m, "users")
	n := h.deliver(userIDs, m)
	span.SetAttributes(AttrUsers.Int(len(userIDs)), AttrConnections.Int(n))
	span.End()
	return n
}

// DeliverBroadcast implements Node (deliverBroadcast, in a deliver span
// when m is traced).
func (h *Hub) DeliverBroadcast(m *Message, exclude []string) int64 {
	if h.tr == nil || !m.Trace.IsSampled() {
		return h.deliverBroadcast(m, exclude)
	}
	span := h.tr.startDeliver(m, "broadcast")
	n := h.deliverBroadcast(m, exclude)
	span.SetAttributes(AttrConnections.Int64(n))
	span.End()
	return n
}

// DeliverTopic implements Node (deliverTopic, in a deliver span when m is
// traced).
func (h *Hub) DeliverTopic(m *Message) int64 {
	if h.tr == nil || !m.Trace.IsSampled() {
		return h.deliverTopic(m)
	}
	span := h.tr.startDeliver(m, "topic")
	n := h.deliverTopic(m)
	span.SetAttributes(AttrConnections.Int64(n))
	span.End()
	return n
}

// traced reports whether m gets write and ack spans: a traced message to
// users (broadcasts and topic messages have their deliver span's counts
// only: one span per connection of a fan-out would be one per client).
func traced(m *Message) bool {
	return m != nil && m.Trace.IsSampled() && !m.broadcast && m.Topic == ""
}

// writing is called by a write loop before it writes frames in one write:
// it remembers their traced messages before the client can acknowledge
// them, and returns the write's start for wrote.
func (t *hubTracer) writing(frames []frame) trace.SpanStartEventOption {
	for i := range frames {
		if m := frames[i].msg; traced(m) {
			t.remember(m.ID, m.Trace)
		}
	}
	return trace.WithTimestamp(time.Now())
}

// wrote is called by a write loop after frames were written to c in one
// write that started at start (writing): each traced message among them
// gets a write span.
func (t *hubTracer) wrote(c *Conn, frames []frame, start trace.SpanStartEventOption) {
	n := 0
	for i := range frames {
		if traced(frames[i].msg) {
			n++
		}
	}
	if n == 0 {
		return
	}
	proto := "raw"
	if c.envelope {
		proto = "envelope"
	}
	for i := range frames {
		m := frames[i].msg
		if !traced(m) {
			continue
		}
		ctx := trace.ContextWithRemoteSpanContext(context.Background(), m.Trace)
		_, span := t.tracer.Start(ctx, "pushgate.write", start, trace.WithAttributes(
			AttrMessageID.String(m.ID), AttrUserID.String(c.userID), AttrConnID.String(c.idString()),
			AttrProtocol.String(proto), AttrMessages.Int(len(frames))))
		span.End()
	}
}

// ack records ids acknowledged by c through record (the engine's Ack): an
// id this node wrote in a traced message gets an ack span in its trace,
// around the engine's call.
func (t *hubTracer) ack(ctx context.Context, c *Conn, ids []string, implicit bool, record func(context.Context) error) error {
	var spans []trace.Span
	for _, id := range ids {
		sc, ok := t.lookup(id)
		if !ok {
			continue
		}
		pctx := trace.ContextWithRemoteSpanContext(ctx, sc)
		sctx, span := t.tracer.Start(pctx, "pushgate.ack", trace.WithAttributes(
			AttrMessageID.String(id), AttrUserID.String(c.userID), AttrConnID.String(c.idString()), AttrImplicit.Bool(implicit)))
		if len(spans) == 0 {
			ctx = sctx // the engine's call (and its Redis spans) under the first
		}
		spans = append(spans, span)
	}
	err := record(ctx)
	for _, span := range spans {
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}
	return err
}
