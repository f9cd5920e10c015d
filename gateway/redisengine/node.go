package redisengine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"pushgate/gateway"
)

var _ gateway.Cluster = (*Engine)(nil)

// Join implements gateway.Cluster.
func (e *Engine) Join(ctx context.Context, j gateway.JoinRequest) (gateway.Joined, error) {
	mu := &e.umu[e.stripe(j.UserID)]
	mu.Lock()
	n, since := e.hub.LocalPresence(j.UserID)
	resume := "0"
	if j.Resume {
		resume = "1"
	}
	v, err := e.call(ctx, "join", e.opt.Node, j.UserID, j.ConnID, n, ms(since), j.LastID, resume, j.Epoch,
		gateway.NewID()[16:], e.hub.Connections(), graceMs(e.cfg.PresenceGrace), e.cfg.InboxMaxTTL.Milliseconds())
	mu.Unlock()
	if err != nil {
		return gateway.Joined{}, err
	}
	r, _ := v.([]any)
	if len(r) < 5 {
		return gateway.Joined{}, fmt.Errorf("redis join: unexpected reply %v", v)
	}
	out := gateway.Joined{Epoch: str(r[0]), Seq: str(r[1]), Complete: num(r[2]) == 1}
	e.hub.CountInbox(0, int(num(r[3])))
	for _, b := range r[5:] {
		m, err := gateway.DecodeMessage([]byte(str(b)))
		if err != nil {
			return gateway.Joined{}, fmt.Errorf("redis join: inbox entry: %w", err)
		}
		out.Replay = append(out.Replay, m)
	}
	return out, nil
}

func graceMs(d time.Duration) int64 {
	if d < 0 {
		return 0
	}
	return d.Milliseconds()
}

// PresenceChanged implements gateway.Cluster.
func (e *Engine) PresenceChanged(userID string) {
	e.dirtyMu.Lock()
	e.dirtyUsers[userID] = struct{}{}
	e.dirtyMu.Unlock()
	e.kick()
}

// TopicChanged implements gateway.Cluster.
func (e *Engine) TopicChanged(topic string) {
	e.dirtyMu.Lock()
	e.dirtyTopics[topic] = struct{}{}
	e.dirtyMu.Unlock()
	e.kick()
}

// SubscribeTopic implements gateway.Cluster: the first subscriber of a
// topic on this node waits until Redis routes the topic here.
func (e *Engine) SubscribeTopic(ctx context.Context, topic string) error {
	st := &e.tmu[e.stripe(topic)]
	st.Lock()
	defer st.Unlock()
	if st.known[topic] {
		return nil
	}
	if _, err := e.call(ctx, "topics", e.opt.Node, topic, max(e.hub.LocalTopic(topic), 1)); err != nil {
		return err
	}
	st.known[topic] = true
	return nil
}

// Ack implements gateway.Cluster.
func (e *Engine) Ack(ctx context.Context, userID, connID string, ids []string, implicit bool) error {
	imp := "0"
	if implicit {
		imp = "1"
	}
	args := []any{userID, connID, imp, e.cfg.InboxMaxTTL.Milliseconds()}
	for _, id := range ids {
		args = append(args, id)
	}
	_, err := e.call(ctx, "ack", args...)
	if err != nil && implicit {
		e.log.Warn("could not record acks of messages written to a raw client", "user", userID, "err", err)
	}
	return err
}

// wireEvent is an event on the event channel (scripts.lua writes the
// first six fields).
type wireEvent struct {
	Kind     gateway.EventKind `json:"k"`
	User     string            `json:"u"`
	Conn     string            `json:"c,omitempty"`
	Msg      string            `json:"m,omitempty"`
	Implicit bool              `json:"i,omitempty"`
	Time     int64             `json:"t"`
	Topic    string            `json:"tp,omitempty"`
	Type     string            `json:"ty,omitempty"`
	DataKind gateway.Kind      `json:"dk,omitempty"`
	Data     []byte            `json:"d,omitempty"`
}

// Upstream implements gateway.Cluster.
func (e *Engine) Upstream(ev gateway.Event) {
	b, _ := json.Marshal(wireEvent{Kind: ev.Kind, User: ev.UserID, Conn: ev.ConnID, Time: time.Now().UnixMilli(),
		Topic: ev.Topic, Type: ev.Type, DataKind: ev.DataKind, Data: ev.Data})
	ctx, cancel := context.WithTimeout(context.Background(), e.opt.Timeout)
	defer cancel()
	if err := e.rdb.Publish(ctx, e.evChan, b).Err(); err != nil {
		e.m.errors.WithLabelValues("upstream").Inc()
		e.log.Warn("client message not passed on: redis unavailable", "user", ev.UserID, "err", err)
	}
}

// receiveLoop reads the node's subscription until Close. go-redis restores
// a lost subscription on the next read; when that happens the node writes
// its state again and catches up on stored messages it may have missed.
func (e *Engine) receiveLoop() {
	defer e.stopped.Done()
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-e.stop; cancel() }()
	lost := false
	backoff := 100 * time.Millisecond
	for {
		msg, err := e.ps.ReceiveTimeout(ctx, 5*time.Second)
		if ctx.Err() != nil || e.closed.Load() {
			return
		}
		if err != nil {
			if isTimeout(err) {
				// Quiet: check that the subscription is still there.
				if err := e.ps.Ping(ctx); err == nil {
					continue
				}
			}
			if !lost {
				e.log.Warn("redis subscription lost; reconnecting", "err", err)
				e.m.errors.WithLabelValues("subscribe").Inc()
			}
			lost = true
			e.up.Store(false)
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return
			}
			backoff = min(backoff*2, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		switch m := msg.(type) {
		case *redis.Subscription:
			if lost && m.Kind == "subscribe" && m.Count == 3 {
				lost = false
				e.up.Store(true)
				e.m.reconnects.Inc()
				e.log.Info("redis subscription restored; writing this node's state again")
				e.restore(ctx)
			}
		case *redis.Message:
			e.m.received.Inc()
			e.dispatch(m.Channel, m.Payload)
		}
	}
}

func isTimeout(err error) bool {
	var te interface{ Timeout() bool }
	return errors.As(err, &te) && te.Timeout()
}

// dispatch delivers one pub/sub message on this node.
func (e *Engine) dispatch(channel, payload string) {
	if channel == e.evChan {
		var w wireEvent
		if err := json.Unmarshal([]byte(payload), &w); err != nil {
			e.log.Error("bad event from redis", "err", err)
			return
		}
		e.hub.EmitLocal(gateway.Event{Kind: w.Kind, Time: time.UnixMilli(w.Time), UserID: w.User, ConnID: w.Conn,
			MessageID: w.Msg, Implicit: w.Implicit, Topic: w.Topic, Type: w.Type, DataKind: w.DataKind, Data: w.Data})
		return
	}
	if payload == "" {
		return
	}
	head, body, ok := strings.Cut(payload[1:], "\x00")
	if !ok {
		e.log.Error("bad message from redis", "channel", channel)
		return
	}
	if payload[0] == 'K' {
		e.hub.DisconnectLocal(head, body)
		return
	}
	m, err := gateway.DecodeMessage([]byte(body))
	if err != nil {
		e.log.Error("bad message from redis", "channel", channel, "err", err)
		return
	}
	switch payload[0] {
	case 'U':
		e.hub.DeliverLocal(strings.Split(head, "\n"), m)
	case 'B':
		var ex []string
		if head != "" {
			ex = strings.Split(head, "\n")
		}
		e.hub.BroadcastLocal(m, ex)
	case 'T':
		e.hub.PublishLocal(head, m)
	}
}

// requestResync asks the worker to write the node's whole state again.
func (e *Engine) requestResync() {
	e.dirtyMu.Lock()
	e.resync = true
	e.dirtyMu.Unlock()
	e.kick()
}

// restore runs on the receive loop once a lost subscription is back, before
// it reads on: the node writes its state again (so sends reach it), then
// delivers the stored messages its users' connections missed meanwhile.
// Messages that arrive live after that and were caught up are skipped.
func (e *Engine) restore(ctx context.Context) {
	e.dirtyMu.Lock()
	e.resync = true
	e.dirtyMu.Unlock()
	cctx, cancel := context.WithTimeout(ctx, 4*e.opt.Timeout)
	defer cancel()
	if err := e.flush(cctx); err != nil {
		e.log.Warn("writing this node's state to redis failed; retrying", "err", err)
		e.kick()
		return
	}
	e.catchUpAll(cctx)
}

// workLoop writes presence and topic changes, beats, reaps dead nodes and
// resyncs, until Close; on Redis errors it keeps the work and retries with
// backoff.
func (e *Engine) workLoop() {
	defer e.stopped.Done()
	beat := time.NewTicker(e.opt.NodeTTL / 3)
	defer beat.Stop()
	backoff := 50 * time.Millisecond
	retry := (<-chan time.Time)(nil)
	for {
		select {
		case <-e.stop:
			// Flush what is pending, best effort: Close removes the node anyway.
			ctx, cancel := context.WithTimeout(context.Background(), e.opt.Timeout)
			_ = e.flush(ctx)
			cancel()
			return
		case <-e.wake:
		case <-retry:
		case <-beat.C:
			ctx, cancel := context.WithTimeout(context.Background(), e.opt.Timeout)
			err := e.beat(ctx)
			if err == nil {
				err = e.reap(ctx)
			}
			cancel()
			if err != nil {
				e.log.Warn("redis heartbeat failed", "err", err)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 4*e.opt.Timeout)
		err := e.flush(ctx)
		if err == nil {
			e.reportOffline(ctx)
		}
		cancel()
		retry = nil
		if err != nil {
			if e.closed.Load() {
				continue
			}
			e.log.Warn("redis presence update failed; retrying", "err", err, "in", backoff)
			retry = time.After(backoff)
			backoff = min(backoff*2, 5*time.Second)
		} else {
			backoff = 50 * time.Millisecond
		}
	}
}

// beat renews the node's lease; a node Redis did not know (reaped, or
// Redis lost its data) writes its state again.
func (e *Engine) beat(ctx context.Context) error {
	v, err := e.run(ctx, "beat", e.opt.Node, e.opt.NodeTTL.Milliseconds(), e.hub.Connections()).Int64()
	if err != nil {
		return err
	}
	if v == 0 && e.up.Load() {
		e.log.Info("this node was not known to redis (reaped, or redis lost its data); writing its state again")
		e.requestResync()
	}
	return nil
}

// reap removes dead nodes and sweeps expired inbox entries.
func (e *Engine) reap(ctx context.Context) error {
	r, err := e.run(ctx, "reap", e.cfg.InboxMaxTTL.Milliseconds()).Slice()
	if err != nil {
		return err
	}
	if len(r) == 3 {
		if n := num(r[0]); n > 0 {
			e.m.reaped.Add(float64(n))
			e.log.Warn("removed dead nodes from redis", "nodes", n, "users", num(r[1]))
		}
		e.hub.CountInbox(0, int(num(r[2])))
	}
	return nil
}

// flush writes the pending presence and topic changes (and a requested
// resync). What fails stays pending.
func (e *Engine) flush(ctx context.Context) error {
	e.dirtyMu.Lock()
	resync := e.resync
	e.resync = false
	e.dirtyMu.Unlock()
	if resync {
		// The lease first, so that no node reaps this one while it writes.
		err := e.beat(ctx)
		if err == nil {
			err = e.markAll(ctx)
		}
		if err != nil {
			e.dirtyMu.Lock()
			e.resync = true
			e.dirtyMu.Unlock()
			return err
		}
		e.m.resyncs.Inc()
	}

	e.dirtyMu.Lock()
	users := make([]string, 0, len(e.dirtyUsers))
	for u := range e.dirtyUsers {
		users = append(users, u)
	}
	topics := make([]string, 0, len(e.dirtyTopics))
	for t := range e.dirtyTopics {
		topics = append(topics, t)
	}
	clear(e.dirtyUsers)
	clear(e.dirtyTopics)
	e.dirtyMu.Unlock()

	failed := func(err error, us, ts []string) error {
		e.dirtyMu.Lock()
		for _, u := range us {
			e.dirtyUsers[u] = struct{}{}
		}
		for _, t := range ts {
			e.dirtyTopics[t] = struct{}{}
		}
		if resync {
			e.resync = true
		}
		e.dirtyMu.Unlock()
		return err
	}
	for len(users) > 0 {
		n := min(len(users), 256)
		if err := e.writePresence(ctx, users[:n]); err != nil {
			return failed(err, users, topics)
		}
		users = users[n:]
	}
	for len(topics) > 0 {
		n := min(len(topics), 256)
		if err := e.writeTopics(ctx, topics[:n]); err != nil {
			return failed(err, nil, topics)
		}
		topics = topics[n:]
	}
	return nil
}

// markAll marks every user and topic this node has, or Redis thinks it
// has, for writing.
func (e *Engine) markAll(ctx context.Context) error {
	users, err := e.rdb.SMembers(ctx, e.P+":nu:"+e.opt.Node).Result()
	if err != nil {
		e.m.errors.WithLabelValues("resync").Inc()
		return err
	}
	topics, err := e.rdb.SMembers(ctx, e.P+":nt:"+e.opt.Node).Result()
	if err != nil {
		e.m.errors.WithLabelValues("resync").Inc()
		return err
	}
	users = append(users, e.hub.LocalUsers()...)
	topics = append(topics, e.hub.LocalTopics()...)
	for i := range e.tmu {
		st := &e.tmu[i]
		st.Lock()
		clear(st.known)
		st.Unlock()
	}
	e.dirtyMu.Lock()
	for _, u := range users {
		e.dirtyUsers[u] = struct{}{}
	}
	for _, t := range topics {
		e.dirtyTopics[t] = struct{}{}
	}
	e.dirtyMu.Unlock()
	return nil
}

// writePresence writes the current local counts of users, holding their
// stripes (in index order) from reading the counts until Redis has them.
func (e *Engine) writePresence(ctx context.Context, users []string) error {
	var held [stripes]bool
	for _, u := range users {
		held[e.stripe(u)] = true
	}
	for i := range held {
		if held[i] {
			e.umu[i].Lock()
		}
	}
	defer func() {
		for i := range held {
			if held[i] {
				e.umu[i].Unlock()
			}
		}
	}()
	args := []any{e.opt.Node, graceMs(e.cfg.PresenceGrace), e.hub.Connections()}
	for _, u := range users {
		n, since := e.hub.LocalPresence(u)
		args = append(args, u, n, ms(since))
	}
	leaving, err := e.run(ctx, "presence", args...).StringSlice()
	if err != nil {
		return err
	}
	for _, u := range leaving {
		time.AfterFunc(e.cfg.PresenceGrace, func() {
			e.dirtyMu.Lock()
			e.graceOver[u] = struct{}{}
			e.dirtyMu.Unlock()
			e.kick()
		})
	}
	return nil
}

// reportOffline reports users whose grace is over offline (unless they came
// back), in batches. A failure is logged, not retried: the markers expire.
func (e *Engine) reportOffline(ctx context.Context) {
	e.dirtyMu.Lock()
	if len(e.graceOver) == 0 {
		e.dirtyMu.Unlock()
		return
	}
	users := make([]any, 0, len(e.graceOver))
	for u := range e.graceOver {
		users = append(users, u)
	}
	clear(e.graceOver)
	e.dirtyMu.Unlock()
	for len(users) > 0 {
		n := min(len(users), 512)
		if err := e.run(ctx, "offline", users[:n]...).Err(); err != nil {
			e.log.Warn("offline events not reported: redis unavailable", "users", n, "err", err)
		}
		users = users[n:]
	}
}

// writeTopics writes the current local subscriber counts of topics.
func (e *Engine) writeTopics(ctx context.Context, topics []string) error {
	slices.SortFunc(topics, func(a, b string) int { return e.stripe(a) - e.stripe(b) })
	var held [stripes]bool
	for _, t := range topics {
		held[e.stripe(t)] = true
	}
	for i := range held {
		if held[i] {
			e.tmu[i].Lock()
		}
	}
	defer func() {
		for i := range held {
			if held[i] {
				e.tmu[i].Unlock()
			}
		}
	}()
	args := []any{e.opt.Node}
	counts := make([]int, len(topics))
	for i, t := range topics {
		counts[i] = e.hub.LocalTopic(t)
		args = append(args, t, counts[i])
	}
	if err := e.run(ctx, "topics", args...).Err(); err != nil {
		return err
	}
	for i, t := range topics {
		e.tmu[e.stripe(t)].known[t] = counts[i] > 0
	}
	return nil
}

// catchUpAll delivers, for every user with connections here, the stored
// messages after the last one those connections were given: what was
// published while the subscription was cut off.
func (e *Engine) catchUpAll(ctx context.Context) {
	n := 0
	for _, u := range e.hub.LocalUsers() {
		last, ok := e.hub.CatchUpFrom(u)
		if !ok {
			continue
		}
		blobs, err := e.run(ctx, "after", u, last).StringSlice()
		if err != nil {
			e.log.Warn("catching up after a lost subscription failed", "user", u, "err", err)
			continue
		}
		for _, b := range blobs {
			m, err := gateway.DecodeMessage([]byte(b))
			if err != nil {
				continue
			}
			n += e.hub.DeliverLocal([]string{u}, m)
		}
	}
	if n > 0 {
		e.log.Info("delivered stored messages missed while the subscription was lost", "messages", n)
	}
}

func str(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case int64:
		return strconv.FormatInt(x, 10)
	}
	return ""
}

func num(v any) int64 {
	switch x := v.(type) {
	case int64:
		return x
	case string:
		n, _ := strconv.ParseInt(x, 10, 64)
		return n
	}
	return 0
}
