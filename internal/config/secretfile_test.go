package config

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSecretFiles: each secret of offline push and of the event webhook
// can be read from a file; the value is checked like one given directly,
// with messages naming the -file flag and never the value; bad files and
// a secret given twice stop the start; config print shows the path, not
// the value.
func TestSecretFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	const hook = "q8V0e3s1vYxWm6Pz0TqfL2bA9rK7nC4dHj5u"
	const event = "k3Jq9Zr0-event-hook-secret-0cf7a1d4e2b8"
	const wx = "wx-secret-7f3a9c2e1b"
	const vapid = "vD3x9QpL0aZk2mN8rT5yW1uB7cE4fG6hJ0iK3lM9nO2"
	getenv := func(string) string { return "" }
	c, fs, err := Load([]string{
		"--notify-webhook-secret-file", write("hook", hook+"\n"),
		"--event-webhook-url", "http://127.0.0.1:9/e", "--event-webhook-secret-file", write("event", event+"\r\n"),
		"--wechat-app-id", "wx0123456789abcdef", "--wechat-app-secret-file", write("wx", wx),
		"--vapid-private-key-file", write("vapid", vapid+"\n\n"), "--vapid-subject", "mailto:ops@example.com",
	}, getenv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.WebhookSecret != hook || c.EventWebhookSecret != event || c.WeChatAppSecret != wx || c.VAPIDPrivateKey != vapid {
		t.Fatalf("read %q %q %q %q", c.WebhookSecret, c.EventWebhookSecret, c.WeChatAppSecret, c.VAPIDPrivateKey)
	}
	var out bytes.Buffer
	if err := Print(fs, &out); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{hook, event, wx, vapid} {
		if strings.Contains(out.String(), v) {
			t.Fatalf("config print shows a secret:\n%s", out.String())
		}
	}
	if !strings.Contains(out.String(), "notify-webhook-secret-file: "+filepath.Join(dir, "hook")) {
		t.Fatalf("config print does not show the file:\n%s", out.String())
	}
	// The environment works like the flags.
	env := map[string]string{"PUSHGATE_NOTIFY_WEBHOOK_SECRET_FILE": filepath.Join(dir, "hook")}
	if c, err := Parse(nil, func(k string) string { return env[k] }, io.Discard); err != nil || c.WebhookSecret != hook {
		t.Fatalf("from the environment: %q %v", c.WebhookSecret, err)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--notify-webhook-secret-file", write("weak", "change-me-change-me-change-me-change-me\n")},
			"--notify-webhook-secret-file (PUSHGATE_NOTIFY_WEBHOOK_SECRET_FILE) is a placeholder"},
		{[]string{"--notify-webhook-secret-file", write("short", "Xy7-short-4Kq\n")}, "--notify-webhook-secret-file must be at least 32 bytes"},
		{[]string{"--event-webhook-url", "http://127.0.0.1:9/e", "--event-webhook-secret-file", write("eshort", "Xy7-short-4Kq")},
			"--event-webhook-secret-file must be set, at least 32 bytes"},
		{[]string{"--wechat-app-id", "wx1", "--wechat-app-secret-file", write("wxweak", "aaaaaaaaaaaa")},
			"--wechat-app-secret-file (PUSHGATE_WECHAT_APP_SECRET_FILE) is made of fewer than 5 different characters"},
		{[]string{"--notify-webhook-secret-file", write("empty", "\n")}, "--notify-webhook-secret-file: " + filepath.Join(dir, "empty") + " is empty"},
		{[]string{"--notify-webhook-secret-file", filepath.Join(dir, "missing")}, "--notify-webhook-secret-file: open " + filepath.Join(dir, "missing")},
		{[]string{"--notify-webhook-secret-file", write("big", strings.Repeat("x", 64<<10+1))}, "is over 65536 bytes"},
		{[]string{"--notify-webhook-secret", hook, "--notify-webhook-secret-file", filepath.Join(dir, "hook")},
			"--notify-webhook-secret and --notify-webhook-secret-file are both set"},
	} {
		_, err := Parse(tc.args, getenv, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err = %v, want %q", tc.args, err, tc.want)
			continue
		}
		for _, secret := range []string{"change-me-change-me", "Xy7-short", "aaaaaaaaaaaa", hook} {
			if strings.Contains(err.Error(), secret) {
				t.Errorf("%v: the error shows the secret: %v", tc.args, err)
			}
		}
	}
}
