package gateway

import "time"

// An idle connection holds no goroutine. Its read loop, finding nothing
// to read, hands the wait for its socket to the hub's read poller (park)
// and returns; the poller starts a read loop again when the socket has
// bytes (a frame, a pong, the end of the stream), and the close starts one
// for a connection that ends while parked, so that the end is counted
// and logged where it always is, at the end of a read loop (serveReads).
// What an idle connection saves is its goroutine's stack (2 KiB at the
// least, which the garbage collector's heap goal counts again) and its
// descriptor.
//
// Without a poller (not Linux, a TLS connection, the poller closed or
// failed) the read loop waits on its own goroutine (sock.waitReadable).

// serveReads runs the connection's read loop on the calling goroutine
// until the loop parks or the connection has ended.
func (c *Conn) serveReads() {
	if c.readLoop() {
		return
	}
	h := c.hub
	h.reads.forget(c)
	c.mu.Lock()
	reason := c.reason
	c.mu.Unlock()
	h.metrics.closed.WithLabelValues(reason.Label).Inc()
	h.log.Info("connection closed", "user", c.userID, "conn", c.idString(), "remote", c.remote,
		"reason", reason.Label, "reconnect", reason.Reconnect, "duration", time.Since(c.opened).Round(time.Millisecond))
	h.live.Add(-1)
}

// park hands the read loop's wait for the socket to the hub's poller. It
// reports whether it did: the calling goroutine must then return, as
// another read loop may already be running.
func (c *Conn) park() bool {
	if c.nc.rc == nil || !c.hub.reads.register(c) {
		return false
	}
	c.mu.Lock()
	if c.closing {
		// The close handshake may need the socket read (readLoop).
		c.mu.Unlock()
		return false
	}
	c.parked = true
	c.mu.Unlock()
	if c.hub.reads.arm(c) {
		return true
	}
	// The poller refused it: wait here, unless a wake already took it.
	c.mu.Lock()
	mine := c.parked
	c.parked = false
	c.mu.Unlock()
	return !mine
}

// wake starts a read loop for c if it is parked: its socket has bytes, or
// it has been closed.
func (c *Conn) wake() {
	c.mu.Lock()
	parked := c.parked
	c.parked = false
	c.mu.Unlock()
	if parked {
		c.hub.reads.run(c)
	}
}
