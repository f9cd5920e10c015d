// Package server is the gRPC face of pushgate: it validates requests, turns
// proto messages into gateway messages (encoded once, at the edge) and maps
// errors to gRPC status codes.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"pushgate/gateway"
	pb "pushgate/gen/pushgate/v1"
)

// Gateway is what the service needs from the WebSocket side. *gateway.Hub
// implements it.
type Gateway interface {
	SendToUser(ctx context.Context, userID string, m *gateway.Message) (gateway.Delivery, error)
	SendToUsers(ctx context.Context, userIDs []string, m *gateway.Message) ([]gateway.Delivery, error)
	Broadcast(ctx context.Context, m *gateway.Message, exclude []string) (int64, error)
	ListOnline(ctx context.Context, after string, limit int) (gateway.OnlinePage, error)
	Presence(ctx context.Context, userIDs []string) ([]gateway.OnlineUser, error)
	Disconnect(ctx context.Context, userID, reason string) (int, error)
	Publish(ctx context.Context, topic string, m *gateway.Message) (int64, error)
	Watch(kinds []gateway.EventKind, buffer int) *gateway.Watcher
	Unwatch(w *gateway.Watcher)
}

var _ Gateway = (*gateway.Hub)(nil)

// SharedIdempotency is implemented by gateways that record idempotency keys
// themselves, atomically with the send and for every node (the Redis
// engine): the service passes the key in the context
// (gateway.WithIdempotency) instead of remembering it in this process.
type SharedIdempotency interface {
	SharedIdempotency()
}

// Service implements pushgate.v1.PushService. Requests reach it validated
// (see Limits.UnaryInterceptor). Safe for concurrent use.
type Service struct {
	pb.UnimplementedPushServiceServer
	gw          Gateway
	log         *slog.Logger
	idem        *idempotency
	watchBuffer int
	draining    chan struct{} // closed by Drain
	drainOnce   sync.Once
}

// Options tune the service. The zero value of a field means its default.
type Options struct {
	// IdempotencyWindow is how long a call's response is remembered under
	// its idempotency key. Default 5m.
	IdempotencyWindow time.Duration
	// WatchBuffer is how many events a WatchEvents stream may fall behind
	// before it is ended with RESOURCE_EXHAUSTED. Default 4096.
	WatchBuffer int
}

// NewService returns the PushService implementation backed by gw.
func NewService(gw Gateway, log *slog.Logger, opts Options) *Service {
	if opts.IdempotencyWindow <= 0 {
		opts.IdempotencyWindow = 5 * time.Minute
	}
	if opts.WatchBuffer <= 0 {
		opts.WatchBuffer = 4096
	}
	return &Service{gw: gw, log: log, idem: newIdempotency(opts.IdempotencyWindow), watchBuffer: opts.WatchBuffer, draining: make(chan struct{})}
}

// Drain ends the open WatchEvents streams with UNAVAILABLE (so that a
// graceful stop does not wait for them) and refuses new ones.
func (s *Service) Drain() { s.drainOnce.Do(func() { close(s.draining) }) }

// toMessage converts a validated proto Message: the payload bytes are taken
// as they are and never re-encoded. The hub assigns the id.
func toMessage(m *pb.Message) *gateway.Message {
	out := &gateway.Message{Type: m.GetType(), TTL: m.GetTtl().AsDuration()}
	switch p := m.GetPayload().(type) {
	case *pb.Message_Json:
		out.Kind, out.Data = gateway.KindJSON, []byte(p.Json)
	case *pb.Message_Text:
		out.Kind, out.Data = gateway.KindText, []byte(p.Text)
	case *pb.Message_Binary:
		out.Kind, out.Data = gateway.KindBinary, p.Binary
	}
	return out
}

// SendToUser implements PushService.SendToUser.
func (s *Service) SendToUser(ctx context.Context, req *pb.SendToUserRequest) (*pb.SendToUserResponse, error) {
	return once(s, ctx, "SendToUser", req.GetMessage(), req, func(ctx context.Context) (*pb.SendToUserResponse, error) {
		m := toMessage(req.GetMessage())
		d, err := s.gw.SendToUser(ctx, req.GetUserId(), m)
		if err != nil {
			return nil, err
		}
		return &pb.SendToUserResponse{
			MessageId:            m.ID,
			Online:               d.Online,
			DeliveredConnections: int32(d.Delivered),
			Stored:               d.Stored,
		}, nil
	})
}

// once runs fn under the message's idempotency key (if any) and maps its
// error to a status.
func once[R proto.Message](s *Service, ctx context.Context, method string, m *pb.Message, req proto.Message, fn func(context.Context) (R, error)) (R, error) {
	var zero R
	if key := m.GetIdempotencyKey(); key != "" {
		if _, ok := s.gw.(SharedIdempotency); ok {
			// The engine records the key with the send, in one step, for
			// every node; it answers a repeat with the first result.
			hash, err := requestHash(method, req)
			if err != nil {
				return zero, err
			}
			ctx = gateway.WithIdempotency(ctx, gateway.Idempotency{Key: Caller(ctx) + "\x00" + key, Hash: hash, Window: s.idem.window})
			r, err := fn(ctx)
			if errors.Is(err, gateway.ErrIdempotencyConflict) {
				return zero, invalid("message.idempotency_key", "already used for a different request within the idempotency window")
			}
			if err != nil {
				return zero, s.internal(ctx, method, err)
			}
			return r, nil
		}
	}
	resp, err := s.idem.do(ctx, method, m.GetIdempotencyKey(), req, func() (proto.Message, error) {
		r, err := fn(ctx)
		if err != nil {
			return nil, s.internal(ctx, method, err)
		}
		return r, nil
	})
	if err != nil {
		return zero, err
	}
	return resp.(R), nil
}

// SendToUsers implements PushService.SendToUsers.
func (s *Service) SendToUsers(ctx context.Context, req *pb.SendToUsersRequest) (*pb.SendToUsersResponse, error) {
	return once(s, ctx, "SendToUsers", req.GetMessage(), req, func(ctx context.Context) (*pb.SendToUsersResponse, error) {
		m := toMessage(req.GetMessage())
		ds, err := s.gw.SendToUsers(ctx, req.GetUserIds(), m)
		if err != nil {
			return nil, err
		}
		resp := &pb.SendToUsersResponse{MessageId: m.ID, Results: make([]*pb.Delivery, len(ds))}
		for i, d := range ds {
			resp.Results[i] = &pb.Delivery{UserId: d.UserID, Online: d.Online, DeliveredConnections: int32(d.Delivered), Stored: d.Stored}
		}
		return resp, nil
	})
}

// Broadcast implements PushService.Broadcast.
func (s *Service) Broadcast(ctx context.Context, req *pb.BroadcastRequest) (*pb.BroadcastResponse, error) {
	return once(s, ctx, "Broadcast", req.GetMessage(), req, func(ctx context.Context) (*pb.BroadcastResponse, error) {
		m := toMessage(req.GetMessage())
		n, err := s.gw.Broadcast(ctx, m, req.GetExcludeUserIds())
		if err != nil {
			return nil, err
		}
		return &pb.BroadcastResponse{MessageId: m.ID, DeliveredConnections: n}, nil
	})
}

// Publish implements PushService.Publish.
func (s *Service) Publish(ctx context.Context, req *pb.PublishRequest) (*pb.PublishResponse, error) {
	return once(s, ctx, "Publish", req.GetMessage(), req, func(ctx context.Context) (*pb.PublishResponse, error) {
		m := toMessage(req.GetMessage())
		n, err := s.gw.Publish(ctx, req.GetTopic(), m)
		if err != nil {
			return nil, err
		}
		return &pb.PublishResponse{MessageId: m.ID, DeliveredConnections: n}, nil
	})
}

// WatchEvents implements PushService.WatchEvents.
func (s *Service) WatchEvents(req *pb.WatchEventsRequest, stream grpc.ServerStreamingServer[pb.Event]) error {
	for i, k := range req.GetKinds() {
		if k <= pb.EventKind_EVENT_KIND_UNSPECIFIED || k > pb.EventKind_EVENT_KIND_CLIENT_MESSAGE {
			return invalid(fmt.Sprintf("kinds[%d]", i), fmt.Sprintf("unknown event kind %d", k))
		}
	}
	select {
	case <-s.draining:
		return status.Error(codes.Unavailable, "server shutting down; watch another node or retry")
	default:
	}
	kinds := make([]gateway.EventKind, len(req.GetKinds()))
	for i, k := range req.GetKinds() {
		kinds[i] = gateway.EventKind(k) // the enums share their numbers
	}
	w := s.gw.Watch(kinds, s.watchBuffer)
	defer s.gw.Unwatch(w)
	// Headers go out now, so the caller knows the watch is in place before
	// the first event.
	if err := stream.SendHeader(nil); err != nil {
		return err
	}
	ctx := stream.Context()
	for {
		select {
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-s.draining:
			return status.Error(codes.Unavailable, "server shutting down; watch another node or retry")
		case <-w.Lost:
			return status.Errorf(codes.ResourceExhausted, "watcher fell more than %d events behind; call WatchEvents again", s.watchBuffer)
		case e := <-w.C:
			if err := stream.Send(toEvent(e)); err != nil {
				return err
			}
		}
	}
}

func toEvent(e gateway.Event) *pb.Event {
	out := &pb.Event{Time: timestamppb.New(e.Time)}
	switch e.Kind {
	case gateway.EventUserOnline:
		out.Event = &pb.Event_UserOnline{UserOnline: &pb.UserOnline{UserId: e.UserID}}
	case gateway.EventUserOffline:
		out.Event = &pb.Event_UserOffline{UserOffline: &pb.UserOffline{UserId: e.UserID}}
	case gateway.EventMessageAcked:
		out.Event = &pb.Event_MessageAcked{MessageAcked: &pb.MessageAcked{
			UserId: e.UserID, MessageId: e.MessageID, ConnectionId: e.ConnID, Implicit: e.Implicit}}
	case gateway.EventClientMessage:
		cm := &pb.ClientMessage{UserId: e.UserID, ConnectionId: e.ConnID, Topic: e.Topic, Type: e.Type}
		switch e.DataKind {
		case gateway.KindJSON:
			cm.Payload = &pb.ClientMessage_Json{Json: string(e.Data)}
		case gateway.KindText:
			cm.Payload = &pb.ClientMessage_Text{Text: string(e.Data)}
		default:
			cm.Payload = &pb.ClientMessage_Binary{Binary: e.Data}
		}
		out.Event = &pb.Event_ClientMessage{ClientMessage: cm}
	}
	return out
}

// ListOnline implements PushService.ListOnline.
func (s *Service) ListOnline(ctx context.Context, req *pb.ListOnlineRequest) (*pb.ListOnlineResponse, error) {
	after, _, _ := decodePageToken(req.GetPageToken()) // validated by the interceptor
	size := req.GetPageSize()
	if size == 0 {
		size = DefaultPageSize
	}
	page, err := s.gw.ListOnline(ctx, after, int(size))
	if err != nil {
		return nil, s.internal(ctx, "ListOnline", err)
	}
	resp := &pb.ListOnlineResponse{
		Users:            make([]*pb.OnlineUser, len(page.Users)),
		TotalUsers:       page.TotalUsers,
		TotalConnections: page.TotalConnections,
	}
	for i, u := range page.Users {
		resp.Users[i] = onlineUser(u)
	}
	if page.More && len(page.Users) > 0 {
		resp.NextPageToken = encodePageToken(page.Users[len(page.Users)-1].UserID, size)
	}
	return resp, nil
}

// GetPresence implements PushService.GetPresence.
func (s *Service) GetPresence(ctx context.Context, req *pb.GetPresenceRequest) (*pb.GetPresenceResponse, error) {
	us, err := s.gw.Presence(ctx, req.GetUserIds())
	if err != nil {
		return nil, s.internal(ctx, "GetPresence", err)
	}
	resp := &pb.GetPresenceResponse{Users: make([]*pb.OnlineUser, len(us))}
	for i, u := range us {
		resp.Users[i] = onlineUser(u)
	}
	return resp, nil
}

// Disconnect implements PushService.Disconnect.
func (s *Service) Disconnect(ctx context.Context, req *pb.DisconnectRequest) (*pb.DisconnectResponse, error) {
	n, err := s.gw.Disconnect(ctx, req.GetUserId(), req.GetReason())
	if err != nil {
		return nil, s.internal(ctx, "Disconnect", err)
	}
	return &pb.DisconnectResponse{ClosedConnections: int32(n)}, nil
}

func onlineUser(u gateway.OnlineUser) *pb.OnlineUser {
	out := &pb.OnlineUser{UserId: u.UserID, Connections: int32(u.Connections)}
	if !u.Since.IsZero() {
		out.OnlineSince = timestamppb.New(u.Since)
	}
	return out
}

// ErrUnavailable marks gateway errors that mean the engine cannot be reached;
// they become UNAVAILABLE.
var ErrUnavailable = gateway.ErrUnavailable

// internal maps a gateway error to a status in one place: the detail is
// logged, never returned.
func (s *Service) internal(ctx context.Context, method string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return status.FromContextError(err).Err()
	}
	s.log.ErrorContext(ctx, "call failed", "method", method, "err", err)
	if errors.Is(err, ErrUnavailable) {
		return status.Error(codes.Unavailable, "push engine unavailable, retry later")
	}
	return status.Error(codes.Internal, "internal error")
}
