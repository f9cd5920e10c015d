package gateway

import (
	"context"
	"testing"
	"time"
)

// A subscription without a position starts at the topic's position: kept
// messages delivered again while it joins (a node catching its
// subscribers up after a lost Redis subscription does that) are not
// queued after its subscribed frame, whose last_id is newer than them.
func TestTopicJoinWithoutPositionSkipsOlderHeld(t *testing.T) {
	cfg := DefaultConfig()
	cfg.TopicHistory = []TopicHistoryRule{{Pattern: "todo:*", Messages: 10, TTL: time.Minute}}
	h := newTestHub(t, cfg)
	ctx := context.Background()
	const topic = "todo:1"
	for range 3 {
		if _, err := h.eng.Publish(ctx, topic, Push{Kind: KindJSON, Data: []byte(`1`)}); err != nil {
			t.Fatal(err)
		}
	}
	kept, err := h.eng.TopicHistory(ctx, TopicHistoryRequest{Topic: topic, LastID: "0"})
	if err != nil || len(kept.Replay) != 3 {
		t.Fatalf("kept %d messages (%v), want 3", len(kept.Replay), err)
	}

	c := &Conn{id: 1, hub: h, userID: "u1", envelope: true}
	if _, err := h.subscribeLocal(c, topic, true); err != nil {
		t.Fatal(err)
	}
	for _, m := range kept.Replay {
		h.DeliverTopic(m) // the catch-up, while c joins
	}
	if err := h.joinTopic(c, topic, nil, nil); err != nil {
		t.Fatal(err)
	}
	// A message published after the join reaches c once, after the frame.
	if _, err := h.eng.Publish(ctx, topic, Push{Kind: KindJSON, Data: []byte(`2`)}); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	frames := append([]frame(nil), c.q.frames...)
	c.mu.Unlock()
	if len(frames) != 2 || frames[0].msg != nil || frames[1].msg == nil || string(frames[1].msg.Data) != "2" {
		for i, f := range frames {
			if f.msg != nil {
				t.Logf("frame %d: message %s %s", i, f.msg.ID, f.msg.Data)
			} else {
				t.Logf("frame %d: %s", i, f.data)
			}
		}
		t.Fatalf("queued %d frames, want the subscribed frame and the new message", len(frames))
	}
}
