package loadgen_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshrpc/mesh/internal/loadgen"
)

func sleepy(d time.Duration) loadgen.Call {
	return func(ctx context.Context) error { time.Sleep(d); return nil }
}

func TestClosedLoopMakesExactlyNCalls(t *testing.T) {
	var made atomic.Int64
	r, err := loadgen.Run(context.Background(), loadgen.Config{Calls: 500, Concurrency: 8}, func(ctx context.Context) error {
		made.Add(1)
		time.Sleep(100 * time.Microsecond)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if r.Calls != 500 || made.Load() != 500 || r.Errors != 0 || r.Throughput <= 0 {
		t.Fatalf("result %+v after %d calls made", r, made.Load())
	}
	var inBuckets int64
	for _, b := range r.Histogram {
		inBuckets += b.Calls
	}
	if inBuckets != 500 || r.Latency.P50 <= 0 || r.Latency.Max < r.Latency.P99 {
		t.Fatalf("histogram holds %d calls; latency %+v", inBuckets, r.Latency)
	}
}

// One call that stalls 200ms, at 200 calls/s with one caller: in an open
// loop the ~40 calls due during the stall are counted as late as they were,
// as a user waiting for them would see; a closed loop would hide them.
func TestOpenLoopCountsWhatAStallDelays(t *testing.T) {
	stall := func() loadgen.Call {
		var n atomic.Int64
		return func(ctx context.Context) error {
			if n.Add(1) == 50 {
				time.Sleep(200 * time.Millisecond)
			}
			return nil
		}
	}
	open, err := loadgen.Run(context.Background(), loadgen.Config{Duration: time.Second, Concurrency: 1, RPS: 200}, stall())
	if err != nil {
		t.Fatal(err)
	}
	closed, err := loadgen.Run(context.Background(), loadgen.Config{Calls: 200, Concurrency: 1}, stall())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("open loop: %d calls, p90 %.1fms, %d late; closed loop: p90 %.3fms", open.Calls, open.Latency.P90, open.Late, closed.Latency.P90)
	if open.Calls < 180 || open.Calls > 201 {
		t.Fatalf("open loop at 200/s for 1s made %d calls", open.Calls)
	}
	if open.Late < 20 || open.Latency.P90 < 20 || closed.Latency.P90 > 5 {
		t.Fatalf("open p90 %.1fms with %d late, closed p90 %.1fms: the stall should show in the open loop only", open.Latency.P90, open.Late, closed.Latency.P90)
	}
}

func TestErrorsAreCountedByClass(t *testing.T) {
	var n atomic.Int64
	boom := errors.New("boom")
	r, err := loadgen.Run(context.Background(), loadgen.Config{Calls: 100, Concurrency: 4, Classify: func(err error) string { return err.Error() }},
		func(ctx context.Context) error {
			if n.Add(1)%10 == 0 {
				return boom
			}
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	if r.Errors != 10 || r.ErrorsBy["boom"] != 10 {
		t.Fatalf("errors %d by class %v, want 10 boom", r.Errors, r.ErrorsBy)
	}
	var text bytes.Buffer
	r.WriteText(&text)
	if !strings.Contains(text.String(), "errors: boom 10") || !strings.Contains(text.String(), "100 calls") {
		t.Fatalf("text:\n%s", text.String())
	}
	b, _ := json.Marshal(r)
	var back map[string]any
	json.Unmarshal(b, &back)
	if back["errors"].(float64) != 10 || back["latency_ms"].(map[string]any)["p99.9"] == nil {
		t.Fatalf("json: %s", b)
	}
}

func TestWarmupIsNotCounted(t *testing.T) {
	var made atomic.Int64
	r, err := loadgen.Run(context.Background(), loadgen.Config{Duration: 300 * time.Millisecond, Warmup: 300 * time.Millisecond, Concurrency: 1, RPS: 100},
		func(ctx context.Context) error { made.Add(1); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if r.Calls < 25 || r.Calls > 31 || made.Load() < 55 || r.Seconds < 0.29 {
		t.Fatalf("%d counted of %d made in %.2fs", r.Calls, made.Load(), r.Seconds)
	}
	if _, err := loadgen.Run(context.Background(), loadgen.Config{}, sleepy(0)); !errors.Is(err, loadgen.ErrNoWork) {
		t.Fatalf("no work: %v", err)
	}
}

// Started without a count or a duration, a load runs until Stop; its
// counts are live, each Window holds only the calls since the last, and
// the calls Stop cuts short are not failures.
func TestStartRunsUntilStopWithWindows(t *testing.T) {
	var fail atomic.Bool
	l := loadgen.Start(context.Background(), loadgen.Config{Concurrency: 4}, func(ctx context.Context) error {
		if fail.Load() {
			return errors.New("broken")
		}
		select {
		case <-time.After(time.Millisecond):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	deadline := time.Now().Add(5 * time.Second)
	for l.Progress().Calls < 100 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	ok := l.Window()
	if ok.Calls < 100 || ok.Errors != 0 || ok.Throughput <= 0 {
		t.Fatalf("first window: %+v", ok)
	}
	fail.Store(true)
	for l.Progress().Errors < 10 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	fail.Store(false)
	bad := l.Window()
	if bad.Errors < 10 || bad.Calls < bad.Errors {
		t.Fatalf("second window: %+v", bad)
	}
	r := l.Stop()
	if r.Calls < ok.Calls+bad.Calls || r.Errors != l.Progress().Errors || r.FirstError != "broken" {
		t.Fatalf("whole run: %+v (windows %d and %d calls)", r, ok.Calls, bad.Calls)
	}
	if got := l.FirstError(); got == nil || got.Error() != "broken" {
		t.Fatalf("FirstError = %v", got)
	}
}
