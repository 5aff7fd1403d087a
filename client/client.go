package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/conn"
	"github.com/meshrpc/mesh/internal/tracing"
	"github.com/meshrpc/mesh/router"

	"go.opentelemetry.io/otel/trace"
)

// Options configure a Client or a Server. The zero value works.
type Options struct {
	// ServiceName is this program's own service name, sent as the caller
	// name ("cn") on every call; default: the process name. Dial to a meshd
	// also proves it (see Client.Identity), so that intentions, caller
	// limits and the kill switch know the calls are this service's.
	ServiceName string
	// Token is a Consul ACL token allowing service:write on the services this
	// program is (ServiceName) and serves (Server.Advertise): its proof to a
	// meshd that uses Consul. Without it meshd goes by the program's Unix
	// user (its advertise grants). It is sent only to meshd, in the
	// advertise and identify calls.
	Token string
	// ProcessName is sent in the handshake; default: binary name and pid.
	ProcessName string
	// Timeout applies to calls whose context has no deadline; default 10s.
	Timeout time.Duration
	// Checksum is the type used for calls this side sends; default CRC-32C.
	// Set frame.ChecksumNone explicitly with NoChecksum.
	Checksum   frame.ChecksumType
	NoChecksum bool
	// MaxBodySize bounds a body received into memory; default 64 MiB.
	MaxBodySize int
	// Logger receives connection events; default slog.Default().
	Logger *slog.Logger
	// Zipkin, when set, is the Zipkin v2 endpoint spans of this process go
	// to (e.g. http://127.0.0.1:9411/api/v2/spans), named after ServiceName.
	Zipkin string
	// ZipkinEncoding is how spans are posted: "proto" (the default,
	// Zipkin's proto3: smaller and cheaper to write) or "json".
	ZipkinEncoding string
	// SampleRate is the share of new traces recorded (default 1 when Zipkin
	// is set; 0 < rate <= 1). Calls arriving with a trace keep its decision.
	SampleRate float64
	// TraceService names this process's spans in traces; default
	// ServiceName (then ProcessName).
	TraceService string
	// Wait makes Dial and Server.Advertise retry, with backoff, until their
	// context ends, instead of failing at once when meshd is not up yet: for
	// programs started alongside their meshd.
	Wait bool
	// Policies are per-service routing policies for a Client of DialPeers
	// (attempts, per-attempt timeout, balancer, breaker thresholds, retry
	// budget); services not named get the defaults.
	Policies router.Policies
}

// tracer builds the options' tracer (nil when tracing is off).
func (o Options) tracer() (*tracing.Tracer, error) {
	rate := o.SampleRate
	if rate == 0 {
		rate = 1
	}
	name := o.TraceService
	if name == "" {
		name = o.ServiceName
	}
	if name == "" {
		name = o.ProcessName
	}
	return tracing.New(tracing.Config{ZipkinURL: o.Zipkin, Encoding: o.ZipkinEncoding, SampleRate: rate, ServiceName: name})
}

func (o Options) withDefaults() Options {
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Second
	}
	if o.Checksum == frame.ChecksumNone && !o.NoChecksum {
		o.Checksum = frame.ChecksumCRC32C
	}
	if o.MaxBodySize == 0 {
		o.MaxBodySize = 64 << 20
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

func (o Options) connOptions(hostPort string, h conn.Handler) conn.Options {
	return conn.Options{
		HostPort:       hostPort,
		ProcessName:    o.ProcessName,
		Handler:        h,
		Logger:         o.Logger,
		MaxMessageSize: o.MaxBodySize,
		DefaultTimeout: o.Timeout,
	}
}

// Client calls services over one TChannel connection (Dial), or over
// several peers chosen per call (DialPeers).
type Client struct {
	c        *conn.Conn
	direct   *direct
	opts     Options
	caller   string
	tracer   *tracing.Tracer
	identity atomic.Pointer[string]
}

// Dial connects to a TChannel peer (a meshd, or a service directly).
func Dial(ctx context.Context, addr string, opts Options) (*Client, error) {
	opts = opts.withDefaults()
	tracer, err := opts.tracer()
	if err != nil {
		return nil, err
	}
	c, err := retrying(ctx, opts.Wait, func() (*conn.Conn, error) { return conn.Dial(ctx, addr, opts.connOptions("", nil)) })
	if err != nil {
		return nil, err
	}
	cl := &Client{c: c, opts: opts, caller: callerName(opts), tracer: tracer}
	if opts.ServiceName != "" {
		if err := cl.identify(ctx); err != nil && opts.Token != "" {
			c.Close()
			return nil, err // a token means the program wants its identity: say why it has none
		}
	}
	return cl, nil
}

// identify proves ServiceName to meshd (its "identify" call). Without a
// token a refusal only leaves the calls anonymous; a peer that is not a
// meshd has no such call, and needs none.
func (c *Client) identify(ctx context.Context) error {
	arg3, _ := json.Marshal(map[string]string{"service": c.opts.ServiceName})
	h := frame.AppendHeader(nil, frame.HeaderArgScheme, "json")
	h = frame.AppendHeader(h, frame.HeaderCallerName, c.caller)
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	res, err := c.c.Call(ctx, &conn.Request{Service: "meshd", Method: "identify", Headers: h, Arg2: tokenHeaders(c.opts.Token), Arg3: arg3, Checksum: c.opts.Checksum})
	if err == nil && res.Code != frame.ResOK {
		err = &ApplicationError{Headers: res.Arg2, Body: res.Arg3, Message: "identify refused: " + string(res.Arg3)}
	}
	if err != nil {
		c.opts.Logger.Debug("calls go out anonymous: meshd did not take this program for "+c.opts.ServiceName, "err", err)
		return fmt.Errorf("proving the identity %q to meshd: %w", c.opts.ServiceName, err)
	}
	var out struct {
		Identity string `json:"identity"`
	}
	json.Unmarshal(res.Arg3, &out)
	c.identity.Store(&out.Identity)
	return nil
}

// Identity is the service meshd took this program for (proven by Token or
// by its Unix user), or "" when its calls go out anonymous.
func (c *Client) Identity() string {
	if id := c.identity.Load(); id != nil {
		return *id
	}
	return ""
}

// tokenHeaders is arg2 of meshd's own calls: JSON headers with the token.
func tokenHeaders(token string) []byte {
	if token == "" {
		return []byte("{}")
	}
	b, _ := json.Marshal(map[string]string{"mesh-token": token})
	return b
}

// retrying runs connect once, or with wait until it succeeds or ctx ends
// (then the last error is returned).
func retrying(ctx context.Context, wait bool, connect func() (*conn.Conn, error)) (*conn.Conn, error) {
	bo := reconnect()
	bo.Max = 2 * time.Second // a program waiting to start wants meshd soon after it is up
	for {
		c, err := connect()
		if err == nil || !wait || errors.Is(err, ErrServerClosed) {
			return c, err
		}
		if !bo.Wait(ctx.Done()) {
			return nil, err
		}
	}
}

// callerName is what calls say they come from ("cn").
func callerName(opts Options) string {
	switch {
	case opts.ServiceName != "":
		return opts.ServiceName
	case opts.ProcessName != "":
		return opts.ProcessName
	}
	return "mesh-client"
}

// Response is a successful answer to a raw call.
type Response struct {
	Headers []byte // arg2
	Body    []byte // arg3
}

// CallOption adjusts one call.
type CallOption func(*call)

// call is one call being prepared.
type call struct {
	req    conn.Request
	report *frame.Tracing
	caller string // "cn"
}

// WithShardKey routes the call by key ("sk"): the same key reaches the same
// instance while it is healthy.
func WithShardKey(key string) CallOption { return WithTransportHeader(frame.HeaderShardKey, key) }

// WithRoutingKey sets the routing key ("rk"): meshd (and DialPeers) route
// the call to an instance of the service key names, with its policy, as
// tchannel-go's relay does; the call still names its own service, so that
// instance must serve it (a proxy for others' services, say).
func WithRoutingKey(key string) CallOption { return WithTransportHeader(frame.HeaderRoutingKey, key) }

// WithRetryFlags sets the "re" header: "c" (retry on connection errors, the
// default), "t" (also on timeouts), "n" (never).
func WithRetryFlags(flags string) CallOption {
	return WithTransportHeader(frame.HeaderRetryFlags, flags)
}

// WithTransportHeader adds any transport header to the call.
func WithTransportHeader(key, value string) CallOption {
	return func(c *call) { c.req.Headers = frame.AppendHeader(c.req.Headers, key, value) }
}

// WithCaller sets the call's caller name ("cn") in place of the client's
// (Options.ServiceName). It is a name only: meshd goes by what the
// connection proved (Client.Identity), not by this.
func WithCaller(name string) CallOption { return func(c *call) { c.caller = name } }

// WithTracing sets the call's tracing field.
func WithTracing(t frame.Tracing) CallOption { return func(c *call) { c.req.Tracing = t } }

// WithTrace records this call's trace whatever the sample rate (meshctl
// call --trace): the sampled flag travels with it to every hop.
func WithTrace() CallOption {
	return func(c *call) {
		if c.req.Tracing.TraceID == 0 {
			c.req.Tracing.Flags |= frame.TracingSampled
		}
	}
}

// ReportTracing stores in t the tracing field the call went out with: its
// trace id (see TraceID) finds the call in a trace backend.
func ReportTracing(t *frame.Tracing) CallOption {
	return func(c *call) { c.report = t }
}

// WithChecksum overrides the checksum type for this call.
func WithChecksum(t frame.ChecksumType) CallOption { return func(c *call) { c.req.Checksum = t } }

// Call makes a raw call: headers and body are sent as they are.
func (c *Client) Call(ctx context.Context, service, method string, headers, body []byte, opts ...CallOption) (*Response, error) {
	res, err := c.call(ctx, "raw", service, method, headers, nil, body, opts)
	if err != nil {
		return nil, err
	}
	if res.Code != frame.ResOK {
		return nil, &ApplicationError{Headers: res.Arg2, Body: res.Arg3}
	}
	return &Response{Headers: res.Arg2, Body: res.Arg3}, nil
}

// call sends one call. A JSON call's application headers come as
// jsonHeaders, encoded into arg2 once the call's tracing is known: the trace
// context goes into them too.
func (c *Client) call(ctx context.Context, scheme, service, method string, arg2 []byte, jsonHeaders map[string]string, arg3 []byte, opts []CallOption) (*conn.Response, error) {
	cl := call{req: conn.Request{
		Service:  service,
		Method:   method,
		Arg2:     arg2,
		Arg3:     arg3,
		Checksum: c.opts.Checksum,
	}}
	req := &cl.req
	cl.caller = c.caller
	req.Headers = frame.AppendHeader(make(frame.Headers, 0, 64), frame.HeaderArgScheme, scheme)
	for _, o := range opts {
		o(&cl)
	}
	req.Headers = frame.AppendHeader(req.Headers, frame.HeaderCallerName, cl.caller)
	forced := req.Tracing.TraceID == 0 && req.Tracing.Sampled() // WithTrace
	// traced: this call's span is recorded, and written when it ends.
	var traced bool
	var start time.Time
	var high uint64               // of a 128-bit trace id, the context's span's
	if req.Tracing.TraceID == 0 { // else the caller set the ids itself (WithTracing)
		var tr frame.Tracing
		tr, traced = c.tracer.Decide(ctx, frame.Tracing{}, forced)
		if c.tracer == nil && forced {
			tr = newTracing()
		}
		if c.tracer != nil { // the trace, if any, is ctx's or a new one (64 bits)
			high = tracing.HighOf(ctx)
			req.Headers = tracing.AppendHigh(req.Headers, high)
		}
		req.Tracing = tr
		if traced {
			start = time.Now()
		}
	}
	if cl.report != nil {
		*cl.report = req.Tracing
	}
	if scheme == "json" {
		var err error
		if req.Arg2, err = encodeJSONHeaders(jsonHeaders, req.Tracing); err != nil {
			return nil, err
		}
	}
	var res *conn.Response
	var err error
	if c.direct != nil {
		res, err = c.direct.call(ctx, req)
	} else {
		res, err = c.c.Call(ctx, req)
	}
	if traced {
		rec := tracing.Record{Name: method, Kind: trace.SpanKindClient, Tracing: req.Tracing, TraceHigh: high, Start: start, End: time.Now(),
			Remote: service, Tags: []tracing.Tag{{Key: "peer.service", Value: service}, {Key: "mesh.scheme", Value: scheme}}}
		switch {
		case err != nil:
			rec.Code, rec.Message = frame.CodeOf(err).String(), err.Error()
		case res.Code != frame.ResOK:
			rec.Code = "application error"
		}
		c.tracer.Emit(&rec)
	}
	return res, err
}

// TraceID returns the trace id a call's tracing field carries, as Zipkin and
// Jaeger print it (16 hex digits), for WithTracing callers and meshctl.
func TraceID(t frame.Tracing) string { return fmt.Sprintf("%016x", t.TraceID) }

// Ping checks the connection with a ping round trip; a Client of DialPeers pings every peer.
func (c *Client) Ping(ctx context.Context) error {
	if c.direct != nil {
		return c.direct.ping(ctx)
	}
	return c.c.Ping(ctx)
}

// Close closes the connection at once; calls in flight fail. Spans still
// queued for export are sent first (for at most a second).
func (c *Client) Close() error {
	if c.tracer != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		c.tracer.Shutdown(ctx)
		cancel()
	}
	if c.direct != nil {
		return c.direct.close()
	}
	return c.c.Close()
}

// Shutdown stops new calls, waits for those in flight, then closes.
func (c *Client) Shutdown(ctx context.Context) error {
	if c.direct != nil {
		return c.direct.shutdown(ctx)
	}
	return c.c.Shutdown(ctx)
}
