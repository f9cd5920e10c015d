package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	pb "pushgate/gen/pushgate/v1"
)

// childProc is one child process and its pipes.
type childProc struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
}

func (c *childProc) send(v any) error {
	b, _ := json.Marshal(v)
	_, err := c.in.Write(append(b, '\n'))
	return err
}

func (c *childProc) recv(v any) error {
	if !c.out.Scan() {
		if err := c.out.Err(); err != nil {
			return err
		}
		return io.ErrUnexpectedEOF
	}
	return json.Unmarshal(c.out.Bytes(), v)
}

type ready struct {
	Ready     int   `json:"ready"`
	Failed    int   `json:"failed"`
	ConnectMS int64 `json:"connect_ms"`
}

// startChildren spreads the users over cfg.Procs children and waits until
// every child has connected its share.
func startChildren(ctx context.Context, cfg Config, users []string, stderr io.Writer) ([]*childProc, ready, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, ready{}, err
	}
	ips, _ := sourceIPs(cfg.SourceIPs)
	var kids []*childProc
	var total ready
	per := (len(users) + cfg.Procs - 1) / cfg.Procs
	for p := 0; p < cfg.Procs && p*per < len(users); p++ {
		share := users[p*per : min(len(users), (p+1)*per)]
		cmd := exec.CommandContext(ctx, self, "child")
		cmd.Stderr = stderr
		in, _ := cmd.StdinPipe()
		outPipe, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			return kids, total, err
		}
		sc := bufio.NewScanner(outPipe)
		sc.Buffer(make([]byte, 1<<20), 512<<20)
		k := &childProc{cmd: cmd, in: in, out: sc}
		kids = append(kids, k)
		// Several nodes (--ws a,b,...): each child connects to one, in turn.
		nodes := strings.Split(cfg.WS, ",")
		if err := k.send(job{WS: nodes[p%len(nodes)], Users: share, SourceIPs: ips, Envelope: cfg.Envelope, Centrifugo: cfg.Target == "centrifugo", ConnectPar: cfg.ConnectPar}); err != nil {
			return kids, total, err
		}
	}
	for _, k := range kids {
		var r ready
		if err := k.recv(&r); err != nil {
			return kids, total, fmt.Errorf("child: %w", err)
		}
		total.Ready += r.Ready
		total.Failed += r.Failed
		total.ConnectMS = max(total.ConnectMS, r.ConnectMS)
	}
	return kids, total, nil
}

func stopChildren(kids []*childProc) {
	for _, k := range kids {
		k.send(command{Cmd: "exit"})
		k.in.Close()
		done := make(chan struct{})
		go func() { k.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			k.cmd.Process.Kill()
		}
	}
}

// received asks every child how many payloads it has seen.
func received(kids []*childProc) int64 {
	var n int64
	for _, k := range kids {
		var r struct{ Received int64 }
		if k.send(command{Cmd: "count"}) == nil && k.recv(&r) == nil {
			n += r.Received
		}
	}
	return n
}

func runScenario(ctx context.Context, cfg Config, stderr io.Writer) (*Result, error) {
	users := make([]string, cfg.Conns)
	for i := range users {
		users[i] = fmt.Sprintf("bench-%06d", i)
	}
	res := &Result{Scenario: cfg.Scenario, Target: cfg.Target, Conns: cfg.Conns, Procs: cfg.Procs, Payload: cfg.Payload, Envelope: cfg.Envelope, Rate: cfg.Rate}
	before := sampleProc(cfg.ServerPID)
	kids, rd, err := startChildren(ctx, cfg, users, stderr)
	defer stopChildren(kids)
	if err != nil {
		return nil, err
	}
	res.Connected, res.ConnectFailed, res.ConnectMS = rd.Ready, rd.Failed, rd.ConnectMS
	if rd.Failed > 0 {
		fmt.Fprintf(stderr, "pushbench: %d of %d connections failed\n", rd.Failed, cfg.Conns)
	}
	loaded := sampleProc(cfg.ServerPID)
	res.server(before, loaded)

	switch cfg.Scenario {
	case "idle":
		select {
		case <-time.After(cfg.Duration):
		case <-ctx.Done():
		}
		res.server(before, sampleProc(cfg.ServerPID))
		return res, nil
	case "storm":
		for _, k := range kids {
			k.send(command{Cmd: "storm"})
		}
		var back ready
		for _, k := range kids {
			var r ready
			if err := k.recv(&r); err != nil {
				return nil, err
			}
			back.Ready += r.Ready
			back.Failed += r.Failed
			back.ConnectMS = max(back.ConnectMS, r.ConnectMS)
		}
		res.StormBackMS, res.StormFailed = back.ConnectMS, back.Failed
		return res, nil
	}

	cc, err := grpc.NewClient(cfg.GRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	api := pb.NewPushServiceClient(cc)
	callCtx := ctx
	if cfg.APIKey != "" {
		callCtx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+cfg.APIKey)
	}
	broadcast := func(body string) error {
		_, err := api.Broadcast(callCtx, &pb.BroadcastRequest{Message: &pb.Message{Payload: &pb.Message_Json{Json: body}}})
		return err
	}
	if cfg.Target == "centrifugo" {
		broadcast = centrifugoPublisher(ctx, cfg)
	}

	// The send phase: cfg.Count sends at cfg.Rate, bounded by cfg.Duration.
	expected := map[string][]int32{} // unicast: what each user must get
	var expMu sync.Mutex
	var broadcasts int32
	var callLat []int32
	var callErrs atomic.Int64
	sendStart := sampleProc(cfg.ServerPID) // CPU counts from here: the send phase
	interval := time.Duration(float64(time.Second) / cfg.Rate)
	deadline := time.Now().Add(cfg.Duration)
	start := time.Now()
	jobs := make(chan int)
	var wg sync.WaitGroup
	var latMu sync.Mutex
	for range cfg.Callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := range jobs {
				body := payload(seq, cfg.Payload)
				t0 := time.Now()
				var err error
				user := ""
				switch {
				case cfg.Scenario == "fanout" || (cfg.Scenario == "mixed" && seq%int(max(1, cfg.Rate)) == 0):
					err = broadcast(body)
				default:
					user = users[rand.IntN(len(users))]
					var r *pb.SendToUserResponse
					r, err = api.SendToUser(callCtx, &pb.SendToUserRequest{UserId: user, Message: &pb.Message{Payload: &pb.Message_Json{Json: body}}})
					if err == nil && r.GetDeliveredConnections() == 0 {
						user = "" // offline: nothing expected
					}
				}
				d := int32(time.Since(t0).Microseconds())
				if err != nil {
					callErrs.Add(1)
					continue
				}
				latMu.Lock()
				callLat = append(callLat, d)
				latMu.Unlock()
				expMu.Lock()
				if user != "" {
					expected[user] = append(expected[user], int32(seq))
				} else if cfg.Scenario == "fanout" || cfg.Scenario == "mixed" {
					broadcasts++
					expected["*"] = append(expected["*"], int32(seq))
				}
				expMu.Unlock()
			}
		}()
	}
	next := time.Now()
	sent := 0
	for ; sent < cfg.Count && time.Now().Before(deadline) && ctx.Err() == nil; sent++ {
		if d := time.Until(next); d > 0 {
			time.Sleep(d)
		}
		next = next.Add(interval)
		jobs <- sent
	}
	close(jobs)
	wg.Wait()
	sendEnd := time.Now()
	res.Sent, res.CallErrors = sent, int(callErrs.Load())
	res.CallLatency = percentiles(callLat)

	// Wait for the deliveries (or the settle time).
	want := int64(0)
	for u, s := range expected {
		if u == "*" {
			want += int64(len(s)) * int64(res.Connected)
		} else {
			want += int64(len(s))
		}
	}
	settle := time.Now().Add(cfg.Settle)
	for received(kids) < want && time.Now().Before(settle) && ctx.Err() == nil {
		time.Sleep(50 * time.Millisecond)
	}
	end := time.Now()
	cpuEnd := sampleProc(cfg.ServerPID)
	// Duplicates are not in want: wait until the count stops moving (a
	// quarter second without a frame), so that a frame sent twice is
	// counted twice however fast the server wrote it.
	for last := int64(-1); time.Now().Before(settle) && ctx.Err() == nil; {
		n := received(kids)
		if n == last {
			break
		}
		last = n
		time.Sleep(250 * time.Millisecond)
	}

	// Collect and account.
	got := map[string][]int32{}
	var lats []int32
	lastBySeq := map[int32]int32{}
	for _, k := range kids {
		if err := k.send(command{Cmd: "report"}); err != nil {
			return nil, err
		}
		var rep childReport
		if err := k.recv(&rep); err != nil {
			return nil, fmt.Errorf("child report: %w", err)
		}
		for u, s := range rep.Users {
			got[u] = append(got[u], s...)
		}
		lats = append(lats, rep.Latencies...)
		for s, l := range rep.LastBySeq {
			lastBySeq[s] = max(lastBySeq[s], l)
		}
	}
	res.Delivered, res.Lost, res.Duplicates = account(expected, got, users)
	res.Latency = percentiles(lats)
	if broadcasts > 0 {
		var last []int32
		for _, s := range expected["*"] {
			last = append(last, lastBySeq[s])
		}
		res.LastFrameLatency = percentiles(last)
	}
	window := end.Sub(start)
	if res.Lost == 0 {
		window = lastDelivery(start, sendEnd, lats, end)
	}
	res.DeliveriesPerSec = float64(res.Delivered) / window.Seconds()
	after := sampleProc(cfg.ServerPID)
	res.server(before, after)
	if cpuEnd.ok {
		res.ServerCPUPerSec = (cpuEnd.cpu - sendStart.cpu) / end.Sub(start).Seconds()
		if res.Delivered > 0 {
			res.ServerCPUPerFrame = (cpuEnd.cpu - sendStart.cpu) / float64(res.Delivered) * 1e6
		}
	}
	return res, nil
}

// lastDelivery bounds the delivery window: from the first send to when the
// deliveries stopped coming (the send phase plus the slowest delivery).
func lastDelivery(start, sendEnd time.Time, lats []int32, end time.Time) time.Duration {
	var worst int32
	for _, l := range lats {
		worst = max(worst, l)
	}
	w := sendEnd.Sub(start) + time.Duration(worst)*time.Microsecond
	if w <= 0 || w > end.Sub(start) {
		return end.Sub(start)
	}
	return w
}

// account compares what each user got with what it should have: every
// broadcast ("*") for every user, plus its own unicasts.
func account(expected, got map[string][]int32, users []string) (delivered, lost, dups int64) {
	for _, u := range users {
		want := map[int32]int{}
		for _, s := range expected["*"] {
			want[s]++
		}
		for _, s := range expected[u] {
			want[s]++
		}
		seen := map[int32]int{}
		for _, s := range got[u] {
			seen[s]++
		}
		for s, n := range seen {
			delivered += int64(n)
			if n > want[s] {
				dups += int64(n - want[s])
			}
		}
		for s, n := range want {
			if seen[s] < n {
				lost += int64(n - seen[s])
			}
		}
	}
	return delivered, lost, dups
}
