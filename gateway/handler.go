package gateway

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"path"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/coder/websocket"

	"pushgate/gateway/token"
)

// ServeHTTP accepts a WebSocket connection and starts its reader.
//
// Identity: with Config.Auth, the user is the token's "sub" (token from the
// Authorization: Bearer header, the token query parameter or the
// configured cookie); a user id in the path must then be the same. Without
// it, the development identity: /ws/{userId} or /ws?user_id=.
//
// Query parameters: topics=a,b joins topics at connect (both protocols);
// last_id=<message id> resumes after that message: only the inbox entries
// sent after it are replayed (raw connections may pass it too); epoch=<the
// hello's epoch> lets the server tell whether those inboxes still exist.
func (h *Hub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !looksLikeUpgrade(r) {
		// Not a WebSocket handshake: let Accept answer it (426, 400, 405)
		// without the connection ever joining the registry.
		_, err := websocket.Accept(w, r, nil)
		h.metrics.rejected.WithLabelValues("handshake").Inc()
		h.logLimited(slog.LevelInfo, "websocket handshake refused", "remote", r.RemoteAddr, "err", err)
		return
	}
	if !h.newConn.Allow() {
		w.Header().Set("Retry-After", "1")
		h.reject(w, r, http.StatusTooManyRequests, "rate_limited", "too many new connections; retry shortly")
		return
	}
	if h.cfg.MaxConns > 0 && h.conns.Load() >= int64(h.cfg.MaxConns) {
		w.Header().Set("Retry-After", "5")
		h.reject(w, r, http.StatusServiceUnavailable, "node_limit", "server at its connection limit; retry later or elsewhere")
		return
	}
	if !h.originAllowed(r) {
		args := []any{"origin", r.Header.Get("Origin"), "host", r.Host}
		if oh := originHost(r.Header.Get("Origin")); oh != "" {
			args = append(args, "allow_with", "--allowed-origins "+oh)
		}
		h.logLimited(slog.LevelWarn, "websocket origin refused", args...)
		h.reject(w, r, http.StatusForbidden, "origin", "origin not allowed")
		return
	}
	q := r.URL.Query()
	claimed := r.PathValue("userID")
	if claimed == "" {
		claimed = q.Get("user_id")
	}
	if h.cfg.Auth == nil {
		if err := ValidUserID(claimed, h.cfg.MaxUserIDBytes); err != nil {
			h.reject(w, r, http.StatusBadRequest, "bad_user_id", "user id: "+err.Error())
			return
		}
		h.serve(w, r, claimed, nil, grants{}, time.Time{})
		return
	}
	tok := tokenFrom(r, h.cfg.TokenCookie)
	if tok == "" {
		h.authFailed(w, r, "missing_token", "missing token")
		return
	}
	claims, err := h.cfg.Auth.Verify(tok)
	if err != nil {
		var te *token.Error
		reason := "invalid"
		if errors.As(err, &te) {
			reason = te.Reason
		}
		h.authFailed(w, r, reason, "invalid token: "+err.Error())
		return
	}
	if err := ValidUserID(claims.Subject, h.cfg.MaxUserIDBytes); err != nil {
		h.authFailed(w, r, "bad_subject", "invalid token: sub is not a valid user id")
		return
	}
	if claimed != "" && claimed != claims.Subject {
		h.reject(w, r, http.StatusForbidden, "wrong_user", "the token is for another user")
		return
	}
	rules := claims.Topics
	if rules == nil {
		rules = []string{} // no topics claim: no topics
	}
	h.serve(w, r, claims.Subject, rules, grants{pub: claims.Publish, dm: claims.Direct, presence: claims.Presence}, claims.Expires)
}

// clientAddr is the client's address: the socket's, or, behind a trusted
// proxy, the last X-Forwarded-For hop that is not a trusted proxy.
func (h *Hub) clientAddr(r *http.Request) string {
	if len(h.cfg.TrustedProxies) == 0 {
		return r.RemoteAddr
	}
	trusted := func(s string) bool {
		ip, err := netip.ParseAddr(strings.TrimSpace(s))
		if err != nil {
			return false
		}
		for _, p := range h.cfg.TrustedProxies {
			if p.Contains(ip.Unmap()) {
				return true
			}
		}
		return false
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil || !trusted(host) {
		return r.RemoteAddr
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		if hop := strings.TrimSpace(hops[i]); hop != "" && !trusted(hop) {
			return hop
		}
	}
	return r.RemoteAddr
}

// authFailed refuses a handshake with 401 and counts the reason.
func (h *Hub) authFailed(w http.ResponseWriter, r *http.Request, reason, msg string) {
	h.metrics.authFailures.WithLabelValues(reason).Inc()
	h.reject(w, r, http.StatusUnauthorized, "auth", msg)
}

// tokenFrom finds the client's token: Authorization: Bearer, the token
// query parameter, or the cookie.
func tokenFrom(r *http.Request, cookie string) string {
	if a := r.Header.Get("Authorization"); len(a) > 7 && strings.EqualFold(a[:7], "bearer ") {
		return strings.TrimSpace(a[7:])
	}
	if t := r.URL.Query().Get("token"); t != "" {
		return t
	}
	if cookie != "" {
		if c, err := r.Cookie(cookie); err == nil {
			return c.Value
		}
	}
	return ""
}

// originAllowed applies the same rule as websocket.Accept (same host, or a
// host matching OriginPatterns), so that a refusal can be logged with the
// option that would allow it.
func (h *Hub) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil {
		return false
	}
	if strings.EqualFold(u.Host, r.Host) {
		return true
	}
	for _, p := range h.cfg.OriginPatterns {
		target := u.Host
		if strings.Contains(p, "://") {
			target = u.Scheme + "://" + u.Host
		}
		if ok, _ := path.Match(strings.ToLower(p), strings.ToLower(target)); ok {
			return true
		}
	}
	return false
}

// originHost is the host (and port) of an Origin header, for the
// allow_with hint of a refusal; "" when the header is not an http(s) origin
// with a plain host name, so that no hint is made of whatever a client sent.
func originHost(origin string) string {
	u, err := url.Parse(origin)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
		strings.TrimLeft(u.Host, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:[]") != "" {
		return ""
	}
	return u.Host
}

// serve runs the connection of an identified user. topicRules limits the
// topics it may join (nil: any), g what it may publish; expires, if set, is
// when its token expires.
func (h *Hub) serve(w http.ResponseWriter, r *http.Request, userID string, topicRules []string, g grants, expires time.Time) {
	// Counted live before the closing check, so that Shutdown, which sets
	// closing and then waits for live to reach zero, cannot miss it.
	h.live.Add(1)
	served := false // the read loop took over, with the live count
	defer func() {
		if !served {
			h.live.Add(-1)
		}
	}()
	if h.closing.Load() {
		h.reject(w, r, http.StatusServiceUnavailable, "shutting_down", "server shutting down")
		return
	}
	q := r.URL.Query()
	// The envelope format is asked for with the subprotocol, or with
	// ?protocol=pushgate.v1 where the client's WebSocket cannot send
	// Sec-WebSocket-Protocol (uni-app, some WebView bridges). Only an
	// offered subprotocol is answered in the handshake: a client that did
	// not offer one would fail on it.
	offered := offersSubprotocol(r, Subprotocol)
	envelope := offered
	if q.Has("protocol") {
		if p := q.Get("protocol"); p != Subprotocol {
			h.reject(w, r, http.StatusBadRequest, "bad_protocol", fmt.Sprintf("protocol: %q is not a protocol (want %s, or leave it out for raw)", p, Subprotocol))
			return
		}
		envelope = true
	}
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
	var positions map[string]TopicPosition
	if q.Has("topic_last_ids") {
		if !envelope {
			h.reject(w, r, http.StatusBadRequest, "bad_last_id", "topic_last_ids: envelope mode only (raw frames carry no ids)")
			return
		}
		var err error
		if positions, err = ParseTopicLastIDs(q.Get("topic_last_ids"), topics); err != nil {
			h.reject(w, r, http.StatusBadRequest, "bad_last_id", "topic_last_ids: "+err.Error())
			return
		}
	}

	// The connection joins the registry before the handshake completes, so
	// that a backend reacting to the page's "open" event already finds the
	// user online; what is sent meanwhile waits in the queue, behind the
	// hello and the replayed inbox.
	c := &Conn{
		id:        h.nextID.Add(1),
		userID:    userID,
		remote:    h.clientAddr(r),
		opened:    time.Now(),
		hub:       h,
		envelope:  envelope,
		topicList: topics,
		rules:     topicRules,
		grants:    g,
	}
	c.writeFn = c.writeLoop
	if err := h.register(c, lastID, q.Get("epoch"), lastID != ""); err != nil {
		w.Header().Set("Retry-After", "5")
		if errors.Is(err, ErrUnavailable) {
			h.reject(w, r, http.StatusServiceUnavailable, "engine_unavailable", "push engine unavailable, retry later")
			return
		}
		h.reject(w, r, http.StatusTooManyRequests, "user_limit", err.Error())
		return
	}
	for _, t := range topics {
		// Checked above: fails only if already closing, or when the cluster
		// engine cannot be reached.
		var pos *TopicPosition
		if p, ok := positions[t]; ok {
			pos = &p
		}
		if err := h.subscribe(c, t, nil, pos, false); errors.Is(err, ErrUnavailable) {
			c.closeWith(closeHandshakeFailed)
			w.Header().Set("Retry-After", "5")
			h.reject(w, r, http.StatusServiceUnavailable, "engine_unavailable", "push engine unavailable, retry later")
			return
		}
	}

	hc := &hijackCapture{ResponseWriter: w}
	opts := &websocket.AcceptOptions{OriginPatterns: h.cfg.OriginPatterns, OnPingReceived: c.onPing, OnPongReceived: c.onPong}
	if offered {
		opts.Subprotocols = []string{Subprotocol}
	}
	ws, err := websocket.Accept(hc, r, opts)
	if err != nil {
		// Accept has written the HTTP error response.
		c.closeWith(closeHandshakeFailed)
		h.metrics.rejected.WithLabelValues("handshake").Inc()
		h.logLimited(slog.LevelInfo, "websocket handshake refused", "remote", r.RemoteAddr, "origin", r.Header.Get("Origin"), "err", err)
		return
	}
	ws.SetReadLimit(h.cfg.ReadLimit)
	h.metrics.accepted.Inc()
	if h.closing.Load() { // Shutdown's sweep may have missed us
		c.closeWith(CloseGoingAway)
	}
	c.attach(ws, hc.conn, hc.br, hc.early)
	h.heartbeats.add(c)
	if !expires.IsZero() {
		c.setExpiry(expires)
	}
	h.log.Info("connection opened", "user", userID, "conn", c.idString(), "remote", c.remote, "envelope", envelope)

	// The reader gets a goroutine of its own and this handler returns: the
	// HTTP server's goroutine has grown a deep stack serving the handshake,
	// which an idle connection would otherwise keep for its whole life.
	served = true
	go c.serveReads()
}

// looksLikeUpgrade reports whether r has what websocket.Accept requires of
// a handshake (Origin is checked separately), so that a connection joins
// the registry only when its upgrade will succeed.
func looksLikeUpgrade(r *http.Request) bool {
	return r.Method == http.MethodGet && r.ProtoAtLeast(1, 1) &&
		headerHasToken(r.Header, "Connection", "upgrade") && headerHasToken(r.Header, "Upgrade", "websocket") &&
		r.Header.Get("Sec-WebSocket-Version") == "13" && len(r.Header.Values("Sec-WebSocket-Key")) == 1
}

func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
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
	h.logLimited(slog.LevelInfo, "websocket handshake refused", "remote", r.RemoteAddr, "reason", label)
	http.Error(w, msg, code)
}

// logLimited logs lines that clients can provoke at will (refused
// handshakes) at most logBurst per second; the next line that gets through
// says how many were suppressed.
func (h *Hub) logLimited(level slog.Level, msg string, args ...any) {
	if !h.logBucket.Allow() {
		h.logSuppressed.Add(1)
		return
	}
	if n := h.logSuppressed.Swap(0); n > 0 {
		args = append(args, "suppressed_before", n)
	}
	h.log.Log(context.Background(), level, msg, args...)
}

// logBurst is how many client-provoked lines logLimited lets through per
// second.
const logBurst = 20

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

// hijackCapture keeps the net.Conn that websocket.Accept hijacks, wrapped
// in a sock: the write loop writes its data frames there itself, and puts
// deadlines on the socket (cheaper than a context per write, and it can
// unblock a write already in progress). The library gets the sock too, so
// that its control frames and the write loop's frames never interleave.
type hijackCapture struct {
	http.ResponseWriter
	conn  *sock
	br    *bufio.Reader // the library's reader of conn
	early bool          // the client sent bytes right behind its handshake
}

// Hijack hands the hijacked socket, wrapped in a sock, to websocket.Accept
// and keeps it. It also swaps net/http's 4 KiB read and write buffers for
// small ones (connReadBuf, connWriteBuf): an idle connection holds them for
// its whole life, clients send little, and the library writes only control
// frames (the write loop writes its frames itself). Bytes the client sent
// after its handshake are kept; larger frames bypass the read buffer.
func (h *hijackCapture) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := h.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("response writer cannot hijack")
	}
	nc, brw, err := hj.Hijack()
	if err != nil {
		return nc, brw, err
	}
	c := newSock(nc)
	h.conn = c
	bw := bufio.NewWriterSize(c, connWriteBuf)
	n := brw.Reader.Buffered()
	h.early = n > 0
	if n > connReadBuf {
		// The client sent a lot ahead; keep net/http's read buffer.
		h.br = brw.Reader
		return c, bufio.NewReadWriter(brw.Reader, bw), nil
	}
	br := bufio.NewReaderSize(c, connReadBuf)
	if n > 0 {
		// Frames the client sent right behind its handshake must be in the
		// new reader's buffer: websocket.Accept takes what is buffered there
		// and reads the rest from the socket.
		early, _ := brw.Reader.Peek(n)
		br = bufio.NewReaderSize(io.MultiReader(bytes.NewReader(bytes.Clone(early)), c), connReadBuf)
		if _, err := br.Peek(n); err != nil {
			h.br = brw.Reader
			return c, bufio.NewReadWriter(brw.Reader, bw), nil
		}
	}
	h.br = br
	return c, bufio.NewReadWriter(br, bw), nil
}

// Each connection's read and write buffers, held for its whole life. The
// write buffer must hold any control frame whole (a 125-byte payload and
// its 2-byte header): sock relies on each of the library's writes being
// one frame. The read buffer takes a frame's header and the start of its
// payload; a payload larger than what is left goes straight from the
// socket into the message (bufio reads large reads directly).
const (
	connReadBuf  = 256
	connWriteBuf = 128
)
