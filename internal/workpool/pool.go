package workpool

import "time"

// Pool runs jobs on goroutines that outlive them; its zero value is not
// ready, use New. A worker waits Idle for its next job, then ends.
type Pool struct {
	jobs chan func()
}

// Idle is how long an idle worker waits for a job before it ends.
const Idle = 10 * time.Second

// New returns an empty Pool: its workers start with its first jobs.
func New() *Pool { return &Pool{jobs: make(chan func())} }

// Go runs job on an idle worker, or on a new one.
func (w *Pool) Go(job func()) {
	select {
	case w.jobs <- job:
	default:
		go w.work(job)
	}
}

func (w *Pool) work(job func()) {
	t := time.NewTimer(Idle)
	defer t.Stop()
	for {
		job()
		t.Reset(Idle)
		select {
		case job = <-w.jobs:
		case <-t.C:
			return
		}
	}
}
