package main

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	pb "pushgate/gen/pushgate/v1"
	"pushgate/internal/notify"
)

// TestEscalationTrimmedUnseenFiresAtOnce: an online envelope client that
// has not acknowledged a message when a newer one pushes it out of a full
// inbox never saw it: its escalation fires at the trim, long before after;
// a trimmed message that was acknowledged first is not escalated.
func TestEscalationTrimmedUnseenFiresAtOnce(t *testing.T) {
	r := startPushServer(t, "--inbox-max-messages", "1")
	ctx := context.Background()
	r.subscribe(t, "merchant")
	page := r.s.dialEnv(t, "/merchant")
	eventually(t, "merchant online", func() bool { return r.s.online(t, "merchant") == 1 })
	send := func(m *pb.Message) string {
		t.Helper()
		resp, err := r.s.api.SendToUser(ctx, &pb.SendToUserRequest{UserId: "merchant", Message: m})
		if err != nil || !resp.GetOnline() {
			t.Fatalf("send: %v %v", resp, err)
		}
		if got := page.nextMessage(); got.ID != resp.GetMessageId() {
			t.Fatalf("got %s, want %s", got.ID, resp.GetMessageId())
		}
		return resp.GetMessageId()
	}

	// Acknowledged, then trimmed: nothing.
	acked := send(escalated(`{"order":1}`, 2*time.Hour, time.Hour, orderNote))
	page.send(map[string]any{"op": "ack", "id": acked})
	eventually(t, "the ack recorded", func() bool {
		st, err := r.s.api.GetMessageStatus(ctx, &pb.GetMessageStatusRequest{MessageId: acked})
		return err == nil && st.GetRecipients()[0].GetState() == pb.DeliveryState_DELIVERY_STATE_ACKED
	})
	start := time.Now()
	unseen := send(escalated(`{"order":2}`, 2*time.Hour, time.Hour, orderNote))
	// Trimmed by the next message, unacknowledged: pushed now.
	send(ttlMsg(`{"order":3}`, time.Hour))
	p := r.nextPush(t)
	var got notify.Push
	if err := json.Unmarshal(p.Payload, &got); err != nil {
		t.Fatal(err)
	}
	if got.MessageID != unseen {
		t.Fatalf("pushed %s, want the trimmed %s (not the acked %s)", got.MessageID, unseen, acked)
	}
	if el := time.Since(start); el > 50*time.Second {
		t.Fatalf("pushed %v after the send, after is an hour", el)
	}
	st, err := r.s.api.GetMessageStatus(ctx, &pb.GetMessageStatusRequest{MessageId: unseen})
	if err != nil || st.GetRecipients()[0].GetState() != pb.DeliveryState_DELIVERY_STATE_TRIMMED {
		t.Fatalf("status %v %v", st, err)
	}
	var e *pb.EscalationStatus
	eventually(t, "the trimmed one's result in the receipt", func() bool {
		e = r.escStatus(t, unseen, "merchant")
		return len(e.GetResults()) == 1
	})
	if e.GetState() != pb.EscalationState_ESCALATION_STATE_FIRED || e.GetDueTime().AsTime().After(time.Now()) || e.GetResults()[0].GetResult() != "sent" {
		t.Fatalf("trimmed one's escalation %v, want due at the trim, fired, sent", e)
	}
	if e := r.escStatus(t, acked, "merchant"); e.GetState() != pb.EscalationState_ESCALATION_STATE_SCHEDULED {
		t.Fatalf("acked one's escalation %v, want still scheduled (cancelled when due)", e)
	}
	eventually(t, "nothing pending but the acked one's", func() bool {
		v, err := r.s.metricValue("pushgate_escalations_pending")
		return err == nil && v == 1
	})
	r.noPush(t)
}
