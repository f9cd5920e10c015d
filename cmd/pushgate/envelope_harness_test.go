package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// env is one envelope frame from the server (PROTOCOL.md).
type env struct {
	Op        string          `json:"op"`
	ID        string          `json:"id"`
	Type      string          `json:"type"`
	Topic     string          `json:"topic"`
	From      string          `json:"from"`
	Broadcast bool            `json:"broadcast"`
	TS        int64           `json:"ts"`
	Data      json.RawMessage `json:"data"`
	Encoding  string          `json:"encoding"`
	Ref       json.RawMessage `json:"ref"`
	Code      string          `json:"code"`
	Message   string          `json:"message"`
	ConnID    string          `json:"conn_id"`
	UserID    string          `json:"user_id"`
	Replayed  int             `json:"replayed"`
	Recovered *bool           `json:"recovered"`
	Epoch     string          `json:"epoch"`
	LastID    string          `json:"last_id"`
	Topics    []string        `json:"topics"`
	TargetID  string          `json:"target_id"`
	// presence
	Users []struct {
		UserID      string `json:"user_id"`
		Connections int    `json:"connections"`
	} `json:"users"`
	TotalUsers       int64  `json:"total_users"`
	TotalConnections int64  `json:"total_connections"`
	Next             string `json:"next"`
	Heartbeat        struct {
		IntervalMS int64 `json:"interval_ms"`
		TimeoutMS  int64 `json:"timeout_ms"`
	} `json:"heartbeat"`
}

// envClient is an envelope-protocol client that splits batched frames.
type envClient struct {
	t      testing.TB
	c      *websocket.Conn
	frames chan env
	end    chan error
	hello  env
}

func dialEnv(t testing.TB, url string) *envClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: []string{"pushgate.v1"}})
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	if c.Subprotocol() != "pushgate.v1" {
		t.Fatalf("subprotocol = %q", c.Subprotocol())
	}
	c.SetReadLimit(-1)
	return startEnvClient(t, c, 8192)
}

// startEnvClient reads c's frames (splitting batches) into the client's
// channel, which holds buffer of them, and waits for the hello.
func startEnvClient(t testing.TB, c *websocket.Conn, buffer int) *envClient {
	t.Helper()
	e := &envClient{t: t, c: c, frames: make(chan env, buffer), end: make(chan error, 1)}
	go func() {
		for {
			_, data, err := c.Read(context.Background())
			if err != nil {
				e.end <- err
				close(e.frames)
				return
			}
			for _, line := range bytes.Split(data, []byte("\n")) {
				var f env
				if err := json.Unmarshal(line, &f); err != nil {
					e.end <- err
					close(e.frames)
					return
				}
				e.frames <- f
			}
		}
	}()
	t.Cleanup(func() { c.CloseNow() })
	e.hello = e.next()
	if e.hello.Op != "hello" {
		t.Fatalf("first frame is %+v, want hello", e.hello)
	}
	return e
}

func (s *testServer) dialEnv(t testing.TB, query string) *envClient {
	t.Helper()
	return dialEnv(t, "ws://"+s.app.HTTPAddr()+"/ws"+query)
}

func (e *envClient) next() env {
	e.t.Helper()
	select {
	case f, ok := <-e.frames:
		if !ok {
			e.t.Fatalf("connection ended while waiting for a frame: %v", <-e.end)
		}
		return f
	case <-time.After(waitFor):
		e.t.Fatalf("no frame within %v", waitFor)
	}
	return env{}
}

// waitEnd discards the frames the client has not read yet, waits for the
// connection to end, and returns the error it ended with (see
// websocket.CloseStatus). It fails the test if the connection is still open
// after waitFor.
func (e *envClient) waitEnd() (discarded int, err error) {
	e.t.Helper()
	deadline := time.After(waitFor)
	for {
		select {
		case _, ok := <-e.frames:
			if !ok {
				err := <-e.end
				e.end <- err
				return discarded, err
			}
			discarded++
		case <-deadline:
			e.t.Fatalf("connection still open after %v", waitFor)
			return discarded, nil
		}
	}
}

// nextMessage returns the next "message" frame, failing on anything else.
func (e *envClient) nextMessage() env {
	e.t.Helper()
	f := e.next()
	if f.Op != "message" {
		e.t.Fatalf("got %+v, want a message", f)
	}
	return f
}

func (e *envClient) send(v any) {
	e.t.Helper()
	b, _ := json.Marshal(v)
	if err := e.c.Write(context.Background(), websocket.MessageText, b); err != nil {
		e.t.Fatal(err)
	}
}

// cutProxy forwards TCP to target; cut() drops every connection at once with
// no close frame (RST), like a network that changed under the client.
type cutProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
}

func newCutProxy(t testing.TB, target string) *cutProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target}
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, in, out)
			p.mu.Unlock()
			go pump(out, in)
			go pump(in, out)
		}
	}()
	t.Cleanup(func() { ln.Close(); p.cut() })
	return p
}

func pump(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				src.Close()
				return
			}
		}
		if err != nil {
			dst.Close()
			return
		}
	}
}

// cut returns how many proxied connections it dropped. A connection is
// registered before its first byte is forwarded, so one whose handshake
// completed is always among them.
func (p *cutProxy) cut() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0) // RST, not FIN
		}
		c.Close()
	}
	n := len(p.conns) / 2 // each is a client-side and a server-side socket
	p.conns = nil
	return n
}
