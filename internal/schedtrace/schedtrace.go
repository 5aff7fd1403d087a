package schedtrace

import (
	"io"
	"slices"
	"time"

	"golang.org/x/exp/trace"
)

// Summary is what one trace says about waiting.
type Summary struct {
	Span  time.Duration // from the first event to the last
	Procs int           // processors seen running
	// Wakes counts goroutines made runnable, by the reason they had
	// blocked with ("network", "select", "chan receive", "sync", ...).
	Wakes map[string]int
	// Runnable holds, by the same reason, how long each woken goroutine
	// waited for a processor, sorted.
	Runnable map[string][]time.Duration
	// IdlePeriods counts the times a processor went idle; Idle sums how
	// long they stayed so.
	IdlePeriods int
	Idle        time.Duration
}

// Read reads a whole trace.
func Read(r io.Reader) (*Summary, error) {
	tr, err := trace.NewReader(r)
	if err != nil {
		return nil, err
	}
	s := &Summary{Wakes: map[string]int{}, Runnable: map[string][]time.Duration{}}
	blockedOn := map[trace.GoID]string{}       // why each waiting goroutine waits
	woken := map[trace.GoID]wake{}             // goroutines runnable since a wake-up
	idleSince := map[trace.ProcID]trace.Time{} // processors idle now
	procs := map[trace.ProcID]bool{}
	var first, last trace.Time
	for {
		ev, err := tr.ReadEvent()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		t := ev.Time()
		if first == 0 {
			first = t
		}
		last = t
		if ev.Kind() != trace.EventStateTransition {
			continue
		}
		st := ev.StateTransition()
		switch st.Resource.Kind {
		case trace.ResourceProc:
			p := st.Resource.Proc()
			from, to := st.Proc()
			switch {
			case to == trace.ProcRunning:
				procs[p] = true
				if since, ok := idleSince[p]; ok && from == trace.ProcIdle {
					s.Idle += t.Sub(since)
					delete(idleSince, p)
				}
			case from == trace.ProcRunning && to == trace.ProcIdle:
				s.IdlePeriods++
				idleSince[p] = t
			}
		case trace.ResourceGoroutine:
			g := st.Resource.Goroutine()
			from, to := st.Goroutine()
			switch {
			case from == trace.GoRunning && to == trace.GoWaiting:
				blockedOn[g] = st.Reason
			case from == trace.GoWaiting && to == trace.GoRunnable:
				why := blockedOn[g]
				s.Wakes[why]++
				woken[g] = wake{at: t, why: why}
			case from == trace.GoRunnable && to == trace.GoRunning:
				if w, ok := woken[g]; ok {
					s.Runnable[w.why] = append(s.Runnable[w.why], t.Sub(w.at))
					delete(woken, g)
				}
			}
		}
	}
	for why := range s.Runnable {
		slices.Sort(s.Runnable[why])
	}
	s.Span, s.Procs = last.Sub(first), len(procs)
	return s, nil
}

type wake struct {
	at  trace.Time
	why string
}

// WakesExcept counts the wake-ups of every reason but the ones named.
func (s *Summary) WakesExcept(reasons ...string) int {
	n := 0
	for why, k := range s.Wakes {
		if !slices.Contains(reasons, why) {
			n += k
		}
	}
	return n
}

// RunnableQuantile is the q quantile (0 to 1) of how long goroutines
// woken from reason waited for a processor; 0 if none were.
func (s *Summary) RunnableQuantile(reason string, q float64) time.Duration {
	d := s.Runnable[reason]
	if len(d) == 0 {
		return 0
	}
	return d[min(int(q*float64(len(d))), len(d)-1)]
}

// IdleShare is the share of the processors' time spent idle.
func (s *Summary) IdleShare() float64 {
	if s.Span <= 0 || s.Procs == 0 {
		return 0
	}
	return float64(s.Idle) / (float64(s.Span) * float64(s.Procs))
}
