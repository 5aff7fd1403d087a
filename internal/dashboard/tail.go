package dashboard

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/meshrpc/mesh/internal/relay"
)

// tailEvery is how often the live tail reads the calls recorded since.
const tailEvery = 250 * time.Millisecond

// tailFilter keeps the calls a tail asked for.
type tailFilter struct {
	service, caller, method, outcome string
	failed                           bool    // only calls not answered (ok or app_error)
	slowMs                           float64 // only calls that took at least this long
}

func (f tailFilter) keep(e relay.Explanation) bool {
	switch {
	case f.service != "" && e.Service != f.service,
		f.caller != "" && e.Caller != f.caller,
		f.method != "" && e.Method != f.method,
		f.outcome != "" && e.Outcome != f.outcome:
		return false
	}
	answered := e.Outcome == "ok" || e.Outcome == "app_error"
	if f.failed && answered && f.slowMs == 0 {
		return false
	}
	if f.slowMs > 0 && e.Millis < f.slowMs && !(f.failed && !answered) {
		return false
	}
	return true
}

// tail streams the calls this meshd records as they end, as server-sent
// events ("call", one JSON explanation each; "missed", how many the ring
// dropped before they were read): ?service= &caller= &method= &outcome=
// narrow it; ?failed=1 keeps calls not answered, ?slow_ms=N calls at least
// that slow (both: either).
func (d *dash) tail(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := tailFilter{service: q.Get("service"), caller: q.Get("caller"), method: q.Get("method"), outcome: q.Get("outcome"), failed: q.Get("failed") == "1"}
	if v := q.Get("slow_ms"); v != "" {
		ms, err := strconv.ParseFloat(v, 64)
		if err != nil || ms < 0 {
			http.Error(w, "slow_ms: want milliseconds", http.StatusBadRequest)
			return
		}
		f.slowMs = ms
	}
	flusher, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	_, cursor, _ := d.cfg.Since(0, 0) // from now on
	fmt.Fprint(w, ": mesh live tail\n\n")
	flusher.Flush()
	t := time.NewTicker(tailEvery)
	defer t.Stop()
	idle := 0
	for {
		select {
		case <-r.Context().Done():
			return
		case <-t.C:
		}
		calls, next, missed := d.cfg.Since(cursor, 1000)
		cursor = next
		sent := 0
		for _, c := range calls {
			if !f.keep(c) {
				continue
			}
			b, _ := json.Marshal(c)
			fmt.Fprintf(w, "event: call\ndata: %s\n\n", b)
			sent++
		}
		if missed > 0 {
			fmt.Fprintf(w, "event: missed\ndata: %d\n\n", missed)
			sent++
		}
		if idle++; sent > 0 || idle >= 60 { // a comment every 15 s keeps proxies from closing it
			if sent == 0 {
				fmt.Fprint(w, ": idle\n\n")
			}
			idle = 0
			flusher.Flush()
		}
	}
}
