package server

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"pushgate/gateway"
)

// TracedGateway returns gw with a span around each of its calls made in a
// traced call (the gRPC span otelgrpc starts, whose parent is the caller's
// traceparent): "pushgate.engine.<Method>", a child of the call's span and
// the parent of the engine's own (the Redis engine's commands) and of the
// messages it sends (gateway.Message.Trace). A call whose context holds no
// span (the admin page's) gets none.
func TracedGateway(gw Gateway, tp trace.TracerProvider) Gateway {
	return &tracedGateway{Gateway: gw, tracer: tp.Tracer("pushgate/engine")}
}

type tracedGateway struct {
	Gateway
	tracer trace.Tracer
}

// start starts the span of method when ctx is traced; end ends it.
func (g *tracedGateway) start(ctx context.Context, method string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return ctx, nil
	}
	return g.tracer.Start(ctx, "pushgate.engine."+method, trace.WithAttributes(attrs...))
}

func end(span trace.Span, err error, attrs ...attribute.KeyValue) {
	if span == nil {
		return
	}
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.SetAttributes(attrs...)
	span.End()
}

func sentAttrs(s gateway.Sent) []attribute.KeyValue {
	a := []attribute.KeyValue{gateway.AttrMessageID.String(s.ID), attribute.Bool("pushgate.replayed", s.Replayed)}
	if s.Users != nil {
		n := 0
		for _, d := range s.Users {
			n += d.Delivered
		}
		return append(a, gateway.AttrConnections.Int(n))
	}
	return append(a, gateway.AttrConnections.Int64(s.Connections))
}

func (g *tracedGateway) SendToUsers(ctx context.Context, userIDs []string, p gateway.Push) (gateway.Sent, error) {
	ctx, span := g.start(ctx, "SendToUsers", gateway.AttrUsers.Int(len(userIDs)))
	s, err := g.Gateway.SendToUsers(ctx, userIDs, p)
	end(span, err, sentAttrs(s)...)
	return s, err
}

func (g *tracedGateway) Broadcast(ctx context.Context, p gateway.Push, exclude []string) (gateway.Sent, error) {
	ctx, span := g.start(ctx, "Broadcast")
	s, err := g.Gateway.Broadcast(ctx, p, exclude)
	end(span, err, sentAttrs(s)...)
	return s, err
}

func (g *tracedGateway) Publish(ctx context.Context, topic string, p gateway.Push) (gateway.Sent, error) {
	ctx, span := g.start(ctx, "Publish", attribute.String("pushgate.topic", topic))
	s, err := g.Gateway.Publish(ctx, topic, p)
	end(span, err, sentAttrs(s)...)
	return s, err
}

func (g *tracedGateway) ListOnline(ctx context.Context, after string, limit int, match func(string) bool) (gateway.OnlinePage, error) {
	ctx, span := g.start(ctx, "ListOnline")
	page, err := g.Gateway.ListOnline(ctx, after, limit, match)
	end(span, err, gateway.AttrUsers.Int(len(page.Users)))
	return page, err
}

func (g *tracedGateway) TopicPresence(ctx context.Context, topic, after string, limit int) (gateway.TopicPage, error) {
	ctx, span := g.start(ctx, "TopicPresence", attribute.String("pushgate.topic", topic))
	page, err := g.Gateway.TopicPresence(ctx, topic, after, limit)
	end(span, err, gateway.AttrUsers.Int(len(page.Users)))
	return page, err
}

func (g *tracedGateway) Presence(ctx context.Context, userIDs []string) ([]gateway.OnlineUser, error) {
	ctx, span := g.start(ctx, "Presence", gateway.AttrUsers.Int(len(userIDs)))
	u, err := g.Gateway.Presence(ctx, userIDs)
	end(span, err)
	return u, err
}

func (g *tracedGateway) Disconnect(ctx context.Context, userID, reason string) (int, error) {
	ctx, span := g.start(ctx, "Disconnect")
	n, err := g.Gateway.Disconnect(ctx, userID, reason)
	end(span, err, gateway.AttrConnections.Int(n))
	return n, err
}

func (g *tracedGateway) Receipt(ctx context.Context, id string, users []string, offset, limit int) (gateway.Receipt, error) {
	ctx, span := g.start(ctx, "Receipt", gateway.AttrMessageID.String(id))
	r, err := g.Gateway.Receipt(ctx, id, users, offset, limit)
	end(span, err)
	return r, err
}

func (g *tracedGateway) EventsAfter(ctx context.Context, cursor string, limit int) ([]gateway.Event, error) {
	ctx, span := g.start(ctx, "EventsAfter")
	ev, err := g.Gateway.EventsAfter(ctx, cursor, limit)
	end(span, err, attribute.Int("pushgate.events", len(ev)))
	return ev, err
}
