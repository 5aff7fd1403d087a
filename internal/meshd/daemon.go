package meshd

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshrpc/mesh/discovery"
	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/conn"
	"github.com/meshrpc/mesh/internal/dashboard"
	"github.com/meshrpc/mesh/internal/figures"
	"github.com/meshrpc/mesh/internal/grpcgate"
	"github.com/meshrpc/mesh/internal/intentions"
	"github.com/meshrpc/mesh/internal/lograte"
	"github.com/meshrpc/mesh/internal/outbox"
	"github.com/meshrpc/mesh/internal/relay"
	"github.com/meshrpc/mesh/internal/routing"
	"github.com/meshrpc/mesh/internal/tracing"
	"github.com/meshrpc/mesh/internal/trust"
	"github.com/meshrpc/mesh/router"
	"github.com/prometheus/client_golang/prometheus"
)

// Config is everything meshd needs to run. cmd/meshd fills it from flags,
// environment and a config file.
type Config struct {
	// Listen is the app boundary: plaintext TChannel for the apps of this
	// host (loopback), so any TChannel program can use it unchanged. A
	// connection there is never taken for another meshd.
	Listen string
	// ListenUnix, if set, is a Unix socket path apps may use instead: the
	// kernel tells meshd the Unix user of each process that connects.
	ListenUnix string
	// PeerListen is the host boundary: the listener other meshds call,
	// with TLS 1.3 and a meshd certificate required both ways when Trust is
	// set. Empty: this meshd takes no calls from other hosts.
	PeerListen string
	// Trust holds this meshd's certificate and the CA it checks peers
	// against; nil leaves the host boundary plaintext (--tls off).
	Trust *trust.Store
	// Advertise is the routable address registered for local instances,
	// where other meshds reach them; default: PeerListen's address (Listen's
	// when there is no host listener).
	Advertise string
	Admin     string // admin HTTP listener; empty disables it
	Pprof     bool   // serve /debug/pprof on the admin listener
	// NoOpsView turns the ops view off: calls are not counted per edge
	// (mesh_calls_total), no history is kept, no dashboard is served.
	NoOpsView bool
	NodeName  string // this host's name in the registry; default: hostname
	// Zone is this host's zone ("": none): registered with its instances
	// and itself, and calls stay in it while it has the capacity.
	Zone string
	// Registry is where instances are registered and looked up.
	Registry discovery.Registry
	// DrainTimeout bounds how long a stop waits for calls in flight.
	DrainTimeout time.Duration
	// Traces is the trace backend the dashboard reads traces from (nil:
	// none).
	Traces *dashboard.Traces
	// ForgetAfter is how long the relay keeps what it learned of an
	// instance no call found listed since (its breaker, its latency, its
	// metric series); default routing.ForgetAfter.
	ForgetAfter time.Duration
	Logger      *slog.Logger
	// Policies are the per-service policies to start with.
	Policies router.Policies
	// Tracer records spans of relayed calls (nil: no tracing).
	Tracer *tracing.Tracer
	// Limits bound what connections can make meshd hold (limits.go).
	Limits Limits
	// Intentions decide who may call whom; nil allows every call.
	Intentions *intentions.Table
	// AdvertiseRule decides which app may advertise which name (rule.go);
	// nil lets any app advertise any name.
	AdvertiseRule *AdvertiseRule
	// ProveToken checks that an ACL token allows service:write on a service,
	// for apps that prove who they are without advertising (identify); nil:
	// no registry can check tokens.
	ProveToken func(ctx context.Context, service, token string) error
	// GRPC, if set, serves gRPC apps on the app listeners (told from
	// TChannel by their first bytes) within these limits; nil: TChannel only.
	GRPC *grpcgate.Limits
	// GRPCServers are stock gRPC servers that serve mesh services from this
	// host (they need GRPC).
	GRPCServers []grpcgate.BackendConfig
}

// Daemon is a running meshd.
type Daemon struct {
	cfg      Config
	log      *slog.Logger
	registry discovery.Registry
	relay    *relay.Relay
	lis      net.Listener // apps
	unixLis  net.Listener // apps on the Unix socket; nil without one
	peerLis  net.Listener // other meshds; nil without a host listener
	admin    *http.Server
	apps     apps
	started  time.Time

	limits   Limits
	adm      admission
	closed   closures
	queued   *outbox.Budget // bytes queued for slow peers, in all
	logLimit *lograte.Handler
	gate     *grpcgate.Gateway   // nil without gRPC
	backends []*grpcgate.Backend // the config's gRPC servers

	metrics   *prometheus.Registry // what /metrics serves (metrics.go)
	stop      chan struct{}        // closed by Shutdown: background loops end
	stopOnce  sync.Once
	history   *figures.History // the golden figures over the last hour (opsview.go)
	views     *dashboard.Views
	policyLog policyLog

	zoneMeshds      atomic.Pointer[map[string]int] // meshds per zone (followZones)
	advertRefused   atomic.Int64                   // advertises the rule or Consul refused
	identifyRefused atomic.Int64                   // identify calls without proof

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
	cfg.ForgetAfter = cmp.Or(cfg.ForgetAfter, routing.ForgetAfter)
	if cfg.NodeName == "" {
		cfg.NodeName, _ = os.Hostname()
	}
	if cfg.AdvertiseRule != nil {
		if err := cfg.AdvertiseRule.compile(); err != nil {
			return nil, err
		}
	}
	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	var peerLis net.Listener
	if cfg.PeerListen != "" {
		if peerLis, err = net.Listen("tcp", cfg.PeerListen); err != nil {
			lis.Close()
			return nil, fmt.Errorf("peer listen %s: %w", cfg.PeerListen, err)
		}
	}
	opened := []net.Listener{lis}
	if peerLis != nil {
		opened = append(opened, peerLis)
	}
	closeAll := func() {
		for _, l := range opened {
			l.Close()
		}
	}
	var unixLis net.Listener
	if cfg.ListenUnix != "" {
		if unixLis, err = listenUnix(cfg.ListenUnix); err != nil {
			closeAll()
			return nil, err
		}
		opened = append(opened, unixLis)
	}
	defaulted := cfg.Advertise == ""
	if defaulted {
		cfg.Advertise = lis.Addr().String()
		if peerLis != nil {
			cfg.Advertise = peerLis.Addr().String()
		}
	}
	if host, port, _ := net.SplitHostPort(cfg.Advertise); host == "0.0.0.0" || host == "::" || host == "" {
		ip, err := routeIP()
		if !defaulted || err != nil {
			closeAll()
			return nil, fmt.Errorf("listening on %s: set an advertise address other hosts can reach (%v)", cfg.Advertise, err)
		}
		cfg.Advertise = net.JoinHostPort(ip.String(), port)
		cfg.Logger.Info("advertise address not set: using this host's address on its default route; set --advertise to choose", "advertise", cfg.Advertise)
	}
	d := &Daemon{
		cfg:      cfg,
		log:      cfg.Logger,
		registry: cfg.Registry,
		lis:      lis,
		unixLis:  unixLis,
		peerLis:  peerLis,
		conns:    make(map[*conn.Conn]struct{}),
		started:  time.Now(),
		limits:   cfg.Limits.withDefaults(),
		logLimit: logLimit,
		metrics:  newMetrics(),
		stop:     make(chan struct{}),
		history:  figures.New(),
	}
	d.zoneMeshds.Store(new(map[string]int))
	d.queued = &outbox.Budget{Max: int64(d.limits.MaxQueuedTotal)}
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
		Allowed:  d.allowed,
		Metrics:  d.metrics,
		NoEdges:  cfg.NoOpsView,
	})
	sources := map[string]string{}
	for k := range cfg.Policies {
		sources[k] = "the config file"
	}
	d.policyLog.setSources(sources)
	d.registerMetrics(d.metrics)
	d.views = dashboard.NewViews(dashboard.Config{
		Self: d.report, Peers: d.peers, Fetch: d.fetchReport, Details: d.details,
		Since: d.relay.Since, Traces: cfg.Traces, Logger: d.log,
	})
	go d.forget()
	if cfg.Zone != "" {
		d.relay.SetZones(cfg.Zone, nil) // until followZones counts the meshds
		go d.followZones()
	}
	if !cfg.NoOpsView {
		go d.sample()
	}
	if cfg.Admin != "" {
		al, err := net.Listen("tcp", cfg.Admin)
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("admin listen %s: %w", cfg.Admin, err)
		}
		d.admin = &http.Server{Handler: d.adminHandler(), ReadHeaderTimeout: 5 * time.Second}
		go d.admin.Serve(al)
		d.cfg.Admin = al.Addr().String()
	}
	if err := d.startGRPC(); err != nil {
		closeAll()
		return nil, err
	}
	go d.accept(lis, false)
	if unixLis != nil {
		go d.accept(unixLis, false)
	}
	if peerLis != nil {
		go d.accept(peerLis, true)
	}
	d.registerSelf()
	d.mu.Lock()
	d.ready = true
	d.mu.Unlock()
	d.log.Info("meshd started", "listen", lis.Addr().String(), "listen_unix", cfg.ListenUnix, "peer_listen", d.PeerAddr(), "advertise", cfg.Advertise,
		"admin", d.cfg.Admin, "registry", cfg.Registry.Status().Backend, "host_tls", d.hostTLS(),
		"advertise_rule", d.cfg.AdvertiseRule.String())
	if peerLis != nil && cfg.Trust == nil {
		d.log.Warn("the host listener is plaintext (--tls off): any process that reaches it can act as a meshd", "peer_listen", d.PeerAddr())
	}
	return d, nil
}

// allowed is the relay's authorization: the intentions in force.
func (d *Daemon) allowed(c *routing.Call) (bool, string) {
	if d.cfg.Intentions == nil {
		return true, ""
	}
	scheme, _ := c.Headers.Get(frame.HeaderArgScheme)
	dec := d.cfg.Intentions.Decide(c.Caller, c.Service, c.Method, intentions.AppHeaders{Scheme: scheme, Raw: c.AppHeaders})
	return dec.Allow, dec.Rule
}

// SetPolicies replaces the per-service policies; invalid ones are refused
// and the policies in force stay.
func (d *Daemon) SetPolicies(ps router.Policies) error { return d.relay.SetPolicies(ps) }

// Addr is the TChannel listener's address.
func (d *Daemon) Addr() string { return d.lis.Addr().String() }

// PeerAddr is the host listener's address ("" without one).
func (d *Daemon) PeerAddr() string {
	if d.peerLis == nil {
		return ""
	}
	return d.peerLis.Addr().String()
}

// AdminAddr is the admin HTTP listener's address ("" if disabled).
func (d *Daemon) AdminAddr() string { return d.cfg.Admin }

// Shutdown drains: it declines new calls, withdraws local instances from the
// registry, waits (up to DrainTimeout or ctx) for calls in flight, then
// closes every connection.
func (d *Daemon) Shutdown(ctx context.Context) error {
	d.mu.Lock()
	d.ready = false
	d.mu.Unlock()
	d.lis.Close()
	if d.peerLis != nil {
		d.peerLis.Close()
	}
	if d.unixLis != nil {
		d.unixLis.Close() // and removes the socket file
	}
	d.relay.Drain()
	d.stopOnce.Do(func() { close(d.stop) })
	withdraw := d.localInstances()
	if inst, ok := d.self(); ok {
		withdraw = append(withdraw, inst)
	}
	for _, inst := range withdraw {
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
	d.stopGRPC()
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
