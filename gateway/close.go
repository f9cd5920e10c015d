package gateway

import "github.com/coder/websocket"

// CloseReason is why the server closed a connection. Its Code is sent in the
// WebSocket close frame and tells the client what to do next: codes for which
// Reconnect is true mean "come back (with backoff)", the others mean "do not
// reconnect without user action".
//
// Codes 4000–4099 ask clients to reconnect; 4100–4199 ask them not to.
type CloseReason struct {
	Code      websocket.StatusCode
	Text      string // short, constant text sent in the close frame
	Label     string // metric label
	Reconnect bool

	writeTimeout bool // CloseSlowConsumer because a write timed out, not because the queue overflowed
}

// The close reasons pushgate uses. docs/frontend.md lists them for client authors.
var (
	// CloseGoingAway: the server is shutting down or draining. Reconnect
	// (another node, or this one once it is back), with jitter.
	CloseGoingAway = CloseReason{Code: websocket.StatusGoingAway, Text: "server shutting down", Label: "going_away", Reconnect: true}
	// CloseSlowConsumer: the client did not read fast enough and its send
	// queue overflowed (or a write timed out). Reconnect.
	CloseSlowConsumer = CloseReason{Code: 4000, Text: "slow consumer", Label: "slow_consumer", Reconnect: true}
	// closeSlowWrite is CloseSlowConsumer for a write that timed out,
	// counted apart from queue overflows.
	closeSlowWrite = CloseReason{Code: 4000, Text: "slow consumer", Label: "slow_consumer", Reconnect: true, writeTimeout: true}
	// CloseHeartbeatTimeout: the client did not answer a ping in time. The
	// client most likely never sees this code; it is what the server logs and
	// counts.
	CloseHeartbeatTimeout = CloseReason{Code: 4001, Text: "heartbeat timeout", Label: "heartbeat_timeout", Reconnect: true}
	// CloseRateLimited: the client sent more frames than --upstream-rate
	// allows. Reconnect, with backoff.
	CloseRateLimited = CloseReason{Code: 4002, Text: "too many messages", Label: "rate_limited", Reconnect: true}
	// CloseEngineUnavailable: this node has been cut off from its engine
	// (Redis) for longer than --node-ttl, so it can no longer deliver to
	// its clients. Reconnect, with jitter: the load balancer sends the
	// client to a node that can, and it resumes there with nothing lost.
	CloseEngineUnavailable = CloseReason{Code: 4003, Text: "push engine unreachable", Label: "engine_unavailable", Reconnect: true}
	// CloseKicked: a backend called Disconnect for this user. Do not reconnect.
	CloseKicked = CloseReason{Code: 4100, Text: "kicked", Label: "kicked", Reconnect: false}
	// CloseTokenExpired: the token the connection was opened with expired
	// (and was not refreshed). Do not reconnect with the same token: get a
	// new one first.
	CloseTokenExpired = CloseReason{Code: 4101, Text: "token expired", Label: "token_expired", Reconnect: false}
	// CloseInvalidFrame: the client sent a frame the server cannot accept
	// (text that is not UTF-8). Do not reconnect; it would happen again.
	CloseInvalidFrame = CloseReason{Code: websocket.StatusInvalidFramePayloadData, Text: "invalid frame", Label: "invalid_frame", Reconnect: false}
	// CloseMessageTooBig: the client sent a frame larger than --read-limit.
	CloseMessageTooBig = CloseReason{Code: websocket.StatusMessageTooBig, Text: "message too big", Label: "message_too_big", Reconnect: false}
	// closeClient: the client closed the connection or it broke. Not sent;
	// used for accounting.
	closeClient = CloseReason{Code: websocket.StatusNormalClosure, Text: "", Label: "client", Reconnect: true}
	// closeHandshakeFailed: the upgrade was refused (bad Origin, missing
	// headers). Never sent; the client got an HTTP error instead.
	closeHandshakeFailed = CloseReason{Code: websocket.StatusProtocolError, Text: "", Label: "handshake_failed", Reconnect: false}
)
