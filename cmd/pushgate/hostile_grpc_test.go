package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"pushgate/gateway"
	pb "pushgate/gen/pushgate/v1"
)

// h2conn is a raw HTTP/2 connection to the gRPC port that writes frames as
// an attacker would: it ignores the server's SETTINGS, never sends a key
// and never finishes a request unless told to. A reader goroutine records
// how each stream ended.
type h2conn struct {
	c       net.Conn
	started time.Time

	wmu sync.Mutex // guards fr's writes, enc, buf and next
	fr  *http2.Framer
	enc *hpack.Encoder
	buf bytes.Buffer
	// next is the next stream id.
	next uint32

	settings chan struct{} // closed at the server's first SETTINGS
	done     chan struct{} // closed when the connection ends

	mu         sync.Mutex
	maxStreams uint32                   // from the server's SETTINGS (0: not announced)
	refused    int                      // streams ended with RST_STREAM REFUSED_STREAM
	ended      map[uint32]string        // how each stream ended: "rst:<code>" or "status:<:status>/<grpc-status>"
	endedAt    map[uint32]time.Duration // when, since the dial
	err        error                    // why the connection ended
}

func dialH2(t testing.TB, addr string) (*h2conn, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	h := &h2conn{c: c, started: time.Now(), fr: http2.NewFramer(c, c), next: 1,
		settings: make(chan struct{}), done: make(chan struct{}), ended: map[uint32]string{}, endedAt: map[uint32]time.Duration{}}
	h.enc = hpack.NewEncoder(&h.buf)
	h.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	// A server that closes the connection at once fails these writes; the
	// reader then sees the end (done).
	if _, err := c.Write([]byte(http2.ClientPreface)); err == nil {
		h.fr.WriteSettings()
	}
	go h.read()
	return h, nil
}

func (h *h2conn) read() {
	defer close(h.done)
	gotSettings := false
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			h.mu.Lock()
			h.err = err
			h.mu.Unlock()
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if f.IsAck() {
				continue
			}
			h.mu.Lock()
			if v, ok := f.Value(http2.SettingMaxConcurrentStreams); ok {
				h.maxStreams = v
			}
			h.mu.Unlock()
			h.wmu.Lock()
			h.fr.WriteSettingsAck()
			h.wmu.Unlock()
			if !gotSettings {
				gotSettings = true
				close(h.settings)
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				h.wmu.Lock()
				h.fr.WritePing(true, f.Data)
				h.wmu.Unlock()
			}
		case *http2.RSTStreamFrame:
			h.end(f.StreamID, fmt.Sprintf("rst:%v", f.ErrCode))
		case *http2.MetaHeadersFrame:
			if f.StreamEnded() {
				h.end(f.StreamID, "status:"+f.PseudoValue("status")+"/"+grpcStatus(f.Fields))
			}
		case *http2.DataFrame:
			if f.StreamEnded() {
				h.end(f.StreamID, "data-end")
			}
		}
	}
}

func grpcStatus(fields []hpack.HeaderField) string {
	for _, f := range fields {
		if f.Name == "grpc-status" {
			return f.Value
		}
	}
	return "?"
}

// end records the first way a stream ended.
func (h *h2conn) end(id uint32, how string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.ended[id]; ok {
		return
	}
	h.ended[id] = how
	h.endedAt[id] = time.Since(h.started)
	if how == "rst:"+http2.ErrCodeRefusedStream.String() {
		h.refused++
	}
}

// open starts a call to method: HEADERS only, no request (no DATA, no
// END_STREAM). It returns the stream id.
func (h *h2conn) open(method string) (uint32, error) {
	h.wmu.Lock()
	defer h.wmu.Unlock()
	id := h.next
	h.next += 2
	h.buf.Reset()
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", method}, {":authority", "pushgate"},
		{"content-type", "application/grpc"}, {"te", "trailers"}} {
		h.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	return id, h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: h.buf.Bytes(), EndHeaders: true})
}

// reset cancels a stream (RST_STREAM CANCEL).
func (h *h2conn) reset(id uint32) error {
	h.wmu.Lock()
	defer h.wmu.Unlock()
	return h.fr.WriteRSTStream(id, http2.ErrCodeCancel)
}

// closedWithin reports whether the server ends the connection within d.
func (h *h2conn) closedWithin(d time.Duration) bool {
	select {
	case <-h.done:
		return true
	case <-time.After(d):
		return false
	}
}

// madeUpIDs returns n distinct ids that have the form of message ids and
// were never handed out.
func madeUpIDs(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = gateway.NewID()
	}
	return out
}

// TestHostileGRPCInput runs the attacks on the gRPC listener and the engine's
// shared tables that the suite in hostile_test.go does not: streams that
// never send their request, reset floods, connections per address,
// WatchEvents floods, ack amplification, and the global caps of the memory
// engine. Like TestHostileInput, each case has an exact outcome, and a
// client connected before them must keep receiving.
func TestHostileGRPCInput(t *testing.T) {
	const (
		maxStreams   = 20
		reqTimeout   = time.Second
		perAddress   = 8
		resetRate    = 50
		watchMax     = 6
		watchPerKey  = 4
		idemEntries  = 20
		inboxTotal   = 50
		upstreamRate = 50 // startSecure's; acks: 100 (inbox) + 2×50 + 1 ids at once
	)
	s := startSecure(t,
		"--grpc-max-streams", fmt.Sprint(maxStreams), "--grpc-request-timeout", reqTimeout.String(),
		"--grpc-max-connections-per-address", fmt.Sprint(perAddress), "--grpc-reset-rate", fmt.Sprint(resetRate),
		"--watch-max", fmt.Sprint(watchMax), "--watch-max-per-key", fmt.Sprint(watchPerKey),
		"--idempotency-max-entries", fmt.Sprint(idemEntries), "--inbox-max-total-messages", fmt.Sprint(inboxTotal),
	)
	ws := "ws://" + s.app.HTTPAddr() + "/ws"
	grpcAddr := s.app.GRPCAddr()
	ctx := context.Background()
	memory := testEngine == "memory"

	_, canary := dialStatus(t, ws, bearer(s.token(t, "canary")))
	if canary == nil {
		t.Fatal("canary refused")
	}
	canaryMsgs := readFrames(canary)
	// The clients the cases and the canary check use hold their
	// connections from here on (they count against the per-address cap).
	if _, err := s.orders.GetPresence(ctx, &pb.GetPresenceRequest{UserIds: []string{"canary"}}); err != nil {
		t.Fatal(err)
	}
	burst := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer burst-key-0123456789abcdef")
	if _, err := s.anon.GetPresence(burst, &pb.GetPresenceRequest{UserIds: []string{"canary"}}); err != nil {
		t.Fatal(err)
	}

	envConn := func(user string) (*websocket.Conn, error) {
		c, _, err := websocket.Dial(ctx, ws, &websocket.DialOptions{HTTPHeader: bearer(s.token(t, user)), Subprotocols: []string{"pushgate.v1"}})
		if err != nil {
			return nil, err
		}
		if op, _ := readEnvelope(t, c); op != "hello" {
			c.CloseNow()
			return nil, fmt.Errorf("first frame %s", op)
		}
		return c, nil
	}
	ackFrame := func(ids []string, ref string) []byte {
		var b strings.Builder
		b.WriteString(`{"op":"ack","ids":["` + strings.Join(ids, `","`) + `"]`)
		if ref != "" {
			b.WriteString(`,"ref":"` + ref + `"`)
		}
		b.WriteString("}")
		return []byte(b.String())
	}

	cases := []struct {
		name string
		run  func() error
	}{
		// Finding 2: streams before authentication.
		{"gRPC: 30 calls with no key that never send their request, on one connection", func() error {
			h, err := dialH2(t, grpcAddr)
			if err != nil {
				return err
			}
			defer h.c.Close()
			select {
			case <-h.settings:
			case <-time.After(5 * time.Second):
				return errors.New("no SETTINGS from the server")
			}
			for range 30 {
				if _, err := h.open("/pushgate.v1.PushService/SendToUser"); err != nil {
					return err
				}
			}
			deadline := time.Now().Add(reqTimeout + 5*time.Second)
			for {
				h.mu.Lock()
				n, refused, announced := len(h.ended), h.refused, h.maxStreams
				h.mu.Unlock()
				if n == 30 {
					if announced != maxStreams {
						return fmt.Errorf("SETTINGS_MAX_CONCURRENT_STREAMS = %d, want %d", announced, maxStreams)
					}
					if refused != 30-maxStreams {
						return fmt.Errorf("%d streams refused, want %d", refused, 30-maxStreams)
					}
					h.mu.Lock()
					defer h.mu.Unlock()
					for id, how := range h.ended {
						if how == "rst:"+http2.ErrCodeRefusedStream.String() {
							continue
						}
						// Ended by the request timeout, not before it.
						if how != "status:200/1" || h.endedAt[id] < reqTimeout-100*time.Millisecond {
							return fmt.Errorf("stream %d ended with %s after %v, want grpc-status 1 (CANCELLED) after %v", id, how, h.endedAt[id], reqTimeout)
						}
					}
					return nil
				}
				if time.Now().After(deadline) {
					return fmt.Errorf("after %v: %d of 30 streams ended (%d refused); the others are still held", reqTimeout+5*time.Second, n, refused)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}},
		{"gRPC: connections from one address over the cap", func() error {
			open, err := s.metricValue("pushgate_grpc_connections")
			if err != nil {
				return err
			}
			var conns []*h2conn
			defer func() {
				for _, h := range conns {
					h.c.Close()
				}
				eventually(t, "connections released", func() bool {
					v, _ := s.metricValue("pushgate_grpc_connections")
					return v == open
				})
			}()
			for i := int(open); i < perAddress; i++ {
				h, err := dialH2(t, grpcAddr)
				if err != nil {
					return err
				}
				conns = append(conns, h)
				select {
				case <-h.settings:
				case <-h.done:
					return fmt.Errorf("connection %d of %d closed: %v", i+1, perAddress, h.err)
				case <-time.After(5 * time.Second):
					return fmt.Errorf("connection %d: no SETTINGS", i+1)
				}
			}
			over, err := dialH2(t, grpcAddr)
			if err != nil {
				return err
			}
			conns = append(conns, over)
			select {
			case <-over.done:
			case <-over.settings:
				return fmt.Errorf("connection %d from one address was served", perAddress+1)
			case <-time.After(5 * time.Second):
				return fmt.Errorf("connection %d from one address is still open", perAddress+1)
			}
			if v, err := s.metricValue("pushgate_grpc_connections_refused_total"); v != 1 || err != nil {
				return fmt.Errorf("refused connections = %v (%v), want 1", v, err)
			}
			return nil
		}},
		{"gRPC: HEADERS + RST_STREAM flood (rapid reset)", func() error {
			h, err := dialH2(t, grpcAddr)
			if err != nil {
				return err
			}
			defer h.c.Close()
			<-h.settings
			for i := 0; i < 20000; i++ {
				id, err := h.open("/pushgate.v1.PushService/SendToUser")
				if err == nil {
					err = h.reset(id)
				}
				if err != nil {
					break // closed on us: good
				}
			}
			if !h.closedWithin(10 * time.Second) {
				return errors.New("20,000 HEADERS + RST_STREAM pairs and the connection is still open")
			}
			if v, err := s.metricValue("pushgate_grpc_reset_flood_closed_total"); v != 1 || err != nil {
				return fmt.Errorf("reset floods closed = %v (%v), want 1", v, err)
			}
			return nil
		}},

		// Finding 3: WatchEvents.
		{"gRPC: WatchEvents streams over the per-key and per-node caps", func() error {
			wctx, cancel := context.WithCancel(ctx)
			defer func() {
				cancel()
				eventually(t, "watchers gone", func() bool { return s.app.Hub().Watchers() == 0 })
			}()
			// watch opens a stream and returns how it answered: nil once its
			// headers say the watch is in place, or the status it ended with.
			watch := func(c context.Context, api pb.PushServiceClient) error {
				st, err := api.WatchEvents(c, &pb.WatchEventsRequest{})
				if err != nil {
					return err
				}
				if md, err := st.Header(); err != nil || md == nil {
					_, err := st.Recv() // refused: trailers only
					return err
				}
				return nil
			}
			octx := metadata.AppendToOutgoingContext(wctx, "authorization", "Bearer "+ordersKey)
			for i := range watchPerKey {
				if err := watch(octx, s.anon); err != nil {
					return fmt.Errorf("orders stream %d: %v", i+1, err)
				}
			}
			err := watch(octx, s.anon)
			if st := status.Convert(err); st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "--watch-max-per-key") {
				return fmt.Errorf("orders stream %d: %v, want RESOURCE_EXHAUSTED naming --watch-max-per-key", watchPerKey+1, err)
			}
			bctx := metadata.AppendToOutgoingContext(wctx, "authorization", "Bearer burst-key-0123456789abcdef")
			for i := watchPerKey; i < watchMax; i++ {
				if err := watch(bctx, s.anon); err != nil {
					return fmt.Errorf("burst stream %d: %v", i-watchPerKey+1, err)
				}
			}
			err = watch(bctx, s.anon)
			if st := status.Convert(err); st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "--watch-max") {
				return fmt.Errorf("stream %d on the node: %v, want RESOURCE_EXHAUSTED naming --watch-max", watchMax+1, err)
			}
			if n := s.app.Hub().Watchers(); n != watchMax {
				return fmt.Errorf("%d watchers registered, want %d", n, watchMax)
			}
			return nil
		}},

		// Finding 4: ack amplification.
		{"envelope: ack ids that are not message ids", func() error {
			c, err := envConn("acker-1")
			if err != nil {
				return err
			}
			defer c.CloseNow()
			c.Write(ctx, websocket.MessageText, ackFrame([]string{gateway.NewID(), "x' or 1=1", "0000"}, "a1"))
			if op, code := readEnvelope(t, c); op != "error" || code != "bad_request" {
				return fmt.Errorf("got %s/%s, want error bad_request", op, code)
			}
			return nil
		}},
		{"envelope: a repeated id counts once (control)", func() error {
			c, err := envConn("acker-2")
			if err != nil {
				return err
			}
			defer c.CloseNow()
			id := gateway.NewID()
			same := make([]string, 120)
			for i := range same {
				same[i] = id
			}
			for range 30 { // 3,600 ids as sent, 30 after de-duplication
				if err := c.Write(ctx, websocket.MessageText, ackFrame(same, "")); err != nil {
					return err
				}
			}
			c.Write(ctx, websocket.MessageText, []byte(`{"op":"ping","ref":"p"}`))
			if op, _ := readEnvelope(t, c); op != "pong" {
				return fmt.Errorf("got %s, want pong", op)
			}
			return nil
		}},
		{"envelope: acks of 100 made-up ids, within the frame rate", func() error {
			c, err := envConn("acker-3")
			if err != nil {
				return err
			}
			defer c.CloseNow()
			before, err := s.metricValue("pushgate_upstream_rate_limited_total")
			if err != nil {
				return err
			}
			for range 10 { // 10 frames: well within the frame burst (101)
				if err := c.Write(ctx, websocket.MessageText, ackFrame(madeUpIDs(100), "")); err != nil {
					break // the server may already have closed
				}
			}
			rctx, cancel := context.WithTimeout(ctx, waitFor)
			defer cancel()
			for {
				if _, _, err := c.Read(rctx); err != nil {
					if got := websocket.CloseStatus(err); got != 4002 {
						return fmt.Errorf("ended with %v, want close 4002", err)
					}
					break
				}
			}
			if v, err := s.metricValue("pushgate_upstream_rate_limited_total"); v != before+1 || err != nil {
				return fmt.Errorf("rate limited = %v (%v), want %v", v, err, before+1)
			}
			return nil
		}},

		// The memory engine's global caps.
		{"gRPC: new idempotency keys over --idempotency-max-entries", func() error {
			send := func(key string) error {
				_, err := s.orders.SendToUser(ctx, &pb.SendToUserRequest{UserId: "nobody", Message: &pb.Message{
					Payload: &pb.Message_Json{Json: `{}`}, IdempotencyKey: key}})
				return err
			}
			for i := range idemEntries {
				if err := send(fmt.Sprint("key-", i)); err != nil {
					return fmt.Errorf("key %d: %v", i, err)
				}
			}
			err := send("key-over")
			if !memory {
				// The Redis engine keeps keys in Redis, bounded by its
				// maxmemory: no cap here.
				return err
			}
			if st := status.Convert(err); st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "--idempotency-max-entries") {
				return fmt.Errorf("key %d: %v, want RESOURCE_EXHAUSTED naming --idempotency-max-entries", idemEntries+1, err)
			}
			// A repeat of a remembered key still gets its first result.
			if err := send("key-0"); err != nil {
				return fmt.Errorf("repeat of a remembered key: %v", err)
			}
			return nil
		}},
		{"gRPC: stored messages over --inbox-max-total-messages", func() error {
			users := make([]string, inboxTotal+10)
			for i := range users {
				users[i] = fmt.Sprint("offline-", i)
			}
			r, err := s.orders.SendToUsers(ctx, &pb.SendToUsersRequest{UserIds: users, Message: ttlMsg(`{}`, time.Minute)})
			if err != nil {
				return err
			}
			stored := 0
			for i, d := range r.GetResults() {
				if d.GetStored() {
					if stored != i {
						return fmt.Errorf("user %d stored after one that was not", i)
					}
					stored++
				}
			}
			want := inboxTotal
			if !memory {
				want = len(users) // Redis: bounded by its maxmemory
			}
			if stored != want {
				return fmt.Errorf("%d of %d stored, want %d", stored, len(users), want)
			}
			if memory {
				if v, err := s.metricValue("pushgate_inbox_full_total"); v != 10 || err != nil {
					return fmt.Errorf("inbox full = %v (%v), want 10", v, err)
				}
			}
			return nil
		}},
	}
	runHostile(t, cases, s.orders, canaryMsgs)
	t.Logf("%d hostile gRPC cases", len(cases))
}
