package secret

import (
	"strings"
	"testing"
)

func TestWeak(t *testing.T) {
	for _, tc := range []struct {
		value string
		weak  bool
	}{
		// The placeholders deploy/ and examples/ used to ship.
		{"change-me-jwt-secret-at-least-32-bytes-long", true},
		{"change-me-orders-api-key", true},
		{"change-me-0123456789", true},
		{"change-me", true},
		{"CHANGE_ME_PLEASE_0123456789abcdef", true},
		{"ChangeMe0123456789abcdefghijklmnop", true},
		{"replace.me.with.a.real.secret.0123", true},
		{"<placeholder-0123456789abcdef>", true},
		// No variety.
		{strings.Repeat("s", 32), true},
		{strings.Repeat("ab", 16), true},
		{strings.Repeat("0123", 8), true},
		// Real-looking values.
		{"0123456789abcdef0123456789abcdef", false},
		{"orders-key-0123456789abcdef", false},
		{"q8V0e3s1vYxWm6Pz0TqfL2bA9rK7nC4dHj5uGyE1oIw=", false},
		{"3f9c2a7b1e8d4c6f", false},
		{"hunter2hunter2", false},
	} {
		why := Weak(tc.value)
		if (why != "") != tc.weak {
			t.Errorf("Weak(%q) = %q, want weak %v", tc.value, why, tc.weak)
		}
		if why != "" && len(tc.value) > 12 && strings.Contains(why, tc.value) {
			t.Errorf("Weak(%q) quotes the value: %q", tc.value, why)
		}
	}
}
