package schedtrace

import (
	"bytes"
	"runtime"
	"runtime/trace"
	"strings"
	"testing"
	"time"
)

// record runs f under runtime/trace on one processor, so every hand-off
// between goroutines is a wake-up, and returns the trace.
func record(t *testing.T, f func()) *bytes.Buffer {
	t.Helper()
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	var buf bytes.Buffer
	if err := trace.Start(&buf); err != nil {
		t.Skipf("a trace is running already: %v", err)
	}
	f()
	trace.Stop()
	return &buf
}

func TestRead(t *testing.T) {
	const rounds = 1000
	tests := []struct {
		name  string
		run   func()
		check func(t *testing.T, s *Summary)
	}{
		{
			name: "ping-pong on channels: two wake-ups a round",
			run: func() {
				ping, pong := make(chan int), make(chan int)
				go func() {
					for v := range ping {
						pong <- v
					}
					close(pong)
				}()
				for i := range rounds {
					ping <- i
					<-pong
				}
				close(ping)
				<-pong
			},
			check: func(t *testing.T, s *Summary) {
				// One goroutine waits on each hand-off, on its send or
				// its receive as the one processor ran them: 2 wake-ups a
				// round, give or take the ends.
				n := s.Wakes["chan send"] + s.Wakes["chan receive"]
				if n < 2*rounds-2 || n > 2*rounds+2 {
					t.Errorf("%d wake-ups from channels, want about %d (all: %v)", n, 2*rounds, s.Wakes)
				}
				waits := len(s.Runnable["chan send"]) + len(s.Runnable["chan receive"])
				if waits != n {
					t.Errorf("%d waits for the processor after %d wake-ups, want one each", waits, n)
				}
				why := "chan send"
				if s.Wakes["chan receive"] > s.Wakes[why] {
					why = "chan receive"
				}
				if p99 := s.RunnableQuantile(why, 0.99); p99 <= 0 || p99 > 100*time.Millisecond {
					t.Errorf("p99 wait for the processor %v", p99)
				}
				if s.Procs != 1 {
					t.Errorf("%d processors, want 1", s.Procs)
				}
			},
		},
		{
			name: "a sleep: the processor idles",
			run:  func() { time.Sleep(50 * time.Millisecond) },
			check: func(t *testing.T, s *Summary) {
				if s.IdlePeriods < 1 || s.Idle < 40*time.Millisecond {
					t.Errorf("idle %v in %d periods, want 50ms in at least one", s.Idle, s.IdlePeriods)
				}
				if share := s.IdleShare(); share < 0.5 || share > 1 {
					t.Errorf("idle share %.2f of %v on %d processors", share, s.Span, s.Procs)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Read(record(t, tc.run))
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, s)
		})
	}
}

func TestReadRefusesWhatIsNoTrace(t *testing.T) {
	for _, in := range []string{"", "not a trace", "go 1.26 trace\x00\x00\x00\xff\xff\xff\xff\xffnot events"} {
		if _, err := Read(strings.NewReader(in)); err == nil {
			t.Errorf("%q read as a trace", in)
		}
	}
}

func TestWakesExcept(t *testing.T) {
	s := &Summary{Wakes: map[string]int{"network": 5, "select": 3, "sync": 1}}
	if n := s.WakesExcept("network"); n != 4 {
		t.Fatalf("WakesExcept(network) = %d, want 4", n)
	}
}
