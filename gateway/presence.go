package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"hash/maphash"
	"log/slog"
	"strconv"
	"sync"
	"time"
)

// Topic presence: who is subscribed to a topic, anywhere in the
// deployment, and with how many connections. The hub counts this node's
// subscriptions per topic and user (Node.TopicUserConns) and tells the
// engine when one changes (Engine.TopicUserChanged); the engine keeps the
// deployment's view (Engine.TopicPresence) and, for the topics matching
// Config.TopicPresenceEvents, reports a user's first subscription as
// EventTopicJoin and its last as EventTopicLeave. An envelope client may
// read a topic's presence (op "presence", PROTOCOL.md) when its token's
// "presence" claim or Config.ClientPresenceTopics allows it.

// Topic presence pages: the default size and the most one page may hold
// (the API's and a client's).
const (
	DefaultTopicPresencePage = 100
	MaxTopicPresencePage     = 1000
)

// TopicEvents reports whether joins and leaves of topic are reported
// (Config.TopicPresenceEvents).
func (c *Config) TopicEvents(topic string) bool {
	return len(c.TopicPresenceEvents) > 0 && TopicAllowed(c.TopicPresenceEvents, topic)
}

// memTopics is the memory engine's topic presence: per topic, each
// subscribed user's connections, in stripes by topic.
type memTopics struct {
	seed    maphash.Seed
	stripes [numShards]memPresenceStripe
}

type memPresenceStripe struct {
	mu     sync.Mutex
	topics map[string]map[string]int // topic -> user -> connections; guarded by mu
	conns  map[string]int            // topic -> connections; guarded by mu
}

func (t *memTopics) stripe(topic string) *memPresenceStripe {
	return &t.stripes[maphash.String(t.seed, topic)%numShards]
}

// TopicUserChanged implements Engine: the node's count is the
// deployment's. The stripe is held while the count is read and recorded,
// so concurrent changes are recorded in the order of the counts they read.
func (e *memoryEngine) TopicUserChanged(topic, userID string) {
	s := e.topics.stripe(topic)
	s.mu.Lock()
	defer s.mu.Unlock()
	n := e.node.TopicUserConns(topic, userID)
	if s.topics == nil {
		s.topics = make(map[string]map[string]int)
		s.conns = make(map[string]int)
	}
	us := s.topics[topic]
	old := us[userID]
	if n == old {
		return
	}
	if n > 0 {
		if us == nil {
			us = make(map[string]int)
			s.topics[topic] = us
		}
		us[userID] = n
	} else {
		delete(us, userID)
		if len(us) == 0 {
			delete(s.topics, topic)
		}
	}
	if c := s.conns[topic] + n - old; c > 0 {
		s.conns[topic] = c
	} else {
		delete(s.conns, topic)
	}
	if old > 0 && n > 0 || !e.cfg.TopicEvents(topic) {
		return // not the first subscription, nor the last
	}
	kind := EventTopicJoin
	if n == 0 {
		kind = EventTopicLeave
	}
	e.emit(Event{Kind: kind, UserID: userID, Topic: topic, Time: time.Now()})
	e.node.DeliverTopicPresence(topic, userID, n > 0)
}

// DeliverTopicPresence implements Node: the frame is queued on each
// envelope subscriber here (raw connections get payloads only).
func (h *Hub) DeliverTopicPresence(topic, userID string, join bool) {
	ts := h.topicShard(topic)
	tp := h.targets.Get().(*[]*Conn)
	targets := (*tp)[:0]
	ts.mu.RLock()
	for c := range ts.topics[topic] {
		if c.envelope {
			targets = append(targets, c)
		}
	}
	ts.mu.RUnlock()
	if len(targets) > 0 {
		f := topicPresenceFrame(topic, userID, join)
		for _, c := range targets {
			// An overflowing connection is closed on another goroutine:
			// closing calls the engine, which holds its stripe here.
			if c.enqueue(f) == overflowed {
				go c.closeWith(CloseSlowConsumer)
			}
		}
	}
	clear(targets)
	*tp = targets[:0]
	h.targets.Put(tp)
}

// topicPresenceFrame builds {"op":"join"|"leave","topic":t,"user_id":u}.
func topicPresenceFrame(topic, userID string, join bool) frame {
	op := "leave"
	if join {
		op = "join"
	}
	f := replyFrame(op, nil, topic)
	b := append(f.data[:len(f.data)-1], `,"user_id":`...)
	b = appendJSONString(b, userID)
	f.data = append(b, '}')
	return f
}

// TopicPresence implements Engine. Cost is O(the topic's users × log
// limit) per page.
func (e *memoryEngine) TopicPresence(_ context.Context, topic, after string, limit int) (TopicPage, error) {
	s := e.topics.stripe(topic)
	top := newSmallest(limit+1, func(u TopicUser) string { return u.UserID })
	s.mu.Lock()
	us := s.topics[topic]
	page := TopicPage{TotalUsers: int64(len(us)), TotalConnections: int64(s.conns[topic])}
	for id, n := range us {
		if after != "" && id <= after {
			continue
		}
		if top.wants(id) {
			top.add(TopicUser{UserID: id, Connections: n})
		}
	}
	s.mu.Unlock()
	users := top.sorted()
	if len(users) > limit {
		users, page.More = users[:limit], true
		page.Next = users[limit-1].UserID
	}
	page.Users = users
	return page, nil
}

// mayReadPresence reports whether c may read topic's presence.
func (c *Conn) mayReadPresence(topic string) bool {
	c.mu.Lock()
	rules := c.grants.presence
	c.mu.Unlock()
	return len(rules) > 0 && TopicAllowed(rules, topic) ||
		len(c.hub.cfg.ClientPresenceTopics) > 0 && TopicAllowed(c.hub.cfg.ClientPresenceTopics, topic)
}

// opPresence answers a client's request for a topic's presence
// (PROTOCOL.md, "presence"): a page of its users, after "after".
func (c *Conn) opPresence(op clientOp) {
	m := c.hub.metrics
	if err := ValidTopic(op.Topic); err != nil {
		c.send(errorFrame(op.Ref, "bad_topic", "topic: "+err.Error()))
		return
	}
	limit := op.Limit
	switch {
	case limit == 0:
		limit = DefaultTopicPresencePage
	case limit < 0 || limit > MaxTopicPresencePage:
		c.send(errorFrame(op.Ref, "bad_request", "limit: must be between 1 and "+strconv.Itoa(MaxTopicPresencePage)))
		return
	}
	if op.After != "" {
		if err := ValidUserID(op.After, c.hub.cfg.MaxUserIDBytes); err != nil {
			c.send(errorFrame(op.Ref, "bad_request", "after: "+err.Error()))
			return
		}
	}
	if !c.mayReadPresence(op.Topic) {
		m.presenceForbidden.Inc()
		c.send(errorFrame(op.Ref, "forbidden", "not allowed to read the presence of "+op.Topic))
		return
	}
	// Each request costs the engine a page: it counts against the
	// connection's publish budget.
	if !c.limits().publish.Allow() {
		m.clientPublishRateLimited.Inc()
		c.rateLimited()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.hub.cfg.EngineTimeout)
	defer cancel()
	page, err := c.hub.eng.TopicPresence(ctx, op.Topic, op.After, limit)
	if err != nil {
		if !errors.Is(err, ErrUnavailable) {
			c.hub.logLimited(slog.LevelError, "topic presence failed", "user", c.userID, "conn", c.idString(), "err", err)
		}
		c.send(errorFrame(op.Ref, "unavailable", "presence cannot be read now; ask again"))
		return
	}
	m.presenceRead.Inc()
	c.send(presenceFrame(op.Ref, op.Topic, page))
}

// presenceFrame builds {"op":"presence","ref":ref,"topic":t,"users":[{"user_id":u,"connections":n}...],
// "total_users":n,"total_connections":n,"next":id} (next only when there
// is more).
func presenceFrame(ref json.RawMessage, topic string, p TopicPage) frame {
	f := replyFrame("presence", ref, topic)
	b := f.data[:len(f.data)-1]
	b = append(b, `,"users":[`...)
	for i, u := range p.Users {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"user_id":`...)
		b = appendJSONString(b, u.UserID)
		b = append(b, `,"connections":`...)
		b = strconv.AppendInt(b, int64(u.Connections), 10)
		b = append(b, '}')
	}
	b = append(b, `],"total_users":`...)
	b = strconv.AppendInt(b, p.TotalUsers, 10)
	b = append(b, `,"total_connections":`...)
	b = strconv.AppendInt(b, p.TotalConnections, 10)
	if p.More {
		b = append(b, `,"next":`...)
		b = appendJSONString(b, p.Next)
	}
	f.data = append(b, '}')
	return f
}
