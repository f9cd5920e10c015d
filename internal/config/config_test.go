package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"pushgate/gateway"
)

func TestConfigFromFlagsAndEnvironment(t *testing.T) {
	env := map[string]string{
		"PUSHGATE_HEARTBEAT_INTERVAL": "5s",
		"PUSHGATE_QUEUE_MAX_MESSAGES": "77",
		"PUSHGATE_GRPC_ADDR":          "127.0.0.1:7000",
	}
	cfg, err := Parse([]string{"--grpc-addr", "127.0.0.1:7001"}, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HeartbeatInterval != 5*time.Second || cfg.QueueMessages != 77 {
		t.Fatalf("environment not applied: %+v", cfg)
	}
	if cfg.GRPCAddr != "127.0.0.1:7001" {
		t.Fatalf("flag must win over environment, got %s", cfg.GRPCAddr)
	}
	if cfg.HTTPAddr != "127.0.0.1:8080" || cfg.DrainWindow != 10*time.Second {
		t.Fatalf("defaults wrong: %+v", cfg)
	}

	_, err = Parse(nil, func(k string) string {
		if k == "PUSHGATE_WRITE_TIMEOUT" {
			return "soon"
		}
		return ""
	}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "PUSHGATE_WRITE_TIMEOUT") {
		t.Fatalf("bad env value: err = %v, want it to name the variable", err)
	}
	for _, args := range [][]string{{"--log-format", "xml"}, {"--queue-max-bytes", "0"}, {"--http-addr", "nohost"}, {"--nope"}, {"extra"}} {
		if _, err := Parse(args, func(string) string { return "" }, io.Discard); err == nil {
			t.Errorf("%v: accepted", args)
		}
	}
}

func TestHelpListsEveryOption(t *testing.T) {
	var out strings.Builder
	_, err := Parse([]string{"--help"}, func(string) string { return "" }, &out)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("err = %v", err)
	}
	// Every flag appears with its env var and default.
	help := out.String()
	_, fs, _ := Load(nil, func(string) string { return "" }, io.Discard)
	n := 0
	fs.VisitAll(func(f *flag.Flag) {
		n++
		i := strings.Index(help, "\n  --"+f.Name+" ")
		if i < 0 {
			i = strings.Index(help, "\n  --"+f.Name+"\n")
		}
		if i < 0 {
			t.Errorf("--%s is not in --help", f.Name)
			return
		}
		entry := help[i+1:]
		if j := strings.Index(entry[1:], "\n  --"); j >= 0 {
			entry = entry[:j+2]
		}
		if !strings.Contains(entry, "env: "+EnvName(f.Name)+"\n") || !strings.Contains(entry, "default: ") {
			t.Errorf("--%s: help entry without its default and env %s:\n%s", f.Name, EnvName(f.Name), entry)
		}
	})
	if n < 18 || !strings.Contains(help, "  --grpc-addr address\n        address for the gRPC API (backends)\n        default: 127.0.0.1:9090   env: PUSHGATE_GRPC_ADDR\n") {
		t.Fatalf("help lists %d flags:\n%s", n, help)
	}
}

func TestConfigFilePrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "pushgate.yaml")
	os.WriteFile(file, []byte(`# example
http-addr: 127.0.0.1:7001
grpc-addr: 127.0.0.1:7002
queue-max-messages: 11
allowed-origins: [a.example.com, "b.example.com"]
jwt-secret: "0123456789abcdef0123456789abcdef-file"
api-keys: orders:0123456789abcdef-file
drain-window: 3s
`), 0o600)
	env := map[string]string{"PUSHGATE_GRPC_ADDR": "127.0.0.1:7102", "PUSHGATE_DRAIN_WINDOW": "4s"}
	getenv := func(k string) string { return env[k] }
	cfg, err := Parse([]string{"--config", file, "--drain-window", "5s"}, getenv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ what, got, want string }{
		{"file over default", cfg.HTTPAddr, "127.0.0.1:7001"},
		{"env over file", cfg.GRPCAddr, "127.0.0.1:7102"},
		{"flag over env and file", cfg.DrainWindow.String(), "5s"},
		{"list from the file", cfg.AllowedOrigins, "a.example.com,b.example.com"},
		{"number from the file", fmt.Sprint(cfg.QueueMessages), "11"},
	} {
		if c.got != c.want {
			t.Errorf("%s: got %s, want %s", c.what, c.got, c.want)
		}
	}
	// PUSHGATE_CONFIG names the file too.
	cfg, err = Parse(nil, func(k string) string {
		if k == "PUSHGATE_CONFIG" {
			return file
		}
		return ""
	}, io.Discard)
	if err != nil || cfg.QueueMessages != 11 {
		t.Fatalf("PUSHGATE_CONFIG: %+v, %v", cfg.QueueMessages, err)
	}

	for _, bad := range []struct{ body, want string }{
		{"htp-addr: x\n", `unknown key "htp-addr"`},
		{"queue-max-messages: lots\n", `key "queue-max-messages"`},
		{"heartbeat-interval: {a: 1}\n", `key "heartbeat-interval"`},
		{"- not a mapping\n", "pushgate.yaml"},
	} {
		os.WriteFile(file, []byte(bad.body), 0o600)
		_, err := Parse([]string{"--config", file}, func(string) string { return "" }, io.Discard)
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%q: err = %v, want it to mention %s", bad.body, err, bad.want)
		}
	}
}

func TestUpstreamUserPatterns(t *testing.T) {
	getenv := func(string) string { return "" }
	cfg, err := Parse([]string{"--upstream-users", "*, merchant-*, shop/[0-9]*"}, getenv, io.Discard)
	if err != nil || cfg.UpstreamUsers != "*, merchant-*, shop/[0-9]*" {
		t.Fatalf("good patterns: %q, %v", cfg.UpstreamUsers, err)
	}
	for _, bad := range []string{"shop-[", `admin\`, "[z-a]"} {
		_, err := Parse([]string{"--upstream-users", "*," + bad}, getenv, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "--upstream-users") || !strings.Contains(err.Error(), fmt.Sprintf("%q", bad)) {
			t.Errorf("%q: err = %v, want one naming the flag and the pattern", bad, err)
		}
	}
}

// Values in the file are taken as written, not through their YAML type.
func TestConfigFileValuesAsWritten(t *testing.T) {
	file := filepath.Join(t.TempDir(), "pushgate.yaml")
	os.WriteFile(file, []byte(`
admin-password: 0777012345678901
jwt-secret: 01234567890123456789012345678901234
node-name: 2026-01-02
jwt-audience: 1e3
jwt-issuer: "0x10"
token-cookie: &c yes
redis-prefix: *c
allowed-origins: [0777, 'b.example.com', 2026-01-02]
queue-max-messages: 0x10
heartbeat-interval: ~
insecure: false
`), 0o600)
	getenv := func(string) string { return "" }
	cfg, fs, err := Load([]string{"--config", file}, getenv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ what, got, want string }{
		{"digits with a leading zero", cfg.AdminPassword, "0777012345678901"},
		{"a long number", cfg.JWTSecret, "01234567890123456789012345678901234"},
		{"a date", cfg.NodeName, "2026-01-02"},
		{"a float", cfg.JWTAudience, "1e3"},
		{"quoted", cfg.JWTIssuer, "0x10"},
		{"yes", cfg.TokenCookie, "yes"},
		{"an alias", cfg.RedisPrefix, "yes"},
		{"a list", cfg.AllowedOrigins, "0777,b.example.com,2026-01-02"},
		{"an int flag in hex", fmt.Sprint(cfg.QueueMessages), "16"},
		{"null keeps the default", cfg.HeartbeatInterval.String(), "25s"},
	} {
		if c.got != c.want {
			t.Errorf("%s: got %q, want %q", c.what, c.got, c.want)
		}
	}
	// What config print writes loads back to the same values.
	var out strings.Builder
	if err := Print(fs, &out); err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{`node-name: "2026-01-02"`, `jwt-audience: "1e3"`, `allowed-origins: 0777,b.example.com,2026-01-02`} {
		if !strings.Contains(out.String(), line+"\n") {
			t.Errorf("config print lacks %s:\n%s", line, out.String())
		}
	}
	printed := filepath.Join(t.TempDir(), "printed.yaml")
	var unmasked []string // the masked secrets left out
	for _, line := range strings.SplitAfter(out.String(), "\n") {
		if !strings.Contains(line, "********") {
			unmasked = append(unmasked, line)
		}
	}
	os.WriteFile(printed, []byte(strings.Join(unmasked, "")), 0o600)
	again, err := Parse([]string{"--config", printed}, getenv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if again.NodeName != cfg.NodeName || again.AllowedOrigins != cfg.AllowedOrigins || again.JWTIssuer != cfg.JWTIssuer {
		t.Errorf("config print does not load back: %+v", again)
	}

	for _, bad := range []struct{ body, want string }{
		{"node-name: a\nnode-name: b\n", `key "node-name" appears twice`},
		{"allowed-origins: [[a]]\n", `key "allowed-origins"`},
		{"? [a]\n: b\n", "keys are flag names"},
	} {
		os.WriteFile(file, []byte(bad.body), 0o600)
		_, err := Parse([]string{"--config", file}, getenv, io.Discard)
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%q: err = %v, want it to mention %s", bad.body, err, bad.want)
		}
	}
	for _, empty := range []string{"", "# only a comment\n", "~\n"} {
		os.WriteFile(file, []byte(empty), 0o600)
		if _, err := Parse([]string{"--config", file}, getenv, io.Discard); err != nil {
			t.Errorf("%q: %v", empty, err)
		}
	}
}

// Topic presence patterns are topic rules: a name, or a prefix and "*".
func TestTopicPresencePatterns(t *testing.T) {
	getenv := func(string) string { return "" }
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--topic-presence-events", "todo:*,bad topic"}, `--topic-presence-events: pattern "bad topic"`},
		{[]string{"--client-presence-topics", "a*b"}, `--client-presence-topics: pattern "a*b"`},
	} {
		if _, err := Parse(c.args, getenv, io.Discard); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: err = %v, want %q", c.args, err, c.want)
		}
	}
	c, err := Parse([]string{"--topic-presence-events", "todo:*, room", "--client-presence-topics", "*"}, getenv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if got := List(c.PresenceEvents); !slices.Equal(got, []string{"todo:*", "room"}) {
		t.Fatalf("--topic-presence-events = %q", got)
	}
}

func TestAdminPasswordLength(t *testing.T) {
	getenv := func(string) string { return "" }
	_, err := Parse([]string{"--admin-password", "elevenchars"}, getenv, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "--admin-password must be at least 12 characters") {
		t.Fatalf("11 characters: err = %v", err)
	}
	if err != nil && strings.Contains(err.Error(), "elevenchars") {
		t.Fatalf("the error shows the password: %v", err)
	}
	for _, ok := range []string{"twelve-chars", "长长的中文管理员密码口令"} {
		if _, err := Parse([]string{"--admin-password", ok}, getenv, io.Discard); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
}

func TestEventWebhookSettings(t *testing.T) {
	getenv := func(string) string { return "" }
	const good = "k3Jq9Zr0-event-hook-secret-0cf7a1d4e2b8"
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--event-webhook-url", "ftp://x/y", "--event-webhook-secret", good}, "--event-webhook-url must be an http:// or https:// URL"},
		{[]string{"--event-webhook-url", "http://127.0.0.1:9/e"}, "--event-webhook-secret must be set, at least 32 bytes"},
		{[]string{"--event-webhook-url", "http://127.0.0.1:9/e", "--event-webhook-secret", "change-me-change-me-change-me-change-me"}, "--event-webhook-secret (PUSHGATE_EVENT_WEBHOOK_SECRET) is a placeholder"},
		{[]string{"--event-webhook-url", "http://127.0.0.1:9/e", "--event-webhook-secret", good, "--event-webhook-kinds", "user_online,acks"}, `--event-webhook-kinds: unknown kind "acks"`},
		{[]string{"--event-webhook-url", "http://127.0.0.1:9/e", "--event-webhook-secret", good, "--event-webhook-queue", "0"}, "--event-webhook-queue and --event-webhook-timeout must be positive"},
		{[]string{"--event-log-max", "0"}, "--event-log-max and --event-log-retention must be positive"},
	} {
		_, err := Parse(c.args, getenv, io.Discard)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: err = %v, want %q", c.args, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "change-me-change") {
			t.Errorf("the error shows the secret: %v", err)
		}
	}
	c, err := Parse([]string{"--event-webhook-url", "https://hooks.example.com/e", "--event-webhook-secret", good, "--event-webhook-kinds", "message_acked,user_offline,topic_join,topic_leave"}, getenv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	kinds, _ := c.WebhookKinds()
	if !slices.Equal(kinds, []gateway.EventKind{gateway.EventMessageAcked, gateway.EventUserOffline, gateway.EventTopicJoin, gateway.EventTopicLeave}) {
		t.Fatalf("kinds = %v", kinds)
	}
	_, fs, err := Load([]string{"--event-webhook-url", "https://hooks.example.com/e", "--event-webhook-secret", good}, getenv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := Print(fs, &b); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), good) || !strings.Contains(b.String(), "event-webhook-secret:") {
		t.Fatalf("config print shows the webhook secret, or not the key:\n%s", b.String())
	}
}
