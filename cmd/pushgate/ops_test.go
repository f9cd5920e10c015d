package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	pb "pushgate/gen/pushgate/v1"
	"pushgate/internal/config"
)

func TestDrainOf1000Clients(t *testing.T) {
	const clients = 1000
	const window = 2 * time.Second
	p := startProcess(t, "--ops-addr", "127.0.0.1:0", "--drain-window", window.String(), "--shutdown-delay", "300ms")

	type closed struct {
		at   time.Time
		code websocket.StatusCode
	}
	results := make(chan closed, clients)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 50)
	for i := range clients {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			c, _, err := websocket.Dial(context.Background(), fmt.Sprintf("ws://%s/ws/drain-%d", p.httpAddr, i), nil)
			<-sem
			if err != nil {
				t.Errorf("dial %d: %v", i, err)
				return
			}
			go func() {
				for {
					if _, _, err := c.Read(context.Background()); err != nil {
						results <- closed{time.Now(), websocket.CloseStatus(err)}
						return
					}
				}
			}()
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	ready := func() int {
		r, err := http.Get("http://" + p.opsAddr + "/readyz")
		if err != nil {
			return 0
		}
		r.Body.Close()
		return r.StatusCode
	}
	eventually(t, "ready with 1000 clients", func() bool { return ready() == 200 })

	// Watch readiness from the moment of the signal.
	notReady := make(chan time.Time, 1)
	go func() {
		for {
			if code := ready(); code == http.StatusServiceUnavailable {
				notReady <- time.Now()
				return
			} else if code == 0 {
				close(notReady) // the ops listener went away before saying not ready
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	sent := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var times []time.Time
	for range clients {
		select {
		case r := <-results:
			if r.code != websocket.StatusGoingAway {
				t.Fatalf("a client was closed with %d, want 1001", r.code)
			}
			times = append(times, r.at)
		case <-time.After(30 * time.Second):
			t.Fatalf("only %d of %d clients closed", len(times), clients)
		}
	}
	select {
	case err := <-p.exited:
		if err != nil {
			t.Fatalf("exit: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("still running after the drain")
	}
	nr, ok := <-notReady
	if !ok {
		t.Fatal("/readyz never answered 503 before the ops listener closed")
	}
	sort.Slice(times, func(i, j int) bool { return times[i].Before(times[j]) })
	first, last := times[0], times[len(times)-1]
	if !nr.Before(first) {
		t.Fatalf("not ready at +%v, after the first close at +%v", nr.Sub(sent), first.Sub(sent))
	}
	// Spread: the closes fill most of the window, in many separate moments.
	spread := last.Sub(first)
	buckets := map[int64]bool{}
	for _, at := range times {
		buckets[at.Sub(first).Milliseconds()/100] = true
	}
	t.Logf("not ready +%v; closes from +%v to +%v (spread %v over %d of the window's 100 ms slots)",
		nr.Sub(sent).Round(time.Millisecond), first.Sub(sent).Round(time.Millisecond), last.Sub(sent).Round(time.Millisecond), spread.Round(time.Millisecond), len(buckets))
	if spread < window*3/4 || len(buckets) < 15 {
		t.Fatalf("closes not spread over the %v window: spread %v in %d slots", window, spread, len(buckets))
	}
}

func TestMetricsAfterAScriptedScenario(t *testing.T) {
	secret := "0123456789abcdef0123456789abcdef"
	s := startServer(t, "--auth", "jwt", "--jwt-secret", secret, "--queue-max-messages", "4",
		"--max-payload-bytes", "1048576", "--write-timeout", "1s")
	mint := func(user string) string {
		var out strings.Builder
		runToken([]string{"--user", user, "--jwt-secret", secret}, func(string) string { return "" }, &out)
		return strings.TrimSpace(out.String())
	}
	ws := "ws://" + s.app.HTTPAddr() + "/ws?token="
	// 5 auth failures: none, garbage, a truncated token, a signature with a
	// character too many, a wrong signature.
	for _, tok := range []string{"", "garbage", mint("x")[:40] + "AAAA", mint("y") + "x", mint("z")[:len(mint("z"))-2] + "zz"} {
		if code, _ := dialStatus(t, ws+tok, nil); code != 401 {
			t.Fatalf("bad token %q: HTTP %d", tok, code)
		}
	}
	// 3 connections: one reads, two never read.
	reader := dialWS(t, ws+mint("reader"))
	ctx := context.Background()
	for _, u := range []string{"stuck-1", "stuck-2"} {
		c, _, err := websocket.Dial(ctx, ws+mint(u), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow() // never read: the server must give up on it
	}
	eventually(t, "3 connections", func() bool { return s.metric(t, "pushgate_connections") == 3 })
	// 4 messages to the reader.
	for i := range 4 {
		s.api.SendToUser(ctx, &pb.SendToUserRequest{UserId: "reader", Message: textMsg(fmt.Sprint(i))})
		reader.expect(fmt.Sprint(i))
	}
	// The two that never read become slow consumers.
	big := textMsg(strings.Repeat("x", 512<<10))
	for _, u := range []string{"stuck-1", "stuck-2"} {
		for i := 0; ; i++ {
			r, err := s.api.SendToUser(ctx, &pb.SendToUserRequest{UserId: u, Message: big})
			if err != nil {
				t.Fatal(err)
			}
			if !r.GetOnline() {
				break
			}
			if i > 500 {
				t.Fatalf("%s never became a slow consumer", u)
			}
		}
	}
	want := map[string]float64{
		"pushgate_connections":                                      1,
		"pushgate_connections_accepted_total":                       3,
		`pushgate_connections_closed_total{reason="slow_consumer"}`: 2,
		`pushgate_auth_failures_total{reason="missing_token"}`:      1,
		// "garbage", the truncated token, and a signature whose base64
		// has a character too many (not a signature at all) are malformed;
		// the one with two characters changed has a wrong signature.
		`pushgate_auth_failures_total{reason="malformed"}`:     3,
		`pushgate_auth_failures_total{reason="bad_signature"}`: 1,
		`pushgate_handshakes_rejected_total{reason="auth"}`:    5,
	}
	eventually(t, "slow consumers closed", func() bool {
		return s.metric(t, `pushgate_connections_closed_total{reason="slow_consumer"}`) == 2
	})
	for series, v := range want {
		if got := s.metric(t, series); got != v {
			t.Errorf("%s = %v, want %v", series, got, v)
		}
	}
	if got := s.metric(t, `pushgate_slow_consumers_total{cause="queue_overflow"}`) + s.metric(t, `pushgate_slow_consumers_total{cause="write_timeout"}`); got != 2 {
		t.Errorf("pushgate_slow_consumers_total (both causes) = %v, want 2", got)
	}
	// The reader's 4 messages were delivered; the stuck ones got some
	// before their socket buffers filled, so at least 4 in total.
	if got := s.metric(t, "pushgate_messages_delivered_total"); got < 4 {
		t.Errorf("delivered = %v, want at least 4", got)
	}
	if got := s.metric(t, `pushgate_grpc_calls_total{caller="",code="OK",method="SendToUser"}`); got < 6 {
		t.Errorf("SendToUser calls = %v", got)
	}
}

// "pushgate config print": effective values, secrets masked, loadable again.
func TestConfigPrint(t *testing.T) {
	file := filepath.Join(t.TempDir(), "pushgate.yaml")
	var out strings.Builder
	err := run(context.Background(), []string{"config", "print", "--jwt-secret", "0123456789abcdef0123456789abcdef-flag",
		"--api-keys", "orders:0123456789abcdef-key", "--admin-password", "hunter2hunter2", "--queue-max-messages", "42",
		"--redis-url", "redis://pushgate:redis-pass-7@10.0.0.5:6379/2"},
		func(string) string { return "" }, &out, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	printed := out.String()
	for _, secret := range []string{"0123456789abcdef0123456789abcdef-flag", "0123456789abcdef-key", "hunter2", "redis-pass-7"} {
		if strings.Contains(printed, secret) {
			t.Errorf("config print shows a secret: %s", secret)
		}
	}
	if !strings.Contains(printed, "queue-max-messages: 42") || !strings.Contains(printed, `jwt-secret: '********'`) ||
		!strings.Contains(printed, "redis-url: redis://pushgate:********@10.0.0.5:6379/2") {
		t.Fatalf("config print:\n%s", printed)
	}
	os.WriteFile(file, []byte(strings.ReplaceAll(printed, `'********'`, `""`)), 0o600)
	again, err := config.Parse([]string{"--config", file}, func(string) string { return "" }, io.Discard)
	if err != nil || again.QueueMessages != 42 {
		t.Fatalf("printed config does not load back: %v", err)
	}
}
