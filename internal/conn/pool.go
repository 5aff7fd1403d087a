package conn

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/meshrpc/mesh/internal/backoff"
)

// Timings of a Pool's connections.
const (
	poolDialTimeout = time.Second
	// A failed dial marks its address down: it fails at once from then on,
	// and is tried again in the background after a wait that doubles from
	// poolDownMin to poolDownMax while it stays down, so a dead peer costs
	// no caller a dial timeout after the first.
	poolDownMin = time.Second
	poolDownMax = 10 * time.Second
)

// Pool keeps one connection per peer address, dialled on first use and
// again after it closed; concurrent users of an address share one dial.
// meshd holds its connections to other meshds in one, the SDK's direct mode
// its connections to peers.
type Pool struct {
	dial  func(ctx context.Context, addr string) (*Conn, error)
	mu    sync.Mutex
	conns map[string]*pooled
}

type pooled struct {
	ready chan struct{} // closed when the dial ended
	c     *Conn
	err   *DownError      // the last failed dial's, while the address is down
	down  backoff.Backoff // the waits between tries of a down address
	probe bool            // a dial of a down address: its users do not wait for it
}

// DownError is the error of a dial to an address that failed: the Pool
// answers it at once until RetryAt, when it tries again in the background.
type DownError struct {
	Addr  string
	Err   error
	Until time.Time
}

func (e *DownError) Error() string { return "connecting to " + e.Addr + ": " + e.Err.Error() }
func (e *DownError) Unwrap() error { return e.Err }

// RetryAt is when the Pool tries the address again.
func (e *DownError) RetryAt() time.Time { return e.Until }

// NewPool returns a Pool that opens connections with dial.
func NewPool(dial func(ctx context.Context, addr string) (*Conn, error)) *Pool {
	return &Pool{dial: dial, conns: make(map[string]*pooled)}
}

// TryGet returns an open connection to addr without waiting: the open one,
// or ready (closed when the dial it starts, or one under way, ends: ask
// again then), or at once a *DownError while addr is down (and a dial in
// the background once its wait is over).
func (p *Pool) TryGet(addr string) (*Conn, <-chan struct{}, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pr := p.conns[addr]
	if pr != nil {
		select {
		case <-pr.ready:
			switch {
			case pr.c != nil && !pr.c.Closed():
				return pr.c, nil, nil
			case pr.err != nil:
				if time.Now().After(pr.err.Until) {
					p.start(addr, &pooled{probe: true, err: pr.err, down: pr.down})
				}
				return nil, nil, pr.err
			}
			// closed since it was made: dial again
		default:
			if pr.probe {
				return nil, nil, pr.err
			}
			return nil, pr.ready, nil
		}
	}
	if p.dial == nil {
		return nil, nil, fmt.Errorf("no dialer for %s", addr)
	}
	return nil, p.start(addr, &pooled{down: backoff.Backoff{Min: poolDownMin, Max: poolDownMax}}).ready, nil
}

// Get is TryGet for callers that may wait: it waits for a dial (up to its
// timeout) and returns its connection or error.
func (p *Pool) Get(addr string) (*Conn, error) {
	for {
		c, ready, err := p.TryGet(addr)
		if ready == nil {
			return c, err
		}
		select {
		case <-ready:
		case <-time.After(poolDialTimeout + 100*time.Millisecond):
			return nil, fmt.Errorf("connecting to %s: timed out", addr)
		}
	}
}

// start dials addr into pr, which takes its place. Called with mu held.
func (p *Pool) start(addr string, pr *pooled) *pooled {
	pr.ready = make(chan struct{})
	p.conns[addr] = pr
	go p.connect(addr, pr)
	return pr
}

func (p *Pool) connect(addr string, pr *pooled) {
	ctx, cancel := context.WithTimeout(context.Background(), poolDialTimeout)
	defer cancel()
	c, err := p.dial(ctx, addr)
	p.mu.Lock()
	pr.c, pr.err = c, nil
	if err != nil {
		pr.err = &DownError{Addr: addr, Err: err, Until: time.Now().Add(pr.down.Next())}
	}
	p.mu.Unlock()
	close(pr.ready)
}

// Forget drops a closed connection so the next Get dials again.
func (p *Pool) Forget(c *Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for addr, pr := range p.conns {
		if pr.c == c {
			delete(p.conns, addr)
		}
	}
}

// Addrs lists the addresses the Pool has open connections to, sorted.
func (p *Pool) Addrs() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for addr, pr := range p.conns {
		if pr.c != nil && !pr.c.Closed() {
			out = append(out, addr)
		}
	}
	slices.Sort(out)
	return out
}

// Each runs f on every open connection (not under the Pool's lock, so f may
// wait: a Shutdown waits for calls in flight).
func (p *Pool) Each(f func(*Conn) error) error {
	p.mu.Lock()
	var conns []*Conn
	for _, pr := range p.conns {
		select {
		case <-pr.ready:
			if pr.c != nil {
				conns = append(conns, pr.c)
			}
		default:
		}
	}
	p.mu.Unlock()
	var errs []error
	for _, c := range conns {
		errs = append(errs, f(c))
	}
	return errors.Join(errs...)
}
