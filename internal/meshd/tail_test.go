package meshd_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/meshrpc/mesh/internal/loadgen"
	"github.com/meshrpc/mesh/router"
)

// The tail scenario of docs/ROUTING.md: three instances of kv, of which
// one (or, slowAll, every one) stalls 200 ms on 5% of its calls; an open
// loop of rps calls/s for d, with hedging on (the defaults: the 95th
// percentile of kv's latency as delay, 5% of calls as budget) or off, kv
// balanced by balancer. It returns the load's result (after its warm-up)
// and the hedges sent per call (all calls: the budget counts the warm-up
// too).
func tailScenario(tb testing.TB, balancer string, hedging, slowAll bool, rps float64, d time.Duration) (*loadgen.Result, float64) {
	tb.Helper()
	p := router.Policy{Balancer: balancer}
	if hedging {
		p.HedgeMethods = []string{"get"}
	}
	m := hedgingMeshd(tb, p)
	for i := range 3 {
		stall := func() time.Duration { return 0 }
		if i == 0 || slowAll {
			stall = func() time.Duration {
				if rand.Float64() < 0.05 {
					return 200 * time.Millisecond
				}
				return 0
			}
		}
		stallingServer(tb, m.Addr(), "kv", fmt.Sprint("kv-", i), stall, nil)
	}
	c := dialMeshd(tb, m.Addr())
	res, err := loadgen.Run(context.Background(), loadgen.Config{Duration: d, RPS: rps, Concurrency: 1024, Warmup: 2 * time.Second},
		func(ctx context.Context) error {
			ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			_, err := c.Call(ctx, "kv", "get", nil, nil)
			return err
		})
	if err != nil {
		tb.Fatal(err)
	}
	mfs := scrape(tb, m.AdminAddr())
	sent := samples(mfs, "mesh_hedges_total", "event")["sent"]
	return res, sent / samples(mfs, "mesh_calls_total", "service")["kv"]
}

// Hedging rescues the calls that land on a stall, within its budget, and
// fails none; with every instance slow it stops at the budget. (The
// figures at 1,000 calls/s for 30 s: BenchmarkHedging, make bench.)
func TestHedgingCutsTheTail(t *testing.T) {
	if testing.Short() {
		t.Skip("runs 16 s of load")
	}
	for _, slowAll := range []bool{false, true} {
		// Round robin: the stalling instance keeps its share of calls, where
		// P2C would mostly avoid it after a stall (BenchmarkHedging has both).
		off, _ := tailScenario(t, router.BalancerRoundRobin, false, slowAll, 300, 3*time.Second)
		on, extra := tailScenario(t, router.BalancerRoundRobin, true, slowAll, 300, 3*time.Second)
		t.Logf("slow all %v: p99 %.1f → %.1f ms, p99.9 %.1f → %.1f ms, hedges %.1f%% of calls, failed %d → %d",
			slowAll, off.Latency.P99, on.Latency.P99, off.Latency.P999, on.Latency.P999, 100*extra, off.Errors, on.Errors)
		if on.Errors > 0 || off.Errors > 0 {
			t.Errorf("failed calls: %d without hedging, %d with (first: %s)", off.Errors, on.Errors, on.FirstError)
		}
		// The budget is 5% of calls with a floor of 10 (over its 10 s of
		// memory) for a quiet service.
		if limit := 0.05 + 10/float64(on.Calls); extra > limit {
			t.Errorf("hedges were %.1f%% of calls, over the budget (%.1f%%)", 100*extra, 100*limit)
		}
		if !slowAll && on.Latency.P99 >= 100 {
			t.Errorf("with hedging the p99 is %.1f ms: the 200 ms stalls were not hedged", on.Latency.P99)
		}
	}
}

// BenchmarkHedging is the tail scenario at 1,000 calls/s for 30 s (run it
// with -benchtime 1x: each case runs once, whatever b.N): p99 and p99.9
// with hedging off and on, and the hedges sent as a share of calls.
func BenchmarkHedging(b *testing.B) {
	for _, bal := range []string{router.BalancerRoundRobin, router.BalancerP2C} {
		for _, slow := range []string{"one-slow", "all-slow"} {
			for _, mode := range []string{"off", "on"} {
				b.Run(bal+"/"+slow+"/hedging="+mode, func(b *testing.B) {
					res, extra := tailScenario(b, bal, mode == "on", slow == "all-slow", 1000, 30*time.Second)
					b.ReportMetric(res.Latency.P50, "p50-ms")
					b.ReportMetric(res.Latency.P99, "p99-ms")
					b.ReportMetric(res.Latency.P999, "p99.9-ms")
					b.ReportMetric(100*extra, "hedges-%")
					b.ReportMetric(float64(res.Errors), "failed")
					b.ReportMetric(float64(res.Calls), "calls")
				})
			}
		}
	}
}
