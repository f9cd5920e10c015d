package gateway

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// An engine may keep its event log as several logs: the sharded Redis
// engine keeps one per shard, each with its own epoch and positions. A
// reader's cursor must then name a position in every log: a composite
// cursor. Within one log events keep their order; across logs a reader
// may see them in any order that keeps each log's (ReadPos).
//
// A composite cursor is the unpadded base64url encoding of:
//
//	version   1 byte, 1
//	logs      uvarint: how many logs
//	base      uvarint: the Hi of log 0's position
//	per log:  epoch   1 byte n, then n/5*8 rounded up bytes: the epoch's
//	                  Crockford base32 digits packed 5 bits each (n <= 16);
//	                  or 0x80|n then n raw bytes for an epoch of other
//	                  characters; 0: none (the log was empty, or "0")
//	          hi      zigzag varint: Hi less base
//	          lo      uvarint: Lo
//
// A log with no epoch and position 0-0 is read from its oldest kept event.
// It contains no '.', so it is never read as a one-log cursor, and v1
// cursors all begin with "A".

// MaxCursorsBytes is the longest composite cursor the API accepts: with
// epochs of at most 16 characters (the Redis engine's have 10) a log takes
// at most 37 bytes, under 50 characters once encoded, and there are at
// most 64 logs (the Redis engine's shards).
const MaxCursorsBytes = 64 * MaxCursorBytes

const cursorsVersion = 1

// maxEpochBytes bounds an epoch in a composite cursor.
const maxEpochBytes = 16

// LogPos is a reader's position in one log: the last event it read there.
// The zero value is the log's start: its oldest kept event comes next.
type LogPos struct {
	Epoch string
	Pos   EventPos
}

// IsCursors reports whether s has the form of a composite cursor (not ""
// or "0", and not a one-log cursor, which holds a '.').
func IsCursors(s string) bool {
	return s != "" && s != CursorZero && !strings.Contains(s, ".")
}

var errNotCursor = errors.New(`not a cursor: pass an Event.cursor, or "0" for the oldest kept event`)

// FormatCursors makes the composite cursor of the positions ps.
func FormatCursors(ps []LogPos) string {
	b := make([]byte, 0, 8+20*len(ps))
	b = append(b, cursorsVersion)
	b = binary.AppendUvarint(b, uint64(len(ps)))
	var base uint64
	if len(ps) > 0 {
		base = ps[0].Pos.Hi
	}
	b = binary.AppendUvarint(b, base)
	for _, p := range ps {
		b = appendEpoch(b, p.Epoch)
		b = binary.AppendVarint(b, int64(p.Pos.Hi-base))
		b = binary.AppendUvarint(b, p.Pos.Lo)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// ParseCursors reads a cursor made by FormatCursors.
func ParseCursors(s string) ([]LogPos, error) {
	if len(s) > MaxCursorsBytes {
		return nil, fmt.Errorf("longer than %d bytes", MaxCursorsBytes)
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) < 3 || b[0] != cursorsVersion {
		return nil, errNotCursor
	}
	r := cursorReader{b: b[1:]}
	n := r.uvarint()
	base := r.uvarint()
	if r.err != nil || n == 0 || n > uint64(len(r.b)) {
		return nil, errNotCursor
	}
	ps := make([]LogPos, n)
	for i := range ps {
		ps[i].Epoch = r.epoch()
		ps[i].Pos.Hi = base + uint64(r.varint())
		ps[i].Pos.Lo = r.uvarint()
	}
	if r.err != nil || len(r.b) != 0 {
		return nil, errNotCursor
	}
	return ps, nil
}

// appendEpoch writes ep: packed when it is Crockford base32, else raw.
func appendEpoch(b []byte, ep string) []byte {
	if len(ep) > maxEpochBytes {
		// Epochs are the engines' own (10 characters); a longer one would
		// make cursors longer than the API accepts.
		panic(fmt.Sprintf("gateway: epoch %q longer than %d bytes", ep, maxEpochBytes))
	}
	var acc uint64
	bits := 0
	packed := make([]byte, 0, (len(ep)*5+7)/8)
	for i := 0; i < len(ep); i++ {
		d := strings.IndexByte(crockford, ep[i])
		if d < 0 {
			return append(append(b, 0x80|byte(len(ep))), ep...)
		}
		acc, bits = acc<<5|uint64(d), bits+5
		if bits >= 8 {
			packed = append(packed, byte(acc>>(bits-8)))
			bits -= 8
		}
	}
	if bits > 0 {
		packed = append(packed, byte(acc<<(8-bits)))
	}
	return append(append(b, byte(len(ep))), packed...)
}

type cursorReader struct {
	b   []byte
	err error
}

func (r *cursorReader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err, r.b = errNotCursor, nil
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *cursorReader) varint() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.err, r.b = errNotCursor, nil
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *cursorReader) epoch() string {
	if len(r.b) == 0 {
		r.err = errNotCursor
		return ""
	}
	h := r.b[0]
	n := int(h &^ 0x80)
	r.b = r.b[1:]
	if n > maxEpochBytes {
		r.err, r.b = errNotCursor, nil
		return ""
	}
	if h&0x80 != 0 {
		if len(r.b) < n {
			r.err, r.b = errNotCursor, nil
			return ""
		}
		s := string(r.b[:n])
		r.b = r.b[n:]
		return s
	}
	size := (n*5 + 7) / 8
	if len(r.b) < size {
		r.err, r.b = errNotCursor, nil
		return ""
	}
	out := make([]byte, n)
	var acc uint64
	bits, j := 0, 0
	for i := range out {
		for bits < 5 {
			acc, bits, j = acc<<8|uint64(r.b[j]), bits+8, j+1
		}
		out[i] = crockford[(acc>>(bits-5))&31]
		bits -= 5
	}
	r.b = r.b[size:]
	return string(out)
}

// ReadPos is where a reader of the event log stands (a WatchEvents stream,
// the webhook sink): the last event it read in each of the engine's logs.
// Engine.EventReadPos makes it; the reader passes String() to EventsAfter,
// skips the live events it Covers, and gives each event it passes on the
// cursor Advance returns. With one log that cursor is the event's own
// (Event.Cursor), exactly as it has always been. Not safe for concurrent
// use.
type ReadPos struct {
	multi  bool
	logs   []LogPos // multi: one per log
	cursor string   // one log: the last cursor ("" live only, or "0")
	pos    LogPos   // one log: its position, when cursor is an event's
}

// NewReadPos reads after (an Event.cursor, CursorZero, or "" for none)
// for an engine with logs logs. With one log a composite cursor (of a
// sharded deployment that had several logs) is a *CursorError from the
// start of the log; with several, a cursor of another layout (one log's,
// or another number of logs) is a *CursorError whose From keeps what
// still applies. A cursor that cannot be read wraps ErrBadCursor.
func NewReadPos(after string, logs int) (*ReadPos, error) {
	if logs <= 1 {
		r := &ReadPos{cursor: after}
		switch {
		case after == "" || after == CursorZero:
		case IsCursors(after):
			if _, err := ParseCursors(after); err != nil {
				return nil, fmt.Errorf("%w: %v", ErrBadCursor, err)
			}
			return nil, &CursorError{Cursor: after, Oldest: CursorZero, From: CursorZero, Layout: true}
		default:
			ep, p, err := ParseCursor(after)
			if err != nil {
				return nil, fmt.Errorf("%w: %v", ErrBadCursor, err)
			}
			r.pos = LogPos{ep, p}
		}
		return r, nil
	}
	r := &ReadPos{multi: true, logs: make([]LogPos, logs)}
	switch {
	case after == "" || after == CursorZero:
		return r, nil
	case IsCursors(after):
		ps, err := ParseCursors(after)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadCursor, err)
		}
		if len(ps) != logs {
			from := FormatCursors(r.logs)
			return nil, &CursorError{Cursor: after, Oldest: from, From: from, Layout: true}
		}
		copy(r.logs, ps)
		return r, nil
	default:
		// A cursor of the one log the deployment had before it was
		// sharded: that log is now shard 0's.
		ep, p, err := ParseCursor(after)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadCursor, err)
		}
		r.logs[0] = LogPos{ep, p}
		from := FormatCursors(r.logs)
		return nil, &CursorError{Cursor: after, Oldest: from, From: from, Layout: true}
	}
}

// ReadPosAt is a reader of several logs standing at ps (one per log).
func ReadPosAt(ps []LogPos) *ReadPos {
	return &ReadPos{multi: true, logs: append([]LogPos(nil), ps...)}
}

// Logs returns the position in each log (nil with one log).
func (r *ReadPos) Logs() []LogPos { return append([]LogPos(nil), r.logs...) }

// String is the reader's cursor: what to pass to EventsAfter, or to resume
// with. With one log, "" when it has read nothing and started live.
func (r *ReadPos) String() string {
	if r.multi {
		return FormatCursors(r.logs)
	}
	return r.cursor
}

// Covers reports whether e is at or before the reader's position in e's
// log (so the reader already had it, from the log).
func (r *ReadPos) Covers(e Event) bool {
	at := r.pos
	if r.multi {
		if e.Log < 0 || e.Log >= len(r.logs) {
			return false
		}
		at = r.logs[e.Log]
	} else if r.cursor == "" || r.cursor == CursorZero {
		return false
	}
	ep, _, _ := strings.Cut(e.Cursor, ".")
	return at.Epoch != "" && ep == at.Epoch && !at.Pos.Less(e.Pos)
}

// Advance records e as read and returns its cursor for this reader: the
// event's own with one log; with several, the positions of every log with
// e's log moved to e.
func (r *ReadPos) Advance(e Event) string {
	ep, _, _ := strings.Cut(e.Cursor, ".")
	if !r.multi {
		r.cursor, r.pos = e.Cursor, LogPos{ep, e.Pos}
		return e.Cursor
	}
	if e.Log >= 0 && e.Log < len(r.logs) {
		r.logs[e.Log] = LogPos{ep, e.Pos}
	}
	return FormatCursors(r.logs)
}
