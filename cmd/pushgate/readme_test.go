package main

import (
	"bufio"
	"context"

	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	pb "pushgate/gen/pushgate/v1"
)

// TestReadmeQuickstart runs the README's quickstart as written, against
// the binary with its defaults (only the two ports differ, so that tests
// can run side by side), and compares every output the README shows, with
// the values that change from run to run (times, message ids) masked.
func TestReadmeQuickstart(t *testing.T) {
	grpcurl := lookTool(t, "grpcurl")
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node is not installed (make deps installs it)")
	}
	blocks := readmeSection(t, "## Quickstart (3 minutes)")
	want := func(i int, lang, contains string) string {
		t.Helper()
		if i >= len(blocks) || blocks[i].lang != lang || !strings.Contains(blocks[i].text, contains) {
			t.Fatalf("README quickstart: code block %d is not the %s block with %q this test expects; update the test with the README", i, lang, contains)
		}
		return blocks[i].text
	}
	httpAddr, grpcAddr := freeAddr(t), freeAddr(t)
	local := strings.NewReplacer("127.0.0.1:8080", httpAddr, "127.0.0.1:9090", grpcAddr).Replace

	// 1. Start pushgate.
	want(0, "sh", "go run ./cmd/pushgate")
	logs := startReadmeServer(t, httpAddr, grpcAddr)
	compareOutput(t, "step 1 (the log)", local(want(1, "", "pushgate started")), logs)

	sh := func(cmd string) string {
		t.Helper()
		c := exec.Command("bash", "-c", cmd)
		c.Env = append(os.Environ(), "PATH="+filepath.Dir(grpcurl)+string(os.PathListSeparator)+os.Getenv("PATH"))
		out, err := c.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", cmd, err, out)
		}
		return string(out)
	}

	// 2. grpcurl list (the go install line is the pinned grpcurl here).
	list := commands(want(2, "sh", "grpcurl -plaintext 127.0.0.1:9090 list"))
	compareOutput(t, "step 2", want(3, "", "pushgate.v1.PushService"), sh(local(list[len(list)-1])))

	// 3. The Node.js client, left running.
	client := commands(want(4, "sh", "node --experimental-websocket"))[0]
	nodeOut := &syncBuffer{}
	nc := exec.Command("bash", "-c", local(client))
	nc.Env = append(os.Environ(), "PATH="+filepath.Dir(node)+string(os.PathListSeparator)+os.Getenv("PATH"))
	nc.Stdout, nc.Stderr = nodeOut, nodeOut
	if err := nc.Start(); err != nil {
		t.Fatal(err)
	}
	nodeDone := make(chan error, 1)
	go func() { nodeDone <- nc.Wait() }()
	t.Cleanup(func() { nc.Process.Kill() })
	api := exampleAPI(t, grpcAddr)
	eventually(t, "the Node.js client connected", func() bool {
		r, err := api.GetPresence(context.Background(), &pb.GetPresenceRequest{UserIds: []string{"merchant-42"}})
		return err == nil && r.GetUsers()[0].GetConnections() == 1
	})

	// 4. A new order, and the frame the client prints.
	compareOutput(t, "step 4", want(6, "json", `"online": true`), sh(local(commands(want(5, "sh", "SendToUser"))[0])))
	frame := strings.TrimSpace(want(7, "", `"orderId":1786543212345678901`))
	eventually(t, "the client printed the order", func() bool { return strings.Contains(nodeOut.String(), frame+"\n") })
	if first := strings.SplitN(nodeOut.String(), "\n", 2)[0]; first != frame {
		t.Errorf("step 4: the client printed %q first, the README shows %q", first, frame)
	}

	// 5. Someone offline.
	compareOutput(t, "step 5", want(9, "json", `"online": false`), sh(local(commands(want(8, "sh", "merchant-7"))[0])))

	// 6. The other calls: ListOnline and SendToUsers outputs are shown.
	calls := commands(want(10, "sh", "Disconnect"))
	if len(calls) != 5 {
		t.Fatalf("step 6 has %d commands, the test expects 5", len(calls))
	}
	outs := make([]string, len(calls))
	for i, c := range calls {
		outs[i] = sh(local(c))
	}
	compareOutput(t, "step 6 (ListOnline)", want(11, "json", `"users"`), outs[0])
	compareOutput(t, "step 6 (SendToUsers)", want(12, "json", `"results"`), outs[3])
	select {
	case <-nodeDone:
	case <-time.After(waitFor):
		t.Fatalf("the Node.js client did not end after Disconnect; it printed:\n%s", nodeOut)
	}
	lines := strings.Split(strings.TrimSpace(nodeOut.String()), "\n")
	if last := lines[len(lines)-1]; last != "closed 4100 logged out" {
		t.Errorf("after Disconnect the client printed %q last, the README says `closed 4100 logged out`", last)
	}
}

type mdBlock struct{ lang, text string }

// readmeSection returns the fenced code blocks of one README section, in
// order.
func readmeSection(t *testing.T, heading string) []mdBlock {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var blocks []mdBlock
	in, fence := false, false
	var cur mdBlock
	for _, line := range strings.Split(string(data), "\n") {
		switch {
		case !fence && strings.HasPrefix(line, "## "):
			in = line == heading
		case !in:
		case strings.HasPrefix(line, "```") && !fence:
			fence, cur = true, mdBlock{lang: strings.TrimPrefix(line, "```")}
		case strings.HasPrefix(line, "```"):
			fence = false
			blocks = append(blocks, cur)
		case fence:
			cur.text += line + "\n"
		}
	}
	if len(blocks) == 0 {
		t.Fatalf("README has no code blocks under %q", heading)
	}
	return blocks
}

// commands splits a shell block into its commands: comments and blank
// lines dropped, continued lines joined.
func commands(block string) []string {
	var cmds []string
	cur := ""
	for _, line := range strings.Split(block, "\n") {
		if cur == "" && (strings.TrimSpace(line) == "" || strings.HasPrefix(strings.TrimSpace(line), "#")) {
			continue
		}
		if strings.HasSuffix(line, "\\") {
			cur += strings.TrimSuffix(line, "\\")
			continue
		}
		cmds = append(cmds, cur+line)
		cur = ""
	}
	return cmds
}

var (
	maskTime        = regexp.MustCompile(`^time=\S+`)
	maskNode        = regexp.MustCompile(` node=\S+`)
	maskMessageID   = regexp.MustCompile(`"messageId": "[0-9A-HJKMNP-TV-Z]{26}"`)
	maskOnlineSince = regexp.MustCompile(`"onlineSince": "\d{4}-\d\d-\d\dT[0-9:.]+Z"`)
)

// compareOutput compares what a command printed with what the README
// shows, line by line, after masking what changes from run to run.
func compareOutput(t *testing.T, what, readme, got string) {
	t.Helper()
	mask := func(s string) string {
		lines := strings.Split(strings.TrimSpace(s), "\n")
		for i, l := range lines {
			l = maskTime.ReplaceAllString(l, "time=…")
			l = maskNode.ReplaceAllString(l, " node=…")
			l = maskMessageID.ReplaceAllString(l, `"messageId": "<id>"`)
			lines[i] = maskOnlineSince.ReplaceAllString(l, `"onlineSince": "<time>"`)
		}
		return strings.Join(lines, "\n")
	}
	if w, g := mask(readme), mask(got); w != g {
		t.Errorf("%s: the output differs from the README's\nREADME:\n%s\ngot:\n%s", what, w, g)
	}
}

// startReadmeServer starts the binary as the README does, with its text log
// and defaults, on the given addresses, and returns its log up to
// "pushgate started".
func startReadmeServer(t *testing.T, httpAddr, grpcAddr string) string {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "PUSHGATE_TEST_RUN_MAIN=1", "PUSHGATE_HTTP_ADDR="+httpAddr, "PUSHGATE_GRPC_ADDR="+grpcAddr)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	var mu sync.Mutex
	var log strings.Builder
	started := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		once := sync.Once{}
		for sc.Scan() {
			mu.Lock()
			log.WriteString(sc.Text() + "\n")
			mu.Unlock()
			if strings.Contains(sc.Text(), `msg="pushgate started"`) {
				once.Do(func() { close(started) })
			}
		}
	}()
	select {
	case <-started:
	case <-time.After(waitFor):
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("pushgate did not start:\n%s", log.String())
	}
	mu.Lock()
	defer mu.Unlock()
	return log.String()
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// lookTool finds a tool that `make tools` installs into .tools/bin, or on
// PATH.
func lookTool(t *testing.T, name string) string {
	t.Helper()
	if p := filepath.Join(repoRoot(t), ".tools", "bin", name); fileExists(p) {
		return p
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	t.Fatalf("%s is not installed: run `make tools` (it installs the pinned version into .tools/bin)", name)
	return ""
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
