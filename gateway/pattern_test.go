package gateway

import (
	"path"
	"strings"
	"testing"
)

func TestUserPatterns(t *testing.T) {
	for _, tc := range []struct {
		pattern, id string
		want        bool
	}{
		{"*", "u", true},
		{"*", "shop/42", true},
		{"*", "a/b/c", true},
		{"merchant-*", "merchant-42", true},
		{"merchant-*", "merchant-4/2", true},
		{"merchant-*", "merchant", false},
		{"*-admin", "shop/1-admin", true},
		{"shop/?", "shop/1", true},
		{"shop?1", "shop/1", true},
		{"shop/[0-9]*", "shop/42/x", true},
		{"shop/[^0-9]*", "shop/42", false},
		{"a*b*c", "a/x/b/y/c", true},
		{"a*b*c", "a/x/b/y/d", false},
		{`\*`, "*", true},
		{`\*`, "x", false},
		{"用户-*", "用户-1", true},
		{"?", "用", true},
		{"exact", "exact", true},
		{"exact", "exactly", false},
		{"*a*a*a*a*a*a*a*b", strings.Repeat("a", 128), false}, // no blow-up
	} {
		if got := MatchUserPattern(tc.pattern, tc.id); got != tc.want {
			t.Errorf("MatchUserPattern(%q, %q) = %v, want %v", tc.pattern, tc.id, got, tc.want)
		}
	}
	for _, bad := range []string{"", "[", "[]", "[a", "[z-a]", "[a-]", `a\`, "[^]", "\xff"} {
		if err := ValidUserPattern(bad); err == nil {
			t.Errorf("ValidUserPattern(%q) accepted", bad)
		}
		if MatchUserPattern(bad, "a") || MatchUserPattern(bad, "[") {
			t.Errorf("bad pattern %q matched", bad)
		}
	}
	for _, good := range []string{"*", "a?c", "[a-z]*", `\[x\]`, "[]a]x"[2:], "-*"} {
		if err := ValidUserPattern(good); err != nil {
			t.Errorf("ValidUserPattern(%q): %v", good, err)
		}
	}
}

// Without '/', user patterns mean what path.Match says.
func FuzzUserPatternsAgreeWithPathMatch(f *testing.F) {
	for _, s := range [][2]string{{"*", "u"}, {"a*b?c", "axxbyc"}, {"[a-c]*", "b1"}, {`\*x`, "*x"}, {"[^a]", "b"}, {"*a*a*b", "aaab"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, id string) {
		if strings.Contains(pattern+id, "/") || pattern == "" {
			return
		}
		want, err := path.Match(pattern, id)
		if err != nil || ValidUserPattern(pattern) != nil {
			return // path.Match may not look at the rest of a pattern that fails early
		}
		if got := MatchUserPattern(pattern, id); got != want {
			t.Fatalf("MatchUserPattern(%q, %q) = %v, path.Match says %v", pattern, id, got, want)
		}
	})
}
