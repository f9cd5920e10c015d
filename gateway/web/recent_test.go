package web

import (
	"log/slog"
	"strings"
	"testing"
)

// Values in the recent-errors list are quoted unless they are plain words,
// so that what a client sent cannot pass for more attributes.
func TestRecentQuotesAttributes(t *testing.T) {
	r := NewRecent(slog.DiscardHandler, 10)
	log := slog.New(r).With("conn", "c1")
	log.Warn("websocket origin refused",
		"origin", "https://evil.example.net allow_with=--allowed-origins attacker.example",
		"host", "push.example.com:443", "n", 3, "empty", "",
		slog.Group("req", "path", "/ws", "ua", `a "quoted" b`),
		"user", "用户", "nl", "a\nb", "look", "x\u201d y", "a=b", "v")
	log.Warn("long", "v", strings.Repeat("x", 300))
	log.Info("not kept", "x", 1)

	got := r.Entries()
	if len(got) != 2 {
		t.Fatalf("%d entries, want 2", len(got))
	}
	want := `conn=c1 origin="https://evil.example.net allow_with=--allowed-origins attacker.example" host=push.example.com:443 n=3 empty="" ` +
		`req.path=/ws req.ua="a \"quoted\" b" user="\u7528\u6237" nl="a\nb" look="x\u201d y" "a=b"=v`
	if got[1].Attrs != want {
		t.Errorf("attrs\n got %s\nwant %s", got[1].Attrs, want)
	}
	if want := `conn=c1 v="` + strings.Repeat("x", maxAttrValue) + `\u2026"`; got[0].Attrs != want {
		t.Errorf("long value: %s", got[0].Attrs)
	}
}
