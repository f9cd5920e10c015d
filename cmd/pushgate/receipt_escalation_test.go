package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	pb "pushgate/gen/pushgate/v1"
)

// escStatus returns user's escalation in message id's receipt (nil: none).
func (r pushRig) escStatus(t *testing.T, id, user string) *pb.EscalationStatus {
	t.Helper()
	st, err := r.s.api.GetMessageStatus(context.Background(), &pb.GetMessageStatusRequest{MessageId: id, UserIds: []string{user}})
	if err != nil {
		t.Fatalf("GetMessageStatus(%s, %s): %v", id, user, err)
	}
	return st.GetRecipients()[0].GetEscalation()
}

// results returns e's results as sorted "channel target result detail"
// lines (targets answer in any order).
func escResults(e *pb.EscalationStatus) []string {
	var out []string
	for _, r := range e.GetResults() {
		if r.GetTime() == nil {
			out = append(out, "no time: "+r.String())
			continue
		}
		out = append(out, strings.TrimSpace(fmt.Sprintf("%s %s %s %s", r.GetChannel(), r.GetTargetId(), r.GetResult(), r.GetDetail())))
	}
	slices.Sort(out)
	return out
}

// TestReceiptEscalationOffline: an offline user is pushed at once; the
// receipt shows the escalation due at the send, fired, and each target's
// result: sent, gone (410) and refused (403, with the reason).
func TestReceiptEscalationOffline(t *testing.T) {
	r := startPushServer(t)
	_, ok := r.subscribe(t, "merchant")
	goneSub, gone := r.subscribe(t, "merchant")
	refusedSub, refused := r.subscribe(t, "merchant")
	r.ps.Unsubscribe(goneSub)
	r.ps.Answer(refusedSub, 403)
	resp, err := r.s.api.SendToUser(context.Background(), &pb.SendToUserRequest{UserId: "merchant",
		Message: escalated(`{"order":1042}`, time.Hour, 30*time.Second, orderNote)})
	if err != nil || resp.GetOnline() {
		t.Fatalf("send: %v %v", resp, err)
	}
	r.nextPush(t)
	var e *pb.EscalationStatus
	eventually(t, "three results in the receipt", func() bool {
		e = r.escStatus(t, resp.GetMessageId(), "merchant")
		return len(e.GetResults()) == 3
	})
	if e.GetState() != pb.EscalationState_ESCALATION_STATE_FIRED || e.GetTime() == nil || e.GetDueTime() == nil {
		t.Fatalf("escalation %v, want fired with due and fire times", e)
	}
	if due, fired := e.GetDueTime().AsTime(), e.GetTime().AsTime(); fired.Before(due.Add(-time.Second)) || fired.Sub(due) > 10*time.Second {
		t.Fatalf("due %v fired %v: an offline recipient's escalation is due at the send and fires at the next poll", due, fired)
	}
	got := escResults(e)
	want := []string{"webpush " + ok + " sent", "webpush " + gone + " gone", "webpush " + refused + " refused"}
	slices.Sort(want)
	for i := range want {
		if i >= len(got) || !strings.HasPrefix(got[i], want[i]) {
			t.Fatalf("results %q, want %q", got, want)
		}
	}
	for _, g := range got {
		if strings.Contains(g, " refused") && !strings.Contains(g, "403") {
			t.Fatalf("refused result without its reason: %q", g)
		}
	}
}

// TestReceiptEscalationAfter: an online envelope user's escalation is
// scheduled for after; one who does not ack is fired when it is due, one
// who acks in time is cancelled when it is due; a raw user (a write is an
// ack) likewise cancelled; a user with no push target fired with
// no_target.
func TestReceiptEscalationAfter(t *testing.T) {
	r := startPushServer(t)
	ctx := context.Background()
	_, slowTarget := r.subscribe(t, "slow")
	r.subscribe(t, "quick")
	slow := r.s.dialEnv(t, "/slow")
	quick := r.s.dialEnv(t, "/quick")
	bare := r.s.dialEnv(t, "/bare")
	eventually(t, "all online", func() bool {
		return r.s.online(t, "slow") == 1 && r.s.online(t, "quick") == 1 && r.s.online(t, "bare") == 1
	})
	after := 3 * time.Second
	resp, err := r.s.api.SendToUsers(ctx, &pb.SendToUsersRequest{UserIds: []string{"slow", "quick", "bare"},
		Message: escalated(`{"order":7}`, time.Hour, after, orderNote)})
	if err != nil {
		t.Fatal(err)
	}
	id := resp.GetMessageId()
	for _, u := range []string{"slow", "quick", "bare"} {
		e := r.escStatus(t, id, u)
		if e.GetState() != pb.EscalationState_ESCALATION_STATE_SCHEDULED || e.GetTime() != nil || len(e.GetResults()) != 0 {
			t.Fatalf("%s before after: %v, want scheduled", u, e)
		}
		if e.GetDueTime() == nil {
			t.Fatalf("%s: no due time: %v", u, e)
		}
	}
	due := r.escStatus(t, id, "slow").GetDueTime().AsTime()
	sent, _ := r.s.api.GetMessageStatus(ctx, &pb.GetMessageStatusRequest{MessageId: id, UserIds: []string{"slow"}})
	if d := due.Sub(sent.GetSendTime().AsTime()); d < after-50*time.Millisecond || d > after+50*time.Millisecond {
		t.Fatalf("due %v after the send, want %v", d, after)
	}
	slow.nextMessage()
	bare.nextMessage()
	quick.send(map[string]any{"op": "ack", "id": quick.nextMessage().ID})

	r.nextPush(t)
	var e *pb.EscalationStatus
	eventually(t, "slow's result in the receipt", func() bool {
		e = r.escStatus(t, id, "slow")
		return len(e.GetResults()) == 1
	})
	if e.GetState() != pb.EscalationState_ESCALATION_STATE_FIRED || e.GetTime().AsTime().Before(due) ||
		!slices.Equal(escResults(e), []string{"webpush " + slowTarget + " sent"}) {
		t.Fatalf("slow: %v, want fired at or after %v, sent", e, due)
	}
	eventually(t, "bare's no_target", func() bool { return len(r.escStatus(t, id, "bare").GetResults()) == 1 })
	if e := r.escStatus(t, id, "bare"); e.GetState() != pb.EscalationState_ESCALATION_STATE_FIRED || e.GetResults()[0].GetResult() != "no_target" {
		t.Fatalf("bare: %v, want fired, no_target", e)
	}
	eventually(t, "quick's cancelled", func() bool {
		return r.escStatus(t, id, "quick").GetState() == pb.EscalationState_ESCALATION_STATE_CANCELLED
	})
	if e := r.escStatus(t, id, "quick"); e.GetTime().AsTime().Before(due) || len(e.GetResults()) != 0 {
		t.Fatalf("quick: %v, want cancelled when due, no results", e)
	}
	r.noPush(t)
}

// TestReceiptEscalationNone: a recipient the send asked no escalation for
// (online, after 0) has none in the receipt; one refused for
// --notify-max-pending shows not scheduled, with the dropped reason.
func TestReceiptEscalationNone(t *testing.T) {
	r := startPushServer(t, "--notify-max-pending", "1")
	ctx := context.Background()
	r.s.dialEnv(t, "/online")
	eventually(t, "online", func() bool { return r.s.online(t, "online") == 1 })
	resp, err := r.s.api.SendToUsers(ctx, &pb.SendToUsersRequest{UserIds: []string{"online"}, Message: escalated(`1`, time.Hour, 0, orderNote)})
	if err != nil {
		t.Fatal(err)
	}
	if e := r.escStatus(t, resp.GetMessageId(), "online"); e != nil {
		t.Fatalf("online with after 0: %v, want no escalation", e)
	}
	// Two online users with after: the first takes the one pending slot.
	r.s.dialEnv(t, "/other")
	eventually(t, "other online", func() bool { return r.s.online(t, "other") == 1 })
	resp, err = r.s.api.SendToUsers(ctx, &pb.SendToUsersRequest{UserIds: []string{"online", "other"}, Message: escalated(`2`, time.Hour, time.Minute, orderNote)})
	if err != nil {
		t.Fatal(err)
	}
	if e := r.escStatus(t, resp.GetMessageId(), "online"); e.GetState() != pb.EscalationState_ESCALATION_STATE_SCHEDULED {
		t.Fatalf("first: %v, want scheduled", e)
	}
	var e *pb.EscalationStatus
	eventually(t, "the refusal recorded", func() bool {
		e = r.escStatus(t, resp.GetMessageId(), "other")
		return len(e.GetResults()) == 1
	})
	if e.GetState() != pb.EscalationState_ESCALATION_STATE_NOT_SCHEDULED || e.GetResults()[0].GetResult() != "dropped" ||
		!strings.Contains(e.GetResults()[0].GetDetail(), "--notify-max-pending") {
		t.Fatalf("second: %v, want not scheduled, dropped naming --notify-max-pending", e)
	}
}
