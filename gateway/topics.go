package gateway

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"strings"
	"sync"
)

// MaxTopicBytes is the longest topic name.
const MaxTopicBytes = 128

// ValidTopic checks a topic name: 1 to 128 bytes of ASCII letters, digits
// and . _ : @ / -.
func ValidTopic(t string) error {
	if t == "" {
		return errors.New("empty")
	}
	if len(t) > MaxTopicBytes {
		return fmt.Errorf("longer than %d bytes", MaxTopicBytes)
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("._:@/-", c) >= 0) {
			return fmt.Errorf("character %q not allowed (letters, digits and . _ : @ / - only)", c)
		}
	}
	return nil
}

// TopicAllowed reports whether topic matches one of the rules: an exact
// name, or a prefix followed by "*" ("store:*" matches "store:1"). A nil
// rule list allows everything (development identity).
func TopicAllowed(rules []string, topic string) bool {
	if rules == nil {
		return true
	}
	for _, r := range rules {
		if p, ok := strings.CutSuffix(r, "*"); ok {
			if strings.HasPrefix(topic, p) {
				return true
			}
		} else if r == topic {
			return true
		}
	}
	return false
}

// topicShard holds the subscribers of the topics that hash to it.
type topicShard struct {
	mu     sync.RWMutex
	topics map[string]map[*Conn]struct{} // guarded by mu
	// users counts each topic's subscribed connections by user (topic
	// presence); guarded by mu.
	users map[string]map[string]int
}

// TopicUserConns implements Node.
func (h *Hub) TopicUserConns(topic, userID string) int {
	ts := h.topicShard(topic)
	ts.mu.RLock()
	defer ts.mu.RUnlock()
	return ts.users[topic][userID]
}

// countTopicUserLocked adds d to userID's connections on topic; ts.mu is
// held.
func (ts *topicShard) countTopicUserLocked(topic, userID string, d int) {
	if ts.users == nil {
		ts.users = make(map[string]map[string]int)
	}
	us := ts.users[topic]
	if us == nil {
		us = make(map[string]int)
		ts.users[topic] = us
	}
	if n := us[userID] + d; n > 0 {
		us[userID] = n
	} else {
		delete(us, userID)
		if len(us) == 0 {
			delete(ts.users, topic)
		}
	}
}

// TopicConns implements Node.
func (h *Hub) TopicConns(topic string) int {
	ts := h.topicShard(topic)
	ts.mu.RLock()
	defer ts.mu.RUnlock()
	return len(ts.topics[topic])
}

func (h *Hub) topicShard(topic string) *topicShard {
	return &h.topicShards[maphash.String(h.seed, topic)%numShards]
}

// subscribe adds c to topic. It fails if the connection is closing, the
// topic is not allowed for it, or it holds too many topics. Subscribing
// twice is not an error. An envelope connection gets the "subscribed"
// frame (with ref) for a subscribe op (op) or for a topic that keeps
// history or was given a position (pos): for a topic with history it
// comes before the topic's replay (joinTopic).
func (h *Hub) subscribe(c *Conn, topic string, ref []byte, pos *TopicPosition, op bool) error {
	_, history := h.cfg.HistoryOf(topic)
	added, err := h.subscribeLocal(c, topic, history)
	if err != nil {
		return err
	}
	h.eng.TopicUserChanged(topic, c.userID)
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.EngineTimeout)
	defer cancel()
	if err := h.eng.Subscribe(ctx, topic); err != nil {
		if added {
			h.unsubscribe(c, topic)
		}
		return ErrUnavailable
	}
	if added && history {
		if err := h.joinTopic(c, topic, ref, pos); err != nil {
			h.unsubscribe(c, topic)
			return err
		}
		return nil
	}
	if !c.envelope {
		return nil
	}
	switch {
	case history && op:
		// Subscribed already (by topics= in the URL, or an earlier op):
		// the reply names the epoch; the position is the one the first
		// subscription gave and the messages since.
		hist, err := h.eng.TopicHistory(ctx, TopicHistoryRequest{Topic: topic})
		if err != nil {
			return ErrUnavailable
		}
		c.send(subscribedFrame(ref, topic, hist.Epoch, "", 0, nil))
	case pos != nil && added:
		// The topic keeps no history: what the client missed is lost.
		lost := false
		c.send(subscribedFrame(ref, topic, "", "", 0, &lost))
	case op:
		c.send(replyFrame("subscribed", ref, topic))
	}
	return nil
}

// subscribeLocal adds c to topic's registry, holding the topic's messages
// when it keeps history (until joinTopic). added is false when c was
// subscribed already.
func (h *Hub) subscribeLocal(c *Conn, topic string, history bool) (added bool, err error) {
	// c.mu is held while the registry changes so that remove, which takes
	// the topic list under c.mu after closing is set, cannot miss it.
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return false, errClosing
	}
	if !TopicAllowed(c.rules, topic) {
		return false, errForbiddenTopic
	}
	if _, ok := c.topics[topic]; ok {
		return false, nil
	}
	if len(c.topics) >= h.cfg.MaxTopicsPerConn {
		return false, errTooManyTopics
	}
	if c.topics == nil {
		c.topics = make(map[string]struct{})
	}
	c.topics[topic] = struct{}{}
	if history {
		if c.topicHold == nil {
			c.topicHold = make(map[string][]*Message)
		}
		c.topicHold[topic] = nil
	}
	ts := h.topicShard(topic)
	ts.mu.Lock()
	subs := ts.topics[topic]
	if subs == nil {
		subs = make(map[*Conn]struct{})
		ts.topics[topic] = subs
	}
	subs[c] = struct{}{}
	ts.countTopicUserLocked(topic, c.userID, 1)
	ts.mu.Unlock()
	h.metrics.subscriptions.Inc()
	return true, nil
}

// unsubscribe removes c from topic; it reports whether c was subscribed.
func (h *Hub) unsubscribe(c *Conn, topic string) bool {
	c.mu.Lock()
	_, ok := c.topics[topic]
	delete(c.topics, topic)
	for _, m := range c.topicHold[topic] {
		c.q.bytes -= m.size()
	}
	delete(c.topicHold, topic)
	delete(c.topicLast, topic)
	c.mu.Unlock()
	if ok {
		h.dropSubscriber(c, topic)
	}
	return ok
}

func (h *Hub) dropSubscriber(c *Conn, topic string) {
	ts := h.topicShard(topic)
	ts.mu.Lock()
	if subs := ts.topics[topic]; subs != nil {
		if _, ok := subs[c]; ok {
			ts.countTopicUserLocked(topic, c.userID, -1)
		}
		delete(subs, c)
		if len(subs) == 0 {
			delete(ts.topics, topic)
		}
	}
	ts.mu.Unlock()
	h.metrics.subscriptions.Dec()
	h.eng.Unsubscribed(topic)
	h.eng.TopicUserChanged(topic, c.userID)
}

var (
	errForbiddenTopic = errors.New("topic not allowed for this connection")
	errTooManyTopics  = errors.New("too many topics on this connection")
	errClosing        = errors.New("connection is closing")
)
