package router

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/meshrpc/mesh/internal/conn"
)

// Timings of connections to other meshds.
const (
	dialTimeout = time.Second
	// dialBackoff is how long a failed dial is remembered, so a dead host
	// costs one dial timeout per period instead of one per call.
	dialBackoff = time.Second
)

// peers keeps one connection per other meshd, dialled on first use.
type peers struct {
	dial  func(ctx context.Context, addr string) (*conn.Conn, error)
	mu    sync.Mutex
	conns map[string]*peer
}

type peer struct {
	ready    chan struct{} // closed when the dial ended
	c        *conn.Conn
	err      error
	failedAt time.Time
}

func newPeers(dial func(ctx context.Context, addr string) (*conn.Conn, error)) *peers {
	return &peers{dial: dial, conns: make(map[string]*peer)}
}

// get returns an open connection to the meshd at addr, dialling if needed.
func (p *peers) get(addr string) (*conn.Conn, error) {
	p.mu.Lock()
	pr := p.conns[addr]
	if pr != nil {
		select {
		case <-pr.ready:
			if pr.c != nil && !pr.c.Closed() {
				p.mu.Unlock()
				return pr.c, nil
			}
			if pr.err != nil && time.Since(pr.failedAt) < dialBackoff {
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
			return nil, fmt.Errorf("no dialer for meshd %s", addr)
		}
		pr = &peer{ready: make(chan struct{})}
		p.conns[addr] = pr
		go p.connect(addr, pr)
	}
	p.mu.Unlock()
	select {
	case <-pr.ready:
	case <-time.After(dialTimeout + 100*time.Millisecond):
		return nil, fmt.Errorf("connecting to meshd %s: timed out", addr)
	}
	if pr.err != nil {
		return nil, pr.err
	}
	return pr.c, nil
}

func (p *peers) connect(addr string, pr *peer) {
	ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
	defer cancel()
	c, err := p.dial(ctx, addr)
	p.mu.Lock()
	pr.c, pr.err = c, err
	if err != nil {
		pr.err = fmt.Errorf("connecting to meshd %s: %w", addr, err)
		pr.failedAt = time.Now()
	}
	p.mu.Unlock()
	close(pr.ready)
}

// forget drops a closed connection so the next call dials again.
func (p *peers) forget(c *conn.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for addr, pr := range p.conns {
		if pr.c == c {
			delete(p.conns, addr)
		}
	}
}

func (p *peers) list() []string {
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
