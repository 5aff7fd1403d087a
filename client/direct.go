package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/meshrpc/mesh/discovery"
	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/conn"
	"github.com/meshrpc/mesh/internal/routing"
)

// DialPeers returns a Client that calls services directly on peers (TChannel
// servers' host:port), with no meshd in between. Every call is routed by the
// stages meshd uses (routing.Discover and routing.Balancer): power of two
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
	bal, err := routing.NewBalancer(opts.Policies, opts.Logger)
	if err != nil {
		return nil, fmt.Errorf("DialPeers: %w", err)
	}
	d := &direct{bal: bal, opts: opts, peers: peers}
	d.pool = conn.NewPool(func(ctx context.Context, addr string) (*conn.Conn, error) {
		return conn.Dial(ctx, addr, d.opts.connOptions("", nil))
	})
	d.stages = routing.Pipeline{
		routing.Discover{From: d},
		bal,
		routing.Connect{Balancer: bal, Dial: func(inst discovery.Instance) (*conn.Conn, <-chan struct{}, error) { return d.pool.TryGet(inst.Addr) }},
	}
	d.calls.New = func() any { return new(routing.Call) }
	return &Client{direct: d, opts: opts, caller: callerName(opts), tracer: tracer}, nil
}

// direct routes a Client's calls over several peers.
type direct struct {
	bal    *routing.Balancer
	stages routing.Pipeline
	opts   Options
	peers  []string
	pool   *conn.Pool
	calls  sync.Pool // *routing.Call
	byName sync.Map  // service → []discovery.Instance
}

// Lookup makes every peer an instance of every service (routing.Finder).
// The id names the service too, so breakers and latency are per service.
func (d *direct) Lookup(service string) ([]discovery.Instance, <-chan struct{}, error) {
	if v, ok := d.byName.Load(service); ok {
		return v.([]discovery.Instance), nil, nil
	}
	insts := make([]discovery.Instance, len(d.peers))
	for i, p := range d.peers {
		insts[i] = discovery.Instance{Service: service, ID: service + "@" + p, Addr: p}
	}
	v, _ := d.byName.LoadOrStore(service, insts)
	return v.([]discovery.Instance), nil, nil
}

// call sends req to a peer the stages pick, and on a safe failure to
// another one, with the Balancer's feedback and retry decisions, as meshd's
// relay does.
func (d *direct) call(ctx context.Context, req *conn.Request) (*conn.Response, error) {
	rc := d.calls.Get().(*routing.Call)
	defer d.calls.Put(rc)
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d.opts.Timeout) // one deadline for every attempt
		defer cancel()
	}
	deadline, _ := ctx.Deadline()
	rc.Reset(string(routing.RoutingName([]byte(req.Service), req.Headers)), req.Headers)
	rc.Method = req.Method
	tryTimeout := d.bal.TryTimeout(rc)
	var lastErr error
	for {
		if err := d.stages.RouteWaiting(ctx, rc); err != nil {
			if lastErr != nil {
				return nil, lastErr // nowhere left to retry: the last failure says most
			}
			return nil, err // a *frame.Error: the stage's refusal
		}
		var res *conn.Response
		var err error
		var o routing.Outcome
		if delay := d.bal.HedgeAfter(rc); delay > 0 && len(rc.Tried) == 0 {
			res, err, o = d.hedged(ctx, rc, req, tryTimeout, delay)
		} else {
			att := d.bal.Send(rc)
			res, err = attempt(ctx, rc.Conn, req, tryTimeout)
			o = routing.OutcomeOf(res != nil && res.Code != frame.ResOK, err)
			att.Done(o)
		}
		if err == nil || ctx.Err() != nil || !d.bal.MayRetry(rc, o.Code, time.Until(deadline)) {
			return res, err
		}
		lastErr = err
		select {
		case <-time.After(routing.Backoff(len(rc.Tried), time.Until(deadline))):
		case <-ctx.Done():
			return nil, err
		}
	}
}

// hedged sends req to rc's picked peer and, when no answer came within
// delay and the Balancer allows a hedge (MayHedge), to a second peer too,
// as meshd's relay does: the first answer wins and the other attempt is
// cancelled (its context ends, and conn sends TChannel's cancel); a
// failure of one while the other is in flight waits for the other.
func (d *direct) hedged(ctx context.Context, rc *routing.Call, req *conn.Request, tryTimeout, delay time.Duration) (*conn.Response, error, routing.Outcome) {
	type result struct {
		res   *conn.Response
		err   error
		att   routing.Attempt
		hedge bool
	}
	results := make(chan result, 2)
	var cancels [2]context.CancelFunc
	start := func(c *conn.Conn, hedge bool) {
		att := d.bal.Send(rc)
		actx, cancel := context.WithCancel(ctx)
		cancels[b2i(hedge)] = cancel
		go func() {
			res, err := attempt(actx, c, req, tryTimeout)
			results <- result{res, err, att, hedge}
		}()
	}
	start(rc.Conn, false)
	timer := time.NewTimer(delay)
	defer timer.Stop()
	deadline, _ := ctx.Deadline()
	inFlight := 1
	for {
		select {
		case <-timer.C:
			if d.bal.MayHedge(rc, time.Until(deadline)) && d.stages.Route(rc) == nil { // no waiting: the first may answer meanwhile
				d.bal.HedgeSent(rc.Service)
				start(rc.Conn, true)
				inFlight++
			}
		case r := <-results:
			inFlight--
			o := routing.OutcomeOf(r.res != nil && r.res.Code != frame.ResOK, r.err)
			r.att.Done(o)
			if r.err != nil && inFlight > 0 && ctx.Err() == nil {
				continue // the other attempt may still answer
			}
			if inFlight > 0 { // the other attempt lost
				cancels[1-b2i(r.hedge)]()
				d.bal.HedgeEnded(rc.Service, r.hedge)
				go func() { (<-results).att.Done(routing.CallerGone) }()
			}
			cancels[b2i(r.hedge)]()
			return r.res, r.err, o
		}
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// attempt is one try on one peer, within the per-attempt timeout.
func attempt(ctx context.Context, c *conn.Conn, req *conn.Request, tryTimeout time.Duration) (*conn.Response, error) {
	if tryTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, tryTimeout)
		defer cancel()
	}
	return c.Call(ctx, req)
}

func (d *direct) close() error {
	return d.pool.Each(func(c *conn.Conn) error { return c.Close() })
}

func (d *direct) shutdown(ctx context.Context) error {
	return d.pool.Each(func(c *conn.Conn) error { return c.Shutdown(ctx) })
}

func (d *direct) ping(ctx context.Context) error {
	var errs []error
	for _, p := range d.peers {
		c, err := d.pool.Get(p)
		if err == nil {
			err = c.Ping(ctx)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}
