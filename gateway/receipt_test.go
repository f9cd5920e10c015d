package gateway

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func deliveries(users ...string) []Delivery {
	out := make([]Delivery, len(users))
	for i, u := range users {
		out[i] = Delivery{UserID: u}
	}
	return out
}

// The memory store keeps at most max recipients, evicting the oldest
// receipts first (and saying so), never the one just recorded; a receipt
// past its retention is gone, and said to be older than the retention.
func TestReceiptStoreBoundsAndRetention(t *testing.T) {
	now := time.Now()
	s := newReceiptStore(4, time.Minute)
	a, b, c := NewID(), NewID(), NewID()
	if ev := s.record(a, now, 0, deliveries("u1", "u2"), nil); ev != 0 {
		t.Fatalf("evicted %d", ev)
	}
	if ev := s.record(b, now, 0, deliveries("u1", "u2"), nil); ev != 0 {
		t.Fatalf("evicted %d", ev)
	}
	if ev := s.record(c, now, 0, deliveries("u1"), nil); ev != 1 {
		t.Fatalf("evicted %d, want 1", ev)
	}
	if s.kept() != 3 {
		t.Fatalf("kept %d, want 3", s.kept())
	}
	if _, err := s.get(a, nil, 0, 10, now); !errors.Is(err, ErrNoReceipt) || !strings.Contains(err.Error(), "evicted") {
		t.Fatalf("evicted receipt: %v", err)
	}
	if r, err := s.get(b, nil, 0, 10, now); err != nil || r.Total != 2 || len(r.Recipients) != 2 || r.Recipients[1].UserID != "u2" {
		t.Fatalf("kept receipt: %+v, %v", r, err)
	}

	// One send larger than the cap keeps its receipt whole.
	big := NewID()
	if ev := s.record(big, now, 0, deliveries("a", "b", "c", "d", "e", "f"), nil); ev != 2 {
		t.Fatalf("evicted %d, want 2", ev)
	}
	if r, err := s.get(big, []string{"f", "a"}, 0, 0, now); err != nil || len(r.Recipients) != 2 || r.Recipients[0].UserID != "f" {
		t.Fatalf("big receipt: %+v, %v", r, err)
	}

	// Past the retention (or the ttl, when longer) it is gone.
	later := now.Add(2 * time.Minute)
	long := NewID()
	s.record(long, now, time.Hour, []Delivery{{UserID: "u1", Stored: true}}, nil)
	if _, err := s.get(big, nil, 0, 10, later); !errors.Is(err, ErrNoReceipt) {
		t.Fatalf("past retention: %v", err)
	}
	if r, err := s.get(long, nil, 0, 10, later); err != nil || r.Recipients[0].State != StatePending {
		t.Fatalf("a 1h ttl outlives the 1m retention: %+v, %v", r, err)
	}
	if r, err := s.get(long, nil, 0, 10, now.Add(time.Hour)); err != nil || r.Recipients[0].State != StateExpired || !r.Recipients[0].EndTime.Equal(now.Add(time.Hour)) {
		t.Fatalf("at its expiry: %+v, %v", r, err)
	}
	if _, err := s.get(long, nil, 0, 10, now.Add(time.Hour+time.Minute)); !errors.Is(err, ErrNoReceipt) {
		t.Fatalf("the retention after its expiry: %v", err)
	}
	s.sweep(later)
	if s.kept() != 1 {
		t.Fatalf("kept %d after the sweep, want 1 (the long one)", s.kept())
	}
}

// Acks: the first wins; none after a trim or the expiry; a user that was
// not a recipient changes nothing and is named when asked for.
func TestReceiptStoreAcksAndTrims(t *testing.T) {
	now := time.Now()
	s := newReceiptStore(100, time.Minute)
	id := NewID()
	s.record(id, now, time.Second, []Delivery{{UserID: "u1", Online: true, Delivered: 2, Stored: true}, {UserID: "u2", Stored: true}, {UserID: "u3", Stored: true}}, nil)
	s.ack("u1", "c1", []string{id}, false, now.Add(time.Millisecond))
	s.ack("u1", "c2", []string{id}, true, now.Add(2*time.Millisecond))
	s.ack("nobody", "c3", []string{id}, false, now)
	s.trimmed("u2", []string{id}, now)
	s.ack("u2", "c4", []string{id}, false, now.Add(time.Millisecond))
	s.ack("u3", "c5", []string{id}, false, now.Add(time.Second))
	r, err := s.get(id, []string{"u1", "u2", "u3"}, 0, 0, now.Add(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	u1, u2, u3 := r.Recipients[0], r.Recipients[1], r.Recipients[2]
	if u1.State != StateAcked || u1.AckConn != "c1" || u1.AckImplicit || !u1.AckTime.Equal(now.Add(time.Millisecond)) || u1.Delivered != 2 {
		t.Fatalf("u1 = %+v", u1)
	}
	if u2.State != StateTrimmed || !u2.EndTime.Equal(now) || u2.AckConn != "" {
		t.Fatalf("u2 = %+v", u2)
	}
	if u3.State != StateExpired || !u3.EndTime.Equal(now.Add(time.Second)) {
		t.Fatalf("u3 = %+v", u3)
	}
	if _, err := s.get(id, []string{"u1", "nobody"}, 0, 0, now); !errors.Is(err, ErrNotRecipient) || !strings.Contains(err.Error(), `user_ids[1]: "nobody"`) {
		t.Fatalf("not a recipient: %v", err)
	}
}

func TestNoReceiptSaysWhy(t *testing.T) {
	now := time.Now()
	id := NewID()
	if !IDTime(id).Truncate(time.Millisecond).Equal(IDTime(id)) || now.Sub(IDTime(id)) > time.Second || IDTime(id).Sub(now) > time.Second {
		t.Fatalf("IDTime(%s) = %v, now %v", id, IDTime(id), now)
	}
	for _, c := range []struct {
		id, evicted, want string
		at                time.Time
	}{
		{"7ZZZZZZZZZ0000000000000000", "", "no message has that id yet", now},
		{id, id, "evicted", now},
		{id, "", "older than the receipt retention", now.Add(2 * time.Hour)},
		{id, "", "not sent by SendToUser or SendToUsers", now},
	} {
		err := NoReceipt(c.id, c.at, c.evicted, time.Hour, 10)
		if !errors.Is(err, ErrNoReceipt) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("NoReceipt(%s, evicted %q) = %v, want %q", c.id, c.evicted, err, c.want)
		}
	}
}
