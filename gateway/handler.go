package gateway

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/coder/websocket"
)

// ServeHTTP accepts a WebSocket connection at /ws/{userId} or
// /ws?user_id=... (development identity: no authentication) and serves it
// until it closes. The handler's goroutine is the connection's reader.
//
// Query parameters: topics=a,b joins topics at connect (both protocols);
// last_id=<message id> resumes after that message: only the inbox entries
// sent after it are replayed (raw connections may pass it too).
func (h *Hub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	userID := r.PathValue("userID")
	q := r.URL.Query()
	if userID == "" {
		userID = q.Get("user_id")
	}
	if err := ValidUserID(userID, h.cfg.MaxUserIDBytes); err != nil {
		h.reject(w, r, http.StatusBadRequest, "bad_user_id", "user id: "+err.Error())
		return
	}
	h.serve(w, r, userID, nil)
}

// serve runs the connection of an identified user. topicRules limits the
// topics it may join (nil: any).
func (h *Hub) serve(w http.ResponseWriter, r *http.Request, userID string, topicRules []string) {
	if h.closing.Load() {
		h.reject(w, r, http.StatusServiceUnavailable, "shutting_down", "server shutting down")
		return
	}
	q := r.URL.Query()
	envelope := offersSubprotocol(r, Subprotocol)
	var topics []string
	if list := q.Get("topics"); list != "" {
		topics = strings.Split(list, ",")
		slices.Sort(topics)
		topics = slices.Compact(topics)
		if len(topics) > h.cfg.MaxTopicsPerConn {
			h.reject(w, r, http.StatusBadRequest, "bad_topic", fmt.Sprintf("topics: at most %d", h.cfg.MaxTopicsPerConn))
			return
		}
		for _, t := range topics {
			if err := ValidTopic(t); err != nil {
				h.reject(w, r, http.StatusBadRequest, "bad_topic", fmt.Sprintf("topics: %q: %v", t, err))
				return
			}
			if !TopicAllowed(topicRules, t) {
				h.reject(w, r, http.StatusForbidden, "forbidden_topic", fmt.Sprintf("topics: not allowed to join %q", t))
				return
			}
		}
	}
	lastID := q.Get("last_id")
	if lastID != "" && !ValidID(lastID) {
		h.reject(w, r, http.StatusBadRequest, "bad_last_id", "last_id: not a message id")
		return
	}

	// The connection joins the registry before the handshake completes, so
	// that a backend reacting to the page's "open" event already finds the
	// user online; what is sent meanwhile waits in the queue, behind the
	// hello and the replayed inbox.
	c := &Conn{
		id:         h.nextID.Add(1),
		userID:     userID,
		remote:     r.RemoteAddr,
		opened:     time.Now(),
		hub:        h,
		envelope:   envelope,
		topicRules: topicRules,
		topicList:  topics,
	}
	h.live.Add(1)
	defer h.live.Add(-1)
	h.register(c, lastID, lastID != "")
	for _, t := range topics {
		_ = h.subscribe(c, t) // checked above; fails only if already closing
	}

	hc := &hijackCapture{ResponseWriter: w}
	opts := &websocket.AcceptOptions{OriginPatterns: h.cfg.OriginPatterns}
	if envelope {
		opts.Subprotocols = []string{Subprotocol}
	}
	ws, err := websocket.Accept(hc, r, opts)
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
	h.log.Debug("connection opened", "user", userID, "conn", c.idString(), "remote", c.remote, "envelope", envelope)

	c.readLoop()

	c.mu.Lock()
	reason := c.reason
	c.mu.Unlock()
	h.metrics.closed.WithLabelValues(reason.Label).Inc()
	h.log.Debug("connection closed", "user", userID, "conn", c.idString(), "remote", c.remote,
		"reason", reason.Label, "duration", time.Since(c.opened).Round(time.Millisecond))
}

// offersSubprotocol reports whether the client listed proto in
// Sec-WebSocket-Protocol.
func offersSubprotocol(r *http.Request, proto string) bool {
	for _, v := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(v, ",") {
			if strings.TrimSpace(p) == proto {
				return true
			}
		}
	}
	return false
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
