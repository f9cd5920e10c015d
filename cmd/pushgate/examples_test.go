package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	pb "pushgate/gen/pushgate/v1"
)

// The payloads every example order service sends for its demo order.
const (
	examplePaid   = `{"type":1,"orderId":1786543212345678901,"content":"订单号: 20261122001"}`
	exampleRemind = `{"type":2,"orderId":1786543212345678901,"content":"顾客催单: 20261122001"}`
	exampleAPIKey = "examples-key-0123456789"
)

// What the examples need from Debian (`make deps` installs all of it).
const (
	aptJava   = "default-jdk-headless protobuf-compiler libprotobuf-dev protobuf-compiler-grpc-java-plugin libgrpc-java libprotobuf-java libnetty-java libperfmark-java libguava-java libgeronimo-annotation-1.3-spec-java"
	aptPython = "python3-grpcio python3-grpc-tools"
	aptNode   = "nodejs npm"
	aptCurl   = "curl"
)

// missingToolchain skips the test because something an example needs is not
// installed, except under CI (CI set), where that is a failure: `make deps`
// installs it. The same rule as redistest.Start.
func missingToolchain(t *testing.T, what, pkgs string) {
	t.Helper()
	msg := fmt.Sprintf("%s; `make deps` installs it (Debian packages: %s)", what, pkgs)
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// backendExample is one of the order services in examples/: prepare checks
// its toolchain, builds it, and returns how to run it.
type backendExample struct {
	name    string
	dir     string // under examples/
	prepare func(t *testing.T, dir string) (argv, env []string)
}

var backendExamples = []backendExample{
	{"java", "java-order-service", prepareJava},
	{"python", "python", preparePython},
	{"node", "node", prepareNode},
	{"go", "go", prepareGo},
	{"curl", "curl", prepareCurl},
}

// exampleWatchers are the examples' WatchEvents programs, by example.
var exampleWatchers = map[string][]string{
	"python": {"/usr/bin/python3", "watch_events.py"},
	"curl":   {"./watch-events.sh"},
}

// TestBackendExamples builds and runs the example order services against the
// real pushgate and checks, on a real WebSocket client, that the merchant
// gets each pop-up exactly once: live, again after a repeated run (the
// idempotency keys), and from the inbox after the service retried its way
// through a pushgate that was not up yet.
func TestBackendExamples(t *testing.T) {
	if os.Getenv("PUSHGATE_SKIP_EXAMPLES") == "1" {
		t.Skip("PUSHGATE_SKIP_EXAMPLES=1")
	}
	root, err := filepath.Abs(filepath.Join("..", "..", "examples"))
	if err != nil {
		t.Fatal(err)
	}
	for _, ex := range backendExamples {
		t.Run(ex.name, func(t *testing.T) {
			dir := filepath.Join(root, ex.dir)
			start := time.Now()
			argv, env := ex.prepare(t, dir)
			t.Logf("built in %v", time.Since(start).Round(time.Millisecond))

			t.Run("live", func(t *testing.T) { exampleLive(t, ex, dir, argv, env) })
			t.Run("offline and retried", func(t *testing.T) { exampleOffline(t, dir, argv, env) })
		})
	}
}

// exampleLive: with the merchant's page open, the service's two messages
// arrive byte-for-byte, and a second run of the same events delivers nothing.
func exampleLive(t *testing.T, ex backendExample, dir string, argv, env []string) {
	p := startProcess(t, "--api-keys", "examples:"+exampleAPIKey, "--presence-grace", "100ms")
	api := exampleAPI(t, p.grpcAddr)
	env = append(env, "PUSHGATE_GRPC_ADDR="+p.grpcAddr, "PUSHGATE_HTTP_URL=http://"+p.httpAddr, "PUSHGATE_API_KEY="+exampleAPIKey, "MERCHANT_ID=merchant-42")

	var watcher *exampleProc
	if argv, ok := exampleWatchers[ex.name]; ok {
		watcher = startExample(t, dir, env, argv...)
		watcher.waitLine(t, "watching online/offline events")
	}

	c := dialWS(t, "ws://"+p.httpAddr+"/ws/merchant-42")
	eventually(t, "merchant-42 online", func() bool {
		r, err := api.GetPresence(context.Background(), &pb.GetPresenceRequest{UserIds: []string{"merchant-42"}})
		return err == nil && r.GetUsers()[0].GetConnections() == 1
	})

	out := startExample(t, dir, env, argv...).wait(t)
	mustContain(t, out,
		"order.paid -> merchant-42: online=true delivered_connections=1 stored=true message_id=",
		"order.remind -> merchant-42: online=true delivered_connections=1 stored=true message_id=")
	c.expect(examplePaid)
	c.expect(exampleRemind)

	// The same events again: pushgate answers with the first responses and
	// sends nothing; the sentinel is the next thing the merchant gets.
	again := startExample(t, dir, env, argv...).wait(t)
	if first, second := messageIDs(out), messageIDs(again); len(first) != 2 || !slices.Equal(first, second) {
		t.Errorf("message ids of the second run %v, want those of the first %v\nfirst run:\n%s\nsecond run:\n%s", second, first, out, again)
	}
	exampleSentinel(t, api, "merchant-42")
	c.expect("sentinel")

	if watcher != nil {
		watcher.waitLine(t, " online merchant-42")
		c.c.Close(websocket.StatusNormalClosure, "")
		watcher.waitLine(t, " offline merchant-42")
	}
}

// exampleOffline: the service starts while pushgate is down, retries until
// it is up, reports the merchant offline (SMS fallback), and the merchant
// gets both messages from the inbox on connecting.
func exampleOffline(t *testing.T, dir string, argv, env []string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	grpcAddr := ln.Addr().String()
	ln.Close() // nothing listens here until pushgate starts below
	ln, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	httpAddr := ln.Addr().String()
	ln.Close()

	env = append(env, "PUSHGATE_GRPC_ADDR="+grpcAddr, "PUSHGATE_HTTP_URL=http://"+httpAddr, "PUSHGATE_API_KEY="+exampleAPIKey, "MERCHANT_ID=merchant-7")
	svc := startExample(t, dir, env, argv...)
	svc.waitLine(t, "order.paid: UNAVAILABLE (attempt 1 of ")
	p := startProcess(t, "--api-keys", "examples:"+exampleAPIKey, "--grpc-addr", grpcAddr, "--http-addr", httpAddr)

	out := svc.wait(t)
	mustContain(t, out,
		"order.paid -> merchant-7: online=false delivered_connections=0 stored=true message_id=",
		"order.remind -> merchant-7: online=false delivered_connections=0 stored=true message_id=",
		"merchant-7 is offline",
		"SMS")

	c := dialWS(t, "ws://"+p.httpAddr+"/ws/merchant-7")
	c.expect(examplePaid)
	c.expect(exampleRemind)
	exampleSentinel(t, exampleAPI(t, p.grpcAddr), "merchant-7")
	c.expect("sentinel")
}

func prepareJava(t *testing.T, dir string) ([]string, []string) {
	for _, tool := range []string{"java", "javac", "protoc"} {
		if _, err := exec.LookPath(tool); err != nil {
			missingToolchain(t, tool+" not found", aptJava)
		}
	}
	for _, f := range []string{"/usr/bin/grpc_java_plugin", "/usr/include/google/protobuf/duration.proto"} {
		if _, err := os.Stat(f); err != nil {
			missingToolchain(t, f+" not found", aptJava)
		}
	}
	// The jars the scripts put on the class path; classpath names the first
	// one missing.
	cp := exec.Command("sh", "-c", ". ./classpath-debian.sh && classpath runtime")
	cp.Dir = dir
	if out, err := cp.CombinedOutput(); err != nil {
		missingToolchain(t, fmt.Sprintf("the Java example's jars: %v: %s", err, strings.TrimSpace(string(out))), aptJava)
	}
	build := t.TempDir()
	env := []string{"BUILD_DIR=" + build}
	cmd := exec.Command("./build-debian.sh")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build-debian.sh: %v\n%s", err, out)
	}
	return []string{"./run-debian.sh"}, env
}

// prepareGo builds the Go example (part of this module).
func prepareGo(t *testing.T, dir string) ([]string, []string) {
	bin := filepath.Join(t.TempDir(), "order-service")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return []string{bin}, nil
}

func preparePython(t *testing.T, dir string) ([]string, []string) {
	if out, err := exec.Command("/usr/bin/python3", "-c", "import grpc, grpc_tools.protoc").CombinedOutput(); err != nil {
		lines := strings.Split(strings.TrimSpace(string(out)), "\n") // the last line says what is missing
		missingToolchain(t, fmt.Sprintf("/usr/bin/python3 cannot import grpc and grpc_tools: %v: %s", err, lines[len(lines)-1]), aptPython)
	}
	cmd := exec.Command("./gen.sh")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("gen.sh: %v\n%s", err, out)
	}
	// Byte-compiled files would land in the source tree: the run is short.
	return []string{"/usr/bin/python3", "order_service.py"}, []string{"PYTHONDONTWRITEBYTECODE=1"}
}

func prepareNode(t *testing.T, dir string) ([]string, []string) {
	if _, err := exec.LookPath("node"); err != nil {
		missingToolchain(t, "node not found", aptNode)
	}
	installed := true
	for _, pkg := range []string{"@grpc/grpc-js", "@grpc/proto-loader"} {
		if _, err := os.Stat(filepath.Join(dir, "node_modules", pkg, "package.json")); err != nil {
			installed = false
		}
	}
	if !installed {
		// npm installs the example's packages; without npm they cannot be.
		if _, err := exec.LookPath("npm"); err != nil {
			missingToolchain(t, "npm not found (examples/node has no node_modules to run without it)", aptNode)
		}
		cmd := exec.Command("npm", "ci", "--no-audit", "--no-fund", "--loglevel=error")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("npm ci in %s: %v\n%s", dir, err, out)
		}
	}
	return []string{"node", "order-service.mjs"}, nil
}

func prepareCurl(t *testing.T, dir string) ([]string, []string) {
	for _, tool := range []string{"bash", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			missingToolchain(t, tool+" not found", aptCurl)
		}
	}
	return []string{"./order-service.sh"}, nil
}

// exampleAPI is a PushService client that sends the examples' API key.
func exampleAPI(t *testing.T, addr string) pb.PushServiceClient {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			return invoker(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+exampleAPIKey), method, req, reply, cc, opts...)
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return pb.NewPushServiceClient(cc)
}

// exampleSentinel sends "sentinel" to the user: whatever the user receives
// before it was sent before it.
func exampleSentinel(t *testing.T, api pb.PushServiceClient, user string) {
	t.Helper()
	if _, err := api.SendToUser(context.Background(), &pb.SendToUserRequest{UserId: user, Message: textMsg("sentinel")}); err != nil {
		t.Fatal(err)
	}
}

var messageIDRE = regexp.MustCompile(`message_id=(\S+)`)

// messageIDs returns the message ids an example printed, in order.
func messageIDs(out string) []string {
	var ids []string
	for _, m := range messageIDRE.FindAllStringSubmatch(out, -1) {
		ids = append(ids, m[1])
	}
	return ids
}

func mustContain(t *testing.T, out string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
}

// exampleProc is an example program running as its own process, its stdout
// and stderr read line by line.
type exampleProc struct {
	argv   []string
	out    *syncBuffer
	lines  chan string
	exited chan error
}

func startExample(t *testing.T, dir string, env []string, argv ...string) *exampleProc {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", strings.Join(argv, " "), err)
	}
	p := &exampleProc{argv: argv, out: &syncBuffer{}, lines: make(chan string, 1024), exited: make(chan error, 1)}
	read := make(chan struct{})
	go func() {
		defer close(read)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			fmt.Fprintln(p.out, sc.Text())
			select {
			case p.lines <- sc.Text():
			default:
			}
		}
		io.Copy(io.Discard, pr)
	}()
	go func() {
		err := cmd.Wait()
		pw.Close()
		<-read
		p.exited <- err
	}()
	t.Cleanup(func() { cmd.Process.Kill() })
	return p
}

// waitLine waits for a line that contains s.
func (p *exampleProc) waitLine(t *testing.T, s string) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case line := <-p.lines:
			if strings.Contains(line, s) {
				return
			}
		case err := <-p.exited:
			p.exited <- err
			for {
				select {
				case line := <-p.lines:
					if strings.Contains(line, s) {
						return
					}
				default:
					t.Fatalf("%s exited (%v) without printing %q:\n%s", strings.Join(p.argv, " "), err, s, p.out)
				}
			}
		case <-deadline:
			t.Fatalf("%s did not print %q within 30s:\n%s", strings.Join(p.argv, " "), s, p.out)
		}
	}
}

// wait waits for the program to exit successfully and returns its output.
func (p *exampleProc) wait(t *testing.T) string {
	t.Helper()
	select {
	case err := <-p.exited:
		p.exited <- err
		if err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(p.argv, " "), err, p.out)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("%s still running after 60s:\n%s", strings.Join(p.argv, " "), p.out)
	}
	return p.out.String()
}
