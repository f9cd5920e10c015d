package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestCentrifugo runs the fanout scenario against a real Centrifugo
// (PUSHBENCH_CENTRIFUGO=/path/to/centrifugo, v6) with the benchmarks'
// config.
func TestCentrifugo(t *testing.T) {
	bin := os.Getenv("PUSHBENCH_CENTRIFUGO")
	if bin == "" {
		t.Skip("set PUSHBENCH_CENTRIFUGO to a Centrifugo v6 binary to run this test")
	}
	addr := startCentrifugo(t, bin)
	cfg := benchConfig(addr, "", "fanout")
	cfg.Target, cfg.APIKey, cfg.Conns, cfg.Count, cfg.Rate = "centrifugo", "pushbench", 200, 5, 10
	res, err := runScenario(context.Background(), cfg, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if res.Connected != 200 || res.Sent != 5 || res.CallErrors != 0 {
		t.Fatalf("%d connected, %d sent, %d call errors", res.Connected, res.Sent, res.CallErrors)
	}
	if res.Delivered != 1000 || res.Lost != 0 || res.Duplicates != 0 || res.Latency.N != 1000 || res.LastFrameLatency.N != 5 {
		t.Fatalf("delivered %d, lost %d, duplicates %d, latency samples %d / %d; want 1000, 0, 0, 1000 / 5",
			res.Delivered, res.Lost, res.Duplicates, res.Latency.N, res.LastFrameLatency.N)
	}

	// A refused publish is a call error, and nothing is expected of it.
	cfg.APIKey, cfg.Conns, cfg.Count = "wrong", 10, 3
	res, err = runScenario(context.Background(), cfg, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if res.CallErrors != 3 || res.Delivered != 0 || res.Lost != 0 {
		t.Fatalf("wrong key: %d call errors, delivered %d, lost %d; want 3, 0, 0", res.CallErrors, res.Delivered, res.Lost)
	}
}

// startCentrifugo runs bin with centrifugo.yaml on a free port until the
// test ends, and returns its address.
func startCentrifugo(t *testing.T, bin string) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	_, port, _ := net.SplitHostPort(addr)
	var out bytes.Buffer
	cmd := exec.Command(bin, "-c", "centrifugo.yaml", "-a", "127.0.0.1", "-p", port)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		select {
		case <-done:
			t.Fatalf("centrifugo exited: %s", out.String())
		default:
		}
		if resp, err := http.Get("http://" + addr + "/"); err == nil {
			resp.Body.Close()
			return addr
		}
		if time.Now().After(deadline) {
			t.Fatalf("centrifugo not up in 20 s: %s", out.String())
		}
	}
}

// Without a server: a fake Centrifugo puts both replies in one frame, two
// pushes and a ping in another, then 1,000 pushes in a third (over 64 KiB);
// the client counts every payload and answers the ping. A refused
// subscription fails the connection.
func TestCentrifugoFrames(t *testing.T) {
	subReply := make(chan string, 2)
	subReply <- `{"id":2,"subscribe":{}}`
	subReply <- `{"id":2,"error":{"code":103,"message":"permission denied"}}`
	pong := make(chan string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/connection/websocket" {
			http.NotFound(w, r)
			return
		}
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer ws.CloseNow()
		ctx := r.Context()
		if _, b, err := ws.Read(ctx); err != nil || !bytes.Contains(b, []byte(`"subscribe":{"channel":"bench"}`)) {
			t.Errorf("commands %q, %v", b, err)
			return
		}
		reply := <-subReply
		ws.Write(ctx, websocket.MessageText, []byte(`{"id":1,"connect":{"client":"c","ping":25,"pong":true}}`+"\n"+reply))
		if strings.Contains(reply, "error") {
			return
		}
		push := func(seq int) string { return `{"push":{"channel":"bench","pub":{"data":` + payload(seq, 64) + `}}}` }
		ws.Write(ctx, websocket.MessageText, []byte(push(7)+"\n{}\n"+push(8)))
		var many []string // more than the reader's first buffer holds
		for seq := 100; seq < 1100; seq++ {
			many = append(many, push(seq))
		}
		ws.Write(ctx, websocket.MessageText, []byte(strings.Join(many, "\n")))
		_, b, _ := ws.Read(ctx)
		pong <- string(b)
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	j := job{WS: strings.TrimPrefix(srv.URL, "http://"), Centrifugo: true}

	c := &client{user: "a"}
	if err := c.connect(ctx, dialer(nil), j); err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	read := make(chan struct{})
	go func() { c.read(&n, j); close(read) }()
	select {
	case p := <-pong:
		if p != "{}" {
			t.Fatalf("pong %q", p)
		}
	case <-ctx.Done():
		t.Fatal("no pong")
	}
	<-read // the server has closed
	if n.Load() != 1002 || len(c.seqs) != 1002 || c.seqs[0] != 7 || c.seqs[1] != 8 || c.seqs[2] != 100 || c.seqs[1001] != 1099 {
		t.Fatalf("received %d: %v", n.Load(), c.seqs)
	}

	if err := (&client{user: "b"}).connect(ctx, dialer(nil), j); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("refused subscription: %v", err)
	}
}
