//go:build integration

package integration

import (
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/meshrpc/mesh/internal/schedtrace"
	"github.com/meshrpc/mesh/internal/testconsul"
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
	c := startLoad(b, meshctlBench(b, target, conc, warmup, run))
	time.Sleep(warmup + time.Second)
	before := statusAt(b, admin).Relayed
	res, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/trace?seconds=%d", admin, int(window.Seconds())))
	if err != nil {
		b.Fatal(err)
	}
	s, err := schedtrace.Read(res.Body)
	res.Body.Close()
	if err != nil {
		b.Fatalf("meshd's trace: %v", err)
	}
	calls := float64(statusAt(b, admin).Relayed - before) // in the window: tracing slows meshd down
	if calls == 0 {
		b.Fatal("meshd relayed no call while traced")
	}
	c.wait(b, "one hop")
	c.result(b, "one hop")
	b.ReportMetric(calls/s.Span.Seconds(), "calls/s")
	b.ReportMetric(float64(s.Wakes["network"])/calls, "socket-wakes/call")
	b.ReportMetric(float64(s.WakesExcept("network"))/calls, "handoffs/call")
	b.ReportMetric(float64(s.RunnableQuantile("select", 0.5).Nanoseconds())/1e3, "handoff-wait-p50-µs")
	b.ReportMetric(100*s.IdleShare(), "idle-%")
	b.ReportMetric(float64(s.IdlePeriods)/calls, "idle-spells/call")
}
