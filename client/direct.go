package client

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/meshrpc/mesh/discovery"
	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/conn"
	"github.com/meshrpc/mesh/router"
)

// DialPeers returns a Client that calls services directly on peers (TChannel
// servers' host:port), with no meshd in between. Every call is routed by the
// stages meshd uses (router.Discover and router.Balancer): power of two
// choices on peak-EWMA latency, or rendezvous hashing on a shard key, or
// round robin; a circuit breaker per peer and service; retries of safe
// failures on another peer within the deadline and a retry budget; a
// per-attempt timeout, all as opts.Policies says per service. Connections
// are made on first use and remade after they fail.
func DialPeers(ctx context.Context, peers []string, opts Options) (*Client, error) {
	if len(peers) == 0 {
		return nil, errors.New("DialPeers: no peers")
	}
	opts = opts.withDefaults()
	tracer, err := opts.tracer()
	if err != nil {
		return nil, err
	}
	bal, err := router.NewBalancer(opts.Policies, opts.Logger)
	if err != nil {
		return nil, fmt.Errorf("DialPeers: %w", err)
	}
	d := &direct{bal: bal, opts: opts, peers: peers, caller: []byte(callerName(opts)), conns: make(map[string]*conn.Conn)}
	d.stages = router.Pipeline{router.Discover{From: d}, bal}
	d.calls.New = func() any { return new(router.Call) }
	return &Client{direct: d, opts: opts, caller: callerName(opts), tracer: tracer}, nil
}

// direct routes a Client's calls over several peers.
type direct struct {
	bal    *router.Balancer
	stages router.Pipeline
	opts   Options
	peers  []string
	caller []byte
	calls  sync.Pool // *router.Call
	byName sync.Map  // service → []discovery.Instance

	mu    sync.Mutex
	conns map[string]*conn.Conn
}

// Instances makes every peer an instance of every service (router.Finder).
// The id names the service too, so breakers and latency are per service.
func (d *direct) Instances(_ context.Context, service string) ([]discovery.Instance, error) {
	if v, ok := d.byName.Load(service); ok {
		return v.([]discovery.Instance), nil
	}
	insts := make([]discovery.Instance, len(d.peers))
	for i, p := range d.peers {
		insts[i] = discovery.Instance{Service: service, ID: service + "@" + p, Addr: p}
	}
	v, _ := d.byName.LoadOrStore(service, insts)
	return v.([]discovery.Instance), nil
}

// conn returns the connection to addr, dialling it when there is none or it
// closed.
func (d *direct) conn(ctx context.Context, addr string) (*conn.Conn, error) {
	d.mu.Lock()
	c := d.conns[addr]
	d.mu.Unlock()
	if c != nil && !c.Closed() {
		return c, nil
	}
	c, err := conn.Dial(ctx, addr, d.opts.connOptions("", nil))
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if old := d.conns[addr]; old != nil && !old.Closed() {
		c.Close() // another call dialled first
		return old, nil
	}
	d.conns[addr] = c
	return c, nil
}

// call sends req to a peer the stages pick, and on a safe failure to
// another one, as meshd's relay would.
func (d *direct) call(ctx context.Context, req *conn.Request) (*conn.Response, error) {
	rc := d.calls.Get().(*router.Call)
	defer d.calls.Put(rc)
	key, sharded := req.Headers.Get(frame.HeaderShardKey)
	if !sharded {
		key = nil
	} else if key == nil {
		key = []byte{}
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d.opts.Timeout) // one deadline for every attempt
		defer cancel()
	}
	rc.Reset(req.Service, d.caller, key)
	re, _ := req.Headers.Get(frame.HeaderRetryFlags)
	tryTimeout := d.bal.Policy(req.Service).TryTimeout.D()
	var lastErr error
	for {
		if err := d.stages.Route(rc); err != nil {
			if lastErr != nil {
				return nil, lastErr // nowhere left to retry: the last failure says most
			}
			return nil, err // a *frame.Error: the stage's refusal
		}
		start := time.Now()
		d.bal.Sent(rc)
		res, err := d.attempt(ctx, rc.Instance().Addr, req, tryTimeout)
		var code frame.ErrCode
		if err != nil {
			code = frame.CodeOf(err)
		}
		d.bal.Done(rc, start, code)
		if err == nil || ctx.Err() != nil || !d.bal.MayRetry(rc, code, re) {
			return res, err
		}
		lastErr = err
		dl, _ := ctx.Deadline()
		select {
		case <-time.After(router.Backoff(len(rc.Tried), time.Until(dl))):
		case <-ctx.Done():
			return nil, err
		}
	}
}

// attempt is one try on one peer, within the per-attempt timeout.
func (d *direct) attempt(ctx context.Context, addr string, req *conn.Request, tryTimeout time.Duration) (*conn.Response, error) {
	c, err := d.conn(ctx, addr)
	if err != nil {
		return nil, &frame.Error{Code: frame.ErrCodeNetwork, Message: fmt.Sprintf("dial %s: %v", addr, err)}
	}
	if tryTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, tryTimeout)
		defer cancel()
	}
	return c.Call(ctx, req)
}

func (d *direct) close() error {
	return d.each(func(c *conn.Conn) error { return c.Close() })
}

func (d *direct) shutdown(ctx context.Context) error {
	return d.each(func(c *conn.Conn) error { return c.Shutdown(ctx) })
}

// each runs f on every connection made so far (not under the lock: a
// shutdown waits for calls in flight).
func (d *direct) each(f func(*conn.Conn) error) error {
	d.mu.Lock()
	conns := slices.Collect(maps.Values(d.conns))
	d.mu.Unlock()
	var errs []error
	for _, c := range conns {
		errs = append(errs, f(c))
	}
	return errors.Join(errs...)
}

func (d *direct) ping(ctx context.Context) error {
	var errs []error
	for _, p := range d.peers {
		c, err := d.conn(ctx, p)
		if err == nil {
			err = c.Ping(ctx)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}
