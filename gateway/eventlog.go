package gateway

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Every event an engine reports gets a cursor: its place in the
// deployment's event log (one ordered log per deployment: the memory
// engine's in this process, the Redis engine's a Redis stream). A
// WatchEvents stream that resumes after a cursor gets the kept events after
// it (Engine.EventsAfter), then live ones.
//
// A cursor is "<epoch>.<hi>-<lo>": the log's epoch (a log that was lost, a
// memory engine of another process, starts a new one) and the event's
// position in it, ordered by (hi, lo). The memory engine's positions are
// 0-<n>, the Redis engine's the stream's entry ids (<ms>-<n>). An engine
// over several logs (the sharded Redis engine) gives its readers composite
// cursors instead (eventcursor.go).

// CursorZero asks for the log from its oldest kept event.
const CursorZero = "0"

// MaxCursorBytes is the longest cursor of one log the API accepts (and
// makes); composite cursors, of several logs, have MaxCursorsBytes.
const MaxCursorBytes = 64

// EventPos is an event's position in its log.
type EventPos struct{ Hi, Lo uint64 }

// Less reports whether p comes before q.
func (p EventPos) Less(q EventPos) bool {
	return p.Hi < q.Hi || p.Hi == q.Hi && p.Lo < q.Lo
}

// Next is the smallest position after p.
func (p EventPos) Next() EventPos {
	if p.Lo == ^uint64(0) {
		return EventPos{p.Hi + 1, 0}
	}
	return EventPos{p.Hi, p.Lo + 1}
}

func (p EventPos) String() string {
	return strconv.FormatUint(p.Hi, 10) + "-" + strconv.FormatUint(p.Lo, 10)
}

// FormatCursor makes the cursor of the event at p in the log of epoch.
func FormatCursor(epoch string, p EventPos) string { return epoch + "." + p.String() }

// ParseCursor reads a cursor made by FormatCursor.
func ParseCursor(s string) (epoch string, p EventPos, err error) {
	if len(s) > MaxCursorBytes {
		return "", p, fmt.Errorf("longer than %d bytes", MaxCursorBytes)
	}
	epoch, pos, ok := strings.Cut(s, ".")
	if !ok || epoch == "" {
		return "", p, errors.New(`not a cursor: pass an Event.cursor, or "0" for the oldest kept event`)
	}
	p, err = ParseEventPos(pos)
	return epoch, p, err
}

// ParseEventPos reads "<hi>-<lo>".
func ParseEventPos(s string) (EventPos, error) {
	hi, lo, ok := strings.Cut(s, "-")
	var p EventPos
	var err1, err2 error
	p.Hi, err1 = strconv.ParseUint(hi, 10, 64)
	p.Lo, err2 = strconv.ParseUint(lo, 10, 64)
	if !ok || err1 != nil || err2 != nil {
		return p, errors.New(`not a cursor: pass an Event.cursor, or "0" for the oldest kept event`)
	}
	return p, nil
}

// CursorError says a cursor's events are no longer all kept: it is older
// than the oldest kept event (trimmed by size or age), or from a log that
// was lost (another epoch), or (Layout) of another layout of the logs (a
// deployment sharded since, or differently). Oldest is the oldest kept
// event's cursor ("0" when the log is empty), from which a consumer may
// start again. With several logs (eventcursor.go) Oldest is the cursor
// that keeps the given one's position in each log that still holds its
// part, and starts from the oldest kept event in the others. From is
// where a reader that must go on (the webhook sink) continues with every
// event still kept: "0" with one log, Oldest with several.
type CursorError struct {
	Cursor string
	Oldest string
	From   string
	Layout bool
}

func (e *CursorError) Error() string {
	if e.Layout {
		return fmt.Sprintf("cursor %q is of another layout of the event log (the deployment's redis shards changed since); resume from %q: the kept events of every shard, after the position the cursor gives where it applies", e.Cursor, e.Oldest)
	}
	return fmt.Sprintf("cursor %q is older than the event log kept (or from a log that was lost); the oldest event kept is %q", e.Cursor, e.Oldest)
}

// ErrBadCursor wraps a cursor that cannot be read.
var ErrBadCursor = errors.New("bad cursor")

// memLog is the memory engine's event log: a ring of the last events, with
// their time, trimmed by count (Config.EventLogMax) and age
// (Config.EventLogRetention; the newest event past it is kept, so a
// consumer that saw it can resume). Positions are 0-<n>, n counting from
// 1 in this process; the epoch is the engine's.
type memLog struct {
	epoch  string        // immutable
	max    int           // immutable
	keep   time.Duration // immutable
	mu     sync.Mutex
	ring   []Event // guarded by mu: the i-th oldest event is ring[(start+i)%len(ring)]
	start  int     // guarded by mu: index in ring of the oldest event
	n      int     // guarded by mu: events kept
	oldest uint64  // guarded by mu: position (Lo) of ring[start]
}

func newMemLog(epoch string, max int, keep time.Duration) *memLog {
	return &memLog{epoch: epoch, max: max, keep: keep, oldest: 1}
}

// append gives e its cursor and keeps it; emit (called under the log's
// lock, so the order of the calls is the log's) hands it on.
func (l *memLog) append(e Event, emit func(Event)) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.trimLocked(e.Time)
	if l.n == l.max {
		l.dropLocked()
	}
	if l.n == len(l.ring) {
		l.growLocked()
	}
	e.Pos = EventPos{0, l.oldest + uint64(l.n)}
	e.Cursor = FormatCursor(l.epoch, e.Pos)
	l.ring[(l.start+l.n)%len(l.ring)] = e
	l.n++
	emit(e)
}

func (l *memLog) growLocked() {
	size := min(max(2*len(l.ring), 64), l.max)
	next := make([]Event, size)
	for i := 0; i < l.n; i++ {
		next[i] = l.ring[(l.start+i)%len(l.ring)]
	}
	l.ring, l.start = next, 0
}

func (l *memLog) dropLocked() {
	l.ring[l.start] = Event{}
	l.start = (l.start + 1) % len(l.ring)
	l.n--
	l.oldest++
}

// trimLocked drops the events older than the retention but the newest of
// them: a consumer whose cursor is the last event before a quiet spell can
// resume after it.
func (l *memLog) trimLocked(now time.Time) {
	for l.n > 1 && now.Sub(l.ring[(l.start+1)%len(l.ring)].Time) > l.keep {
		l.dropLocked()
	}
}

// len returns the events kept.
func (l *memLog) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.trimLocked(time.Now())
	return l.n
}

// after returns up to limit events after cursor, in order.
func (l *memLog) after(cursor string, limit int) ([]Event, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.trimLocked(time.Now())
	oldest := CursorZero
	if l.n > 0 {
		oldest = l.ring[l.start].Cursor
	}
	from := l.oldest // the first position to return
	if cursor != CursorZero {
		epoch, p, err := ParseCursor(cursor)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadCursor, err)
		}
		// The cursor's own event must still be kept: then nothing after it
		// was dropped.
		if epoch != l.epoch || p.Hi != 0 || p.Lo < l.oldest || p.Lo >= l.oldest+uint64(l.n) {
			return nil, &CursorError{Cursor: cursor, Oldest: oldest}
		}
		from = p.Lo + 1
	}
	k := int(from - l.oldest)
	out := make([]Event, 0, min(limit, l.n-k))
	for i := k; i < l.n && len(out) < limit; i++ {
		out = append(out, l.ring[(l.start+i)%len(l.ring)])
	}
	return out, nil
}

// memConsumer is a consumer of the memory engine: the only node always
// holds its lease; its cursor lives as long as the process (and the log).
type memConsumer struct {
	mu     sync.Mutex
	cursor string // guarded by mu
}

func (c *memConsumer) Acquire(context.Context, time.Duration) (bool, error) { return true, nil }

func (c *memConsumer) Cursor(context.Context) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cursor, nil
}

func (c *memConsumer) Commit(_ context.Context, cursor string) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cursor = cursor
	return true, nil
}

func (c *memConsumer) Release(context.Context) error { return nil }
