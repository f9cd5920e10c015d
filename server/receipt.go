package server

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"pushgate/gateway"
	pb "pushgate/gen/pushgate/v1"
)

// GetMessageStatus implements PushService.GetMessageStatus: a page of a
// message's receipt. A receipt that is not kept, or a user that was not a
// recipient, is NOT_FOUND with the reason the engine can tell.
func (s *Service) GetMessageStatus(ctx context.Context, req *pb.GetMessageStatusRequest) (*pb.GetMessageStatusResponse, error) {
	id, users := req.GetMessageId(), req.GetUserIds()
	size := int(req.GetPageSize())
	if size == 0 {
		size = DefaultPageSize
	}
	offset, _, _ := decodeReceiptToken(req.GetPageToken()) // validated by the interceptor
	r, err := s.gw.Receipt(ctx, id, users, offset, size)
	switch {
	case errors.Is(err, gateway.ErrNoReceipt), errors.Is(err, gateway.ErrNotRecipient):
		return nil, status.Error(codes.NotFound, err.Error())
	case err != nil:
		return nil, s.internal(ctx, "GetMessageStatus", err)
	}
	resp := &pb.GetMessageStatusResponse{
		MessageId:       r.MessageID,
		SendTime:        timestamppb.New(r.Time),
		ExpireTime:      ts(r.Expires),
		Recipients:      make([]*pb.RecipientStatus, len(r.Recipients)),
		TotalRecipients: int32(r.Total),
	}
	for i, rs := range r.Recipients {
		resp.Recipients[i] = &pb.RecipientStatus{
			UserId:               rs.UserID,
			State:                pb.DeliveryState(rs.State), // the same numbers
			Online:               rs.Online,
			Stored:               rs.Stored,
			DeliveredConnections: int32(rs.Delivered),
			DeliveredTime:        ts(rs.DeliveredTime),
			AckTime:              ts(rs.AckTime),
			AckConnectionId:      rs.AckConn,
			AckImplicit:          rs.AckImplicit,
			EndTime:              ts(rs.EndTime),
			Escalation:           escalationStatus(rs.Escalation),
		}
	}
	if len(users) == 0 && offset+len(r.Recipients) < r.Total {
		resp.NextPageToken = encodeReceiptToken(id, offset+len(r.Recipients))
	}
	return resp, nil
}

// ts is t as a Timestamp, nil for the zero time.
func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// messageStatus validates a GetMessageStatusRequest.
func (l *Limits) messageStatus(r *pb.GetMessageStatusRequest) error {
	if !gateway.ValidID(r.GetMessageId()) {
		return invalid("message_id", "must be a message id returned by SendToUser or SendToUsers (26 characters of Crockford base32)")
	}
	if err := l.userIDs("user_ids", r.GetUserIds(), false); err != nil {
		return err
	}
	if s := r.GetPageSize(); s < 0 || s > MaxPageSize {
		return invalid("page_size", fmt.Sprintf("must be between 1 and %d (0 means %d), got %d", MaxPageSize, DefaultPageSize, s))
	}
	tok := r.GetPageToken()
	if tok == "" {
		return nil
	}
	if len(r.GetUserIds()) > 0 {
		return invalid("page_token", "pages are for listing every recipient; leave it empty when user_ids is given")
	}
	switch _, id, err := decodeReceiptToken(tok); {
	case err != nil:
		return invalid("page_token", "not a token returned by GetMessageStatus")
	case id != r.GetMessageId():
		return invalid("page_token", fmt.Sprintf("belongs to message %s, not %s", id, r.GetMessageId()))
	}
	return nil
}

// Receipt page tokens: base64url of a version byte, the offset of the
// next recipient, the message id and a CRC-32 of all that, so that garbage,
// a hand-edited token or another message's token is refused.
const receiptTokenVersion = 1

func encodeReceiptToken(id string, offset int) string {
	b := make([]byte, 0, 1+4+len(id)+4)
	b = append(b, receiptTokenVersion)
	b = binary.BigEndian.AppendUint32(b, uint32(offset))
	b = append(b, id...)
	b = binary.BigEndian.AppendUint32(b, crc32.ChecksumIEEE(b))
	return base64.RawURLEncoding.EncodeToString(b)
}

// decodeReceiptToken returns the offset and message id a token carries
// (0, "" for the empty token).
func decodeReceiptToken(tok string) (offset int, id string, err error) {
	if tok == "" {
		return 0, "", nil
	}
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return 0, "", err
	}
	if len(b) != 1+4+26+4 || b[0] != receiptTokenVersion {
		return 0, "", errors.New("bad page token")
	}
	body, sum := b[:len(b)-4], binary.BigEndian.Uint32(b[len(b)-4:])
	if crc32.ChecksumIEEE(body) != sum {
		return 0, "", errors.New("bad page token")
	}
	off := binary.BigEndian.Uint32(body[1:5])
	if off > 1<<30 {
		return 0, "", errors.New("bad page token")
	}
	return int(off), string(body[5:]), nil
}
