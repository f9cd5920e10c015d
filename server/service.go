// Package server is the gRPC face of pushgate: it validates requests, turns
// proto messages into gateway messages (encoded once, at the edge) and maps
// errors to gRPC status codes.
package server

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"pushgate/gateway"
	pb "pushgate/gen/pushgate/v1"
)

// Gateway is what the service needs from the push side: the engine
// (gateway.Engine implements it), whatever its kind.
type Gateway interface {
	SendToUsers(ctx context.Context, userIDs []string, p gateway.Push) (gateway.Sent, error)
	Broadcast(ctx context.Context, p gateway.Push, exclude []string) (gateway.Sent, error)
	Publish(ctx context.Context, topic string, p gateway.Push) (gateway.Sent, error)
	ListOnline(ctx context.Context, after string, limit int, match func(string) bool) (gateway.OnlinePage, error)
	Presence(ctx context.Context, userIDs []string) ([]gateway.OnlineUser, error)
	TopicPresence(ctx context.Context, topic, after string, limit int) (gateway.TopicPage, error)
	Disconnect(ctx context.Context, userID, reason string) (int, error)
	Receipt(ctx context.Context, id string, users []string, offset, limit int) (gateway.Receipt, error)
	Watch(kinds []gateway.EventKind, buffer int) *gateway.Watcher
	Unwatch(w *gateway.Watcher)
	EventsAfter(ctx context.Context, cursor string, limit int) ([]gateway.Event, error)
	EventReadPos(ctx context.Context, cursor string) (*gateway.ReadPos, error)
}

var _ Gateway = gateway.Engine(nil)

// Service implements pushgate.v1.PushService. Requests reach it validated
// (see Limits.UnaryInterceptor). Safe for concurrent use.
type Service struct {
	pb.UnimplementedPushServiceServer
	gw          Gateway
	log         *slog.Logger
	idemWindow  time.Duration
	watchBuffer int
	draining    chan struct{} // closed by Drain
	drainOnce   sync.Once

	watchers watchSlots
	metrics  serviceMetrics
	notifier Notifier // nil: offline notification not set up
}

type serviceMetrics struct {
	watchRefusedKey  prometheus.Counter
	watchRefusedNode prometheus.Counter
	replays          prometheus.Counter // WatchEvents calls with after_cursor
	replayed         prometheus.Counter // events they sent from the log
	outOfRange       prometheus.Counter // after_cursor refused: older than the log
	idemFull         prometheus.Counter
}

// watchSlots counts the open WatchEvents streams, by API caller.
type watchSlots struct {
	max, perKey int // immutable
	mu          sync.Mutex
	total       int            // guarded by mu
	byKey       map[string]int // guarded by mu
}

// take reserves a stream for caller, or returns the RESOURCE_EXHAUSTED
// error naming the limit it would go past.
func (w *watchSlots) take(caller string, m *serviceMetrics) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.byKey[caller] >= w.perKey:
		m.watchRefusedKey.Inc()
		return status.Errorf(codes.ResourceExhausted, "too many WatchEvents streams for this API key: at most %d per key on this node (--watch-max-per-key); close one first", w.perKey)
	case w.total >= w.max:
		m.watchRefusedNode.Inc()
		return status.Errorf(codes.ResourceExhausted, "too many WatchEvents streams: at most %d on this node (--watch-max); watch another node or retry later", w.max)
	}
	w.byKey[caller]++
	w.total++
	return nil
}

func (w *watchSlots) release(caller string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.byKey[caller]--; w.byKey[caller] <= 0 {
		delete(w.byKey, caller)
	}
	w.total--
}

// Options tune the service. The zero value of a field means its default.
type Options struct {
	// IdempotencyWindow is how long a call's response is remembered under
	// its idempotency key. Default 5m.
	IdempotencyWindow time.Duration
	// WatchBuffer is how many events a WatchEvents stream may fall behind
	// before it is ended with RESOURCE_EXHAUSTED. Default 1024.
	WatchBuffer int
	// MaxWatchers caps the WatchEvents streams open on this node, and
	// MaxWatchersPerKey those of one API key (all callers together without
	// keys): past them WatchEvents answers RESOURCE_EXHAUSTED. Defaults 256
	// and 32. So at most MaxWatchers × WatchBuffer events wait in buffers.
	MaxWatchers       int
	MaxWatchersPerKey int
	// Registerer receives the service's metrics; nil: not registered.
	Registerer prometheus.Registerer
	// Notifier keeps push targets and escalates messages (notify.go); nil:
	// the push target calls and Message.notification are refused.
	Notifier Notifier
}

// Defaults of Options (and of the flags that set them).
const (
	DefaultWatchBuffer       = 1024
	DefaultMaxWatchers       = 256
	DefaultMaxWatchersPerKey = 32
)

// NewService returns the PushService implementation backed by gw.
func NewService(gw Gateway, log *slog.Logger, opts Options) *Service {
	if opts.IdempotencyWindow <= 0 {
		opts.IdempotencyWindow = 5 * time.Minute
	}
	if opts.WatchBuffer <= 0 {
		opts.WatchBuffer = DefaultWatchBuffer
	}
	if opts.MaxWatchers <= 0 {
		opts.MaxWatchers = DefaultMaxWatchers
	}
	if opts.MaxWatchersPerKey <= 0 {
		opts.MaxWatchersPerKey = DefaultMaxWatchersPerKey
	}
	s := &Service{gw: gw, log: log, idemWindow: opts.IdempotencyWindow, watchBuffer: opts.WatchBuffer, draining: make(chan struct{}), notifier: opts.Notifier}
	s.watchers = watchSlots{max: opts.MaxWatchers, perKey: opts.MaxWatchersPerKey, byKey: make(map[string]int)}
	refused := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pushgate_watchers_refused_total",
		Help: "WatchEvents calls refused with RESOURCE_EXHAUSTED, by limit: per_key (--watch-max-per-key) or node (--watch-max).",
	}, []string{"limit"})
	s.metrics = serviceMetrics{
		watchRefusedKey:  refused.WithLabelValues("per_key"),
		watchRefusedNode: refused.WithLabelValues("node"),
		replays: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pushgate_event_replays_total",
			Help: "WatchEvents calls that resumed with after_cursor.",
		}),
		replayed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pushgate_events_replayed_total",
			Help: "Events WatchEvents streams read from the event log when resuming.",
		}),
		outOfRange: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pushgate_event_cursor_out_of_range_total",
			Help: "WatchEvents calls refused with OUT_OF_RANGE: their after_cursor is older than the event log kept (--event-log-max, --event-log-retention) or from a lost log.",
		}),
		idemFull: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pushgate_idempotency_full_total",
			Help: "Sends refused with RESOURCE_EXHAUSTED because the engine remembered --idempotency-max-entries idempotency results (memory engine).",
		}),
	}
	if opts.Registerer != nil {
		opts.Registerer.MustRegister(refused, s.metrics.idemFull, s.metrics.replays, s.metrics.replayed, s.metrics.outOfRange)
	}
	return s
}

// Drain ends the open WatchEvents streams with UNAVAILABLE (so that a
// graceful stop does not wait for them) and refuses new ones.
func (s *Service) Drain() { s.drainOnce.Do(func() { close(s.draining) }) }

// toPush converts a validated proto Message: the payload bytes are taken
// as they are and never re-encoded. The engine assigns the id.
func toPush(m *pb.Message) gateway.Push {
	out := gateway.Push{Type: m.GetType(), TTL: m.GetTtl().AsDuration()}
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

// push converts the request's message and attaches its idempotency key,
// scoped to the caller, with the hash of the method and the request (a key
// reused for another request within the window is refused).
func (s *Service) push(ctx context.Context, method string, m *pb.Message, req proto.Message) (gateway.Push, error) {
	p := toPush(m)
	if key := m.GetIdempotencyKey(); key != "" {
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(req)
		if err != nil {
			return p, s.internal(ctx, method, err)
		}
		p.Idempotency = gateway.Idempotency{
			Key:    Caller(ctx) + "\x00" + key,
			Hash:   sha256.Sum256(append([]byte(method+"\x00"), b...)),
			Window: s.idemWindow,
		}
	}
	return p, nil
}

// sendError maps a send's error to a status.
func (s *Service) sendError(ctx context.Context, method string, err error) error {
	if errors.Is(err, gateway.ErrIdempotencyConflict) {
		return invalid("message.idempotency_key", "already used for a different request within the idempotency window")
	}
	if errors.Is(err, gateway.ErrIdempotencyFull) {
		s.metrics.idemFull.Inc()
		return status.Error(codes.ResourceExhausted, err.Error()+" (--idempotency-max-entries)")
	}
	return s.internal(ctx, method, err)
}

// SendToUser implements PushService.SendToUser.
func (s *Service) SendToUser(ctx context.Context, req *pb.SendToUserRequest) (*pb.SendToUserResponse, error) {
	p, err := s.push(ctx, "SendToUser", req.GetMessage(), req)
	if err != nil {
		return nil, err
	}
	if err := s.canEscalate(req.GetMessage()); err != nil {
		return nil, err
	}
	sent, err := s.gw.SendToUsers(ctx, []string{req.GetUserId()}, p)
	if err != nil {
		return nil, s.sendError(ctx, "SendToUser", err)
	}
	s.escalate(ctx, req.GetMessage(), sent)
	d := sent.Users[0]
	return &pb.SendToUserResponse{
		MessageId:            sent.ID,
		Online:               d.Online,
		DeliveredConnections: int32(d.Delivered),
		Stored:               d.Stored,
	}, nil
}

// SendToUsers implements PushService.SendToUsers. A repeated id is
// delivered and reported once.
func (s *Service) SendToUsers(ctx context.Context, req *pb.SendToUsersRequest) (*pb.SendToUsersResponse, error) {
	p, err := s.push(ctx, "SendToUsers", req.GetMessage(), req)
	if err != nil {
		return nil, err
	}
	if err := s.canEscalate(req.GetMessage()); err != nil {
		return nil, err
	}
	ids := req.GetUserIds()
	seen := make(map[string]struct{}, len(ids))
	users := make([]string, 0, len(ids))
	for _, id := range ids {
		if _, dup := seen[id]; !dup {
			seen[id] = struct{}{}
			users = append(users, id)
		}
	}
	sent, err := s.gw.SendToUsers(ctx, users, p)
	if err != nil {
		return nil, s.sendError(ctx, "SendToUsers", err)
	}
	s.escalate(ctx, req.GetMessage(), sent)
	resp := &pb.SendToUsersResponse{MessageId: sent.ID, Results: make([]*pb.Delivery, len(sent.Users))}
	for i, d := range sent.Users {
		resp.Results[i] = &pb.Delivery{UserId: d.UserID, Online: d.Online, DeliveredConnections: int32(d.Delivered), Stored: d.Stored, MessageId: d.MessageID}
	}
	return resp, nil
}

// Broadcast implements PushService.Broadcast.
func (s *Service) Broadcast(ctx context.Context, req *pb.BroadcastRequest) (*pb.BroadcastResponse, error) {
	p, err := s.push(ctx, "Broadcast", req.GetMessage(), req)
	if err != nil {
		return nil, err
	}
	p.ExcludeConns = req.GetExcludeConnectionIds()
	sent, err := s.gw.Broadcast(ctx, p, req.GetExcludeUserIds())
	if err != nil {
		return nil, s.sendError(ctx, "Broadcast", err)
	}
	return &pb.BroadcastResponse{MessageId: sent.ID, DeliveredConnections: sent.Connections}, nil
}

// Publish implements PushService.Publish.
func (s *Service) Publish(ctx context.Context, req *pb.PublishRequest) (*pb.PublishResponse, error) {
	p, err := s.push(ctx, "Publish", req.GetMessage(), req)
	if err != nil {
		return nil, err
	}
	p.ExcludeConns = req.GetExcludeConnectionIds()
	sent, err := s.gw.Publish(ctx, req.GetTopic(), p)
	if err != nil {
		return nil, s.sendError(ctx, "Publish", err)
	}
	return &pb.PublishResponse{MessageId: sent.ID, DeliveredConnections: sent.Connections}, nil
}

// WatchEvents implements PushService.WatchEvents.
func (s *Service) WatchEvents(req *pb.WatchEventsRequest, stream grpc.ServerStreamingServer[pb.Event]) error {
	for i, k := range req.GetKinds() {
		if k <= pb.EventKind_EVENT_KIND_UNSPECIFIED || k > pb.EventKind_EVENT_KIND_TOPIC_LEAVE {
			return invalid(fmt.Sprintf("kinds[%d]", i), fmt.Sprintf("unknown event kind %d", k))
		}
	}
	select {
	case <-s.draining:
		return status.Error(codes.Unavailable, "server shutting down; watch another node or retry")
	default:
	}
	if err := validCursor(req.GetAfterCursor()); err != nil {
		return err
	}
	kinds := make([]gateway.EventKind, len(req.GetKinds()))
	for i, k := range req.GetKinds() {
		kinds[i] = gateway.EventKind(k) // the enums share their numbers
	}
	caller := Caller(stream.Context())
	if err := s.watchers.take(caller, &s.metrics); err != nil {
		return err
	}
	defer s.watchers.release(caller)
	w := s.gw.Watch(kinds, s.watchBuffer)
	defer s.gw.Unwatch(w)
	ctx := stream.Context()
	// Resuming: w is registered, so the events logged from now on reach
	// it; the replay reads the log up to its end, and the live events it
	// already covered are skipped. (With several logs a live-only stream
	// starts where each log ends now, and skips the live events up to
	// there the same way: read before the headers, so that every event
	// after them is the stream's.)
	pos, err := s.gw.EventReadPos(ctx, req.GetAfterCursor())
	if err != nil {
		return s.eventLogError(ctx, err)
	}
	// Headers go out now, so the caller knows the watch is in place before
	// the first event.
	if err := stream.SendHeader(nil); err != nil {
		return err
	}
	if req.GetAfterCursor() != "" {
		if err := s.replay(ctx, pos, eventFilter(kinds), w, stream); err != nil {
			return err
		}
	}
	for {
		select {
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-s.draining:
			return status.Error(codes.Unavailable, "server shutting down; watch another node or retry")
		case <-w.Lost:
			return s.lostError()
		case e := <-w.C:
			if pos.Covers(e) {
				continue
			}
			e.Cursor = pos.Advance(e)
			if err := stream.Send(toEvent(e)); err != nil {
				return err
			}
		}
	}
}

// EventProto is e as WatchEvents sends it (the webhook sink posts it too).
func EventProto(e gateway.Event) *pb.Event { return toEvent(e) }

// lostError ends a stream that was cut (Watcher.Lost).
func (s *Service) lostError() error {
	return status.Errorf(codes.ResourceExhausted, "watcher fell more than %d events behind (or the node's link to the engine was down); call WatchEvents again with after_cursor set to the last event's cursor", s.watchBuffer)
}

func toEvent(e gateway.Event) *pb.Event {
	out := &pb.Event{Time: timestamppb.New(e.Time), Cursor: e.Cursor}
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
	case gateway.EventMessageEscalated:
		me := &pb.MessageEscalated{UserId: e.UserID, MessageId: e.MessageID}
		if x := e.Escalation; x != nil {
			me.Channel, me.TargetId, me.Result, me.Detail = x.Channel, x.TargetID, x.Result, x.Detail
		}
		out.Event = &pb.Event_Escalated{Escalated: me}
	case gateway.EventTopicJoin:
		out.Event = &pb.Event_TopicJoin{TopicJoin: &pb.TopicJoin{UserId: e.UserID, Topic: e.Topic}}
	case gateway.EventTopicLeave:
		out.Event = &pb.Event_TopicLeave{TopicLeave: &pb.TopicLeave{UserId: e.UserID, Topic: e.Topic}}
	}
	return out
}

// GetTopicPresence implements PushService.GetTopicPresence: pages as
// ListOnline does (the token is the last user id looked at, so a user is
// never listed twice and none that stays subscribed is skipped).
func (s *Service) GetTopicPresence(ctx context.Context, req *pb.GetTopicPresenceRequest) (*pb.GetTopicPresenceResponse, error) {
	after, _, _ := decodePageToken(req.GetPageToken()) // validated by the interceptor
	size := req.GetPageSize()
	if size == 0 {
		size = DefaultPageSize
	}
	page, err := s.gw.TopicPresence(ctx, req.GetTopic(), after, int(size))
	if err != nil {
		return nil, s.internal(ctx, "GetTopicPresence", err)
	}
	resp := &pb.GetTopicPresenceResponse{
		Users:            make([]*pb.TopicSubscriber, len(page.Users)),
		TotalUsers:       page.TotalUsers,
		TotalConnections: page.TotalConnections,
	}
	for i, u := range page.Users {
		resp.Users[i] = &pb.TopicSubscriber{UserId: u.UserID, Connections: int32(u.Connections)}
	}
	if page.More && page.Next != "" {
		resp.NextPageToken = encodePageToken(page.Next, size)
	}
	return resp, nil
}

// ListOnline implements PushService.ListOnline.
func (s *Service) ListOnline(ctx context.Context, req *pb.ListOnlineRequest) (*pb.ListOnlineResponse, error) {
	after, _, _ := decodePageToken(req.GetPageToken()) // validated by the interceptor
	size := req.GetPageSize()
	if size == 0 {
		size = DefaultPageSize
	}
	page, err := s.gw.ListOnline(ctx, after, int(size), nil)
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

// internal maps a gateway error to a status in one place: the detail is
// logged, never returned.
func (s *Service) internal(ctx context.Context, method string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return status.FromContextError(err).Err()
	}
	s.log.ErrorContext(ctx, "call failed", "method", method, "err", err)
	if errors.Is(err, gateway.ErrUnavailable) {
		return status.Error(codes.Unavailable, "push engine unavailable, retry later")
	}
	return status.Error(codes.Internal, "internal error")
}
