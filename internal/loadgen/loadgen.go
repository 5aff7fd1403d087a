package loadgen

import (
	"context"
	"errors"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Call makes one call; its error's class (Classify) is what Result counts.
type Call func(ctx context.Context) error

// Config says how much load, and how.
type Config struct {
	Calls       int           // stop after this many counted calls (0: run for Duration)
	Duration    time.Duration // how long to run after the warm-up, when Calls is 0
	Concurrency int           // callers: calls in flight at most (default 1)
	RPS         float64       // open loop at this rate; 0: closed loop
	Warmup      time.Duration // calls made in this first span are not counted
	// Classify names an error's class for Result.Errors (default: "error").
	Classify func(error) string
	// Progress, if set, gets a snapshot every second.
	Progress func(Progress)
}

// Progress is a running count.
type Progress struct {
	Elapsed        time.Duration
	Calls, Errors  int64
	Late           int64 // open loop: calls that started more than 1ms after they were due
	WarmingUp      bool
	CallsPerSecond float64 // in the last second
}

// ErrNoWork is Run's error for a config that asks for no calls.
var ErrNoWork = errors.New("nothing to do: give a number of calls or a duration")

type sample struct {
	latency time.Duration
	class   string // "" for success
}

// Run makes the calls and returns the result; ctx ends it early.
func Run(ctx context.Context, cfg Config, call Call) (*Result, error) {
	if cfg.Calls <= 0 && cfg.Duration <= 0 {
		return nil, ErrNoWork
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 1
	}
	if cfg.Classify == nil {
		cfg.Classify = func(error) string { return "error" }
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	counting := start.Add(cfg.Warmup)
	var end time.Time // zero: by count
	if cfg.Calls <= 0 {
		end = counting.Add(cfg.Duration)
	}

	var (
		issued      atomic.Int64 // counted calls started (by count)
		calls, errs atomic.Int64
		late        atomic.Int64
		mu          sync.Mutex
		samples     []sample
	)
	// take reserves one counted call; false when the run is over.
	take := func(due time.Time) bool {
		if ctx.Err() != nil {
			return false
		}
		if !end.IsZero() {
			return due.Before(end)
		}
		if due.Before(counting) {
			return true // warm-up calls are not counted against Calls
		}
		return issued.Add(1) <= int64(cfg.Calls)
	}
	one := func(due time.Time, local *[]sample) {
		err := call(ctx)
		lat := time.Since(due)
		if due.Before(counting) {
			return
		}
		s := sample{latency: lat}
		if err != nil {
			if ctx.Err() != nil && errors.Is(err, context.Canceled) {
				return // stopped by the caller of Run, not a failure of the call
			}
			s.class = cfg.Classify(err)
			errs.Add(1)
		}
		calls.Add(1)
		*local = append(*local, s)
	}

	var wg sync.WaitGroup
	flush := func(local []sample) {
		mu.Lock()
		samples = append(samples, local...)
		mu.Unlock()
	}
	if cfg.RPS > 0 {
		due := make(chan time.Time, 1<<16)
		interval := time.Duration(float64(time.Second) / cfg.RPS)
		go func() { // the schedule: never waits for answers
			defer close(due)
			for i := 0; ; i++ {
				at := start.Add(time.Duration(i) * interval)
				if !take(at) {
					return
				}
				if d := time.Until(at); d > 0 {
					select {
					case <-ctx.Done():
						return
					case <-time.After(d):
					}
				}
				select {
				case due <- at:
				case <-ctx.Done():
					return
				}
			}
		}()
		for range cfg.Concurrency {
			wg.Go(func() {
				var local []sample
				for at := range due {
					if time.Since(at) > time.Millisecond {
						late.Add(1)
					}
					one(at, &local)
				}
				flush(local)
			})
		}
	} else {
		for range cfg.Concurrency {
			wg.Go(func() {
				var local []sample
				for {
					now := time.Now()
					if !take(now) {
						break
					}
					one(now, &local)
				}
				flush(local)
			})
		}
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var lastCalls int64
	for running := true; running; {
		select {
		case <-done:
			running = false
		case now := <-tick.C:
			if cfg.Progress != nil {
				n := calls.Load()
				cfg.Progress(Progress{Elapsed: now.Sub(start), Calls: n, Errors: errs.Load(), Late: late.Load(),
					WarmingUp: now.Before(counting), CallsPerSecond: float64(n - lastCalls)})
				lastCalls = n
			}
		}
	}
	took := time.Since(counting)
	return summarize(samples, took, late.Load(), cfg), nil
}

// Result is what a run measured; its JSON is meshctl bench -o json.
type Result struct {
	Calls      int64            `json:"calls"`
	Errors     int64            `json:"errors"`
	ErrorsBy   map[string]int64 `json:"errors_by_code"`
	Seconds    float64          `json:"seconds"`
	Throughput float64          `json:"calls_per_second"`
	Mode       string           `json:"mode"` // "closed loop, 16 callers" or "open loop, 1000 calls/s"
	Late       int64            `json:"late,omitempty"`
	// Latency quantiles in milliseconds, of successful and failed calls alike.
	Latency   Quantiles `json:"latency_ms"`
	Histogram []Bucket  `json:"histogram"`
}

// Quantiles of latency, in milliseconds.
type Quantiles struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p99.9"`
	Max  float64 `json:"max"`
}

// Bucket counts the calls that took at most UpToMs (and more than the
// bucket before).
type Bucket struct {
	UpToMs float64 `json:"up_to_ms"`
	Calls  int64   `json:"calls"`
}

func summarize(samples []sample, took time.Duration, late int64, cfg Config) *Result {
	r := &Result{ErrorsBy: map[string]int64{}, Seconds: took.Seconds(), Late: late,
		Mode: closedOrOpen(cfg)}
	lat := make([]time.Duration, len(samples))
	for i, s := range samples {
		lat[i] = s.latency
		r.Calls++
		if s.class != "" {
			r.Errors++
			r.ErrorsBy[s.class]++
		}
	}
	if took > 0 {
		r.Throughput = float64(r.Calls) / took.Seconds()
	}
	if len(lat) == 0 {
		return r
	}
	slices.Sort(lat)
	q := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(lat)))) - 1
		return ms(lat[max(i, 0)])
	}
	r.Latency = Quantiles{P50: q(0.50), P90: q(0.90), P99: q(0.99), P999: q(0.999), Max: ms(lat[len(lat)-1])}
	// Buckets 1-2-5 per decade, from the fastest call's decade to the slowest.
	bound := math.Pow(10, math.Floor(math.Log10(max(ms(lat[0]), 0.001))))
	steps := [...]float64{1, 2, 5}
	i := 0
	for step := 0; i < len(lat); step++ {
		up := bound * steps[step%3] * math.Pow(10, float64(step/3))
		n := int64(0)
		for i < len(lat) && ms(lat[i]) <= up {
			n++
			i++
		}
		if n > 0 || len(r.Histogram) > 0 { // from the first bucket that holds a call
			r.Histogram = append(r.Histogram, Bucket{UpToMs: up, Calls: n})
		}
	}
	return r
}

func closedOrOpen(cfg Config) string {
	if cfg.RPS > 0 {
		return "open loop at " + ftoa(cfg.RPS) + " calls/s, up to " + itoa(cfg.Concurrency) + " in flight"
	}
	return "closed loop, " + itoa(cfg.Concurrency) + " callers"
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
