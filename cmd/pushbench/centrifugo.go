package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/coder/websocket"
)

// Centrifugo as a target (--target centrifugo), for the fan-out
// comparison: its JSON protocol, every connection subscribed to the one
// channel "bench", each broadcast a publication to it through the HTTP API.
// The payload is the publication's data as it is (a JSON object), so
// parsePayload finds it inside the push.

// centrifugoSubscribe connects (insecure mode: no token, an anonymous user)
// and subscribes to the channel "bench"; the connection counts as ready
// when both replies are in, as a subscribed client would be.
func centrifugoSubscribe(ctx context.Context, ws *websocket.Conn) error {
	err := ws.Write(ctx, websocket.MessageText, []byte(`{"id":1,"connect":{}}`+"\n"+`{"id":2,"subscribe":{"channel":"bench"}}`))
	for done := 0; err == nil && done < 2; {
		var b []byte
		if _, b, err = ws.Read(ctx); err != nil {
			break
		}
		for _, line := range bytes.Split(b, []byte("\n")) {
			var r struct {
				ID    int             `json:"id"`
				Error json.RawMessage `json:"error"`
			}
			if json.Unmarshal(line, &r) != nil || r.ID == 0 {
				continue // not a reply (no push comes before the subscription)
			}
			if r.Error != nil {
				return fmt.Errorf("centrifugo: reply %d: %s", r.ID, r.Error)
			}
			done++
		}
	}
	return err
}

// centrifugoPublisher returns the fanout scenario's broadcast: a publish
// to "bench" through the HTTP API of the first --ws address, over kept-alive
// connections (one per caller). A reply other than 2xx, or with an error,
// is a failed call.
func centrifugoPublisher(ctx context.Context, cfg Config) func(body string) error {
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: cfg.Callers}}
	url := "http://" + strings.Split(cfg.WS, ",")[0] + "/api/publish"
	return func(body string) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(`{"channel":"bench","data":`+body+`}`))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-API-Key", cfg.APIKey)
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		b, err := io.ReadAll(resp.Body) // read to the end: the connection is kept
		resp.Body.Close()
		if err != nil {
			return err
		}
		if resp.StatusCode/100 != 2 {
			return fmt.Errorf("publish: %s %s", resp.Status, b)
		}
		var r struct {
			Error json.RawMessage `json:"error"`
		}
		if err := json.Unmarshal(b, &r); err != nil {
			return fmt.Errorf("publish: %w: %s", err, b)
		}
		if r.Error != nil {
			return fmt.Errorf("publish: %s", r.Error)
		}
		return nil
	}
}
