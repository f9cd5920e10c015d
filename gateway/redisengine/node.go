package redisengine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"pushgate/gateway"
)

// Join implements gateway.Engine: one script records the node's count of
// the user and reads the replay and the join's Seq.
func (e *Engine) Join(ctx context.Context, j gateway.JoinRequest) (gateway.Joined, error) {
	if !e.up.Load() {
		// Cut off from Redis: the client is better served by another node.
		return gateway.Joined{}, fmt.Errorf("%w: redis unreachable", gateway.ErrUnavailable)
	}
	i := e.stripe(j.UserID)
	mu := &e.umu[i]
	mu.Lock()
	e.users[i][j.UserID] = struct{}{}
	n, since := e.node.UserConns(j.UserID)
	resume := "0"
	if j.Resume {
		resume = "1"
	}
	v, err := e.call(ctx, "join", e.opt.Node, j.UserID, j.ConnID, n, ms(since), j.LastID, resume, j.Epoch,
		gateway.NewID()[16:], e.node.Connections(), graceMs(e.cfg.PresenceGrace), e.cfg.InboxMaxTTL.Milliseconds(),
		e.markOf(), e.keep())
	mu.Unlock()
	if err != nil {
		return gateway.Joined{}, err
	}
	r, _ := v.([]any)
	if len(r) < 5 {
		return gateway.Joined{}, fmt.Errorf("redis join: unexpected reply %v", v)
	}
	out := gateway.Joined{Epoch: str(r[0]), Seq: str(r[1]), Complete: num(r[2]) == 1}
	e.newEpoch(out.Epoch)
	for _, b := range r[5:] {
		m, err := gateway.DecodeMessage([]byte(str(b)))
		if err != nil {
			return gateway.Joined{}, fmt.Errorf("redis join: inbox entry: %w", err)
		}
		out.Replay = append(out.Replay, m)
	}
	e.node.CountInbox(gateway.InboxCounts{Expired: int(num(r[3])), Acked: int(num(r[4])), Replayed: len(out.Replay)})
	return out, nil
}

func graceMs(d time.Duration) int64 {
	if d < 0 {
		return 0
	}
	return d.Milliseconds()
}

// Left implements gateway.Engine: the node's new count is written soon, in
// order (workLoop).
func (e *Engine) Left(userID string) {
	e.dirtyMu.Lock()
	e.dirtyUsers[userID] = struct{}{}
	e.dirtyMu.Unlock()
	e.kick()
}

// Unsubscribed implements gateway.Engine.
func (e *Engine) Unsubscribed(topic string) {
	e.dirtyMu.Lock()
	e.dirtyTopics[topic] = struct{}{}
	e.dirtyMu.Unlock()
	e.kick()
}

// Subscribe implements gateway.Engine: a subscriber joined topic on this
// node; Redis has the node's new count (and so routes the topic here)
// before it returns.
func (e *Engine) Subscribe(ctx context.Context, topic string) error {
	i := e.stripe(topic)
	st := &e.tmu[i]
	st.Lock()
	defer st.Unlock()
	e.topics[i][topic] = struct{}{}
	// The topic presence changes waiting for this topic go in the same
	// script (the hub reported the subscriber's before it called).
	users := e.takeTopicUsers(topic)
	args := append([]any{e.opt.Node, topic, max(e.node.TopicConns(topic), 1)}, e.topicUserArgsLocked(topic, users)...)
	if _, err := e.call(ctx, "topics", args...); err != nil {
		e.markTopicUsers(topic, users)
		return err
	}
	return nil
}

// Ack implements gateway.Engine. Implicit acks (from a write loop, which
// must not wait on Redis) are recorded on a goroutine of their own.
func (e *Engine) Ack(ctx context.Context, userID, connID string, ids []string, implicit bool) error {
	imp := "0"
	if implicit {
		imp = "1"
		ctx = context.Background() // the caller's deadline ends when it returns
		go func() { _ = e.ack(ctx, userID, connID, ids, imp) }()
		return nil
	}
	return e.ack(ctx, userID, connID, ids, imp)
}

func (e *Engine) ack(ctx context.Context, userID, connID string, ids []string, imp string) error {
	implicit := imp == "1"
	args := []any{userID, connID, imp, e.cfg.InboxMaxTTL.Milliseconds()}
	for _, id := range ids {
		args = append(args, id)
	}
	v, err := e.call(ctx, "ack", args...)
	if err != nil {
		if implicit {
			e.log.Warn("could not record acks of messages written to a raw client", "user", userID, "err", err)
		}
		return err
	}
	if n := int(num(v)); n > 0 {
		e.node.CountInbox(gateway.InboxCounts{Acked: n})
	}
	return nil
}

// wireEvent is an event for WatchEvents: "E" and this JSON on a node's
// channel (scripts.lua writes the first six fields).
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
	// An escalation's result (EventMessageEscalated).
	Esc *gateway.EscalationResult `json:"x,omitempty"`
}

// Upstream implements gateway.Engine: the event goes to the nodes with
// WatchEvents streams.
func (e *Engine) Upstream(ctx context.Context, ev gateway.Event) error {
	b, _ := json.Marshal(wireEvent{Kind: ev.Kind, User: ev.UserID, Conn: ev.ConnID, Time: time.Now().UnixMilli(),
		Msg: ev.MessageID, Topic: ev.Topic, Type: ev.Type, DataKind: ev.DataKind, Data: ev.Data, Esc: ev.Escalation})
	ctx, cancel := context.WithTimeout(ctx, e.opt.Timeout)
	defer cancel()
	if err := e.run(ctx, "emit", b).Err(); err != nil {
		e.m.errors.WithLabelValues("upstream").Inc()
		e.log.Warn("client message not passed on: redis unavailable", "user", ev.UserID, "err", err)
		return err
	}
	return nil
}

// receiveLoop reads the node's subscription until Close. It hears from
// Redis at least every NodeTTL/6 (a message, or the pong of a ping it sends
// when the channel is quiet); when it has heard nothing for NodeTTL/3 (the
// liveness bound: a link that freezes without closing, a Redis that stopped
// answering) or the subscription fails, the node is down: Up reports false
// (readiness 503, new connections refused, calls UNAVAILABLE), and the loop
// subscribes again on a new connection until Redis answers. Once
// subscribed, the node writes its state again and catches up on the stored
// messages its connections may have missed (restore) before it reads on,
// and is up again. Down for longer than NodeTTL (other nodes have reaped
// it, so its clients are invisible to the cluster), it closes its clients
// with CloseEngineUnavailable, spread over a few seconds, so that they
// resume on another node.
func (e *Engine) receiveLoop() {
	defer e.stopped.Done()
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-e.stop; cancel() }()
	quiet := max(e.opt.NodeTTL/6, 50*time.Millisecond)
	bound := e.liveness()
	heard := time.Now()
	wait := newBackoff(100 * time.Millisecond)
	ps := e.pubsub()
	for {
		if e.up.Load() && e.needRestore.Swap(false) {
			if err := e.restore(ctx); err != nil {
				ps = e.lost(ctx, ps, err, wait)
				continue
			}
			heard = time.Now() // the restore may have taken a while (awaitPeers)
		}
		msg, err := ps.ReceiveTimeout(ctx, quiet)
		if ctx.Err() != nil || e.closed.Load() {
			return
		}
		if err == nil {
			heard = time.Now()
		} else if isTimeout(err) {
			if time.Since(heard) < bound {
				_ = ps.Ping(ctx) // its pong is heard like a message
				continue
			}
			err = fmt.Errorf("nothing heard from redis for %v", time.Since(heard).Round(time.Millisecond))
		}
		if err != nil {
			ps = e.lost(ctx, ps, err, wait)
			heard = time.Now() // the new subscription gets its own bound
			continue
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "sunsubscribe" || m.Kind == "unsubscribe" {
				// Redis dropped a channel: a shard channel whose slot moved
				// to another master (resharding, a failover). Subscribe
				// again, where the slot is now.
				ps = e.lost(ctx, ps, fmt.Errorf("redis ended the subscription to %s", m.Channel), wait)
				heard = time.Now()
				continue
			}
			// Both channels subscribed: at start, or on a new connection
			// after a loss.
			if (m.Kind == "subscribe" || m.Kind == "ssubscribe") && m.Count == 2 && !e.up.Load() {
				if err := e.restore(ctx); err != nil {
					ps = e.lost(ctx, ps, err, wait)
					continue
				}
				heard = time.Now()
				wait.reset()
				e.downSince.Store(0)
				e.up.Store(true)
				e.m.reconnects.Inc()
				// Events published while the subscription was down never
				// reached this node's streams: they resume from the log.
				e.node.CutWatchers()
				e.log.Info("redis reachable again: this node's state is written and its clients caught up")
			}
		case *redis.Message:
			e.m.received.Inc()
			e.dispatch(m.Channel, m.Payload)
		}
	}
}

// liveness is how long the node may hear nothing from Redis before it
// counts itself cut off: a third of NodeTTL.
func (e *Engine) liveness() time.Duration { return e.opt.NodeTTL / 3 }

// pubsub returns the current subscription.
func (e *Engine) pubsub() *redis.PubSub {
	e.psMu.Lock()
	defer e.psMu.Unlock()
	return e.ps
}

// lost marks the node down, drops the subscription and, after a backoff,
// subscribes again on a new connection (the answer comes to the receive
// loop). It returns the new subscription.
func (e *Engine) lost(ctx context.Context, old *redis.PubSub, err error, wait *backoff) *redis.PubSub {
	if e.up.Swap(false) {
		e.downSince.Store(time.Now().UnixNano())
		e.log.Warn("redis unreachable: this node is not ready and refuses new connections until it is back", "err", err)
		e.m.errors.WithLabelValues("subscribe").Inc()
	}
	_ = old.Close()
	e.reloadCluster()
	select {
	case <-time.After(wait.next()):
	case <-ctx.Done():
	}
	ps := e.newPubSub(ctx) // no channels yet: subscribing waits for an answer below
	e.psMu.Lock()
	e.ps = ps
	e.psMu.Unlock()
	if e.closed.Load() {
		_ = ps.Close()
		return ps
	}
	// Sent without waiting: the confirmation (or silence) is the receive
	// loop's to hear.
	cctx, cancel := context.WithTimeout(ctx, e.opt.Timeout)
	if err := e.subscribe(cctx, ps); err != nil {
		e.log.Debug("redis subscribe failed", "err", err)
	}
	cancel()
	return ps
}

// evictLoop closes this node's clients (CloseEngineUnavailable, spread
// over evictWindow) once it has been cut off from Redis for longer than
// NodeTTL: by then other nodes have reaped it, sends to its users are stored
// for them (not delivered here), and they are better served by another
// node. Shorter cuts keep the clients. Runs until Close.
func (e *Engine) evictLoop() {
	defer e.stopped.Done()
	t := time.NewTicker(max(e.opt.NodeTTL/10, 50*time.Millisecond))
	defer t.Stop()
	evicted := int64(0) // the downSince we evicted for
	for {
		select {
		case <-e.stop:
			return
		case <-t.C:
		}
		since := e.downSince.Load()
		if since == 0 || since == evicted || time.Since(time.Unix(0, since)) < e.opt.NodeTTL {
			continue
		}
		evicted = since
		n := e.node.Evict(evictWindow)
		e.m.evicted.Add(float64(n))
		e.log.Warn("cut off from redis for longer than the node ttl: closed this node's clients so that they resume on another node",
			"connections", n, "node_ttl", e.opt.NodeTTL, "window", evictWindow)
	}
}

// evictWindow spreads the closes of a cut-off node's clients.
const evictWindow = 3 * time.Second

func isTimeout(err error) bool {
	var te interface{ Timeout() bool }
	return errors.As(err, &te) && te.Timeout()
}

// The payloads on a node's channel (P:n:<node>) and on the broadcast
// channel (P:all), written by scripts.lua: one byte says what follows.
//
//	'U' users "\x00" message    the message (gateway.EncodeMessage) for the
//	                            users on this node, newline-separated
//	'B' excluded "\x00" message  a broadcast; excluded: newline-separated users
//	'T' topic "\x00" message     for this node's subscribers of topic
//	'K' user "\x00" text         close the user's connections (Disconnect)
//	'E' cursor " " json         an event for WatchEvents (wireEvent)
//	'X' epoch                   Redis lost data: the inboxes' new epoch
//	'J' topic "\x00" user       user joined topic (topic presence events)
//	'L' topic "\x00" user       user left topic
const (
	kindUsers     = 'U'
	kindBroadcast = 'B'
	kindTopic     = 'T'
	kindKick      = 'K'
	kindEvent     = 'E'
	kindEpoch     = 'X'
	kindJoin      = 'J'
	kindLeave     = 'L'
)

// backoff is the wait between retries of a loop that talks to Redis: it
// doubles from its first value up to 5s, and reset starts again.
type backoff struct{ first, cur time.Duration }

func newBackoff(first time.Duration) *backoff { return &backoff{first: first, cur: first} }

// next returns the wait before the next retry.
func (b *backoff) next() time.Duration {
	d := b.cur
	b.cur = min(b.cur*2, 5*time.Second)
	return d
}

func (b *backoff) reset() { b.cur = b.first }

// dispatch delivers one pub/sub message on this node.
func (e *Engine) dispatch(channel, payload string) {
	if payload == "" {
		return
	}
	if payload[0] == kindEpoch {
		e.newEpoch(payload[1:])
		return
	}
	if payload[0] == kindEvent {
		cursor, body, _ := strings.Cut(payload[1:], " ")
		ev, err := e.decodeEvent(cursor, body)
		if err != nil {
			e.log.Error("bad event from redis", "err", err)
			return
		}
		e.node.Emit(ev)
		return
	}
	head, body, ok := strings.Cut(payload[1:], "\x00")
	if !ok {
		e.log.Error("bad message from redis", "channel", channel)
		return
	}
	switch payload[0] {
	case kindKick:
		e.node.CloseUser(head, body)
		return
	case kindJoin, kindLeave:
		e.node.DeliverTopicPresence(head, body, payload[0] == kindJoin)
		return
	}
	m, err := gateway.DecodeMessage([]byte(body))
	if err != nil {
		e.log.Error("bad message from redis", "channel", channel, "err", err)
		return
	}
	switch payload[0] {
	case kindUsers:
		e.node.Deliver(strings.Split(head, "\n"), m)
	case kindBroadcast:
		var ex []string
		if head != "" {
			ex = strings.Split(head, "\n")
		}
		e.node.DeliverBroadcast(m, ex)
	case kindTopic:
		e.node.DeliverTopic(m)
	}
}

// restore runs on the receive loop, before it reads on: the node writes
// its state again (so that sends reach it), then delivers the stored
// messages its connections missed meanwhile. Each step has its own
// deadline; on an error the receive loop counts the node down and tries
// again on a new connection. Messages that then arrive live and were caught
// up are skipped (Node.Deliver).
func (e *Engine) restore(ctx context.Context) error {
	e.dirtyMu.Lock()
	e.resync = true // later passes finish what is left
	e.dirtyMu.Unlock()
	err := e.flush(ctx)
	if err == nil {
		err = e.call1(ctx, e.checkEpoch)
	}
	if err == nil {
		err = e.awaitPeers(ctx)
	}
	if err == nil {
		err = e.catchUpAll(ctx)
	}
	if err == nil {
		err = e.catchUpTopics(ctx)
	}
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("writing this node's state to redis: %w", err)
	}
	return nil
}

// checkEpoch reads the cluster's epoch, after the data-loss guard has
// compared the node's mark (failover.go); when it changed (Redis lost its
// data, and with it the last id handed out) the ids the node's connections
// have seen may be ahead of the new ones, so they are forgotten.
func (e *Engine) checkEpoch(ctx context.Context) error {
	id := e.runID(ctx)
	ep, err := e.run(ctx, "epoch", gateway.NewID()[16:], e.opt.Node, e.markOf(), e.keep(), id).Text()
	if err != nil {
		return err
	}
	e.runid.Store(&id)
	e.newEpoch(ep)
	return nil
}

// workLoop writes presence and topic changes until Close; on Redis errors
// it keeps the work and retries with backoff.
func (e *Engine) workLoop() {
	defer e.stopped.Done()
	wait := newBackoff(50 * time.Millisecond)
	retry := (<-chan time.Time)(nil)
	// New work (a connection attempt) flushes at once even while a retry
	// waits, so the warning is said at most every 5 s, with the count.
	var warned time.Time
	failed := 0
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
		}
		err := e.flush(context.Background()) // each step has its own deadline
		retry = nil
		if err != nil {
			if e.closed.Load() {
				continue
			}
			d := wait.next()
			if failed++; time.Since(warned) >= 5*time.Second {
				e.log.Warn("redis presence update failed; retrying", "err", err, "in", d, "failures", failed)
				warned, failed = time.Now(), 0
			}
			retry = time.After(d)
		} else {
			wait.reset()
		}
	}
}

// leaseLoop renews the node's lease every NodeTTL/3, reaps dead nodes and
// expired inbox entries, and reports users offline once their grace is
// over (every second while this node has some waiting), until Close.
func (e *Engine) leaseLoop() {
	defer e.stopped.Done()
	beat := time.NewTicker(e.opt.NodeTTL / 3)
	defer beat.Stop()
	sec := time.NewTicker(time.Second)
	defer sec.Stop()
	for {
		select {
		case <-e.stop:
			return
		case <-beat.C:
			err := e.call1(context.Background(), e.beat)
			if err == nil {
				// Bounded well inside the lease, which the next tick renews.
				ctx, cancel := context.WithTimeout(context.Background(), e.opt.NodeTTL/6)
				err = e.reap(ctx)
				cancel()
			}
			if err != nil {
				e.log.Warn("redis heartbeat failed", "err", err)
			}
		case <-sec.C:
			if time.Now().UnixNano() < e.offlineUntil.Load() {
				ctx, cancel := context.WithTimeout(context.Background(), e.opt.Timeout)
				if _, err := e.run(ctx, "offline").Result(); err != nil {
					e.log.Debug("offline events: redis unavailable", "err", err)
				}
				cancel()
			}
		}
	}
}

// beat renews the node's lease. The lease carries a generation, new at
// every registration (start, and each time the node writes its whole state
// again): a beat of another generation renews nothing, so a beat that was
// on its way while other nodes reaped this one cannot bring it back
// unnoticed. A node Redis did not know (reaped, or Redis lost its data)
// writes its state again with a new generation.
func (e *Engine) beat(ctx context.Context) error {
	return e.beatWith(ctx, false)
}

// register is beat that starts a new generation of the lease.
func (e *Engine) register(ctx context.Context) error {
	return e.beatWith(ctx, true)
}

func (e *Engine) beatWith(ctx context.Context, register bool) error {
	gen, reg := "", "0"
	if g := e.gen.Load(); g != nil {
		gen = *g
	}
	if register {
		gen, reg = strings.ToLower(gateway.NewID()[16:]), "1"
	}
	v, err := e.run(ctx, "beat", e.opt.Node, e.opt.NodeTTL.Milliseconds(), e.node.Connections(), gen, reg).Int64()
	if err != nil {
		return err
	}
	if register {
		e.gen.Store(&gen)
		return nil
	}
	if v == 0 && e.up.Load() {
		e.log.Info("this node was not known to redis (reaped, or redis lost its data); writing its state again")
		e.needRestore.Store(true)
	}
	return nil
}

// reap removes dead nodes (a bounded amount of work per script, so Redis
// never blocks long) and sweeps expired inbox entries.
func (e *Engine) reap(ctx context.Context) error {
	for range 100 {
		if ctx.Err() != nil {
			return nil // the rest next time
		}
		r, err := e.run(ctx, "reap", e.cfg.InboxMaxTTL.Milliseconds()).Slice()
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
		if len(r) != 4 {
			return fmt.Errorf("redis reap: unexpected reply %v", r)
		}
		if n := num(r[0]); n > 0 {
			e.m.reaped.Add(float64(n))
			e.log.Warn("removed dead nodes from redis", "nodes", n)
		}
		if n := int(num(r[2])); n > 0 {
			e.node.CountInbox(gateway.InboxCounts{Expired: n})
		}
		if num(r[3]) == 0 {
			return nil // nothing left to do now
		}
	}
	return nil
}

// flush writes the pending presence and topic changes (and a requested
// resync). What fails stays pending.
func (e *Engine) flush(ctx context.Context) error {
	e.flushMu.Lock()
	defer e.flushMu.Unlock()
	e.dirtyMu.Lock()
	resync := e.resync
	e.resync = false
	e.dirtyMu.Unlock()
	if resync {
		// The lease first, so that no node reaps this one while it writes.
		err := e.call1(ctx, e.register)
		if err == nil {
			err = e.call1(ctx, e.writeWatchers)
		}
		if err == nil {
			err = e.call1(ctx, e.markAll)
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
	for t := range e.dirtyTopicUsers {
		if _, ok := e.dirtyTopics[t]; !ok {
			topics = append(topics, t)
		}
	}
	tusers := e.dirtyTopicUsers
	e.dirtyTopicUsers = make(map[string]map[string]struct{})
	clear(e.dirtyUsers)
	clear(e.dirtyTopics)
	e.dirtyMu.Unlock()

	// What is not written stays pending; what was written stays written.
	failed := func(err error, us, ts []string) error {
		e.dirtyMu.Lock()
		for _, u := range us {
			e.dirtyUsers[u] = struct{}{}
		}
		for _, t := range ts {
			e.dirtyTopics[t] = struct{}{}
		}
		e.dirtyMu.Unlock()
		for _, t := range ts {
			e.markTopicUsers(t, tusers[t])
		}
		return err
	}
	for len(users) > 0 {
		n := min(len(users), 256)
		if err := e.call1(ctx, func(ctx context.Context) error { return e.writePresence(ctx, users[:n]) }); err != nil {
			return failed(err, users, topics)
		}
		users = users[n:]
	}
	for len(topics) > 0 {
		// Up to 256 topics, or fewer when they carry many users' counts.
		n, entries := 0, 0
		for n < len(topics) && n < 256 && (n == 0 || entries < 2048) {
			entries += 1 + len(tusers[topics[n]])
			n++
		}
		if err := e.call1(ctx, func(ctx context.Context) error { return e.writeTopics(ctx, topics[:n], tusers) }); err != nil {
			return failed(err, nil, topics)
		}
		topics = topics[n:]
	}
	return nil
}

// call1 runs one step of a longer job with its own deadline (the engine's
// timeout), so that a large job is bounded per step, not as a whole.
func (e *Engine) call1(ctx context.Context, f func(context.Context) error) error {
	cctx, cancel := context.WithTimeout(ctx, e.opt.Timeout)
	defer cancel()
	return f(cctx)
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
	pairs, err := e.rdb.SMembers(ctx, e.P+":ntp:"+e.opt.Node).Result()
	if err != nil {
		e.m.errors.WithLabelValues("resync").Inc()
		return err
	}
	users = append(users, e.localUsers()...)
	topics = append(topics, e.localTopics()...)
	e.dirtyMu.Lock()
	for _, u := range users {
		e.dirtyUsers[u] = struct{}{}
	}
	for _, t := range topics {
		e.dirtyTopics[t] = struct{}{}
	}
	e.dirtyMu.Unlock()
	for _, p := range pairs {
		if t, u, ok := strings.Cut(p, "|"); ok {
			e.markTopicUsers(t, map[string]struct{}{u: {}})
		}
	}
	e.markLocalTopicUsers()
	return nil
}

// writePresence writes the current local counts of users in one script,
// holding their lock stripes (taken in index order; Join takes one) from
// reading the counts until Redis has them.
func (e *Engine) writePresence(ctx context.Context, users []string) error {
	defer e.lockStripes(&e.umu, users)()
	args := []any{e.opt.Node, graceMs(e.cfg.PresenceGrace), e.node.Connections()}
	var gone []string
	for _, u := range users {
		n, since := e.node.UserConns(u)
		args = append(args, u, n, ms(since))
		if n == 0 {
			gone = append(gone, u)
		}
	}
	leaving, err := e.run(ctx, "presence", args...).Int64()
	if err != nil {
		return err
	}
	for _, u := range gone {
		delete(e.users[e.stripe(u)], u)
	}
	if leaving > 0 {
		e.offlineDue()
	}
	return nil
}

// offlineDue says users went offline: their offline events are due after
// the grace, so the lease loop reports due ones every second until then.
func (e *Engine) offlineDue() {
	e.offlineUntil.Store(time.Now().Add(e.cfg.PresenceGrace + 2*time.Second).UnixNano())
}

// lockStripes locks the stripes of keys in index order (Join and
// SubscribeTopic take one each, so this cannot deadlock with them) and
// returns the function that unlocks them.
func (e *Engine) lockStripes(mus *[stripes]sync.Mutex, keys []string) (unlock func()) {
	var held [stripes]bool
	for _, k := range keys {
		held[e.stripe(k)] = true
	}
	for i := range held {
		if held[i] {
			mus[i].Lock()
		}
	}
	return func() {
		for i := range held {
			if held[i] {
				mus[i].Unlock()
			}
		}
	}
}

// writeTopics writes the current local subscriber counts of topics, and
// of the users in tusers (topic presence) their counts on those topics.
func (e *Engine) writeTopics(ctx context.Context, topics []string, tusers map[string]map[string]struct{}) error {
	defer e.lockStripes(&e.tmu, topics)()
	args := []any{e.opt.Node}
	var gone []string
	for _, t := range topics {
		n := e.node.TopicConns(t)
		args = append(args, t, n)
		args = append(args, e.topicUserArgsLocked(t, tusers[t])...)
		if n == 0 {
			gone = append(gone, t)
		}
	}
	if err := e.run(ctx, "topics", args...).Err(); err != nil {
		return err
	}
	for _, t := range gone {
		delete(e.topics[e.stripe(t)], t)
	}
	return nil
}

// localUsers and localTopics list what this node may hold (see
// Engine.users).
func (e *Engine) localUsers() []string { return e.local(&e.umu, &e.users) }

func (e *Engine) localTopics() []string { return e.local(&e.tmu, &e.topics) }

func (e *Engine) local(mus *[stripes]sync.Mutex, sets *[stripes]map[string]struct{}) []string {
	var out []string
	for i := range mus {
		mus[i].Lock()
		for k := range sets[i] {
			out = append(out, k)
		}
		mus[i].Unlock()
	}
	return out
}

// catchUpAll delivers, for every user this node may hold, the stored
// messages published while the node was cut off: it reads each inbox whole
// (200 users per script) and hands it to Node.Deliver, which skips what a
// connection already has (doc.go).
func (e *Engine) catchUpAll(ctx context.Context) error {
	users := e.localUsers()
	n := 0
	for len(users) > 0 {
		batch := users[:min(len(users), 200)]
		args := make([]any, 0, 2*len(batch))
		for _, u := range batch {
			args = append(args, u, "")
		}
		var r []any
		err := e.call1(ctx, func(ctx context.Context) error {
			var err error
			r, err = e.run(ctx, "after", args...).Slice()
			return err
		})
		if err != nil {
			return fmt.Errorf("catching up: %w", err)
		}
		// Per user: how many messages, then the messages.
		k := 0
		for _, u := range batch {
			if k >= len(r) {
				return fmt.Errorf("catching up: short reply")
			}
			cnt := int(num(r[k]))
			k++
			for _, b := range r[k:min(k+cnt, len(r))] {
				if m, err := gateway.DecodeMessage([]byte(str(b))); err == nil {
					n += e.node.Deliver([]string{u}, m)
				}
			}
			k += cnt
		}
		users = users[len(batch):]
	}
	if n > 0 {
		e.log.Info("delivered stored messages missed while cut off from redis", "messages", n)
	}
	return nil
}

// catchUpTopics delivers, for every topic with history this node has
// subscribers of, the kept messages: those published while the node was
// cut off reach its subscribers, in order, before anything live; a
// connection skips what it has (Node.DeliverTopic, by the topic's last id
// it queued).
func (e *Engine) catchUpTopics(ctx context.Context) error {
	n := 0
	for _, t := range e.localTopics() {
		if _, ok := e.cfg.HistoryOf(t); !ok {
			continue
		}
		var h gateway.TopicHistory
		err := e.call1(ctx, func(ctx context.Context) error {
			var err error
			h, err = e.TopicHistory(ctx, gateway.TopicHistoryRequest{Topic: t, LastID: firstID})
			return err
		})
		if err != nil {
			return fmt.Errorf("catching up topic %s: %w", t, err)
		}
		for _, m := range h.Replay {
			n += int(e.node.DeliverTopic(m))
		}
	}
	if n > 0 {
		e.log.Info("delivered topic messages missed while cut off from redis", "messages", n)
	}
	return nil
}

// firstID sorts before every message id.
const firstID = "00000000000000000000000000"

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

// Watch implements gateway.Engine: it registers a watcher on this node and
// makes sure Redis sends this node the cluster's events before it returns
// (best effort: if Redis cannot be reached, the count is written when it
// comes back).
func (e *Engine) Watch(kinds []gateway.EventKind, buffer int) *gateway.Watcher {
	w := e.node.Watch(kinds, buffer)
	e.syncWatchers()
	return w
}

// Unwatch removes w.
func (e *Engine) Unwatch(w *gateway.Watcher) {
	e.node.Unwatch(w)
	e.syncWatchers()
}

func (e *Engine) syncWatchers() {
	ctx, cancel := context.WithTimeout(context.Background(), e.opt.Timeout)
	defer cancel()
	if err := e.writeWatchers(ctx); err != nil {
		e.log.Warn("WatchEvents streams not registered in redis yet; retrying", "err", err)
		e.requestResync()
	}
}

// writeWatchers writes the node's count of WatchEvents streams.
func (e *Engine) writeWatchers(ctx context.Context) error {
	e.watchMu.Lock()
	defer e.watchMu.Unlock()
	return e.run(ctx, "watchers", e.opt.Node, e.node.Watchers()).Err()
}

// requestResync asks the worker to write the node's whole state again.
func (e *Engine) requestResync() {
	e.dirtyMu.Lock()
	e.resync = true
	e.dirtyMu.Unlock()
	e.kick()
}
