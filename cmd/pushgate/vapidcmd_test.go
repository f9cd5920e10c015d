package main

import (
	"bytes"
	"context"
	"regexp"
	"testing"

	"pushgate/internal/notify"
)

// TestVAPIDCommand: "pushgate vapid" prints a key pair whose public key
// is the one the private key gives.
func TestVAPIDCommand(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"vapid"}, func(string) string { return "" }, &out, &out); err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`^private key: ([A-Za-z0-9_-]{43})\npublic key:  ([A-Za-z0-9_-]{87})\n$`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("output %q", out.String())
	}
	v, err := notify.ParseVAPID(m[1], "mailto:ops@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if v.Public != m[2] {
		t.Fatalf("public key %s, the private key gives %s", m[2], v.Public)
	}
	if err := run(context.Background(), []string{"vapid", "extra"}, func(string) string { return "" }, &out, &out); err == nil {
		t.Fatal("an argument was accepted")
	}
}
