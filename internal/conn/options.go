package conn

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/outbox"
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
	// Async, if set instead of Handler, serves calls with no goroutine of
	// their own: it is called on the goroutine that dispatches the call (the
	// read loop, or a Join's writer), must not block, and answers once,
	// at once or later and from any goroutine, through answer. Its req.Body
	// may be set (arg3 still arriving): read it on a goroutine of its own.
	// Its ctx has the call's deadline but no timer: it ends when the peer
	// cancels the call or the connection closes, so Async is for a peer
	// that ends every call at its ttl (meshd's relay does).
	Async func(ctx context.Context, req *Request, answer func(*Response, error))
	// Logger receives connection-level events; default: slog.Default().
	Logger *slog.Logger
	// HandshakeTimeout bounds the init exchange; default 5s.
	HandshakeTimeout time.Duration
	// IdleTimeout, if set, pings a peer that sent nothing for that long and
	// closes the connection when no answer comes within half of it.
	IdleTimeout time.Duration
	// WriteTimeout bounds one socket write, so a peer that stopped reading
	// cannot hold the connection forever; default 30s.
	WriteTimeout time.Duration
	// MaxQueued bounds the bytes TryWrite queues for a peer that is not
	// keeping up (Write waits past 1 MiB instead); default 16 MiB.
	MaxQueued int
	// QueueBudget, if set, bounds the bytes queued for slow peers by all the
	// connections sharing it (see QueueBudget).
	QueueBudget *outbox.Budget
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
	// Tag is the owner's own value for the connection, returned by
	// Conn.Tag (meshd keeps there what it knows of who is on the far end).
	Tag any
}

// Relayer forwards calls frame by frame instead of serving them: meshd's
// routing fast path. Its methods run on the connection's read loop, so they
// must not block for long; the frame they get is valid only until they return
// (they may rewrite it in place).
type Relayer interface {
	// OfferCall gets the first frame of each call the peer sends on from, with
	// its decoded fields and args. Returning false lets the connection serve
	// the call.
	OfferCall(from *Conn, f *frame.Frame, req *frame.CallReq, frag *frame.Fragment) bool
	// Frame gets every call frame on from that the connection does not own:
	// continue frames and cancels of calls the relayer took, and answers to
	// calls it sent on from with ids from NewID. frag is the frame's decoded
	// args (nil for cancels and errors), so a relayer can check them.
	Frame(from *Conn, f *frame.Frame, frag *frame.Fragment)
	// Closed says that c closed, so calls relayed through it must end.
	Closed(c *Conn, err error)
}

// DefaultMaxQueued is Options.MaxQueued's default.
const DefaultMaxQueued = 16 << 20

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
	if o.MaxQueued == 0 {
		o.MaxQueued = DefaultMaxQueued
	}
	if o.MaxMessageSize == 0 {
		o.MaxMessageSize = 64 << 20
	}
	if o.DefaultTimeout == 0 {
		o.DefaultTimeout = time.Minute
	}
}

func baseName(p string) string {
	for i := len(p) - 1; i >= 0; i-- {
		if p[i] == '/' {
			return p[i+1:]
		}
	}
	return p
}
