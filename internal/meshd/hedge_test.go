package meshd_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshrpc/mesh/client"
	"github.com/meshrpc/mesh/discovery"
	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/meshd"
	"github.com/meshrpc/mesh/internal/relay"
	"github.com/meshrpc/mesh/internal/testkit"
	"github.com/meshrpc/mesh/internal/tracing"
	"github.com/meshrpc/mesh/internal/zipkintest"
	"github.com/meshrpc/mesh/router"
)

// stallingServer serves service's "get" through the meshd at addr,
// answering with name after stall() (cut short, and counted in cancelled,
// when the call is cancelled).
func stallingServer(t testing.TB, addr, service, name string, stall func() time.Duration, cancelled *atomic.Int64) {
	t.Helper()
	s := client.NewServer(client.Options{ServiceName: service, Logger: testkit.Quiet})
	s.Register(service, "get", client.HandlerFunc(func(ctx context.Context, _ *client.Call) (*client.Response, error) {
		select {
		case <-time.After(stall()):
		case <-ctx.Done():
			if cancelled != nil {
				cancelled.Add(1)
			}
			return nil, ctx.Err()
		}
		return &client.Response{Body: []byte(name)}, nil
	}))
	if err := s.Advertise(context.Background(), addr); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(context.Background()) })
}

func hedgingMeshd(t testing.TB, p router.Policy, tracer ...*tracing.Tracer) *meshd.Daemon {
	t.Helper()
	cfg := meshdConfig(t, "127.0.0.1:0", discovery.NewLocal())
	cfg.Policies = router.Policies{"kv": p}
	if len(tracer) > 0 {
		cfg.Tracer = tracer[0]
	}
	return startWith(t, cfg)
}

// One of three instances stalls: a call that lands on it is hedged to
// another after the delay, whose answer wins; the stalled attempt is
// cancelled on the wire; explanations, spans and metrics show both
// attempts.
func TestHedgeRescuesAStalledInstance(t *testing.T) {
	sink := zipkintest.New(t)
	tr, err := tracing.New(tracing.Config{ZipkinURL: sink.URL, SampleRate: 1, ServiceName: "meshd"})
	if err != nil {
		t.Fatal(err)
	}
	d := hedgingMeshd(t, router.Policy{HedgeMethods: []string{"get"}, HedgeDelay: router.Duration(20 * time.Millisecond),
		HedgeBudget: 0.5, Balancer: router.BalancerRoundRobin}, tr)
	var cancelled atomic.Int64
	stallingServer(t, d.Addr(), "kv", "slow", func() time.Duration { return 2 * time.Second }, &cancelled)
	for _, name := range []string{"fast-1", "fast-2"} {
		stallingServer(t, d.Addr(), "kv", name, func() time.Duration { return 0 }, nil)
	}
	c := dialMeshd(t, d.Addr())
	var slowest time.Duration
	for range 60 {
		start := time.Now()
		res, err := c.Call(context.Background(), "kv", "get", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		slowest = max(slowest, time.Since(start))
		if string(res.Body) == "slow" {
			t.Fatal("the stalled instance's answer reached the caller")
		}
	}
	hedges := samples(scrape(t, d.AdminAddr()), "mesh_hedges_total", "service", "event")
	t.Logf("60 calls, one instance of three stalled: slowest %v; hedges %v; stalled attempts cancelled %d", slowest.Round(time.Millisecond), hedges, cancelled.Load())
	if slowest > 500*time.Millisecond {
		t.Errorf("a call took %v: its hedge did not rescue it", slowest)
	}
	if hedges["kv sent"] < 15 || hedges["kv won"] != hedges["kv sent"] || hedges["kv cancelled"] != hedges["kv sent"] {
		t.Errorf("hedges %v: want about 20 sent (a third of the calls), each won and one attempt cancelled", hedges)
	}
	testkit.WaitFor(t, 2*time.Second, "the stalled attempts cancelled at the instance", func() bool { return float64(cancelled.Load()) >= hedges["kv sent"]-1 })

	calls := recentCalls(t, d.AdminAddr(), "service=kv&limit=60")
	var hedged *relay.Explanation
	for i := range calls {
		if len(calls[i].Attempts) == 2 {
			hedged = &calls[i]
			break
		}
	}
	if hedged == nil {
		t.Fatalf("no call with two attempts in /calls: %+v", calls)
	}
	first, second := hedged.Attempts[0], hedged.Attempts[1]
	if !second.Hedge || !strings.HasPrefix(second.Why, "hedge") || !strings.Contains(second.Result, "the hedge answered first") ||
		!strings.HasPrefix(first.Result, "cancelled") || hedged.Result != "ok" {
		t.Fatalf("a hedged call explained: %+v", hedged)
	}
	testkit.WaitFor(t, 5*time.Second, "a span marking a hedge that won", func() bool {
		return len(sink.Spans(func(s zipkintest.Span) bool {
			return s.Tags["mesh.hedge"] == "won" && s.Tags["mesh.attempts"] == "2" && s.Tags["mesh.instance"] != ""
		})) > 0
	})
}

// Both attempts of a hedged call answer: the caller gets exactly one
// answer per call, the other is dropped.
func TestHedgedCallAnswersOnce(t *testing.T) {
	d := hedgingMeshd(t, router.Policy{HedgeMethods: []string{"*"}, HedgeDelay: router.Duration(10 * time.Millisecond),
		HedgeBudget: 1, Balancer: router.BalancerRoundRobin})
	for i, name := range []string{"a", "b"} {
		stall := time.Duration(30+5*i) * time.Millisecond
		stallingServer(t, d.Addr(), "kv", name, func() time.Duration { return stall }, nil)
	}
	p := testkit.DialRaw(t, d.Addr(), nil)
	const calls = 20
	for id := uint32(1); id <= calls; id++ {
		p.Send(t, testkit.CallFrames(t, id, "kv", "get", frame.AppendHeader(nil, frame.HeaderArgScheme, "raw"), nil, nil)...)
	}
	answers := map[uint32]int{}
	for {
		f := p.Next(t, 500*time.Millisecond)
		if f == nil {
			break
		}
		if f.Type == frame.TypeCallRes || f.Type == frame.TypeError {
			answers[f.ID]++
		}
	}
	for id := uint32(1); id <= calls; id++ {
		if answers[id] != 1 {
			t.Errorf("call %d got %d answers, want 1", id, answers[id])
		}
	}
	if hedges := samples(scrape(t, d.AdminAddr()), "mesh_hedges_total", "event"); hedges["sent"] < calls/2 {
		t.Fatalf("hedges %v: want most of %d calls hedged", hedges, calls)
	}
}

// Every instance slow: hedges stop at the budget (5% of calls, with the
// floor of 10 for a quiet service), and no call fails for it.
func TestHedgesStopAtTheBudget(t *testing.T) {
	d := hedgingMeshd(t, router.Policy{HedgeMethods: []string{"get"}, HedgeDelay: router.Duration(5 * time.Millisecond)})
	for _, name := range []string{"a", "b", "c"} {
		stallingServer(t, d.Addr(), "kv", name, func() time.Duration { return 20 * time.Millisecond }, nil)
	}
	c := dialMeshd(t, d.Addr())
	var wg sync.WaitGroup
	var failed atomic.Int64
	const callers, each = 20, 30
	for range callers {
		wg.Go(func() {
			for range each {
				if _, err := c.Call(context.Background(), "kv", "get", nil, nil); err != nil {
					var ce *client.Error
					errors.As(err, &ce)
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	hedges := samples(scrape(t, d.AdminAddr()), "mesh_hedges_total", "event")
	t.Logf("%d calls, every instance slow: hedges %v, %d failed", callers*each, hedges, failed.Load())
	if failed.Load() != 0 {
		t.Errorf("%d calls failed", failed.Load())
	}
	if limit := 0.05*callers*each + 10 + 1; hedges["sent"] > limit || hedges["refused_budget"] == 0 {
		t.Errorf("hedges %v: want at most %.0f sent and the rest refused by the budget", hedges, limit)
	}
}

// An attempt that fails while the other is in flight is dropped, and the
// other's answer is the call's: the caller never sees the failure, even
// one that is never retried (Unexpected: the handler may have run), and
// whichever of the two failed.
func TestHedgeOutlivesAFailedAttempt(t *testing.T) {
	d := hedgingMeshd(t, router.Policy{HedgeMethods: []string{"get"}, HedgeDelay: router.Duration(10 * time.Millisecond),
		HedgeBudget: 1, Balancer: router.BalancerRoundRobin, MaxAttempts: 2})
	busy := client.NewServer(client.Options{ServiceName: "kv", Logger: testkit.Quiet})
	busy.Register("kv", "get", client.HandlerFunc(func(ctx context.Context, _ *client.Call) (*client.Response, error) {
		time.Sleep(30 * time.Millisecond) // fails after the hedge went
		return nil, errors.New("the handler failed")
	}))
	if err := busy.Advertise(context.Background(), d.Addr()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { busy.Shutdown(context.Background()) })
	for range 2 { // three instances: round robin's turns put the failing one first now and then, as hedge other times
		stallingServer(t, d.Addr(), "kv", "ok", func() time.Duration { return 50 * time.Millisecond }, nil)
	}
	c := dialMeshd(t, d.Addr())
	for i := range 4 { // the fifth failure in a row would open the failing instance's breaker, and end hedging
		res, err := c.Call(context.Background(), "kv", "get", nil, nil)
		if err != nil || string(res.Body) != "ok" {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	calls := recentCalls(t, d.AdminAddr(), "service=kv&limit=4")
	var firstFailed, hedgeFailed int
	for _, call := range calls {
		if len(call.Attempts) != 2 || !call.Attempts[1].Hedge || call.Result != "ok" {
			t.Fatalf("a call not hedged as expected: %+v", call)
		}
		switch {
		case call.Attempts[0].Result == "unexpected":
			firstFailed++
		case call.Attempts[1].Result == "unexpected":
			hedgeFailed++
		}
	}
	t.Logf("4 calls over a failing instance and two slow ones: %d first attempts and %d hedges failed and were dropped", firstFailed, hedgeFailed)
	if firstFailed == 0 || hedgeFailed == 0 {
		t.Fatalf("want both sides dropped at least once: first %d, hedge %d", firstFailed, hedgeFailed)
	}
}
