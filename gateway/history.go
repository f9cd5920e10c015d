package gateway

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Topic history (PROTOCOL.md, "Topic history and resume"): a topic that
// matches a TopicHistoryRule keeps the last Messages messages published to
// it, each for the rule's TTL (or the message's ttl when shorter). A
// message gets its id in the same engine step that stores it and hands it
// to Node.DeliverTopic (the memory engine under the topic's stripe, the
// Redis engine in the publish script), so a topic's ids grow in the order
// every subscriber on every node receives its messages, and "after id X"
// is exact for a topic as it is for a user's inbox.
//
// A connection that subscribes with a position (the last id it has of the
// topic, and the epoch of the engine that gave it) joins the topic in
// three steps (Hub.joinTopic):
//
//  1. It enters the topic's registry holding the topic's messages
//     (Conn.topicHold), within its queue's caps.
//  2. Engine.Subscribe routes the topic to this node; then
//     Engine.TopicHistory reads the history after the position.
//  3. Under the connection's lock, the "subscribed" frame, then the
//     history and the held messages merged in id order (each id once, none
//     at or before the position) are queued, and the topic goes live.
//
// A held message was published after step 1 made the registry hold it;
// the history holds every kept message up to the read. Both are in id
// order, so their union, in id order, is the topic's stream after the
// position: nothing twice, nothing out of order, no live message before
// the replay.

// Bounds of a topic history rule.
const (
	MaxTopicHistoryMessages = 1000
	MaxTopicHistoryTTL      = 24 * time.Hour
)

// TopicHistoryRule makes the topics matching Pattern (an exact name, or a
// prefix followed by "*", as TopicAllowed) keep their last Messages
// messages, each for at most TTL.
type TopicHistoryRule struct {
	Pattern  string
	Messages int
	TTL      time.Duration
}

// String is the rule as the flag takes it: "pattern=messages/ttl".
func (r TopicHistoryRule) String() string {
	return r.Pattern + "=" + strconv.Itoa(r.Messages) + "/" + r.TTL.String()
}

// ParseTopicHistoryRule parses "pattern=messages/ttl", for example
// "todo:*=100/10m": up to MaxTopicHistoryMessages messages, a ttl from 1s
// to MaxTopicHistoryTTL.
func ParseTopicHistoryRule(s string) (TopicHistoryRule, error) {
	pat, spec, ok := strings.Cut(s, "=")
	if !ok {
		return TopicHistoryRule{}, fmt.Errorf("%q: want pattern=messages/ttl, for example todo:*=100/10m", s)
	}
	if name := strings.TrimSuffix(pat, "*"); pat == "*" {
		// every topic
	} else if err := ValidTopic(name); err != nil {
		return TopicHistoryRule{}, fmt.Errorf("%q: pattern %q: %v (a topic name, or a prefix followed by *)", s, pat, err)
	}
	ns, ts, ok := strings.Cut(spec, "/")
	if !ok {
		return TopicHistoryRule{}, fmt.Errorf("%q: want pattern=messages/ttl, for example todo:*=100/10m", s)
	}
	n, err := strconv.Atoi(ns)
	if err != nil || n < 1 || n > MaxTopicHistoryMessages {
		return TopicHistoryRule{}, fmt.Errorf("%q: messages %q: must be a number from 1 to %d", s, ns, MaxTopicHistoryMessages)
	}
	ttl, err := time.ParseDuration(ts)
	if err != nil || ttl < time.Second || ttl > MaxTopicHistoryTTL {
		return TopicHistoryRule{}, fmt.Errorf("%q: ttl %q: must be a duration from 1s to %v (e.g. 10m)", s, ts, MaxTopicHistoryTTL)
	}
	return TopicHistoryRule{Pattern: pat, Messages: n, TTL: ttl}, nil
}

// HistoryOf returns the history rule of topic: the first rule whose
// pattern matches it. ok is false for a live-only topic.
func (c *Config) HistoryOf(topic string) (r TopicHistoryRule, ok bool) {
	return HistoryRule(c.TopicHistory, topic)
}

// HistoryRule returns the first of rules whose pattern matches topic.
func HistoryRule(rules []TopicHistoryRule, topic string) (TopicHistoryRule, bool) {
	for _, r := range rules {
		if TopicAllowed([]string{r.Pattern}, topic) {
			return r, true
		}
	}
	return TopicHistoryRule{}, false
}

// TopicHistoryTTL is how long a message p published to topic is kept, with
// rule the topic's history rule: p.TTL when it is set and shorter, else
// the rule's TTL.
func TopicHistoryTTL(rule TopicHistoryRule, ttl time.Duration) time.Duration {
	if ttl > 0 && ttl < rule.TTL {
		return ttl
	}
	return rule.TTL
}

// idTime returns when a message id was made (its first 10 characters:
// milliseconds since 1970).
func idTime(id string) time.Time {
	var ms int64
	for i := 0; i < 10 && i < len(id); i++ {
		ms = ms<<5 | int64(strings.IndexByte(crockford, id[i]))
	}
	return time.UnixMilli(ms)
}

// TopicHistoryRequest asks for a topic's history after a position.
type TopicHistoryRequest struct {
	Topic  string
	LastID string // the position: the last id the client has of the topic ("" for none)
	Epoch  string // the epoch LastID is from ("" unknown)
}

// TopicHistory is a topic's history after a position.
type TopicHistory struct {
	Epoch string // the epoch of the engine (shard) that keeps the topic
	// Seq: an id no smaller than any the topic handed out before the read;
	// every later message of the topic has a greater one. A client that
	// has everything up to it (the replay, and the messages held while it
	// joined) resumes from it.
	Seq string
	// Replay: the kept messages after LastID, in order (none without a
	// LastID).
	Replay []*Message
	// Complete: nothing published after LastID was lost (trimmed, expired,
	// not kept for room, or from another epoch). Meaningful with a LastID.
	Complete bool
}

// TopicPosition is where a client resumes a topic: its last id of the
// topic and the epoch of the subscription that gave it.
type TopicPosition struct {
	LastID string
	Epoch  string
}

// ParseTopicLastIDs parses the topic_last_ids query parameter:
// "topic=last_id[.epoch],...". Every topic must be one of topics.
func ParseTopicLastIDs(s string, topics []string) (map[string]TopicPosition, error) {
	out := make(map[string]TopicPosition)
	for _, item := range strings.Split(s, ",") {
		t, pos, ok := strings.Cut(item, "=")
		if !ok {
			return nil, fmt.Errorf("%q: want topic=last_id or topic=last_id.epoch", item)
		}
		if err := ValidTopic(t); err != nil {
			return nil, fmt.Errorf("%q: topic: %v", item, err)
		}
		if !slices.Contains(topics, t) {
			return nil, fmt.Errorf("%q: %s is not in topics", item, t)
		}
		id, ep, _ := strings.Cut(pos, ".")
		if !ValidID(id) {
			return nil, fmt.Errorf("%q: %q is not a message id", item, id)
		}
		if err := validEpoch(ep); err != nil {
			return nil, fmt.Errorf("%q: epoch: %v", item, err)
		}
		if _, dup := out[t]; dup {
			return nil, fmt.Errorf("%q: %s given twice", item, t)
		}
		out[t] = TopicPosition{LastID: id, Epoch: ep}
	}
	return out, nil
}

// validEpoch checks an epoch a client gives back: what a subscribed frame
// or hello carried (at most 32 letters and digits), or "".
func validEpoch(ep string) error {
	if len(ep) > 32 {
		return errors.New("longer than 32 characters")
	}
	for i := 0; i < len(ep); i++ {
		if c := ep[i]; !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
			return fmt.Errorf("character %q not allowed (letters and digits only)", c)
		}
	}
	return nil
}

// subscribedFrame builds the answer to a subscribe:
// {"op":"subscribed","ref":ref,"topic":topic}, then for a topic with
// history "epoch" (and "last_id", the topic's position, when not empty),
// and for a subscribe with a position "replayed" and "recovered".
func subscribedFrame(ref []byte, topic, epoch, lastID string, replayed int, recovered *bool) frame {
	f := replyFrame("subscribed", ref, topic)
	b := f.data[:len(f.data)-1]
	if epoch != "" {
		b = append(b, `,"epoch":`...)
		b = appendJSONString(b, epoch)
	}
	if lastID != "" {
		b = append(b, `,"last_id":`...)
		b = appendJSONString(b, lastID)
	}
	if recovered != nil {
		b = append(b, `,"replayed":`...)
		b = strconv.AppendInt(b, int64(replayed), 10)
		b = append(b, `,"recovered":`...)
		b = strconv.AppendBool(b, *recovered)
	}
	f.data = append(b, '}')
	return f
}

// joinTopic is step 2 and 3 of joining a topic with history, for a
// connection already in the topic's registry and holding its messages
// (subscribeLocal). It returns ErrUnavailable when the engine could not
// be asked; the caller then takes the subscription back.
func (h *Hub) joinTopic(c *Conn, topic string, ref []byte, pos *TopicPosition) error {
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.EngineTimeout)
	defer cancel()
	req := TopicHistoryRequest{Topic: topic}
	if pos != nil {
		req.LastID, req.Epoch = pos.LastID, pos.Epoch
	}
	hist, err := h.eng.TopicHistory(ctx, req)
	if err != nil {
		return ErrUnavailable
	}
	c.mu.Lock()
	held, holding := c.topicHold[topic]
	delete(c.topicHold, topic)
	if c.closing || !holding {
		c.mu.Unlock()
		return nil
	}
	for _, m := range held {
		c.q.bytes -= m.size() // counted while held; queued again below
	}
	// The subscription starts after the client's position, or, without
	// one, after the topic's position now (hist.Seq: the ids the topic
	// hands out later are greater). What was held at or before it is
	// history the client did not ask for: a node catching its
	// subscribers up after a lost Redis subscription delivers kept
	// messages again, and a joining connection holds them too.
	cut := req.LastID
	if pos == nil {
		cut = hist.Seq
	}
	msgs := mergeTopic(hist.Replay, held, cut)
	replayed := 0
	for _, m := range hist.Replay {
		if m.ID > req.LastID {
			replayed++
		}
	}
	if c.envelope {
		var recovered *bool
		if pos != nil {
			recovered = &hist.Complete
		}
		c.q.add(subscribedFrame(ref, topic, hist.Epoch, hist.Seq, replayed, recovered))
	}
	last := hist.Seq
	for _, m := range msgs {
		c.q.add(frame{msg: m})
		last = max(last, m.ID)
	}
	if c.topicLast == nil {
		c.topicLast = make(map[string]string)
	}
	c.topicLast[topic] = max(last, cut)
	start := c.startWriterLocked()
	c.mu.Unlock()
	h.metrics.topicReplayed.Add(float64(replayed))
	if start {
		go c.writeFn()
	}
	return nil
}

// mergeTopic returns the messages of replay and held with an id after
// lastID, in id order, each id once.
func mergeTopic(replay, held []*Message, lastID string) []*Message {
	out := make([]*Message, 0, len(replay)+len(held))
	for _, ms := range [][]*Message{replay, held} {
		for _, m := range ms {
			if m.ID > lastID {
				out = append(out, m)
			}
		}
	}
	slices.SortStableFunc(out, func(a, b *Message) int { return cmp.Compare(a.ID, b.ID) })
	return slices.CompactFunc(out, func(a, b *Message) bool { return a.ID == b.ID })
}

// size is what a message counts against a queue's byte cap.
func (m *Message) size() int { return len(m.Data) }
