package main

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode"
)

// TestDocLinks checks every relative link in the repository's Markdown:
// the file (or directory) it names exists and, when it has a #fragment,
// the target has a heading (or an <a id>) with that anchor, computed as
// GitHub computes them.
func TestDocLinks(t *testing.T) {
	root := repoRoot(t)
	files := markdownFiles(t, root)
	anchors := map[string]map[string]bool{} // abs path -> anchors
	anchorsOf := func(path string) map[string]bool {
		if a, ok := anchors[path]; ok {
			return a
		}
		a := headingAnchors(t, path)
		anchors[path] = a
		return a
	}
	checked := 0
	for _, f := range files {
		for _, l := range markdownLinks(t, f) {
			target, frag, _ := strings.Cut(l.target, "#")
			dest := f
			if target != "" {
				dest = filepath.Join(filepath.Dir(f), filepath.FromSlash(target))
				if _, err := os.Stat(dest); err != nil {
					t.Errorf("%s:%d: link to %q: no such file", rel(root, f), l.line, l.target)
					continue
				}
			}
			checked++
			if frag == "" || !strings.HasSuffix(dest, ".md") {
				continue
			}
			if !anchorsOf(dest)[frag] {
				t.Errorf("%s:%d: link to %q: %s has no heading with anchor #%s", rel(root, f), l.line, l.target, rel(root, dest), frag)
			}
		}
	}
	if checked < 50 {
		t.Fatalf("only %d relative links found in %d files: the scan is broken", checked, len(files))
	}
}

func repoRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		abs, err := filepath.Abs("../..")
		if err != nil {
			t.Fatal(err)
		}
		return abs
	}
	return strings.TrimSpace(string(out))
}

func markdownFiles(t *testing.T, root string) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case "node_modules", ".git", ".tools", "gen", "test-artifacts", "dist":
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(p, ".md") {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func rel(root, p string) string {
	if r, err := filepath.Rel(root, p); err == nil {
		return r
	}
	return p
}

type mdLink struct {
	line   int
	target string
}

var (
	inlineLink = regexp.MustCompile(`\]\(([^)\s]+)(?:\s+"[^"]*")?\)`)
	refLink    = regexp.MustCompile(`^\s*\[[^\]]+\]:\s*(\S+)`)
	codeSpan   = regexp.MustCompile("`[^`]*`")
)

// markdownLinks returns the relative links of a Markdown file, outside
// fenced code blocks and code spans.
func markdownLinks(t *testing.T, path string) []mdLink {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var links []mdLink
	var fence fences
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if fence.code(line) {
			continue
		}
		line = codeSpan.ReplaceAllString(line, "")
		var targets []string
		for _, m := range inlineLink.FindAllStringSubmatch(line, -1) {
			targets = append(targets, m[1])
		}
		if m := refLink.FindStringSubmatch(line); m != nil {
			targets = append(targets, m[1])
		}
		for _, tg := range targets {
			tg = strings.Trim(tg, "<>")
			if strings.Contains(tg, "://") || strings.HasPrefix(tg, "mailto:") {
				continue
			}
			links = append(links, mdLink{n, tg})
		}
	}
	return links
}

// fences tracks fenced code blocks line by line.
type fences struct{ open string }

// code reports whether line is inside a fenced block or is a fence.
func (f *fences) code(line string) bool {
	trimmed := strings.TrimSpace(line)
	if fc := fenceOf(trimmed); fc != "" {
		switch {
		case f.open == "":
			f.open = fc
		case strings.HasPrefix(fc, f.open) && strings.TrimLeft(trimmed, string(f.open[0])) == "":
			f.open = ""
		}
		return true
	}
	return f.open != ""
}

func fenceOf(trimmed string) string {
	for _, c := range []string{"```", "~~~"} {
		if strings.HasPrefix(trimmed, c) {
			return trimmed[:len(trimmed)-len(strings.TrimLeft(trimmed, c[:1]))]
		}
	}
	return ""
}

var anchorTag = regexp.MustCompile(`<a\s+(?:id|name)="([^"]+)"`)

// headingAnchors returns the anchors GitHub makes for a Markdown file's
// headings (lower case; letters, digits, "-" and "_" kept; spaces become
// "-"; a repeated one gets -1, -2, ...), and those of <a id="..."> tags.
func headingAnchors(t *testing.T, path string) map[string]bool {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]bool{}
	seen := map[string]int{}
	var fence fences
	for _, line := range strings.Split(string(data), "\n") {
		if fence.code(line) {
			continue
		}
		for _, m := range anchorTag.FindAllStringSubmatch(line, -1) {
			anchors[m[1]] = true
		}
		if !strings.HasPrefix(line, "#") {
			continue
		}
		text := strings.TrimSpace(strings.TrimLeft(line, "#"))
		slug := slugify(text)
		if n := seen[slug]; n > 0 {
			anchors[slug+"-"+strconv.Itoa(n)] = true
		} else {
			anchors[slug] = true
		}
		seen[slug]++
	}
	return anchors
}

func slugify(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(heading) {
		switch {
		case unicode.IsLetter(r) || unicode.IsDigit(r) || r == '-' || r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteByte('-')
		}
	}
	return b.String()
}
