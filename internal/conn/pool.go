package conn

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Timings of a Pool's connections.
const (
	poolDialTimeout = time.Second
	// poolDialBackoff is how long a failed dial is remembered, so a dead
	// peer costs one dial timeout per period instead of one per call.
	poolDialBackoff = time.Second
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
	ready    chan struct{} // closed when the dial ended
	c        *Conn
	err      error
	failedAt time.Time
}

// NewPool returns a Pool that opens connections with dial.
func NewPool(dial func(ctx context.Context, addr string) (*Conn, error)) *Pool {
	return &Pool{dial: dial, conns: make(map[string]*pooled)}
}

// Get returns an open connection to addr, dialling if needed. A dial that
// failed less than a second ago fails at once with the same error.
func (p *Pool) Get(addr string) (*Conn, error) {
	p.mu.Lock()
	pr := p.conns[addr]
	if pr != nil {
		select {
		case <-pr.ready:
			if pr.c != nil && !pr.c.Closed() {
				p.mu.Unlock()
				return pr.c, nil
			}
			if pr.err != nil && time.Since(pr.failedAt) < poolDialBackoff {
				p.mu.Unlock()
				return nil, pr.err
			}
			pr = nil // closed or failed long enough ago: dial again
		default: // a dial is under way: wait for it
		}
	}
	if pr == nil {
		if p.dial == nil {
			p.mu.Unlock()
			return nil, fmt.Errorf("no dialer for %s", addr)
		}
		pr = &pooled{ready: make(chan struct{})}
		p.conns[addr] = pr
		go p.connect(addr, pr)
	}
	p.mu.Unlock()
	select {
	case <-pr.ready:
	case <-time.After(poolDialTimeout + 100*time.Millisecond):
		return nil, fmt.Errorf("connecting to %s: timed out", addr)
	}
	if pr.err != nil {
		return nil, pr.err
	}
	return pr.c, nil
}

func (p *Pool) connect(addr string, pr *pooled) {
	ctx, cancel := context.WithTimeout(context.Background(), poolDialTimeout)
	defer cancel()
	c, err := p.dial(ctx, addr)
	p.mu.Lock()
	pr.c, pr.err = c, err
	if err != nil {
		pr.err = fmt.Errorf("connecting to %s: %w", addr, err)
		pr.failedAt = time.Now()
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
