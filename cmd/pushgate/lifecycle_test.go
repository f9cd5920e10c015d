package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	pb "pushgate/gen/pushgate/v1"
	"pushgate/internal/app"
	"pushgate/internal/config"
)

// proc is the pushgate command running as its own process.
type proc struct {
	cmd      *exec.Cmd
	httpAddr string
	grpcAddr string
	opsAddr  string
	stderr   *syncBuffer
	exited   chan error
}

// startProcess runs this test binary as the pushgate command (see TestMain)
// and waits for its "pushgate started" line.
func startProcess(t *testing.T, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{"--log-format", "json", "--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"}, engineArgs(t, args)...)...)
	cmd.Env = append(os.Environ(), "PUSHGATE_TEST_RUN_MAIN=1")
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, stderr: &syncBuffer{}, exited: make(chan error, 1)}
	go func() { p.exited <- cmd.Wait(); pw.Close() }()
	t.Cleanup(func() { cmd.Process.Kill() })

	started := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			line := sc.Text()
			p.stderr.keepLast(4 << 20) // long runs log a lot
			fmt.Fprintln(p.stderr, line)
			var rec struct{ Msg, HTTP, GRPC, Ops string }
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "pushgate started" {
				p.httpAddr, p.grpcAddr, p.opsAddr = rec.HTTP, rec.GRPC, rec.Ops
				close(started)
			}
		}
	}()
	select {
	case <-started:
	case err := <-p.exited:
		t.Fatalf("pushgate exited before starting: %v\n%s", err, p.stderr)
	case <-time.After(waitFor):
		t.Fatalf("pushgate did not start\n%s", p.stderr)
	}
	return p
}

func TestGracefulShutdownOfTheBinary(t *testing.T) {
	p := startProcess(t, "--drain-window", "1s", "--grpc-stop-timeout", "5s")
	cc, err := grpc.NewClient(p.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	api := pb.NewPushServiceClient(cc)

	const users = 20
	clients := make([]*wsClient, users)
	for i := range clients {
		clients[i] = dialWS(t, fmt.Sprintf("ws://%s/ws/u%d", p.httpAddr, i))
	}
	ctx := context.Background()
	eventually(t, "all online", func() bool {
		r, err := api.ListOnline(ctx, &pb.ListOnlineRequest{})
		return err == nil && r.GetTotalConnections() == users
	})

	// Senders keep calling through the shutdown; every call must end OK (and
	// then its message must arrive) or be refused as UNAVAILABLE.
	accepted := make([][]string, users)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var badErrs []error
	var calls sync.WaitGroup
	calls.Add(users)
	for i := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := 0; seq < 100000; seq++ {
				if seq == 20 {
					calls.Done()
				}
				body := fmt.Sprintf(`{"u":%d,"seq":%d}`, i, seq)
				r, err := api.SendToUser(ctx, &pb.SendToUserRequest{UserId: fmt.Sprint("u", i), Message: jsonMsg(body)})
				if err != nil {
					if status.Code(err) != codes.Unavailable {
						mu.Lock()
						badErrs = append(badErrs, err)
						mu.Unlock()
					}
					if seq < 20 {
						calls.Done()
					}
					return
				}
				if r.GetDeliveredConnections() == 1 {
					accepted[i] = append(accepted[i], body)
				}
			}
		}()
	}
	calls.Wait()
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.exited:
		if err != nil {
			t.Fatalf("exit: %v\n%s", err, p.stderr)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("still running 20s after SIGTERM\n%s", p.stderr)
	}
	took := time.Since(start)
	wg.Wait()
	for _, err := range badErrs {
		t.Errorf("call failed with %v, want OK or UNAVAILABLE", err)
	}
	// Every accepted message arrived, in order, before the 1001 close.
	for i, c := range clients {
		for j, want := range accepted[i] {
			if m := c.next(); string(m.data) != want {
				t.Fatalf("u%d message %d = %s, want %s", i, j, m.data, want)
			}
		}
		if code := c.closeCode(); code != websocket.StatusGoingAway {
			t.Fatalf("u%d close code = %d, want 1001", i, code)
		}
	}
	total := 0
	for _, a := range accepted {
		total += len(a)
	}
	t.Logf("exited 0 in %v after SIGTERM; %d accepted messages all arrived", took.Round(time.Millisecond), total)
	if !strings.Contains(p.stderr.String(), "pushgate stopped") {
		t.Fatalf("no stop line in logs:\n%s", p.stderr)
	}
}

func TestProtectedModeRefusesNetworkAddresses(t *testing.T) {
	for _, args := range [][]string{
		{"--http-addr", "0.0.0.0:0"},
		{"--grpc-addr", ":0"},
		{"--http-addr", "[::]:0"},
	} {
		cmd := exec.Command(os.Args[0], append([]string{"--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"}, args...)...)
		cmd.Env = append(os.Environ(), "PUSHGATE_TEST_RUN_MAIN=1")
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Fatalf("%v: exit = %v, want status 1\n%s", args, err, out)
		}
		if !strings.Contains(string(out), "protected mode: refusing to listen on") || !strings.Contains(string(out), "--insecure") {
			t.Fatalf("%v: unclear message:\n%s", args, out)
		}
	}
}

func TestInsecureStartsOnAllInterfacesAndWarns(t *testing.T) {
	p := startProcess(t, "--insecure", "--http-addr", "0.0.0.0:0")
	if !strings.Contains(p.stderr.String(), "insecure mode") {
		t.Fatalf("no warning:\n%s", p.stderr)
	}
	p.cmd.Process.Signal(syscall.SIGINT)
	if err := <-p.exited; err != nil {
		t.Fatalf("exit after SIGINT: %v", err)
	}
}

func TestNoGoroutineLeakAfterManyConnections(t *testing.T) {
	s := startServer(t)
	cycle := func(i int) {
		c := s.dial(t, fmt.Sprintf("cycler-%d", i%50))
		if i%3 == 0 {
			// Receive something first, so the write path runs too.
			s.api.SendToUser(context.Background(), &pb.SendToUserRequest{UserId: fmt.Sprintf("cycler-%d", i%50), Message: textMsg("hi")})
			for m := c.next(); string(m.data) != "hi"; m = c.next() {
			}
		}
		if i%2 == 0 {
			c.c.Close(websocket.StatusNormalClosure, "")
		} else {
			c.c.CloseNow()
		}
		<-c.end
	}
	cycle(0)
	eventually(t, "warm-up closed", func() bool { return s.app.Hub().Connections() == 0 })
	runtime.GC()
	base := runtime.NumGoroutine()

	const cycles, workers = 2000, 8
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < cycles; i += workers {
				cycle(i)
			}
		}()
	}
	wg.Wait()
	eventually(t, "all connections gone", func() bool { return s.app.Hub().Connections() == 0 && s.app.Hub().Users() == 0 })
	deadline := time.Now().Add(waitFor)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("goroutines: %d now, %d at baseline\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
	if v := s.metric(t, "pushgate_connections_accepted_total"); v != cycles+1 {
		t.Fatalf("accepted = %v, want %d", v, cycles+1)
	}
}

func TestProtectedModeNeedsAuthPerListener(t *testing.T) {
	secret := "0123456789abcdef0123456789abcdef"
	cases := []struct {
		args    []string
		refused string // the flag named in the refusal, or "" to start
	}{
		{[]string{"--http-addr", "0.0.0.0:0"}, "--auth jwt"},
		{[]string{"--http-addr", "0.0.0.0:0", "--auth", "jwt", "--jwt-secret", secret}, ""},
		{[]string{"--grpc-addr", "0.0.0.0:0", "--auth", "jwt", "--jwt-secret", secret}, "--api-keys"},
		{[]string{"--grpc-addr", "0.0.0.0:0", "--api-keys", "orders:0123456789abcdef"}, ""},
		{[]string{"--http-addr", "0.0.0.0:0", "--grpc-addr", "0.0.0.0:0", "--auth", "jwt", "--jwt-secret", secret, "--api-keys", "orders:0123456789abcdef"}, ""},
	}
	for _, tc := range cases {
		args := append([]string{"--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"}, tc.args...)
		cfg, err := config.Parse(args, func(string) string { return "" }, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		logs := &syncBuffer{}
		a, err := app.New(cfg, slog.New(slog.NewTextHandler(logs, nil)))
		if tc.refused != "" {
			if err == nil || !strings.Contains(err.Error(), "protected mode") || !strings.Contains(err.Error(), tc.refused) {
				t.Errorf("%v: err = %v, want a refusal naming %s", tc.args, err, tc.refused)
			}
			continue
		}
		if err != nil {
			t.Errorf("%v: %v", tc.args, err)
			continue
		}
		a.Close()
	}
}

func TestTokenExpiryClosesAndRefreshExtends(t *testing.T) {
	secret := "0123456789abcdef0123456789abcdef"
	s := startServer(t, "--auth", "jwt", "--jwt-secret", secret, "--jwt-leeway", "0s")
	mint := func(user string, ttl time.Duration) string {
		var out strings.Builder
		if err := runToken([]string{"--user", user, "--ttl", ttl.String()}, func(k string) string {
			if k == "PUSHGATE_JWT_SECRET" {
				return secret
			}
			return ""
		}, &out); err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(out.String())
	}
	ws := "ws://" + s.app.HTTPAddr() + "/ws?token="
	// Raw client: closed with 4101 when its token expires.
	short := dialWS(t, ws+mint("u1", 1500*time.Millisecond))
	if code := short.closeCode(); code != 4101 {
		t.Fatalf("close code = %d, want 4101", code)
	}
	// Envelope client: refreshes before expiry and stays.
	e := dialEnv(t, ws+mint("u2", 1500*time.Millisecond))
	e.send(map[string]any{"op": "refresh", "token": mint("u2", time.Hour), "ref": 1})
	if f := e.next(); f.Op != "refreshed" {
		t.Fatalf("refresh reply = %+v", f)
	}
	time.Sleep(2 * time.Second) // past the first token's expiry: the refreshed one holds
	s.api.SendToUser(context.Background(), &pb.SendToUserRequest{UserId: "u2", Message: textMsg("still here")})
	if m := e.nextMessage(); string(m.Data) != `"still here"` {
		t.Fatalf("after refresh: %+v", m)
	}
	if v := s.metric(t, `pushgate_connections_closed_total{reason="token_expired"}`); v != 1 {
		t.Fatalf("token_expired closes = %v, want 1", v)
	}
}

func TestRefreshWithNarrowerTopicsEndsSubscriptions(t *testing.T) {
	secret := "0123456789abcdef0123456789abcdef"
	s := startServer(t, "--auth", "jwt", "--jwt-secret", secret)
	mint := func(topics string) string {
		var out strings.Builder
		if err := runToken([]string{"--user", "u1", "--jwt-secret", secret, "--topics", topics}, func(string) string { return "" }, &out); err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(out.String())
	}
	e := dialEnv(t, "ws://"+s.app.HTTPAddr()+"/ws?token="+mint("store:1,store:2")+"&topics=store:1,store:2")
	if len(e.hello.Topics) != 2 {
		t.Fatalf("hello topics = %v", e.hello.Topics)
	}
	e.send(map[string]any{"op": "refresh", "token": mint("store:1"), "ref": 1})
	if f := e.next(); f.Op != "unsubscribed" || f.Topic != "store:2" || len(f.Ref) != 0 {
		t.Fatalf("want unsubscribed store:2, got %+v", f)
	}
	if f := e.next(); f.Op != "refreshed" {
		t.Fatalf("want refreshed, got %+v", f)
	}
	ctx := context.Background()
	for topic, want := range map[string]int64{"store:1": 1, "store:2": 0} {
		r, err := s.api.Publish(ctx, &pb.PublishRequest{Topic: topic, Message: jsonMsg(`{}`)})
		if err != nil || r.GetDeliveredConnections() != want {
			t.Fatalf("publish %s: %v %v, want %d", topic, r, err, want)
		}
	}
	// And it cannot join it again.
	e.send(map[string]any{"op": "subscribe", "topic": "store:2", "ref": 2})
	for {
		f := e.next()
		if f.Op == "message" {
			continue // the store:1 publish
		}
		if f.Op != "error" || f.Code != "forbidden" {
			t.Fatalf("resubscribe: %+v", f)
		}
		break
	}
}
