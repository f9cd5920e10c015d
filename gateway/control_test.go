package gateway

import (
	"context"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// WebSocket ping frames count against the upstream rate: those within it
// are answered, and the first one over it closes the connection with 4002
// instead of getting a pong.
func TestControlPingsAreRateLimited(t *testing.T) {
	_, srv := testHub(t, Config{UpstreamPerSecond: 5}, nil) // bursts of 11
	c, _, err := websocket.Dial(context.Background(), "ws"+srv.URL[4:]+"/ws/u", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	closed := make(chan websocket.StatusCode, 1)
	go func() { // a reader, which receives the pongs for Ping
		for {
			if _, _, err := c.Read(context.Background()); err != nil {
				closed <- websocket.CloseStatus(err)
				return
			}
		}
	}()
	answered := 0
	for range 100 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := c.Ping(ctx)
		cancel()
		if err != nil {
			break
		}
		answered++
	}
	// The burst, and what refilled (5 a second) while the pings went back
	// and forth.
	if answered < 11 || answered > 15 {
		t.Errorf("%d pings answered, want the burst of 11 (a few more on a slow machine)", answered)
	}
	select {
	case code := <-closed:
		if code != CloseRateLimited.Code {
			t.Fatalf("closed with %d, want %d", code, CloseRateLimited.Code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("not closed")
	}
}
