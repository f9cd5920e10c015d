package gateway

import (
	"slices"
	"time"
)

// A recipient's escalation in a message's receipt, recorded where it
// happens: the send schedules it (NotifyStore.ScheduleEscalation), one node
// claims it (cancelled or fired, ClaimEscalations), and the node that sent
// the notification reports each target's result
// (NotifyStore.RecordEscalationResult).

// EscalationState is where a recipient's escalation stands.
type EscalationState uint8

const (
	// EscalationScheduled: waiting in the engine until Due.
	EscalationScheduled EscalationState = iota + 1
	// EscalationCancelled: the message was acknowledged (or expired) first.
	EscalationCancelled
	// EscalationFired: claimed and handed to the user's targets.
	EscalationFired
	// EscalationNotScheduled: the engine refused it (a dropped result says why).
	EscalationNotScheduled
)

// MaxEscalationResults bounds the results kept per recipient's escalation
// (one per target: --notify-max-targets is at most this).
const MaxEscalationResults = 16

// EscalationStatus is a recipient's escalation in a receipt.
type EscalationStatus struct {
	State   EscalationState
	Due     time.Time
	Time    time.Time // cancelled or fired; zero while scheduled
	Results []EscalationOutcome
}

// EscalationOutcome is one reported result, with when it was reported.
type EscalationOutcome struct {
	EscalationResult
	Time time.Time
}

// escalation applies f to userID's escalation in message id's receipt,
// creating it; nothing when the receipt is not kept.
func (s *receiptStore) escalation(id, userID string, now time.Time, f func(*EscalationStatus)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, st := s.statusLocked(id, userID, now)
	if st == nil {
		return
	}
	if st.esc == nil {
		st.esc = &EscalationStatus{}
	}
	f(st.esc)
}

// escalationCopy returns a copy of e, nil for nil.
func escalationCopy(e *EscalationStatus) *EscalationStatus {
	if e == nil {
		return nil
	}
	c := *e
	c.Results = slices.Clone(e.Results)
	return &c
}

// RecordResult applies a reported result to e: an escalation with no state
// yet was never scheduled; past MaxEscalationResults results are not kept.
func (e *EscalationStatus) RecordResult(r EscalationResult, now time.Time) {
	if e.State == 0 {
		e.State, e.Time = EscalationNotScheduled, now
	}
	if len(e.Results) < MaxEscalationResults {
		e.Results = append(e.Results, EscalationOutcome{EscalationResult: r, Time: now})
	}
}
