package gateway

import (
	"bytes"
	"context"
	"slices"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// joinEngine is an engine whose Join waits, so a test can deliver messages
// to a connection while it joins, as any engine may. It implements only
// what the hub calls; the API half is the engines' own (memory_test.go,
// package redisengine).
type joinEngine struct {
	Engine                // nil: the API is not used here
	node    Node          // the hub, to deliver through
	joining chan struct{} // closed when Join is called
	release chan struct{} // Join returns when closed
	joined  Joined
}

func (f *joinEngine) Join(ctx context.Context, j JoinRequest) (Joined, error) {
	close(f.joining)
	<-f.release
	return f.joined, nil
}
func (f *joinEngine) Left(string)                                               {}
func (f *joinEngine) Subscribe(context.Context, string) error                   { return nil }
func (f *joinEngine) Unsubscribed(string)                                       {}
func (f *joinEngine) Upstream(context.Context, Event) error                     { return nil }
func (f *joinEngine) Ack(context.Context, string, string, []string, bool) error { return nil }
func (f *joinEngine) Close(context.Context) error                               { return nil }

func (f *joinEngine) make(n Node) (Engine, error) { f.node = n; return f, nil }

// Messages that reach a connection while it joins wait behind its hello and
// replay; those from before the join (by id) are dropped, stored ones that
// are in the replay are not sent twice.
func TestJoiningConnectionGetsHelloReplayThenLive(t *testing.T) {
	ids := make([]string, 6)
	for i := range ids {
		ids[i] = NewID()
	}
	msg := func(id, data string, stored bool) *Message {
		return &Message{ID: id, Kind: KindJSON, Data: []byte(data), stored: stored, Time: time.Now()}
	}
	replayed := msg(ids[1], `"replayed"`, true)
	f := &joinEngine{joining: make(chan struct{}), release: make(chan struct{}),
		joined: Joined{Epoch: "e1", Seq: ids[2], Replay: []*Message{replayed}, Complete: true}}
	h, srv := testHubWith(t, Config{}, nil, f.make)

	got := make(chan []byte, 1)
	go func() {
		c := dialEnvelope(t, "ws"+srv.URL[4:]+"/ws/u")
		var all [][]byte
		for len(all) < 5 {
			_, data, err := c.Read(context.Background())
			if err != nil {
				break
			}
			all = append(all, bytes.Split(data, []byte("\n"))...)
		}
		got <- bytes.Join(all, []byte("\n"))
	}()
	<-f.joining
	h.DeliverBroadcast(msg(ids[0], `"broadcast before the join"`, false), nil)
	h.Deliver([]string{"u"}, msg(ids[1], `"replayed"`, true)) // also live: once only
	h.DeliverBroadcast(msg(ids[3], `"broadcast after"`, false), nil)
	h.Deliver([]string{"u"}, msg(ids[4], `"stored after"`, true))
	h.Deliver([]string{"u"}, msg(ids[4], `"stored after"`, true)) // caught up again: once only
	close(f.release)
	h.Deliver([]string{"u"}, msg(ids[5], `"live"`, false))

	var frames []byte
	select {
	case frames = <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("no frames")
	}
	lines := bytes.Split(frames, []byte("\n"))
	want := []string{`"op":"hello"`, `"data":"replayed"`, `"data":"broadcast after"`, `"data":"stored after"`, `"data":"live"`}
	if len(lines) != len(want) {
		t.Fatalf("got %d frames, want %d:\n%s", len(lines), len(want), frames)
	}
	for i, w := range want {
		if !bytes.Contains(lines[i], []byte(w)) {
			t.Fatalf("frame %d = %s, want %s\nall:\n%s", i, lines[i], w, frames)
		}
	}
	if !bytes.Contains(lines[0], []byte(`"epoch":"e1"`)) {
		t.Fatalf("hello %s, want the engine's epoch", lines[0])
	}
}

func TestMessageEncodingRoundTrip(t *testing.T) {
	m := &Message{ID: NewID(), Type: "order", Kind: KindBinary, Data: []byte{0, 1, 2, '\n', 0}, Topic: "store:1",
		TTL: time.Minute, Time: time.Unix(1700000000, 123), stored: true}
	got, err := DecodeMessage(EncodeMessage(m))
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != m.ID || got.Type != m.Type || got.Kind != m.Kind || !bytes.Equal(got.Data, m.Data) || got.Topic != m.Topic ||
		got.TTL != m.TTL || !got.Time.Equal(m.Time) || !got.stored || got.broadcast {
		t.Fatalf("round trip: %+v, want %+v", got, m)
	}
	if got.Exclude != nil || EncodeMessage(m)[0] != 1 {
		t.Fatalf("a message without excluded connections: Exclude %q, version %d; want none, 1", got.Exclude, EncodeMessage(m)[0])
	}
	for _, bad := range [][]byte{nil, {1}, append([]byte{2}, EncodeMessage(m)[1:]...), append([]byte{8}, EncodeMessage(m)[1:]...), EncodeMessage(m)[:50]} {
		if _, err := DecodeMessage(bad); err == nil {
			t.Fatalf("DecodeMessage(%q) accepted", bad)
		}
	}

	m.Exclude = []string{"c1-AAAA", "c22-BBBB"}
	m.From = "alice"
	enc := EncodeMessage(m)
	got, err = DecodeMessage(enc)
	if err != nil {
		t.Fatal(err)
	}
	if enc[0] != msgVersion+msgExtras || !slices.Equal(got.Exclude, m.Exclude) || got.From != "alice" || !bytes.Equal(got.Data, m.Data) || got.Topic != m.Topic || got.Type != m.Type {
		t.Fatalf("round trip with excluded connections (version %d): %+v, want %+v", enc[0], got, m)
	}
	if _, err := DecodeMessage(enc[:len(enc)-len(m.Data)-8]); err == nil {
		t.Fatalf("DecodeMessage accepted an encoding cut inside its excluded ids")
	}
	m.Exclude = nil // a sender alone is version 2 too
	if got, err := DecodeMessage(EncodeMessage(m)); err != nil || got.From != "alice" || got.Exclude != nil || !bytes.Equal(got.Data, m.Data) {
		t.Fatalf("round trip with a sender only: %+v, %v", got, err)
	}
}

// What a joining connection holds counts against its queue's caps: past
// them it is closed as a slow consumer, like any other.
func TestJoiningConnectionHoldsWithinTheQueueCaps(t *testing.T) {
	f := &joinEngine{joining: make(chan struct{}), release: make(chan struct{}), joined: Joined{Epoch: "e1"}}
	h, srv := testHubWith(t, Config{QueueMessages: 3}, nil, f.make)
	code := make(chan websocket.StatusCode, 1)
	go func() {
		c := dialEnvelope(t, "ws"+srv.URL[4:]+"/ws/u")
		for {
			if _, _, err := c.Read(context.Background()); err != nil {
				code <- websocket.CloseStatus(err)
				return
			}
		}
	}()
	<-f.joining
	for range 4 {
		h.DeliverBroadcast(&Message{ID: NewID(), Kind: KindText, Data: []byte("x"), Time: time.Now()}, nil)
	}
	close(f.release)
	select {
	case c := <-code:
		if c != CloseSlowConsumer.Code {
			t.Fatalf("closed with %d, want %d (slow consumer)", c, CloseSlowConsumer.Code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("connection not closed")
	}
}
