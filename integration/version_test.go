//go:build integration

package integration

import (
	"os/exec"
	"strings"
	"testing"
)

// meshd --version and meshctl --version name the commit they were built
// from (the binaries here are built by go build in this checkout).
func TestVersionNamesTheCommit(t *testing.T) {
	commit := "unknown" // not a git checkout: nothing to stamp
	if head, err := exec.Command("git", "rev-parse", "HEAD").Output(); err == nil {
		commit = strings.TrimSpace(string(head))[:12]
	}
	for _, bin := range []string{"meshd", "meshctl"} {
		out, err := exec.Command(binDir+"/"+bin, "--version").CombinedOutput()
		if err != nil {
			t.Fatalf("%s --version: %v\n%s", bin, err, out)
		}
		t.Logf("%s", strings.TrimSpace(string(out)))
		if !strings.HasPrefix(string(out), bin+" ") || !strings.Contains(string(out), "(commit "+commit) {
			t.Fatalf("%s --version printed %q, want the commit %s", bin, out, commit)
		}
	}
}
