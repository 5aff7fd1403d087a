package meshd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/meshrpc/mesh/discovery"
	"github.com/meshrpc/mesh/discovery/consul"
	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/conn"
	"github.com/meshrpc/mesh/internal/lograte"
	"github.com/meshrpc/mesh/internal/relay"
	"github.com/meshrpc/mesh/internal/tracing"
	"github.com/meshrpc/mesh/router"
)

// Config is everything meshd needs to run. cmd/meshd fills it from flags,
// environment and a config file.
type Config struct {
	Listen    string // TChannel listener for apps and other meshds
	Advertise string // routable address registered for local instances; default: Listen
	Admin     string // admin HTTP listener; empty disables it
	Pprof     bool   // serve /debug/pprof on the admin listener
	NodeName  string // this host's name in the registry; default: hostname
	// Registry is where instances are registered and looked up.
	Registry discovery.Registry
	// DrainTimeout bounds how long a stop waits for calls in flight.
	DrainTimeout time.Duration
	Logger       *slog.Logger
	// Policies are the per-service policies to start with.
	Policies router.Policies
	// Tracer records spans of relayed calls (nil: no tracing).
	Tracer *tracing.Tracer
	// Limits bound what connections can make meshd hold (limits.go).
	Limits Limits
}

// Daemon is a running meshd.
type Daemon struct {
	cfg      Config
	log      *slog.Logger
	registry discovery.Registry
	relay    *relay.Relay
	lis      net.Listener
	admin    *http.Server
	apps     apps
	started  time.Time

	limits   Limits
	adm      admission
	closed   closures
	queued   *conn.QueueBudget // bytes queued for slow peers, in all
	logLimit *lograte.Handler

	mu    sync.Mutex
	conns map[*conn.Conn]struct{}
	ready bool
}

// Start opens the listeners and begins serving; Shutdown stops it.
func Start(cfg Config) (*Daemon, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	// One kind of fault (a peer's garbage on many connections) writes a few
	// lines a second at most; the rest is counted (mesh_log_suppressed_total).
	logLimit := lograte.New(cfg.Logger.Handler())
	cfg.Logger = slog.New(logLimit)
	if cfg.Registry == nil {
		cfg.Registry = discovery.NewLocal()
	}
	if cfg.DrainTimeout == 0 {
		cfg.DrainTimeout = 10 * time.Second
	}
	if cfg.NodeName == "" {
		cfg.NodeName, _ = os.Hostname()
	}
	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	if cfg.Advertise == "" {
		cfg.Advertise = lis.Addr().String()
	}
	if host, _, _ := net.SplitHostPort(cfg.Advertise); host == "0.0.0.0" || host == "::" || host == "" {
		lis.Close()
		return nil, fmt.Errorf("listening on %s: set an advertise address other hosts can reach", cfg.Advertise)
	}
	d := &Daemon{
		cfg:      cfg,
		log:      cfg.Logger,
		registry: cfg.Registry,
		lis:      lis,
		conns:    make(map[*conn.Conn]struct{}),
		started:  time.Now(),
		limits:   cfg.Limits.withDefaults(),
		logLimit: logLimit,
	}
	d.queued = &conn.QueueBudget{Max: int64(d.limits.MaxQueuedTotal)}
	d.apps.byCon = make(map[*conn.Conn]*app)
	d.relay = relay.New(relay.Config{
		Self:     cfg.Advertise,
		Registry: cfg.Registry,
		Own:      []string{hyperbahnService, meshdService},
		Dial:     d.dialPeer,
		Logger:   cfg.Logger,
		Policies: cfg.Policies,
		Tracer:   cfg.Tracer,
		Limits:   d.limits.Limits,
	})
	if cfg.Admin != "" {
		al, err := net.Listen("tcp", cfg.Admin)
		if err != nil {
			lis.Close()
			return nil, fmt.Errorf("admin listen %s: %w", cfg.Admin, err)
		}
		d.admin = &http.Server{Handler: d.adminHandler(), ReadHeaderTimeout: 5 * time.Second}
		go d.admin.Serve(al)
		d.cfg.Admin = al.Addr().String()
	}
	go d.accept()
	d.mu.Lock()
	d.ready = true
	d.mu.Unlock()
	d.log.Info("meshd started", "listen", lis.Addr().String(), "advertise", cfg.Advertise,
		"admin", d.cfg.Admin, "registry", cfg.Registry.Status().Backend)
	return d, nil
}

// SetPolicies replaces the per-service policies; invalid ones are refused
// and the policies in force stay.
func (d *Daemon) SetPolicies(ps router.Policies) error { return d.relay.SetPolicies(ps) }

// Addr is the TChannel listener's address.
func (d *Daemon) Addr() string { return d.lis.Addr().String() }

// AdminAddr is the admin HTTP listener's address ("" if disabled).
func (d *Daemon) AdminAddr() string { return d.cfg.Admin }

func (d *Daemon) connOptions() conn.Options {
	return conn.Options{
		HostPort:    d.cfg.Advertise,
		ProcessName: "meshd " + d.cfg.NodeName,
		Handler:     d.handle,
		Relayer:     d.relay,
		Logger:      d.log,
		OnClose:     d.connClosed,

		HandshakeTimeout: d.limits.HandshakeTimeout,
		IdleTimeout:      d.limits.IdleTimeout,
		MaxQueued:        d.limits.MaxQueued,
		QueueBudget:      d.queued,
	}
}

// peerOptions are those of connections this meshd dials to other meshds;
// the role header tells the far end that calls on it are on their last hop.
func (d *Daemon) peerOptions() conn.Options {
	o := d.connOptions()
	o.InitHeaders = map[string]string{relay.InitRole: relay.MeshdRole}
	return o
}

func (d *Daemon) accept() {
	for {
		nc, err := d.lis.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			d.log.Warn("accept failed", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if !d.adm.admit(d.limits, nc.RemoteAddr()) {
			nc.Close() // over the connection limits: refused before it costs anything
			continue
		}
		go func() {
			o := d.connOptions()
			o.OnClose = func(c *conn.Conn, err error) {
				d.adm.leave(nc.RemoteAddr())
				d.connClosed(c, err)
			}
			c, err := conn.Server(nc, o)
			if err != nil {
				d.adm.leave(nc.RemoteAddr())
				d.closed.handshake(err)
				d.log.Debug("handshake failed", "peer", nc.RemoteAddr().String(), "err", err)
				return
			}
			d.track(c)
		}()
	}
}

// dialPeer connects to another meshd for the router.
func (d *Daemon) dialPeer(ctx context.Context, addr string) (*conn.Conn, error) {
	c, err := conn.Dial(ctx, addr, d.peerOptions())
	if err != nil {
		return nil, err
	}
	d.track(c)
	return c, nil
}

func (d *Daemon) track(c *conn.Conn) {
	d.mu.Lock()
	d.conns[c] = struct{}{}
	d.mu.Unlock()
	if c.Closed() { // closed before it was tracked
		d.connClosed(c, c.Err())
	}
}

func (d *Daemon) connClosed(c *conn.Conn, err error) {
	d.closed.closed(err)
	d.mu.Lock()
	delete(d.conns, c)
	d.mu.Unlock()
	d.appGone(c)
}

// handle serves the calls addressed to meshd itself.
func (d *Daemon) handle(ctx context.Context, req *conn.Request) (*conn.Response, error) {
	from := conn.FromContext(ctx)
	switch req.Service {
	case hyperbahnService:
		return d.handleHyperbahn(ctx, from, req)
	case meshdService:
		return d.handleMeshd(ctx, req)
	}
	return nil, frame.Errorf(frame.ErrCodeBadRequest, "meshd does not serve %q", req.Service)
}

// Shutdown drains: it declines new calls, withdraws local instances from the
// registry, waits (up to DrainTimeout or ctx) for calls in flight, then
// closes every connection.
func (d *Daemon) Shutdown(ctx context.Context) error {
	d.mu.Lock()
	d.ready = false
	d.mu.Unlock()
	d.lis.Close()
	d.relay.Drain()
	for _, inst := range d.localInstances() {
		if err := d.registry.Deregister(ctx, inst); err != nil {
			d.log.Warn("deregister on drain failed", "instance", inst.ID, "err", err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, d.cfg.DrainTimeout)
	defer cancel()
	for d.relay.InFlight() > 0 && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
	left := d.relay.InFlight()
	d.mu.Lock()
	conns := make([]*conn.Conn, 0, len(d.conns))
	for c := range d.conns {
		conns = append(conns, c)
	}
	d.mu.Unlock()
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Go(func() { c.Shutdown(ctx) })
	}
	wg.Wait()
	if d.admin != nil {
		d.admin.Shutdown(ctx)
	}
	d.registry.Close()
	d.cfg.Tracer.Shutdown(ctx)
	d.log.Info("meshd stopped", "calls_abandoned", left)
	if left > 0 {
		return fmt.Errorf("%d calls were still in flight after %v", left, d.cfg.DrainTimeout)
	}
	return nil
}

// meshd's own service, for meshctl.
const meshdService = "meshd"

// Status is what /status and `meshctl status` show.
type Status struct {
	Node      string               `json:"node"`
	Listen    string               `json:"listen"`
	Advertise string               `json:"advertise"`
	Uptime    string               `json:"uptime"`
	Ready     bool                 `json:"ready"`
	Registry  discovery.Status     `json:"registry"`
	Local     []discovery.Instance `json:"local_instances"`
	Remote    map[string][]string  `json:"services"` // service → instance ids, as routing sees them (with Consul: the services this meshd follows)
	Peers     []string             `json:"peers"`
	Conns     int                  `json:"connections"`
	InFlight  int                  `json:"calls_in_flight"`
	Relayed   int64                `json:"calls_relayed"`
	Refused   int64                `json:"calls_refused"`
	TimedOut  int64                `json:"calls_timed_out"`
	Limited   int64                `json:"calls_rate_limited"`
	Retried   int64                `json:"calls_retried"`
	// BudgetExhausted counts retries the retry budget refused.
	BudgetExhausted int64 `json:"retries_refused_by_budget"`
}

// Status reports the daemon's state.
func (d *Daemon) Status(ctx context.Context) Status {
	d.mu.Lock()
	ready, nconns := d.ready, len(d.conns)
	d.mu.Unlock()
	rs := d.relay.Stats()
	st := Status{
		Node:      d.cfg.NodeName,
		Listen:    d.Addr(),
		Advertise: d.cfg.Advertise,
		Uptime:    time.Since(d.started).Round(time.Second).String(),
		Ready:     ready,
		Registry:  d.registry.Status(),
		Local:     d.localInstances(),
		Remote:    map[string][]string{},
		Peers:     d.relay.Peers(),
		Conns:     nconns,
		InFlight:  d.relay.InFlight(),
		Relayed:   rs.Relayed,
		Refused:   rs.Refused,
		TimedOut:  rs.TimedOut,
		Retried:   rs.Retried,
		Limited:   rs.RateLimited,

		BudgetExhausted: rs.BudgetExhausted,
	}
	known := map[string][]discovery.Instance{}
	if c, ok := d.registry.(*consul.Registry); ok {
		known = c.Followed() // looking every service up would follow them all
	} else {
		services, _ := d.registry.Services(ctx)
		for _, s := range services {
			known[s], _ = d.registry.Instances(ctx, s)
		}
	}
	for s, insts := range known {
		for _, i := range insts {
			st.Remote[s] = append(st.Remote[s], i.ID)
		}
	}
	return st
}

func (d *Daemon) handleMeshd(ctx context.Context, req *conn.Request) (*conn.Response, error) {
	var out any
	switch req.Method {
	case "status":
		out = d.Status(ctx)
	case "services":
		s, err := d.registry.Services(ctx)
		if err != nil {
			return nil, frame.Errorf(frame.ErrCodeUnexpected, "listing services: %v", err)
		}
		out = s
	case "instances":
		var q struct {
			Service string `json:"service"`
		}
		if err := json.Unmarshal(req.Arg3, &q); err != nil || q.Service == "" {
			return nil, frame.Errorf(frame.ErrCodeBadRequest, `instances wants {"service": NAME}`)
		}
		insts, err := d.registry.Instances(ctx, q.Service)
		if err != nil && !errors.Is(err, discovery.ErrNoInstances) {
			return nil, frame.Errorf(frame.ErrCodeUnexpected, "looking up %s: %v", q.Service, err)
		}
		out = insts
	case "explain":
		var q struct {
			SpanID string `json:"span_id"`
		}
		var span uint64
		err := json.Unmarshal(req.Arg3, &q)
		if err == nil {
			span, err = strconv.ParseUint(q.SpanID, 16, 64)
		}
		if err != nil || span == 0 {
			return nil, frame.Errorf(frame.ErrCodeBadRequest, `explain wants {"span_id": HEX}`)
		}
		out = d.relay.Recent("", span, 1)
	default:
		return nil, frame.Errorf(frame.ErrCodeBadRequest, "no handler for service %q and method %q", meshdService, req.Method)
	}
	body, err := json.Marshal(out)
	if err != nil {
		return nil, err
	}
	return &conn.Response{Headers: req.Headers, Arg2: []byte("{}"), Arg3: body}, nil
}
