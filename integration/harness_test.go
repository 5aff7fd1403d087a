//go:build integration

package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meshrpc/mesh/client"
	"github.com/meshrpc/mesh/internal/testconsul"
	"github.com/meshrpc/mesh/internal/testkit"
)

var (
	binDir string // meshd, meshctl and the examples, built once
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "mesh-integration-bin")
	if err != nil {
		panic(err)
	}
	build := exec.Command("go", "build", "-ldflags", versionFlags(), "-o", dir+"/", "../cmd/meshd", "../cmd/meshctl", "../examples/echo", "../examples/kv", "../internal/benchpeer", "../internal/grpcpeer")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building binaries:", err)
		os.Exit(1)
	}
	os.Chmod(dir, 0o755) // tests run the examples as another user too
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// versionFlags link the checkout's commit into the binaries (--version), as
// scripts/ldflags.sh does for mesh's other builds.
func versionFlags() string {
	out, err := exec.Command("../scripts/ldflags.sh").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// inParallel runs f(0) to f(n-1) on 16 goroutines and waits for them (to
// fill a catalog quickly).
func inParallel(n int, f func(i int)) {
	work := make(chan int)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for i := range work {
				f(i)
			}
		})
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
}

// proc is a program the test started.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
}

func start(t testing.TB, name string, args ...string) *proc {
	t.Helper()
	return startAs(t, -1, name, args...)
}

// startAs is start with the process run as Unix user uid (-1: this one's).
func startAs(t testing.TB, uid int, name string, args ...string) *proc {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), filepath.Base(name)+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	path := name
	if !filepath.IsAbs(name) {
		path = filepath.Join(binDir, name)
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if uid >= 0 {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath}
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("--- log of %s %v:\n%s", name, args, lastLines(b, 30))
		}
	})
	return p
}

func lastLines(b []byte, n int) []byte {
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return bytes.Join(lines, []byte("\n"))
}

func (p *proc) kill() {
	if p.cmd.Process != nil {
		p.cmd.Process.Kill()
		p.cmd.Wait()
	}
}

// stop sends SIGTERM and waits for a clean exit.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s exited with %v after SIGTERM", p.name, err)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("%s did not exit within 15s of SIGTERM", p.name)
	}
}

// host is one meshd, standing for one machine.
type host struct {
	ip     string
	addr   string // TChannel, for apps
	peer   string // TChannel, for other meshds (mTLS from the agent's CA)
	admin  string // HTTP
	meshd  *proc
	consul string
}

func startHost(t testing.TB, ip, consulAddr string, extra ...string) *host {
	t.Helper()
	h := &host{ip: ip, consul: consulAddr}
	ports := testconsul.FreePorts(t, ip, 3)
	h.addr = net.JoinHostPort(ip, strconv.Itoa(ports[0]))
	h.admin = net.JoinHostPort(ip, strconv.Itoa(ports[1]))
	h.peer = net.JoinHostPort(ip, strconv.Itoa(ports[2]))
	h.launch(t, extra...)
	return h
}

func (h *host) launch(t testing.TB, extra ...string) {
	t.Helper()
	args := []string{"--listen", h.addr, "--admin", h.admin, "--consul", h.consul, "--node", "host-" + h.ip, "--log-level", "debug"}
	if h.consul != "off" { // a host of a mesh: other meshds call it on its host listener
		args = append(args, "--peer-listen", h.peer)
	}
	args = append(args, extra...)
	h.meshd = start(t, "meshd", args...)
	testkit.WaitFor(t, 10*time.Second, "meshd "+h.addr+" healthy", func() bool {
		resp, err := http.Get("http://" + h.admin + "/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

// meshctl runs the CLI and returns its stdout, stderr and exit code.
func meshctl(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	return meshctlEnv(t, nil, args...)
}

// meshctlEnv is meshctl with more environment.
func meshctlEnv(t *testing.T, env []string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "meshctl"), args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

func dial(t testing.TB, addr string) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, addr, client.Options{ServiceName: "integration", Logger: testkit.Quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func asError(err error, target **client.Error) bool { return errors.As(err, target) }
