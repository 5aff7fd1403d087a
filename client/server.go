package client

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"sync"
	"sync/atomic"

	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/conn"
	"github.com/meshrpc/mesh/internal/tracing"

	"go.opentelemetry.io/otel/trace"
)

// Call is an incoming call as a Handler sees it.
type Call struct {
	Service string
	Method  string
	Caller  string // the "cn" transport header
	Scheme  string // the "as" transport header
	Headers []byte // arg2, in the scheme's format
	// Body is arg3 read whole (up to Options.MaxBodySize).
	Body []byte
	// Transport holds every transport header of the call.
	Transport frame.Headers
	Tracing   frame.Tracing
}

// Handler serves calls for one method. Returning an *Error answers with that
// wire code; returning an *ApplicationError answers with an application
// error; any other error is sent as an unexpected error.
type Handler interface {
	Serve(ctx context.Context, call *Call) (*Response, error)
}

// HandlerFunc adapts a function to a Handler.
type HandlerFunc func(ctx context.Context, call *Call) (*Response, error)

// Serve calls f.
func (f HandlerFunc) Serve(ctx context.Context, call *Call) (*Response, error) { return f(ctx, call) }

// JSON adapts a typed function to a JSON-scheme Handler. An error it returns
// that is not an *Error becomes an application error whose body is
// {"type":"error","message":...}, as tchannel-go's json package answers.
func JSON[In, Out any](fn func(ctx context.Context, headers map[string]string, in In) (Out, error)) Handler {
	return HandlerFunc(func(ctx context.Context, call *Call) (*Response, error) {
		headers, err := decodeJSONHeaders(call.Headers)
		if err != nil {
			return nil, err
		}
		var in In
		if len(call.Body) > 0 {
			if err := json.Unmarshal(call.Body, &in); err != nil {
				return nil, Errorf(frame.ErrCodeBadRequest, "decoding JSON body: %v", err)
			}
		}
		out, err := fn(ctx, headers, in)
		if err != nil {
			var werr *Error
			if errors.As(err, &werr) {
				return nil, werr
			}
			body, _ := json.Marshal(map[string]string{"type": "error", "message": err.Error()})
			return nil, &ApplicationError{Headers: []byte("{}"), Body: body, Message: err.Error()}
		}
		body, err := json.Marshal(out)
		if err != nil {
			return nil, Errorf(frame.ErrCodeUnexpected, "encoding JSON answer: %v", err)
		}
		return &Response{Headers: []byte("{}"), Body: body}, nil
	})
}

// Server serves registered handlers to every connection it accepts.
type Server struct {
	opts   Options
	tracer *tracing.Tracer

	mu         sync.RWMutex
	handlers   map[string]map[string]Handler
	conns      map[*conn.Conn]struct{}
	advertised map[*conn.Conn]struct{} // connections to meshds this server advertised on
	lis        []net.Listener
	closing    bool
	done       chan struct{} // closed by Shutdown
	withdrawn  atomic.Bool   // taken out of rotation by Withdraw
}

// ErrServerClosed is returned by Serve and Advertise after Shutdown.
var ErrServerClosed = errors.New("mesh server closed")

// NewServer returns a Server with no handlers.
func NewServer(opts Options) *Server {
	opts = opts.withDefaults()
	tracer, err := opts.tracer()
	if err != nil {
		opts.Logger.Error("tracing off: bad settings", "err", err)
	}
	return &Server{
		tracer:     tracer,
		opts:       opts,
		handlers:   make(map[string]map[string]Handler),
		conns:      make(map[*conn.Conn]struct{}),
		advertised: make(map[*conn.Conn]struct{}),
		done:       make(chan struct{}),
	}
}

// Register serves method of service with h, replacing any earlier handler.
func (s *Server) Register(service, method string, h Handler) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.handlers[service] == nil {
		s.handlers[service] = make(map[string]Handler)
	}
	s.handlers[service][method] = h
}

// Services lists the services that have handlers.
func (s *Server) Services() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]string, 0, len(s.handlers))
	for name := range s.handlers {
		out = append(out, name)
	}
	return out
}

// Serve accepts connections on l until l is closed or Shutdown is called.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return net.ErrClosed
	}
	s.lis = append(s.lis, l)
	s.mu.Unlock()
	hostPort := l.Addr().String()
	for {
		nc, err := l.Accept()
		if err != nil {
			s.mu.RLock()
			closing := s.closing
			s.mu.RUnlock()
			if closing {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		go s.accept(nc, hostPort)
	}
}

func (s *Server) accept(nc net.Conn, hostPort string) {
	opts := s.opts.connOptions(hostPort, s.handle)
	opts.OnClose = s.untrack
	c, err := conn.Server(nc, opts)
	if err != nil {
		s.opts.Logger.Debug("handshake failed", "peer", nc.RemoteAddr().String(), "err", err)
		return
	}
	if !s.track(c) {
		c.Close()
	}
}

// track adds a connection for Shutdown to drain; false once closing.
func (s *Server) track(c *conn.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) untrack(c *conn.Conn, _ error) {
	s.mu.Lock()
	delete(s.conns, c)
	delete(s.advertised, c)
	s.mu.Unlock()
}

// Handle serves one call on a connection; it is the conn.Handler of every
// connection the server accepts, and can serve a connection dialled elsewhere.
func (s *Server) handle(ctx context.Context, req *conn.Request) (*conn.Response, error) {
	s.mu.RLock()
	h := s.handlers[req.Service][req.Method]
	s.mu.RUnlock()
	if h == nil {
		return nil, Errorf(frame.ErrCodeBadRequest, "no handler for service %q and method %q", req.Service, req.Method)
	}
	parent := req.Tracing
	if as, _ := req.Headers.Get(frame.HeaderArgScheme); s.tracer != nil && string(as) == "json" {
		parent = headerParent(req.Arg2, parent)
	}
	ctx, span, _ := s.tracer.Start(ctx, req.Method, trace.SpanKindServer, parent, tracing.High(req.Headers), false)
	defer span.End()
	res, err := s.serve(ctx, h, req)
	var ae *ApplicationError
	switch {
	case errors.As(err, &ae) || err == nil && res.Code != frame.ResOK:
		tracing.Error(span, "application error", "")
	case err != nil:
		tracing.Error(span, frame.CodeOf(err).String(), err.Error())
	}
	return res, err
}

// serve runs one call's handler.
func (s *Server) serve(ctx context.Context, h Handler, req *conn.Request) (*conn.Response, error) {
	body, err := req.ReadBody(s.opts.MaxBodySize)
	if err != nil {
		return nil, err
	}
	call := &Call{
		Service:   req.Service,
		Method:    req.Method,
		Headers:   req.Arg2,
		Body:      body,
		Transport: req.Headers,
		Tracing:   req.Tracing,
	}
	if v, ok := req.Headers.Get(frame.HeaderCallerName); ok {
		call.Caller = string(v)
	}
	scheme, _ := req.Headers.Get(frame.HeaderArgScheme)
	call.Scheme = string(scheme)
	res, err := h.Serve(ctx, call)
	resHeaders := frame.AppendHeader(nil, frame.HeaderArgScheme, call.Scheme)
	var ae *ApplicationError
	if errors.As(err, &ae) {
		return &conn.Response{Code: frame.ResAppError, Headers: resHeaders, Arg2: ae.Headers, Arg3: ae.Body, Checksum: req.Checksum}, nil
	}
	if err != nil {
		return nil, err
	}
	if res == nil {
		res = &Response{}
	}
	return &conn.Response{Headers: resHeaders, Arg2: res.Headers, Arg3: res.Body, Checksum: req.Checksum}, nil
}

// Shutdown stops accepting, lets every connection finish its calls in
// flight (declining new ones), and returns when all are closed or ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if !s.closing {
		close(s.done)
	}
	s.closing = true
	ads := make([]*conn.Conn, 0, len(s.advertised))
	for c := range s.advertised {
		ads = append(ads, c)
	}
	s.mu.Unlock()
	// Withdraw from meshds first, so they stop routing new calls here.
	for _, c := range ads {
		if err := s.adCall(ctx, c, "unad"); err != nil {
			s.opts.Logger.Debug("unadvertise failed", "err", err)
		}
	}
	s.mu.Lock()
	for _, l := range s.lis {
		l.Close()
	}
	conns := make([]*conn.Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	var wg sync.WaitGroup
	errs := make([]error, len(conns))
	for i, c := range conns {
		wg.Go(func() { errs[i] = c.Shutdown(ctx) })
	}
	wg.Wait()
	s.tracer.Shutdown(ctx) // exports the spans still queued
	return errors.Join(errs...)
}
