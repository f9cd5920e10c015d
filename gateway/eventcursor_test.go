package gateway

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

// Composite cursors round-trip, stay short (a few shards fit the one-log
// limit of 64 bytes; 64 shards the API's bound), and are never read as a
// one-log cursor or "0".
func TestCursorsRoundTrip(t *testing.T) {
	ep := NewID()[16:]
	for _, ps := range [][]LogPos{
		{{ep, EventPos{1764763616317, 0}}, {NewID()[16:], EventPos{1764763615000, 3}}},
		{{}, {ep, EventPos{}}, {"W0WB57QJSQ", EventPos{1764763616317, 1 << 40}}},
		{{"not-base32!", EventPos{5, 6}}, {ep, EventPos{^uint64(0), ^uint64(0)}}},
	} {
		c := FormatCursors(ps)
		if !IsCursors(c) || !strings.HasPrefix(c, "A") {
			t.Fatalf("%q is not taken for a composite cursor", c)
		}
		got, err := ParseCursors(c)
		if err != nil || !slices.Equal(got, ps) {
			t.Fatalf("ParseCursors(%q) = %v, %v; want %v", c, got, err, ps)
		}
	}
	// Three shards in the same hour, as a live deployment's: within the
	// 64 bytes of a one-log cursor.
	three := []LogPos{{ep, EventPos{1764763616317, 0}}, {NewID()[16:], EventPos{1764763616100, 1}}, {NewID()[16:], EventPos{1764761000000, 0}}}
	if c := FormatCursors(three); len(c) > MaxCursorBytes {
		t.Fatalf("three shards: %d bytes (%s)", len(c), c)
	}
	// The largest: 64 shards, each at its own far position.
	var many []LogPos
	for i := range 64 {
		many = append(many, LogPos{NewID()[16:], EventPos{uint64(i) << 44, ^uint64(0)}})
	}
	if c := FormatCursors(many); len(c) > MaxCursorsBytes {
		t.Fatalf("64 shards: %d bytes, over %d", len(c), MaxCursorsBytes)
	}
	for _, bad := range []string{"nope", "AQ", "AQE", strings.Repeat("A", MaxCursorsBytes+1), FormatCursors(three)[:20], FormatCursors(three) + "AA"} {
		if _, err := ParseCursors(bad); err == nil {
			t.Errorf("ParseCursors(%q) accepted", bad)
		}
	}
	if IsCursors("") || IsCursors(CursorZero) || IsCursors("W0WB57QJSQ.0-1") {
		t.Fatal("a one-log cursor taken for a composite one")
	}
}

// A reader of several logs: each event's cursor names the position in
// every log; live events at or before the position of their log are
// covered; cursors of another layout are out of range, keeping what
// still applies.
func TestReadPosSeveralLogs(t *testing.T) {
	r, err := NewReadPos(CursorZero, 2)
	if err != nil {
		t.Fatal(err)
	}
	a := Event{Cursor: "EPA.100-0", Pos: EventPos{100, 0}, Log: 0}
	b := Event{Cursor: "EPB.90-2", Pos: EventPos{90, 2}, Log: 1}
	if r.Covers(a) || r.Covers(b) {
		t.Fatal("a reader from the start covers events")
	}
	r.Advance(a)
	c := r.Advance(b)
	got, err := ParseCursors(c)
	if err != nil || !slices.Equal(got, []LogPos{{"EPA", a.Pos}, {"EPB", b.Pos}}) {
		t.Fatalf("cursor %q reads %v, %v", c, got, err)
	}
	r2, err := NewReadPos(c, 2)
	if err != nil || !r2.Covers(a) || !r2.Covers(b) || r2.Covers(Event{Cursor: "EPB.90-3", Pos: EventPos{90, 3}, Log: 1}) ||
		r2.Covers(Event{Cursor: "NEW.1-0", Pos: EventPos{1, 0}, Log: 0}) {
		t.Fatalf("resumed reader covers wrongly (%v)", err)
	}
	var ce *CursorError
	if _, err := NewReadPos(c, 3); !errors.As(err, &ce) || !ce.Layout || ce.From != FormatCursors(make([]LogPos, 3)) {
		t.Fatalf("cursor of 2 logs read for 3: %v", err)
	}
	if _, err := NewReadPos("EPA.100-0", 2); !errors.As(err, &ce) || ce.From != FormatCursors([]LogPos{{"EPA", a.Pos}, {}}) {
		t.Fatalf("one-log cursor read for 2 logs: %v", err)
	}
	if _, err := NewReadPos(c, 1); !errors.As(err, &ce) || ce.From != CursorZero {
		t.Fatalf("composite cursor read for 1 log: %v", err)
	}
	if _, err := NewReadPos("Anope", 2); !errors.Is(err, ErrBadCursor) {
		t.Fatalf("bad cursor: %v", err)
	}
	// One log: the event's own cursor, as ever.
	one, _ := NewReadPos("", 1)
	if one.Covers(a) || one.Advance(a) != a.Cursor || !one.Covers(a) || one.String() != a.Cursor {
		t.Fatal("one log: cursors are not the events' own")
	}
}

// FuzzParseCursors: whatever a caller passes as after_cursor, parsing
// neither panics nor accepts what it cannot write back the same.
func FuzzParseCursors(f *testing.F) {
	f.Add(FormatCursors([]LogPos{{"W0WB57QJSQ", EventPos{1764763616317, 0}}, {}}))
	f.Add("AQIA")
	f.Add("nope")
	f.Fuzz(func(t *testing.T, s string) {
		ps, err := ParseCursors(s)
		if err != nil {
			return
		}
		if again, err := ParseCursors(FormatCursors(ps)); err != nil || !slices.Equal(again, ps) {
			t.Fatalf("%q: %v does not round-trip (%v)", s, ps, err)
		}
	})
}
