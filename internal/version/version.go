// Package version says which build of pushgate is running: its version,
// the commit it was built from, when, and with which Go.
//
// The values come from the build information Go embeds in every binary
// (runtime/debug.ReadBuildInfo: the module version and the VCS stamp of
// "go build" in a git checkout). "make release" sets them explicitly with
// the linker, which wins:
//
//	go build -ldflags "-X pushgate/internal/version.version=0.1.0 \
//	  -X pushgate/internal/version.commit=$(git rev-parse HEAD) \
//	  -X pushgate/internal/version.date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
)

// Set with -ldflags "-X pushgate/internal/version.name=value"; empty means
// "take it from the build information".
var (
	version string
	commit  string
	date    string
)

// Unknown stands for a value the binary does not carry (go run, or a build
// outside a git checkout).
const Unknown = "unknown"

// Info describes one build.
type Info struct {
	Version   string // e.g. 0.1.0; "devel" for an unversioned build.
	Commit    string // full git commit hash, with "-dirty" if the tree had changes; or Unknown.
	Date      string // build (ldflags) or commit (VCS stamp) time, RFC 3339 UTC; or Unknown.
	GoVersion string // the Go toolchain, e.g. go1.26.8.
}

// Get returns this binary's build information.
func Get() Info {
	return get(version, commit, date, debug.ReadBuildInfo)
}

func get(v, c, d string, read func() (*debug.BuildInfo, bool)) Info {
	in := Info{Version: v, Commit: c, Date: d, GoVersion: runtime.Version()}
	bi, ok := read()
	if ok {
		if bi.GoVersion != "" {
			in.GoVersion = bi.GoVersion
		}
		if in.Version == "" {
			in.Version = bi.Main.Version
		}
		var rev, at string
		dirty := false
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.time":
				at = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if in.Commit == "" && rev != "" {
			in.Commit = rev
			if dirty {
				in.Commit += "-dirty"
			}
		}
		if in.Date == "" {
			in.Date = at
		}
	}
	// "(devel)" is what Go records for a build without a version (go run,
	// go build outside a tagged checkout before Go 1.24).
	in.Version = strings.TrimPrefix(in.Version, "v")
	if in.Version == "" || in.Version == "(devel)" {
		in.Version = "devel"
	}
	if in.Commit == "" {
		in.Commit = Unknown
	}
	if in.Date == "" {
		in.Date = Unknown
	}
	return in
}

// String is what "pushgate version" and "pushgate --version" print.
func (in Info) String() string {
	return fmt.Sprintf("pushgate %s\n  commit:     %s\n  build date: %s\n  go:         %s\n  platform:   %s/%s\n",
		in.Version, in.Commit, in.Date, in.GoVersion, runtime.GOOS, runtime.GOARCH)
}
