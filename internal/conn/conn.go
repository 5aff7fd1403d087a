package conn

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshrpc/mesh/frame"
)

// Options configure a connection. The zero value works.
type Options struct {
	// HostPort is where this process listens for TChannel connections; empty
	// means it does not listen (sent as "0.0.0.0:0", ephemeral).
	HostPort string
	// ProcessName identifies this process to the peer; default: the binary's
	// name and pid.
	ProcessName string
	// Handler serves calls the peer sends on this connection; nil declines
	// them with a bad-request error.
	Handler Handler
	// Logger receives connection-level events; default: slog.Default().
	Logger *slog.Logger
	// HandshakeTimeout bounds the init exchange; default 5s.
	HandshakeTimeout time.Duration
	// WriteTimeout bounds one socket write, so a peer that stopped reading
	// cannot hold the connection forever; default 30s.
	WriteTimeout time.Duration
	// MaxMessageSize bounds a message received into memory (args 2 and 3 of a
	// request or response); default 64 MiB. Streamed args are not bounded.
	MaxMessageSize int
	// DefaultTimeout is the TTL of calls whose context has no deadline;
	// default 1 minute.
	DefaultTimeout time.Duration
	// OnClose, if set, runs once when the connection is closed, with the
	// reason (nil for a local Close or Shutdown).
	OnClose func(c *Conn, err error)
	// InitHeaders are sent in the handshake besides the standard ones.
	InitHeaders map[string]string
	// Relayer, if set, is offered every call the peer sends, and receives
	// the frames of the calls it takes and of the calls it sent (see Relayer).
	Relayer Relayer
}

// Relayer forwards calls frame by frame instead of serving them: meshd's
// routing fast path. Its methods run on the connection's read loop, so they
// must not block for long; the frame they get is valid only until they return
// (they may rewrite it in place).
type Relayer interface {
	// OfferCall gets the first frame of each call the peer sends on from, with
	// its decoded fields. Returning false lets the connection serve the call.
	OfferCall(from *Conn, f *frame.Frame, req *frame.CallReq) bool
	// Frame gets every call frame on from that the connection does not own:
	// continue frames and cancels of calls the relayer took, and answers to
	// calls it sent on from with ids from NewID.
	Frame(from *Conn, f *frame.Frame)
	// Closed says that c closed, so calls relayed through it must end.
	Closed(c *Conn, err error)
}

func (o *Options) fill() {
	if o.HostPort == "" {
		o.HostPort = frame.EphemeralHostPort
	}
	if o.ProcessName == "" {
		o.ProcessName = fmt.Sprintf("%s[%d]", baseName(os.Args[0]), os.Getpid())
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.HandshakeTimeout == 0 {
		o.HandshakeTimeout = 5 * time.Second
	}
	if o.WriteTimeout == 0 {
		o.WriteTimeout = 30 * time.Second
	}
	if o.MaxMessageSize == 0 {
		o.MaxMessageSize = 64 << 20
	}
	if o.DefaultTimeout == 0 {
		o.DefaultTimeout = time.Minute
	}
}

// Peer describes the far end as it introduced itself in the handshake.
type Peer struct {
	HostPort    string
	ProcessName string
	Headers     map[string]string // every init header it sent
}

// Ephemeral reports whether the peer does not listen, so its address must not
// be handed to others.
func (p Peer) Ephemeral() bool { return p.HostPort == frame.EphemeralHostPort }

// Conn is one TChannel connection. All methods are safe for concurrent use.
type Conn struct {
	remote string // RemoteHostPort
	nc     net.Conn
	opts   Options
	log    *slog.Logger
	peer   Peer
	w      *writer
	nextID atomic.Uint32

	mu       sync.Mutex
	out      map[uint32]*outCall // calls we sent, awaiting answers
	in       map[uint32]*inCall  // calls the peer sent, not yet answered
	pings    map[uint32]chan struct{}
	draining bool
	idle     chan struct{} // closed when draining and no call is left

	closeOnce sync.Once
	closed    chan struct{}
	closeErr  error

	writers sync.Pool       // *frame.MessageWriter bound to this connection
	base    context.Context // parent of handler contexts; carries the Conn
}

type connKey struct{}

// FromContext returns the connection a Handler's call arrived on.
func FromContext(ctx context.Context) *Conn {
	c, _ := ctx.Value(connKey{}).(*Conn)
	return c
}

// Dial connects to a TChannel peer at addr and completes the handshake.
func Dial(ctx context.Context, addr string, opts Options) (*Conn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, &frame.Error{Code: frame.ErrCodeNetwork, Message: err.Error()}
	}
	c, err := Client(nc, opts)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return c, nil
}

// Client runs the dialer's side of the handshake on nc.
func Client(nc net.Conn, opts Options) (*Conn, error) {
	c := newConn(nc, opts)
	if err := c.handshakeClient(); err != nil {
		return nil, err
	}
	c.start()
	return c, nil
}

// Server runs the acceptor's side of the handshake on nc. A peer that breaks
// the handshake's rules is sent a protocol error and disconnected.
func Server(nc net.Conn, opts Options) (*Conn, error) {
	c := newConn(nc, opts)
	if err := c.handshakeServer(); err != nil {
		return nil, err
	}
	c.start()
	return c, nil
}

func newConn(nc net.Conn, opts Options) *Conn {
	opts.fill()
	c := &Conn{
		nc:     nc,
		opts:   opts,
		out:    make(map[uint32]*outCall),
		in:     make(map[uint32]*inCall),
		pings:  make(map[uint32]chan struct{}),
		closed: make(chan struct{}),
		idle:   make(chan struct{}),
	}
	c.base = context.WithValue(context.Background(), connKey{}, c)
	c.remote = nc.RemoteAddr().String()
	c.log = opts.Logger.With("peer", c.remote)
	c.w = newWriter(nc, 1<<20, opts.WriteTimeout, func(err error) { c.fail(fmt.Errorf("write: %w", err)) })
	// Messages are written by the goroutines making or answering calls, so
	// they may write to the socket themselves.
	c.writers.New = func() any { return &frame.MessageWriter{Emit: c.w.writeInline} }
	return c
}

func (c *Conn) start() {
	go c.w.loop()
	go c.readLoop()
}

// Peer returns what the far end said about itself in the handshake.
func (c *Conn) Peer() Peer { return c.peer }

// LocalAddr and RemoteAddr are the socket's addresses.
func (c *Conn) LocalAddr() net.Addr  { return c.nc.LocalAddr() }
func (c *Conn) RemoteAddr() net.Addr { return c.nc.RemoteAddr() }

// RemoteHostPort is the socket's remote address as host:port, kept from
// when the connection was made (so asking costs nothing).
func (c *Conn) RemoteHostPort() string { return c.remote }

// Done is closed when the connection is closed.
func (c *Conn) Done() <-chan struct{} { return c.closed }

// Closed reports whether the connection is closed.
func (c *Conn) Closed() bool {
	select {
	case <-c.closed:
		return true
	default:
		return false
	}
}

// Err is why the connection closed: nil while open or after a local close.
func (c *Conn) Err() error {
	select {
	case <-c.closed:
		return c.closeErr
	default:
		return nil
	}
}

func (c *Conn) initHeaders() map[string]string {
	h := map[string]string{
		frame.InitHostPort:        c.opts.HostPort,
		frame.InitProcessName:     c.opts.ProcessName,
		frame.InitLanguage:        "go",
		frame.InitLanguageVersion: runtime.Version(),
		frame.InitTChannelVersion: "mesh",
	}
	for k, v := range c.opts.InitHeaders {
		h[k] = v
	}
	return h
}

func (c *Conn) handshakeClient() error {
	c.nc.SetDeadline(time.Now().Add(c.opts.HandshakeTimeout))
	defer c.nc.SetDeadline(time.Time{})
	b, err := frame.AppendInit(nil, frame.TypeInitReq, c.nextID.Add(1), frame.Init{Version: frame.Version, Headers: c.initHeaders()})
	if err != nil {
		return err
	}
	if _, err := c.nc.Write(b); err != nil {
		return &frame.Error{Code: frame.ErrCodeNetwork, Message: "handshake: " + err.Error()}
	}
	f, err := frame.NewReader(c.nc).ReadFrame()
	if err != nil {
		return &frame.Error{Code: frame.ErrCodeNetwork, Message: "handshake: " + err.Error()}
	}
	switch f.Type {
	case frame.TypeInitRes:
	case frame.TypeError:
		m, _ := frame.DecodeError(f.Payload)
		return &frame.Error{Code: m.Code, Message: "handshake refused: " + string(m.Message)}
	default:
		return c.refuse(f.ID, fmt.Sprintf("expected init res, got %s", f.Type))
	}
	return c.acceptInit(f)
}

func (c *Conn) handshakeServer() error {
	c.nc.SetDeadline(time.Now().Add(c.opts.HandshakeTimeout))
	defer c.nc.SetDeadline(time.Time{})
	f, err := frame.NewReader(c.nc).ReadFrame()
	if err != nil {
		if frame.IsProtocolError(err) {
			return c.refuse(frame.ConnErrorID, err.Error())
		}
		return &frame.Error{Code: frame.ErrCodeNetwork, Message: "handshake: " + err.Error()}
	}
	if f.Type != frame.TypeInitReq {
		return c.refuse(f.ID, fmt.Sprintf("expected init req, got %s", f.Type))
	}
	id := f.ID
	if err := c.acceptInit(f); err != nil {
		return err
	}
	b, _ := frame.AppendInit(nil, frame.TypeInitRes, id, frame.Init{Version: frame.Version, Headers: c.initHeaders()})
	if _, err := c.nc.Write(b); err != nil {
		return &frame.Error{Code: frame.ErrCodeNetwork, Message: "handshake: " + err.Error()}
	}
	return nil
}

// acceptInit checks the peer's init message and records who it is.
func (c *Conn) acceptInit(f *frame.Frame) error {
	m, err := frame.ParseInit(f.Payload)
	if err != nil {
		return c.refuse(f.ID, err.Error())
	}
	if m.Version != frame.Version {
		return c.refuse(f.ID, fmt.Sprintf("unsupported protocol version %d, want %d", m.Version, frame.Version))
	}
	for _, k := range []string{frame.InitHostPort, frame.InitProcessName} {
		if _, ok := m.Headers[k]; !ok {
			return c.refuse(f.ID, fmt.Sprintf("init is missing the required %q header", k))
		}
	}
	c.peer = Peer{HostPort: m.Headers[frame.InitHostPort], ProcessName: m.Headers[frame.InitProcessName], Headers: m.Headers}
	return nil
}

// refuse sends a fatal protocol error during the handshake and fails it.
func (c *Conn) refuse(id uint32, why string) error {
	c.nc.Write(frame.AppendError(nil, id, frame.ErrorMsg{Code: frame.ErrCodeProtocol, Message: []byte(why)}))
	c.nc.Close()
	return &frame.Error{Code: frame.ErrCodeProtocol, Message: "handshake: " + why}
}

// NewID reserves a message id for a call a Relayer sends on c.
func (c *Conn) NewID() uint32 { return c.newID() }

// Write queues whole frames for sending, copying them; a Relayer uses it to
// forward frames. It blocks while the peer is not keeping up.
func (c *Conn) Write(frames []byte) error { return c.w.write(frames) }

// newID returns the next message id, skipping the reserved 0xFFFFFFFF.
func (c *Conn) newID() uint32 {
	for {
		if id := c.nextID.Add(1); id != frame.ConnErrorID && id != 0 {
			return id
		}
	}
}

// sendError answers message id with an error frame.
func (c *Conn) sendError(id uint32, code frame.ErrCode, t frame.Tracing, msg string) {
	var buf [256]byte
	b := buf[:0]
	if len(msg) > 200 {
		b = nil
	}
	c.w.write(frame.AppendError(b, id, frame.ErrorMsg{Code: code, Tracing: t, Message: []byte(msg)}))
}

// Ping sends a ping and waits for its answer.
func (c *Conn) Ping(ctx context.Context) error {
	id := c.newID()
	ch := make(chan struct{})
	c.mu.Lock()
	c.pings[id] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.pings, id)
		c.mu.Unlock()
	}()
	var buf [frame.HeaderSize]byte
	if err := c.w.write(frame.AppendPing(buf[:0], frame.TypePingReq, id)); err != nil {
		return c.networkError(err)
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctxError(ctx)
	case <-c.closed:
		return c.networkError(c.closeErr)
	}
}

// Shutdown stops taking new calls in either direction, waits for the calls
// in flight to finish (or ctx to end), then closes the connection. Calls the
// peer starts meanwhile are declined, so it can send them elsewhere.
func (c *Conn) Shutdown(ctx context.Context) error {
	c.mu.Lock()
	if !c.draining {
		c.draining = true
		c.checkIdleLocked()
	}
	c.mu.Unlock()
	var err error
	select {
	case <-c.idle:
	case <-c.closed:
	case <-ctx.Done():
		err = ctx.Err()
	}
	c.close(nil)
	return err
}

// Close closes the connection at once; calls in flight fail.
func (c *Conn) Close() error {
	c.close(nil)
	return nil
}

// checkIdleLocked closes idle once a draining connection has no calls left.
func (c *Conn) checkIdleLocked() {
	if c.draining && len(c.out) == 0 && len(c.in) == 0 {
		select {
		case <-c.idle:
		default:
			close(c.idle)
		}
	}
}

// fail closes the connection because of err.
func (c *Conn) fail(err error) { c.close(err) }

func (c *Conn) close(err error) {
	c.closeOnce.Do(func() {
		c.closeErr = err
		if err != nil && !errors.Is(err, net.ErrClosed) {
			c.log.Debug("connection closed", "err", err)
		}
		c.w.stop()
		c.nc.Close()
		close(c.closed)
		c.mu.Lock()
		out := c.out
		c.out = make(map[uint32]*outCall)
		in := c.in
		c.in = make(map[uint32]*inCall)
		c.mu.Unlock()
		for _, call := range out {
			call.finish(c.networkError(err))
		}
		for _, call := range in {
			call.cancel()
		}
		if c.opts.Relayer != nil {
			c.opts.Relayer.Closed(c, err)
		}
		if c.opts.OnClose != nil {
			c.opts.OnClose(c, err)
		}
	})
}

func (c *Conn) networkError(err error) error {
	if err == nil {
		return &frame.Error{Code: frame.ErrCodeNetwork, Message: "connection closed"}
	}
	var e *frame.Error
	if errors.As(err, &e) {
		return e
	}
	return &frame.Error{Code: frame.ErrCodeNetwork, Message: err.Error()}
}

func ctxError(ctx context.Context) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return deadlineError{&frame.Error{Code: frame.ErrCodeTimeout, Message: "deadline exceeded"}}
	}
	return &frame.Error{Code: frame.ErrCodeCancelled, Message: "call cancelled"}
}

// readLoop decodes frames and routes them until the connection ends.
func (c *Conn) readLoop() {
	r := frame.NewReader(&directReader{br: bufio.NewReaderSize(c.nc, 64<<10), r: c.nc})
	st := readState{assembling: make(map[uint32]*inCall)}
	for {
		f, err := r.ReadFrame()
		if err == nil {
			err = c.dispatch(f, &st)
		}
		if err != nil {
			for _, call := range st.assembling {
				if call.pw != nil {
					call.pw.CloseWithError(&frame.Error{Code: frame.ErrCodeNetwork, Message: "connection closed mid-request"})
				}
			}
			if frame.IsProtocolError(err) {
				c.log.Warn("protocol error from peer, closing connection", "err", err)
				c.sendError(frame.ConnErrorID, frame.ErrCodeProtocol, frame.Tracing{}, err.Error())
			}
			if err == io.EOF {
				err = nil
				c.mu.Lock()
				if !c.draining && (len(c.out) > 0 || len(c.in) > 0) {
					err = io.ErrUnexpectedEOF
				}
				c.mu.Unlock()
				if err == nil {
					err = io.EOF
				}
			}
			c.fail(err)
			return
		}
	}
}

// directReader is a bufio.Reader that lets large reads skip its buffer:
// small frames arrive many to a system call, a large frame's payload goes
// straight from the socket to the frame buffer instead of being copied twice.
type directReader struct {
	br *bufio.Reader
	r  io.Reader
}

func (d *directReader) Read(p []byte) (int, error) {
	if n := d.br.Buffered(); len(p) >= 16<<10 && n < len(p) {
		if n > 0 {
			return d.br.Read(p[:n])
		}
		return d.r.Read(p)
	}
	return d.br.Read(p)
}

// readState is what only the read loop touches.
type readState struct {
	assembling map[uint32]*inCall // requests whose last frame has not come
	req        frame.CallReq
	res        frame.CallRes
	frag       frame.Fragment
}

func (c *Conn) dispatch(f *frame.Frame, st *readState) error {
	switch f.Type {
	case frame.TypeCallReq:
		return c.onCallReq(f, st)
	case frame.TypeCallReqContinue:
		return c.onCallReqContinue(f, st)
	case frame.TypeCallRes:
		return c.onCallRes(f, st)
	case frame.TypeCallResContinue:
		return c.onCallResContinue(f, st)
	case frame.TypeError:
		return c.onError(f)
	case frame.TypeCancel:
		if _, err := frame.DecodeCancel(f.Payload); err != nil {
			return err
		}
		c.mu.Lock()
		call := c.in[f.ID]
		c.mu.Unlock()
		if call != nil {
			call.cancelled.Store(true)
			call.cancel()
		} else if c.opts.Relayer != nil {
			c.opts.Relayer.Frame(c, f)
		}
		return nil
	case frame.TypeClaim:
		_, _, err := frame.DecodeClaim(f.Payload)
		return err
	case frame.TypePingReq:
		var buf [frame.HeaderSize]byte
		c.w.write(frame.AppendPing(buf[:0], frame.TypePingRes, f.ID))
		return nil
	case frame.TypePingRes:
		c.mu.Lock()
		ch := c.pings[f.ID]
		delete(c.pings, f.ID)
		c.mu.Unlock()
		if ch != nil {
			close(ch)
		}
		return nil
	case frame.TypeInitReq, frame.TypeInitRes:
		return &frame.ProtocolError{Rule: fmt.Sprintf("%s after the handshake", f.Type)}
	}
	c.log.Debug("ignoring frame of unknown type", "type", f.Type.String(), "call_id", f.ID)
	return nil
}

func (c *Conn) onError(f *frame.Frame) error {
	m, err := frame.DecodeError(f.Payload)
	if err != nil {
		return err
	}
	if f.ID == frame.ConnErrorID {
		return &frame.Error{Code: m.Code, Message: "peer closed the connection: " + string(m.Message)}
	}
	c.mu.Lock()
	call := c.out[f.ID]
	delete(c.out, f.ID)
	c.checkIdleLocked()
	c.mu.Unlock()
	if call != nil {
		call.finish(&frame.Error{Code: m.Code, Message: string(m.Message)})
	} else if c.opts.Relayer != nil {
		c.opts.Relayer.Frame(c, f)
	}
	return nil
}

func baseName(p string) string {
	for i := len(p) - 1; i >= 0; i-- {
		if p[i] == '/' {
			return p[i+1:]
		}
	}
	return p
}
