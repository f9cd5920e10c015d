package main

import (
	"bufio"
	"context"
	"debug/elf"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"pushgate/internal/version"
)

// "pushgate version" and "--version" print the same build description.
func TestVersionCommand(t *testing.T) {
	want := version.Get().String()
	for _, args := range [][]string{{"version"}, {"--version"}, {"--log-level", "debug", "-version"}} {
		var out strings.Builder
		if err := run(context.Background(), args, func(string) string { return "" }, &out, io.Discard); err != nil {
			t.Fatalf("%q: %v", args, err)
		}
		if out.String() != want {
			t.Errorf("%q printed %q, want %q", args, out.String(), want)
		}
	}
}

// The start-up log line and /metrics say which build runs.
func TestBuildInfoMetricAndLog(t *testing.T) {
	s := startServer(t)
	in := version.Get()
	resp, err := http.Get("http://" + s.app.HTTPAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var line string
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "pushgate_build_info{") {
			line = sc.Text()
		}
	}
	for _, want := range []string{`version="` + in.Version + `"`, `commit="` + in.Commit + `"`, `build_date="` + in.Date + `"`, `goversion="` + in.GoVersion + `"`} {
		if !strings.Contains(line, want) {
			t.Errorf("pushgate_build_info %q lacks %s", line, want)
		}
	}
	if !strings.HasSuffix(line, "} 1") {
		t.Errorf("pushgate_build_info %q is not 1", line)
	}
	eventually(t, "the start-up log line", func() bool { return strings.Contains(s.logs.String(), "pushgate started") })
	for _, l := range strings.Split(s.logs.String(), "\n") {
		if strings.Contains(l, "pushgate started") && !strings.Contains(l, "version="+in.Version) {
			t.Errorf("start-up line without the version: %s", l)
		}
	}
}

// "make release" for this machine's platform: a static binary that reports
// the newest version of CHANGELOG.md, the commit and the build date, and a
// SHA256SUMS file that sha256sum -c accepts (and that catches a changed
// binary). The other targets differ only in GOOS/GOARCH.
func TestMakeRelease(t *testing.T) {
	for _, tool := range []string{"make", "git", "sha256sum"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	root := deployRoot(t)
	dist := t.TempDir()
	target := runtime.GOOS + "/" + runtime.GOARCH
	cmd := exec.Command("make", "-C", root, "release", "RELEASE_TARGETS="+target, "DIST="+dist)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make release: %v\n%s", err, out)
	}
	changelog := deployRead(t, "CHANGELOG.md")
	m := regexp.MustCompile(`(?m)^## \[(\d+\.\d+\.\d+[^\]]*)\] - \d{4}-\d{2}-\d{2}$`).FindStringSubmatch(changelog)
	if m == nil {
		t.Fatal("CHANGELOG.md has no release heading (## [x.y.z] - yyyy-mm-dd)")
	}
	bin := filepath.Join(dist, "pushgate-"+m[1]+"-"+runtime.GOOS+"-"+runtime.GOARCH)

	f, err := elf.Open(bin)
	if err != nil {
		t.Fatalf("release binary: %v", err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("%s is dynamically linked (program header %v)", bin, p.Type)
		}
	}
	f.Close()

	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		t.Fatalf("%s version: %v", bin, err)
	}
	head, err := exec.Command("git", "-C", root, "rev-parse", "HEAD").Output()
	if err != nil {
		t.Fatal(err)
	}
	got := string(out)
	if !strings.HasPrefix(got, "pushgate "+m[1]+"\n") || !strings.Contains(got, "commit:     "+strings.TrimSpace(string(head))) {
		t.Errorf("%s version printed:\n%s\nwant version %s and commit %s", bin, got, m[1], head)
	}
	date := regexp.MustCompile(`build date: (\S+)`).FindStringSubmatch(got)
	if date == nil {
		t.Fatalf("no build date in:\n%s", got)
	}
	if at, err := time.Parse(time.RFC3339, date[1]); err != nil || time.Since(at) > time.Hour || time.Until(at) > time.Minute {
		t.Errorf("build date %q is not the time of the build (%v)", date[1], err)
	}

	check := exec.Command("sha256sum", "-c", "SHA256SUMS")
	check.Dir = dist
	if out, err := check.CombinedOutput(); err != nil {
		t.Fatalf("sha256sum -c SHA256SUMS: %v\n%s", err, out)
	}
	if err := os.WriteFile(bin, append(out, 0), 0o755); err != nil {
		t.Fatal(err)
	}
	check = exec.Command("sha256sum", "-c", "SHA256SUMS")
	check.Dir = dist
	if err := check.Run(); err == nil {
		t.Error("sha256sum -c accepts a changed binary: SHA256SUMS does not cover it")
	}
}
