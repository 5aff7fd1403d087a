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

// worker is one caller's samples, under its own lock so that a Window
// costs the callers nothing while they run.
type worker struct {
	mu      sync.Mutex
	samples []sample
	mark    int // samples before it were taken by a Window
}

// Load is a run in progress (Start).
type Load struct {
	cfg      Config
	stop     context.CancelFunc
	done     chan struct{}
	start    time.Time
	counting time.Time // calls due before it are the warm-up's
	workers  []*worker

	calls, errs, late atomic.Int64
	firstErr          atomic.Pointer[error]
	took              time.Duration // set before done closes

	windowMu sync.Mutex
	windowAt time.Time // when the last Window began
}

// Run makes the calls and returns the result; ctx ends it early.
func Run(ctx context.Context, cfg Config, call Call) (*Result, error) {
	if cfg.Calls <= 0 && cfg.Duration <= 0 {
		return nil, ErrNoWork
	}
	return Start(ctx, cfg, call).Wait(), nil
}

// Start makes the calls in the background, as Run does; with neither Calls
// nor Duration it goes on until Stop (the steady traffic a test runs while
// it breaks something).
func Start(ctx context.Context, cfg Config, call Call) *Load {
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 1
	}
	if cfg.Classify == nil {
		cfg.Classify = func(error) string { return "error" }
	}
	ctx, cancel := context.WithCancel(ctx)
	l := &Load{cfg: cfg, stop: cancel, done: make(chan struct{}), start: time.Now()}
	l.counting = l.start.Add(cfg.Warmup)
	l.windowAt = l.counting
	var end time.Time // zero: by count, or until stopped
	if cfg.Calls <= 0 && cfg.Duration > 0 {
		end = l.counting.Add(cfg.Duration)
	}
	var issued atomic.Int64 // counted calls started (by count)
	// take reserves one call due at due; false when the run is over.
	take := func(due time.Time) bool {
		switch {
		case ctx.Err() != nil:
			return false
		case !end.IsZero():
			return due.Before(end)
		case cfg.Calls <= 0 || due.Before(l.counting):
			return true // until stopped; warm-up calls are not counted against Calls
		}
		return issued.Add(1) <= int64(cfg.Calls)
	}
	one := func(due time.Time, w *worker) {
		err := call(ctx)
		lat := time.Since(due)
		if due.Before(l.counting) {
			return
		}
		s := sample{latency: lat}
		if err != nil {
			if ctx.Err() != nil {
				return // cut short by Stop or the caller's context, not a failure of the call
			}
			s.class = cfg.Classify(err)
			l.errs.Add(1)
			l.firstErr.CompareAndSwap(nil, &err)
		}
		l.calls.Add(1)
		w.mu.Lock()
		w.samples = append(w.samples, s)
		w.mu.Unlock()
	}

	var wg sync.WaitGroup
	l.workers = make([]*worker, cfg.Concurrency)
	for i := range l.workers {
		l.workers[i] = new(worker)
	}
	if cfg.RPS > 0 {
		due := make(chan time.Time, 1<<16)
		interval := time.Duration(float64(time.Second) / cfg.RPS)
		go func() { // the schedule: never waits for answers
			defer close(due)
			for i := 0; ; i++ {
				at := l.start.Add(time.Duration(i) * interval)
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
		for _, w := range l.workers {
			wg.Go(func() {
				for at := range due {
					if time.Since(at) > time.Millisecond {
						l.late.Add(1)
					}
					one(at, w)
				}
			})
		}
	} else {
		for _, w := range l.workers {
			wg.Go(func() {
				for now := time.Now(); take(now); now = time.Now() {
					one(now, w)
				}
			})
		}
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	go func() {
		defer close(l.done)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		var lastCalls int64
		for {
			select {
			case <-finished:
				l.took = time.Since(l.counting)
				cancel()
				return
			case <-tick.C:
				if cfg.Progress != nil {
					p := l.Progress()
					p.CallsPerSecond = float64(p.Calls - lastCalls)
					lastCalls = p.Calls
					cfg.Progress(p)
				}
			}
		}
	}()
	return l
}

// Progress is the run's counts so far.
func (l *Load) Progress() Progress {
	now := time.Now()
	return Progress{Elapsed: now.Sub(l.start), Calls: l.calls.Load(), Errors: l.errs.Load(), Late: l.late.Load(), WarmingUp: now.Before(l.counting)}
}

// FirstError is the first failed call's error (nil while none failed).
func (l *Load) FirstError() error {
	if p := l.firstErr.Load(); p != nil {
		return *p
	}
	return nil
}

// Window summarizes the counted calls that ended since the last Window (or
// the start): the figures of one phase of a test.
func (l *Load) Window() *Result {
	l.windowMu.Lock()
	defer l.windowMu.Unlock()
	now := time.Now()
	took := now.Sub(l.windowAt)
	l.windowAt = now
	var samples []sample
	for _, w := range l.workers {
		w.mu.Lock()
		samples = append(samples, w.samples[w.mark:]...)
		w.mark = len(w.samples)
		w.mu.Unlock()
	}
	return summarize(samples, took, 0, l.cfg)
}

// Wait waits for the run's end (its calls or duration, or its context) and
// returns its result.
func (l *Load) Wait() *Result {
	<-l.done
	var samples []sample
	for _, w := range l.workers {
		samples = append(samples, w.samples...) // no caller is left to write them
	}
	r := summarize(samples, l.took, l.late.Load(), l.cfg)
	if err := l.FirstError(); err != nil {
		r.FirstError = err.Error()
	}
	return r
}

// Stop ends the run now and returns its result; the calls it cuts short
// are not counted.
func (l *Load) Stop() *Result {
	l.stop()
	return l.Wait()
}

// Result is what a run measured; its JSON is meshctl bench -o json.
type Result struct {
	Calls      int64            `json:"calls"`
	Errors     int64            `json:"errors"`
	ErrorsBy   map[string]int64 `json:"errors_by_code"`
	FirstError string           `json:"first_error,omitempty"`
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
