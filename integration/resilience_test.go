//go:build integration

package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshrpc/mesh/client"
	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/loadgen"
	"github.com/meshrpc/mesh/internal/testconsul"
	"github.com/meshrpc/mesh/internal/testkit"
)

// fault is an instance whose behaviour the test changes while it serves:
// it answers after delay, or fails every call with code.
type fault struct {
	name  string
	calls atomic.Int64
	code  atomic.Int32 // 0: answer
	delay atomic.Int64 // nanoseconds
	srv   *client.Server
}

func faultyInstance(t *testing.T, meshdAddr, service, name string) *fault {
	t.Helper()
	f := &fault{name: name}
	f.delay.Store(int64(time.Millisecond))
	f.srv = client.NewServer(client.Options{Logger: testkit.Quiet})
	f.srv.Register(service, "work", client.HandlerFunc(func(ctx context.Context, call *client.Call) (*client.Response, error) {
		f.calls.Add(1)
		if code := f.code.Load(); code != 0 {
			return nil, client.Errorf(frame.ErrCode(code), "%s fails on purpose", name)
		}
		select {
		case <-time.After(time.Duration(f.delay.Load())):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return &client.Response{Body: []byte(name)}, nil
	}))
	if err := f.srv.Advertise(context.Background(), meshdAddr); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.srv.Shutdown(context.Background()) })
	return f
}

// faultyInstances starts n instances named prefix0, prefix1, ...
func faultyInstances(t *testing.T, meshdAddr, service, prefix string, n int) []*fault {
	var out []*fault
	for i := range n {
		out = append(out, faultyInstance(t, meshdAddr, service, fmt.Sprint(prefix, i)))
	}
	return out
}

// load calls service at rate calls/s from caller c until stop (loadgen's
// open loop, 20 callers, each call within 2s), counting which instance
// answered.
type load struct {
	gen  *loadgen.Load
	mu   sync.Mutex
	by   map[string]int // answers by body (the instance's name)
	done chan struct{}
}

func runLoad(c *client.Client, service, method string, rate int, stop <-chan struct{}, opts ...client.CallOption) *load {
	l := &load{by: map[string]int{}, done: make(chan struct{})}
	l.gen = loadgen.Start(context.Background(), loadgen.Config{RPS: float64(rate), Concurrency: 20}, func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		res, err := c.Call(ctx, service, method, nil, nil, opts...)
		if err == nil {
			l.mu.Lock()
			l.by[string(res.Body)]++
			l.mu.Unlock()
		}
		return err
	})
	go func() { <-stop; l.gen.Stop(); close(l.done) }()
	return l
}

// stop ends the load (calls it cuts short are not counted).
func (l *load) stop(stop chan struct{}) {
	close(stop)
	<-l.done
}

func (l *load) ok() int64 {
	p := l.gen.Progress()
	return p.Calls - p.Errors
}

func (l *load) failed() int64   { return l.gen.Progress().Errors }
func (l *load) firstErr() error { return l.gen.FirstError() }

// p99 is the p99 latency of the calls since the last p99 (or the start).
func (l *load) p99() time.Duration {
	return time.Duration(l.gen.Window().Latency.P99 * float64(time.Millisecond)).Round(time.Millisecond)
}

func (l *load) share(name string) (int, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	total := 0
	for _, n := range l.by {
		total += n
	}
	return l.by[name], total
}

// sharePrefix is like share for every answer that starts with prefix.
func (l *load) sharePrefix(prefix string) (int, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n, total := 0, 0
	for who, k := range l.by {
		total += k
		if strings.HasPrefix(who, prefix) {
			n += k
		}
	}
	return n, total
}

func (l *load) reset() {
	l.mu.Lock()
	l.by = map[string]int{}
	l.mu.Unlock()
}

func metricsOf(t *testing.T, h *host) string {
	resp, err := http.Get("http://" + h.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// twoHosts runs a Consul agent, a caller's meshd A and an instances' meshd B.
func twoHosts(t *testing.T) (a, b *host) {
	agent := testconsul.Start(t)
	a = startHost(t, "127.0.0.1", agent.HTTPAddr)
	b = startHost(t, "127.0.0.2", agent.HTTPAddr)
	return a, b
}

// One of three instances starts failing every call (busy, safe to retry):
// its breaker opens within a second and no call fails. Another becomes 10x
// slower: power of two choices on peak-EWMA moves 90% of its traffic away
// within 2 seconds.
func TestBreakerAndSlowInstance(t *testing.T) {
	a, b := twoHosts(t)
	inst := faultyInstances(t, b.addr, "work", "i", 3)
	testkit.WaitFor(t, 10*time.Second, "work visible from A", func() bool { return seesServices(t, a, "work") })
	c := dial(t, a.addr)
	stop := make(chan struct{})
	l := runLoad(c, "work", "work", 200, stop)
	time.Sleep(2 * time.Second)

	broken := time.Now()
	inst[0].code.Store(int32(frame.ErrCodeBusy))
	d := testkit.WaitFor(t, time.Second, "i1's breaker opens", func() bool {
		m := metricsOf(t, a)
		for _, line := range strings.Split(m, "\n") {
			if strings.HasPrefix(line, "mesh_breaker_state{") && strings.Contains(line, "#") && strings.Contains(line, `state="open"`) && strings.HasSuffix(line, " 1") {
				return true
			}
		}
		return false
	})
	t.Logf("breaker of the failing instance open %v after it started failing", d.Round(time.Millisecond))
	time.Sleep(time.Second)
	callsAtOpen := inst[0].calls.Load()
	time.Sleep(2 * time.Second)
	t.Logf("failing instance got %d calls in the 2s after its breaker opened (half-open probes)", inst[0].calls.Load()-callsAtOpen)
	if f := l.failed(); f > 0 {
		t.Fatalf("%d calls failed while one instance failed every call (first: %v)", f, l.firstErr())
	}
	_ = broken

	// Now i2 becomes 10x slower.
	inst[1].delay.Store(int64(10 * time.Millisecond))
	time.Sleep(2 * time.Second)
	l.reset()
	time.Sleep(3 * time.Second)
	slow, total := l.share(inst[1].name)
	close(stop)
	share := float64(slow) / float64(total)
	t.Logf("from 2s after it slowed down: the 10x slower instance answered %d of %d calls (%.1f%%)", slow, total, 100*share)
	if share > 0.10 {
		t.Fatalf("slow instance still got %.1f%% of calls, want ≤ 10%%", 100*share)
	}
	if f := l.failed(); f > 0 {
		t.Fatalf("%d calls failed (first: %v)", f, l.firstErr())
	}
	t.Logf("calls: %d ok, %d failed", l.ok(), l.failed())
}

// Every instance fails for 10s under 200 calls/s: the retry budget keeps the
// attempts within 1.2x the calls, and traffic recovers within 2s of the
// instances coming back.
func TestOutageBudgetAndRecovery(t *testing.T) {
	a, b := twoHosts(t)
	inst := faultyInstances(t, b.addr, "down", "d", 3)
	testkit.WaitFor(t, 10*time.Second, "down visible from A", func() bool { return seesServices(t, a, "down") })
	c := dial(t, a.addr)
	attempts := func() int64 { return inst[0].calls.Load() + inst[1].calls.Load() + inst[2].calls.Load() }
	stop := make(chan struct{})
	for _, f := range inst {
		f.code.Store(int32(frame.ErrCodeBusy))
	}
	base := attempts()
	l := runLoad(c, "down", "work", 200, stop)
	time.Sleep(10 * time.Second)
	calls := l.ok() + l.failed()
	sent := attempts() - base
	ratio := float64(sent) / float64(calls)
	t.Logf("10s outage: %d calls, %d attempts reached instances (%.3fx)", calls, sent, ratio)
	if ratio > 1.2+10/float64(calls) {
		t.Fatalf("attempts %.3fx calls, want ≤ 1.2x", ratio)
	}
	back := time.Now()
	for _, f := range inst {
		f.code.Store(0)
	}
	okBefore := l.ok()
	d := testkit.WaitFor(t, 2*time.Second, "calls succeed again", func() bool { return l.ok() > okBefore+50 })
	close(stop)
	t.Logf("traffic recovered %v after the instances came back", d.Round(time.Millisecond))
	_ = back
}

// Shard keys: 10,000 keys over 5 instances all stick while healthy; taking
// one out moves at most 25% of keys; putting it back moves them back.
func TestShardKeyAffinity(t *testing.T) {
	a, b := twoHosts(t)
	inst := faultyInstances(t, b.addr, "sticky", "s", 5)
	testkit.WaitFor(t, 10*time.Second, "sticky visible", func() bool { return seesServices(t, a, "sticky") })
	c := dial(t, a.addr)
	const keys = 10000
	owners := func() []string {
		out := make([]string, keys)
		var wg sync.WaitGroup
		work := make(chan int)
		for range 32 {
			wg.Go(func() {
				for k := range work {
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					res, err := c.Call(ctx, "sticky", "work", nil, nil, client.WithShardKey(fmt.Sprint("user-", k)))
					cancel()
					if err != nil {
						t.Error(err)
						continue
					}
					out[k] = string(res.Body)
				}
			})
		}
		for k := range keys {
			work <- k
		}
		close(work)
		wg.Wait()
		return out
	}
	for _, f := range inst {
		f.delay.Store(0)
	}
	first := owners()
	again := owners()
	for k := range keys {
		if first[k] != again[k] {
			t.Fatalf("key %d moved from %s to %s with every instance healthy", k, first[k], again[k])
		}
	}
	if err := inst[2].srv.Withdraw(context.Background()); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 5*time.Second, "s2 withdrawn", func() bool {
		out, _, _ := meshctl(t, "instances", "sticky", "--via", a.addr)
		return strings.Count(out, `"id"`) == 4
	})
	without := owners()
	moved := 0
	for k := range keys {
		if without[k] != first[k] {
			moved++
			if first[k] != "s2" {
				t.Fatalf("key %d moved off %s, which stayed", k, first[k])
			}
		}
	}
	t.Logf("taking 1 of 5 instances out moved %.1f%% of 10,000 keys", 100*float64(moved)/keys)
	if moved > keys/4 {
		t.Fatalf("%d keys moved, want ≤ 25%%", moved)
	}
	if err := inst[2].srv.Rejoin(context.Background()); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 5*time.Second, "s2 back", func() bool {
		out, _, _ := meshctl(t, "instances", "sticky", "--via", a.addr)
		return strings.Count(out, `"id"`) == 5
	})
	back := owners()
	for k := range keys {
		if back[k] != first[k] {
			t.Fatalf("key %d did not move back (%s, was %s)", k, back[k], first[k])
		}
	}
}

// A caller limited to 100 calls/s on a service gets 100/s (±10%) while
// offering 1,000/s; another caller of the same service is unaffected.
func TestCallerRateLimit(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "meshd.yaml")
	os.WriteFile(cfg, []byte("policies:\n  limited: {caller_rate_limit: 100}\n"), 0o644)
	a := startHost(t, "127.0.0.1", "off", "--config", cfg)
	faultyInstance(t, a.addr, "limited", "l1").delay.Store(0)
	testkit.WaitFor(t, 5*time.Second, "limited visible", func() bool { return seesServices(t, a, "limited") })
	greedy, err := client.Dial(context.Background(), a.addr, client.Options{ServiceName: "greedy", Logger: testkit.Quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer greedy.Close()
	modest, err := client.Dial(context.Background(), a.addr, client.Options{ServiceName: "modest", Logger: testkit.Quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer modest.Close()
	stop := make(chan struct{})
	g := runLoad(greedy, "limited", "work", 1000, stop)
	m := runLoad(modest, "limited", "work", 50, stop)
	const window = 5 * time.Second
	time.Sleep(window)
	close(stop)
	time.Sleep(100 * time.Millisecond)
	rate := float64(g.ok()) / window.Seconds()
	t.Logf("greedy caller: %.0f calls/s admitted, %d refused busy; modest caller: %d ok, %d failed (%v)", rate, g.failed(), m.ok(), m.failed(), m.firstErr())
	if rate < 90 || rate > 110 {
		t.Fatalf("greedy caller got %.0f calls/s, want 100 ±10%%", rate)
	}
	if m.failed() > 0 {
		t.Fatalf("the modest caller lost %d calls", m.failed())
	}
}
