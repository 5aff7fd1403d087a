// Package workpool runs short jobs on goroutines that outlive them. A job
// that runs deep (a call served through the relay and an in-memory
// connection, all on one goroutine's stack) grows its goroutine's stack;
// on a new goroutine per job, every job paid for that growth, and for the
// goroutine's start. A worker keeps its grown stack for the next job.
package workpool
