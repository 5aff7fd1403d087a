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

// TailFilter keeps the calls a tail asked for; its zero value keeps all.
type TailFilter struct {
	Service string `json:"service,omitempty"`
	Caller  string `json:"caller,omitempty"`
	Method  string `json:"method,omitempty"`
	Outcome string `json:"outcome,omitempty"` // a result label, e.g. timeout
	// Failed keeps calls not answered (ok or app_error), SlowMs those that
	// took at least that long; with both, either.
	Failed bool    `json:"failed,omitempty"`
	SlowMs float64 `json:"slow_ms,omitempty"`
}

// Keep reports whether e passes the filter.
func (f TailFilter) Keep(e relay.Explanation) bool {
	switch {
	case f.Service != "" && e.Service != f.Service,
		f.Caller != "" && e.Caller != f.Caller,
		f.Method != "" && e.Method != f.Method,
		f.Outcome != "" && e.Outcome != f.Outcome:
		return false
	}
	failed := e.Outcome != "ok" && e.Outcome != "app_error"
	slow := f.SlowMs > 0 && e.Millis >= f.SlowMs
	switch {
	case f.Failed && f.SlowMs > 0:
		return failed || slow
	case f.Failed:
		return failed
	case f.SlowMs > 0:
		return slow
	}
	return true
}

// TailAnswer is what meshd::tail answers meshctl tap.
type TailAnswer struct {
	Calls  []relay.Explanation `json:"calls"`
	Next   uint64              `json:"next"` // the cursor to ask from next
	Missed uint64              `json:"missed"`
}

// Tail is the calls recorded after cursor that pass f (at most limit
// read), the cursor to ask from next, and how many went by unread.
func (v *Views) Tail(cursor uint64, limit int, f TailFilter) (calls []relay.Explanation, next, missed uint64) {
	all, next, missed := v.cfg.Since(cursor, limit)
	for _, c := range all {
		if f.Keep(c) {
			calls = append(calls, c)
		}
	}
	return calls, next, missed
}

// tail streams the calls this meshd records as they end, as server-sent
// events ("call", one JSON explanation each; "missed", how many the ring
// dropped before they were read): ?service= &caller= &method= &outcome=
// narrow it; ?failed=1 keeps calls not answered, ?slow_ms=N calls at least
// that slow (both: either).
func (d *dash) tail(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := TailFilter{Service: q.Get("service"), Caller: q.Get("caller"), Method: q.Get("method"), Outcome: q.Get("outcome"), Failed: q.Get("failed") == "1"}
	if v := q.Get("slow_ms"); v != "" {
		ms, err := strconv.ParseFloat(v, 64)
		if err != nil || ms < 0 {
			http.Error(w, "slow_ms: want milliseconds", http.StatusBadRequest)
			return
		}
		f.SlowMs = ms
	}
	flusher, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	_, cursor, _ := d.v.cfg.Since(0, 0) // from now on
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
		calls, next, missed := d.v.Tail(cursor, 1000, f)
		cursor = next
		sent := 0
		for _, c := range calls {
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
