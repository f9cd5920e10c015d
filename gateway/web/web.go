// Package web holds the pages pushgate serves, embedded in the binary.
package web

import (
	"bytes"
	"embed"
	"html/template"
	"net/http"
	"time"
)

//go:embed demo.html
var files embed.FS

// DemoHandler serves the demo page: connect as a user over WebSocket and
// watch messages arrive, with the grpcurl command that sends one.
func DemoHandler(grpcAddr string) (http.Handler, error) {
	t, err := template.ParseFS(files, "demo.html")
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := t.Execute(&buf, struct{ GRPCAddr string }{grpcAddr}); err != nil {
		return nil, err
	}
	page := buf.Bytes()
	mod := time.Now()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self' ws: wss:")
		http.ServeContent(w, r, "demo.html", mod, bytes.NewReader(page))
	}), nil
}
