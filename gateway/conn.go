package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
)

// pongFrame answers a client's application-level "ping".
var pongFrame = frame{websocket.MessageText, []byte(`{"type":"pong"}`)}

// closeWriteError: a write to the socket failed (the peer went away). Used
// for accounting; no close frame can be sent.
var closeWriteError = CloseReason{websocket.StatusAbnormalClosure, "", "write_error", true}

// Conn is one client WebSocket connection.
//
// Concurrency: enqueue and closeWith are safe to call from any goroutine and
// never block on the network. The read loop runs on the HTTP handler's
// goroutine. The write loop runs on a goroutine that exists only while there
// is something to write, so an idle connection costs one goroutine (its
// reader) and no buffers beyond the socket's.
type Conn struct {
	// Immutable after construction.
	id     uint64
	userID string
	remote string
	opened time.Time
	hub    *Hub

	// Set once by attach, before ready; read-only after. Only the write loop
	// (which starts after ready), the heartbeat and the read loop use them.
	ws *websocket.Conn
	nc net.Conn // the hijacked socket, for write deadlines

	// Guarded by mu.
	mu      sync.Mutex
	queue   []frame // frames waiting for the write loop
	spare   []frame // the write loop's last batch, reused as the next queue
	queued  int     // bytes in queue
	ready   bool    // the handshake is done; until then frames only queue
	writing bool    // a write loop goroutine is running (or finishing the close)
	closing bool    // set once: no more enqueues; reason says why
	reason  CloseReason
	hb      *time.Timer // heartbeat; re-armed only while !closing
}

// enqueue queues f for writing and reports whether it was accepted. It never
// blocks: a connection whose queue is over its message or byte cap is closed
// as a slow consumer instead. A frame is always accepted by an empty queue,
// whatever its size.
func (c *Conn) enqueue(f frame) bool {
	cfg := &c.hub.cfg
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		c.hub.metrics.droppedClosing.Inc()
		return false
	}
	if len(c.queue) > 0 && (len(c.queue) >= cfg.QueueMessages || c.queued+len(f.data) > cfg.QueueBytes) {
		c.mu.Unlock()
		c.hub.metrics.droppedSlow.Inc() // this frame; closeWith counts the queued ones
		c.closeWith(CloseSlowConsumer)
		return false
	}
	c.queue = append(c.queue, f)
	c.queued += len(f.data)
	start := c.startWriterLocked()
	c.mu.Unlock()
	if start {
		go c.writeLoop()
	}
	return true
}

// closeWith starts closing the connection for reason r. Only the first call
// has an effect. The connection leaves the online list at once; the close
// frame is written by the write loop. On CloseGoingAway what is already queued
// is written first; for every other reason it is dropped (and counted).
func (c *Conn) closeWith(r CloseReason) {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return
	}
	c.closing = true
	c.reason = r
	if c.hb != nil {
		c.hb.Stop()
	}
	var dropped int
	if r.Code != CloseGoingAway.Code {
		dropped = len(c.queue)
		clear(c.queue)
		c.queue = c.queue[:0]
		c.queued = 0
	}
	var nc net.Conn
	if c.ready {
		nc = c.nc
	}
	start := c.startWriterLocked()
	c.mu.Unlock()

	c.hub.remove(c)
	switch r.Code {
	case CloseSlowConsumer.Code:
		c.hub.metrics.slow.Inc()
		c.hub.metrics.droppedSlow.Add(float64(dropped))
		// Unblock a write stuck on a peer that does not read, and bound the
		// close frame's write.
		if nc != nil {
			_ = nc.SetWriteDeadline(time.Now().Add(closeWriteTimeout))
		}
	case CloseKicked.Code:
		c.hub.metrics.droppedKicked.Add(float64(dropped))
	default:
		c.hub.metrics.droppedClosing.Add(float64(dropped))
	}
	if start {
		go c.writeLoop()
	}
}

// startWriterLocked reports whether the caller must start the write loop,
// and marks it started. Called with mu held, after queueing or closing.
func (c *Conn) startWriterLocked() bool {
	if !c.ready || c.writing || (len(c.queue) == 0 && !c.closing) {
		return false
	}
	c.writing = true
	return true
}

// attach hands the connection its socket once the handshake is done. Frames
// queued (and a close requested) before then are written now.
func (c *Conn) attach(ws *websocket.Conn, nc net.Conn) {
	c.mu.Lock()
	c.ws, c.nc = ws, nc
	c.ready = true
	start := c.startWriterLocked()
	c.mu.Unlock()
	if start {
		go c.writeLoop()
	}
}

// closeWriteTimeout bounds the write of a close frame to a peer that may not
// be reading.
const closeWriteTimeout = time.Second

// writeLoop writes queued frames until the queue is empty, then exits; if the
// connection is closing it writes the close frame instead of exiting.
func (c *Conn) writeLoop() {
	metrics := c.hub.metrics
	for {
		c.mu.Lock()
		batch := c.queue
		if len(batch) == 0 {
			if !c.closing {
				c.writing = false
				c.mu.Unlock()
				return
			}
			r := c.reason
			c.mu.Unlock()
			c.finish(r)
			return
		}
		c.queue = c.spare[:0]
		c.spare = nil
		c.queued = 0
		c.mu.Unlock()

		_ = c.nc.SetWriteDeadline(time.Now().Add(c.hub.cfg.WriteTimeout))
		for i := range batch {
			f := batch[i]
			if err := c.ws.Write(context.Background(), f.typ, f.data); err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					c.closeWith(CloseSlowConsumer)
				} else {
					c.closeWith(closeWriteError)
				}
				break
			}
			metrics.delivered.Inc()
			metrics.bytesOut.Add(float64(len(f.data)))
		}
		_ = c.nc.SetWriteDeadline(time.Time{})
		clear(batch)
		if cap(batch) > 64 {
			batch = nil // let a burst's buffer go; idle connections stay small
		}
		c.mu.Lock()
		c.spare = batch[:0]
		c.mu.Unlock()
	}
}

// finish ends the connection: a close frame (and the close handshake, bounded
// by the library's timeouts) where the peer can still hear one, or just the
// socket's close.
func (c *Conn) finish(r CloseReason) {
	switch r.Code {
	case CloseHeartbeatTimeout.Code, closeWriteError.Code, closeClient.Code:
		_ = c.ws.CloseNow()
	default:
		_ = c.nc.SetWriteDeadline(time.Now().Add(closeWriteTimeout))
		_ = c.ws.Close(r.Code, r.Text)
	}
}

// startHeartbeat arms the first ping at a random point within the interval,
// so pings of connections that arrived together do not stay in step.
func (c *Conn) startHeartbeat() {
	iv := c.hub.cfg.HeartbeatInterval
	if iv <= 0 {
		return
	}
	first := iv - rand.N(iv/4+1)
	c.mu.Lock()
	if !c.closing {
		c.hb = time.AfterFunc(first, c.heartbeat)
	}
	c.mu.Unlock()
}

// heartbeat runs on the timer's goroutine: ping, wait for the pong (the read
// loop receives it), and either re-arm or close the connection.
func (c *Conn) heartbeat() {
	ctx, cancel := context.WithTimeout(context.Background(), c.hub.cfg.HeartbeatTimeout)
	err := c.ws.Ping(ctx)
	timedOut := ctx.Err() != nil
	cancel()
	if err != nil {
		if timedOut {
			c.hub.metrics.hbTimeouts.Inc()
			c.closeWith(CloseHeartbeatTimeout)
		}
		return // otherwise the connection is already closed
	}
	c.mu.Lock()
	if !c.closing {
		c.hb.Reset(c.hub.cfg.HeartbeatInterval)
	}
	c.mu.Unlock()
}

// readLoop reads client frames until the connection ends and returns the
// reason it ended for. It runs on the HTTP handler's goroutine.
func (c *Conn) readLoop() {
	for {
		typ, data, err := c.ws.Read(context.Background())
		if err != nil {
			if errors.Is(err, websocket.ErrMessageTooBig) {
				c.closeWith(CloseMessageTooBig) // the library already sent 1009
			}
			c.closeWith(closeClient)
			return
		}
		if typ == websocket.MessageText && !utf8.Valid(data) {
			c.closeWith(CloseInvalidFrame)
			continue // keep reading to complete the close handshake
		}
		if isPing(data) {
			c.hub.metrics.pingsIn.Inc()
			c.enqueue(pongFrame)
		} else {
			c.hub.metrics.otherIn.Inc()
		}
	}
}

// isPing reports whether a client frame is an application heartbeat: the
// text "ping" (what mini-program heartbeats send) or a small JSON object whose
// type is "ping".
func isPing(p []byte) bool {
	p = bytes.TrimSpace(p)
	if string(p) == "ping" {
		return true
	}
	if len(p) == 0 || len(p) > 64 || p[0] != '{' || !bytes.Contains(p, []byte(`"ping"`)) {
		return false
	}
	var v struct {
		Type string `json:"type"`
	}
	return json.Unmarshal(p, &v) == nil && v.Type == "ping"
}
