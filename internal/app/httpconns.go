package app

import (
	"net"
	"net/http"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// connGate is an HTTP listener that bounds its connections that are not
// WebSockets: a request being read or answered, or a connection idle
// between requests. Each of them is bounded in time (--read-header-timeout,
// --read-timeout, the idle timeout); the gate bounds how many there are,
// which those deadlines alone do not: a client opening them faster than
// they time out would otherwise hold any number. Past max, a new
// connection is closed at once, unanswered, without a goroutine or a
// buffer. A connection leaves the count when it closes or is hijacked
// (becomes a WebSocket, which --max-connections counts). Safe for
// concurrent use.
type connGate struct {
	net.Listener
	max     int64 // 0: no bound
	open    atomic.Int64
	refused prometheus.Counter
}

func newConnGate(ln net.Listener, max int, refused prometheus.Counter) *connGate {
	return &connGate{Listener: ln, max: int64(max), refused: refused}
}

// Accept returns the next connection while fewer than max are open, and
// closes those that arrive past it. The count is kept by connState, which
// http.Server calls with StateNew before it calls Accept again, so that it
// is exact when the next connection is let in.
func (g *connGate) Accept() (net.Conn, error) {
	for {
		c, err := g.Listener.Accept()
		if err != nil || g.max <= 0 || g.open.Load() < g.max {
			return c, err
		}
		g.refused.Inc()
		c.Close()
	}
}

// connState is the http.Server's ConnState hook that keeps the count.
func (g *connGate) connState(_ net.Conn, s http.ConnState) {
	switch s {
	case http.StateNew:
		g.open.Add(1)
	case http.StateHijacked, http.StateClosed:
		g.open.Add(-1)
	}
}

// Open is how many connections the gate holds now.
func (g *connGate) Open() int64 { return g.open.Load() }
