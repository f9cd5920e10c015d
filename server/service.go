// Package server is the gRPC face of pushgate: it validates requests, turns
// proto messages into gateway messages (encoded once, at the edge) and maps
// errors to gRPC status codes.
package server

import (
	"context"
	"errors"
	"log/slog"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
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
}

var _ Gateway = (*gateway.Hub)(nil)

// Service implements pushgate.v1.PushService. Requests reach it validated
// (see Limits.UnaryInterceptor). Safe for concurrent use.
type Service struct {
	pb.UnimplementedPushServiceServer
	gw  Gateway
	log *slog.Logger
}

// NewService returns the PushService implementation backed by gw.
func NewService(gw Gateway, log *slog.Logger) *Service {
	return &Service{gw: gw, log: log}
}

// toMessage converts a validated proto Message: the payload bytes are taken
// as they are and never re-encoded.
func toMessage(m *pb.Message) *gateway.Message {
	out := &gateway.Message{ID: gateway.NewID(), Type: m.GetType()}
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
	m := toMessage(req.GetMessage())
	d, err := s.gw.SendToUser(ctx, req.GetUserId(), m)
	if err != nil {
		return nil, s.internal(ctx, "SendToUser", err)
	}
	return &pb.SendToUserResponse{
		MessageId:            m.ID,
		Online:               d.Online,
		DeliveredConnections: int32(d.Delivered),
	}, nil
}

// SendToUsers implements PushService.SendToUsers.
func (s *Service) SendToUsers(ctx context.Context, req *pb.SendToUsersRequest) (*pb.SendToUsersResponse, error) {
	m := toMessage(req.GetMessage())
	ds, err := s.gw.SendToUsers(ctx, req.GetUserIds(), m)
	if err != nil {
		return nil, s.internal(ctx, "SendToUsers", err)
	}
	resp := &pb.SendToUsersResponse{MessageId: m.ID, Results: make([]*pb.Delivery, len(ds))}
	for i, d := range ds {
		resp.Results[i] = &pb.Delivery{UserId: d.UserID, Online: d.Online, DeliveredConnections: int32(d.Delivered)}
	}
	return resp, nil
}

// Broadcast implements PushService.Broadcast.
func (s *Service) Broadcast(ctx context.Context, req *pb.BroadcastRequest) (*pb.BroadcastResponse, error) {
	m := toMessage(req.GetMessage())
	n, err := s.gw.Broadcast(ctx, m, req.GetExcludeUserIds())
	if err != nil {
		return nil, s.internal(ctx, "Broadcast", err)
	}
	return &pb.BroadcastResponse{MessageId: m.ID, DeliveredConnections: n}, nil
}

// ListOnline implements PushService.ListOnline.
func (s *Service) ListOnline(ctx context.Context, req *pb.ListOnlineRequest) (*pb.ListOnlineResponse, error) {
	after, _ := decodePageToken(req.GetPageToken()) // validated by the interceptor
	size := int(req.GetPageSize())
	if size == 0 {
		size = DefaultPageSize
	}
	page, err := s.gw.ListOnline(ctx, after, size)
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
		resp.NextPageToken = encodePageToken(page.Users[len(page.Users)-1].UserID)
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
var ErrUnavailable = errors.New("engine unavailable")

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
