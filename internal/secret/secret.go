// Package secret recognises values that must not be used as secrets: the
// placeholders that examples and deployment files ship, and values with
// almost no variety. The JWT secret, API keys and the admin password are
// checked with it at start; each has its own minimum length besides.
package secret

import (
	"fmt"
	"strings"
	"unicode"
)

// placeholders are the markers of a value meant to be replaced, compared
// with the value lower-cased and stripped of everything but letters and
// digits (so change-me, CHANGE_ME and changeme all match).
var placeholders = []string{"changeme", "replaceme", "placeholder"}

// minDistinct is the fewest different characters a secret may be made of:
// fewer (aaaa…, abab…, 1212…) is a pattern, not a secret. A random key of
// 16 hex digits has fewer than 5 with a probability under one in a million.
const minDistinct = 5

// Weak says why s is not fit to be a secret, or "" if nothing is wrong
// with it: it holds a placeholder marker such as change-me, or it is made
// of fewer than 5 different characters. The reason names the marker
// found, never the rest of s.
func Weak(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		if unicode.IsLetter(r) || unicode.IsDigit(r) {
			b.WriteRune(r)
		}
	}
	for _, p := range placeholders {
		if strings.Contains(b.String(), p) {
			return fmt.Sprintf("is a placeholder (it contains %q)", p)
		}
	}
	distinct := map[rune]bool{}
	for _, r := range s {
		distinct[r] = true
	}
	if len(distinct) < minDistinct {
		return fmt.Sprintf("is made of fewer than %d different characters", minDistinct)
	}
	return ""
}
