package grpcgate

import "time"

// workers runs jobs on goroutines that outlive them. A gRPC call's
// goroutine runs deep (the gateway, the relay and the callee's in-memory
// connection, all on its stack) and grows its stack to do so: a goroutine
// of its own per call paid for that growth, a tenth of meshd's CPU, on
// every call. A worker waits workerIdle for its next job, then ends.
type workers struct {
	jobs chan func()
}

// workerIdle is how long an idle worker waits for a job before it ends.
const workerIdle = 10 * time.Second

func newWorkers() *workers { return &workers{jobs: make(chan func())} }

// run hands job to an idle worker, or starts one.
func (w *workers) run(job func()) {
	select {
	case w.jobs <- job:
	default:
		go w.work(job)
	}
}

func (w *workers) work(job func()) {
	t := time.NewTimer(workerIdle)
	defer t.Stop()
	for {
		job()
		t.Reset(workerIdle)
		select {
		case job = <-w.jobs:
		case <-t.C:
			return
		}
	}
}
