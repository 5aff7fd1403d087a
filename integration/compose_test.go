//go:build integration

package integration

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// script runs one of scripts/ (images.sh, compose.sh) and fails the test loudly
// when Docker cannot do it: these tests are never skipped.
func script(t *testing.T, name string, args ...string) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	cmd := exec.Command(filepath.Join(filepath.Dir(file), "..", "scripts", name), args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("scripts/%s %v: %v\n%s", name, args, err, lastLines(out, 40))
	}
	return string(out)
}

// The three-host mesh of deploy/compose.yaml comes up from locally built
// images and routes calls between its hosts.
func TestComposeMesh(t *testing.T) {
	if out, err := exec.Command("docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		t.Fatalf("the Docker engine is not usable here, so the container tests cannot run: %v: %s", err, out)
	}
	begin := time.Now()
	script(t, "images.sh")
	t.Logf("images built in %v", time.Since(begin).Round(time.Second))
	begin = time.Now()
	t.Cleanup(func() { script(t, "compose.sh", "down") })
	script(t, "compose.sh", "up")
	t.Logf("compose mesh healthy in %v", time.Since(begin).Round(time.Second))

	// echo runs on host2 and kv on host3; call both from every host.
	for _, via := range []string{"127.0.0.1:21301", "127.0.0.1:21302", "127.0.0.1:21303"} {
		waitFor(t, 30*time.Second, "echo and kv visible via "+via, func() bool {
			out, _, code := meshctl(t, "services", "--via", via)
			return code == 0 && strings.Contains(out, `"echo"`) && strings.Contains(out, `"kv"`)
		})
		out, errOut, code := meshctl(t, "call", "echo", "echo", "hi from "+via, "--raw", "--via", via)
		if code != 0 || strings.TrimSpace(out) != "hi from "+via {
			t.Fatalf("echo via %s: %q %q", via, out, errOut)
		}
		if _, errOut, code := meshctl(t, "call", "kv", "put", `{"key":"k","value":"`+via+`"}`, "--via", via); code != 0 {
			t.Fatalf("kv put via %s: %s", via, errOut)
		}
	}
	out, _, _ := meshctl(t, "instances", "kv", "--via", "127.0.0.1:21301")
	if !strings.Contains(out, "10.89.0.13:21300") {
		t.Fatalf("kv should be registered at host3's meshd: %s", out)
	}
}
