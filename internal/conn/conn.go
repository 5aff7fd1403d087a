package conn

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/outbox"
)

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
	w      *outbox.Writer
	nextID atomic.Uint32
	frames atomic.Uint64 // frames read, for the idle check

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

// Dial connects to a TChannel peer at addr (host:port, or unix:PATH for a
// Unix socket) and completes the handshake.
func Dial(ctx context.Context, addr string, opts Options) (*Conn, error) {
	var d net.Dialer
	network := "tcp"
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		network, addr = "unix", path
	}
	nc, err := d.DialContext(ctx, network, addr)
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

// Client runs the dialer's side of the handshake on nc; on failure nc is
// closed.
func Client(nc net.Conn, opts Options) (*Conn, error) {
	c := newConn(nc, opts)
	if err := c.handshakeClient(); err != nil {
		nc.Close()
		return nil, err
	}
	c.start()
	return c, nil
}

// Server runs the acceptor's side of the handshake on nc. A peer that breaks
// the handshake's rules is sent a protocol error and disconnected; one that
// does not finish it within HandshakeTimeout is disconnected: on any failure
// nc is closed.
func Server(nc net.Conn, opts Options) (*Conn, error) {
	c := newConn(nc, opts)
	if err := c.handshakeServer(); err != nil {
		nc.Close()
		return nil, err
	}
	c.start()
	return c, nil
}

func newConn(nc net.Conn, opts Options) *Conn {
	opts.fill()
	nc = outbox.Socket(nc) // reads and writes without the scheduler's bookkeeping
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
	c.w = outbox.New(nc, 1<<20, opts.WriteTimeout, opts.QueueBudget, func(err error) { c.Fail(fmt.Errorf("write: %w", err)) })
	// Messages are written by the goroutines making or answering calls, so
	// they may write to the socket themselves.
	c.writers.New = func() any { return &frame.MessageWriter{Emit: c.w.WriteInline} }
	return c
}

func (c *Conn) start() {
	go c.w.Loop()
	go c.readLoop()
	if c.opts.IdleTimeout > 0 {
		c.idleCheck(c.frames.Load())
	}
}

// idleCheck runs every IdleTimeout while the connection is open: when no
// frame came since the last check (seen: the count then), the peer is
// pinged, and a peer that answers nothing within half the timeout is gone
// (a half-open connection, a hung process) and the connection is closed.
// A peer that reads and answers stays, calls or not.
func (c *Conn) idleCheck(seen uint64) {
	time.AfterFunc(c.opts.IdleTimeout, func() {
		if c.Closed() {
			return
		}
		if now := c.frames.Load(); now != seen {
			c.idleCheck(now)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), c.opts.IdleTimeout/2)
		defer cancel()
		if err := c.Ping(ctx); err != nil && !c.Closed() {
			c.log.Debug("idle peer did not answer a ping; closing", "err", err)
			c.Fail(fmt.Errorf("%w (for %v)", ErrIdle, c.opts.IdleTimeout))
			return
		}
		c.idleCheck(c.frames.Load())
	})
}

// Peer returns what the far end said about itself in the handshake.
func (c *Conn) Peer() Peer { return c.peer }

// Tag is Options.Tag.
func (c *Conn) Tag() any { return c.opts.Tag }

// NetConn is the socket under the connection, for its owner's checks of
// who is on the far end (peer credentials); reading or writing it would
// break the connection.
func (c *Conn) NetConn() net.Conn { return c.nc }

// TLS is the connection's TLS state; ok is false on a plaintext one.
func (c *Conn) TLS() (state tls.ConnectionState, ok bool) {
	if tc, isTLS := c.nc.(*tls.Conn); isTLS {
		return tc.ConnectionState(), true
	}
	return tls.ConnectionState{}, false
}

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

// NewID reserves a message id for a call a Relayer sends on c.
func (c *Conn) NewID() uint32 { return c.newID() }

// Write queues whole frames for sending, copying them; a Relayer uses it to
// forward frames. It blocks while the peer is not keeping up.
func (c *Conn) Write(frames []byte) error { return c.w.Write(frames) }

// TryWrite is Write for a Relayer's read loop: when the peer is not keeping
// up (more than Options.MaxQueued bytes wait for it) it fails at once with
// ErrFull instead of waiting, so one slow peer cannot stall the read loop's
// other calls.
func (c *Conn) TryWrite(frames []byte) error { return c.w.TryWrite(frames, c.opts.MaxQueued) }

// Backlogged reports whether the peer is not keeping up with what is sent to
// it (over 1 MiB waits): a Relayer then takes no new call from that peer, so a
// caller that does not read its answers cannot keep sending.
func (c *Conn) Backlogged() bool { return c.w.Backlogged() }

// ErrFull is TryWrite's error for a peer whose write buffer is full, and
// ErrQueuesFull its error for one of the peers queuing the most when the
// connections sharing a QueueBudget hold all of it.
var ErrFull, ErrQueuesFull = outbox.ErrFull, outbox.ErrQueuesFull

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
	c.w.Write(frame.AppendError(b, id, frame.ErrorMsg{Code: code, Tracing: t, Message: []byte(msg)}))
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
	if err := c.w.Write(frame.AppendPing(buf[:0], frame.TypePingReq, id)); err != nil {
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

// Fail closes the connection at once because of err, which Err and OnClose
// then report.
func (c *Conn) Fail(err error) { c.close(err) }

func (c *Conn) close(err error) {
	c.closeOnce.Do(func() {
		c.closeErr = err
		if err != nil && !errors.Is(err, net.ErrClosed) {
			c.log.Debug("connection closed", "err", err)
		}
		if err != nil {
			c.w.Abort() // a write stuck on the peer ends now
		}
		c.w.Stop()
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
			call.end()
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
		return deadlineError(&frame.Error{Code: frame.ErrCodeTimeout, Message: "deadline exceeded"})
	}
	return &frame.Error{Code: frame.ErrCodeCancelled, Message: "call cancelled"}
}
