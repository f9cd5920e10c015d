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

// The memory engine keeps at most Config.TopicHistoryTotal topic records:
// past it a new topic's message is delivered but neither kept nor
// recorded, and a resume of a topic with no record from before it is told
// recovered: false; from after it, true.
func TestTopicRecordsCapped(t *testing.T) {
	cfg := DefaultConfig()
	cfg.TopicHistory = []TopicHistoryRule{{Pattern: "todo:*", Messages: 10, TTL: time.Minute}}
	cfg.TopicHistoryTotal = 2
	h := newTestHub(t, cfg)
	e := h.eng.(*memoryEngine)
	ctx := context.Background()
	before := NewID()
	time.Sleep(2 * time.Millisecond) // ids and record times have millisecond resolution
	for _, topic := range []string{"todo:a", "todo:b", "todo:c", "todo:d"} {
		if _, err := h.eng.Publish(ctx, topic, Push{Kind: KindJSON, Data: []byte(`1`)}); err != nil {
			t.Fatal(err)
		}
	}
	if n := e.topicRecords.Load(); n != 2 {
		t.Fatalf("%d topic records, want 2", n)
	}
	for _, topic := range []string{"todo:c", "todo:never"} {
		hist, err := h.eng.TopicHistory(ctx, TopicHistoryRequest{Topic: topic, LastID: before})
		if err != nil || hist.Complete || len(hist.Replay) != 0 {
			t.Fatalf("%s from before the unrecorded messages: complete %v, %d replayed (%v); want incomplete", topic, hist.Complete, len(hist.Replay), err)
		}
	}
	time.Sleep(2 * time.Millisecond)
	after := NewID()
	hist, err := h.eng.TopicHistory(ctx, TopicHistoryRequest{Topic: "todo:never", LastID: after})
	if err != nil || !hist.Complete {
		t.Fatalf("from after them: complete %v (%v), want complete", hist.Complete, err)
	}
	// The records still there keep their messages.
	hist, err = h.eng.TopicHistory(ctx, TopicHistoryRequest{Topic: "todo:a", LastID: before})
	if err != nil || !hist.Complete || len(hist.Replay) != 1 {
		t.Fatalf("todo:a: complete %v, %d replayed (%v); want the one message", hist.Complete, len(hist.Replay), err)
	}
}
