package gateway

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/coder/websocket"
)

// ServeHTTP accepts a WebSocket connection at /ws/{userId} or
// /ws?user_id=... (development identity: no authentication) and serves it
// until it closes. The handler's goroutine is the connection's reader.
func (h *Hub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	userID := r.PathValue("userID")
	if userID == "" {
		userID = r.URL.Query().Get("user_id")
	}
	if err := ValidUserID(userID, h.cfg.MaxUserIDBytes); err != nil {
		h.reject(w, r, http.StatusBadRequest, "bad_user_id", "user id: "+err.Error())
		return
	}
	if h.closing.Load() {
		h.reject(w, r, http.StatusServiceUnavailable, "shutting_down", "server shutting down")
		return
	}

	// The connection joins the registry before the handshake completes, so
	// that a backend reacting to the page's "open" event already finds the
	// user online; frames sent meanwhile wait in the queue.
	c := &Conn{
		id:     h.nextID.Add(1),
		userID: userID,
		remote: r.RemoteAddr,
		opened: time.Now(),
		hub:    h,
	}
	h.live.Add(1)
	defer h.live.Add(-1)
	h.add(c)

	hc := &hijackCapture{ResponseWriter: w}
	ws, err := websocket.Accept(hc, r, &websocket.AcceptOptions{OriginPatterns: h.cfg.OriginPatterns})
	if err != nil {
		// Accept has written the HTTP error response.
		c.closeWith(closeHandshakeFailed)
		h.metrics.rejected.WithLabelValues("handshake").Inc()
		h.log.Info("websocket handshake refused", "remote", r.RemoteAddr, "origin", r.Header.Get("Origin"), "err", err)
		return
	}
	ws.SetReadLimit(h.cfg.ReadLimit)
	h.metrics.accepted.Inc()
	if h.closing.Load() { // Shutdown's sweep may have missed us
		c.closeWith(CloseGoingAway)
	}
	c.attach(ws, hc.conn)
	c.startHeartbeat()
	h.log.Debug("connection opened", "user", userID, "conn", c.id, "remote", c.remote)

	c.readLoop()

	c.mu.Lock()
	reason := c.reason
	c.mu.Unlock()
	h.metrics.closed.WithLabelValues(reason.Label).Inc()
	h.log.Debug("connection closed", "user", userID, "conn", c.id, "remote", c.remote,
		"reason", reason.Label, "duration", time.Since(c.opened).Round(time.Millisecond))
}

func (h *Hub) reject(w http.ResponseWriter, r *http.Request, code int, label, msg string) {
	h.metrics.rejected.WithLabelValues(label).Inc()
	h.log.LogAttrs(r.Context(), slog.LevelInfo, "websocket handshake refused",
		slog.String("remote", r.RemoteAddr), slog.String("reason", label))
	http.Error(w, msg, code)
}

// ValidUserID checks the rules for user ids: 1 to max bytes of valid UTF-8
// with only printable characters (no control characters, no line breaks).
func ValidUserID(id string, max int) error {
	switch {
	case id == "":
		return errors.New("empty")
	case len(id) > max:
		return fmt.Errorf("longer than %d bytes", max)
	case !utf8.ValidString(id):
		return errors.New("not valid UTF-8")
	}
	for _, r := range id {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("contains a non-printable character %U", r)
		}
	}
	return nil
}

// hijackCapture keeps the net.Conn that websocket.Accept hijacks, so the
// write loop can put deadlines on the socket itself (cheaper than a context
// per write, and it can unblock a write already in progress).
type hijackCapture struct {
	http.ResponseWriter
	conn net.Conn
}

func (h *hijackCapture) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := h.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("response writer cannot hijack")
	}
	c, brw, err := hj.Hijack()
	h.conn = c
	return c, brw, err
}
