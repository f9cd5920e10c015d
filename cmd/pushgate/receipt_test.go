package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"pushgate/gateway/redisengine/redistest"
	pb "pushgate/gen/pushgate/v1"
)

// Receipts (GetMessageStatus), on the test engine: what became of a
// message for each recipient, read back after real deliveries, acks,
// expiries and trims.

// status returns message id's receipt for user.
func (s *testServer) status(t testing.TB, id, user string) *pb.RecipientStatus {
	t.Helper()
	r, err := s.api.GetMessageStatus(context.Background(), &pb.GetMessageStatusRequest{MessageId: id, UserIds: []string{user}})
	if err != nil {
		t.Fatalf("GetMessageStatus(%s, %s): %v", id, user, err)
	}
	if len(r.GetRecipients()) != 1 || r.GetRecipients()[0].GetUserId() != user || r.GetMessageId() != id {
		t.Fatalf("GetMessageStatus(%s, %s) = %v", id, user, r)
	}
	return r.GetRecipients()[0]
}

// waitState polls message id's receipt for user until it is in state.
func (s *testServer) waitState(t testing.TB, id, user string, state pb.DeliveryState) *pb.RecipientStatus {
	t.Helper()
	var st *pb.RecipientStatus
	eventually(t, fmt.Sprintf("%s for %s to be %v", id, user, state), func() bool {
		st = s.status(t, id, user)
		return st.GetState() == state
	})
	return st
}

func (s *testServer) send(t testing.TB, user string, m *pb.Message) *pb.SendToUserResponse {
	t.Helper()
	r, err := s.api.SendToUser(context.Background(), &pb.SendToUserRequest{UserId: user, Message: m})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// A raw page cannot acknowledge: a stored message written to it is acked
// implicitly, by that connection; a live-only one stays SENT.
func TestReceiptRawDeliveryIsAckedImplicitly(t *testing.T) {
	s := startServer(t)
	c := s.dial(t, "merchant-1")
	eventually(t, "the page to be online", func() bool { return s.online(t, "merchant-1") == 1 })
	before := time.Now().Add(-time.Second)

	r := s.send(t, "merchant-1", ttlMsg(`{"order":1}`, time.Hour))
	c.expect(`{"order":1}`)
	st := s.waitState(t, r.GetMessageId(), "merchant-1", pb.DeliveryState_DELIVERY_STATE_ACKED)
	if !st.GetAckImplicit() || st.GetAckConnectionId() == "" || !st.GetOnline() || !st.GetStored() ||
		st.GetDeliveredConnections() != 1 || st.GetAckTime().AsTime().Before(before) ||
		st.GetDeliveredTime().AsTime().Before(before) || st.GetEndTime() != nil {
		t.Fatalf("raw delivery receipt = %v", st)
	}

	live := s.send(t, "merchant-1", jsonMsg(`{"order":2}`))
	c.expect(`{"order":2}`)
	if st := s.status(t, live.GetMessageId(), "merchant-1"); st.GetState() != pb.DeliveryState_DELIVERY_STATE_SENT ||
		st.GetStored() || st.GetDeliveredConnections() != 1 || st.GetAckTime() != nil {
		t.Fatalf("live-only raw delivery receipt = %v", st)
	}
}

// An envelope client acknowledges explicitly: the receipt names its
// connection; the first ack wins; an ack of a live-only message counts.
func TestReceiptEnvelopeAckNamesTheConnection(t *testing.T) {
	s := startServer(t)
	c1 := s.dialEnv(t, "/merchant-2")
	c2 := s.dialEnv(t, "/merchant-2")
	r := s.send(t, "merchant-2", ttlMsg(`{"order":1}`, time.Hour))
	if r.GetDeliveredConnections() != 2 {
		t.Fatalf("send = %v", r)
	}
	id := r.GetMessageId()
	c1.nextMessage()
	c2.nextMessage()
	st := s.status(t, id, "merchant-2")
	if st.GetState() != pb.DeliveryState_DELIVERY_STATE_PENDING || st.GetDeliveredConnections() != 2 || !st.GetOnline() || !st.GetStored() {
		t.Fatalf("before the ack: %v", st)
	}

	c2.send(map[string]any{"op": "ack", "id": id, "ref": 1})
	if f := c2.next(); f.Op != "acked" {
		t.Fatalf("ack reply %+v", f)
	}
	st = s.status(t, id, "merchant-2")
	if st.GetState() != pb.DeliveryState_DELIVERY_STATE_ACKED || st.GetAckImplicit() || st.GetAckConnectionId() != c2.hello.ConnID || st.GetAckTime() == nil {
		t.Fatalf("after c2's ack (%s): %v", c2.hello.ConnID, st)
	}
	c1.send(map[string]any{"op": "ack", "id": id, "ref": 2})
	if f := c1.next(); f.Op != "acked" {
		t.Fatalf("ack reply %+v", f)
	}
	if again := s.status(t, id, "merchant-2"); again.GetAckConnectionId() != c2.hello.ConnID || !again.GetAckTime().AsTime().Equal(st.GetAckTime().AsTime()) {
		t.Fatalf("a later ack changed the receipt: %v, was %v", again, st)
	}

	live := s.send(t, "merchant-2", jsonMsg(`{"live":true}`))
	c1.nextMessage()
	c1.send(map[string]any{"op": "ack", "id": live.GetMessageId(), "ref": 3})
	if f := c1.next(); f.Op != "acked" {
		t.Fatalf("ack reply %+v", f)
	}
	if st := s.status(t, live.GetMessageId(), "merchant-2"); st.GetState() != pb.DeliveryState_DELIVERY_STATE_ACKED || st.GetAckConnectionId() != c1.hello.ConnID || st.GetStored() {
		t.Fatalf("live message acked: %v", st)
	}
}

// Offline: not stored is UNDELIVERED; stored is PENDING until a connection
// joins (delivered from the inbox) and acknowledges it.
func TestReceiptOfflineThenConnectAndAck(t *testing.T) {
	s := startServer(t)
	lost := s.send(t, "merchant-3", jsonMsg(`{"order":0}`))
	if st := s.status(t, lost.GetMessageId(), "merchant-3"); st.GetState() != pb.DeliveryState_DELIVERY_STATE_UNDELIVERED ||
		st.GetOnline() || st.GetStored() || st.GetDeliveredConnections() != 0 || st.GetDeliveredTime() != nil {
		t.Fatalf("offline, not stored: %v", st)
	}

	kept := s.send(t, "merchant-3", ttlMsg(`{"order":1}`, time.Hour))
	id := kept.GetMessageId()
	st := s.status(t, id, "merchant-3")
	if st.GetState() != pb.DeliveryState_DELIVERY_STATE_PENDING || st.GetOnline() || !st.GetStored() || st.GetDeliveredConnections() != 0 {
		t.Fatalf("offline, stored: %v", st)
	}
	c := s.dialEnv(t, "/merchant-3")
	if m := c.nextMessage(); m.ID != id {
		t.Fatalf("replayed %+v", m)
	}
	st = s.status(t, id, "merchant-3")
	if st.GetState() != pb.DeliveryState_DELIVERY_STATE_PENDING || st.GetDeliveredConnections() != 1 || st.GetDeliveredTime() == nil || st.GetOnline() {
		t.Fatalf("replayed, not acked: %v", st)
	}
	c.send(map[string]any{"op": "ack", "id": id, "ref": 1})
	if f := c.next(); f.Op != "acked" {
		t.Fatalf("ack reply %+v", f)
	}
	st = s.status(t, id, "merchant-3")
	if st.GetState() != pb.DeliveryState_DELIVERY_STATE_ACKED || st.GetAckConnectionId() != c.hello.ConnID || st.GetAckImplicit() {
		t.Fatalf("acked: %v", st)
	}
}

// A stored message nobody acknowledged within its ttl is EXPIRED, ending at
// its expiry; one pushed out of a full inbox is TRIMMED.
func TestReceiptExpiredAndTrimmed(t *testing.T) {
	s := startServer(t, "--inbox-max-messages", "2")
	r, err := s.api.SendToUser(context.Background(), &pb.SendToUserRequest{UserId: "merchant-4", Message: ttlMsg(`{"short":1}`, 300*time.Millisecond)})
	if err != nil {
		t.Fatal(err)
	}
	short := r.GetMessageId()
	st := s.waitState(t, short, "merchant-4", pb.DeliveryState_DELIVERY_STATE_EXPIRED)
	full, _ := s.api.GetMessageStatus(context.Background(), &pb.GetMessageStatusRequest{MessageId: short})
	if full.GetExpireTime() == nil || !st.GetEndTime().AsTime().Equal(full.GetExpireTime().AsTime()) ||
		full.GetExpireTime().AsTime().Sub(full.GetSendTime().AsTime()) != 300*time.Millisecond {
		t.Fatalf("expired: %v, receipt %v", st, full)
	}
	// An ack after the expiry changes nothing.
	c := s.dialEnv(t, "/merchant-4")
	c.send(map[string]any{"op": "ack", "id": short, "ref": 1})
	if f := c.next(); f.Op != "acked" {
		t.Fatalf("ack reply %+v", f)
	}
	if st := s.status(t, short, "merchant-4"); st.GetState() != pb.DeliveryState_DELIVERY_STATE_EXPIRED {
		t.Fatalf("acked after expiry: %v", st)
	}
	c.c.CloseNow()
	eventually(t, "the client to leave", func() bool { return s.online(t, "merchant-4") == 0 })

	var ids []string
	for i := range 3 {
		ids = append(ids, s.send(t, "merchant-5", ttlMsg(fmt.Sprintf(`{"n":%d}`, i), time.Hour)).GetMessageId())
	}
	st = s.status(t, ids[0], "merchant-5")
	if st.GetState() != pb.DeliveryState_DELIVERY_STATE_TRIMMED || st.GetEndTime() == nil || !st.GetStored() {
		t.Fatalf("trimmed: %v", st)
	}
	for _, id := range ids[1:] {
		if st := s.status(t, id, "merchant-5"); st.GetState() != pb.DeliveryState_DELIVERY_STATE_PENDING {
			t.Fatalf("kept %s: %v", id, st)
		}
	}
}

// Every recipient, a page at a time, in the order of the send; or the ones
// asked for, in the order asked.
func TestReceiptPages(t *testing.T) {
	s := startServer(t)
	ctx := context.Background()
	var users []string
	for i := range 250 {
		users = append(users, fmt.Sprintf("u-%03d", 249-i)) // not sorted: the send's order counts
	}
	c := s.dial(t, "u-007")
	eventually(t, "u-007 online", func() bool { return s.online(t, "u-007") == 1 })
	sent, err := s.api.SendToUsers(ctx, &pb.SendToUsersRequest{UserIds: users, Message: jsonMsg(`{"all":1}`)})
	if err != nil {
		t.Fatal(err)
	}
	c.expect(`{"all":1}`)
	id := sent.GetMessageId()
	var got []string
	tok := ""
	for page := 0; ; page++ {
		r, err := s.api.GetMessageStatus(ctx, &pb.GetMessageStatusRequest{MessageId: id, PageSize: 100, PageToken: tok})
		if err != nil {
			t.Fatalf("page %d: %v", page, err)
		}
		if r.GetTotalRecipients() != 250 || len(r.GetRecipients()) > 100 || r.GetExpireTime() != nil || r.GetSendTime() == nil {
			t.Fatalf("page %d: total %d, %d recipients, %v", page, r.GetTotalRecipients(), len(r.GetRecipients()), r.GetExpireTime())
		}
		for _, st := range r.GetRecipients() {
			got = append(got, st.GetUserId())
			want := pb.DeliveryState_DELIVERY_STATE_UNDELIVERED
			if st.GetUserId() == "u-007" {
				want = pb.DeliveryState_DELIVERY_STATE_SENT
			}
			if st.GetState() != want {
				t.Fatalf("%s: %v", st.GetUserId(), st)
			}
		}
		if tok = r.GetNextPageToken(); tok == "" {
			if page != 2 {
				t.Fatalf("%d pages, want 3", page+1)
			}
			break
		}
	}
	if strings.Join(got, ",") != strings.Join(users, ",") {
		t.Fatalf("recipients in another order or incomplete: %d of 250", len(got))
	}
	r, err := s.api.GetMessageStatus(ctx, &pb.GetMessageStatusRequest{MessageId: id, UserIds: []string{"u-007", "u-000", "u-249"}})
	if err != nil || len(r.GetRecipients()) != 3 || r.GetRecipients()[0].GetUserId() != "u-007" || r.GetRecipients()[2].GetUserId() != "u-249" || r.GetNextPageToken() != "" {
		t.Fatalf("chosen users = %v, %v", r, err)
	}
}

// What is not kept is NOT_FOUND, saying which case it is when it can tell;
// bad requests are INVALID_ARGUMENT naming the field.
func TestReceiptNotFoundAndBadRequests(t *testing.T) {
	s := startServer(t, "--receipt-max", "3")
	ctx := context.Background()
	get := func(req *pb.GetMessageStatusRequest) error {
		_, err := s.api.GetMessageStatus(ctx, req)
		return err
	}
	want := func(err error, code codes.Code, text string) {
		t.Helper()
		if status.Code(err) != code || !strings.Contains(status.Convert(err).Message(), text) {
			t.Fatalf("got %v, want %v containing %q", err, code, text)
		}
	}
	first, err := s.api.SendToUsers(ctx, &pb.SendToUsersRequest{UserIds: []string{"a", "b"}, Message: jsonMsg(`1`)})
	if err != nil {
		t.Fatal(err)
	}
	want(get(&pb.GetMessageStatusRequest{MessageId: first.GetMessageId(), UserIds: []string{"a", "c"}}), codes.NotFound, `user_ids[1]: "c" not a recipient of message `)

	b, err := s.api.Broadcast(ctx, &pb.BroadcastRequest{Message: jsonMsg(`2`)})
	if err != nil {
		t.Fatal(err)
	}
	want(get(&pb.GetMessageStatusRequest{MessageId: b.GetMessageId()}), codes.NotFound, "Broadcast and Publish ids have no receipt")
	want(get(&pb.GetMessageStatusRequest{MessageId: "7ZZZZZZZZZ0000000000000000"}), codes.NotFound, "no message has that id yet")
	want(get(&pb.GetMessageStatusRequest{MessageId: "01HQ0000000000000000000000"}), codes.NotFound, "older than the receipt retention")

	// Two more recipients than --receipt-max 3 allows: the first receipt goes.
	if s.metric(t, "pushgate_receipt_recipients") != 2 {
		t.Fatalf("recipients kept = %v, want 2", s.metric(t, "pushgate_receipt_recipients"))
	}
	second, err := s.api.SendToUsers(ctx, &pb.SendToUsersRequest{UserIds: []string{"a", "b"}, Message: jsonMsg(`3`)})
	if err != nil {
		t.Fatal(err)
	}
	want(get(&pb.GetMessageStatusRequest{MessageId: first.GetMessageId()}), codes.NotFound, "evicted")
	if err := get(&pb.GetMessageStatusRequest{MessageId: second.GetMessageId()}); err != nil {
		t.Fatalf("newest receipt: %v", err)
	}
	if kept, ev := s.metric(t, "pushgate_receipt_recipients"), s.metric(t, "pushgate_receipts_evicted_total"); kept != 2 || ev != 1 {
		t.Fatalf("recipients kept %v, evicted %v; want 2, 1", kept, ev)
	}

	id := second.GetMessageId()
	want(get(&pb.GetMessageStatusRequest{MessageId: "nope"}), codes.InvalidArgument, "message_id: ")
	want(get(&pb.GetMessageStatusRequest{MessageId: id, PageSize: 1001}), codes.InvalidArgument, "page_size: ")
	want(get(&pb.GetMessageStatusRequest{MessageId: id, PageSize: -1}), codes.InvalidArgument, "page_size: ")
	want(get(&pb.GetMessageStatusRequest{MessageId: id, UserIds: []string{""}}), codes.InvalidArgument, "user_ids[0]: ")
	want(get(&pb.GetMessageStatusRequest{MessageId: id, PageToken: "garbage"}), codes.InvalidArgument, "page_token: ")
	r, err := s.api.GetMessageStatus(ctx, &pb.GetMessageStatusRequest{MessageId: id, PageSize: 1})
	if err != nil || r.GetNextPageToken() == "" || len(r.GetRecipients()) != 1 {
		t.Fatalf("first page of one = %v, %v", r, err)
	}
	tok := r.GetNextPageToken()
	want(get(&pb.GetMessageStatusRequest{MessageId: first.GetMessageId(), PageToken: tok}), codes.InvalidArgument, "page_token: belongs to message "+id)
	want(get(&pb.GetMessageStatusRequest{MessageId: id, PageToken: tok, UserIds: []string{"a"}}), codes.InvalidArgument, "page_token: ")
	r, err = s.api.GetMessageStatus(ctx, &pb.GetMessageStatusRequest{MessageId: id, PageSize: 1, PageToken: tok})
	if err != nil || r.GetNextPageToken() != "" || len(r.GetRecipients()) != 1 || r.GetRecipients()[0].GetUserId() != "b" {
		t.Fatalf("second page of one = %v, %v", r, err)
	}
}

// The README's "fall back to SMS" scenario: the order service sends an
// order, and a while later asks for its receipt; an order the merchant
// has not acknowledged by then is the cue to send an SMS. The merchant
// whose page is open gets no SMS; the one whose page is closed does, and
// when that merchant comes back the order is still waiting.
func TestReceiptFallBackToSMS(t *testing.T) {
	s := startServer(t)
	ctx := context.Background()
	open := s.dialEnv(t, "/merchant-42")
	order := func(merchant string, n int) string {
		r := s.send(t, merchant, &pb.Message{Type: "order.paid",
			Payload: &pb.Message_Json{Json: fmt.Sprintf(`{"type":1,"orderId":%d}`, n)}, Ttl: durationpb.New(time.Hour),
			IdempotencyKey: fmt.Sprintf("order-%d-paid", n)})
		return r.GetMessageId()
	}
	seen := order("merchant-42", 1)
	missed := order("merchant-43", 2) // page closed

	// The merchant's page acknowledges what it shows (the JS client does).
	m := open.nextMessage()
	open.send(map[string]any{"op": "ack", "id": m.ID})

	// The order service's check, after a wait (30 s in production; here
	// until the page's ack has landed).
	needsSMS := func(id string) bool {
		r, err := s.api.GetMessageStatus(ctx, &pb.GetMessageStatusRequest{MessageId: id})
		if err != nil {
			t.Fatalf("GetMessageStatus: %v", err)
		}
		return r.GetRecipients()[0].GetState() != pb.DeliveryState_DELIVERY_STATE_ACKED
	}
	eventually(t, "the open page's ack", func() bool { return !needsSMS(seen) })
	if !needsSMS(missed) {
		t.Fatal("the closed page's order reads as acknowledged")
	}
	st := s.status(t, missed, "merchant-43")
	if st.GetState() != pb.DeliveryState_DELIVERY_STATE_PENDING || st.GetOnline() || !st.GetStored() {
		t.Fatalf("missed order: %v", st)
	}
	// The merchant opens the page after the SMS: the order is replayed and
	// acknowledged, and the receipt says so.
	late := s.dialEnv(t, "/merchant-43")
	if m := late.nextMessage(); m.ID != missed {
		t.Fatalf("replayed %+v", m)
	}
	late.send(map[string]any{"op": "ack", "id": missed})
	st = s.waitState(t, missed, "merchant-43", pb.DeliveryState_DELIVERY_STATE_ACKED)
	if st.GetAckConnectionId() != late.hello.ConnID || st.GetDeliveredConnections() != 1 {
		t.Fatalf("late ack: %v", st)
	}
}

// A user with three connections on two nodes: the receipt, read on either
// node, counts all three, and names the connection (on the other node)
// that acknowledged first.
func TestClusterReceiptThreeConnectionsTwoNodes(t *testing.T) {
	r := redistest.Start(t)
	n := startNodes(t, r, 2)
	a, b := n[0], n[1]
	a1, a2 := a.dialEnv(t, "/merchant-42"), a.dialEnv(t, "/merchant-42")
	b1 := b.dialEnv(t, "/merchant-42")
	eventually(t, "three connections cluster-wide", func() bool { return a.online(t, "merchant-42") == 3 })

	sent := b.send(t, "merchant-42", ttlMsg(`{"order":7}`, time.Hour))
	if sent.GetDeliveredConnections() != 3 {
		t.Fatalf("send = %v", sent)
	}
	id := sent.GetMessageId()
	for _, c := range []*envClient{a1, a2, b1} {
		if m := c.nextMessage(); m.ID != id {
			t.Fatalf("got %+v", m)
		}
	}
	for _, s := range []*testServer{a, b} {
		if st := s.status(t, id, "merchant-42"); st.GetState() != pb.DeliveryState_DELIVERY_STATE_PENDING || st.GetDeliveredConnections() != 3 || !st.GetOnline() {
			t.Fatalf("before acks: %v", st)
		}
	}
	b1.send(map[string]any{"op": "ack", "id": id, "ref": 1})
	if f := b1.next(); f.Op != "acked" {
		t.Fatalf("ack reply %+v", f)
	}
	a2.send(map[string]any{"op": "ack", "id": id, "ref": 2})
	if f := a2.next(); f.Op != "acked" {
		t.Fatalf("ack reply %+v", f)
	}
	for _, s := range []*testServer{a, b} {
		st := s.status(t, id, "merchant-42")
		if st.GetState() != pb.DeliveryState_DELIVERY_STATE_ACKED || st.GetAckConnectionId() != b1.hello.ConnID || st.GetAckImplicit() || st.GetDeliveredConnections() != 3 {
			t.Fatalf("after acks, first by %s: %v", b1.hello.ConnID, st)
		}
	}
}

// A client that resumes past a message it never acknowledged (the ack was
// lost with its old connection) has it: the receipt says acked, implicitly,
// by the resuming connection.
func TestReceiptResumeAcksImplicitly(t *testing.T) {
	s := startServer(t)
	c1 := s.dialEnv(t, "/merchant-6")
	var ids []string
	for i := range 2 {
		ids = append(ids, s.send(t, "merchant-6", ttlMsg(fmt.Sprintf(`{"n":%d}`, i), time.Hour)).GetMessageId())
	}
	for _, id := range ids {
		if m := c1.nextMessage(); m.ID != id {
			t.Fatalf("got %+v", m)
		}
	}
	epoch := c1.hello.Epoch
	c1.c.CloseNow()
	eventually(t, "the first connection to leave", func() bool { return s.online(t, "merchant-6") == 0 })

	c2 := s.dialEnv(t, "/merchant-6?last_id="+ids[0]+"&epoch="+epoch)
	if m := c2.nextMessage(); m.ID != ids[1] {
		t.Fatalf("replayed %+v", m)
	}
	st := s.status(t, ids[0], "merchant-6")
	if st.GetState() != pb.DeliveryState_DELIVERY_STATE_ACKED || !st.GetAckImplicit() || st.GetAckConnectionId() != c2.hello.ConnID || st.GetDeliveredConnections() != 1 {
		t.Fatalf("resumed past (%s): %v", c2.hello.ConnID, st)
	}
	st = s.status(t, ids[1], "merchant-6")
	if st.GetState() != pb.DeliveryState_DELIVERY_STATE_PENDING || st.GetDeliveredConnections() != 2 {
		t.Fatalf("replayed to the second connection: %v", st)
	}
}
