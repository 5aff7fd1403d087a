package figures

import (
	"math"

	"github.com/meshrpc/mesh/internal/golden"
)

// Window is the calls of a span: how many, how many were answered (ok or
// an application error), and how many fell in each latency bucket
// (golden.Buckets, then one past the last).
type Window struct {
	Calls    uint64   `json:"calls"`
	Answered uint64   `json:"answered"`
	Buckets  []uint64 `json:"buckets"`
}

// Add sums o into w.
func (w *Window) Add(o Window) {
	w.Calls += o.Calls
	w.Answered += o.Answered
	if len(w.Buckets) < len(o.Buckets) {
		w.Buckets = append(w.Buckets, make([]uint64, len(o.Buckets)-len(w.Buckets))...)
	}
	for i, n := range o.Buckets {
		w.Buckets[i] += n
	}
}

// Figures are a Window's golden figures over its span.
type Figures struct {
	Calls     uint64  `json:"calls"`
	PerSecond float64 `json:"per_second"`
	// Success is the share of calls answered; 1 without calls.
	Success float64 `json:"success"`
	// P50 and P99 are latency percentiles in milliseconds, estimated within
	// their bucket as Prometheus's histogram_quantile does; 0 without calls.
	P50 float64 `json:"p50_ms"`
	P99 float64 `json:"p99_ms"`
}

// Figures computes w's figures over seconds.
func (w Window) Figures(seconds float64) Figures {
	f := Figures{Calls: w.Calls, Success: 1}
	if w.Calls == 0 {
		return f
	}
	if seconds > 0 {
		f.PerSecond = float64(w.Calls) / seconds
	}
	f.Success = float64(w.Answered) / float64(w.Calls)
	f.P50 = 1000 * w.Quantile(0.5)
	f.P99 = 1000 * w.Quantile(0.99)
	return f
}

// Quantile estimates the q-quantile of the latency, in seconds: linear
// within the bucket it falls in; the largest bound when it falls past it.
func (w Window) Quantile(q float64) float64 {
	var total uint64
	for _, n := range w.Buckets {
		total += n
	}
	if total == 0 {
		return math.NaN()
	}
	rank := q * float64(total)
	var below uint64
	for i, n := range w.Buckets {
		if float64(below+n) >= rank && n > 0 {
			if i >= len(golden.Buckets) {
				return golden.Buckets[len(golden.Buckets)-1]
			}
			lo := 0.0
			if i > 0 {
				lo = golden.Buckets[i-1]
			}
			return lo + (golden.Buckets[i]-lo)*(rank-float64(below))/float64(n)
		}
		below += n
	}
	return golden.Buckets[len(golden.Buckets)-1]
}
