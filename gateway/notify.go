package gateway

import (
	"context"
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
	// ScheduleEscalation keeps e until it is claimed. A store holding max
	// pending escalations already refuses with ErrTooManyEscalations.
	ScheduleEscalation(ctx context.Context, e Escalation, max int) error
	// ClaimEscalations takes up to limit escalations due at or before now,
	// oldest first. Each is taken once, cluster-wide, whichever node asks:
	// so one node fires it. Those with IfUnacked whose message has left
	// the user's inbox (acknowledged, written to a raw client, expired or
	// trimmed) come back with Cancelled set: nothing is to be sent.
	ClaimEscalations(ctx context.Context, now time.Time, limit int) ([]ClaimedEscalation, error)
	// ClaimEscalation takes the escalation of userID and messageID if it
	// is due, as ClaimEscalations would (ok false: not there or not due).
	ClaimEscalation(ctx context.Context, userID, messageID string, now time.Time) (c ClaimedEscalation, ok bool, err error)
	// PendingEscalations counts the escalations waiting (-1 when it
	// cannot be read now).
	PendingEscalations() int64
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
