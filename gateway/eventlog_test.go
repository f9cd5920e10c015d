package gateway

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestCursorRoundTrip(t *testing.T) {
	for _, p := range []EventPos{{0, 1}, {1796299616316, 0}, {1796299616316, 42}} {
		c := FormatCursor("W0WB57QJSQ", p)
		ep, q, err := ParseCursor(c)
		if err != nil || ep != "W0WB57QJSQ" || q != p {
			t.Fatalf("%q: %q %v %v", c, ep, q, err)
		}
		if !p.Less(p.Next()) || p.Next().Less(p) {
			t.Fatalf("%v.Next() = %v", p, p.Next())
		}
	}
	for _, bad := range []string{"", "0", "x", ".1-2", "e.1", "e.1-", "e.-1", "e.a-1", "e.1-2-3", "e.-1-2", fmt.Sprintf("%065d", 0)} {
		if _, _, err := ParseCursor(bad); err == nil {
			t.Errorf("ParseCursor(%q) accepted", bad)
		}
	}
	if (EventPos{1, 0}).Less(EventPos{0, 9}) || !(EventPos{0, 9}).Less(EventPos{1, 0}) {
		t.Fatal("Less does not order by Hi first")
	}
}

// logged appends n events to l and returns them with their cursors.
func logged(l *memLog, n int) []Event {
	var out []Event
	for i := range n {
		l.append(Event{Kind: EventClientMessage, UserID: fmt.Sprint(i)}, func(e Event) { out = append(out, e) })
	}
	return out
}

func TestMemLogKeepsTheLastMax(t *testing.T) {
	l := newMemLog("E", 5, time.Hour)
	evs := logged(l, 12)
	for i, e := range evs {
		if want := FormatCursor("E", EventPos{0, uint64(i + 1)}); e.Cursor != want {
			t.Fatalf("event %d: cursor %q, want %q", i, e.Cursor, want)
		}
	}
	if n := l.len(); n != 5 {
		t.Fatalf("len %d, want 5", n)
	}
	all, err := l.after(CursorZero, 100)
	if err != nil || len(all) != 5 || all[0].Cursor != evs[7].Cursor || all[4].Cursor != evs[11].Cursor {
		t.Fatalf("after 0: %v %v", all, err)
	}
	page, err := l.after(evs[8].Cursor, 2)
	if err != nil || len(page) != 2 || page[0].UserID != "9" || page[1].UserID != "10" {
		t.Fatalf("page after 8: %v %v", page, err)
	}
	if rest, err := l.after(evs[11].Cursor, 10); err != nil || len(rest) != 0 {
		t.Fatalf("after the newest: %v %v", rest, err)
	}
	var ce *CursorError
	if _, err := l.after(evs[6].Cursor, 10); !errors.As(err, &ce) || ce.Oldest != evs[7].Cursor {
		t.Fatalf("after a dropped event: %v", err)
	}
	if _, err := l.after(FormatCursor("F", EventPos{0, 9}), 10); !errors.As(err, &ce) {
		t.Fatalf("another epoch: %v", err)
	}
	if _, err := l.after(FormatCursor("E", EventPos{0, 13}), 10); !errors.As(err, &ce) {
		t.Fatalf("a cursor not yet made: %v", err)
	}
	if _, err := l.after("nope", 10); !errors.Is(err, ErrBadCursor) {
		t.Fatalf("bad cursor: %v", err)
	}
}

func TestMemLogRetentionKeepsTheNewest(t *testing.T) {
	l := newMemLog("E", 100, 50*time.Millisecond)
	if all, err := l.after(CursorZero, 10); err != nil || len(all) != 0 {
		t.Fatalf("empty log: %v %v", all, err)
	}
	var ce *CursorError
	if _, err := l.after(FormatCursor("E", EventPos{0, 1}), 10); !errors.As(err, &ce) || ce.Oldest != CursorZero {
		t.Fatalf("empty log, a cursor: %v", err)
	}
	evs := logged(l, 3)
	deadline := time.Now().Add(5 * time.Second)
	for l.len() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("len %d after the retention", l.len())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if rest, err := l.after(evs[2].Cursor, 10); err != nil || len(rest) != 0 {
		t.Fatalf("after the newest, kept past its age: %v %v", rest, err)
	}
	more := logged(l, 1)
	if all, err := l.after(CursorZero, 10); err != nil || len(all) != 2 || all[1].Cursor != more[0].Cursor {
		t.Fatalf("after a new event: %v %v", all, err)
	}
}
