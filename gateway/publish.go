package gateway

import (
	"context"
	"errors"
	"log/slog"
	"strconv"

	"pushgate/gateway/limit"
)

// Client publish (PROTOCOL.md, "publish" and "direct"): an envelope client
// may publish to a topic, or send a message to a named user, when its
// token's "pub" or "dm" claim, or the server's patterns
// (Config.ClientPublishTopics, ClientDirectUsers), allow it. The message
// carries the sender's user id as the connection identified it (From),
// never a value from the client, and is live only. Each publish counts
// against the connection's publish budget (Config.ClientPublishPerSecond)
// on top of the frame rate; past it the connection is closed with 4002.

// grants are what a connection's token lets it publish: topic rules (exact
// or "prefix*") and user id patterns. Empty: only what the server's
// patterns allow.
type grants struct {
	pub []string
	dm  []string
	// presence: topic rules from "presence", the topics whose presence
	// the user's clients may read (presence.go).
	presence []string
}

// maxClientTypeBytes is the longest type a client may give a message (the
// API's limit).
const maxClientTypeBytes = 64

// newPublishBucket is a connection's budget of publishes.
func newPublishBucket(cfg *Config) *limit.Bucket {
	r := cfg.ClientPublishPerSecond
	return limit.NewBucket(r, int(2*r)+1)
}

// mayPublish reports whether c may publish to topic.
func (c *Conn) mayPublish(topic string) bool {
	c.mu.Lock()
	pub := c.grants.pub
	c.mu.Unlock()
	return len(pub) > 0 && TopicAllowed(pub, topic) ||
		len(c.hub.cfg.ClientPublishTopics) > 0 && TopicAllowed(c.hub.cfg.ClientPublishTopics, topic)
}

// mayDirect reports whether c may send a message to userID.
func (c *Conn) mayDirect(userID string) bool {
	c.mu.Lock()
	dm := c.grants.dm
	c.mu.Unlock()
	for _, p := range dm {
		if MatchUserPattern(p, userID) {
			return true
		}
	}
	for _, p := range c.hub.cfg.ClientDirectUsers {
		if MatchUserPattern(p, userID) {
			return true
		}
	}
	return false
}

// opPublish publishes a client's message to a topic (op "publish") or to a
// user's connections (op "direct").
func (c *Conn) opPublish(op clientOp) {
	m := c.hub.metrics
	direct := op.Op == "direct"
	switch {
	case direct && op.UserID == "":
		c.send(errorFrame(op.Ref, "bad_request", `direct needs "user_id"`))
		return
	case direct:
		if err := ValidUserID(op.UserID, c.hub.cfg.MaxUserIDBytes); err != nil {
			c.send(errorFrame(op.Ref, "bad_request", "user_id: "+err.Error()))
			return
		}
	default:
		if err := ValidTopic(op.Topic); err != nil {
			c.send(errorFrame(op.Ref, "bad_topic", "topic: "+err.Error()))
			return
		}
	}
	if len(op.Data) == 0 {
		c.send(errorFrame(op.Ref, "bad_request", op.Op+` needs "data"`))
		return
	}
	if len(op.Type) > maxClientTypeBytes {
		c.send(errorFrame(op.Ref, "bad_request", "type: at most "+strconv.Itoa(maxClientTypeBytes)+" bytes"))
		return
	}
	if direct && !c.mayDirect(op.UserID) || !direct && !c.mayPublish(op.Topic) {
		m.clientPublishForbidden.Inc()
		if direct {
			c.send(errorFrame(op.Ref, "forbidden", "not allowed to send messages to "+op.UserID))
		} else {
			c.send(errorFrame(op.Ref, "forbidden", "not allowed to publish to "+op.Topic))
		}
		return
	}
	if !c.limits().publish.Allow() {
		m.clientPublishRateLimited.Inc()
		c.rateLimited()
		return
	}
	p := Push{Type: op.Type, Kind: KindJSON, Data: op.Data, From: c.userID}
	ctx, cancel := context.WithTimeout(context.Background(), c.hub.cfg.EngineTimeout)
	defer cancel()
	var sent Sent
	var err error
	if direct {
		sent, err = c.hub.eng.SendToUsers(ctx, []string{op.UserID}, p)
	} else {
		if op.ExcludeSender {
			p.ExcludeConns = []string{c.idString()}
		}
		sent, err = c.hub.eng.Publish(ctx, op.Topic, p)
	}
	if err != nil {
		if !errors.Is(err, ErrUnavailable) {
			c.hub.logLimited(slog.LevelError, "client publish failed", "user", c.userID, "conn", c.idString(), "err", err)
		}
		c.send(errorFrame(op.Ref, "unavailable", "the message could not be published; send it again"))
		return
	}
	m.clientPublished.Inc()
	c.send(publishedFrame(op.Ref, sent.ID))
}

// publishedFrame builds {"op":"published","ref":ref,"id":id}.
func publishedFrame(ref []byte, id string) frame {
	f := replyFrame("published", ref, "")
	f.data = append(f.data[:len(f.data)-1], `,"id":"`+id+`"}`...)
	return f
}
