package gateway

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the gateway's counters. Hot-path children (one per label value)
// are resolved once at construction so counting costs one atomic add.
type Metrics struct {
	accepted   prometheus.Counter
	closed     *prometheus.CounterVec
	rejected   *prometheus.CounterVec
	delivered  prometheus.Counter
	bytesOut   prometheus.Counter
	dropped    *prometheus.CounterVec
	framesIn   *prometheus.CounterVec
	slow       prometheus.Counter
	hbTimeouts prometheus.Counter

	droppedSlow    prometheus.Counter
	droppedClosing prometheus.Counter
	droppedKicked  prometheus.Counter
	pingsIn        prometheus.Counter
	otherIn        prometheus.Counter
}

// NewMetrics creates the gateway metrics and registers them, with gauges for
// the hub's live totals, on reg.
func NewMetrics(reg prometheus.Registerer, h *Hub) *Metrics {
	m := &Metrics{
		accepted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pushgate_connections_accepted_total",
			Help: "WebSocket connections accepted.",
		}),
		closed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushgate_connections_closed_total",
			Help: "WebSocket connections closed, by reason (client, write_error, going_away, slow_consumer, heartbeat_timeout, kicked, invalid_frame, message_too_big).",
		}, []string{"reason"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushgate_handshakes_rejected_total",
			Help: "WebSocket handshakes refused before upgrade, by reason.",
		}, []string{"reason"}),
		delivered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pushgate_messages_delivered_total",
			Help: "Messages written to client sockets.",
		}),
		bytesOut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pushgate_bytes_out_total",
			Help: "Payload bytes written to client sockets.",
		}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushgate_messages_dropped_total",
			Help: "Messages queued for a connection but not written, by reason (slow_consumer, closing, kicked).",
		}, []string{"reason"}),
		framesIn: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushgate_client_frames_total",
			Help: "Frames received from clients, by kind (ping, other).",
		}, []string{"kind"}),
		slow: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pushgate_slow_consumers_total",
			Help: "Connections closed because their send queue overflowed or a write timed out.",
		}),
		hbTimeouts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pushgate_heartbeat_timeouts_total",
			Help: "Connections closed because a ping went unanswered.",
		}),
	}
	m.droppedSlow = m.dropped.WithLabelValues("slow_consumer")
	m.droppedClosing = m.dropped.WithLabelValues("closing")
	m.droppedKicked = m.dropped.WithLabelValues("kicked")
	m.pingsIn = m.framesIn.WithLabelValues("ping")
	m.otherIn = m.framesIn.WithLabelValues("other")
	for _, r := range []CloseReason{closeClient, closeWriteError, CloseGoingAway, CloseSlowConsumer, CloseHeartbeatTimeout, CloseKicked, CloseInvalidFrame, CloseMessageTooBig} {
		m.closed.WithLabelValues(r.Label)
	}
	reg.MustRegister(m.accepted, m.closed, m.rejected, m.delivered, m.bytesOut, m.dropped, m.framesIn, m.slow, m.hbTimeouts,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "pushgate_connections",
			Help: "Open WebSocket connections on this node.",
		}, func() float64 { return float64(h.Connections()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "pushgate_users",
			Help: "Users with at least one open connection on this node.",
		}, func() float64 { return float64(h.Users()) }),
	)
	return m
}
