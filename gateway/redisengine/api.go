package redisengine

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"pushgate/gateway"
)

// The API the gRPC service uses (server.Gateway), cluster-wide. Results
// count connections as Redis knows them when the call runs: a node that
// holds them and heard the message (see docs/cluster.md).

// SendToUsers implements gateway.Engine: one script stores (ttl > 0) and
// publishes the message to the users' nodes, with one id, so the id is in
// order in every recipient's stream.
func (e *Engine) SendToUsers(ctx context.Context, users []string, p gateway.Push) (gateway.Sent, error) {
	return e.sendToUsers(ctx, users, p, gateway.NewID(), time.Now())
}

// sendToUsers is SendToUsers with the proposed id (the script hands out
// the successor of the last id instead when id does not sort after it).
func (e *Engine) sendToUsers(ctx context.Context, users []string, p gateway.Push, id string, now time.Time) (gateway.Sent, error) {
	m := p.NewMessage(id, now, "", false)
	m.Trace = gateway.SampledSpan(ctx)
	args := make([]any, 0, 20+len(users))
	args = idemArgs(p.Idempotency, args)
	args = append(args, m.ID, m.TTL.Milliseconds(), e.cfg.InboxMessages, e.cfg.InboxBytes, e.cfg.InboxMaxTTL.Milliseconds(), len(m.Data))
	stored := m.TTL > 0
	if stored {
		// The data-loss guard and the node's new mark (failover.go).
		args = append(args, e.opt.Node, e.markOf(), e.keep(), m.ID[16:])
	} else {
		args = append(args, "", "", 0, "")
	}
	args = append(args, gateway.EncodeMessage(m), e.cfg.ReceiptRetention.Milliseconds(), e.cfg.ReceiptMax)
	for _, u := range users {
		args = append(args, u)
	}
	v, err := e.sendScript(ctx, stored, args)
	if err != nil {
		return gateway.Sent{}, err
	}
	r, _ := v.([]any)
	// A repeated idempotency key gets the first call's reply and
	// "replayed" (which sent nothing, so the node's mark stays).
	replayed := len(r) == 3+3*len(users) && str(r[len(r)-1]) == "replayed"
	if len(r) != 2+3*len(users) && !replayed {
		return gateway.Sent{}, fmt.Errorf("redis send: unexpected reply %v", v)
	}
	out := gateway.Sent{ID: str(r[0]), Time: now, Users: make([]gateway.Delivery, len(users)), Replayed: replayed}
	if stored && !replayed {
		e.noteStored(out.ID)
	}
	trimmed := 0
	for i, u := range users {
		n := num(r[1+3*i])
		out.Users[i] = gateway.Delivery{UserID: u, Online: n > 0, Delivered: int(n), Stored: num(r[2+3*i]) == 1}
		trimmed += int(num(r[3+3*i]))
	}
	if evicted := int(num(r[1+3*len(users)])); trimmed > 0 || evicted > 0 {
		e.node.CountInbox(gateway.InboxCounts{Trimmed: trimmed, ReceiptsEvicted: evicted})
	}
	return out, nil
}

// Broadcast implements gateway.Engine: the message is published to every
// node; each queues it on its connections except the excluded users'. It
// returns the connections on live nodes less the excluded users' (0 when
// no node heard it).
func (e *Engine) Broadcast(ctx context.Context, p gateway.Push, exclude []string) (gateway.Sent, error) {
	now := time.Now()
	m := p.NewMessage(gateway.NewID(), now, "", true)
	m.Trace = gateway.SampledSpan(ctx)
	args := make([]any, 0, 5+len(exclude))
	args = idemArgs(p.Idempotency, args)
	args = append(args, m.ID, gateway.EncodeMessage(m))
	for _, u := range exclude {
		args = append(args, u)
	}
	return e.idCount(ctx, "broadcast", now, args)
}

// Publish implements gateway.Engine: the message goes to the nodes with
// subscribers of topic; it returns the subscribers on the nodes that heard
// it. A topic with history keeps it in the same script (history.go).
func (e *Engine) Publish(ctx context.Context, topic string, p gateway.Push) (gateway.Sent, error) {
	now := time.Now()
	rule, kept := e.cfg.HistoryOf(topic)
	m := p.NewMessage(gateway.NewID(), now, topic, false)
	if kept {
		m.TTL = gateway.TopicHistoryTTL(rule, p.TTL)
	}
	m.Trace = gateway.SampledSpan(ctx)
	args := append(idemArgs(p.Idempotency, nil), m.ID, topic, gateway.EncodeMessage(m))
	if !kept {
		return e.idCount(ctx, "publish", now, args)
	}
	// The data-loss guard and the node's new mark, as for a stored send.
	args = append(args, rule.Messages, m.TTL.Milliseconds(), e.cfg.InboxMaxTTL.Milliseconds(),
		e.opt.Node, e.markOf(), e.keep(), m.ID[16:])
	v, err := e.call(ctx, "publish", args...)
	if err != nil {
		return gateway.Sent{}, err
	}
	r, _ := v.([]any)
	if len(r) != 4 {
		return gateway.Sent{}, fmt.Errorf("redis publish: unexpected reply %v", v)
	}
	out := gateway.Sent{ID: str(r[0]), Time: now, Connections: num(r[1])}
	e.noteStored(out.ID)
	e.node.CountInbox(gateway.InboxCounts{TopicStored: 1, TopicTrimmed: int(num(r[2])), TopicExpired: int(num(r[3]))})
	return out, nil
}

// TopicHistory implements gateway.Engine: one script reads the epoch and
// the topic's kept messages after r.LastID.
func (e *Engine) TopicHistory(ctx context.Context, r gateway.TopicHistoryRequest) (gateway.TopicHistory, error) {
	v, err := e.call(ctx, "topic_history", r.Topic, r.LastID, r.Epoch, gateway.NewID()[16:], e.cfg.InboxMaxTTL.Milliseconds(),
		e.opt.Node, e.markOf(), e.keep())
	if err != nil {
		return gateway.TopicHistory{}, err
	}
	res, _ := v.([]any)
	if len(res) < 4 {
		return gateway.TopicHistory{}, fmt.Errorf("redis topic_history: unexpected reply %v", v)
	}
	out := gateway.TopicHistory{Epoch: str(res[0]), Complete: num(res[1]) == 1, Seq: str(res[3])}
	e.newEpoch(out.Epoch)
	for _, b := range res[4:] {
		m, err := gateway.DecodeMessage([]byte(str(b)))
		if err != nil {
			return gateway.TopicHistory{}, fmt.Errorf("redis topic_history: entry: %w", err)
		}
		out.Replay = append(out.Replay, m)
	}
	if n := int(num(res[2])); n > 0 {
		e.node.CountInbox(gateway.InboxCounts{TopicExpired: n})
	}
	return out, nil
}

// idemArgs appends the idempotency key, hash and window the scripts that
// send take (empty without a key). The script records the key with the
// send, so a retry on any node, even after an answer lost on the way, gets
// the first result and sends nothing.
func idemArgs(k gateway.Idempotency, args []any) []any {
	if k.Key == "" {
		return append(args, "", "", 0)
	}
	return append(args, k.Key, hex.EncodeToString(k.Hash[:]), max(k.Window.Milliseconds(), 1))
}

func (e *Engine) idCount(ctx context.Context, script string, now time.Time, args []any) (gateway.Sent, error) {
	v, err := e.call(ctx, script, args...)
	if err != nil {
		return gateway.Sent{}, err
	}
	r, _ := v.([]any)
	if len(r) != 2 {
		return gateway.Sent{}, fmt.Errorf("redis %s: unexpected reply %v", script, v)
	}
	return gateway.Sent{ID: str(r[0]), Time: now, Connections: num(r[1])}, nil
}

// Disconnect implements gateway.Engine: it asks the user's nodes to close the user's connections (with
// CloseKicked) and returns how many they hold.
func (e *Engine) Disconnect(ctx context.Context, userID, text string) (int, error) {
	v, err := e.call(ctx, "kick", userID, text, graceMs(e.cfg.PresenceGrace))
	if err != nil {
		return 0, err
	}
	r, _ := v.([]any)
	if len(r) != 2 {
		return 0, fmt.Errorf("redis kick: unexpected reply %v", v)
	}
	if num(r[1]) > 0 {
		e.offlineDue()
	}
	return int(num(r[0])), nil
}

// ListOnline implements gateway.Engine: a page of the cluster's online
// users, by id, restricted to the ids match accepts (nil: all); it reads
// the online list in pages until it has enough.
func (e *Engine) ListOnline(ctx context.Context, after string, limit int, match func(string) bool) (gateway.OnlinePage, error) {
	var page gateway.OnlinePage
	batch := max(limit, 1)
	if match != nil {
		batch = max(limit, 500)
	}
	for {
		v, err := e.call(ctx, "list", after, batch)
		if err != nil {
			return gateway.OnlinePage{}, err
		}
		r, _ := v.([]any)
		if len(r) < 2 || (len(r)-2)%3 != 0 {
			return gateway.OnlinePage{}, fmt.Errorf("redis list: unexpected reply %v", v)
		}
		page.TotalUsers, page.TotalConnections = num(r[0]), num(r[1])
		got := (len(r) - 2) / 3
		more := got > batch
		for i := range min(got, batch) {
			u := str(r[2+3*i])
			after = u
			n := num(r[3+3*i])
			if n == 0 || match != nil && !match(u) {
				continue // on a dead node not reaped yet, or filtered out
			}
			if len(page.Users) == limit {
				page.More = true
				return page, nil
			}
			page.Users = append(page.Users, gateway.OnlineUser{UserID: u, Connections: int(n), Since: time.UnixMilli(num(r[4+3*i]))})
		}
		if !more {
			return page, nil
		}
	}
}

// Presence reports each of userIDs, cluster-wide.
func (e *Engine) Presence(ctx context.Context, userIDs []string) ([]gateway.OnlineUser, error) {
	args := make([]any, len(userIDs))
	for i, u := range userIDs {
		args[i] = u
	}
	v, err := e.call(ctx, "presenceof", args...)
	if err != nil {
		return nil, err
	}
	r, _ := v.([]any)
	if len(r) != 2*len(userIDs) {
		return nil, fmt.Errorf("redis presence: unexpected reply %v", v)
	}
	out := make([]gateway.OnlineUser, len(userIDs))
	for i, u := range userIDs {
		out[i] = gateway.OnlineUser{UserID: u, Connections: int(num(r[2*i]))}
		if out[i].Connections > 0 {
			out[i].Since = time.UnixMilli(num(r[2*i+1]))
		}
	}
	return out, nil
}

// Users returns the cluster's online users (-1 when Redis cannot be reached).
func (e *Engine) Users() int64 {
	p, err := e.ListOnline(context.Background(), "", 0, nil)
	if err != nil {
		return -1
	}
	return p.TotalUsers
}

// Connections returns the connections on the cluster's live nodes (-1 when
// Redis cannot be reached).
func (e *Engine) Connections() int64 {
	p, err := e.ListOnline(context.Background(), "", 0, nil)
	if err != nil {
		return -1
	}
	return p.TotalConnections
}

// Inboxed returns the messages in all inboxes (-1 when Redis cannot be
// reached).
func (e *Engine) Inboxed() int64 {
	ctx, cancel := context.WithTimeout(context.Background(), e.opt.Timeout)
	defer cancel()
	n, err := e.rdb.Get(ctx, e.P+":inboxed").Int64()
	if err != nil {
		if errors.Is(err, redis.Nil) {
			return 0
		}
		return -1
	}
	return n
}
