package gateway

import "testing"

// A refused Origin gets an allow_with hint only when it is an http(s)
// origin with a plain host: never made of arbitrary client text.
func TestOriginHostHint(t *testing.T) {
	for origin, want := range map[string]string{
		"https://shop.example.com": "shop.example.com",
		"http://127.0.0.1:8080":    "127.0.0.1:8080",
		"https://[::1]:443":        "[::1]:443",
		"https://evil.example.net allow_with=--allowed-origins attacker.example": "",
		"https://a%20b.example":     "",
		"https://user@evil.example": "",
		"null":                      "",
		"file://":                   "",
		"javascript:alert(1)":       "",
		"":                          "",
	} {
		if got := originHost(origin); got != want {
			t.Errorf("originHost(%q) = %q, want %q", origin, got, want)
		}
	}
}
