package meshd

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshrpc/mesh/discovery"
	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/conn"
	"github.com/meshrpc/mesh/internal/intentions"
	"github.com/meshrpc/mesh/internal/lograte"
	"github.com/meshrpc/mesh/internal/relay"
	"github.com/meshrpc/mesh/internal/tracing"
	"github.com/meshrpc/mesh/internal/trust"
	"github.com/meshrpc/mesh/router"
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
	// Intentions decide who may call whom; nil allows every call.
	Intentions *intentions.Table
	// AdvertiseRule decides which app may advertise which name (rule.go);
	// nil lets any app advertise any name.
	AdvertiseRule *AdvertiseRule
	// ProveToken checks that an ACL token allows service:write on a service,
	// for apps that prove who they are without advertising (identify); nil:
	// no registry can check tokens.
	ProveToken func(ctx context.Context, service, token string) error
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
	queued   *conn.QueueBudget // bytes queued for slow peers, in all
	logLimit *lograte.Handler

	advertRefused   atomic.Int64 // advertises the rule or Consul refused
	identifyRefused atomic.Int64 // identify calls without proof

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
		Allowed:  d.allowed,
	})
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
	go d.accept(lis, false)
	if unixLis != nil {
		go d.accept(unixLis, false)
	}
	if peerLis != nil {
		go d.accept(peerLis, true)
	}
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

// routeIP is this host's address on its default route: the source address
// the kernel picks for a UDP "connection" to a public address (no packet is
// sent).
func routeIP() (net.IP, error) {
	c, err := net.Dial("udp", "192.0.2.1:9") // TEST-NET-1: never routed anywhere real
	if err != nil {
		return nil, fmt.Errorf("no default route: %w", err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).IP, nil
}

// listenUnix opens the app socket at path, in place of a stale one a
// meshd that died left behind (but never of a file that is not a socket),
// open to every local user: the advertise rule decides what each may do.
func listenUnix(path string) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("listen unix %s: exists and is not a socket", path)
		}
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil, fmt.Errorf("listen unix %s: another meshd serves it", path)
		}
		os.Remove(path)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen unix %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o666); err != nil {
		l.Close()
		return nil, fmt.Errorf("listen unix %s: %w", path, err)
	}
	return l, nil
}

// hostTLS describes the host boundary for logs and /status.
func (d *Daemon) hostTLS() string {
	switch {
	case d.peerLis == nil:
		return "none (no host listener)"
	case d.cfg.Trust == nil:
		return "off (plaintext)"
	}
	return "mTLS 1.3, identities from " + d.cfg.Trust.Status().Source
}

// allowed is the relay's authorization: the intentions in force.
func (d *Daemon) allowed(caller []byte, service string) (bool, string) {
	if d.cfg.Intentions == nil {
		return true, ""
	}
	dec := d.cfg.Intentions.Decide(caller, service)
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

// connOptions are those of every connection; src is what meshd knows of
// its far end.
func (d *Daemon) connOptions(src *relay.Source) conn.Options {
	return conn.Options{
		Tag:         src,
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

// accept serves one listener; on the host listener (peer) a connection is
// another meshd once it proved it with its certificate.
func (d *Daemon) accept(lis net.Listener, peer bool) {
	for {
		nc, err := lis.Accept()
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
			o := d.connOptions(&relay.Source{Meshd: peer})
			o.OnClose = func(c *conn.Conn, err error) {
				d.adm.leave(nc.RemoteAddr())
				d.connClosed(c, err)
			}
			var c *conn.Conn
			tnc, err := d.serverTLS(nc, peer)
			if err == nil {
				c, err = conn.Server(tnc, o)
			}
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

// serverTLS runs the TLS handshake of a host listener's connection, within
// the handshake timeout; an app connection stays as it is.
func (d *Daemon) serverTLS(nc net.Conn, peer bool) (net.Conn, error) {
	if !peer || d.cfg.Trust == nil {
		return nc, nil
	}
	tc := tls.Server(nc, d.cfg.Trust.ServerConfig())
	tc.SetDeadline(time.Now().Add(d.limits.HandshakeTimeout))
	if err := tc.Handshake(); err != nil {
		nc.Close()
		return nil, &tlsError{err}
	}
	tc.SetDeadline(time.Time{})
	return tc, nil
}

// tlsError is a refused TLS handshake: a peer that is no meshd of this
// mesh, or none at all.
type tlsError struct{ err error }

func (e *tlsError) Error() string { return "tls handshake: " + e.err.Error() }
func (e *tlsError) Unwrap() error { return e.err }

// dialPeer connects to another meshd for the router, over TLS when the host
// boundary has it.
func (d *Daemon) dialPeer(ctx context.Context, addr string) (*conn.Conn, error) {
	var dialer net.Dialer
	nc, err := dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, &frame.Error{Code: frame.ErrCodeNetwork, Message: err.Error()}
	}
	if d.cfg.Trust != nil {
		tc := tls.Client(nc, d.cfg.Trust.ClientConfig())
		hctx, cancel := context.WithTimeout(ctx, d.limits.HandshakeTimeout)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			nc.Close()
			return nil, &frame.Error{Code: frame.ErrCodeNetwork, Message: "tls handshake with " + addr + ": " + err.Error()}
		}
		nc = tc
	}
	c, err := conn.Client(nc, d.connOptions(&relay.Source{Meshd: true}))
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
		if req.Method == methodIdentify {
			return d.handleIdentify(ctx, from, req)
		}
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
	if d.peerLis != nil {
		d.peerLis.Close()
	}
	if d.unixLis != nil {
		d.unixLis.Close() // and removes the socket file
	}
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
	Node       string `json:"node"`
	Listen     string `json:"listen"`
	PeerListen string `json:"peer_listen,omitempty"`
	Advertise  string `json:"advertise"`
	// Trust is the host boundary: how it is secured, and this meshd's identity.
	Trust    Trust                `json:"trust"`
	Uptime   string               `json:"uptime"`
	Ready    bool                 `json:"ready"`
	Registry discovery.Status     `json:"registry"`
	Local    []discovery.Instance `json:"local_instances"`
	Remote   map[string][]string  `json:"services"` // service → instance ids, as routing sees them (with Consul: the services this meshd follows)
	Peers    []string             `json:"peers"`
	Conns    int                  `json:"connections"`
	InFlight int                  `json:"calls_in_flight"`
	Relayed  int64                `json:"calls_relayed"`
	Refused  int64                `json:"calls_refused"`
	TimedOut int64                `json:"calls_timed_out"`
	Limited  int64                `json:"calls_rate_limited"`
	Retried  int64                `json:"calls_retried"`
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
		Node:       d.cfg.NodeName,
		Listen:     d.Addr(),
		PeerListen: d.PeerAddr(),
		Advertise:  d.cfg.Advertise,
		Trust:      d.trustStatus(),
		Uptime:     time.Since(d.started).Round(time.Second).String(),
		Ready:      ready,
		Registry:   d.registry.Status(),
		Local:      d.localInstances(),
		Remote:     map[string][]string{},
		Peers:      d.relay.Peers(),
		Conns:      nconns,
		InFlight:   d.relay.InFlight(),
		Relayed:    rs.Relayed,
		Refused:    rs.Refused,
		TimedOut:   rs.TimedOut,
		Retried:    rs.Retried,
		Limited:    rs.RateLimited,

		BudgetExhausted: rs.BudgetExhausted,
	}
	known := map[string][]discovery.Instance{}
	if f, ok := d.registry.(discovery.Following); ok {
		known = f.Followed() // looking every service up would follow them all
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

// Trust is what /status shows of the boundaries and the rules.
type Trust struct {
	HostBoundary     string        `json:"host_boundary"`
	Identity         *trust.Status `json:"identity,omitempty"`
	AdvertiseRule    string        `json:"advertise_rule"`
	AdvertiseRefused int64         `json:"advertise_refused"`
	Intentions       int           `json:"intentions"` // rules in force
	IntentionChanges int64         `json:"intention_changes"`
}

func (d *Daemon) trustStatus() Trust {
	t := Trust{HostBoundary: d.hostTLS(), AdvertiseRule: d.cfg.AdvertiseRule.String(), AdvertiseRefused: d.advertRefused.Load()}
	if d.cfg.Trust != nil {
		st := d.cfg.Trust.Status()
		t.Identity = &st
	}
	if in := d.cfg.Intentions; in != nil {
		t.Intentions, t.IntentionChanges = in.Current().Len(), in.Changes()
	}
	return t
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
