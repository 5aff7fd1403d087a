package loadgen

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
)

func itoa(n int) string       { return strconv.Itoa(n) }
func ftoa(f float64) string   { return strconv.FormatFloat(f, 'f', -1, 64) }
func msText(v float64) string { return strconv.FormatFloat(v, 'f', 3, 64) + "ms" }

// WriteText prints r for people: totals, quantiles, a histogram, errors.
func (r *Result) WriteText(w io.Writer) {
	fmt.Fprintf(w, "%d calls in %.2fs (%s): %.0f calls/s, %d errors\n", r.Calls, r.Seconds, r.Mode, r.Throughput, r.Errors)
	if r.Late > 0 {
		fmt.Fprintf(w, "%d calls started late (all callers were busy): the latencies count from when each was due\n", r.Late)
	}
	l := r.Latency
	fmt.Fprintf(w, "latency: p50 %s  p90 %s  p99 %s  p99.9 %s  max %s\n", msText(l.P50), msText(l.P90), msText(l.P99), msText(l.P999), msText(l.Max))
	var most int64
	for _, b := range r.Histogram {
		most = max(most, b.Calls)
	}
	for _, b := range r.Histogram {
		bar := 0
		if most > 0 {
			bar = int(40 * b.Calls / most)
		}
		fmt.Fprintf(w, "  <= %10s %8d %s\n", msText(b.UpToMs), b.Calls, strings.Repeat("█", bar))
	}
	if r.Errors > 0 {
		codes := make([]string, 0, len(r.ErrorsBy))
		for c := range r.ErrorsBy {
			codes = append(codes, c)
		}
		slices.Sort(codes)
		fmt.Fprintf(w, "errors:")
		for _, c := range codes {
			fmt.Fprintf(w, " %s %d", c, r.ErrorsBy[c])
		}
		fmt.Fprintln(w)
	}
}

// Line is a one-line progress report.
func (p Progress) Line() string {
	state := ""
	if p.WarmingUp {
		state = " (warming up)"
	}
	return fmt.Sprintf("%5.1fs  %d calls  %d errors  %.0f calls/s%s", p.Elapsed.Seconds(), p.Calls, p.Errors, p.CallsPerSecond, state)
}
