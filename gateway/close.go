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
}

// The close reasons pushgate uses. README.md lists them for client authors.
var (
	// CloseGoingAway: the server is shutting down or draining. Reconnect
	// (another node, or this one once it is back), with jitter.
	CloseGoingAway = CloseReason{websocket.StatusGoingAway, "server shutting down", "going_away", true}
	// CloseSlowConsumer: the client did not read fast enough and its send
	// queue overflowed (or a write timed out). Reconnect.
	CloseSlowConsumer = CloseReason{4000, "slow consumer", "slow_consumer", true}
	// CloseHeartbeatTimeout: the client did not answer a ping in time. The
	// client most likely never sees this code; it is what the server logs and
	// counts.
	CloseHeartbeatTimeout = CloseReason{4001, "heartbeat timeout", "heartbeat_timeout", true}
	// CloseRateLimited: the client sent more frames than --upstream-rate
	// allows. Reconnect, with backoff.
	CloseRateLimited = CloseReason{4002, "too many messages", "rate_limited", true}
	// CloseKicked: a backend called Disconnect for this user. Do not reconnect.
	CloseKicked = CloseReason{4100, "kicked", "kicked", false}
	// CloseTokenExpired: the token the connection was opened with expired
	// (and was not refreshed). Do not reconnect with the same token: get a
	// new one first.
	CloseTokenExpired = CloseReason{4101, "token expired", "token_expired", false}
	// CloseInvalidFrame: the client sent a frame the server cannot accept
	// (text that is not UTF-8). Do not reconnect; it would happen again.
	CloseInvalidFrame = CloseReason{websocket.StatusInvalidFramePayloadData, "invalid frame", "invalid_frame", false}
	// CloseMessageTooBig: the client sent a frame larger than --read-limit.
	CloseMessageTooBig = CloseReason{websocket.StatusMessageTooBig, "message too big", "message_too_big", false}
	// closeClient: the client closed the connection or it broke. Not sent;
	// used for accounting.
	closeClient = CloseReason{websocket.StatusNormalClosure, "", "client", true}
	// closeHandshakeFailed: the upgrade was refused (bad Origin, missing
	// headers). Never sent; the client got an HTTP error instead.
	closeHandshakeFailed = CloseReason{websocket.StatusProtocolError, "", "handshake_failed", false}
)
