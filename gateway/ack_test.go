package gateway

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// ackSpy is the memory engine, telling the test what reaches Ack.
type ackSpy struct {
	Engine
	acks chan []string
}

func (a *ackSpy) Ack(ctx context.Context, userID, connID string, ids []string, implicit bool) error {
	a.acks <- slices.Clone(ids)
	return a.Engine.Ack(ctx, userID, connID, ids, implicit)
}

// An ack reaches the engine only with message ids, each once, at most an
// inbox's worth (the newest), and within the connection's id budget.
func TestAckIDsAreValidatedDeduplicatedCappedAndLimited(t *testing.T) {
	spy := &ackSpy{acks: make(chan []string, 10)}
	_, srv := testHubWith(t, Config{InboxMessages: 5, UpstreamPerSecond: 2}, nil, func(n Node) (Engine, error) {
		e, err := MemoryEngine()(n)
		spy.Engine = e
		return spy, err
	})
	c := dialEnvelope(t, "ws"+srv.URL[4:]+"/ws/u")
	ctx := context.Background()
	read := func() string {
		t.Helper()
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		_, b, err := c.Read(rctx)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	ack := func(ids []string) {
		t.Helper()
		b, _ := json.Marshal(map[string]any{"op": "ack", "ids": ids, "ref": 1})
		if err := c.Write(ctx, websocket.MessageText, b); err != nil {
			t.Fatal(err)
		}
	}
	read() // hello

	ack([]string{NewID(), "not-an-id"})
	if got := read(); !strings.Contains(got, `"code":"bad_request"`) {
		t.Fatalf("ack with a bad id: %s", got)
	}
	select {
	case ids := <-spy.acks:
		t.Fatalf("a bad ack reached the engine: %v", ids)
	default:
	}

	// 8 distinct ids, shuffled and repeated: the engine gets the newest 5,
	// once each (the budget: 5 + 2×2 + 1 = 10).
	ids := make([]string, 8)
	for i := range ids {
		ids[i] = NewID()
	}
	sent := append(slices.Clone(ids), ids...)
	rand.Shuffle(len(sent), func(i, j int) { sent[i], sent[j] = sent[j], sent[i] })
	ack(sent)
	if got := read(); got != `{"op":"acked","ref":1}` {
		t.Fatalf("ack: %s", got)
	}
	if got := <-spy.acks; !slices.Equal(got, ids[3:]) {
		t.Fatalf("engine got %v, want the newest 5: %v", got, ids[3:])
	}
	// 5 more ids would go past what is left of the budget (5): 4002.
	ack(ids[:5])
	ack(ids[3:])
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		if _, b, err := c.Read(rctx); err != nil {
			if code := websocket.CloseStatus(err); code != CloseRateLimited.Code {
				t.Fatalf("ended with %v, want close %d", err, CloseRateLimited.Code)
			}
			break
		} else if string(b) != `{"op":"acked","ref":1}` {
			t.Fatalf("got %s", b)
		}
	}
}
