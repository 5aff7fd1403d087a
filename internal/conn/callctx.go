package conn

import (
	"context"
	"slices"
	"sync"
	"time"
)

// callCtx is the context of a call served by Options.Async: its deadline
// is the call's ttl, but no timer enforces it and it is no child of the
// connection's context. The peer of an Async connection (meshd's relay)
// ends every call at its ttl with a cancel, and the connection's close
// cancels the calls it has open, so neither is needed: a context.WithTimeout
// per call cost a runtime timer, a child in the connection's context (a
// lock shared by every call) and five allocations. context.AfterFunc uses
// its AfterFunc, with no goroutine.
type callCtx struct {
	deadline time.Time

	mu    sync.Mutex
	err   error
	done  chan struct{} // made when asked for
	first afterCall     // the first AfterFunc's, inline: most calls register one
	after []*afterCall  // the others'
}

// afterCall is a function AfterFunc runs when its context ends.
type afterCall struct {
	ctx *callCtx // nil: the slot was never used
	f   func()   // nil once run or stopped
}

// closedDone is the Done of every call context that ended before anyone asked.
var closedDone = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

func (c *callCtx) Deadline() (time.Time, bool) { return c.deadline, true }
func (c *callCtx) Value(any) any               { return nil }

func (c *callCtx) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		if c.err != nil {
			return closedDone
		}
		c.done = make(chan struct{})
	}
	return c.done
}

func (c *callCtx) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// AfterFunc runs f on a goroutine of its own once c ends (at once if it
// has); stop unregisters it, reporting whether that stopped it from running.
// context.AfterFunc calls it.
func (c *callCtx) AfterFunc(f func()) (stop func() bool) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		go f()
		return func() bool { return false }
	}
	a := &c.first
	if a.ctx == nil {
		a.ctx, a.f = c, f
	} else {
		a = &afterCall{ctx: c, f: f}
		c.after = append(c.after, a)
	}
	c.mu.Unlock()
	return a.stop
}

func (a *afterCall) stop() bool {
	c := a.ctx
	c.mu.Lock()
	defer c.mu.Unlock()
	if a.f == nil {
		return false
	}
	a.f = nil
	if i := slices.Index(c.after, a); i >= 0 {
		c.after = slices.Delete(c.after, i, i+1)
	}
	return true
}

// cancel ends c with context.Canceled, once.
func (c *callCtx) cancel() {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = context.Canceled
	if c.done != nil {
		close(c.done)
	}
	c.first.run()
	for _, a := range c.after {
		a.run()
	}
	c.after = nil
	c.mu.Unlock()
}

// run starts a's function on a goroutine of its own, unless it ran or was
// stopped; stop then says it came too late. Called with the context's mu
// held (the go statement only starts it).
func (a *afterCall) run() {
	if a.f != nil {
		go a.f()
		a.f = nil
	}
}
