package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"regexp"
	"strings"
	"testing"

	"pushgate/internal/config"
)

// Every flag of pushgate --help has a row in the configuration table
// (docs/configuration.md), with its variable and default.
func TestConfigurationTable(t *testing.T) {
	section := deployRead(t, "docs/configuration.md")
	type row struct{ env, def string }
	rows := map[string]row{}
	re := regexp.MustCompile("(?m)^\\| `--([a-z0-9-]+)` \\| `([A-Z0-9_]+)` \\| ([^|]+) \\|")
	for _, m := range re.FindAllStringSubmatch(section, -1) {
		rows[m[1]] = row{m[2], strings.Trim(strings.TrimSpace(m[3]), "`")}
	}
	var help strings.Builder
	if err := run(context.Background(), []string{"--help"}, func(string) string { return "" }, &help, io.Discard); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help: %v", err)
	}
	_, fs, _ := config.Load(nil, func(string) string { return "" }, io.Discard)
	for _, m := range regexp.MustCompile(`(?m)^  --([a-z0-9-]+)`).FindAllStringSubmatch(help.String(), -1) {
		name := m[1]
		r, ok := rows[name]
		if !ok {
			t.Errorf("--%s is in pushgate --help but not in docs/configuration.md's table: add a row | `--%s` | `%s` | default | meaning |",
				name, name, config.EnvName(name))
			continue
		}
		if r.env != config.EnvName(name) {
			t.Errorf("docs/configuration.md's table gives --%s the variable %s, want %s", name, r.env, config.EnvName(name))
		}
		def := fs.Lookup(name).DefValue
		if def == "" {
			def = `""`
		}
		if name != "node-name" && r.def != def {
			t.Errorf("docs/configuration.md's table gives --%s the default %s, want %s", name, r.def, def)
		}
		delete(rows, name)
	}
	for name := range rows {
		t.Errorf("docs/configuration.md's table has --%s, which pushgate --help does not list", name)
	}
}

// pushgate config --help and pushgate token --help work, in the same
// --flag style as pushgate --help, and token names its key settings when
// it has none.
func TestSubcommandHelp(t *testing.T) {
	noEnv := func(string) string { return "" }
	for _, args := range [][]string{{"config", "--help"}, {"config", "print", "--help"}, {"token", "--help"}, {"--help"}} {
		var out strings.Builder
		err := run(context.Background(), args, noEnv, &out, io.Discard)
		if !errors.Is(err, flag.ErrHelp) {
			t.Errorf("%q: err = %v, want the help", args, err)
		}
		if !strings.HasPrefix(out.String(), "Usage: pushgate") {
			t.Errorf("%q printed:\n%s", args, out.String())
		}
		if regexp.MustCompile(`(?m)^\s+-[a-z]`).MatchString(out.String()) {
			t.Errorf("%q uses -flag; want --flag:\n%s", args, out.String())
		}
	}
	var out strings.Builder
	run(context.Background(), []string{"token", "--help"}, noEnv, &out, io.Discard)
	for _, want := range []string{"  --user id\n", "  --jwt-secret secret\n", "env: PUSHGATE_JWT_SECRET\n", "  --ttl duration\n", "default: 1h0m0s\n"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("token --help lacks %q:\n%s", want, out.String())
		}
	}
	// A secret in the environment is not shown as a default.
	out.Reset()
	secret := "0123456789abcdef0123456789abcdef-env"
	run(context.Background(), []string{"token", "--help"}, func(k string) string {
		if k == "PUSHGATE_JWT_SECRET" {
			return secret
		}
		return ""
	}, &out, io.Discard)
	if strings.Contains(out.String(), secret) {
		t.Errorf("token --help shows the secret from PUSHGATE_JWT_SECRET")
	}

	err := run(context.Background(), []string{"token", "--user", "alice"}, noEnv, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "--jwt-secret") || !strings.Contains(err.Error(), "PUSHGATE_JWT_SECRET") {
		t.Errorf("token without a key: err = %v, want it to name --jwt-secret and PUSHGATE_JWT_SECRET", err)
	}
	err = run(context.Background(), []string{"token", "--user", "alice", "--ttl", "5"}, noEnv, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), `--ttl "5"`) || !strings.Contains(err.Error(), "a duration such as 5s") {
		t.Errorf("token --ttl 5: err = %v", err)
	}
	err = run(context.Background(), []string{"config"}, noEnv, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "pushgate config print") {
		t.Errorf("config alone: err = %v", err)
	}
}

// --node-name is the name every log line carries.
func TestNodeNameInLogs(t *testing.T) {
	cfg, err := config.Parse([]string{"--node-name", "edge-7", "--log-format", "json"}, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	log, err := newLogger(cfg, &buf)
	if err != nil {
		t.Fatal(err)
	}
	log.Info("hello", slog.Int("n", 1))
	if !strings.Contains(buf.String(), `"node":"edge-7"`) {
		t.Errorf("log line without the node name: %s", buf.String())
	}
}
