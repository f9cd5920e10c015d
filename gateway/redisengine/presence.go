package redisengine

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"pushgate/gateway"
)

// Topic presence (scripts.lua, tp_set): each node writes, per topic and
// user, how many of its connections of the user are subscribed, in the
// same script as the topic's count, in order under the topic's stripe
// lock. Redis keeps the topic's users (P:tu:<topic>, ordered by id, for
// pages) and each one's count per node (P:tpc:<topic>|<user>); a page
// counts only live nodes, so a dead node's subscribers leave it with the
// node's lease, and the reaper removes them (reporting the leaves) soon
// after.

// TopicUserChanged implements gateway.Engine: the node's count of the
// user's subscriptions is written with the topic's next write (Subscribe,
// or soon by the worker).
func (e *Engine) TopicUserChanged(topic, userID string) {
	e.markTopicUsers(topic, map[string]struct{}{userID: {}})
	e.kick()
}

// markTopicUsers marks users' counts on topic for writing.
func (e *Engine) markTopicUsers(topic string, users map[string]struct{}) {
	if len(users) == 0 {
		return
	}
	e.dirtyMu.Lock()
	defer e.dirtyMu.Unlock()
	d := e.dirtyTopicUsers[topic]
	if d == nil {
		d = make(map[string]struct{}, len(users))
		e.dirtyTopicUsers[topic] = d
	}
	for u := range users {
		d[u] = struct{}{}
	}
}

// takeTopicUsers returns the users whose counts on topic wait to be
// written, and unmarks them.
func (e *Engine) takeTopicUsers(topic string) map[string]struct{} {
	e.dirtyMu.Lock()
	defer e.dirtyMu.Unlock()
	users := e.dirtyTopicUsers[topic]
	delete(e.dirtyTopicUsers, topic)
	return users
}

// topicUserArgsLocked reads the node's counts of users on topic and
// returns them as the "topics" script takes them: how many, then (user
// count)...; it records which users the node may hold (tusers). The
// topic's stripe lock is held.
func (e *Engine) topicUserArgsLocked(topic string, users map[string]struct{}) []any {
	args := make([]any, 0, 1+2*len(users))
	args = append(args, len(users))
	i := e.stripe(topic)
	held := e.tusers[i][topic]
	for u := range users {
		n := e.node.TopicUserConns(topic, u)
		args = append(args, u, n)
		switch {
		case n > 0 && held == nil:
			held = map[string]struct{}{u: {}}
			e.tusers[i][topic] = held
		case n > 0:
			held[u] = struct{}{}
		default:
			delete(held, u)
		}
	}
	if held != nil && len(held) == 0 {
		delete(e.tusers[i], topic)
	}
	return args
}

// markLocalTopicUsers marks every user the node may hold subscriptions of
// for writing (a resync).
func (e *Engine) markLocalTopicUsers() {
	for i := range e.tmu {
		e.tmu[i].Lock()
		held := make(map[string]map[string]struct{}, len(e.tusers[i]))
		for t, us := range e.tusers[i] {
			cp := make(map[string]struct{}, len(us))
			for u := range us {
				cp[u] = struct{}{}
			}
			held[t] = cp
		}
		e.tmu[i].Unlock()
		for t, us := range held {
			e.markTopicUsers(t, us)
		}
	}
}

// TopicPresence implements gateway.Engine: one script reads a page of the
// topic's users after `after` and their connections on live nodes.
func (e *Engine) TopicPresence(ctx context.Context, topic, after string, limit int) (gateway.TopicPage, error) {
	v, err := e.call(ctx, "tpresence", topic, after, limit)
	if err != nil {
		return gateway.TopicPage{}, err
	}
	r, _ := v.([]any)
	if len(r) < 4 || (len(r)-4)%2 != 0 {
		return gateway.TopicPage{}, fmt.Errorf("redis tpresence: unexpected reply %v", v)
	}
	page := gateway.TopicPage{TotalUsers: num(r[0]), TotalConnections: num(r[1]), More: num(r[2]) == 1, Next: str(r[3])}
	for i := 4; i < len(r); i += 2 {
		page.Users = append(page.Users, gateway.TopicUser{UserID: str(r[i]), Connections: int(num(r[i+1]))})
	}
	return page, nil
}

// luaStrings writes topic patterns as a Lua table of strings (the prelude's
// TPEV). Patterns hold only the characters of a topic and "*", which a
// quoted Go string writes as Lua reads it.
func luaStrings(ss []string) string {
	var b strings.Builder
	b.WriteString("{")
	for i, s := range ss {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(strconv.Quote(s))
	}
	b.WriteString("}")
	return b.String()
}
