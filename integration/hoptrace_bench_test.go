//go:build integration

package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshrpc/mesh/internal/loadgen"
	"github.com/meshrpc/mesh/internal/schedtrace"
	"github.com/meshrpc/mesh/internal/testconsul"
	"github.com/meshrpc/mesh/internal/testkit"
)

// BenchmarkHopTrace is where one meshd's hop waits, from its runtime
// trace (/debug/pprof/trace, 2 s in the middle of the run): at 1, 32 and
// 256 callers (meshctl bench through meshd's Unix socket to an echo
// attached the same way, 1 KiB), per call, the wake-ups of goroutines
// waiting on a socket (read loops, by the poller) and on anything else
// (hand-offs: a write loop a read loop readied), how long a handed-off
// goroutine then waited for the processor, and how often and how much
// meshd's processors sat idle, each idle spell a thread put to sleep and
// woken; calls/s is meshd's while traced (tracing slows it). docs/PERFORMANCE.md
// reads them. Run it once per case: -benchtime 1x.
func BenchmarkHopTrace(b *testing.B) {
	for _, c := range []int{1, 32, 256} {
		b.Run(fmt.Sprintf("c=%d", c), func(b *testing.B) { hopTrace(b, c) })
	}
}

func hopTrace(b *testing.B, conc int) {
	const warmup, run, window = time.Second, 5 * time.Second, 2 * time.Second
	sock := filepath.Join(b.TempDir(), "meshd.sock")
	ports := testconsul.FreePorts(b, "127.0.0.1", 2)
	listen := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
	admin := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[1]))
	meshd := start(b, "meshd", "--listen", listen, "--listen-unix", sock, "--admin", admin, "--pprof", "on", "--consul", "off")
	defer meshd.kill()
	listening(b, "unix", sock)
	target := "unix:" + sock
	echo := start(b, "echo", "--via", target)
	defer echo.kill()
	body := strings.Repeat("x", 1<<10)
	testkit.WaitFor(b, 10*time.Second, "echo answering through meshd", func() bool {
		return exec.Command(filepath.Join(binDir, "meshctl"), "call", "echo", "echo", body, "--raw", "--via", target, "--timeout", "1s").Run() == nil
	})
	cmd := exec.Command(filepath.Join(binDir, "meshctl"), "bench", "echo", "echo", body, "--via", target,
		"-c", strconv.Itoa(conc), "-d", run.String(), "--warmup", warmup.String(), "-o", "json")
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	time.Sleep(warmup + time.Second)
	before := relayed(b, admin)
	res, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/trace?seconds=%d", admin, int(window.Seconds())))
	if err != nil {
		b.Fatal(err)
	}
	s, err := schedtrace.Read(res.Body)
	res.Body.Close()
	if err != nil {
		b.Fatalf("meshd's trace: %v", err)
	}
	calls := float64(relayed(b, admin) - before) // in the window: tracing slows meshd down
	if calls == 0 {
		b.Fatal("meshd relayed no call while traced")
	}
	if err := cmd.Wait(); err != nil {
		b.Fatalf("the caller: %v: %s %s", err, out.String(), errOut.String())
	}
	var r loadgen.Result
	if err := json.Unmarshal(out.Bytes(), &r); err != nil || r.Errors > 0 || r.Calls == 0 {
		b.Fatalf("%v; %s %s", err, out.String(), errOut.String())
	}
	b.ReportMetric(calls/s.Span.Seconds(), "calls/s")
	b.ReportMetric(float64(s.Wakes["network"])/calls, "socket-wakes/call")
	b.ReportMetric(float64(s.WakesExcept("network"))/calls, "handoffs/call")
	b.ReportMetric(float64(s.RunnableQuantile("select", 0.5).Nanoseconds())/1e3, "handoff-wait-p50-µs")
	b.ReportMetric(100*s.IdleShare(), "idle-%")
	b.ReportMetric(float64(s.IdlePeriods)/calls, "idle-spells/call")
}

// relayed is how many calls the meshd at admin has relayed (/status).
func relayed(b *testing.B, admin string) int64 {
	res, err := http.Get("http://" + admin + "/status")
	if err != nil {
		b.Fatal(err)
	}
	defer res.Body.Close()
	var st struct {
		Relayed int64 `json:"calls_relayed"`
	}
	if err := json.NewDecoder(res.Body).Decode(&st); err != nil {
		b.Fatal(err)
	}
	return st.Relayed
}
