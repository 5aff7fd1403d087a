package workpool

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Every job runs, concurrently when they wait on each other, and waiting
// workers take the next jobs instead of new goroutines.
func TestPool(t *testing.T) {
	p := New()
	var ran atomic.Int64
	var wg sync.WaitGroup
	gate := make(chan struct{})
	for range 50 { // fifty jobs that all wait for the gate: fifty workers
		wg.Add(1)
		p.Go(func() {
			defer wg.Done()
			<-gate
			ran.Add(1)
		})
	}
	close(gate)
	wg.Wait()
	time.Sleep(10 * time.Millisecond) // the workers are back waiting
	before := runtime.NumGoroutine()
	for range 1000 { // one at a time: a worker is free for each
		wg.Add(1)
		p.Go(func() { ran.Add(1); wg.Done() })
		wg.Wait()
	}
	if ran.Load() != 1050 {
		t.Fatalf("%d jobs ran, want 1050", ran.Load())
	}
	if after := runtime.NumGoroutine(); after > before+5 {
		t.Fatalf("1,000 jobs one at a time started %d goroutines, with 50 workers waiting", after-before)
	}
}

func BenchmarkPool(b *testing.B) {
	deep := func(n int) int { // a job that grows its stack
		var buf [4096]byte
		buf[n%4096] = byte(n)
		return int(buf[0])
	}
	b.Run("pool", func(b *testing.B) {
		p := New()
		var wg sync.WaitGroup
		for b.Loop() {
			wg.Add(1)
			p.Go(func() { deep(1); wg.Done() })
			wg.Wait()
		}
	})
	b.Run("goroutine", func(b *testing.B) {
		var wg sync.WaitGroup
		for b.Loop() {
			wg.Add(1)
			go func() { deep(1); wg.Done() }()
			wg.Wait()
		}
	})
}
