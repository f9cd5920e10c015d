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
	slowQueue  prometheus.Counter
	slowWrite  prometheus.Counter
	hbTimeouts prometheus.Counter

	droppedSlow    prometheus.Counter
	droppedClosing prometheus.Counter
	droppedKicked  prometheus.Counter
	droppedWrite   prometheus.Counter

	pingsIn          prometheus.Counter
	controlIn        prometheus.Counter
	acksIn           prometheus.Counter
	otherIn          prometheus.Counter
	upstream         prometheus.Counter
	upstreamRefused  prometheus.Counter
	subscribeRefused prometheus.Counter

	clientPublished          prometheus.Counter
	clientPublishForbidden   prometheus.Counter
	clientPublishRateLimited prometheus.Counter
	presenceRead             prometheus.Counter
	presenceForbidden        prometheus.Counter
	subscriptions            prometheus.Gauge

	acked        prometheus.Counter
	replayed     prometheus.Counter
	inboxTrimmed prometheus.Counter
	inboxExpired prometheus.Counter
	inboxFull    prometheus.Counter

	receiptsEvicted prometheus.Counter

	topicStored   prometheus.Counter
	topicReplayed prometheus.Counter
	topicTrimmed  prometheus.Counter
	topicExpired  prometheus.Counter
	topicFull     prometheus.Counter

	watchers    prometheus.Gauge
	watchersCut prometheus.Counter

	authFailures *prometheus.CounterVec
	rateLimited  prometheus.Counter
	writeLatency prometheus.Histogram
}

// NewMetrics creates the gateway metrics and registers them, with gauges for
// the hub's live totals, on reg.
func NewMetrics(reg prometheus.Registerer, h *Hub) *Metrics {
	counter := func(name, help string) prometheus.Counter {
		c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
		reg.MustRegister(c)
		return c
	}
	vec := func(name, help, label string) *prometheus.CounterVec {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{label})
		reg.MustRegister(c)
		return c
	}
	gauge := func(name, help string) prometheus.Gauge {
		g := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
		reg.MustRegister(g)
		return g
	}
	m := &Metrics{
		accepted: counter("pushgate_connections_accepted_total", "WebSocket connections accepted."),
		closed: vec("pushgate_connections_closed_total",
			"WebSocket connections closed, by reason (client, write_error, going_away, slow_consumer, heartbeat_timeout, rate_limited, kicked, token_expired, invalid_frame, message_too_big).", "reason"),
		rejected:   vec("pushgate_handshakes_rejected_total", "WebSocket handshakes refused before upgrade, by reason.", "reason"),
		delivered:  counter("pushgate_messages_delivered_total", "Messages written to client sockets (control frames such as pong and hello not counted)."),
		bytesOut:   counter("pushgate_bytes_out_total", "Bytes written to client sockets (message and control frame payloads)."),
		hbTimeouts: counter("pushgate_heartbeat_timeouts_total", "Connections closed because a ping went unanswered."),
		upstream:   counter("pushgate_upstream_messages_total", "Messages from clients passed to WatchEvents."),
		upstreamRefused: counter("pushgate_upstream_refused_total",
			"Messages from clients refused because the user or topic may not send upstream."),
		subscribeRefused: counter("pushgate_subscribe_refused_total", "Topic subscriptions refused (not allowed, or too many)."),
		subscriptions:    gauge("pushgate_subscriptions", "Topic subscriptions held by open connections."),
		acked:            counter("pushgate_messages_acked_total", "Inbox messages acknowledged by clients (or written to raw clients)."),
		replayed:         counter("pushgate_messages_replayed_total", "Inbox messages queued to connections at connect or resume."),
		inboxTrimmed:     counter("pushgate_inbox_trimmed_total", "Inbox messages dropped to stay within --inbox-max-messages / --inbox-max-bytes."),
		inboxExpired:     counter("pushgate_inbox_expired_total", "Inbox messages dropped because their ttl passed unacknowledged."),
		inboxFull:        counter("pushgate_inbox_full_total", "Messages delivered live but not stored because all inboxes together were at --inbox-max-total-messages / --inbox-max-total-bytes (memory engine)."),
		receiptsEvicted:  counter("pushgate_receipts_evicted_total", "Message receipts dropped before their retention to stay within --receipt-max recipients."),
		watchers:         gauge("pushgate_watchers", "Open WatchEvents streams."),
		watchersCut:      counter("pushgate_watchers_cut_total", "WatchEvents streams ended because they fell too far behind."),
		authFailures: vec("pushgate_auth_failures_total",
			"WebSocket handshakes refused for their token, by reason (missing_token, malformed, bad_alg, bad_signature, bad_header, bad_claim, expired, not_yet_valid, too_long_lived, bad_audience, bad_issuer, unknown_kid, no_subject, no_expiry, bad_subject).", "reason"),
		rateLimited: counter("pushgate_upstream_rate_limited_total", "Connections closed with 4002 for sending faster than --upstream-rate."),
	}
	m.writeLatency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "pushgate_write_latency_seconds",
		Help:    "Time from queueing a message on a connection to writing it to the socket (per write batch, oldest message).",
		Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
	})
	reg.MustRegister(m.writeLatency)
	slow := vec("pushgate_slow_consumers_total", "Connections closed as slow consumers (4000), by cause: queue_overflow (over --queue-max-messages or --queue-max-bytes) or write_timeout (a write took longer than --write-timeout).", "cause")
	m.slowQueue = slow.WithLabelValues("queue_overflow")
	m.slowWrite = slow.WithLabelValues("write_timeout")
	dropped := vec("pushgate_messages_dropped_total", "Messages queued for a connection but not written, by reason (slow_consumer, closing, kicked, write_error).", "reason")
	m.droppedSlow = dropped.WithLabelValues("slow_consumer")
	m.droppedClosing = dropped.WithLabelValues("closing")
	m.droppedKicked = dropped.WithLabelValues("kicked")
	m.droppedWrite = dropped.WithLabelValues("write_error")
	framesIn := vec("pushgate_client_frames_total", "Frames received from clients, by kind (ping, ack, other; control: WebSocket ping and pong frames).", "kind")
	m.pingsIn = framesIn.WithLabelValues("ping")
	m.controlIn = framesIn.WithLabelValues("control")
	m.acksIn = framesIn.WithLabelValues("ack")
	m.otherIn = framesIn.WithLabelValues("other")
	m.topicStored = counter("pushgate_topic_history_stored_total", "Messages kept in topic histories (topics matching --topic-history).")
	m.topicReplayed = counter("pushgate_topic_history_replayed_total", "Topic history messages queued to connections that subscribed with a position.")
	topicDropped := vec("pushgate_topic_history_dropped_total", "Topic history messages dropped before their ttl, or not kept, by reason: trimmed (over the rule's message count), expired (ttl passed), full (memory engine: all histories together at --topic-history-max-total).", "reason")
	m.topicTrimmed = topicDropped.WithLabelValues("trimmed")
	m.topicExpired = topicDropped.WithLabelValues("expired")
	m.topicFull = topicDropped.WithLabelValues("full")
	pub := vec("pushgate_client_publish_total", "Client publish and direct ops, by result: published, forbidden (no claim or server pattern allows it), rate_limited (over --client-publish-rate: closed with 4002).", "result")
	m.clientPublished = pub.WithLabelValues("published")
	m.clientPublishForbidden = pub.WithLabelValues("forbidden")
	m.clientPublishRateLimited = pub.WithLabelValues("rate_limited")
	pres := vec("pushgate_client_presence_total", "Topic presence requests from envelope clients (op presence), by result: read, forbidden (no presence claim or --client-presence-topics pattern allows it). Over --client-publish-rate they count as client publish rate_limited.", "result")
	m.presenceRead = pres.WithLabelValues("read")
	m.presenceForbidden = pres.WithLabelValues("forbidden")
	for _, r := range []CloseReason{closeClient, closeWriteError, CloseGoingAway, CloseSlowConsumer, CloseHeartbeatTimeout, CloseRateLimited, CloseEngineUnavailable, CloseKicked, CloseTokenExpired, CloseInvalidFrame, CloseMessageTooBig} {
		m.closed.WithLabelValues(r.Label)
	}
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "pushgate_connections",
			Help: "Open WebSocket connections on this node.",
		}, func() float64 { return float64(h.Connections()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "pushgate_users",
			Help: "Users with at least one open connection on this node.",
		}, func() float64 { return float64(h.Users()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "pushgate_inbox_messages",
			Help: "Messages held in user inboxes (the whole deployment's, as the engine counts them; -1 when it cannot be read).",
		}, func() float64 { return float64(h.eng.Inboxed()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "pushgate_receipt_recipients",
			Help: "Recipients whose message receipts are kept, at most --receipt-max (the whole deployment's, as the engine counts them; -1 when it cannot be read).",
		}, func() float64 { return float64(h.eng.Receipts()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "pushgate_event_log_entries",
			Help: "Events kept in the event log for WatchEvents resumes (the whole deployment's, as the engine counts them; -1 when it cannot be read).",
		}, func() float64 { return float64(h.eng.EventLogLen()) }),
	)
	return m
}
