package follow

import (
	"context"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/meshrpc/mesh/internal/backoff"
)

// Config tunes a loop; its zero value works.
type Config struct {
	// Wait bounds one blocking query (Consul's own default, and its cap, is
	// 5 and 10 minutes). Default 5m.
	Wait time.Duration
	// From is the index to start at (0: answer at once).
	From uint64
	// Failed hears each failed query, before the wait that follows it.
	Failed func(error)
	// Backoff is the wait between a failure and the next try; default from
	// 100ms, doubling, up to 5s.
	Backoff backoff.Backoff
}

// Defaults of Config.
const (
	DefaultWait       = 5 * time.Minute
	DefaultBackoffMin = 100 * time.Millisecond
	DefaultBackoffMax = 5 * time.Second
)

// Run follows one query until ctx ends. get runs the query with q (its
// WaitIndex, WaitTime and context set; get may add to it) and returns its
// answer; apply gets each answer whose index differs from the last one
// applied (a wait that ended with nothing new is not handed on), in order,
// on Run's goroutine.
//
// Index rules, as Consul documents them for blocking-query clients: an
// index that goes backwards (a restored snapshot, another server after a
// leader change) starts over from 0, which answers at once; an index of 0
// after an answer is taken as 1, so a buggy answer cannot turn the loop
// into a busy one; after a failure the next query asks from 0, so the first
// answer after an outage comes at once, not at the next change.
func Run[T any](ctx context.Context, cfg Config, get func(*api.QueryOptions) (T, *api.QueryMeta, error), apply func(T, *api.QueryMeta)) {
	wait := cfg.Wait
	if wait <= 0 {
		wait = DefaultWait
	}
	bo := cfg.Backoff
	if bo.Min <= 0 {
		bo = backoff.Backoff{Min: DefaultBackoffMin, Max: DefaultBackoffMax}
	}
	index, applied := cfg.From, false
	for ctx.Err() == nil {
		q := (&api.QueryOptions{WaitIndex: index, WaitTime: wait}).WithContext(ctx)
		v, meta, err := get(q)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			if cfg.Failed != nil {
				cfg.Failed(err)
			}
			index, applied = 0, false
			if !bo.Wait(ctx.Done()) {
				return
			}
			continue
		}
		bo.Reset()
		next := Next(index, meta.LastIndex)
		if !applied || next != index {
			apply(v, meta)
			applied = true
		}
		index = next
	}
}

// Next is the index to wait on after an answer at got to a query that
// waited on prev: got itself, but 0 when it went backwards and 1 when it
// is 0 (Consul's rules for blocking-query clients).
func Next(prev, got uint64) uint64 {
	switch {
	case got < prev:
		return 0
	case got == 0:
		return 1
	}
	return got
}
