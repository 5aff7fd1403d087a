// Package benchload drives call benchmarks: N goroutines make b.N calls in
// all, and the benchmark reports calls/s, process CPU per call and latency
// percentiles, so that mesh and tchannel-go are measured the same way in one
// run. Used only by benchmarks.
package benchload

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Call makes one call with body and returns the answer's body.
type Call func(ctx context.Context, body []byte) ([]byte, error)

// Run warms call up, then makes b.N calls from conc goroutines and reports
// calls/s, cpu-ns/op (all of this process's CPU, caller and callee alike),
// and p50-µs / p99-µs call latency.
func Run(b *testing.B, conc int, body []byte, call Call) {
	for range 100 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if _, err := call(ctx, body); err != nil {
			b.Fatal(err)
		}
		cancel()
	}
	var (
		next   atomic.Int64
		failed atomic.Int64
		wg     sync.WaitGroup
	)
	n := int64(b.N)
	lat := make([]time.Duration, n)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	cpu0 := cpuTime()
	b.ResetTimer()
	start := time.Now()
	for range conc {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= n {
					return
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				t0 := time.Now()
				res, err := call(ctx, body)
				lat[i] = time.Since(t0)
				cancel()
				if err != nil || len(res) != len(body) {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if f := failed.Load(); f > 0 {
		b.Fatalf("%d of %d calls failed", f, n)
	}
	slices.Sort(lat)
	b.ReportMetric(float64(n)/elapsed.Seconds(), "calls/s")
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(n), "cpu-ns/op")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
