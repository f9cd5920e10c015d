package redisengine

import (
	"context"

	"pushgate/gateway"
)

// The event log over shards: each shard logs its users' events in its own
// stream (P:ev), with its own epoch, as one Redis does. A reader's cursor
// names a position in every shard's stream (gateway.ReadPos, a composite
// cursor); EventsAfter reads each shard after its position and merges
// them by time, keeping each shard's order. A user lives on one shard, so
// each user's events keep their order; events of users on different
// shards may come in another order than they happened, by as much as the
// nodes' clocks and one page of the merge differ.

// EventReadPos implements gateway.Engine: "" reads where each shard's
// log ends now (the caller watches already, so every later event reaches
// it live, and the ones up to there are Covered). A shard that cannot be
// read now does not stop a live stream: its part starts at its oldest
// kept event (so a resume from the stream's cursors may bring that
// shard's events from before the stream opened, never fewer).
func (s *Sharded) EventReadPos(ctx context.Context, cursor string) (*gateway.ReadPos, error) {
	if cursor != "" {
		return gateway.NewReadPos(cursor, len(s.shards))
	}
	ends := make([]gateway.LogPos, len(s.shards))
	_ = s.each(nil, func(k int, e *Engine) error {
		at, err := e.logEnd(ctx)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("event log: cannot read where a shard's log ends; the stream's cursors start it at its oldest kept event", "shard", k, "err", err)
			}
			return nil
		}
		ends[k] = at
		return nil
	})
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return gateway.ReadPosAt(ends), nil
}

// EventsAfter implements gateway.Engine: up to limit events after the
// composite cursor (or "0": every shard from its oldest kept event), each
// with its shard's own cursor. A shard whose part is no longer kept makes
// a *gateway.CursorError whose Oldest keeps the other shards' positions;
// a shard that cannot be reached fails the call (UNAVAILABLE).
func (s *Sharded) EventsAfter(ctx context.Context, cursor string, limit int) ([]gateway.Event, error) {
	rp, err := gateway.NewReadPos(cursor, len(s.shards))
	if err != nil {
		return nil, err
	}
	at := rp.Logs()
	got := make([][]gateway.Event, len(s.shards))
	oldest := make([]string, len(s.shards))
	err = s.each(nil, func(k int, e *Engine) error {
		var err error
		got[k], oldest[k], err = e.eventsAfter(ctx, at[k], limit)
		return err
	})
	if err != nil {
		return nil, err
	}
	lost := false
	for k, o := range oldest {
		if o != "" {
			at[k], lost = gateway.LogPos{}, true // from its oldest kept
		}
	}
	if lost {
		from := gateway.FormatCursors(at)
		return nil, &gateway.CursorError{Cursor: cursor, Oldest: from, From: from}
	}
	return mergeEvents(got, limit), nil
}

// mergeEvents merges the shards' events by time (then shard), each
// shard's in its order, up to limit. A shard that gave limit events may
// have more: the merge stops when it runs out of them, so that the next
// call, from the last event, neither skips nor repeats any.
func mergeEvents(got [][]gateway.Event, limit int) []gateway.Event {
	var out []gateway.Event
	next := make([]int, len(got))
	for len(out) < limit {
		best := -1
		for k, evs := range got {
			if next[k] == len(evs) {
				if len(evs) >= limit {
					return out // this shard may have more, later than what is left
				}
				continue
			}
			if best < 0 || evs[next[k]].Time.Before(got[best][next[best]].Time) {
				best = k
			}
		}
		if best < 0 {
			break
		}
		out = append(out, got[best][next[best]])
		next[best]++
	}
	return out
}

// Consumer implements gateway.Engine: the lease and the committed
// (composite) cursor live on shard 0, so the event webhook delivers while
// shard 0 is reachable.
func (s *Sharded) Consumer(name string) gateway.Consumer { return s.shards[0].Consumer(name) }
