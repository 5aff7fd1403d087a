package grpcgate

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/proto"

	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/conn"
	"github.com/meshrpc/mesh/internal/tracing"
	"github.com/meshrpc/mesh/internal/workpool"
)

// BackendConfig names a stock gRPC server that serves a mesh service.
type BackendConfig struct {
	Service string // the mesh service it is an instance of
	Addr    string // host:port of its (plaintext) gRPC listener
	// HealthService is the name its grpc.health.v1 check is asked about
	// ("": the server as a whole).
	HealthService string
	// CheckEvery is the interval of health checks; default 2s.
	CheckEvery time.Duration
}

// DefaultCheckEvery is BackendConfig.CheckEvery's default.
const DefaultCheckEvery = 2 * time.Second

// checkTimeout bounds one health check, whatever the interval: a server
// that answers NOT_SERVING leaves at once, one that is merely slow for a
// moment (a loaded host) does not. Checks never overlap: the next starts
// after this one ends.
const checkTimeout = time.Second

// Backend delivers the mesh's calls for one service to a stock gRPC server
// over one HTTP/2 connection, and keeps the service registered while the
// server's health check passes.
type Backend struct {
	cfg  BackendConfig
	mesh Mesh
	log  *slog.Logger
	m    *metrics
	up   *upstream
	work *workpool.Pool // the goroutines that make its calls
	// maxMessage bounds a request the relay delivers (Limits.MaxMessage).
	maxMessage int
	stop       context.CancelFunc
	done       chan struct{}

	mu      sync.Mutex
	ours    *conn.Conn // the app's end of the in-memory connection
	theirs  *conn.Conn // meshd's end, where the relay sends the calls
	serving bool
}

// StartBackend begins checking the server's health; the service joins
// the mesh once a check passes, and leaves it when one fails.
func (g *Gateway) StartBackend(cfg BackendConfig) (*Backend, error) {
	if cfg.CheckEvery <= 0 {
		cfg.CheckEvery = DefaultCheckEvery
	}
	if _, _, err := net.SplitHostPort(cfg.Addr); err != nil {
		return nil, fmt.Errorf("grpc server %s for %s: %w", cfg.Addr, cfg.Service, err)
	}
	g.m.backends.WithLabelValues(cfg.Service, cfg.Addr).Set(0) // down until a check passes
	ctx, stop := context.WithCancel(context.Background())
	b := &Backend{cfg: cfg, mesh: g.mesh, log: g.log.With("service", cfg.Service, "grpc_server", cfg.Addr), m: g.m,
		up: &upstream{addr: cfg.Addr, maxMessage: g.limits.MaxMessage, timeout: g.limits.WriteTimeout, batch: &g.batch}, work: g.work, stop: stop, done: make(chan struct{}), maxMessage: g.limits.MaxMessage}
	go b.follow(ctx)
	return b, nil
}

// Close withdraws the service and closes the connections.
func (b *Backend) Close() {
	b.stop()
	<-b.done
}

// follow checks the server's health until stopped.
func (b *Backend) follow(ctx context.Context) {
	defer close(b.done)
	defer func() {
		b.setServing(context.Background(), false, "meshd stops")
		b.mu.Lock()
		if b.ours != nil {
			b.ours.Close()
		}
		b.mu.Unlock()
		b.up.close()
	}()
	t := time.NewTicker(b.cfg.CheckEvery)
	defer t.Stop()
	for {
		ok, why := b.check(ctx)
		b.setServing(ctx, ok, why)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// check asks the server's grpc.health.v1 once.
func (b *Backend) check(ctx context.Context) (bool, string) {
	cctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	in, _ := proto.Marshal(&healthpb.HealthCheckRequest{Service: b.cfg.HealthService})
	r := b.up.call(cctx, "/grpc.health.v1.Health/Check", nil, in)
	if err := r.status.Err(); err != nil {
		return false, "health check failed: " + err.Error()
	}
	var res healthpb.HealthCheckResponse
	if err := proto.Unmarshal(r.message, &res); err != nil {
		return false, "health check answered what is not a HealthCheckResponse: " + err.Error()
	}
	if res.Status != healthpb.HealthCheckResponse_SERVING {
		return false, "health check says " + res.Status.String()
	}
	return true, "health check passes"
}

// setServing registers or withdraws the service when its health changed.
func (b *Backend) setServing(ctx context.Context, ok bool, why string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.serving && (b.ours == nil || b.ours.Closed()) {
		b.serving = false // its connection into meshd ended, and its instance with it
	}
	if ok == b.serving {
		return
	}
	if !ok {
		b.serving = false
		b.m.backends.WithLabelValues(b.cfg.Service, b.cfg.Addr).Set(0)
		if b.theirs != nil {
			if err := b.mesh.Withdraw(ctx, b.theirs); err != nil {
				b.log.Warn("withdrawing the gRPC server's instance failed", "err", err)
			}
		}
		b.log.Info("gRPC server left the mesh", "why", why)
		return
	}
	if b.ours == nil || b.ours.Closed() {
		b.ours, b.theirs = b.mesh.Attach(conn.Options{
			ProcessName: "grpc server at " + b.cfg.Addr,
			Async:       b.serve,
			Logger:      b.log,
		}, "")
	}
	meta := map[string]string{"process": "grpc server at " + b.cfg.Addr, "protocol": "grpc"}
	if err := b.mesh.Serve(ctx, b.theirs, b.cfg.Service, meta); err != nil {
		b.log.Warn("registering the gRPC server's instance failed", "err", err)
		return
	}
	b.serving = true
	b.m.backends.WithLabelValues(b.cfg.Service, b.cfg.Addr).Set(1)
	b.log.Info("gRPC server joined the mesh", "why", why)
}

// serve makes a call the relay delivered to the gRPC server without a
// goroutine of its own (conn.Options.Async): the request goes out on the
// goroutine that delivered it, the answer comes back on the connection's
// reading goroutine.
func (b *Backend) serve(ctx context.Context, req *conn.Request, answer func(*conn.Response, error)) {
	if req.Body != nil { // arg3 still arriving: read on a goroutine of its own
		b.work.Go(func() { answer(b.handle(ctx, req)) })
		return
	}
	path, md, err := b.request(req)
	if err != nil {
		answer(nil, err)
		return
	}
	b.up.start(ctx, path, md, req.Arg3, func(r reply) {
		answer(b.response(r)) // its message copied into the answer's frames
		r.release()
	})
}

// handle makes one call the relay delivered to the gRPC server.
func (b *Backend) handle(ctx context.Context, req *conn.Request) (*conn.Response, error) {
	body, err := req.ReadBody(b.maxMessage)
	if err != nil {
		return nil, err
	}
	path, md, err := b.request(req)
	if err != nil {
		return nil, err
	}
	return b.response(b.up.call(ctx, path, md, body))
}

// request is a delivered call's gRPC path and metadata.
func (b *Backend) request(req *conn.Request) (string, meta, error) {
	path, ok := pathOf(req.Method)
	if !ok {
		return "", nil, frame.Errorf(frame.ErrCodeBadRequest, "%s is a gRPC server: call it with a procedure of the form pkg.Service::Method (as: proto), not %q", b.cfg.Service, req.Method)
	}
	if len(req.Arg3) > b.maxMessage {
		return "", nil, frame.Errorf(frame.ErrCodeBadRequest, "request body exceeds %d bytes", b.maxMessage)
	}
	md, err := requestMetadata(req)
	if err != nil {
		return "", nil, frame.Errorf(frame.ErrCodeBadRequest, "%v", err)
	}
	return path, md, nil
}

// protoScheme is every answer's transport headers: read only, and full
// (len = cap), so no append writes into it.
var protoScheme = slices.Clip(frame.AppendHeader(nil, frame.HeaderArgScheme, "proto"))

// response is the TChannel answer of the gRPC server's reply.
func (b *Backend) response(r reply) (*conn.Response, error) {
	arg2, aerr := answerHeaders(r.header, r.trailer)
	if aerr != nil {
		return nil, frame.Errorf(frame.ErrCodeUnexpected, "the answer of the gRPC server: %v", aerr)
	}
	res := &conn.Response{Headers: protoScheme, Arg2: arg2}
	st := r.status
	if st.Code() == codes.OK {
		res.Arg3 = r.message
		return res, nil
	}
	if code, ok := errCodeOf(st.Code()); ok && len(st.Proto().Details) == 0 {
		return nil, &frame.Error{Code: code, Message: st.Message()}
	}
	// A status TChannel has no code for (or one with details): an
	// application error that carries it whole.
	res.Code = frame.ResAppError
	res.Arg2, _ = frame.AppendAppHeader(res.Arg2, headerErrorCode, fmt.Sprint(int(st.Code())))
	res.Arg2, _ = frame.AppendAppHeader(res.Arg2, headerErrorMessage, st.Message())
	if len(st.Proto().Details) > 0 {
		d, _ := proto.Marshal(st.Proto())
		res.Arg2, _ = frame.AppendAppHeader(res.Arg2, headerErrorDetails, string(d))
	}
	return res, nil
}

// requestMetadata is what a gRPC server is sent for a TChannel call: its
// application headers, the routing ones under YARPC's keys, the trace.
func requestMetadata(req *conn.Request) (meta, error) {
	md := make(meta, 0, 8)
	var sink mdSink
	if err := frame.EachAppHeader(req.Arg2, func(k, v []byte) bool {
		sink.add(&md, string(k), string(v))
		return true
	}); err != nil {
		return nil, fmt.Errorf("arg2 is not the proto encoding's headers: %v", err)
	}
	if err := sink.err(); err != nil {
		return nil, err
	}
	// The sink took no key of these (notForwarded): each is added once.
	md.add(mdService, req.Service)
	for _, t := range transport {
		if v, ok := req.Headers.Get(t.header); ok && len(v) > 0 {
			md.add(t.md, string(v))
		}
	}
	traceMetadata(&md, req.Tracing, tracing.High(req.Headers))
	return md, nil
}

// answerHeaders puts a gRPC answer's header and trailer metadata in one
// list, the trailers marked with trailerPrefix.
func answerHeaders(header, trailer meta) ([]byte, error) {
	list, err := appendMD(nil, header, "")
	if err != nil {
		return nil, err
	}
	return appendMD(list, trailer, trailerPrefix)
}
