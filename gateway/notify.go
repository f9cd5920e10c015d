package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"time"
)

// NotifyStore is the part of an engine that keeps what offline
// notification needs cluster-wide: each user's push targets, and the
// escalations waiting to fire. Both engines implement it (the memory
// engine for one node, the Redis engine for all); internal/notify decides
// what a target is and what an escalation carries, the store keeps bytes.
type NotifyStore interface {
	// AddTarget keeps data as userID's target id, replacing one with the
	// same id. A user with max targets already (others than id) gets
	// ErrTooManyTargets.
	AddTarget(ctx context.Context, userID, id string, data []byte, max int) error
	// RemoveTarget drops userID's target id, reporting whether it was there.
	RemoveTarget(ctx context.Context, userID, id string) (bool, error)
	// Targets returns userID's targets in id order.
	Targets(ctx context.Context, userID string) ([]StoredTarget, error)
	// ScheduleEscalation keeps e until it is claimed, and records it as
	// scheduled in the message's receipt. A store holding max
	// pending escalations already refuses with ErrTooManyEscalations.
	ScheduleEscalation(ctx context.Context, e Escalation, max int) error
	// ClaimEscalations takes up to limit escalations due at or before now,
	// oldest first. Each is taken once, cluster-wide, whichever node asks:
	// so one node fires it; the receipt records it fired or cancelled.
	// Those with IfUnacked whose message has left
	// the user's inbox (acknowledged, written to a raw client, or expired)
	// come back with Cancelled set: nothing is to be sent. A message
	// trimmed from the inbox for room was seen by nobody: the engine makes
	// its escalation due at the trim and drops IfUnacked, so it fires.
	ClaimEscalations(ctx context.Context, now time.Time, limit int) ([]ClaimedEscalation, error)
	// ClaimEscalation takes the escalation of userID and messageID if it
	// is due, as ClaimEscalations would (ok false: not there or not due).
	ClaimEscalation(ctx context.Context, userID, messageID string, now time.Time) (c ClaimedEscalation, ok bool, err error)
	// RecordEscalationResult adds r to the escalation of userID in
	// messageID's receipt (nothing when the receipt is not kept).
	RecordEscalationResult(ctx context.Context, userID, messageID string, r EscalationResult) error
	// PendingEscalations counts the escalations waiting (-1 when it
	// cannot be read now).
	PendingEscalations() int64
}

// PushRegistrar keeps the Web Push subscription an envelope client hands
// over ("push_subscribe", PROTOCOL.md) as one of its user's push targets.
// Errors: ErrTooManyTargets, ErrUnavailable (wrapped), or a validation
// error naming the field ("subscription.endpoint: ...").
type PushRegistrar interface {
	AddWebPush(ctx context.Context, userID string, subscription []byte) (targetID string, err error)
}

// SetPushRegistrar makes envelope clients able to register push
// subscriptions; without it "push_subscribe" is refused. Call it before
// the hub serves.
func (h *Hub) SetPushRegistrar(r PushRegistrar) { h.pushReg.Store(&r) }

// opPushSubscribe registers a Web Push subscription (PROTOCOL.md,
// "push_subscribe").
func (c *Conn) opPushSubscribe(op clientOp) {
	r := c.hub.pushReg.Load()
	if r == nil {
		c.send(errorFrame(op.Ref, "bad_request", "push subscriptions are not accepted by this server"))
		return
	}
	if len(op.Subscription) == 0 {
		c.send(errorFrame(op.Ref, "bad_request", "push_subscribe needs \"subscription\" (PushSubscription.toJSON())"))
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.hub.cfg.EngineTimeout)
	defer cancel()
	id, err := (*r).AddWebPush(ctx, c.userID, op.Subscription)
	switch {
	case errors.Is(err, ErrTooManyTargets):
		c.send(errorFrame(op.Ref, "too_many_targets", "this user has as many push targets as allowed; the backend may remove one (RemovePushTarget)"))
	case errors.Is(err, ErrUnavailable):
		c.send(errorFrame(op.Ref, "unavailable", "the subscription cannot be kept now; send it again"))
	case err != nil:
		c.send(errorFrame(op.Ref, "bad_request", err.Error()))
	default:
		c.send(pushSubscribedFrame(op.Ref, id))
	}
}

// pushSubscribedFrame builds {"op":"push_subscribed","ref":ref,"target_id":id}.
func pushSubscribedFrame(ref json.RawMessage, id string) frame {
	f := replyFrame("push_subscribed", ref, "")
	f.data = append(appendJSONString(append(f.data[:len(f.data)-1], `,"target_id":`...), id), '}')
	return f
}

// StoredTarget is one push target of a user, as NotifyStore keeps it.
type StoredTarget struct {
	ID   string
	Data []byte
}

// Escalation is a notification waiting to be sent when a message is not
// acknowledged in time.
type Escalation struct {
	UserID    string
	MessageID string
	Due       time.Time
	// IfUnacked: fire only if the message is still in the user's inbox.
	IfUnacked bool
	Data      []byte // what to send, opaque to the store
}

// ClaimedEscalation is an escalation taken from the store.
type ClaimedEscalation struct {
	Escalation
	Cancelled bool // the message was acknowledged (or left the inbox) first
}

// ErrTooManyTargets: the user has as many push targets as allowed.
var ErrTooManyTargets = errors.New("too many push targets for this user")

// ErrTooManyEscalations: the store holds as many pending escalations as
// allowed.
var ErrTooManyEscalations = errors.New("too many pending escalations")
