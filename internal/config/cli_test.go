package config

import (
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// Every flag of pushgate --help sits in exactly one section, and the
// sections are the ones an operator looks for.
func TestHelpSections(t *testing.T) {
	_, fs, _ := Load(nil, func(string) string { return "" }, io.Discard)
	in := map[string]string{}
	for _, s := range Sections {
		for _, name := range s.Flags {
			if fs.Lookup(name) == nil {
				t.Errorf("section %q lists --%s, which is not a flag", s.Title, name)
			}
			if prev, ok := in[name]; ok {
				t.Errorf("--%s is in sections %q and %q", name, prev, s.Title)
			}
			in[name] = s.Title
		}
	}
	fs.VisitAll(func(f *flag.Flag) {
		if in[f.Name] == "" {
			t.Errorf("--%s is in no section of --help: add it to config.Sections (internal/config/cli.go)", f.Name)
		}
	})
	var out strings.Builder
	Usage(&out, fs)
	last := -1
	for _, title := range []string{"Listeners:", "Client auth", "API auth", "Limits:", "Delivery:", "Engine:", "Operations:"} {
		i := strings.Index(out.String(), "\n"+title)
		if i < 0 || i < last {
			t.Errorf("--help: section %q missing or out of order", title)
		}
		last = i
	}
	if strings.Contains(out.String(), "\nOther:") {
		t.Errorf("--help has an Other section")
	}
}

// A bad value is refused with a message that names where it came from and
// what would do, and no help text after it.
func TestErrorsNameTheSourceAndHint(t *testing.T) {
	dir := t.TempDir()
	file := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want []string
		not  []string
	}{
		{"duration flag", []string{"--heartbeat-interval", "5"}, nil,
			[]string{`--heartbeat-interval "5"`, "a duration such as 5s"}, nil},
		{"duration flag with =", []string{"--write-timeout=soon"}, nil,
			[]string{`--write-timeout "soon"`, "a duration such as 5s"}, nil},
		{"number flag", []string{"--max-connections", "lots"}, nil,
			[]string{`--max-connections "lots"`, "a whole number"}, nil},
		{"boolean flag", []string{"--insecure=maybe"}, nil,
			[]string{`--insecure "maybe"`, "true or false"}, nil},
		{"flag without its value", []string{"--drain-window"}, nil,
			[]string{"--drain-window needs a value", "a duration such as 5s"}, nil},
		{"misspelt flag", []string{"--heartbeat-intervall", "5s"}, nil,
			[]string{"unknown flag --heartbeat-intervall", "did you mean --heartbeat-interval?"}, nil},
		{"enum from the environment", nil, map[string]string{"PUSHGATE_AUTH": "jtw"},
			[]string{`--auth must be none or jwt, got "jtw"`, "PUSHGATE_AUTH"}, nil},
		{"duration from the environment", nil, map[string]string{"PUSHGATE_HEARTBEAT_INTERVAL": "5"},
			[]string{`PUSHGATE_HEARTBEAT_INTERVAL="5"`, "--heartbeat-interval", "a duration such as 5s"}, nil},
		{"secret from the environment is not echoed", nil, map[string]string{"PUSHGATE_JWT_SECRET": "short-secret-xyz"},
			[]string{"--jwt-secret must be at least 32 bytes", "PUSHGATE_JWT_SECRET"}, []string{"short-secret-xyz"}},
		{"enum from the file", []string{"--config", file("a.yaml", "auth: jtw\n")}, nil,
			[]string{`--auth must be none or jwt, got "jtw"`, "--auth set by --config " + filepath.Join(dir, "a.yaml")}, nil},
		{"duration from the file", []string{"--config", file("b.yaml", "node-name: a\nheartbeat-interval: 5\n")}, nil,
			[]string{"line 2", `key "heartbeat-interval": "5"`, "a duration such as 5s"}, nil},
		{"the command line over the environment", []string{"--auth", "jtw"}, map[string]string{"PUSHGATE_AUTH": "none"},
			[]string{`--auth must be none or jwt, got "jtw"`}, []string{"PUSHGATE_AUTH"}},
	} {
		var out strings.Builder
		_, err := Parse(tc.args, func(k string) string { return tc.env[k] }, &out)
		if err == nil {
			t.Errorf("%s: accepted", tc.name)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not say %q", tc.name, err, w)
			}
		}
		for _, w := range tc.not {
			if strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q says %q", tc.name, err, w)
			}
		}
		if out.Len() > 0 || strings.Contains(err.Error(), "Usage") {
			t.Errorf("%s: the help was printed with the error:\n%s", tc.name, out.String())
		}
	}
}

// config print writes numbers and booleans as YAML numbers and booleans,
// and what it writes loads back to the same settings.
func TestPrintTypedYAML(t *testing.T) {
	args := []string{"--queue-max-messages", "42", "--insecure", "--upstream-rate", "0.5", "--grpc-rate", "1000000",
		"--node-name", "0777", "--heartbeat-interval", "15s", "--api-keys", "orders:0123456789abcdef-key"}
	c, fs, err := Load(args, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if err := Print(fs, &out); err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal([]byte(out.String()), &doc); err != nil {
		t.Fatalf("config print is not YAML: %v\n%s", err, out.String())
	}
	for key, want := range map[string]any{
		"queue-max-messages": 42, "insecure": true, "pprof": false, "upstream-rate": 0.5, "grpc-rate": 1000000,
		"node-name": "0777", "heartbeat-interval": "15s", "api-keys": "********", "allowed-origins": "",
	} {
		if doc[key] != want {
			t.Errorf("%s: printed %#v (%T), want %#v (%T)", key, doc[key], doc[key], want, want)
		}
	}
	p := filepath.Join(t.TempDir(), "printed.yaml")
	os.WriteFile(p, []byte(strings.ReplaceAll(out.String(), `'********'`, `""`)), 0o600)
	again, err := Parse([]string{"--config", p, "--api-keys", "orders:0123456789abcdef-key"}, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatalf("printed config does not load back: %v\n%s", err, out.String())
	}
	c.ConfigFile = p
	if again != c {
		t.Errorf("printed config loads back as\n%+v\nwant\n%+v", again, c)
	}
	if again.HeartbeatInterval != 15*time.Second || again.NodeName != "0777" || !again.Insecure {
		t.Errorf("loaded back: %+v", again)
	}
}

func TestHelpIsErrHelp(t *testing.T) {
	var out strings.Builder
	if _, err := Parse([]string{"-h"}, func(string) string { return "" }, &out); !errors.Is(err, flag.ErrHelp) || !strings.Contains(out.String(), "Listeners:") {
		t.Errorf("-h: err %v, printed %q", err, out.String())
	}
}
