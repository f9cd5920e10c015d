package server

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"time"
	"unicode/utf8"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"pushgate/gateway"
	pb "pushgate/gen/pushgate/v1"
)

// Page sizes for ListOnline and GetTopicPresence.
const (
	DefaultPageSize = 100
	MaxPageSize     = 1000
)

// Limits bound what a request may carry. The zero value of a field means its
// default.
type Limits struct {
	// MaxUserIDBytes is the longest user id. Default 128.
	MaxUserIDBytes int
	// MaxPayloadBytes is the largest message payload. Default 64 KiB.
	MaxPayloadBytes int
	// MaxBatchUsers is the most user ids in one SendToUsers, GetPresence or
	// Broadcast exclude list. Default 10,000.
	MaxBatchUsers int
	// MaxTTL is the longest message ttl. Default 24h.
	MaxTTL time.Duration
	// TopicHistory lists the topics that keep history (--topic-history):
	// a Publish to one may carry a ttl up to its rule's.
	TopicHistory []gateway.TopicHistoryRule
}

func (l *Limits) setDefaults() {
	if l.MaxUserIDBytes <= 0 {
		l.MaxUserIDBytes = 128
	}
	if l.MaxPayloadBytes <= 0 {
		l.MaxPayloadBytes = 64 << 10
	}
	if l.MaxBatchUsers <= 0 {
		l.MaxBatchUsers = 10000
	}
	if l.MaxTTL <= 0 {
		l.MaxTTL = 24 * time.Hour
	}
}

const (
	maxTypeBytes   = 64
	maxReasonBytes = 100
	maxKeyBytes    = 128
)

// UnaryInterceptor validates every PushService request before its handler
// runs. A bad request gets INVALID_ARGUMENT whose message starts with the
// field's name, plus a google.rpc.BadRequest detail naming the field.
func (l Limits) UnaryInterceptor() grpc.UnaryServerInterceptor {
	l.setDefaults()
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if err := l.validate(req); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

func (l *Limits) validate(req any) error {
	switch r := req.(type) {
	case *pb.SendToUserRequest:
		if err := l.userID("user_id", r.GetUserId()); err != nil {
			return err
		}
		return l.message("message", r.GetMessage(), true, true)
	case *pb.SendToUsersRequest:
		if err := l.userIDs("user_ids", r.GetUserIds(), true); err != nil {
			return err
		}
		return l.message("message", r.GetMessage(), true, true)
	case *pb.BroadcastRequest:
		if err := l.message("message", r.GetMessage(), false, false); err != nil {
			return err
		}
		if err := l.userIDs("exclude_user_ids", r.GetExcludeUserIds(), false); err != nil {
			return err
		}
		return l.connIDs("exclude_connection_ids", r.GetExcludeConnectionIds())
	case *pb.PublishRequest:
		if err := gateway.ValidTopic(r.GetTopic()); err != nil {
			return invalid("topic", err.Error())
		}
		rule, history := gateway.HistoryRule(l.TopicHistory, r.GetTopic())
		if err := l.message("message", r.GetMessage(), false, history); err != nil {
			return err
		}
		if d := r.GetMessage().GetTtl().AsDuration(); history && d > rule.TTL {
			return invalid("message.ttl", fmt.Sprintf("at most %v: topic %s keeps messages that long (--topic-history %s)", rule.TTL, r.GetTopic(), rule))
		}
		return l.connIDs("exclude_connection_ids", r.GetExcludeConnectionIds())
	case *pb.ListOnlineRequest:
		return page(r.GetPageSize(), r.GetPageToken(), "ListOnline")
	case *pb.GetTopicPresenceRequest:
		if err := gateway.ValidTopic(r.GetTopic()); err != nil {
			return invalid("topic", err.Error())
		}
		return page(r.GetPageSize(), r.GetPageToken(), "GetTopicPresence")
	case *pb.GetPresenceRequest:
		return l.userIDs("user_ids", r.GetUserIds(), true)
	case *pb.GetMessageStatusRequest:
		return l.messageStatus(r)
	case *pb.AddPushTargetRequest:
		if err := l.userID("user_id", r.GetUserId()); err != nil {
			return err
		}
		_, err := toTarget(r.GetTarget())
		return err
	case *pb.RemovePushTargetRequest:
		if err := l.userID("user_id", r.GetUserId()); err != nil {
			return err
		}
		if n := len(r.GetTargetId()); n == 0 || n > maxTargetIDBytes {
			return invalid("target_id", fmt.Sprintf("must be 1 to %d bytes (a PushTarget.id)", maxTargetIDBytes))
		}
	case *pb.ListPushTargetsRequest:
		return l.userID("user_id", r.GetUserId())
	case *pb.DisconnectRequest:
		if err := l.userID("user_id", r.GetUserId()); err != nil {
			return err
		}
		if n := len(r.GetReason()); n > maxReasonBytes || !utf8.ValidString(r.GetReason()) {
			return invalid("reason", fmt.Sprintf("must be at most %d bytes of UTF-8, got %d bytes", maxReasonBytes, n))
		}
	}
	return nil
}

// page checks a listing's page_size and page_token.
func page(size int32, token, method string) error {
	if size < 0 || size > MaxPageSize {
		return invalid("page_size", fmt.Sprintf("must be between 1 and %d (0 means %d), got %d", MaxPageSize, DefaultPageSize, size))
	}
	if size == 0 {
		size = DefaultPageSize
	}
	switch _, tokSize, err := decodePageToken(token); {
	case err != nil:
		return invalid("page_token", "not a token returned by "+method)
	case tokSize != 0 && tokSize != size:
		return invalid("page_token", fmt.Sprintf("belongs to a listing with page_size %d, not %d; keep the page size while paging", tokSize, size))
	}
	return nil
}

func (l *Limits) userID(field, id string) error {
	if err := gateway.ValidUserID(id, l.MaxUserIDBytes); err != nil {
		return invalid(field, err.Error())
	}
	return nil
}

func (l *Limits) userIDs(field string, ids []string, required bool) error {
	switch {
	case required && len(ids) == 0:
		return invalid(field, "must not be empty")
	case len(ids) > l.MaxBatchUsers:
		return invalid(field, fmt.Sprintf("at most %d ids per call, got %d", l.MaxBatchUsers, len(ids)))
	}
	for i, id := range ids {
		if err := l.userID(fmt.Sprintf("%s[%d]", field, i), id); err != nil {
			return err
		}
	}
	return nil
}

// maxConnIDBytes is the longest connection id a request may name.
const maxConnIDBytes = 64

// connIDs validates a list of connection ids (a hello's conn_id: letters,
// digits and "-").
func (l *Limits) connIDs(field string, ids []string) error {
	if len(ids) > l.MaxBatchUsers {
		return invalid(field, fmt.Sprintf("at most %d ids per call, got %d", l.MaxBatchUsers, len(ids)))
	}
	for i, id := range ids {
		if len(id) == 0 || len(id) > maxConnIDBytes {
			return invalid(fmt.Sprintf("%s[%d]", field, i), fmt.Sprintf("must be 1 to %d bytes (a hello's conn_id), got %d", maxConnIDBytes, len(id)))
		}
		for j := 0; j < len(id); j++ {
			if c := id[j]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return invalid(fmt.Sprintf("%s[%d]", field, i), fmt.Sprintf("%q is not a connection id (a hello's conn_id: letters, digits and \"-\")", id))
			}
		}
	}
	return nil
}

// message validates a Message; storable says whether it may escalate (a
// send to users), keeps whether a ttl is allowed (it is kept: a send to
// users, or a Publish to a topic with history).
func (l *Limits) message(field string, m *pb.Message, storable, keeps bool) error {
	if m == nil {
		return invalid(field, "is required")
	}
	if k := m.GetIdempotencyKey(); len(k) > maxKeyBytes || !utf8.ValidString(k) {
		return invalid(field+".idempotency_key", fmt.Sprintf("must be at most %d bytes of UTF-8", maxKeyBytes))
	}
	if ttl := m.GetTtl(); ttl != nil {
		if err := ttl.CheckValid(); err != nil {
			return invalid(field+".ttl", err.Error())
		}
		switch d := ttl.AsDuration(); {
		case d < 0:
			return invalid(field+".ttl", "must not be negative")
		case d > 0 && !keeps:
			return invalid(field+".ttl", "Broadcast and Publish are live only, except Publish to a topic with history (--topic-history); use SendToUser or SendToUsers to keep a message")
		case d > l.MaxTTL:
			return invalid(field+".ttl", fmt.Sprintf("at most %v", l.MaxTTL))
		}
	}
	if t := m.GetType(); len(t) > maxTypeBytes || !utf8.ValidString(t) {
		return invalid(field+".type", fmt.Sprintf("must be at most %d bytes of UTF-8", maxTypeBytes))
	}
	var name string
	var size int
	switch p := m.GetPayload().(type) {
	case *pb.Message_Json:
		name, size = "json", len(p.Json)
		if size <= l.MaxPayloadBytes && !json.Valid([]byte(p.Json)) {
			return invalid(field+".json", "is not valid JSON")
		}
	case *pb.Message_Text:
		name, size = "text", len(p.Text)
	case *pb.Message_Binary:
		name, size = "binary", len(p.Binary)
	default:
		return invalid(field+".payload", "one of json, text or binary is required")
	}
	if size > l.MaxPayloadBytes {
		return invalid(field+"."+name, fmt.Sprintf("payload is %d bytes, the limit is %d", size, l.MaxPayloadBytes))
	}
	return l.escalation(field, m, storable)
}

// invalid is the one way a validation failure leaves the server.
func invalid(field, desc string) error {
	st := status.New(codes.InvalidArgument, field+": "+desc)
	if d, err := st.WithDetails(&errdetails.BadRequest{
		FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: field, Description: desc}},
	}); err == nil {
		st = d
	}
	return st.Err()
}

// Page tokens are opaque to callers: base64url of a version byte, the page
// size of the listing, the last user id of the previous page, and a CRC-32
// of all that, so that garbage, a hand-edited token or a token of another
// listing is refused instead of silently starting elsewhere.
const pageTokenVersion = 2

func encodePageToken(lastUserID string, pageSize int32) string {
	b := make([]byte, 0, 1+2+len(lastUserID)+4)
	b = append(b, pageTokenVersion)
	b = binary.BigEndian.AppendUint16(b, uint16(pageSize))
	b = append(b, lastUserID...)
	b = binary.BigEndian.AppendUint32(b, crc32.ChecksumIEEE(b))
	return base64.RawURLEncoding.EncodeToString(b)
}

// decodePageToken returns the last user id and page size a token carries
// ("", 0 for the empty token).
func decodePageToken(tok string) (string, int32, error) {
	if tok == "" {
		return "", 0, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return "", 0, err
	}
	if len(b) < 1+2+1+4 || b[0] != pageTokenVersion {
		return "", 0, fmt.Errorf("bad page token")
	}
	body, sum := b[:len(b)-4], binary.BigEndian.Uint32(b[len(b)-4:])
	if crc32.ChecksumIEEE(body) != sum {
		return "", 0, fmt.Errorf("bad page token")
	}
	return string(body[3:]), int32(binary.BigEndian.Uint16(body[1:3])), nil
}
