package redisengine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"pushgate/gateway"
)

// The event log is the stream P:ev: every script that reports an event
// adds it there (publish_event in scripts.lua) in the step that makes the
// change, and publishes it with its cursor to the nodes with WatchEvents
// streams. A resuming stream reads it with EventsAfter.

// decodeEvent reads an event as the scripts log it: its cursor
// ("<epoch>.<entry id>") and its JSON (wireEvent). Its Log is this
// engine's shard.
func (e *Engine) decodeEvent(cursor, body string) (gateway.Event, error) {
	var w wireEvent
	if err := json.Unmarshal([]byte(body), &w); err != nil {
		return gateway.Event{}, err
	}
	_, pos, err := gateway.ParseCursor(cursor)
	if err != nil {
		return gateway.Event{}, fmt.Errorf("event cursor %q: %w", cursor, err)
	}
	return gateway.Event{Kind: w.Kind, Time: time.UnixMilli(w.Time), UserID: w.User, ConnID: w.Conn,
		MessageID: w.Msg, Implicit: w.Implicit, Topic: w.Topic, Type: w.Type, DataKind: w.DataKind, Data: w.Data,
		Escalation: w.Esc, Cursor: cursor, Pos: pos, Log: e.opt.shard}, nil
}

// EventsAfter implements gateway.Engine: one script checks that the
// cursor's entry is still in the stream (so nothing after it was trimmed)
// and reads the entries after it. A composite cursor (of a sharded
// layout) is out of range: this log is read from its oldest kept event.
func (e *Engine) EventsAfter(ctx context.Context, cursor string, limit int) ([]gateway.Event, error) {
	var at gateway.LogPos
	switch {
	case cursor == gateway.CursorZero:
	case gateway.IsCursors(cursor):
		_, err := gateway.NewReadPos(cursor, 1)
		return nil, err
	default:
		ep, pos, err := gateway.ParseCursor(cursor)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", gateway.ErrBadCursor, err)
		}
		at = gateway.LogPos{Epoch: ep, Pos: pos}
	}
	evs, oldest, err := e.eventsAfter(ctx, at, limit)
	if err == nil && oldest != "" {
		return nil, &gateway.CursorError{Cursor: cursor, Oldest: oldest, From: gateway.CursorZero}
	}
	return evs, err
}

// eventsAfter reads up to limit events after at. The zero position with
// an epoch is the start of that epoch's log: nothing may have been trimmed
// from it since. When at's events are no longer all kept it returns the
// oldest kept event's cursor ("0" when the log is empty) and no events.
func (e *Engine) eventsAfter(ctx context.Context, at gateway.LogPos, limit int) (evs []gateway.Event, oldest string, err error) {
	var id, next string
	if at.Pos != (gateway.EventPos{}) {
		id, next = at.Pos.String(), at.Pos.Next().String()
	}
	v, err := e.call(ctx, "events", at.Epoch, id, next, limit)
	if err != nil {
		return nil, "", err
	}
	r, _ := v.([]any)
	if len(r) == 2 && str(r[0]) == "OLD" {
		return nil, str(r[1]), nil
	}
	if len(r)%2 != 1 {
		return nil, "", fmt.Errorf("redis events: unexpected reply %v", v)
	}
	ep := str(r[0])
	evs = make([]gateway.Event, 0, len(r)/2)
	for i := 1; i < len(r); i += 2 {
		ev, err := e.decodeEvent(ep+"."+str(r[i]), str(r[i+1]))
		if err != nil {
			return nil, "", fmt.Errorf("redis events: %w", err)
		}
		evs = append(evs, ev)
	}
	return evs, "", nil
}

// EventReadPos implements gateway.Engine: one log.
func (e *Engine) EventReadPos(_ context.Context, cursor string) (*gateway.ReadPos, error) {
	return gateway.NewReadPos(cursor, 1)
}

// logEnd returns where this log ends now: its epoch and last entry (the
// zero position when it is empty).
func (e *Engine) logEnd(ctx context.Context) (gateway.LogPos, error) {
	v, err := e.call(ctx, "events_end")
	if err != nil {
		return gateway.LogPos{}, err
	}
	r, _ := v.([]any)
	if len(r) != 2 {
		return gateway.LogPos{}, fmt.Errorf("redis events_end: unexpected reply %v", v)
	}
	at := gateway.LogPos{Epoch: str(r[0])}
	if id := str(r[1]); id != "" {
		if at.Pos, err = gateway.ParseEventPos(id); err != nil {
			return gateway.LogPos{}, fmt.Errorf("redis events_end: entry %q: %w", id, err)
		}
	}
	return at, nil
}

// EventLogLen implements gateway.Engine: the stream's length (-1 when
// Redis cannot be reached).
func (e *Engine) EventLogLen() int64 {
	ctx, cancel := context.WithTimeout(context.Background(), e.opt.Timeout)
	defer cancel()
	n, err := e.rdb.XLen(ctx, e.P+":ev").Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return -1
	}
	return n
}

// Consumer implements gateway.Engine: the lease is P:cl:<name> (this
// node's name, with a TTL), the committed cursor P:cc:<name>.
func (e *Engine) Consumer(name string) gateway.Consumer { return &consumer{e: e, name: name} }

type consumer struct {
	e    *Engine
	name string
}

func (c *consumer) Acquire(ctx context.Context, ttl time.Duration) (bool, error) {
	n, err := c.e.call(ctx, "consumer_lease", c.name, c.e.opt.Node, max(ttl.Milliseconds(), 1))
	return err == nil && num(n) == 1, err
}

func (c *consumer) Cursor(ctx context.Context) (string, error) {
	cctx, cancel := context.WithTimeout(ctx, c.e.opt.Timeout)
	defer cancel()
	s, err := c.e.rdb.Get(cctx, c.e.P+":cc:"+c.name).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", c.e.wrap(ctx, "consumer_cursor", err)
	}
	return s, nil
}

func (c *consumer) Commit(ctx context.Context, cursor string) (bool, error) {
	n, err := c.e.call(ctx, "consumer_commit", c.name, c.e.opt.Node, cursor)
	return err == nil && num(n) == 1, err
}

func (c *consumer) Release(ctx context.Context) error {
	_, err := c.e.call(ctx, "consumer_release", c.name, c.e.opt.Node)
	return err
}
