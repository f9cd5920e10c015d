package redisengine

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"pushgate/gateway"
)

// Data loss and replicas (docs/failures.md).
//
// A Redis that restarts without its data, or a replica promoted by Sentinel
// before it received the last writes, answers as if nothing happened. The
// node notices through its mark: the id of the last stored send Redis
// answered it, which the same script wrote in Redis (P:wm:<node>). Every
// stored send, join and restore hands the mark to Redis, and a Redis whose
// copy is older (or missing) lost writes it had answered: the script makes
// a new epoch, so clients resuming from before are told recovered: false
// rather than replayed over a gap, and tells every node ('X' on P:all).

// After Redis came back, a node's mark is checked when that node restores
// (checkEpoch), and another node may restore first: were it to serve at
// once, a client resuming through it could be told recovered: true before
// the node that holds the mark of the lost writes has looked. So a node that
// restores waits (awaitPeers) until every other live node has checked its
// mark on the same Redis (P:chk, by run id: a restarted Redis or a promoted
// replica has another), for at most half the node ttl: a node that has not
// come back by then is cut off, and is reaped soon after.

// markOf returns the node's mark, or "" once it is older than the longest
// ttl (what it stood for has expired anyway; Redis forgets it later, keep).
func (e *Engine) markOf() string {
	e.markMu.Lock()
	defer e.markMu.Unlock()
	if e.mark != "" && time.Since(e.markAt) > e.cfg.InboxMaxTTL {
		e.mark = ""
	}
	return e.mark
}

// noteStored makes id the node's mark if it is the newest stored send
// Redis answered.
func (e *Engine) noteStored(id string) {
	e.markMu.Lock()
	defer e.markMu.Unlock()
	if id > e.mark {
		e.mark, e.markAt = id, time.Now()
	}
}

// keep is how long Redis keeps a node's mark (ms): an hour past the longest
// ttl, so that it outlives the node's own memory of it (markOf).
func (e *Engine) keep() int64 { return (e.cfg.InboxMaxTTL + time.Hour).Milliseconds() }

// newEpoch records the epoch Redis has now; a change (not the first look)
// makes the connections forget the ids they have seen (Node.ForgetSeen) and
// is counted.
func (e *Engine) newEpoch(ep string) {
	if old := e.epoch.Swap(&ep); old != nil && *old != ep {
		e.m.epochs.Inc()
		e.log.Warn("redis lost data: new inbox epoch; clients resuming from before are told recovered: false", "epoch", ep, "was", *old)
		e.node.ForgetSeen(ep)
		e.node.CutWatchers() // their cursors are of the lost log
	}
}

// infoServer is INFO server of the Redis that holds the keys (in a
// Cluster, the master of the engine's hash tag).
func (e *Engine) infoServer(ctx context.Context) (string, error) {
	if cc, ok := e.rdb.(*redis.ClusterClient); ok {
		m, err := cc.MasterForKey(ctx, e.P+":lastid")
		if err != nil {
			return "", err
		}
		return m.Info(ctx, "server").Result()
	}
	return e.rdb.Info(ctx, "server").Result()
}

// runID returns the run id of the Redis that holds the keys ("" when INFO
// is not allowed, or fails: then restores do not wait for each other).
func (e *Engine) runID(ctx context.Context) string {
	info, err := e.infoServer(ctx)
	if err != nil {
		e.log.Debug("redis INFO server failed; restores will not wait for other nodes", "err", err)
		return ""
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "run_id:"); ok {
			return v
		}
	}
	return ""
}

// awaitPeers waits until every other live node has checked its mark on
// the Redis this node checked its own on, for at most half the node ttl.
func (e *Engine) awaitPeers(ctx context.Context) error {
	id := e.runid.Load()
	if id == nil || *id == "" {
		return nil
	}
	start := time.Now()
	bound := e.opt.NodeTTL / 2
	logged := false
	for {
		var n int64
		err := e.call1(ctx, func(ctx context.Context) error {
			var err error
			n, err = e.run(ctx, "peers", e.opt.Node, *id).Int64()
			return err
		})
		if err != nil {
			return err
		}
		if n == 0 {
			if logged {
				e.log.Info("every live node has checked its writes on this redis; serving again", "waited", time.Since(start).Round(time.Millisecond))
			}
			return nil
		}
		if time.Since(start) >= bound {
			e.log.Warn("nodes have not checked their writes on this redis; serving without them", "nodes", n, "waited", bound)
			return nil
		}
		if !logged {
			e.log.Info("waiting for the other live nodes to check their writes on this redis before serving", "nodes", n)
			logged = true
		}
		select {
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// sendScript runs the send script; a stored send with WaitReplicas set
// then waits for the replicas (Redis WAIT on the same connection, so that
// it covers this script's writes).
func (e *Engine) sendScript(ctx context.Context, stored bool, args []any) (any, error) {
	if !stored || e.opt.WaitReplicas <= 0 {
		return e.call(ctx, "send", args...)
	}
	cctx, cancel := context.WithTimeout(ctx, e.opt.Timeout)
	defer cancel()
	v, acked, err := e.evalWait(cctx, args, false)
	if err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT") {
		v, acked, err = e.evalWait(cctx, args, true) // a Redis that lost its scripts (restart, failover)
	}
	if err != nil {
		e.m.errors.WithLabelValues("send").Inc()
		return nil, e.wrap(ctx, "send", err)
	}
	if acked < int64(e.opt.WaitReplicas) {
		e.m.waitFailed.Inc()
		return nil, fmt.Errorf("%w: redis send: stored, but %d of %d replicas confirmed it within %v; retry with the same idempotency key",
			gateway.ErrUnavailable, acked, e.opt.WaitReplicas, e.opt.WaitTimeout)
	}
	return v, nil
}

// evalWait sends the send script and WAIT in one pipeline (one connection).
func (e *Engine) evalWait(ctx context.Context, args []any, full bool) (any, int64, error) {
	s := e.scripts["send"]
	keys := []string{e.P + ":lastid"}
	argv := append([]any{e.P}, args...)
	pipe := e.rdb.Pipeline()
	var c *redis.Cmd
	if full {
		c = s.Eval(ctx, pipe, keys, argv...)
	} else {
		c = s.EvalSha(ctx, pipe, keys, argv...)
	}
	w := pipe.Do(ctx, "wait", e.opt.WaitReplicas, e.opt.WaitTimeout.Milliseconds())
	_, _ = pipe.Exec(ctx)
	if err := c.Err(); err != nil {
		return nil, 0, err
	}
	n, err := w.Int64()
	if err != nil {
		return nil, 0, err
	}
	return c.Val(), n, nil
}
