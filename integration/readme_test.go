//go:build integration

package integration

import (
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshrpc/mesh/internal/testkit"
)

// readmeRunCommands are the command lines of the README's Run section after
// `make run`: its second code block.
func readmeRunCommands(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, run, _ := strings.Cut(string(b), "\n## Run\n")
	run, _, _ = strings.Cut(run, "\n#")
	blocks := strings.Split(run, "```")
	if len(blocks) < 4 {
		t.Fatalf("the README's Run section has %d code blocks, want 2", len(blocks)/2)
	}
	var cmds []string
	for _, l := range strings.Split(strings.TrimSpace(blocks[3]), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			cmds = append(cmds, l)
		}
	}
	return cmds
}

// Every command the README's Run section tells a newcomer to try works
// against a fresh `make run`, as written.
func TestReadmeRunCommands(t *testing.T) {
	cmds := readmeRunCommands(t)
	if len(cmds) < 5 {
		t.Fatalf("found %d commands: %q", len(cmds), cmds)
	}
	run := exec.Command("make", "run")
	run.Dir = ".."
	run.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	log, err := os.Create(t.TempDir() + "/make-run.log")
	if err != nil {
		t.Fatal(err)
	}
	run.Stdout, run.Stderr = log, log
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-run.Process.Pid, syscall.SIGTERM) // the script and the meshd and services it started
		run.Wait()
	})
	testkit.WaitFor(t, 3*time.Minute, "make run up", func() bool {
		b, _ := os.ReadFile(log.Name())
		if !strings.Contains(string(b), "mesh is up") {
			return false
		}
		res, err := http.Get("http://127.0.0.1:21301/health")
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == 200
	})
	for _, c := range cmds {
		cmd := exec.Command("bash", "-c", c)
		cmd.Dir = ".."
		out, err := cmd.CombinedOutput()
		if err != nil {
			b, _ := os.ReadFile(log.Name())
			t.Fatalf("README command %q: %v\n%s\nmake run's log:\n%s", c, err, out, b)
		}
		t.Logf("README: %s: ok (%d bytes of output)", c, len(out))
	}
}
