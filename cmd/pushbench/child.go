package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// job is what the parent hands a child process on stdin.
type job struct {
	WS         string   `json:"ws"`
	Users      []string `json:"users"`
	SourceIPs  []string `json:"source_ips"`
	Envelope   bool     `json:"envelope"`
	Centrifugo bool     `json:"centrifugo"`
	ConnectPar int      `json:"connect_par"`
}

// command is a later line from the parent.
type command struct {
	Cmd string `json:"cmd"` // count, report, storm, exit
}

// childReport is a child's answer to "report".
type childReport struct {
	Users     map[string][]int32 `json:"users"`       // received sequence numbers, per user
	Latencies []int32            `json:"latencies"`   // per delivery, microseconds
	LastBySeq map[int32]int32    `json:"last_by_seq"` // per sequence number, the latest delivery, microseconds
}

// client is one connection of a child, owned by its read goroutine until
// the report.
type client struct {
	user string
	ws   *websocket.Conn
	seqs []int32
	lats []int32
}

// runChild holds connections for the parent (pushbench child < job).
func runChild(ctx context.Context, stdin io.Reader, stdout io.Writer) error {
	in := bufio.NewScanner(stdin)
	in.Buffer(make([]byte, 1<<20), 64<<20)
	if !in.Scan() {
		return fmt.Errorf("no job on stdin")
	}
	var j job
	if err := json.Unmarshal(in.Bytes(), &j); err != nil {
		return err
	}
	out := json.NewEncoder(stdout)
	var received atomic.Int64
	dial := dialer(j.SourceIPs)
	clients := make([]*client, len(j.Users))
	var wg sync.WaitGroup
	connect := func() (int, int) {
		sem := make(chan struct{}, j.ConnectPar)
		var failed atomic.Int64
		for i, u := range j.Users {
			clients[i] = &client{user: u}
			wg.Add(1)
			sem <- struct{}{}
			go func(c *client) {
				defer func() { <-sem }()
				if err := c.connect(ctx, dial, j); err != nil {
					failed.Add(1)
					wg.Done()
					return
				}
				go func() { defer wg.Done(); c.read(&received, j) }()
			}(clients[i])
		}
		for range cap(sem) {
			sem <- struct{}{}
		}
		return len(j.Users) - int(failed.Load()), int(failed.Load())
	}
	start := time.Now()
	ok, failed := connect()
	out.Encode(map[string]any{"ready": ok, "failed": failed, "connect_ms": time.Since(start).Milliseconds()})

	for in.Scan() {
		var cmd command
		json.Unmarshal(in.Bytes(), &cmd)
		switch cmd.Cmd {
		case "count":
			out.Encode(map[string]int64{"received": received.Load()})
		case "storm":
			// Everyone drops and comes back at once.
			for _, c := range clients {
				if c.ws != nil {
					c.ws.CloseNow()
				}
			}
			wg.Wait()
			start := time.Now()
			ok, failed := connect()
			out.Encode(map[string]any{"ready": ok, "failed": failed, "connect_ms": time.Since(start).Milliseconds()})
		case "report":
			rep := childReport{Users: map[string][]int32{}, LastBySeq: map[int32]int32{}}
			for _, c := range clients {
				if c.ws == nil {
					continue
				}
				c.ws.CloseNow() // stops the reader, which owns seqs and lats
			}
			wg.Wait()
			for _, c := range clients {
				rep.Users[c.user] = append(rep.Users[c.user], c.seqs...)
				rep.Latencies = append(rep.Latencies, c.lats...)
				for i, s := range c.seqs {
					if c.lats[i] > rep.LastBySeq[s] {
						rep.LastBySeq[s] = c.lats[i]
					}
				}
			}
			out.Encode(rep)
		case "exit":
			return nil
		}
	}
	return nil
}

// dialer returns an HTTP client factory that spreads sockets over the local
// addresses, round robin.
func dialer(ips []string) func() *http.Client {
	var n atomic.Uint64
	return func() *http.Client {
		d := &net.Dialer{Timeout: 10 * time.Second}
		if len(ips) > 0 {
			d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(ips[n.Add(1)%uint64(len(ips))])}
		}
		return &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
	}
}

func (c *client) connect(ctx context.Context, dial func() *http.Client, j job) error {
	opts := &websocket.DialOptions{HTTPClient: dial()}
	if j.Envelope {
		opts.Subprotocols = []string{"pushgate.v1"}
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	url := "ws://" + j.WS + "/ws/" + c.user
	if j.Centrifugo {
		url = "ws://" + j.WS + "/connection/websocket"
	}
	ws, _, err := websocket.Dial(cctx, url, opts)
	if err != nil {
		return err
	}
	ws.SetReadLimit(1 << 20)
	if j.Centrifugo {
		if err := centrifugoSubscribe(cctx, ws); err != nil {
			ws.CloseNow()
			return err
		}
	}
	c.ws = ws
	return nil
}

// read records every payload's sequence number and latency until the
// connection ends. In pushgate's envelope and in Centrifugo's JSON protocol
// a frame may hold several messages, one a line.
func (c *client) read(received *atomic.Int64, j job) {
	split := j.Envelope || j.Centrifugo
	buf := make([]byte, 64<<10)
	for {
		_, r, err := c.ws.Reader(context.Background())
		if err != nil {
			return
		}
		n, _ := io.ReadFull(r, buf)
		for n == len(buf) {
			// A longer frame (many messages written at once, as a
			// client that fell behind gets them): grow, read the rest.
			buf = append(buf, make([]byte, len(buf))...)
			m, _ := io.ReadFull(r, buf[n:])
			n += m
		}
		now := time.Now().UnixNano()
		frame := buf[:n]
		for len(frame) > 0 {
			line := frame
			if i := bytes.IndexByte(frame, '\n'); i >= 0 && split {
				line, frame = frame[:i], frame[i+1:]
			} else {
				frame = nil
			}
			if j.Centrifugo && string(line) == "{}" {
				// Centrifugo's ping: without the pong it drops the
				// connection (client.pong_timeout).
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				c.ws.Write(ctx, websocket.MessageText, line)
				cancel()
				continue
			}
			seq, sent, ok := parsePayload(line)
			if !ok {
				continue // hello, pong and other control frames
			}
			c.seqs = append(c.seqs, seq)
			c.lats = append(c.lats, int32((now-sent)/1000))
			received.Add(1)
		}
	}
}

// payload makes a message body of at least size bytes carrying seq and the
// send time: {"s":SEQ,"t":UNIXNANO,"p":"xxx…"}.
func payload(seq int, size int) string {
	head := `{"s":` + strconv.Itoa(seq) + `,"t":` + strconv.FormatInt(time.Now().UnixNano(), 10) + `,"p":"`
	pad := size - len(head) - 2
	if pad < 0 {
		pad = 0
	}
	return head + string(bytes.Repeat([]byte{'x'}, pad)) + `"}`
}

// parsePayload finds "s": and "t": in a raw payload or an envelope.
func parsePayload(b []byte) (seq int32, sent int64, ok bool) {
	i := bytes.Index(b, []byte(`{"s":`))
	if i < 0 {
		return 0, 0, false
	}
	b = b[i+5:]
	j := bytes.IndexByte(b, ',')
	if j < 0 {
		return 0, 0, false
	}
	s, err := strconv.Atoi(string(b[:j]))
	if err != nil {
		return 0, 0, false
	}
	b = b[j:]
	if !bytes.HasPrefix(b, []byte(`,"t":`)) {
		return 0, 0, false
	}
	b = b[5:]
	k := bytes.IndexByte(b, ',')
	if k < 0 {
		return 0, 0, false
	}
	t, err := strconv.ParseInt(string(b[:k]), 10, 64)
	if err != nil {
		return 0, 0, false
	}
	return int32(s), t, true
}
