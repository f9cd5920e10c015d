package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"

	"pushgate/gateway/redisengine/redistest"
	pb "pushgate/gen/pushgate/v1"
)

// TestClusterSoak (make soak): 3 node processes on one Redis, 5,000 client
// connections churning (connect, hold 1–10 s, close cleanly or cut) for
// PUSHGATE_SOAK (e.g. 5m) while SendToUser and Broadcast calls flow through
// random nodes. Afterwards every node and Redis must hold no presence for
// the gone connections, and each node's heap and goroutines must be back
// to what they were after a warm-up.
func TestClusterSoak(t *testing.T) {
	d, err := time.ParseDuration(os.Getenv("PUSHGATE_SOAK"))
	if err != nil {
		t.Skip("set PUSHGATE_SOAK to a duration (make soak) to run the soak")
	}
	r := redistest.Start(t)
	rc := r.Client()
	const nodes, conns, users = 3, 5000, 3000
	procs := make([]*proc, nodes)
	apis := make([]pb.PushServiceClient, nodes)
	for i := range procs {
		procs[i] = startProcess(t, "--engine", "redis", "--redis-url", r.URL(), "--presence-grace", "0",
			"--max-connections-per-user", "100", "--max-new-connections", "0")
		cc, err := grpc.NewClient(procs[i].grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		apis[i] = pb.NewPushServiceClient(cc)
	}

	// Client sockets come from 127.0.0.2–127.0.0.50, so that the churn's
	// closed sockets (TIME_WAIT) do not run out of ports.
	var nextSrc atomic.Uint32
	clientFor := func() *http.Client {
		ip := net.IPv4(127, 0, 0, byte(2+nextSrc.Add(1)%49))
		dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}, Timeout: 10 * time.Second}
		return &http.Client{Transport: &http.Transport{DialContext: dialer.DialContext, DisableKeepAlives: true}}
	}

	var connected, refused, received atomic.Int64
	churn := func(ctx context.Context, slot int) {
		hc := clientFor()
		for ctx.Err() == nil {
			node := rand.IntN(nodes)
			url := fmt.Sprintf("ws://%s/ws/s%d", procs[node].httpAddr, slot%users)
			dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			c, _, err := websocket.Dial(dctx, url, &websocket.DialOptions{HTTPClient: hc})
			cancel()
			if err != nil {
				if ctx.Err() == nil {
					refused.Add(1)
					time.Sleep(time.Second)
				}
				continue
			}
			connected.Add(1)
			done := make(chan struct{})
			go func() {
				defer close(done)
				for {
					if _, _, err := c.Read(context.Background()); err != nil {
						return
					}
					received.Add(1)
				}
			}()
			select {
			case <-time.After(time.Duration(1000+rand.IntN(9000)) * time.Millisecond):
			case <-ctx.Done():
			}
			if rand.IntN(2) == 0 {
				c.Close(websocket.StatusNormalClosure, "")
			} else {
				c.CloseNow() // cut: no close frame
			}
			<-done
		}
	}
	run := func(ctx context.Context) (sent, failed int64) {
		var wg sync.WaitGroup
		for i := range conns {
			wg.Go(func() { churn(ctx, i) })
		}
		wg.Go(func() {
			tick := time.NewTicker(5 * time.Millisecond) // 200 sends/s
			defer tick.Stop()
			for n := 0; ; n++ {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				var err error
				if n%200 == 0 {
					_, err = apis[n%nodes].Broadcast(cctx, &pb.BroadcastRequest{Message: jsonMsg(`{"notice":"hello all"}`)})
				} else {
					_, err = apis[n%nodes].SendToUser(cctx, &pb.SendToUserRequest{UserId: fmt.Sprintf("s%d", rand.IntN(users)),
						Message: &pb.Message{Payload: &pb.Message_Json{Json: `{"type":1,"orderId":"x"}`}, Ttl: durationpb.New(30 * time.Second)}})
				}
				cancel()
				sent++
				if err != nil {
					failed++
					t.Logf("call failed: %v", err)
				}
			}
		})
		wg.Wait()
		return sent, failed
	}

	// All gone: no presence on any node nor in Redis.
	drained := func(what string) {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for {
			ok := true
			for _, api := range apis {
				resp, err := api.ListOnline(context.Background(), &pb.ListOnlineRequest{})
				if err != nil || resp.GetTotalUsers() != 0 || resp.GetTotalConnections() != 0 || len(resp.GetUsers()) != 0 {
					ok = false
				}
			}
			keys := presenceKeys(t, rc)
			if ok && len(keys) == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: presence left behind; Redis keys: %v", what, keys)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}

	// Warm-up, then the baseline.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	run(ctx)
	cancel()
	drained("after the warm-up")
	base := make([]nodeMem, nodes)
	for i, p := range procs {
		base[i] = readNodeMem(t, p)
	}

	start := time.Now()
	ctx, cancel = context.WithTimeout(context.Background(), d)
	sent, failed := run(ctx)
	cancel()
	t.Logf("soak %v: %d connections made (%d refused), %d calls (%d failed), %d messages received",
		time.Since(start).Round(time.Second), connected.Load(), refused.Load(), sent, failed, received.Load())
	if failed > 0 {
		t.Errorf("%d calls failed with Redis up", failed)
	}
	drained("after the soak")
	for i, p := range procs {
		// What the runtime may still hold from the churn is returned over a
		// few GC cycles.
		var m nodeMem
		deadline := time.Now().Add(time.Minute)
		for {
			m = readNodeMem(t, p)
			if m.heap <= base[i].heap*3/2+8<<20 && m.goroutines <= base[i].goroutines+20 {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("node %d: heap %d MiB, %d goroutines; baseline %d MiB, %d goroutines",
					i, m.heap>>20, m.goroutines, base[i].heap>>20, base[i].goroutines)
				break
			}
			time.Sleep(2 * time.Second)
		}
		t.Logf("node %d: heap in use %.1f MiB (baseline %.1f), goroutines %d (baseline %d), RSS %.1f MiB (baseline %.1f)",
			i, mib(m.heap), mib(base[i].heap), m.goroutines, base[i].goroutines, mib(m.rss), mib(base[i].rss))
	}
}

type nodeMem struct {
	heap, rss  int64
	goroutines int64
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// readNodeMem scrapes a node's heap in use, RSS and goroutines from /metrics.
func readNodeMem(t *testing.T, p *proc) nodeMem {
	t.Helper()
	resp, err := http.Get("http://" + p.httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body strings.Builder
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		body.Write(buf[:n])
		if err != nil {
			break
		}
	}
	var m nodeMem
	for _, line := range strings.Split(body.String(), "\n") {
		var v float64
		switch {
		case strings.HasPrefix(line, "go_memstats_heap_inuse_bytes "):
			fmt.Sscan(strings.Fields(line)[1], &v)
			m.heap = int64(v)
		case strings.HasPrefix(line, "process_resident_memory_bytes "):
			fmt.Sscan(strings.Fields(line)[1], &v)
			m.rss = int64(v)
		case strings.HasPrefix(line, "go_goroutines "):
			fmt.Sscan(strings.Fields(line)[1], &v)
			m.goroutines = int64(v)
		}
	}
	return m
}

// presenceKeys lists what Redis holds about connections: online users,
// per-user presence, per-node user sets and non-zero node connection counts.
func presenceKeys(t *testing.T, c *redis.Client) []string {
	t.Helper()
	ctx := context.Background()
	var out []string
	for _, pattern := range []string{"{pushgate}:c:*", "{pushgate}:s:*", "{pushgate}:nu:*", "{pushgate}:online"} {
		keys, err := c.Keys(ctx, pattern).Result()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, keys...)
	}
	counts, err := c.HGetAll(ctx, "{pushgate}:nconns").Result()
	if err != nil {
		t.Fatal(err)
	}
	for node, n := range counts {
		if n != "0" {
			out = append(out, "nconns "+node+"="+n)
		}
	}
	return out
}
