package testkit

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshrpc/mesh/internal/loadgen"
)

// Load runs call from workers goroutines, over and over, until stop is
// called; stop returns how many calls ran, how many failed, and the first
// failure (nil when none did). It is the benign traffic that runs while a
// test plays a hostile peer: loadgen's closed loop, each call within 5s.
// stop lets it make at least MinBenign calls first (waiting up to 10s), so
// that a short attack still meets enough calls to judge (Unharmed).
func Load(workers int, call func(ctx context.Context) error) (stop func() (calls, failed int64, first error)) {
	l := loadgen.Start(context.Background(), loadgen.Config{Concurrency: workers}, func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		return call(ctx)
	})
	return func() (int64, int64, error) {
		for deadline := time.Now().Add(10 * time.Second); l.Progress().Calls < MinBenign && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
		r := l.Stop()
		return r.Calls, r.Errors, l.FirstError()
	}
}

// MinBenign is the fewest calls a benign load must have made while a test
// did its worst for "none failed" to say anything: a starved load passes
// every check of its failures.
const MinBenign = 20

// Unharmed fails t unless the benign load made at least MinBenign calls and
// none failed.
func Unharmed(t testing.TB, calls, failed int64, first error) {
	t.Helper()
	if failed != 0 {
		t.Fatalf("%d of %d benign calls failed (first: %v)", failed, calls, first)
	}
	if calls < MinBenign {
		t.Fatalf("only %d benign calls ran (want at least %d): a starved load shows nothing", calls, MinBenign)
	}
}

// BenchCall makes one call with body and returns the answer's body.
type BenchCall func(ctx context.Context, body []byte) ([]byte, error)

// Bench warms call up, then makes b.N calls from conc goroutines with
// loadgen and reports calls/s, cpu-ns/op (all of this process's CPU, caller
// and callee alike), and p50-µs / p99-µs call latency, so that mesh and
// tchannel-go are measured the same way in one run. A call that fails or
// answers a body of another length fails the benchmark.
func Bench(b *testing.B, conc int, body []byte, call BenchCall) {
	one := func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		res, err := call(ctx, body)
		if err == nil && len(res) != len(body) {
			err = fmt.Errorf("answered %d bytes for %d", len(res), len(body))
		}
		return err
	}
	if r, _ := loadgen.Run(context.Background(), loadgen.Config{Calls: 100}, one); r.Errors > 0 {
		b.Fatalf("warm-up: %s", r.FirstError)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	cpu0 := cpuTime()
	b.ResetTimer()
	r, _ := loadgen.Run(context.Background(), loadgen.Config{Calls: b.N, Concurrency: conc}, one)
	b.StopTimer()
	if r.Errors > 0 {
		b.Fatalf("%d of %d calls failed (first: %s)", r.Errors, r.Calls, r.FirstError)
	}
	b.ReportMetric(r.Throughput, "calls/s")
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
	b.ReportMetric(r.Latency.P50*1000, "p50-µs")
	b.ReportMetric(r.Latency.P99*1000, "p99-µs")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// Metric reads the value of one series from the Prometheus text at
// http://adminAddr/metrics; series is name{label="value",...}, its labels in
// any order.
func Metric(t testing.TB, adminAddr, series string) string {
	t.Helper()
	res, err := http.Get("http://" + adminAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	want, _ := parseSample(series + " 0")
	for _, line := range strings.Split(string(b), "\n") {
		if got, v := parseSample(line); got != "" && got == want {
			return v
		}
	}
	t.Fatalf("no series %s in /metrics", series)
	return ""
}

var (
	sampleLine  = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)`)
	sampleLabel = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)
)

// parseSample reads one sample line of the Prometheus text format as its
// series, with the labels in order (so the order they were written in does
// not matter), and its value; "" for other lines.
func parseSample(line string) (series, value string) {
	m := sampleLine.FindStringSubmatch(line)
	if m == nil {
		return "", ""
	}
	labels := sampleLabel.FindAllString(m[2], -1)
	slices.Sort(labels)
	return m[1] + "{" + strings.Join(labels, ",") + "}", m[3]
}
