// Package web holds the pages and the JavaScript client pushgate serves,
// embedded in the binary.
package web

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"path"
	"time"

	"pushgate/gateway"
)

//go:embed demo.html js/pushgate.js js/pushgate.mjs js/pushgate.d.ts js/pushgate-sw.js
var files embed.FS

//go:embed favicon.svg
var favicon []byte

// serveFavicon serves pushgate's icon (/favicon.svg, /admin/favicon.svg).
func serveFavicon(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "image/svg+xml")
	w.Header().Set("Cache-Control", "max-age=86400")
	http.ServeContent(w, r, "favicon.svg", started, bytes.NewReader(favicon))
}

// FaviconHandler serves the pages' icon, /favicon.svg.
func FaviconHandler() http.Handler { return http.HandlerFunc(serveFavicon) }

var started = time.Now()

// DemoHandler serves the demo page: connect as a user with the JavaScript
// client and watch messages arrive; a second panel plays the backend, with
// the grpcurl command that does the same. devSend says whether the page may
// use the development send endpoint (DevSendHandler); tokenAuth, that
// clients need a token (--auth jwt), so the page asks for one instead of
// connecting with a bare user id.
func DemoHandler(grpcAddr string, devSend, tokenAuth bool) (http.Handler, error) {
	t, err := template.ParseFS(files, "demo.html")
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := t.Execute(&buf, struct {
		GRPCAddr  string
		DevSend   bool
		TokenAuth bool
	}{grpcAddr, devSend, tokenAuth}); err != nil {
		return nil, err
	}
	page := buf.Bytes()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'unsafe-inline'; script-src 'self' 'unsafe-inline'; connect-src 'self' ws: wss:")
		http.ServeContent(w, r, "demo.html", started, bytes.NewReader(page))
	}), nil
}

// ClientHandler serves the JavaScript client: /pushgate.js (plain script,
// global Pushgate), /pushgate.mjs (ES module), /pushgate.d.ts, and the
// service worker that shows Web Push notifications, /pushgate-sw.js.
func ClientHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := path.Base(r.URL.Path)
		b, err := files.ReadFile("js/" + name)
		if err != nil {
			http.NotFound(w, r)
			return
		}
		ct := "text/javascript; charset=utf-8"
		if path.Ext(name) == ".ts" {
			ct = "text/plain; charset=utf-8"
		}
		w.Header().Set("Content-Type", ct)
		w.Header().Set("Cache-Control", "no-cache")
		w.Header().Set("Access-Control-Allow-Origin", "*") // a script, not data: any page may load it
		http.ServeContent(w, r, name, started, bytes.NewReader(b))
	})
}

// Sender is what the development send endpoint needs.
type Sender interface {
	Config() gateway.Config
	SendToUsers(ctx context.Context, userIDs []string, p gateway.Push) (gateway.Sent, error)
}

// DevSendHandler is POST /demo/send for the demo page's backend panel:
// {"user_id": ..., "json": ..., "ttl_seconds": ...} → SendToUser, within
// lim. It is for local development only: the caller registers it when
// clients are not authenticated and the listener is loopback-only.
func DevSendHandler(s Sender, lim SendLimits) http.Handler {
	lim = lim.withDefaults()
	maxTTL := int64(lim.MaxTTL / time.Second)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			UserID     string `json:"user_id"`
			JSON       string `json:"json"`
			TTLSeconds int    `json:"ttl_seconds"`
		}
		if !readJSON(w, r, &req, lim.bodyBytes()) {
			return
		}
		if err := gateway.ValidUserID(req.UserID, s.Config().MaxUserIDBytes); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "user_id: " + err.Error()})
			return
		}
		if len(req.JSON) > lim.MaxPayloadBytes {
			lim.tooLarge(w, "json", len(req.JSON))
			return
		}
		if !json.Valid([]byte(req.JSON)) {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "json: not valid JSON"})
			return
		}
		if req.TTLSeconds < 0 || int64(req.TTLSeconds) > maxTTL {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": fmt.Sprintf("ttl_seconds: 0 to %d (--inbox-max-ttl)", maxTTL)})
			return
		}
		p := gateway.Push{Type: "order.paid", Kind: gateway.KindJSON, Data: []byte(req.JSON), TTL: time.Duration(req.TTLSeconds) * time.Second}
		sent, err := s.SendToUsers(r.Context(), []string{req.UserID}, p)
		if err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": err.Error()})
			return
		}
		d := sent.Users[0]
		writeJSON(w, http.StatusOK, map[string]any{"message_id": sent.ID, "online": d.Online, "delivered_connections": d.Delivered, "stored": d.Stored})
	})
}
