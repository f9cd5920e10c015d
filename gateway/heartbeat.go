package gateway

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"
)

// Heartbeats: the server pings every connection every HeartbeatInterval
// and closes one whose pong has not come HeartbeatTimeout after its ping
// (CloseHeartbeatTimeout, counted in pushgate_heartbeat_timeouts_total).
//
// No connection has a timer or a goroutine of its own for this. The hub's
// connections are spread over heartbeatShards schedules by connection id;
// each schedule is a wheel of slots, one per step of the interval, turned
// by one goroutine: each step it pings the connections in the next slot,
// so a connection is pinged once per turn, at the same point of the
// interval, and pings are spread evenly over it. A schedule's pings go out
// in time order, so their deadlines come in the same order: the pings
// waiting for a pong are a queue, and the goroutine wakes for the next
// step or the head's deadline, whichever is first. A pong clears the
// connection's unanswered ping (Conn.pingSent); a ping found still
// unanswered at its deadline closes the connection, unless bytes wait
// unread in its socket (the read loop is behind; the pong may be there),
// which gives it another timeout. The goroutine runs only while its
// schedule holds connections.

// heartbeatShards is the number of schedules.
const heartbeatShards = 16

// heartbeatStep is the step of a wheel, and maxHeartbeatSlots its most
// slots: a connection's ping time is placed within the interval to a
// step's precision (longer steps for intervals over 102.4 s, so that a
// wheel stays small). Deadlines are kept exactly.
const (
	heartbeatStep     = 100 * time.Millisecond
	maxHeartbeatSlots = 1024
)

// heartbeats is the hub's heartbeat schedules.
type heartbeats struct {
	shards [heartbeatShards]hbShard
}

// hbShard is one schedule.
type hbShard struct {
	hub *Hub // immutable after construction

	// Guarded by mu. A Conn's hbOn, hbSlot and hbPos are guarded by its
	// schedule's mu too. Lock order: Conn.mu, then mu (add); the turning
	// goroutine takes no Conn.mu while it holds mu.
	mu      sync.Mutex
	slots   [][]*Conn  // the wheel; made at the first add
	n       int        // connections in slots
	next    int        // the slot the next step pings
	tickAt  int64      // Hub.clock of the next step
	running bool       // the goroutine turns the wheel
	waits   []pingWait // pings not yet answered or past their deadline, oldest first
}

// pingWait is a ping waiting for its deadline.
type pingWait struct {
	c    *Conn
	sent int64 // Hub.clock when it was sent: c.pingSent while unanswered
}

func (hb *heartbeats) init(h *Hub) {
	for i := range hb.shards {
		hb.shards[i].hub = h
	}
}

// wheel returns the number of slots for interval and the step between them.
func wheel(interval time.Duration) (int, time.Duration) {
	n := min(maxHeartbeatSlots, max(4, int((interval+heartbeatStep-1)/heartbeatStep)))
	return n, interval / time.Duration(n)
}

// add schedules c's heartbeat: its first ping comes between 3/4 of the
// interval and the whole of it after now, so that connections that
// arrived together are not pinged in step. A connection already closing is
// not added.
func (hb *heartbeats) add(c *Conn) {
	s := &hb.shards[c.id%heartbeatShards]
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.slots == nil {
		n, _ := wheel(s.hub.cfg.HeartbeatInterval)
		s.slots = make([][]*Conn, n)
	}
	if !s.running {
		_, step := wheel(s.hub.cfg.HeartbeatInterval)
		s.running = true
		s.tickAt = s.hub.clock() + int64(step)
		go s.run()
	}
	n := len(s.slots)
	k := n - rand.N(n/4+1) // steps until the first ping, in [3n/4, n]
	i := (s.next + k - 1) % n
	c.hbOn, c.hbSlot, c.hbPos = true, int32(i), int32(len(s.slots[i]))
	s.slots[i] = append(s.slots[i], c)
	s.n++
}

// remove takes c off its schedule; calling it again is a no-op.
func (hb *heartbeats) remove(c *Conn) {
	s := &hb.shards[c.id%heartbeatShards]
	s.mu.Lock()
	defer s.mu.Unlock()
	if !c.hbOn {
		return
	}
	slot := s.slots[c.hbSlot]
	last := len(slot) - 1
	moved := slot[last]
	slot[c.hbPos], moved.hbPos = moved, c.hbPos
	slot[last] = nil
	s.slots[c.hbSlot] = slot[:last]
	c.hbOn = false
	s.n--
}

// run turns the wheel until the schedule is empty.
func (s *hbShard) run() {
	h := s.hub
	_, step := wheel(h.cfg.HeartbeatInterval)
	timeout := int64(h.cfg.HeartbeatTimeout)
	var pings, late, behind []*Conn
	var sent, lateSent []int64
	t := time.NewTimer(step)
	defer t.Stop()
	for {
		<-t.C
		s.mu.Lock()
		now := h.clock()
		done := 0
		for ; done < len(s.waits) && s.waits[done].sent+timeout <= now; done++ {
			if w := s.waits[done]; w.c.pingSent.Load() == w.sent {
				late = append(late, w.c)
				lateSent = append(lateSent, w.sent)
			}
		}
		clear(s.waits[:done])
		s.waits = append(s.waits[:0], s.waits[done:]...)
		// Far behind (the process was stopped, the machine suspended):
		// one turn of the wheel pings everyone once.
		s.tickAt = max(s.tickAt, now-int64(len(s.slots)-1)*int64(step))
		for now >= s.tickAt {
			for _, c := range s.slots[s.next] {
				// pingSent is set only here, by this goroutine: zero means
				// no ping of this connection waits for its pong.
				if c.pingSent.Load() == 0 {
					pings = append(pings, c)
				}
			}
			s.next = (s.next + 1) % len(s.slots)
			s.tickAt += int64(step)
		}
		if s.n == 0 {
			// Every connection has gone (and its close was not a
			// heartbeat's business).
			s.running = false
			clear(s.waits)
			s.waits = s.waits[:0]
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()

		// Bytes waiting unread in the socket at the deadline mean that the
		// read loop is behind (a busy machine, a slow engine call), not
		// that the peer is gone: the pong may be among them. The ping gets
		// another timeout from now, as long as that stays true.
		again := h.clock()
		for i, c := range late {
			if c.nc.unread() {
				if c.pingSent.CompareAndSwap(lateSent[i], again) {
					behind = append(behind, c)
				}
				continue
			}
			if c.closeOnce(CloseHeartbeatTimeout) {
				h.metrics.hbTimeouts.Inc()
			}
		}
		// Each ping's time is taken just before its write (and set before
		// it, so that its pong cannot come first): a busy machine that
		// slows the writes does not shorten the pong's time.
		for _, c := range pings {
			at := h.clock()
			c.pingSent.Store(at)
			c.ping()
			sent = append(sent, at)
		}

		s.mu.Lock()
		for _, c := range behind {
			s.waits = append(s.waits, pingWait{c: c, sent: again})
		}
		for i, c := range pings {
			s.waits = append(s.waits, pingWait{c: c, sent: sent[i]})
		}
		wake := s.tickAt
		if len(s.waits) > 0 {
			wake = min(wake, s.waits[0].sent+timeout)
		}
		s.mu.Unlock()
		clear(late)
		clear(pings)
		clear(behind)
		late, pings, behind, sent, lateSent = late[:0], pings[:0], behind[:0], sent[:0], lateSent[:0]
		t.Reset(time.Duration(wake - h.clock()))
	}
}

// pingFrame is a WebSocket ping with no payload.
var pingFrame = frame{typ: msgPing}

// ping queues a ping and writes it at once if the socket takes it
// (writeNow, without blocking). A connection whose queue is full is closed
// as a slow consumer, as for any other frame.
func (c *Conn) ping() {
	switch r, start := c.push(pingFrame); {
	case r == overflowed:
		c.closeWith(CloseSlowConsumer)
	case start:
		c.writeNow()
	}
}

// onPong is the library's OnPongReceived: any pong answers the ping
// waiting for one (a client may also send pongs unasked, RFC 6455 5.5.3:
// they too say it is alive).
func (c *Conn) onPong(context.Context, []byte) {
	c.pingSent.Store(0)
	c.controlFrame()
}
