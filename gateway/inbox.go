package gateway

import (
	"slices"
	"time"
)

// inbox holds a user's messages sent with a ttl until they are acknowledged
// (envelope), written to a raw connection, or expire. Entries are in id
// order, which is the order they were sent in (ids are assigned under the
// user's shard lock). Guarded by the shard's mu.
type inbox struct {
	entries []*Message
	expires []time.Time // parallel to entries
	bytes   int

	// lost is the highest id that left the inbox without being acknowledged
	// (trimmed for room, or expired), remembered until lostUntil: a client
	// resuming from before it cannot be told it has everything.
	lost      string
	lostUntil time.Time
}

// add appends m and trims the oldest entries past the limits. It returns
// how many entries it trimmed and their bytes.
func (b *inbox) add(m *Message, now time.Time, maxMsgs, maxBytes int, remember time.Duration) (trimmed int) {
	return len(b.addTrim(m, now, maxMsgs, maxBytes, remember, nil))
}

// addTrim is add that appends the ids of the entries it trimmed to ids
// and returns them (for the receipts).
func (b *inbox) addTrim(m *Message, now time.Time, maxMsgs, maxBytes int, remember time.Duration, ids []string) []string {
	b.entries = append(b.entries, m)
	b.expires = append(b.expires, now.Add(m.TTL))
	b.bytes += len(m.Data)
	for len(b.entries) > 1 && (len(b.entries) > maxMsgs || b.bytes > maxBytes) {
		ids = append(ids, b.entries[0].ID)
		b.drop(0, now, remember)
	}
	return ids
}

// drop removes entry i as lost (not acknowledged).
func (b *inbox) drop(i int, now time.Time, remember time.Duration) {
	if id := b.entries[i].ID; id > b.lost {
		b.lost = id
	}
	b.lostUntil = now.Add(remember)
	b.remove(i)
}

func (b *inbox) remove(i int) {
	b.bytes -= len(b.entries[i].Data)
	b.entries = slices.Delete(b.entries, i, i+1)
	b.expires = slices.Delete(b.expires, i, i+1)
}

// ack removes the entry with id, reporting whether it was there.
func (b *inbox) ack(id string) bool {
	i, ok := slices.BinarySearchFunc(b.entries, id, func(m *Message, id string) int {
		switch {
		case m.ID < id:
			return -1
		case m.ID > id:
			return 1
		}
		return 0
	})
	if ok {
		b.remove(i)
	}
	return ok
}

// ackThrough removes the entries with an id up to lastID (a resuming client
// has them) and returns their ids.
func (b *inbox) ackThrough(lastID string) []string {
	n := 0
	for n < len(b.entries) && b.entries[n].ID <= lastID {
		n++
	}
	ids := make([]string, n)
	for i := range n {
		ids[i] = b.entries[i].ID
		b.bytes -= len(b.entries[i].Data)
	}
	b.entries = slices.Delete(b.entries, 0, n)
	b.expires = slices.Delete(b.expires, 0, n)
	return ids
}

// expire drops entries past their ttl and returns how many.
func (b *inbox) expire(now time.Time, remember time.Duration) (n int) {
	for i := 0; i < len(b.entries); {
		if now.Before(b.expires[i]) {
			i++
			continue
		}
		b.drop(i, now, remember)
		n++
	}
	return n
}

// after returns the live entries with an id greater than lastID ("" for
// all), and whether nothing after lastID was lost.
func (b *inbox) after(lastID string, now time.Time) (msgs []*Message, complete bool) {
	for i, m := range b.entries {
		if m.ID > lastID && now.Before(b.expires[i]) {
			msgs = append(msgs, m)
		}
	}
	complete = b.lost == "" || b.lost <= lastID || !now.Before(b.lostUntil)
	return msgs, complete
}

// empty reports whether the inbox holds nothing worth keeping.
func (b *inbox) empty(now time.Time) bool {
	return len(b.entries) == 0 && (b.lost == "" || !now.Before(b.lostUntil))
}
