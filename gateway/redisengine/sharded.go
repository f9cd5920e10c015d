package redisengine

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"pushgate/gateway"
)

// Shards: one Engine per independent Redis deployment, all delivering
// through the same node. A user and a topic live on one shard, chosen by
// ShardOf; what concerns one user (its sends, inbox, presence, join,
// acks, idempotency keys, push targets) runs in that shard's scripts, so
// the single-Redis ordering argument holds per shard. What spans users
// (a send to many, ListOnline, Presence, receipts, metrics) asks the
// shards concerned in parallel and merges; a broadcast goes through one
// live shard (every node subscribes to every shard's channels). See
// docs/cluster.md, "Shards".

// Shard is one Redis deployment of a sharded engine, or one hash tag of a
// Redis Cluster deployment spread over several (ClusterTags): shards may
// share a Client when their Prefix differs.
type Shard struct {
	Client redis.UniversalClient
	Name   string // for logs, metrics and readiness: its URL's hosts, no password (and its hash tag)
	Prefix string // its keys' hash tag; "": Options.Prefix
}

// NewSharded makes the engine over shards. With one shard it is that
// shard's Engine, with the same keys and metrics as ever. With several,
// each shard's metrics carry a "shard" label (its index).
func NewSharded(ctx context.Context, shards []Shard, log *slog.Logger, reg prometheus.Registerer, opt Options) gateway.NewEngine {
	if len(shards) == 1 {
		opt.Prefix = cmp.Or(shards[0].Prefix, opt.Prefix)
		return New(ctx, shards[0].Client, log, reg, opt)
	}
	return func(node gateway.Node) (gateway.Engine, error) {
		sn, ok := node.(gateway.ScopedNode)
		if !ok {
			return nil, errors.New("redis: a sharded engine needs a node that evicts by user (gateway.ScopedNode)")
		}
		opt.setDefaults() // one node name on every shard
		sn.SetPartition(len(shards), func(u string) int { return ShardOf(u, len(shards)) })
		s := &Sharded{node: node, names: make([]string, len(shards)), log: log}
		for i, sh := range shards {
			s.names[i] = sh.Name
			i := i
			owns := func(u string) bool { return ShardOf(u, len(shards)) == i }
			r := prometheus.WrapRegistererWith(prometheus.Labels{"shard": strconv.Itoa(i)}, reg)
			o := opt
			o.shard, o.Prefix = i, cmp.Or(sh.Prefix, opt.Prefix)
			e, err := Start(ctx, &shardNode{ScopedNode: sn, owns: owns, i: i}, sh.Client, log.With("shard", i), r, o)
			if err != nil {
				for _, o := range s.shards {
					_ = o.Close(ctx)
				}
				return nil, fmt.Errorf("shard %d (%s): %w", i, sh.Name, err)
			}
			s.shards = append(s.shards, e)
		}
		log.Info("redis engine sharded", "shards", len(shards))
		return s, nil
	}
}

// ShardOf returns the shard of a user id or topic among n: jump consistent
// hash (Lamping and Veach, 2014) of its 64-bit FNV-1a hash. Going from n
// to n+1 shards moves about 1/(n+1) of the ids, all to the new shard.
func ShardOf(id string, n int) int {
	if n <= 1 {
		return 0
	}
	h := fnv.New64a()
	_, _ = h.Write([]byte(id))
	key := h.Sum64()
	b, j := int64(-1), int64(0)
	for j < int64(n) {
		b = j
		key = key*2862933555777941757 + 1
		j = int64(float64(b+1) * (float64(int64(1)<<31) / float64((key>>33)+1)))
	}
	return int(b)
}

// shardNode is the node as one shard sees it: its connections, evicting
// and forgetting seen ids concern only the shard's users. So each shard
// counts, per node, the connections of its users, and the deployment's
// count is the shards' sum.
type shardNode struct {
	gateway.ScopedNode
	owns func(userID string) bool
	i    int
}

func (n *shardNode) Connections() int64 { return n.PartConnections(n.i) }

func (n *shardNode) Evict(window time.Duration) int { return n.EvictUsers(n.owns, window) }

func (n *shardNode) ForgetSeen(epoch string) { n.ForgetSeenUsers(n.owns, epoch) }

// Sharded is the engine over several shards (NewSharded).
type Sharded struct {
	node   gateway.Node
	shards []*Engine
	names  []string
	log    *slog.Logger
}

var _ gateway.Engine = (*Sharded)(nil)
var _ gateway.NotifyStore = (*Sharded)(nil)

func (s *Sharded) of(id string) *Engine { return s.shards[ShardOf(id, len(s.shards))] }

// group splits ids by shard, keeping their order, with each id's index.
func (s *Sharded) group(ids []string) (by [][]string, at [][]int) {
	by, at = make([][]string, len(s.shards)), make([][]int, len(s.shards))
	for i, u := range ids {
		k := ShardOf(u, len(s.shards))
		by[k] = append(by[k], u)
		at[k] = append(at[k], i)
	}
	return by, at
}

// each runs f on the shards for which want is true, in parallel, and
// returns the first error by shard order.
func (s *Sharded) each(want func(k int) bool, f func(k int, e *Engine) error) error {
	errs := make([]error, len(s.shards))
	var wg sync.WaitGroup
	for k, e := range s.shards {
		if want != nil && !want(k) {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[k] = f(k, e)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// SendToUsers implements gateway.Engine: one script per shard that holds
// recipients, in parallel, all with the same proposed id. A shard whose
// last id already sorts after it hands out the successor instead (so that
// its users' messages stay in order); those users' Deliveries carry it.
// Sent.ID is the first recipient's. A shard that fails fails the call
// (UNAVAILABLE) after the others sent: a retry with the same idempotency
// key (recorded on each shard) replays those and sends on the rest.
func (s *Sharded) SendToUsers(ctx context.Context, users []string, p gateway.Push) (gateway.Sent, error) {
	by, at := s.group(users)
	id, now := gateway.NewID(), time.Now()
	res := make([]gateway.Sent, len(s.shards))
	err := s.each(func(k int) bool { return len(by[k]) > 0 }, func(k int, e *Engine) error {
		var err error
		res[k], err = e.sendToUsers(ctx, by[k], p, id, now)
		return err
	})
	if err != nil {
		return gateway.Sent{}, err
	}
	out := gateway.Sent{Time: now, Users: make([]gateway.Delivery, len(users)), Replayed: true}
	if len(users) == 0 {
		out.ID, out.Replayed = id, false
	}
	for k := range s.shards {
		if len(by[k]) == 0 {
			continue
		}
		out.Replayed = out.Replayed && res[k].Replayed
		for j, d := range res[k].Users {
			d.MessageID = res[k].ID
			out.Users[at[k][j]] = d
		}
	}
	if len(users) > 0 {
		out.ID = out.Users[0].MessageID
	}
	for i := range out.Users {
		if out.Users[i].MessageID == out.ID {
			out.Users[i].MessageID = ""
		}
	}
	return out, nil
}

// Broadcast implements gateway.Engine: through one shard (every node hears
// every shard's broadcast channel): the idempotency key's shard when there
// is a key, so that a retry is recognised; else the first shard that is up.
// The count is the connections of every shard's users less the excluded
// users' (each shard counts its own users' connections).
func (s *Sharded) Broadcast(ctx context.Context, p gateway.Push, exclude []string) (gateway.Sent, error) {
	var sent gateway.Sent
	var err error
	via := -1
	if p.Idempotency.Key != "" {
		via = ShardOf(p.Idempotency.Key, len(s.shards))
		sent, err = s.shards[via].Broadcast(ctx, p, exclude)
	} else {
		for k, e := range s.shards {
			if !e.Up() {
				continue
			}
			if sent, err = e.Broadcast(ctx, p, exclude); err == nil || !errors.Is(err, gateway.ErrUnavailable) {
				via = k
				break
			}
		}
		if via < 0 && err == nil {
			err = fmt.Errorf("%w: no redis shard reachable", gateway.ErrUnavailable)
		}
	}
	if err != nil {
		return gateway.Sent{}, err
	}
	// The shard that ran it counted its own users only.
	page, err := s.ListOnline(ctx, "", 0, nil)
	if err != nil {
		return sent, nil // sent; the count is the one shard's
	}
	sent.Connections = page.TotalConnections
	if len(exclude) > 0 {
		if pr, err := s.Presence(ctx, exclude); err == nil {
			for _, u := range pr {
				sent.Connections -= int64(u.Connections)
			}
		}
	}
	sent.Connections = max(sent.Connections, 0)
	return sent, nil
}

// Publish implements gateway.Engine: on the topic's shard.
func (s *Sharded) Publish(ctx context.Context, topic string, p gateway.Push) (gateway.Sent, error) {
	return s.of(topic).Publish(ctx, topic, p)
}

// Disconnect implements gateway.Engine: on the user's shard.
func (s *Sharded) Disconnect(ctx context.Context, userID, text string) (int, error) {
	return s.of(userID).Disconnect(ctx, userID, text)
}

// Presence implements gateway.Engine: each shard reports its users.
func (s *Sharded) Presence(ctx context.Context, userIDs []string) ([]gateway.OnlineUser, error) {
	by, at := s.group(userIDs)
	out := make([]gateway.OnlineUser, len(userIDs))
	err := s.each(func(k int) bool { return len(by[k]) > 0 }, func(k int, e *Engine) error {
		r, err := e.Presence(ctx, by[k])
		for j, u := range r {
			out[at[k][j]] = u
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ListOnline implements gateway.Engine: every shard's page after `after`,
// merged by user id (a user is on one shard, so none twice); the page
// token is the last id, as with one shard, so pages neither skip nor
// repeat a user.
func (s *Sharded) ListOnline(ctx context.Context, after string, limit int, match func(string) bool) (gateway.OnlinePage, error) {
	pages := make([]gateway.OnlinePage, len(s.shards))
	err := s.each(nil, func(k int, e *Engine) error {
		var err error
		pages[k], err = e.ListOnline(ctx, after, limit, match)
		return err
	})
	if err != nil {
		return gateway.OnlinePage{}, err
	}
	var out gateway.OnlinePage
	for _, p := range pages {
		out.Users = append(out.Users, p.Users...)
		out.More = out.More || p.More
		out.TotalUsers += p.TotalUsers
		out.TotalConnections += p.TotalConnections
	}
	slices.SortFunc(out.Users, func(a, b gateway.OnlineUser) int { return cmp.Compare(a.UserID, b.UserID) })
	if len(out.Users) > limit {
		out.Users, out.More = out.Users[:limit], true
	}
	return out, nil
}

// Users implements gateway.Engine: the shards' sum (-1 when one cannot be
// read).
func (s *Sharded) Users() int64 { return s.sum((*Engine).Users) }

// Connections implements gateway.Engine: each shard counts its users'.
func (s *Sharded) Connections() int64 { return s.sum((*Engine).Connections) }

// Inboxed implements gateway.Engine.
func (s *Sharded) Inboxed() int64 { return s.sum((*Engine).Inboxed) }

// Receipts implements gateway.Engine.
func (s *Sharded) Receipts() int64 { return s.sum((*Engine).Receipts) }

// EventLogLen implements gateway.Engine: the events all shards' logs keep.
func (s *Sharded) EventLogLen() int64 { return s.sum((*Engine).EventLogLen) }

// PendingEscalations implements gateway.NotifyStore.
func (s *Sharded) PendingEscalations() int64 { return s.sum((*Engine).PendingEscalations) }

func (s *Sharded) sum(f func(*Engine) int64) int64 {
	var n int64
	for _, e := range s.shards {
		c := f(e)
		if c < 0 {
			return -1
		}
		n += c
	}
	return n
}

// Up implements gateway.Engine: the node can serve while it reaches at
// least one shard (the users of a shard it cannot reach get UNAVAILABLE;
// Unreachable names those shards).
func (s *Sharded) Up() bool {
	for _, e := range s.shards {
		if e.Up() {
			return true
		}
	}
	return false
}

// Unreachable returns the shards the node cannot reach now, as
// "<index> (<name>)".
func (s *Sharded) Unreachable() []string {
	var out []string
	for k, e := range s.shards {
		if !e.Up() {
			out = append(out, fmt.Sprintf("%d (%s)", k, s.names[k]))
		}
	}
	return out
}

// Watch implements gateway.Engine: one watcher on the node, and every
// shard sends the node its events.
func (s *Sharded) Watch(kinds []gateway.EventKind, buffer int) *gateway.Watcher {
	w := s.node.Watch(kinds, buffer)
	_ = s.each(nil, func(_ int, e *Engine) error { e.syncWatchers(); return nil })
	return w
}

// Unwatch implements gateway.Engine.
func (s *Sharded) Unwatch(w *gateway.Watcher) {
	s.node.Unwatch(w)
	_ = s.each(nil, func(_ int, e *Engine) error { e.syncWatchers(); return nil })
}

// Receipt implements gateway.Engine: each shard keeps the receipts of its
// recipients under the id it handed out. With users, each is asked on its
// shard; without, the recipients are listed shard by shard (shard 0's in
// the order of the send, then shard 1's, ...). Total counts every shard's.
func (s *Sharded) Receipt(ctx context.Context, id string, users []string, offset, limit int) (gateway.Receipt, error) {
	by, at := s.group(users)
	rs := make([]gateway.Receipt, len(s.shards))
	errs := make([]error, len(s.shards))
	_ = s.each(nil, func(k int, e *Engine) error {
		// Without users of the shard: its Total only (limit 0 lists nobody).
		rs[k], errs[k] = e.Receipt(ctx, id, by[k], 0, 0)
		return nil
	})
	var out gateway.Receipt
	var noReceipt error
	found := false
	for k := range s.shards {
		switch {
		case errors.Is(errs[k], gateway.ErrNoReceipt):
			noReceipt = cmp.Or(noReceipt, errs[k])
			continue
		case errs[k] != nil:
			return gateway.Receipt{}, errs[k]
		}
		if !found || rs[k].Time.Before(out.Time) {
			out.Time = rs[k].Time
		}
		out.Expires = later(out.Expires, rs[k].Expires)
		out.MessageID, out.Total, found = id, out.Total+rs[k].Total, true
	}
	if !found {
		return gateway.Receipt{}, noReceipt
	}
	if len(users) > 0 {
		out.Recipients = make([]gateway.RecipientStatus, len(users))
		for k := range s.shards {
			if len(by[k]) == 0 {
				continue
			}
			if errs[k] != nil { // no receipt on the user's shard
				return gateway.Receipt{}, gateway.NotRecipient(id, at[k][0], by[k][0])
			}
			for j, r := range rs[k].Recipients {
				out.Recipients[at[k][j]] = r
			}
		}
		return out, nil
	}
	for k, e := range s.shards {
		if errs[k] != nil || limit <= 0 {
			continue
		}
		if offset >= rs[k].Total {
			offset -= rs[k].Total
			continue
		}
		r, err := e.Receipt(ctx, id, nil, offset, limit)
		if err != nil {
			return gateway.Receipt{}, err
		}
		out.Recipients = append(out.Recipients, r.Recipients...)
		offset, limit = 0, limit-len(r.Recipients)
	}
	return out, nil
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// Join implements gateway.Engine: on the user's shard, whose epoch the
// connection gets (a user moved to another shard resumes with
// recovered: false, its client's epoch being another shard's).
func (s *Sharded) Join(ctx context.Context, j gateway.JoinRequest) (gateway.Joined, error) {
	return s.of(j.UserID).Join(ctx, j)
}

// Left implements gateway.Engine.
func (s *Sharded) Left(userID string) { s.of(userID).Left(userID) }

// Subscribe implements gateway.Engine: on the topic's shard.
func (s *Sharded) Subscribe(ctx context.Context, topic string) error {
	return s.of(topic).Subscribe(ctx, topic)
}

// Unsubscribed implements gateway.Engine.
func (s *Sharded) Unsubscribed(topic string) { s.of(topic).Unsubscribed(topic) }

// TopicHistory implements gateway.Engine: on the topic's shard, whose
// epoch the subscription gets (a topic moved to another shard resumes
// with recovered: false).
func (s *Sharded) TopicHistory(ctx context.Context, r gateway.TopicHistoryRequest) (gateway.TopicHistory, error) {
	return s.of(r.Topic).TopicHistory(ctx, r)
}

// TopicUserChanged implements gateway.Engine: on the topic's shard.
func (s *Sharded) TopicUserChanged(topic, userID string) { s.of(topic).TopicUserChanged(topic, userID) }

// TopicPresence implements gateway.Engine: the topic's shard holds all of
// its presence.
func (s *Sharded) TopicPresence(ctx context.Context, topic, after string, limit int) (gateway.TopicPage, error) {
	return s.of(topic).TopicPresence(ctx, topic, after, limit)
}

// Ack implements gateway.Engine: on the user's shard.
func (s *Sharded) Ack(ctx context.Context, userID, connID string, ids []string, implicit bool) error {
	return s.of(userID).Ack(ctx, userID, connID, ids, implicit)
}

// Upstream implements gateway.Engine: logged on the event's user's shard.
func (s *Sharded) Upstream(ctx context.Context, e gateway.Event) error {
	return s.of(e.UserID).Upstream(ctx, e)
}

// AddTarget implements gateway.NotifyStore: on the user's shard.
func (s *Sharded) AddTarget(ctx context.Context, userID, id string, data []byte, max int) error {
	return s.of(userID).AddTarget(ctx, userID, id, data, max)
}

// RemoveTarget implements gateway.NotifyStore.
func (s *Sharded) RemoveTarget(ctx context.Context, userID, id string) (bool, error) {
	return s.of(userID).RemoveTarget(ctx, userID, id)
}

// Targets implements gateway.NotifyStore.
func (s *Sharded) Targets(ctx context.Context, userID string) ([]gateway.StoredTarget, error) {
	return s.of(userID).Targets(ctx, userID)
}

// ScheduleEscalation implements gateway.NotifyStore: on the user's shard,
// which holds at most its share of max (rounded up).
func (s *Sharded) ScheduleEscalation(ctx context.Context, esc gateway.Escalation, max int) error {
	n := len(s.shards)
	return s.of(esc.UserID).ScheduleEscalation(ctx, esc, (max+n-1)/n)
}

// RecordEscalationResult implements gateway.NotifyStore: the receipt, and
// so its escalation, is kept in the recipient's shard.
func (s *Sharded) RecordEscalationResult(ctx context.Context, userID, messageID string, r gateway.EscalationResult) error {
	return s.of(userID).RecordEscalationResult(ctx, userID, messageID, r)
}

// ClaimEscalations implements gateway.NotifyStore: the due escalations of
// the shards that are up, up to limit in all.
func (s *Sharded) ClaimEscalations(ctx context.Context, now time.Time, limit int) ([]gateway.ClaimedEscalation, error) {
	var out []gateway.ClaimedEscalation
	var first error
	for _, e := range s.shards {
		if len(out) >= limit {
			break
		}
		if !e.Up() {
			continue
		}
		cs, err := e.ClaimEscalations(ctx, now, limit-len(out))
		first = cmp.Or(first, err)
		out = append(out, cs...)
	}
	if len(out) == 0 {
		return nil, first
	}
	return out, nil
}

// ClaimEscalation implements gateway.NotifyStore.
func (s *Sharded) ClaimEscalation(ctx context.Context, userID, messageID string, now time.Time) (gateway.ClaimedEscalation, bool, error) {
	return s.of(userID).ClaimEscalation(ctx, userID, messageID, now)
}

// Close implements gateway.Engine: every shard leaves.
func (s *Sharded) Close(ctx context.Context) error {
	errs := make([]error, len(s.shards))
	_ = s.each(nil, func(k int, e *Engine) error { errs[k] = e.Close(ctx); return nil })
	return errors.Join(errs...)
}
