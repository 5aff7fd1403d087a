package testconsul

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Agent is a running Consul dev agent.
type Agent struct {
	HTTPAddr string // host:port of its HTTP API
	args     []string
	bin      string
	dir      string
	cmd      *exec.Cmd
	t        testing.TB
}

// Binary returns the path of the Consul binary, building it if needed.
func Binary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("MESH_CONSUL_BIN"); p != "" {
		return p
	}
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	out, err := exec.Command(filepath.Join(root, "scripts", "tool.sh"), "consul").Output()
	if err != nil {
		t.Fatalf("building consul with scripts/tool.sh: %v", err)
	}
	return string(out[:len(out)-1])
}

// FreePorts returns n distinct TCP ports free on ip right now.
func FreePorts(t testing.TB, ip string, n int) []int {
	t.Helper()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", ip+":0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close() // held until all are picked, so none repeats
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// Start runs a dev agent and waits until it has a leader; extra are more
// agent arguments (e.g. "-hcl", "limits { ... }").
func Start(t testing.TB, extra ...string) *Agent {
	t.Helper()
	a := &Agent{t: t, bin: Binary(t), dir: t.TempDir()}
	// The ports are free when picked, but another test binary running at
	// the same time (go test runs packages in parallel) may take one before
	// the agent binds it: then the agent exits at once, and new ports go.
	for attempt := 0; ; attempt++ {
		p := FreePorts(t, "127.0.0.1", 4)
		port := func(i int) string { return strconv.Itoa(p[i]) }
		a.HTTPAddr = "127.0.0.1:" + port(0)
		a.args = []string{"agent", "-dev", "-bind", "127.0.0.1", "-client", "127.0.0.1",
			"-http-port", port(0), "-serf-lan-port", port(1), "-serf-wan-port", port(2), "-server-port", port(3),
			"-dns-port", "-1", "-grpc-port", "-1", "-grpc-tls-port", "-1", "-log-level", "warn", "-node", "mesh-test"}
		a.args = append(a.args, extra...)
		err := a.launch()
		if err == nil {
			break
		}
		if !errors.Is(err, errPortTaken) || attempt == 3 {
			t.Fatal(err)
		}
	}
	t.Cleanup(a.Kill)
	return a
}

var errPortTaken = errors.New("a port was taken before the agent bound it")

func (a *Agent) start() {
	a.t.Helper()
	if err := a.launch(); err != nil {
		a.t.Fatal(err)
	}
}

// launch runs the agent and waits until it has a leader.
func (a *Agent) launch() error {
	logPath := filepath.Join(a.dir, "consul.log")
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	a.cmd = exec.Command(a.bin, a.args...)
	a.cmd.Stdout, a.cmd.Stderr = log, log
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := a.cmd.Start(); err != nil {
		return fmt.Errorf("starting consul: %w", err)
	}
	exited, cmd := make(chan struct{}), a.cmd
	go func() { cmd.Wait(); close(exited) }()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			logText, _ := os.ReadFile(logPath)
			a.cmd = nil
			if strings.Contains(string(logText), "address already in use") {
				return errPortTaken
			}
			return fmt.Errorf("consul exited; its log:\n%s", logText)
		default:
		}
		resp, err := http.Get("http://" + a.HTTPAddr + "/v1/status/leader")
		if err == nil {
			var buf [64]byte
			n, _ := resp.Body.Read(buf[:])
			resp.Body.Close()
			if resp.StatusCode == 200 && n > 2 { // a quoted, non-empty leader address
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	logText, _ := os.ReadFile(logPath)
	return fmt.Errorf("consul did not elect a leader in 30s; its log:\n%s", logText)
}

// Kill stops the agent at once (SIGKILL).
func (a *Agent) Kill() {
	if a.cmd != nil && a.cmd.Process != nil {
		a.cmd.Process.Kill()
		a.cmd = nil
	}
}

// Restart starts the agent again on the same ports (a dev agent comes back
// empty, as after losing its state).
func (a *Agent) Restart() {
	a.t.Helper()
	a.Kill()
	time.Sleep(100 * time.Millisecond)
	a.start()
}

// PID is the running agent's process id (0 if it is not running).
func (a *Agent) PID() int {
	if a.cmd == nil || a.cmd.Process == nil {
		return 0
	}
	return a.cmd.Process.Pid
}

func (a *Agent) String() string { return fmt.Sprintf("consul dev agent at %s", a.HTTPAddr) }
