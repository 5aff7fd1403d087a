package grpcgate

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/conn"
)

// Mesh is what the gateway needs of meshd.
type Mesh interface {
	// Attach serves nc, one end of an in-memory connection, as a local app's
	// TChannel connection whose calls carry the proven identity caller (""
	// for none); it returns meshd's end once the handshake is done.
	Attach(nc net.Conn, caller string) (*conn.Conn, error)
	// Prove checks that the app at the far end of nc is caller, by its token
	// or its Unix user (the advertise rule).
	Prove(ctx context.Context, nc net.Conn, caller, token string) error
	// Serve registers the app on meshd's end of a connection as an instance
	// of service; Withdraw removes what it registered.
	Serve(ctx context.Context, from *conn.Conn, service string, meta map[string]string) error
	Withdraw(ctx context.Context, from *conn.Conn) error
}

// Gateway serves gRPC callers: each unary call becomes a TChannel call on
// an in-memory connection into meshd's relay.
type Gateway struct {
	mesh   Mesh
	limits Limits
	log    *slog.Logger
	srv    *grpc.Server
	lis    *listener
	m      *metrics
}

// NewGateway starts a gateway; hand it connections with Serve.
func NewGateway(mesh Mesh, limits Limits, log *slog.Logger) *Gateway {
	l := limits.withDefaults()
	g := &Gateway{mesh: mesh, limits: l, log: log, lis: newListener(), m: newMetrics()}
	g.srv = grpc.NewServer(
		grpc.Creds(localCreds{}),
		grpc.ForceServerCodecV2(RawCodec{}),
		grpc.UnknownServiceHandler(g.serve),
		grpc.MaxConcurrentStreams(l.MaxStreams),
		grpc.MaxRecvMsgSize(l.MaxMessage),
		grpc.MaxHeaderListSize(l.MaxHeaderList),
		grpc.ConnectionTimeout(l.HandshakeTimeout),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: l.PingInterval}),
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: l.IdleTimeout}),
	)
	go g.srv.Serve(g.lis)
	return g
}

// Collector is the gateway's metrics.
func (g *Gateway) Collector() prometheus.Collector { return g.m }

// Serve hands the gateway a connection whose first bytes are HTTP/2's
// preface (IsHTTP2); onClose runs once when it closes.
func (g *Gateway) Serve(nc net.Conn, onClose func()) {
	g.m.accepted.Inc()
	g.m.conns.Inc()
	gc := &gconn{Conn: nc, g: g, onClose: onClose, channels: map[identity]*channel{}}
	if !g.lis.put(gc) {
		gc.Close()
	}
}

// Close stops serving: open calls end, connections close.
func (g *Gateway) Close() {
	g.srv.Stop()
	g.lis.Close()
}

// serve answers one gRPC call, whatever its method.
func (g *Gateway) serve(_ any, ss grpc.ServerStream) error {
	err := g.call(ss)
	g.m.calls.WithLabelValues(status.Code(err).String()).Inc()
	return err
}

func (g *Gateway) call(ss grpc.ServerStream) error {
	ctx := ss.Context()
	path, _ := grpc.MethodFromServerStream(ss)
	procedure, ok := procedureOf(path)
	if !ok {
		return g.refuse("bad_method", codes.Unimplemented, "%q is not a gRPC method path of the form /pkg.Service/Method", path)
	}
	md, _ := metadata.FromIncomingContext(ctx)
	service := serviceOf(md)
	if service == "" {
		return g.refuse("no_service", codes.InvalidArgument, "name the mesh service that serves %s: the rpc-service metadata (or the :authority)", path)
	}
	var in []byte
	if err := ss.RecvMsg(&in); err != nil {
		if err == io.EOF {
			return g.refuse("no_message", codes.InvalidArgument, "%s: the call sent no request message", path)
		}
		if status.Code(err) == codes.ResourceExhausted {
			g.m.refused.WithLabelValues("message_size").Inc()
		}
		return err
	}
	var more []byte
	if err := ss.RecvMsg(&more); err != io.EOF {
		if err != nil {
			return err
		}
		return g.refuse("streaming", codes.Unimplemented, "%s: the mesh carries unary calls only; this call sent a second message (client or bidirectional streaming)", path)
	}

	gc := connOf(ctx)
	if gc == nil {
		return status.Error(codes.Internal, "grpcgate: a call on a connection the gateway did not accept")
	}
	caller, token := first(md, mdCaller), first(md, mdToken)
	c, err := gc.channel(ctx, identity{caller, token})
	var why *unproven
	switch {
	case err == errTooManyIdentities:
		return g.refuse("too_many_identities", codes.ResourceExhausted, "rpc-caller %q: %v", caller, err)
	case errors.As(err, &why):
		return g.refuse("unauthenticated", codes.Unauthenticated, "rpc-caller %q: %v", caller, why.err)
	case err != nil:
		return statusOf(ctx, err)
	}
	req := conn.Request{Service: service, Method: procedure, Arg3: in}
	if req.Headers, err = transportOf(md); err != nil {
		return g.refuse("bad_metadata", codes.InvalidArgument, "%v", err)
	}
	if req.Arg2, err = arg2Of(md); err != nil {
		return g.refuse("bad_metadata", codes.InvalidArgument, "%v", err)
	}
	req.Tracing = tracingOf(md)
	res, err := c.Call(ctx, &req)
	if err != nil {
		return statusOf(ctx, err)
	}
	a, err := answerOf(res.Arg2)
	if err != nil {
		return status.Errorf(codes.Internal, "the answer of %s: %v", service, err)
	}
	if len(a.header) > 0 {
		ss.SetHeader(a.header)
	}
	ss.SetTrailer(a.trailer)
	if res.Code != frame.ResOK {
		return a.status()
	}
	return ss.SendMsg(&res.Arg3)
}

// refuse counts a call the gateway refuses before routing, and says why.
func (g *Gateway) refuse(reason string, code codes.Code, format string, args ...any) error {
	g.m.refused.WithLabelValues(reason).Inc()
	return status.Errorf(code, format, args...)
}

// serviceOf is the mesh service a call names: rpc-service, else the
// :authority's host when it is a name (not an address, not localhost).
func serviceOf(md metadata.MD) string {
	if s := first(md, mdService); s != "" {
		return s
	}
	host := first(md, ":authority")
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
func transportOf(md metadata.MD) (frame.Headers, error) {
	h := make(frame.Headers, 0, 64)
	if first(md, mdEncoding) == "" {
		h = frame.AppendHeader(h, frame.HeaderArgScheme, "proto")
	}
	for _, t := range transport {
		if v := first(md, t.md); v != "" {
			if len(v) > 255 {
				return nil, errors.New(t.md + " is longer than 255 bytes")
			}
			h = frame.AppendHeader(h, t.header, v)
		}
	}
	return h, nil
}

// statusOf is the gRPC status of a failed TChannel call.
func statusOf(ctx context.Context, err error) error {
	var fe *frame.Error
	switch {
	case errors.As(err, &fe):
		return status.Error(codeOf(fe.Code), fe.Message)
	case ctx.Err() != nil:
		return status.FromContextError(ctx.Err()).Err()
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
		ch.c, ch.err = gc.open(ctx, id)
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

func (gc *gconn) open(ctx context.Context, id identity) (*conn.Conn, error) {
	if id.caller != "" {
		if err := gc.g.mesh.Prove(ctx, gc.Conn, id.caller, id.token); err != nil {
			return nil, &unproven{err}
		}
	}
	c, _, err := attach(gc.g.mesh, id.caller, conn.Options{
		ProcessName:      "grpc app at " + gc.RemoteAddr().String(),
		HandshakeTimeout: gc.g.limits.HandshakeTimeout,
		Logger:           gc.g.log,
	})
	return c, err
}

// attach opens an in-memory TChannel connection into meshd: ours is the
// app's end (with opts), theirs meshd's.
func attach(mesh Mesh, caller string, opts conn.Options) (ours, theirs *conn.Conn, err error) {
	a, b, err := pipe()
	if err != nil {
		return nil, nil, err
	}
	done := make(chan error, 1)
	go func() {
		var err error
		theirs, err = mesh.Attach(a, caller)
		done <- err
	}()
	ours, err = conn.Client(b, opts)
	if aerr := <-done; err == nil {
		err = aerr
	}
	if err != nil {
		if ours != nil {
			ours.Close()
		}
		a.Close()
		b.Close()
		return nil, nil, err
	}
	return ours, theirs, nil
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

// connOf is the gateway's connection of a call.
func connOf(ctx context.Context) *gconn {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	info, _ := p.AuthInfo.(localInfo)
	return info.gc
}

// localCreds is the app boundary's "security": the connection is the
// gateway's own (gconn), carried to each call as its AuthInfo, so a call
// finds the connection it proves its caller on.
type localCreds struct{}

type localInfo struct {
	credentials.CommonAuthInfo
	gc *gconn
}

func (localInfo) AuthType() string { return "mesh-local" }

func (localCreds) ServerHandshake(nc net.Conn) (net.Conn, credentials.AuthInfo, error) {
	gc, _ := nc.(*gconn)
	return nc, localInfo{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.NoSecurity}, gc: gc}, nil
}

func (localCreds) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("grpcgate: the gateway's credentials serve, never dial")
}

func (localCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "mesh-local"}
}

func (localCreds) Clone() credentials.TransportCredentials { return localCreds{} }

func (localCreds) OverrideServerName(string) error { return nil }

// listener hands the connections meshd's app listener found to be HTTP/2
// to the gRPC server.
type listener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newListener() *listener {
	return &listener{conns: make(chan net.Conn), done: make(chan struct{})}
}

// put hands nc to the server, false once the listener closed.
func (l *listener) put(nc net.Conn) bool {
	select {
	case l.conns <- nc:
		return true
	case <-l.done:
		return false
	}
}

func (l *listener) Accept() (net.Conn, error) {
	select {
	case nc := <-l.conns:
		return nc, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *listener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *listener) Addr() net.Addr { return &net.UnixAddr{Name: "grpcgate", Net: "unix"} }

// NetConn is the socket under the gateway's connection, for peer
// credentials.
func (gc *gconn) NetConn() net.Conn { return gc.Conn }
