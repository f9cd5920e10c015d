package server

import (
	"pushgate/gateway"
	pb "pushgate/gen/pushgate/v1"
)

// escalationStatus is e as the API shows it; nil for nil.
func escalationStatus(e *gateway.EscalationStatus) *pb.EscalationStatus {
	if e == nil {
		return nil
	}
	out := &pb.EscalationStatus{State: pb.EscalationState(e.State), DueTime: ts(e.Due), Time: ts(e.Time)} // the same numbers
	for _, r := range e.Results {
		out.Results = append(out.Results, &pb.EscalationOutcome{Channel: r.Channel, TargetId: r.TargetID, Result: r.Result, Detail: r.Detail, Time: ts(r.Time)})
	}
	return out
}
