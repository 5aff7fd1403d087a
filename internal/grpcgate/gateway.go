package grpcgate

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/conn"
	"github.com/meshrpc/mesh/internal/outbox"
	"github.com/meshrpc/mesh/internal/tracing"
	"github.com/meshrpc/mesh/internal/workpool"
)

// Mesh is what the gateway needs of meshd.
type Mesh interface {
	// Attach opens an in-memory connection into meshd's relay, as a local
	// app's whose calls carry the proven identity caller ("" for none):
	// ours is the app's end (with app's options), theirs meshd's.
	Attach(app conn.Options, caller string) (ours, theirs *conn.Conn)
	// Prove checks that the app at the far end of nc is caller, by its token
	// or its Unix user (the advertise rule).
	Prove(ctx context.Context, nc net.Conn, caller, token string) error
	// Serve registers the app on meshd's end of a connection as an instance
	// of service; Withdraw removes what it registered.
	Serve(ctx context.Context, from *conn.Conn, service string, meta map[string]string) error
	Withdraw(ctx context.Context, from *conn.Conn) error
}

// Gateway serves gRPC callers: each unary call becomes a TChannel call on
// an in-memory connection into meshd's relay. Its HTTP/2 side is its own
// (h2conn.go).
type Gateway struct {
	mesh   Mesh
	limits Limits
	log    *slog.Logger
	m      *metrics
	work   *workpool.Pool // the goroutines that serve calls
	batch  outbox.Batch   // holds the read loops' writes until they read again

	mu     sync.Mutex
	conns  map[*h2conn]struct{}
	closed bool
}

// NewGateway starts a gateway; hand it connections with Serve.
func NewGateway(mesh Mesh, limits Limits, log *slog.Logger) *Gateway {
	return &Gateway{mesh: mesh, limits: limits.withDefaults(), log: log, m: newMetrics(), work: workpool.New(), conns: map[*h2conn]struct{}{}}
}

// Collector is the gateway's metrics.
func (g *Gateway) Collector() prometheus.Collector { return g.m }

// Serve hands the gateway a connection whose first bytes are HTTP/2's
// preface (IsHTTP2); onClose runs once when it closes. meshd gives it the
// socket as it accepted it, an outbox.Socket.
func (g *Gateway) Serve(nc net.Conn, onClose func()) {
	g.m.accepted.Inc()
	g.m.conns.Inc()
	gc := &gconn{Conn: nc, g: g, onClose: onClose, channels: map[identity]*channel{}}
	go g.serveH2(gc)
}

// Close stops serving: open calls end, connections close.
func (g *Gateway) Close() {
	g.mu.Lock()
	g.closed = true
	open := make([]*h2conn, 0, len(g.conns))
	for c := range g.conns {
		open = append(open, c)
	}
	g.mu.Unlock()
	for _, c := range open {
		c.close()
	}
}

// track adds a connection to those Close ends; false once the gateway
// is closed.
func (g *Gateway) track(c *h2conn) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.conns[c] = struct{}{}
	return true
}

// untrack removes a connection that ended.
func (g *Gateway) untrack(c *h2conn) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.conns, c)
}

// reply is a call's answer as gRPC sends it.
type reply struct {
	header, trailer meta
	message         []byte // without its gRPC framing; nil unless status is OK
	status          *status.Status
	buf             *[]byte // message's buffer, from buffers (nil: none)
}

// release gives the message's buffer back, once nothing holds the message.
func (r *reply) release() {
	if r.buf != nil {
		putBuffer(r.buf, *r.buf) // take left the body in it
	}
	r.buf, r.message = nil, nil
}

// statusOK is every answered call's status: read only, made once.
var statusOK = status.New(codes.OK, "")

// failed is the reply of a call that failed with err.
func failed(err error) reply { return reply{status: status.Convert(err)} }

// start serves one unary gRPC call of c, whatever its method; c.finish
// is told the reply, once. A call whose caller's connection into the relay
// is open goes out at once, with no goroutine of its own (the answer comes
// back on the goroutine that brings it); the first call of a caller (whose
// proof may wait on Consul) waits on a worker.
func (g *Gateway) start(c *h2conn, st *h2stream) {
	procedure, ok := procedureOf(st.path)
	if !ok {
		c.finish(st, failed(g.refuse("bad_method", codes.Unimplemented, "%q is not a gRPC method path of the form /pkg.Service/Method", st.path)))
		return
	}
	md := st.md
	service := serviceOf(md)
	if service == "" {
		c.finish(st, failed(g.refuse("no_service", codes.InvalidArgument, "name the mesh service that serves %s: the rpc-service metadata (or the :authority)", st.path)))
		return
	}
	id := identity{md.get(mdCaller), md.get(mdToken)}
	req := &conn.Request{Service: service, Method: procedure, Arg3: st.message()}
	var err error
	if req.Headers, err = transportOf(md); err != nil {
		c.finish(st, failed(g.refuse("bad_metadata", codes.InvalidArgument, "%v", err)))
		return
	}
	if req.Arg2, err = arg2Of(md); err != nil {
		c.finish(st, failed(g.refuse("bad_metadata", codes.InvalidArgument, "%v", err)))
		return
	}
	var high uint64
	req.Tracing, high = tracingOf(md)
	req.Headers = tracing.AppendHigh(req.Headers, high)
	send := func(ch *conn.Conn) {
		ttl := noDeadlineTTL
		if !st.deadline.IsZero() {
			ttl = time.Until(st.deadline)
		}
		callID := ch.Go(ttl, req, func(res *conn.Response, err error) { c.finish(st, replyOf(service, res, err)) })
		st.release() // Go copied the message into the relay's frames
		c.going(st, ch, callID)
	}
	if ch := c.gc.open(id); ch != nil {
		send(ch)
		return
	}
	g.work.Go(func() {
		ctx, cancel := context.WithCancel(c.ctx)
		if !st.deadline.IsZero() {
			ctx, cancel = context.WithDeadline(c.ctx, st.deadline)
		}
		defer cancel()
		ch, err := c.gc.channel(ctx, id)
		var why *unproven
		switch {
		case err == errTooManyIdentities:
			c.finish(st, failed(g.refuse("too_many_identities", codes.ResourceExhausted, "rpc-caller %q: %v", id.caller, err)))
		case errors.As(err, &why):
			c.finish(st, failed(g.refuse("unauthenticated", codes.Unauthenticated, "rpc-caller %q: %v", id.caller, why.err)))
		case err != nil:
			c.finish(st, failed(statusOf(err)))
		default:
			send(ch)
		}
	})
}

// noDeadlineTTL is the ttl of a call whose client set no grpc-timeout.
const noDeadlineTTL = time.Minute

// replyOf is the gRPC reply of a call's TChannel answer.
func replyOf(service string, res *conn.Response, err error) reply {
	if err != nil {
		return failed(statusOf(err))
	}
	a, err := answerOf(res.Arg2)
	if err != nil {
		return failed(status.Errorf(codes.Internal, "the answer of %s: %v", service, err))
	}
	r := reply{header: a.header, trailer: a.trailer, status: statusOK}
	if res.Code != frame.ResOK {
		r.status = status.Convert(a.status())
		return r
	}
	r.message = res.Arg3
	return r
}

func (g *Gateway) refuse(reason string, code codes.Code, format string, args ...any) error {
	g.m.refused.WithLabelValues(reason).Inc()
	return status.Errorf(code, format, args...)
}

// serviceOf is the mesh service a call names: rpc-service, else the
// :authority's host when it is a name (not an address, not localhost).
func serviceOf(md meta) string {
	if s := md.get(mdService); s != "" {
		return s
	}
	host := md.get(":authority")
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if host == "" || host == "localhost" || net.ParseIP(host) != nil || strings.ContainsAny(host, "/[]") {
		return ""
	}
	return host
}

// transportOf is the transport headers of a call from its metadata; the
// encoding is proto unless rpc-encoding says otherwise.
func transportOf(md meta) (frame.Headers, error) {
	h := make(frame.Headers, 0, 64)
	if md.get(mdEncoding) == "" {
		h = frame.AppendHeader(h, frame.HeaderArgScheme, "proto")
	}
	for _, t := range transport {
		if v := md.get(t.md); v != "" {
			if len(v) > 255 {
				return nil, errors.New(t.md + " is longer than 255 bytes")
			}
			h = frame.AppendHeader(h, t.header, v)
		}
	}
	return h, nil
}

// statusOf is the gRPC status of a failed TChannel call, or of a wait
// for the caller's connection into the relay that ended with its context.
func statusOf(err error) error {
	var fe *frame.Error
	switch {
	case errors.As(err, &fe):
		return status.Error(codeOf(fe.Code), fe.Message)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return status.FromContextError(err).Err()
	}
	return status.Error(codes.Unavailable, err.Error())
}

// status is the gRPC status an application error answer carries.
func (a answer) status() error {
	if a.details != "" {
		var sp spb.Status
		if proto.Unmarshal([]byte(a.details), &sp) == nil && sp.Code != 0 {
			return status.FromProto(&sp).Err()
		}
	}
	code := codes.Unknown
	if n, err := strconv.Atoi(a.code); err == nil && n > 0 && n <= 16 {
		code = codes.Code(n)
	}
	return status.Error(code, a.message)
}

// identity is who a call says its caller is, with its proof.
type identity struct{ caller, token string }

// channel is the TChannel connection into meshd for one identity on one
// gRPC connection, opened at its first call.
type channel struct {
	ready chan struct{}
	c     *conn.Conn
	err   error
}

// errTooManyIdentities refuses a caller past Limits.MaxIdentities.
var errTooManyIdentities = errors.New("this connection already calls as as many callers as it may (dial another)")

// unproven is a caller's identity that its proof did not establish.
type unproven struct{ err error }

func (e *unproven) Error() string { return e.err.Error() }

// gconn is a gRPC connection as the gateway accepted it.
type gconn struct {
	net.Conn
	g       *Gateway
	onClose func()
	once    sync.Once

	mu       sync.Mutex
	channels map[identity]*channel
	closed   bool
}

// open returns the connection's TChannel connection for id if it is open
// already, nil if not.
func (gc *gconn) open(id identity) *conn.Conn {
	gc.mu.Lock()
	ch := gc.channels[id]
	gc.mu.Unlock()
	if ch == nil {
		return nil
	}
	select {
	case <-ch.ready:
		return ch.c
	default:
		return nil
	}
}

// channel returns the connection's TChannel connection for id, proving id
// and opening it the first time. A failure is not kept: the next call
// tries again (a proof may fail while Consul is away).
func (gc *gconn) channel(ctx context.Context, id identity) (*conn.Conn, error) {
	gc.mu.Lock()
	ch := gc.channels[id]
	if ch == nil {
		if gc.closed {
			gc.mu.Unlock()
			return nil, net.ErrClosed
		}
		if len(gc.channels) >= gc.g.limits.MaxIdentities {
			gc.mu.Unlock()
			return nil, errTooManyIdentities
		}
		ch = &channel{ready: make(chan struct{})}
		gc.channels[id] = ch
		gc.mu.Unlock()
		ch.c, ch.err = gc.dial(ctx, id)
		close(ch.ready)
		gc.mu.Lock()
		if ch.err != nil {
			delete(gc.channels, id)
		}
		if gc.closed && ch.c != nil {
			ch.c.Close()
		}
	}
	gc.mu.Unlock()
	select {
	case <-ch.ready:
		return ch.c, ch.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (gc *gconn) dial(ctx context.Context, id identity) (*conn.Conn, error) {
	if id.caller != "" {
		if err := gc.g.mesh.Prove(ctx, gc.Conn, id.caller, id.token); err != nil {
			return nil, &unproven{err}
		}
	}
	c, _ := gc.g.mesh.Attach(conn.Options{
		ProcessName: "grpc app at " + gc.RemoteAddr().String(),
		Logger:      gc.g.log,
	}, id.caller)
	return c, nil
}

// Close closes the connection and every TChannel connection opened for it.
func (gc *gconn) Close() error {
	err := gc.Conn.Close()
	gc.once.Do(func() {
		gc.mu.Lock()
		gc.closed = true
		var open []*conn.Conn
		for _, ch := range gc.channels {
			select {
			case <-ch.ready:
				if ch.c != nil {
					open = append(open, ch.c)
				}
			default: // still opening: closed when it is done
			}
		}
		gc.mu.Unlock()
		for _, c := range open {
			c.Close()
		}
		gc.g.m.conns.Dec()
		if gc.onClose != nil {
			gc.onClose()
		}
	})
	return err
}

// NetConn is the socket under the gateway's connection, for peer
// credentials.
func (gc *gconn) NetConn() net.Conn { return gc.Conn }
