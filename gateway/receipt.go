package gateway

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

// Receipts: what became of a message sent to users, per recipient (the
// GetMessageStatus API). An engine records a receipt when it sends
// (SendToUsers), and updates it where the message's fate changes: a
// connection joins and gets it from the inbox (delivered), a client
// acknowledges it (explicitly, or implicitly: written to a raw client, or
// resumed past), or the inbox trims it for room. Expiry needs no update: a
// stored message not acknowledged by its expiry is expired from then on.
//
// Receipts are kept for ttl + Config.ReceiptRetention (a stored message's
// final state stays readable for the retention after its ttl) and at most
// Config.ReceiptMax recipients in all; past that the oldest receipts are
// evicted. A receipt that is not kept is ErrNoReceipt, with the reason when
// the engine can tell it.

// DeliveryState is where a message stands for one recipient.
type DeliveryState uint8

const (
	// StatePending: kept in the inbox, not acknowledged yet.
	StatePending DeliveryState = iota + 1
	// StateSent: written to at least one connection, not stored, not
	// acknowledged.
	StateSent
	// StateAcked: acknowledged by a connection.
	StateAcked
	// StateExpired: its ttl passed before any connection acknowledged it.
	StateExpired
	// StateTrimmed: pushed out of a full inbox, or not stored because all
	// inboxes together were full.
	StateTrimmed
	// StateUndelivered: the user was offline and it was not stored.
	StateUndelivered
)

// RecipientStatus is a message's fate for one recipient.
type RecipientStatus struct {
	UserID        string
	State         DeliveryState
	Online        bool              // the user had a connection at send time
	Stored        bool              // it went into the user's inbox
	Delivered     int               // connections it was queued on (at send, and from the inbox at join)
	DeliveredTime time.Time         // the last of them; zero when none
	AckTime       time.Time         // zero unless acknowledged
	AckConn       string            // the connection that acknowledged it first
	AckImplicit   bool              // written to a raw client, or resumed past
	EndTime       time.Time         // when it expired or was trimmed; zero otherwise
	Escalation    *EscalationStatus // nil when none was asked for this recipient
}

// Receipt is one page of a message's receipt.
type Receipt struct {
	MessageID  string
	Time       time.Time // when it was sent
	Expires    time.Time // when its ttl ends; zero when it was not stored
	Total      int       // recipients in all
	Recipients []RecipientStatus
}

// ErrNoReceipt: the engine keeps no receipt for the id. The error's text
// says why, when the engine can tell.
var ErrNoReceipt = errors.New("no receipt")

// ErrNotRecipient: the message has a receipt, but the user was not one of
// its recipients.
var ErrNotRecipient = errors.New("not a recipient")

// IDTime returns the time encoded in a message id (ValidID).
func IDTime(id string) time.Time {
	var ms uint64
	for i := 0; i < 10 && i < len(id); i++ {
		ms = ms<<5 | uint64(strings.IndexByte(crockford, id[i]))
	}
	return time.UnixMilli(int64(ms))
}

// NoReceipt is the ErrNoReceipt for id at now: evictedThrough is the
// highest id evicted for room ("" none), retention Config.ReceiptRetention.
func NoReceipt(id string, now time.Time, evictedThrough string, retention time.Duration, max int) error {
	age := now.Sub(IDTime(id))
	switch {
	case age < -time.Minute:
		return fmt.Errorf("%w for message %s: no message has that id yet (its time is %v ahead)", ErrNoReceipt, id, (-age).Round(time.Second))
	case evictedThrough != "" && id <= evictedThrough && age <= retention:
		return fmt.Errorf("%w for message %s: evicted; receipts of at most %d recipients are kept (--receipt-max) and newer sends pushed it out", ErrNoReceipt, id, max)
	case evictedThrough != "" && id <= evictedThrough:
		return fmt.Errorf("%w for message %s: evicted (receipts of at most %d recipients are kept, --receipt-max), or older than the receipt retention (%v after the send or the ttl, --receipt-retention)", ErrNoReceipt, id, max, retention)
	case age > retention:
		return fmt.Errorf("%w for message %s: older than the receipt retention (%v after the send or the ttl, --receipt-retention)", ErrNoReceipt, id, retention)
	}
	return fmt.Errorf("%w for message %s: not sent by SendToUser or SendToUsers on this deployment (Broadcast and Publish ids have no receipt), or lost with the engine's data", ErrNoReceipt, id)
}

// ReceiptRetention is how long the receipt of a message with ttl is kept.
func ReceiptRetention(ttl, retention time.Duration) time.Duration { return ttl + retention }

// ReceiptState returns a recipient's state at now from what was recorded,
// and for an expired message its end time: acked and trimmed are final; a
// stored message not acknowledged by expires has expired.
func ReceiptState(acked, trimmed, stored bool, delivered int, expires, now time.Time) (DeliveryState, time.Time) {
	switch {
	case acked:
		return StateAcked, time.Time{}
	case trimmed:
		return StateTrimmed, time.Time{}
	case stored && !now.Before(expires):
		return StateExpired, expires
	case stored:
		return StatePending, time.Time{}
	case delivered > 0:
		return StateSent, time.Time{}
	}
	return StateUndelivered, time.Time{}
}

// receiptStore keeps the memory engine's receipts. Lock order: an engine
// stripe or the notify lock (memNotify.mu), then mu.
type receiptStore struct {
	max       int           // immutable: recipients kept in all
	retention time.Duration // immutable

	mu      sync.Mutex
	byID    map[string]*receipt // guarded by mu
	order   []*receipt          // guarded by mu: in the order recorded, from head
	head    int                 // guarded by mu
	records int                 // guarded by mu: recipients in byID
	evicted string              // guarded by mu: the highest id evicted for room
}

// receipt is one message's receipt in the memory engine.
type receipt struct {
	id      string
	sent    time.Time
	expires time.Time // ttl end; zero when not stored
	keep    time.Time // kept until then
	users   []string
	st      []recStatus
	idx     map[string]int32
}

// recStatus is what was recorded for one recipient.
type recStatus struct {
	online, stored, acked, implicit, trimmed bool
	delivered                                int32
	deliveredAt, ackAt, endAt                int64 // unix ns; 0: never
	ackConn                                  string
	esc                                      *EscalationStatus
}

func newReceiptStore(max int, retention time.Duration) *receiptStore {
	return &receiptStore{max: max, retention: retention, byID: make(map[string]*receipt)}
}

// record keeps the receipt of a send: one status per delivery.
func (s *receiptStore) record(id string, now time.Time, ttl time.Duration, ds []Delivery, full []bool) (evicted int) {
	r := &receipt{id: id, sent: now, keep: now.Add(ReceiptRetention(ttl, s.retention)),
		users: make([]string, len(ds)), st: make([]recStatus, len(ds)), idx: make(map[string]int32, len(ds))}
	if ttl > 0 {
		r.expires = now.Add(ttl)
	}
	for i, d := range ds {
		r.users[i] = d.UserID
		r.idx[d.UserID] = int32(i)
		st := &r.st[i]
		st.online, st.stored, st.delivered = d.Online, d.Stored, int32(d.Delivered)
		if d.Delivered > 0 {
			st.deliveredAt = now.UnixNano()
		}
		if full != nil && full[i] {
			st.trimmed, st.endAt = true, now.UnixNano()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.byID[id] = r
	s.order = append(s.order, r)
	s.records += len(ds)
	return s.dropLocked(now, r)
}

// dropLocked removes receipts from the front of the order that are past
// their time, and the oldest ones while more than max recipients are kept
// (never keep, the one just recorded). It returns how many it evicted.
func (s *receiptStore) dropLocked(now time.Time, keep *receipt) (evicted int) {
	for s.head < len(s.order) {
		r := s.order[s.head]
		if r == keep || (s.records <= s.max && now.Before(r.keep)) {
			break
		}
		if s.records > s.max && now.Before(r.keep) {
			evicted++
			s.evicted = max(s.evicted, r.id)
		}
		delete(s.byID, r.id)
		s.records -= len(r.users)
		s.order[s.head] = nil
		s.head++
	}
	if s.head > 1024 && s.head*2 > len(s.order) {
		s.order = append([]*receipt(nil), s.order[s.head:]...)
		s.head = 0
	}
	return evicted
}

// sweep drops the receipts past their time at the front of the order.
func (s *receiptStore) sweep(now time.Time) {
	s.mu.Lock()
	s.dropLocked(now, nil)
	s.mu.Unlock()
}

// status returns userID's status in message id, nil when there is none.
// Callers hold mu.
func (s *receiptStore) statusLocked(id, userID string, now time.Time) (*receipt, *recStatus) {
	r := s.byID[id]
	if r == nil || !now.Before(r.keep) {
		return nil, nil
	}
	i, ok := r.idx[userID]
	if !ok {
		return nil, nil
	}
	return r, &r.st[i]
}

// ack records that connID of userID acknowledged ids: the first ack wins,
// and a message trimmed or expired stays so.
func (s *receiptStore) ack(userID, connID string, ids []string, implicit bool, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		r, st := s.statusLocked(id, userID, now)
		if st == nil || st.acked || st.trimmed || st.stored && !now.Before(r.expires) {
			continue
		}
		st.acked, st.implicit, st.ackAt, st.ackConn = true, implicit, now.UnixNano(), connID
	}
}

// delivered records that msgs were queued on one more connection of userID.
func (s *receiptStore) delivered(userID string, msgs []*Message, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range msgs {
		if _, st := s.statusLocked(m.ID, userID, now); st != nil {
			st.delivered++
			st.deliveredAt = now.UnixNano()
		}
	}
}

// trimmed records that ids left userID's inbox for room.
func (s *receiptStore) trimmed(userID string, ids []string, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		if _, st := s.statusLocked(id, userID, now); st != nil && !st.acked && !st.trimmed {
			st.trimmed, st.endAt = true, now.UnixNano()
		}
	}
}

// kept returns the recipients kept in all.
func (s *receiptStore) kept() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return int64(s.records)
}

// get returns a page of message id's receipt: users (in that order), or
// when users is empty limit recipients from offset.
func (s *receiptStore) get(id string, users []string, offset, limit int, now time.Time) (Receipt, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.byID[id]
	if r == nil || !now.Before(r.keep) {
		return Receipt{}, NoReceipt(id, now, s.evicted, s.retention, s.max)
	}
	out := Receipt{MessageID: id, Time: r.sent, Expires: r.expires, Total: len(r.users)}
	pick := func(i int) RecipientStatus {
		st := &r.st[i]
		rs := RecipientStatus{UserID: r.users[i], Online: st.online, Stored: st.stored, Delivered: int(st.delivered),
			DeliveredTime: nsTime(st.deliveredAt), Escalation: escalationCopy(st.esc)}
		rs.State, rs.EndTime = ReceiptState(st.acked, st.trimmed, st.stored, int(st.delivered), r.expires, now)
		switch rs.State {
		case StateAcked:
			rs.AckTime, rs.AckConn, rs.AckImplicit = nsTime(st.ackAt), st.ackConn, st.implicit
		case StateTrimmed:
			rs.EndTime = nsTime(st.endAt)
		}
		return rs
	}
	if len(users) > 0 {
		out.Recipients = make([]RecipientStatus, len(users))
		for k, u := range users {
			i, ok := r.idx[u]
			if !ok {
				return Receipt{}, NotRecipient(id, k, u)
			}
			out.Recipients[k] = pick(int(i))
		}
		return out, nil
	}
	for i := offset; i < len(r.users) && i < offset+limit; i++ {
		out.Recipients = append(out.Recipients, pick(i))
	}
	return out, nil
}

// NotRecipient is the ErrNotRecipient for users[k] == u of message id.
func NotRecipient(id string, k int, u string) error {
	return fmt.Errorf("user_ids[%d]: %q %w of message %s", k, u, ErrNotRecipient, id)
}

// receiptTrims collects, during one send under the stripe locks, what the
// receipt needs besides the deliveries: which users' inboxes were full and
// which of their earlier messages were trimmed for room.
type receiptTrims struct {
	isFull []bool   // per user; nil when none
	users  []string // users with trimmed messages, parallel to ids
	ids    [][]string
}

func (t *receiptTrims) full(n, i int) {
	if t.isFull == nil {
		t.isFull = make([]bool, n)
	}
	t.isFull[i] = true
}

// add stores m in b and notes the entries it trimmed; it returns how many.
func (t *receiptTrims) add(u string, b *inbox, m *Message, now time.Time, cfg *Config) int {
	ids := b.addTrim(m, now, cfg.InboxMessages, cfg.InboxBytes, cfg.InboxMaxTTL, nil)
	if len(ids) > 0 {
		t.users = append(t.users, u)
		t.ids = append(t.ids, ids)
	}
	return len(ids)
}

// record keeps m's receipt in s and marks the trimmed messages; it
// returns how many receipts were evicted for room.
func (t *receiptTrims) record(s *receiptStore, m *Message, now time.Time, ds []Delivery) int {
	for i, u := range t.users {
		s.trimmed(u, t.ids[i], now)
	}
	return s.record(m.ID, now, m.TTL, ds, t.isFull)
}

// nsTime is the time of unix nanoseconds ns; 0 is the zero time.
func nsTime(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// ReceiptBounds returns c's receipt retention and cap, the defaults for
// zero values (a Config that did not go through NewHub).
func ReceiptBounds(c Config) (retention time.Duration, max int) {
	d := DefaultConfig()
	retention, max = c.ReceiptRetention, c.ReceiptMax
	if retention <= 0 {
		retention = d.ReceiptRetention
	}
	if max <= 0 {
		max = d.ReceiptMax
	}
	return retention, max
}
