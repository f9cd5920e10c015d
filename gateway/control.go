package gateway

import (
	"context"

	"pushgate/gateway/limit"
)

// WebSocket control frames (ping and pong) from a client are answered or
// consumed inside the library's Read, before the read loop sees a frame, so
// they are counted here, through the library's hooks: each one takes a
// token from the connection's upstream bucket like a data frame, and a
// client over --upstream-rate is closed with 4002 and gets no more pongs.

// newUpstreamBucket is a connection's bucket for the frames it sends:
// UpstreamPerSecond, with bursts of twice that; nil (no limit) when the
// rate is 0.
func newUpstreamBucket(cfg *Config) *limit.Bucket {
	if r := cfg.UpstreamPerSecond; r > 0 {
		return limit.NewBucket(r, int(2*r)+1)
	}
	return nil
}

// newAckBucket is a connection's bucket for the message ids it
// acknowledges: acks cost the engine a lookup per id, so they are limited by
// ids, UpstreamPerSecond with room to acknowledge a full inbox at once; nil
// (no limit) when the rate is 0.
func newAckBucket(cfg *Config) *limit.Bucket {
	if r := cfg.UpstreamPerSecond; r > 0 {
		return limit.NewBucket(r, cfg.InboxMessages+int(2*r)+1)
	}
	return nil
}

// onPing is the library's OnPingReceived: it reports whether to answer.
func (c *Conn) onPing(context.Context, []byte) bool { return c.controlFrame() }

// controlFrame counts a control frame against the upstream rate and reports
// whether the connection is still in good standing. It runs in whichever
// goroutine is reading the socket (the read loop, or the close handshake).
func (c *Conn) controlFrame() bool {
	c.hub.metrics.controlIn.Inc()
	c.mu.Lock()
	closing := c.closing
	c.mu.Unlock()
	if closing {
		return false // no pongs while closing
	}
	if !c.upstreamLimit().Allow() {
		c.hub.metrics.rateLimited.Inc()
		c.closeWith(CloseRateLimited)
		return false
	}
	return true
}
