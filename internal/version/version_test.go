package version

import (
	"runtime/debug"
	"strings"
	"testing"
)

func TestGet(t *testing.T) {
	stamped := &debug.BuildInfo{
		GoVersion: "go1.26.8",
		Main:      debug.Module{Path: "pushgate", Version: "v0.1.0"},
		Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "0123456789abcdef0123456789abcdef01234567"},
			{Key: "vcs.time", Value: "2026-12-01T10:00:00Z"},
			{Key: "vcs.modified", Value: "true"},
		},
	}
	read := func(bi *debug.BuildInfo) func() (*debug.BuildInfo, bool) {
		return func() (*debug.BuildInfo, bool) { return bi, bi != nil }
	}
	for _, tc := range []struct {
		name    string
		v, c, d string
		bi      *debug.BuildInfo
		want    Info
	}{
		{"build info only", "", "", "", stamped,
			Info{"0.1.0", "0123456789abcdef0123456789abcdef01234567-dirty", "2026-12-01T10:00:00Z", "go1.26.8"}},
		{"ldflags win", "0.2.0", "fedcba", "2026-12-03T12:00:00Z", stamped,
			Info{"0.2.0", "fedcba", "2026-12-03T12:00:00Z", "go1.26.8"}},
		{"go run", "", "", "", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}},
			Info{"devel", Unknown, Unknown, "go1.26.8"}},
	} {
		got := get(tc.v, tc.c, tc.d, read(tc.bi))
		if got != tc.want {
			t.Errorf("%s: got %+v, want %+v", tc.name, got, tc.want)
		}
	}
	if got := get("", "", "", read(nil)); got.Version != "devel" || got.Commit != Unknown || !strings.HasPrefix(got.GoVersion, "go") {
		t.Errorf("no build info: got %+v", got)
	}
}

func TestString(t *testing.T) {
	s := Info{"0.1.0", "abc", "2026-12-03T12:00:00Z", "go1.26.8"}.String()
	for _, want := range []string{"pushgate 0.1.0\n", "commit:     abc\n", "build date: 2026-12-03T12:00:00Z\n", "go:         go1.26.8\n", "platform:   "} {
		if !strings.Contains(s, want) {
			t.Errorf("String() = %q, want it to contain %q", s, want)
		}
	}
}
