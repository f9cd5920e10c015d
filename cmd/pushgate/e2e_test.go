package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/coder/websocket"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "pushgate/gen/pushgate/v1"
)

// The "new order" pop-up: a 64-bit orderId and Chinese text must arrive
// byte-for-byte, on every tab of the merchant and nowhere else.
const newOrder = `{"type":1,"orderId":1786543212345678901,"content":"订单号: 20261122001"}`

func TestSendToUserReachesEveryTabAndNobodyElse(t *testing.T) {
	s := startServer(t)
	ctx := context.Background()
	tabs := []*wsClient{s.dial(t, "merchant-42"), s.dial(t, "merchant-42"), s.dial(t, "merchant-42")}
	other := s.dial(t, "merchant-7")
	eventually(t, "3 connections online", func() bool { return s.online(t, "merchant-42") == 3 })

	resp, err := s.api.SendToUser(ctx, &pb.SendToUserRequest{UserId: "merchant-42", Message: &pb.Message{Type: "order.paid", Payload: &pb.Message_Json{Json: newOrder}}})
	if err != nil {
		t.Fatal(err)
	}
	if !resp.GetOnline() || resp.GetDeliveredConnections() != 3 || resp.GetStored() || len(resp.GetMessageId()) != 26 {
		t.Fatalf("response = %v, want online, 3 connections, a 26-char id", resp)
	}
	for _, tab := range tabs {
		tab.expect(newOrder)
	}
	// The other merchant's first message is the sentinel: it never saw the order.
	if _, err := s.api.SendToUser(ctx, &pb.SendToUserRequest{UserId: "merchant-7", Message: textMsg("sentinel")}); err != nil {
		t.Fatal(err)
	}
	other.expect("sentinel")

	// Offline: not an error.
	resp, err = s.api.SendToUser(ctx, &pb.SendToUserRequest{UserId: "nobody", Message: jsonMsg(newOrder)})
	if err != nil {
		t.Fatalf("offline user: %v", err)
	}
	if resp.GetOnline() || resp.GetDeliveredConnections() != 0 || resp.GetMessageId() == "" {
		t.Fatalf("offline response = %v", resp)
	}
}

func TestSendToUsersOneResultPerUser(t *testing.T) {
	s := startServer(t)
	online := map[string]*wsClient{"u1": s.dial(t, "u1"), "u2": s.dial(t, "u2"), "u3": s.dial(t, "u3")}
	s.dial(t, "u2") // u2 has two connections; the second one reads but is not checked
	eventually(t, "u2 twice", func() bool { return s.online(t, "u2") == 2 })

	ids := []string{"u1", "off1", "u2", "u3", "off2", "u1"} // u1 twice: delivered and reported once
	resp, err := s.api.SendToUsers(context.Background(), &pb.SendToUsersRequest{UserIds: ids, Message: jsonMsg(`{"digest":true}`)})
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		id     string
		online bool
		n      int32
	}{{"u1", true, 1}, {"off1", false, 0}, {"u2", true, 2}, {"u3", true, 1}, {"off2", false, 0}}
	if len(resp.GetResults()) != len(want) {
		t.Fatalf("got %d results, want %d: %v", len(resp.GetResults()), len(want), resp)
	}
	for i, w := range want {
		r := resp.GetResults()[i]
		if r.GetUserId() != w.id || r.GetOnline() != w.online || r.GetDeliveredConnections() != w.n {
			t.Errorf("result %d = %v, want %+v", i, r, w)
		}
	}
	for id, c := range online {
		c.expect(`{"digest":true}`)
		// Exactly once: the next message is the sentinel.
		s.api.SendToUser(context.Background(), &pb.SendToUserRequest{UserId: id, Message: textMsg("end")})
		c.expect("end")
	}
}

func TestBroadcastReachesAll500ExactlyOnce(t *testing.T) {
	s := startServer(t)
	const n = 500
	clients := make([]*wsClient, n)
	for i := range clients {
		clients[i] = s.dial(t, fmt.Sprintf("user-%03d", i))
	}
	eventually(t, "500 connections", func() bool { return s.app.Hub().Connections() == n })
	ctx := context.Background()

	resp, err := s.api.Broadcast(ctx, &pb.BroadcastRequest{Message: jsonMsg(`{"status":"all"}`)})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetDeliveredConnections() != n {
		t.Fatalf("delivered_connections = %d, want %d", resp.GetDeliveredConnections(), n)
	}
	excluded := []string{"user-000", "user-123", "user-499"}
	resp, err = s.api.Broadcast(ctx, &pb.BroadcastRequest{Message: jsonMsg(`{"status":"some"}`), ExcludeUserIds: excluded})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetDeliveredConnections() != n-3 {
		t.Fatalf("with exclusions delivered_connections = %d, want %d", resp.GetDeliveredConnections(), n-3)
	}
	if _, err := s.api.Broadcast(ctx, &pb.BroadcastRequest{Message: textMsg("end")}); err != nil {
		t.Fatal(err)
	}
	for i, c := range clients {
		c.expect(`{"status":"all"}`)
		if i == 0 || i == 123 || i == 499 {
			c.expect("end") // excluded: nothing between
			continue
		}
		c.expect(`{"status":"some"}`)
		c.expect("end")
	}
}

func TestManyClientsManyMessagesInOrder(t *testing.T) {
	s := startServer(t)
	const clients, msgs = 50, 200
	cs := make([]*wsClient, clients)
	for i := range cs {
		cs[i] = s.dial(t, fmt.Sprintf("c%d", i))
	}
	eventually(t, "all connected", func() bool { return s.app.Hub().Connections() == clients })

	var g errgroup.Group
	for i := range cs {
		g.Go(func() error {
			for j := range msgs {
				r, err := s.api.SendToUser(context.Background(), &pb.SendToUserRequest{
					UserId: fmt.Sprintf("c%d", i), Message: jsonMsg(fmt.Sprintf(`{"c":%d,"seq":%d}`, i, j))})
				if err != nil {
					return err
				}
				if r.GetDeliveredConnections() != 1 {
					return fmt.Errorf("c%d seq %d: delivered to %d", i, j, r.GetDeliveredConnections())
				}
			}
			return nil
		})
	}
	// Read concurrently with the sends, one checker per client.
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range msgs {
				m, ok := <-c.msgs
				if !ok {
					errs <- fmt.Errorf("c%d: connection ended after %d messages", i, j)
					return
				}
				if want := fmt.Sprintf(`{"c":%d,"seq":%d}`, i, j); string(m.data) != want {
					errs <- fmt.Errorf("c%d: message %d = %s, want %s", i, j, m.data, want)
					return
				}
			}
		}()
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// Exactly once: nothing after the 200th.
	for i, c := range cs {
		s.api.SendToUser(context.Background(), &pb.SendToUserRequest{UserId: fmt.Sprintf("c%d", i), Message: textMsg("end")})
		c.expect("end")
	}
}

func TestSlowConsumerIsClosedWhileOthersKeepReceiving(t *testing.T) {
	s := startServer(t, "--queue-max-messages", "16", "--queue-max-bytes", "1048576",
		"--max-payload-bytes", "1048576", "--write-timeout", "2s")
	ctx := context.Background()
	const others = 100
	cs := make([]*wsClient, others)
	for i := range cs {
		cs[i] = s.dial(t, fmt.Sprintf("fast-%d", i))
	}
	// The slow client completes the handshake and then never reads.
	slow, _, err := websocket.Dial(ctx, s.wsURL("slow"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.CloseNow()
	eventually(t, "all connected", func() bool { return s.app.Hub().Connections() == others+1 })

	big := jsonMsg(`"` + strings.Repeat("x", 256<<10) + `"`)
	sent := 0
	for round := 0; ; round++ {
		if round > 400 {
			t.Fatalf("slow consumer still online after %d rounds", round)
		}
		r, err := s.api.SendToUser(ctx, &pb.SendToUserRequest{UserId: "slow", Message: big})
		if err != nil {
			t.Fatal(err)
		}
		// Everyone else keeps getting the live stream meanwhile.
		b, err := s.api.Broadcast(ctx, &pb.BroadcastRequest{Message: jsonMsg(fmt.Sprintf(`{"seq":%d}`, round)), ExcludeUserIds: []string{"slow"}})
		if err != nil {
			t.Fatal(err)
		}
		if b.GetDeliveredConnections() != others {
			t.Fatalf("round %d: broadcast reached %d, want %d", round, b.GetDeliveredConnections(), others)
		}
		sent++
		if !r.GetOnline() {
			break
		}
	}
	for i, c := range cs {
		for j := range sent {
			if m := c.next(); string(m.data) != fmt.Sprintf(`{"seq":%d}`, j) {
				t.Fatalf("fast-%d: message %d = %s", i, j, m.data)
			}
		}
	}
	if got := s.online(t, "slow"); got != 0 {
		t.Fatalf("slow consumer still has %d connections", got)
	}
	// It never reads: its queue overflows (its socket write may or may not
	// have timed out first, so both causes together count one).
	if v := s.metric(t, `pushgate_slow_consumers_total{cause="queue_overflow"}`) + s.metric(t, `pushgate_slow_consumers_total{cause="write_timeout"}`); v != 1 {
		t.Fatalf("pushgate_slow_consumers_total = %v, want 1", v)
	}
	if v := s.metric(t, `pushgate_connections_closed_total{reason="slow_consumer"}`); v != 1 {
		eventually(t, "closed counter", func() bool {
			return s.metric(t, `pushgate_connections_closed_total{reason="slow_consumer"}`) == 1
		})
	}
	if v := s.metric(t, `pushgate_messages_dropped_total{reason="slow_consumer"}`); v < 1 {
		t.Fatalf("dropped slow_consumer = %v, want > 0", v)
	}
}

func TestVanishedClientLeavesWithinHeartbeat(t *testing.T) {
	s := startServer(t, "--heartbeat-interval", "200ms", "--heartbeat-timeout", "300ms")
	proxy := newStallProxy(t, s.app.HTTPAddr())
	healthy := s.dial(t, "healthy")
	dialWS(t, "ws://"+proxy.addr()+"/ws/ghost")
	eventually(t, "ghost online", func() bool { return s.online(t, "ghost") == 1 })

	proxy.stall() // no FIN, no RST, no close frame: the packets just stop
	eventually(t, "ghost offline", func() bool { return s.online(t, "ghost") == 0 })

	if v := s.metric(t, "pushgate_heartbeat_timeouts_total"); v != 1 {
		t.Fatalf("heartbeat timeouts = %v, want 1", v)
	}
	// A client that answers pings stayed through many heartbeat rounds.
	if got := s.online(t, "healthy"); got != 1 {
		t.Fatalf("healthy client has %d connections, want 1", got)
	}
	s.api.SendToUser(context.Background(), &pb.SendToUserRequest{UserId: "healthy", Message: textMsg("still here")})
	healthy.expect("still here")
}

func TestClosedConnectionLeavesAtOnce(t *testing.T) {
	s := startServer(t)
	a := s.dial(t, "tab")
	b := s.dial(t, "tab")
	eventually(t, "2 tabs", func() bool { return s.online(t, "tab") == 2 })
	a.c.Close(websocket.StatusNormalClosure, "bye") // returns after the close handshake
	eventually(t, "1 tab", func() bool { return s.online(t, "tab") == 1 })
	b.c.CloseNow() // no close frame: the socket just goes
	eventually(t, "offline", func() bool { return s.online(t, "tab") == 0 })
	r, err := s.api.ListOnline(context.Background(), &pb.ListOnlineRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if r.GetTotalUsers() != 0 || r.GetTotalConnections() != 0 || len(r.GetUsers()) != 0 {
		t.Fatalf("ListOnline after close = %v", r)
	}
}

func TestListOnlinePaginatesAndGetPresence(t *testing.T) {
	s := startServer(t)
	const users = 1000
	for i := range users {
		s.dial(t, fmt.Sprintf("u%04d", i))
	}
	s.dial(t, "u0007") // a second connection for one user
	eventually(t, "all connected", func() bool { return s.app.Hub().Connections() == users+1 })
	ctx := context.Background()

	seen := map[string]bool{}
	var order []string
	token := ""
	pages := 0
	for {
		r, err := s.api.ListOnline(ctx, &pb.ListOnlineRequest{PageSize: 100, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		pages++
		if r.GetTotalUsers() != users || r.GetTotalConnections() != users+1 {
			t.Fatalf("totals = %d users, %d connections", r.GetTotalUsers(), r.GetTotalConnections())
		}
		if len(r.GetUsers()) != 100 {
			t.Fatalf("page %d has %d users", pages, len(r.GetUsers()))
		}
		for _, u := range r.GetUsers() {
			if seen[u.GetUserId()] {
				t.Fatalf("duplicate %s", u.GetUserId())
			}
			seen[u.GetUserId()] = true
			order = append(order, u.GetUserId())
			want := int32(1)
			if u.GetUserId() == "u0007" {
				want = 2
			}
			if u.GetConnections() != want || u.GetOnlineSince() == nil {
				t.Fatalf("%v: want %d connections and online_since", u, want)
			}
		}
		token = r.GetNextPageToken()
		if token == "" {
			break
		}
	}
	if pages != 10 || len(seen) != users {
		t.Fatalf("%d pages, %d users; want 10 pages, %d users", pages, len(seen), users)
	}
	for i := range order {
		if order[i] != fmt.Sprintf("u%04d", i) {
			t.Fatalf("position %d is %s: not in user id order", i, order[i])
		}
	}

	p, err := s.api.GetPresence(ctx, &pb.GetPresenceRequest{UserIds: []string{"u0001", "ghost", "u0007", "u0999", "nobody"}})
	if err != nil {
		t.Fatal(err)
	}
	want := []int32{1, 0, 2, 1, 0}
	for i, u := range p.GetUsers() {
		if u.GetConnections() != want[i] || (want[i] == 0) != (u.GetOnlineSince() == nil) {
			t.Errorf("presence %d = %v, want %d connections", i, u, want[i])
		}
	}
	if len(p.GetUsers()) != len(want) {
		t.Fatalf("got %d presence entries", len(p.GetUsers()))
	}
}

func TestDisconnectKicksEveryConnection(t *testing.T) {
	s := startServer(t)
	kicked := []*wsClient{s.dial(t, "banned"), s.dial(t, "banned"), s.dial(t, "banned")}
	bystander := s.dial(t, "fine")
	eventually(t, "3 connections", func() bool { return s.online(t, "banned") == 3 })

	r, err := s.api.Disconnect(context.Background(), &pb.DisconnectRequest{UserId: "banned", Reason: "account suspended"})
	if err != nil {
		t.Fatal(err)
	}
	if r.GetClosedConnections() != 3 {
		t.Fatalf("closed_connections = %d, want 3", r.GetClosedConnections())
	}
	if got := s.online(t, "banned"); got != 0 {
		t.Fatalf("after Disconnect returned, banned still has %d connections", got)
	}
	for _, c := range kicked {
		if code := c.closeCode(); code != 4100 {
			t.Fatalf("close code = %d, want 4100", code)
		}
		var ce websocket.CloseError
		if err := <-c.end; !errors.As(err, &ce) || ce.Reason != "account suspended" {
			t.Fatalf("close reason = %v", err)
		}
	}
	r, err = s.api.Disconnect(context.Background(), &pb.DisconnectRequest{UserId: "banned"})
	if err != nil || r.GetClosedConnections() != 0 {
		t.Fatalf("second Disconnect = %v, %v; want 0 closed", r, err)
	}
	s.api.SendToUser(context.Background(), &pb.SendToUserRequest{UserId: "fine", Message: textMsg("ok")})
	bystander.expect("ok")
}

func TestPingAndPayloadsByteForByte(t *testing.T) {
	s := startServer(t)
	c := s.dial(t, "mini")
	eventually(t, "online", func() bool { return s.online(t, "mini") == 1 })
	ctx := context.Background()

	for _, ping := range []string{"ping", `{"type":"ping"}`} {
		if err := c.c.Write(ctx, websocket.MessageText, []byte(ping)); err != nil {
			t.Fatal(err)
		}
		c.expect(`{"type":"pong"}`)
	}

	bin := []byte{0, 1, 2, 0xff, 0xfe, '\n', 0}
	cases := []struct {
		msg  *pb.Message
		typ  websocket.MessageType
		want []byte
	}{
		{jsonMsg(newOrder), websocket.MessageText, []byte(newOrder)},
		{jsonMsg(" {\"b\": [1, 2.50, 1e3],\n \"a\":null} "), websocket.MessageText, []byte(" {\"b\": [1, 2.50, 1e3],\n \"a\":null} ")},
		{textMsg("您有一个新订单 ✓"), websocket.MessageText, []byte("您有一个新订单 ✓")},
		{&pb.Message{Payload: &pb.Message_Binary{Binary: bin}}, websocket.MessageBinary, bin},
		{&pb.Message{Payload: &pb.Message_Binary{Binary: []byte{}}}, websocket.MessageBinary, []byte{}},
	}
	for i, tc := range cases {
		if _, err := s.api.SendToUser(ctx, &pb.SendToUserRequest{UserId: "mini", Message: tc.msg}); err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		m := c.next()
		if m.typ != tc.typ || string(m.data) != string(tc.want) {
			t.Fatalf("case %d: got %v %q, want %v %q", i, m.typ, m.data, tc.typ, tc.want)
		}
	}
	if v := s.metric(t, `pushgate_client_frames_total{kind="ping"}`); v != 2 {
		t.Fatalf("pings counted = %v, want 2", v)
	}
}

func TestBadInputIsRejectedAndServiceKeepsServing(t *testing.T) {
	s := startServer(t, "--max-payload-bytes", "1024", "--max-batch-users", "50")
	canary := s.dial(t, "canary")
	s.dial(t, "zebra")
	eventually(t, "canary online", func() bool { return s.online(t, "canary") == 1 && s.online(t, "zebra") == 1 })
	ctx := context.Background()
	ok := jsonMsg(`{}`)
	first, err := s.api.ListOnline(ctx, &pb.ListOnlineRequest{PageSize: 1})
	if err != nil || first.GetNextPageToken() == "" {
		t.Fatalf("ListOnline page 1: %v, %v", first, err)
	}
	realToken := first.GetNextPageToken()
	flip := func(s string) string {
		if s == "AA" {
			return "AB"
		}
		return "AA"
	}
	many := make([]string, 51)
	for i := range many {
		many[i] = fmt.Sprint("u", i)
	}

	cases := []struct {
		name  string
		call  func() error
		field string
	}{
		{"empty user_id", func() error {
			_, err := s.api.SendToUser(ctx, &pb.SendToUserRequest{Message: ok})
			return err
		}, "user_id"},
		{"oversize user_id", func() error {
			_, err := s.api.SendToUser(ctx, &pb.SendToUserRequest{UserId: strings.Repeat("a", 129), Message: ok})
			return err
		}, "user_id"},
		{"control characters in user_id", func() error {
			_, err := s.api.SendToUser(ctx, &pb.SendToUserRequest{UserId: "a\nb", Message: ok})
			return err
		}, "user_id"},
		{"no message", func() error {
			_, err := s.api.SendToUser(ctx, &pb.SendToUserRequest{UserId: "canary"})
			return err
		}, "message"},
		{"no payload", func() error {
			_, err := s.api.SendToUser(ctx, &pb.SendToUserRequest{UserId: "canary", Message: &pb.Message{Type: "x"}})
			return err
		}, "message.payload"},
		{"invalid JSON", func() error {
			_, err := s.api.SendToUser(ctx, &pb.SendToUserRequest{UserId: "canary", Message: jsonMsg(`{"type":1,`)})
			return err
		}, "message.json"},
		{"oversize payload", func() error {
			_, err := s.api.Broadcast(ctx, &pb.BroadcastRequest{Message: textMsg(strings.Repeat("x", 1025))})
			return err
		}, "message.text"},
		{"oversize binary", func() error {
			_, err := s.api.SendToUser(ctx, &pb.SendToUserRequest{UserId: "canary", Message: &pb.Message{Payload: &pb.Message_Binary{Binary: make([]byte, 2000)}}})
			return err
		}, "message.binary"},
		{"oversize type", func() error {
			_, err := s.api.SendToUser(ctx, &pb.SendToUserRequest{UserId: "canary", Message: &pb.Message{Type: strings.Repeat("t", 65), Payload: ok.Payload}})
			return err
		}, "message.type"},
		{"empty user_ids", func() error {
			_, err := s.api.SendToUsers(ctx, &pb.SendToUsersRequest{Message: ok})
			return err
		}, "user_ids"},
		{"too many user_ids", func() error {
			_, err := s.api.SendToUsers(ctx, &pb.SendToUsersRequest{UserIds: many, Message: ok})
			return err
		}, "user_ids"},
		{"bad id inside user_ids", func() error {
			_, err := s.api.SendToUsers(ctx, &pb.SendToUsersRequest{UserIds: []string{"ok", ""}, Message: ok})
			return err
		}, "user_ids[1]"},
		{"bad exclude id", func() error {
			_, err := s.api.Broadcast(ctx, &pb.BroadcastRequest{Message: ok, ExcludeUserIds: []string{"\x00"}})
			return err
		}, "exclude_user_ids[0]"},
		{"page_size too big", func() error {
			_, err := s.api.ListOnline(ctx, &pb.ListOnlineRequest{PageSize: 1001})
			return err
		}, "page_size"},
		{"negative page_size", func() error {
			_, err := s.api.ListOnline(ctx, &pb.ListOnlineRequest{PageSize: -1})
			return err
		}, "page_size"},
		{"garbage page_token", func() error {
			_, err := s.api.ListOnline(ctx, &pb.ListOnlineRequest{PageToken: "not-a-token!"})
			return err
		}, "page_token"},
		{"tampered page_token", func() error {
			tok := realToken
			_, err := s.api.ListOnline(ctx, &pb.ListOnlineRequest{PageToken: tok[:len(tok)-2] + flip(tok[len(tok)-2:])})
			return err
		}, "page_token"},
		{"empty presence ids", func() error {
			_, err := s.api.GetPresence(ctx, &pb.GetPresenceRequest{})
			return err
		}, "user_ids"},
		{"disconnect without user", func() error {
			_, err := s.api.Disconnect(ctx, &pb.DisconnectRequest{})
			return err
		}, "user_id"},
		{"oversize disconnect reason", func() error {
			_, err := s.api.Disconnect(ctx, &pb.DisconnectRequest{UserId: "canary", Reason: strings.Repeat("r", 101)})
			return err
		}, "reason"},
	}
	for i, tc := range cases {
		err := tc.call()
		st, _ := status.FromError(err)
		if st.Code() != codes.InvalidArgument || !strings.HasPrefix(st.Message(), tc.field+":") {
			t.Errorf("%s: got %v, want INVALID_ARGUMENT naming %q", tc.name, err, tc.field)
			continue
		}
		// The service keeps serving: the canary still receives.
		want := fmt.Sprintf(`{"after":%d}`, i)
		if _, err := s.api.SendToUser(ctx, &pb.SendToUserRequest{UserId: "canary", Message: jsonMsg(want)}); err != nil {
			t.Fatalf("%s: canary send: %v", tc.name, err)
		}
		canary.expect(want)
	}
}

func TestHostileClientFrames(t *testing.T) {
	s := startServer(t, "--read-limit", "1024")
	canary := s.dial(t, "canary")
	ctx := context.Background()
	cases := []struct {
		name string
		typ  websocket.MessageType
		data []byte
		code websocket.StatusCode // 0: the connection stays open
	}{
		{"empty text frame", websocket.MessageText, nil, 0},
		{"empty binary frame", websocket.MessageBinary, nil, 0},
		{"binary garbage", websocket.MessageBinary, []byte{0xde, 0xad, 0xbe, 0xef, 0}, 0},
		{"unknown text", websocket.MessageText, []byte(`{"type":"hello","x":1}`), 0},
		{"invalid UTF-8 text", websocket.MessageText, []byte{'a', 0xff, 0xfe}, websocket.StatusInvalidFramePayloadData},
		{"frame over --read-limit", websocket.MessageText, []byte(strings.Repeat("x", 2000)), websocket.StatusMessageTooBig},
	}
	for i, tc := range cases {
		id := fmt.Sprint("attacker-", i)
		c := s.dial(t, id)
		if err := c.c.Write(ctx, tc.typ, tc.data); err != nil {
			t.Fatalf("%s: write: %v", tc.name, err)
		}
		if tc.code != 0 {
			if got := c.closeCode(); got != tc.code {
				t.Fatalf("%s: close code %d, want %d", tc.name, got, tc.code)
			}
			eventually(t, "attacker gone", func() bool { return s.online(t, id) == 0 })
		} else {
			// Still connected and served: ping answered after the frame.
			c.c.Write(ctx, websocket.MessageText, []byte("ping"))
			c.expect(`{"type":"pong"}`)
		}
		want := fmt.Sprintf(`{"after":%d}`, i)
		if _, err := s.api.SendToUser(ctx, &pb.SendToUserRequest{UserId: "canary", Message: jsonMsg(want)}); err != nil {
			t.Fatal(err)
		}
		canary.expect(want)
	}
	if v := s.metric(t, `pushgate_connections_closed_total{reason="invalid_frame"}`); v != 1 {
		t.Errorf("invalid_frame closes = %v, want 1", v)
	}
	eventually(t, "message_too_big counted", func() bool {
		return s.metric(t, `pushgate_connections_closed_total{reason="message_too_big"}`) == 1
	})
}

func TestDemoPageAndHealthEndpoints(t *testing.T) {
	s := startServer(t)
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + s.app.HTTPAddr() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, page := get("/")
	if code != 200 || !strings.Contains(page, "pushgate.v1.PushService/SendToUser") || !strings.Contains(page, s.app.GRPCAddr()) {
		t.Fatalf("demo page: %d, missing the grpcurl command or the gRPC address", code)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Fatalf("/healthz = %d", code)
	}
	eventually(t, "ready", func() bool { code, _ := get("/readyz"); return code == 200 })
	if code, _ := get("/nope"); code != 404 {
		t.Fatalf("/nope = %d", code)
	}
	// A plain GET on /ws is not an upgrade: refused with a clear status.
	if code, body := get("/ws/someone"); code != http.StatusUpgradeRequired {
		t.Fatalf("/ws without upgrade = %d %s", code, body)
	}
	// An invalid user id is refused before the upgrade.
	_, resp, err := websocket.Dial(context.Background(), "ws://"+s.app.HTTPAddr()+"/ws?user_id="+strings.Repeat("x", 200), nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("long user id: %v %v", resp, err)
	}
}

func TestUserIsOnlineAsSoonAsTheHandshakeReturns(t *testing.T) {
	s := startServer(t)
	for i := range 50 {
		id := fmt.Sprint("fresh-", i)
		c := s.dial(t, id) // no waiting: the page's "open" event has fired
		r, err := s.api.SendToUser(context.Background(), &pb.SendToUserRequest{UserId: id, Message: textMsg("welcome")})
		if err != nil {
			t.Fatal(err)
		}
		if !r.GetOnline() || r.GetDeliveredConnections() != 1 {
			t.Fatalf("right after the handshake: %v", r)
		}
		c.expect("welcome")
	}
}

func TestNotReadyBeforeRefusingConnections(t *testing.T) {
	s := startServer(t, "--shutdown-delay", "2s")
	url := "http://" + s.app.HTTPAddr() + "/readyz"
	eventually(t, "ready", func() bool {
		r, err := http.Get(url)
		if err != nil {
			return false
		}
		r.Body.Close()
		return r.StatusCode == 200
	})
	s.cancel()
	// During the delay the listener still answers, with 503.
	eventually(t, "not ready", func() bool {
		r, err := http.Get(url)
		if err != nil {
			t.Fatalf("connection refused before /readyz reported not ready: %v", err)
		}
		r.Body.Close()
		return r.StatusCode == http.StatusServiceUnavailable
	})
	s.stop(t)
}

func TestLoopbackListenerRefusesOtherHostNames(t *testing.T) {
	s := startServer(t)
	for _, tc := range []struct {
		host string
		want int
	}{
		{"evil.example.com", http.StatusForbidden},
		{"evil.example.com:80", http.StatusForbidden},
		{"localhost:8080", http.StatusOK},
		{s.app.HTTPAddr(), http.StatusOK},
	} {
		req, _ := http.NewRequest("GET", "http://"+s.app.HTTPAddr()+"/healthz", nil)
		req.Host = tc.host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("Host %s: %d, want %d", tc.host, resp.StatusCode, tc.want)
		}
	}
	// A WebSocket from a rebound name is refused before the upgrade.
	req := http.Header{"Host": {"evil.example.com"}}
	_, resp, err := websocket.Dial(context.Background(), "ws://"+s.app.HTTPAddr()+"/ws/victim", &websocket.DialOptions{Host: "evil.example.com", HTTPHeader: req})
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("rebound WebSocket: %v %v", resp, err)
	}
}
