package web

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"pushgate/gateway"
)

//go:embed admin.html
var adminPage []byte

// AdminHub is what the admin page needs: the engine (the whole
// deployment's numbers and sends) and the gateway's configuration.
type AdminHub interface {
	Config() gateway.Config
	Users() int64
	Connections() int64
	Inboxed() int64
	ListOnline(ctx context.Context, after string, limit int, match func(string) bool) (gateway.OnlinePage, error)
	Disconnect(ctx context.Context, userID, text string) (int, error)
	SendToUsers(ctx context.Context, userIDs []string, p gateway.Push) (gateway.Sent, error)
	Publish(ctx context.Context, topic string, p gateway.Push) (gateway.Sent, error)
	Broadcast(ctx context.Context, p gateway.Push, exclude []string) (gateway.Sent, error)
}

// AdminConfig configures the admin page.
type AdminConfig struct {
	Hub      AdminHub
	Node     string                    // this node's name, shown with each user
	Cluster  bool                      // Hub answers for many nodes (Redis engine): users are not shown with a node
	Errors   func() []LogEntry         // recent warnings and errors
	Password string                    // HTTP Basic password (user "admin"); "" with no API key check: open
	APIKey   func(key string) bool     // accepts "Authorization: Bearer <API key>"; nil: not accepted
	Started  time.Time                 // for the uptime
	Counters func() map[string]float64 // selected counters for the page
	Limits   SendLimits                // what a test message may be
	Logins   *Logins                   // failed logins, throttled per address; nil: a record of its own per Guard
	// Local is this node's own share, for a cluster: its users and
	// connections, and a user's connections on it. nil: Hub's numbers are
	// this node's (memory engine).
	Local LocalHub
}

// LocalHub is this node's registry, for the admin page's per-node numbers.
type LocalHub interface {
	Users() int64
	Connections() int64
	UserConns(userID string) (int, time.Time)
}

// SendLimits bound the messages the admin page and the demo's send endpoint
// take, as --max-payload-bytes and --inbox-max-ttl bound the gRPC API's.
// The zero value of a field means its default.
type SendLimits struct {
	MaxPayloadBytes int           // largest payload, in bytes. Default 64 KiB.
	MaxTTL          time.Duration // longest ttl. Default 24h.
}

func (l SendLimits) withDefaults() SendLimits {
	if l.MaxPayloadBytes <= 0 {
		l.MaxPayloadBytes = 64 << 10
	}
	if l.MaxTTL <= 0 {
		l.MaxTTL = 24 * time.Hour
	}
	return l
}

// bodyBytes is the largest request body taken: the payload, JSON-escaped
// (up to 6 bytes for one), and the other fields.
func (l SendLimits) bodyBytes() int64 {
	return max(128<<10, 6*int64(l.MaxPayloadBytes)+16<<10)
}

// tooLarge answers 413 for a payload field over the limit.
func (l SendLimits) tooLarge(w http.ResponseWriter, field string, size int) {
	writeJSON(w, http.StatusRequestEntityTooLarge, map[string]string{
		"error": fmt.Sprintf("%s: payload is %d bytes, the limit is %d (--max-payload-bytes)", field, size, l.MaxPayloadBytes)})
}

// AdminHandler serves /admin (the page) and /admin/api/* (its JSON API).
// When a password or API keys are configured, every request must present
// one. State-changing calls are POSTs with a JSON body, which a cross-site
// form cannot send.
func AdminHandler(cfg AdminConfig) http.Handler {
	lim := cfg.Limits.withDefaults()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /admin", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'")
		w.Header().Set("X-Frame-Options", "DENY")
		w.Write(adminPage)
	})
	mux.HandleFunc("GET /admin/favicon.svg", serveFavicon)
	mux.HandleFunc("GET /admin/api/stats", func(w http.ResponseWriter, r *http.Request) {
		// users, connections and inbox are the whole deployment's (the
		// cluster's with the Redis engine); node_users, node_connections and
		// the counters are this node's.
		out := map[string]any{
			"node":        cfg.Node,
			"cluster":     cfg.Cluster,
			"users":       cfg.Hub.Users(),
			"connections": cfg.Hub.Connections(),
			"inbox":       cfg.Hub.Inboxed(),
			"uptime_s":    int64(time.Since(cfg.Started).Seconds()),
		}
		if cfg.Local != nil {
			out["node_users"], out["node_connections"] = cfg.Local.Users(), cfg.Local.Connections()
		} else {
			out["node_users"], out["node_connections"] = out["users"], out["connections"]
		}
		if cfg.Counters != nil {
			out["counters"] = cfg.Counters()
		}
		writeJSON(w, http.StatusOK, out)
	})
	mux.HandleFunc("GET /admin/api/users", func(w http.ResponseWriter, r *http.Request) {
		q := strings.ToLower(r.URL.Query().Get("q"))
		limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
		if limit <= 0 || limit > 500 {
			limit = 50
		}
		var match func(string) bool
		if q != "" {
			match = func(id string) bool { return strings.Contains(strings.ToLower(id), q) }
		}
		page, err := cfg.Hub.ListOnline(r.Context(), r.URL.Query().Get("after"), limit, match)
		if err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": err.Error()})
			return
		}
		// node is this node's name when it holds connections of the user,
		// with node_connections of them; in a cluster, the user's other
		// connections are on other nodes.
		type user struct {
			UserID          string    `json:"user_id"`
			Connections     int       `json:"connections"`
			Since           time.Time `json:"online_since"`
			Node            string    `json:"node"`
			NodeConnections int       `json:"node_connections"`
		}
		out := struct {
			Users []user `json:"users"`
			Next  string `json:"next,omitempty"`
			Total int64  `json:"total_users"`
		}{Users: []user{}, Total: page.TotalUsers}
		for _, u := range page.Users {
			here := u.Connections
			if cfg.Local != nil {
				here, _ = cfg.Local.UserConns(u.UserID)
			}
			node := ""
			if here > 0 {
				node = cfg.Node
			}
			out.Users = append(out.Users, user{u.UserID, u.Connections, u.Since, node, here})
		}
		if page.More && len(page.Users) > 0 {
			out.Next = page.Users[len(page.Users)-1].UserID
		}
		writeJSON(w, http.StatusOK, out)
	})
	mux.HandleFunc("GET /admin/api/errors", func(w http.ResponseWriter, r *http.Request) {
		var out []LogEntry
		if cfg.Errors != nil {
			out = cfg.Errors()
		}
		if out == nil {
			out = []LogEntry{}
		}
		writeJSON(w, http.StatusOK, out)
	})
	mux.HandleFunc("POST /admin/api/kick", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			UserID string `json:"user_id"`
		}
		if !readJSON(w, r, &req, 128<<10) {
			return
		}
		if err := gateway.ValidUserID(req.UserID, cfg.Hub.Config().MaxUserIDBytes); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "user_id: " + err.Error()})
			return
		}
		n, err := cfg.Hub.Disconnect(r.Context(), req.UserID, "kicked by an administrator")
		if err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, map[string]int{"closed_connections": n})
	})
	mux.HandleFunc("POST /admin/api/send", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Target string `json:"target"` // user, topic or all
			UserID string `json:"user_id"`
			Topic  string `json:"topic"`
			Text   string `json:"text"`
		}
		if !readJSON(w, r, &req, lim.bodyBytes()) {
			return
		}
		if req.Text == "" {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "text: empty"})
			return
		}
		if len(req.Text) > lim.MaxPayloadBytes {
			lim.tooLarge(w, "text", len(req.Text))
			return
		}
		// Valid JSON goes out as JSON (the page's own shape), else as text.
		p := gateway.Push{Type: "admin.test", Kind: gateway.KindText, Data: []byte(req.Text)}
		if json.Valid(p.Data) {
			p.Kind = gateway.KindJSON
		}
		var sent gateway.Sent
		var delivered int64
		var err error
		switch req.Target {
		case "user":
			if err = gateway.ValidUserID(req.UserID, cfg.Hub.Config().MaxUserIDBytes); err != nil {
				writeJSON(w, http.StatusBadRequest, map[string]string{"error": "user_id: " + err.Error()})
				return
			}
			sent, err = cfg.Hub.SendToUsers(r.Context(), []string{req.UserID}, p)
			if err == nil {
				delivered = int64(sent.Users[0].Delivered)
			}
		case "topic":
			if err = gateway.ValidTopic(req.Topic); err != nil {
				writeJSON(w, http.StatusBadRequest, map[string]string{"error": "topic: " + err.Error()})
				return
			}
			sent, err = cfg.Hub.Publish(r.Context(), req.Topic, p)
			delivered = sent.Connections
		case "all":
			sent, err = cfg.Hub.Broadcast(r.Context(), p, nil)
			delivered = sent.Connections
		default:
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "target: user, topic or all"})
			return
		}
		if err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"message_id": sent.ID, "delivered_connections": delivered})
	})
	return cfg.Guard(mux)
}

// Guard requires the password or an API key when either is configured.
// Failed logins are logged, counted and throttled per client address
// (login.go): an address that failed too often gets 429 for a while,
// whatever credentials it sends.
func (cfg AdminConfig) Guard(next http.Handler) http.Handler {
	if cfg.Password == "" && cfg.APIKey == nil {
		return next
	}
	logins := cfg.Logins
	if logins == nil {
		logins = NewLogins(nil, nil)
	}
	want := sha256.Sum256([]byte(cfg.Password))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, pass, basic := r.BasicAuth()
		key, bearer := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if basic || bearer {
			if wait := logins.wait(r.RemoteAddr); wait > 0 {
				logins.throttled()
				w.Header().Set("Retry-After", strconv.Itoa(int((wait+time.Second-1)/time.Second)))
				http.Error(w, "admin: too many failed logins from this address; retry later", http.StatusTooManyRequests)
				return
			}
		}
		if basic && cfg.Password != "" {
			got := sha256.Sum256([]byte(pass))
			if subtle.ConstantTimeCompare(got[:], want[:]) == 1 && user == "admin" {
				next.ServeHTTP(w, r)
				return
			}
		}
		if bearer && cfg.APIKey != nil && cfg.APIKey(key) {
			next.ServeHTTP(w, r)
			return
		}
		switch {
		case basic:
			logins.failed(r.RemoteAddr, "bad_password")
		case bearer:
			logins.failed(r.RemoteAddr, "bad_key")
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="pushgate admin", charset="UTF-8"`)
		http.Error(w, "admin: authentication required", http.StatusUnauthorized)
	})
}

// readJSON decodes a JSON body of at most limit bytes into v, or answers
// the error and returns false.
func readJSON(w http.ResponseWriter, r *http.Request, v any, limit int64) bool {
	if !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		writeJSON(w, http.StatusUnsupportedMediaType, map[string]string{"error": "send application/json"})
		return false
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit)).Decode(v); err != nil {
		if tooBig := (*http.MaxBytesError)(nil); errors.As(err, &tooBig) {
			writeJSON(w, http.StatusRequestEntityTooLarge, map[string]string{"error": fmt.Sprintf("request body over %d bytes", tooBig.Limit)})
			return false
		}
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "bad JSON: " + err.Error()})
		return false
	}
	return true
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}
