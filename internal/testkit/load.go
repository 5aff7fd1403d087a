package testkit

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Load runs call from workers goroutines, over and over, until stop is
// called; stop returns how many calls ran, how many failed, and the first
// failure (nil when none did). It is the benign traffic that runs while a
// test plays a hostile peer.
func Load(workers int, call func(ctx context.Context) error) (stop func() (calls, failed int64, first error)) {
	done := make(chan struct{})
	var n, bad atomic.Int64
	var once sync.Once
	var firstErr error
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				err := call(ctx)
				cancel()
				n.Add(1)
				if err != nil {
					bad.Add(1)
					once.Do(func() { firstErr = err })
				}
			}
		})
	}
	return func() (int64, int64, error) {
		close(done)
		wg.Wait()
		return n.Load(), bad.Load(), firstErr
	}
}

// Metric reads the value of one series from the Prometheus text at
// http://adminAddr/metrics.
func Metric(t testing.TB, adminAddr, series string) string {
	t.Helper()
	res, err := http.Get("http://" + adminAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return v
		}
	}
	t.Fatalf("no series %s in /metrics", series)
	return ""
}
