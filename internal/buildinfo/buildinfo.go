// Package buildinfo says which build of Salvo is running: the version stamped at link time, the commit and
// the Go version the toolchain recorded. `salvo version`, status and the metrics' build info all read it.
package buildinfo

import (
	"runtime/debug"
	"strings"
)

// Version is set at link time (-ldflags "-X github.com/salvovpn/salvo/internal/buildinfo.Version=...";
// the Makefile does it from git describe). A plain `go build` leaves "dev".
var Version = "dev"

// Info is what a build says about itself.
type Info struct {
	Version   string `json:"version"`
	Commit    string `json:"commit,omitempty"`   // "" when the build recorded no VCS information
	Modified  bool   `json:"modified,omitempty"` // the working tree had uncommitted changes
	GoVersion string `json:"go_version"`
}

// Read returns this binary's build information.
func Read() Info {
	info := Info{Version: Version}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return info
	}
	info.GoVersion = bi.GoVersion
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			info.Commit = s.Value
		case "vcs.modified":
			info.Modified = s.Value == "true"
		}
	}
	return info
}

// String is one line: "dev (commit 6276bed12345, modified) go1.26.0".
func (i Info) String() string {
	var b strings.Builder
	b.WriteString(i.Version)
	if i.Commit != "" {
		b.WriteString(" (commit ")
		b.WriteString(shortCommit(i.Commit))
		if i.Modified {
			b.WriteString(", modified")
		}
		b.WriteString(")")
	}
	if i.GoVersion != "" {
		b.WriteString(" ")
		b.WriteString(i.GoVersion)
	}
	return b.String()
}

func shortCommit(c string) string {
	if len(c) > 12 {
		return c[:12]
	}
	return c
}
