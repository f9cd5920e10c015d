package gateway

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// inboxMsg makes a stored message with a fresh id (ids grow), size bytes of
// payload and ttl.
func inboxMsg(size int, ttl time.Duration) *Message {
	return &Message{ID: NewID(), Kind: KindText, Data: []byte(strings.Repeat("x", size)), TTL: ttl, stored: true}
}

// inboxIDs returns the ids of b's entries, in order.
func inboxIDs(b *inbox) []string {
	out := make([]string, len(b.entries))
	for i, m := range b.entries {
		out[i] = m.ID
	}
	return out
}

func msgIDs(ms []*Message) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.ID
	}
	return out
}

// checkInbox checks b's entries (by id), their parallel expiries and byte
// count.
func checkInbox(t *testing.T, b *inbox, want []*Message) {
	t.Helper()
	if got := inboxIDs(b); !slices.Equal(got, msgIDs(want)) {
		t.Fatalf("inbox holds %v, want %v", got, msgIDs(want))
	}
	if len(b.expires) != len(b.entries) {
		t.Fatalf("inbox has %d expiries for %d entries", len(b.expires), len(b.entries))
	}
	n := 0
	for _, m := range want {
		n += len(m.Data)
	}
	if b.bytes != n {
		t.Fatalf("inbox counts %d bytes, want %d", b.bytes, n)
	}
}

const inboxRemember = time.Hour

// Past the message cap the oldest entries go, one per add, and the loss is
// remembered: a resume from before the trimmed entry is not complete, one
// from it or after it is, and after the remember window nobody is told.
func TestInboxTrimByCount(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	b := &inbox{}
	ms := make([]*Message, 5)
	for i := range ms {
		ms[i] = inboxMsg(3, 48*time.Hour) // outlives the remember window
		want := 0
		if i >= 3 {
			want = 1
		}
		if got := b.add(ms[i], now, 3, 1<<20, inboxRemember); got != want {
			t.Fatalf("add #%d trimmed %d, want %d", i, got, want)
		}
	}
	checkInbox(t, b, ms[2:])

	for _, c := range []struct {
		lastID   string
		at       time.Time
		complete bool
	}{
		{"", now, false},
		{ms[0].ID, now, false},
		{ms[1].ID, now, true}, // the newest trimmed id itself: nothing after it lost
		{ms[3].ID, now, true},
		{ms[0].ID, now.Add(inboxRemember - time.Nanosecond), false},
		{ms[0].ID, now.Add(inboxRemember), true}, // the loss is forgotten
		{"", now.Add(inboxRemember + time.Minute), true},
	} {
		got, complete := b.after(c.lastID, c.at)
		if complete != c.complete {
			t.Errorf("after(%q) at +%v: complete=%v, want %v", c.lastID, c.at.Sub(now), complete, c.complete)
		}
		// What is there is returned whether or not something was lost.
		var want []string
		for _, m := range ms[2:] {
			if m.ID > c.lastID {
				want = append(want, m.ID)
			}
		}
		if !slices.Equal(msgIDs(got), want) {
			t.Errorf("after(%q) = %v, want %v", c.lastID, msgIDs(got), want)
		}
	}
}

// Past the byte cap the oldest entries go until the inbox fits, but the
// newest entry is always kept, even when it alone is over the cap.
func TestInboxTrimByBytes(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	b := &inbox{}
	a1, a2, a3 := inboxMsg(4, time.Hour), inboxMsg(4, time.Hour), inboxMsg(4, time.Hour)
	for i, m := range []*Message{a1, a2} {
		if n := b.add(m, now, 100, 10, inboxRemember); n != 0 {
			t.Fatalf("add #%d trimmed %d within the cap", i, n)
		}
	}
	if n := b.add(a3, now, 100, 10, inboxRemember); n != 1 { // 12 bytes > 10
		t.Fatalf("add over the byte cap trimmed %d, want 1", n)
	}
	checkInbox(t, b, []*Message{a2, a3})

	big := inboxMsg(25, time.Hour)
	if n := b.add(big, now, 100, 10, inboxRemember); n != 2 {
		t.Fatalf("adding an oversized entry trimmed %d, want 2 (all the older ones)", n)
	}
	checkInbox(t, b, []*Message{big})
	if _, complete := b.after(a3.ID, now); !complete {
		t.Fatal("after(the newest trimmed id) incomplete")
	}
	if _, complete := b.after(a2.ID, now); complete {
		t.Fatal("after(an id before a trimmed one) complete")
	}

	small := inboxMsg(1, time.Hour)
	if n := b.add(small, now, 100, 10, inboxRemember); n != 1 {
		t.Fatalf("add after an oversized entry trimmed %d, want 1 (the oversized one)", n)
	}
	checkInbox(t, b, []*Message{small})
	if _, complete := b.after(a3.ID, now); complete {
		t.Fatal("after(an id before the trimmed oversized entry) complete")
	}

	// A single oversized entry in an empty inbox is kept too.
	b2 := &inbox{}
	huge := inboxMsg(100, time.Hour)
	if n := b2.add(huge, now, 1, 10, inboxRemember); n != 0 {
		t.Fatalf("a lone oversized entry trimmed %d", n)
	}
	checkInbox(t, b2, []*Message{huge})
	if _, complete := b2.after("", now); !complete {
		t.Fatal("nothing was lost, yet after() is incomplete")
	}
}

// expire drops the entries whose ttl is over (wherever they are in the
// inbox), returns how many, and remembers them as lost; after() already
// leaves out entries past their ttl that expire has not dropped yet.
func TestInboxExpire(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	b := &inbox{}
	long := inboxMsg(2, time.Hour)
	short1 := inboxMsg(3, 10*time.Millisecond)
	short2 := inboxMsg(4, 20*time.Millisecond)
	last := inboxMsg(5, time.Hour)
	for _, m := range []*Message{long, short1, short2, last} {
		b.add(m, now, 100, 1<<20, inboxRemember)
	}
	if n := b.expire(now.Add(5*time.Millisecond), inboxRemember); n != 0 {
		t.Fatalf("expire before any ttl dropped %d", n)
	}
	checkInbox(t, b, []*Message{long, short1, short2, last})

	// Past short2's ttl but before any expire call: after() leaves both out.
	at := now.Add(25 * time.Millisecond)
	if got, _ := b.after("", at); !slices.Equal(msgIDs(got), msgIDs([]*Message{long, last})) {
		t.Fatalf("after() past the ttls = %v, want the live entries only", msgIDs(got))
	}

	t1 := now.Add(15 * time.Millisecond)
	if n := b.expire(t1, inboxRemember); n != 1 {
		t.Fatalf("expire past one ttl dropped %d, want 1", n)
	}
	checkInbox(t, b, []*Message{long, short2, last})
	// The ttl's end itself counts as expired.
	t2 := now.Add(20 * time.Millisecond)
	if n := b.expire(t2, inboxRemember); n != 1 {
		t.Fatalf("expire at the second ttl dropped %d, want 1", n)
	}
	checkInbox(t, b, []*Message{long, last})
	if n := b.expire(t2, inboxRemember); n != 0 {
		t.Fatalf("expire again dropped %d", n)
	}

	for _, c := range []struct {
		lastID   string
		at       time.Time
		complete bool
	}{
		{"", t2, false},
		{long.ID, t2, false},   // short1 and short2 came after it
		{short1.ID, t2, false}, // short2 came after it
		{short2.ID, t2, true},
		{last.ID, t2, true},
		{long.ID, t2.Add(inboxRemember - time.Nanosecond), false},
		{long.ID, t2.Add(inboxRemember), true},
	} {
		if _, complete := b.after(c.lastID, c.at); complete != c.complete {
			t.Errorf("after(%q) at +%v: complete=%v, want %v", c.lastID, c.at.Sub(now), complete, c.complete)
		}
	}
	// An id between two entries that were both expired is still a loss.
	b3 := &inbox{}
	e1 := inboxMsg(1, time.Millisecond)
	between := NewID()
	e2 := inboxMsg(1, time.Millisecond)
	b3.add(e1, now, 100, 1<<20, inboxRemember)
	b3.add(e2, now, 100, 1<<20, inboxRemember)
	if n := b3.expire(now.Add(time.Second), inboxRemember); n != 2 {
		t.Fatalf("expire dropped %d, want 2", n)
	}
	if got, complete := b3.after(between, now.Add(time.Second)); complete || len(got) != 0 {
		t.Fatalf("after(an id between two expired entries) = %v, complete=%v; want none, incomplete", msgIDs(got), complete)
	}
}

// after returns, in order, the entries with an id greater than lastID,
// whether lastID is in the inbox or not.
func TestInboxAfter(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	b := &inbox{}
	if got, complete := b.after("", now); len(got) != 0 || !complete {
		t.Fatalf("empty inbox: after(\"\") = %v, %v", msgIDs(got), complete)
	}
	before := NewID()
	var ms []*Message
	var gaps []string // gaps[i] sorts between ms[i] and ms[i+1]
	for range 5 {
		m := inboxMsg(1, time.Hour)
		b.add(m, now, 100, 1<<20, inboxRemember)
		ms = append(ms, m)
		gaps = append(gaps, NewID())
	}
	check := func(lastID string, want []*Message) {
		t.Helper()
		got, complete := b.after(lastID, now)
		if !slices.Equal(msgIDs(got), msgIDs(want)) {
			t.Fatalf("after(%q) = %v, want %v", lastID, msgIDs(got), msgIDs(want))
		}
		if !complete {
			t.Fatalf("after(%q) incomplete with nothing lost", lastID)
		}
	}
	check("", ms)
	check(before, ms)
	for i := range ms {
		check(ms[i].ID, ms[i+1:])
		check(gaps[i], ms[i+1:])
	}
	if got, _ := b.after(ms[1].ID, now); len(got) > 0 && got[0] != ms[2] {
		t.Fatal("after() does not return the stored *Message itself")
	}
}

// ackThrough removes every entry up to lastID (present or not) and returns
// their ids in order; that is no loss.
func TestInboxAckThrough(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	b := &inbox{}
	before := NewID()
	var ms []*Message
	for i := range 5 {
		m := inboxMsg(i+1, time.Hour)
		b.add(m, now, 100, 1<<20, inboxRemember)
		ms = append(ms, m)
	}
	between := NewID()
	after := inboxMsg(7, time.Hour)
	b.add(after, now, 100, 1<<20, inboxRemember)
	all := append(slices.Clone(ms), after)

	if got := b.ackThrough(""); len(got) != 0 {
		t.Fatalf("ackThrough(\"\") = %v, want none", got)
	}
	if got := b.ackThrough(before); len(got) != 0 {
		t.Fatalf("ackThrough(an id before all) = %v, want none", got)
	}
	checkInbox(t, b, all)

	if got := b.ackThrough(ms[1].ID); !slices.Equal(got, msgIDs(ms[:2])) {
		t.Fatalf("ackThrough(ms[1]) = %v, want %v", got, msgIDs(ms[:2]))
	}
	checkInbox(t, b, all[2:])
	if got := b.ackThrough(ms[1].ID); len(got) != 0 {
		t.Fatalf("ackThrough(ms[1]) again = %v, want none", got)
	}
	// An id that is not in the inbox acknowledges everything before it.
	if got := b.ackThrough(between); !slices.Equal(got, msgIDs(ms[2:])) {
		t.Fatalf("ackThrough(an id between entries) = %v, want %v", got, msgIDs(ms[2:]))
	}
	checkInbox(t, b, []*Message{after})
	if got, complete := b.after("", now); !complete || len(got) != 1 {
		t.Fatalf("after ackThrough: after(\"\") = %v, complete=%v; want [after], complete", msgIDs(got), complete)
	}
	if got := b.ackThrough(NewID()); !slices.Equal(got, []string{after.ID}) {
		t.Fatalf("ackThrough(a later id) = %v, want %v", got, after.ID)
	}
	checkInbox(t, b, nil)
	if !b.empty(now) {
		t.Fatal("inbox not empty after everything was acknowledged")
	}
}

// ack removes one entry by id (anywhere in the inbox) and reports whether it
// was there.
func TestInboxAck(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	b := &inbox{}
	before := NewID()
	var ms []*Message
	var gaps []string
	for i := range 5 {
		m := inboxMsg(i+1, time.Hour)
		b.add(m, now, 100, 1<<20, inboxRemember)
		ms = append(ms, m)
		gaps = append(gaps, NewID())
	}
	for _, id := range append([]string{"", before, "not an id"}, gaps...) {
		if b.ack(id) {
			t.Fatalf("ack(%q) of an absent id reported true", id)
		}
	}
	checkInbox(t, b, ms)

	if !b.ack(ms[2].ID) {
		t.Fatal("ack of a present id (middle) reported false")
	}
	checkInbox(t, b, []*Message{ms[0], ms[1], ms[3], ms[4]})
	if b.ack(ms[2].ID) {
		t.Fatal("second ack of the same id reported true")
	}
	if !b.ack(ms[4].ID) || !b.ack(ms[0].ID) {
		t.Fatal("ack of the last or the first entry reported false")
	}
	checkInbox(t, b, []*Message{ms[1], ms[3]})
	if got, complete := b.after("", now); !complete || !slices.Equal(msgIDs(got), msgIDs([]*Message{ms[1], ms[3]})) {
		t.Fatalf("after acks: after(\"\") = %v, complete=%v", msgIDs(got), complete)
	}
	if !b.ack(ms[1].ID) || !b.ack(ms[3].ID) {
		t.Fatal("ack of the remaining entries reported false")
	}
	checkInbox(t, b, nil)
	if !b.empty(now) {
		t.Fatal("inbox not empty after acking everything")
	}
}

// empty: no entries and no loss to remember.
func TestInboxEmpty(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	b := &inbox{}
	if !b.empty(now) {
		t.Fatal("new inbox not empty")
	}
	m := inboxMsg(1, time.Hour)
	b.add(m, now, 100, 1<<20, inboxRemember)
	if b.empty(now) {
		t.Fatal("inbox with an entry is empty")
	}
	// An entry past its ttl that expire has not dropped still counts.
	if b.empty(now.Add(2 * time.Hour)) {
		t.Fatal("inbox with an undropped entry is empty")
	}
	b.ack(m.ID)
	if !b.empty(now) {
		t.Fatal("inbox whose only entry was acknowledged is not empty")
	}

	// A loss keeps the inbox until it is forgotten.
	m1, m2 := inboxMsg(1, time.Hour), inboxMsg(1, time.Hour)
	b.add(m1, now, 1, 1<<20, inboxRemember)
	b.add(m2, now, 1, 1<<20, inboxRemember) // trims m1
	b.ack(m2.ID)
	if len(b.entries) != 0 {
		t.Fatalf("inbox holds %v", inboxIDs(b))
	}
	if b.empty(now) || b.empty(now.Add(inboxRemember-time.Nanosecond)) {
		t.Fatal("inbox with a remembered loss is empty")
	}
	if !b.empty(now.Add(inboxRemember)) {
		t.Fatal("inbox not empty once its loss is forgotten")
	}

	b2 := &inbox{}
	e := inboxMsg(1, time.Millisecond)
	b2.add(e, now, 100, 1<<20, time.Minute)
	if n := b2.expire(now.Add(time.Second), time.Minute); n != 1 {
		t.Fatalf("expire dropped %d", n)
	}
	if b2.empty(now.Add(time.Second)) {
		t.Fatal("inbox with a remembered expiry is empty")
	}
	if !b2.empty(now.Add(time.Second + time.Minute)) {
		t.Fatal("inbox not empty once its expiry is forgotten")
	}
}
