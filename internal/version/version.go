package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Commit, if set at link time (-ldflags "-X
// github.com/meshrpc/mesh/internal/version.Commit=SHA", as mesh's scripts
// do through scripts/ldflags.sh), is the commit the binary was built from.
// Otherwise the toolchain's VCS stamp is used, when the build made one (not
// with -buildvcs=false, which this machine's GOFLAGS sets).
var Commit string

// String describes this build in one line, e.g.
// "meshd (devel) (commit 0123456789ab) go1.26.8"; "(commit unknown)" when
// neither Commit nor a VCS stamp says.
func String(program string) string {
	version, commit, when := Info()
	if len(commit) > 12 {
		commit = commit[:12]
	}
	if when != "" {
		when = ", " + when
	}
	return fmt.Sprintf("%s %s (commit %s%s) %s", program, version, commit, when, runtime.Version())
}

// Info is this build's module version ("(devel)" for a checkout), its
// commit ("unknown" when nothing says) and the commit's time ("" when
// unknown).
func Info() (version, commit, when string) {
	version, commit = "(devel)", "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				commit = s.Value
			case "vcs.time":
				when = s.Value
			}
		}
	}
	if Commit != "" {
		commit = Commit
	}
	return version, commit, when
}
