package meshd

import (
	"cmp"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/conn"
	"github.com/meshrpc/mesh/internal/relay"
)

// Limits bound what connections, and what one connection, can make meshd
// hold, so that a buggy or hostile program hurts no one else on the host.
// The zero value of a field is its default (docs/LIMITS.md has the table).
type Limits struct {
	// Connections bounds the TChannel connections meshd holds, handshaking
	// ones included; ConnectionsPerAddr those from one remote IP address.
	// Past them a new connection is closed at once.
	Connections, ConnectionsPerAddr int
	// HandshakeTimeout is how long a new connection has to complete the
	// init exchange before it is closed.
	HandshakeTimeout time.Duration
	// IdleTimeout is how long a connection may be silent before meshd pings
	// it; one that does not answer within half of it is closed.
	IdleTimeout time.Duration
	// MaxQueued bounds the bytes queued for a peer that is not reading; past
	// it the relay gives up on it (an app's connection is closed).
	MaxQueued int
	// MaxQueuedTotal bounds the bytes queued for slow peers in all (past
	// each connection's first 64 KiB, see outbox.Budget).
	MaxQueuedTotal int
	// The relay's own: calls per connection, half-sent calls, bytes kept for
	// retries, the longest ttl.
	relay.Limits
}

// The defaults of Limits; the relay's are relay.Default*.
const (
	DefaultConnections        = 10000
	DefaultConnectionsPerAddr = 2000
	DefaultHandshakeTimeout   = 5 * time.Second
	DefaultIdleTimeout        = 5 * time.Minute
	DefaultMaxQueuedTotal     = 128 << 20
)

// reservedFiles are the file descriptors Connections leaves for the rest of
// meshd (admin and health, Consul, other meshds, logs), so that a flood of
// connections is refused cleanly while /health still answers.
const reservedFiles = 256

func (l Limits) withDefaults() Limits {
	l.Connections = cmp.Or(l.Connections, DefaultConnections)
	if n := openFiles() - reservedFiles; n > 0 && l.Connections > n {
		l.Connections = n // never more than the process may open, less the reserve
	}
	l.ConnectionsPerAddr = cmp.Or(l.ConnectionsPerAddr, DefaultConnectionsPerAddr)
	l.HandshakeTimeout = cmp.Or(l.HandshakeTimeout, DefaultHandshakeTimeout)
	l.IdleTimeout = cmp.Or(l.IdleTimeout, DefaultIdleTimeout)
	l.MaxQueued = cmp.Or(l.MaxQueued, conn.DefaultMaxQueued)
	l.MaxQueuedTotal = cmp.Or(l.MaxQueuedTotal, DefaultMaxQueuedTotal)
	return l
}

// admission counts the connections meshd holds, in total and by remote
// address, and refuses those past the limits.
type admission struct {
	mu      sync.Mutex
	total   int
	perAddr map[string]int
	refused atomic.Int64
}

// admit reports whether a new connection from addr may be served; if so,
// leave must follow when it closes.
func (a *admission) admit(l Limits, addr net.Addr) bool {
	host := hostOf(addr)
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.total >= l.Connections || a.perAddr[host] >= l.ConnectionsPerAddr {
		a.refused.Add(1)
		return false
	}
	if a.perAddr == nil {
		a.perAddr = make(map[string]int)
	}
	a.total++
	a.perAddr[host]++
	return true
}

func (a *admission) leave(addr net.Addr) {
	host := hostOf(addr)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.total--
	if a.perAddr[host]--; a.perAddr[host] <= 0 {
		delete(a.perAddr, host)
	}
}

func (a *admission) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.total
}

func hostOf(addr net.Addr) string {
	if t, ok := addr.(*net.TCPAddr); ok {
		return t.IP.String()
	}
	host, _, _ := net.SplitHostPort(addr.String())
	return host
}

// Why meshd's connections ended, counted in mesh_connections_closed_total.
const (
	closedHandshakeTimeout = iota // no init within HandshakeTimeout
	closedHandshakeRefused        // a malformed init: bad version, headers missing, too many
	closedHandshakeFailed         // the peer went away during the init exchange
	closedTLSRefused              // on the host listener: no meshd certificate of this mesh, or no TLS
	closedIdle                    // silent for IdleTimeout, and no answer to a ping
	closedSlowPeer                // not reading what meshd queued for it
	closedProtocolError           // a malformed frame
	closedByPeer                  // the peer closed it
	closedNetwork                 // a reset, a write timeout, a cut-off frame
	closedByMeshd                 // meshd closed it: drain or shutdown
	numClosed
)

var closedNames = [numClosed]string{"handshake_timeout", "handshake_refused", "handshake_failed", "tls_refused", "idle",
	"slow_peer", "protocol_error", "peer_closed", "network", "meshd"}

// closures counts connections by why they ended.
type closures [numClosed]atomic.Int64

// handshake counts a connection whose init exchange failed with err.
func (cs *closures) handshake(err error) {
	var refused *tlsError
	switch {
	case errors.As(err, &refused):
		cs[closedTLSRefused].Add(1)
	case errors.Is(err, conn.ErrHandshakeTimeout):
		cs[closedHandshakeTimeout].Add(1)
	case frame.CodeOf(err) == frame.ErrCodeProtocol:
		cs[closedHandshakeRefused].Add(1)
	default:
		cs[closedHandshakeFailed].Add(1)
	}
}

// closed counts an established connection that ended with err.
func (cs *closures) closed(err error) {
	why := closedNetwork
	switch {
	case err == nil:
		why = closedByMeshd
	case errors.Is(err, io.EOF):
		why = closedByPeer
	case errors.Is(err, conn.ErrIdle):
		why = closedIdle
	case errors.Is(err, conn.ErrFull), errors.Is(err, conn.ErrQueuesFull):
		why = closedSlowPeer
	case frame.IsProtocolError(err):
		why = closedProtocolError
	}
	cs[why].Add(1)
}
