package meshd

import (
	"cmp"
	"net"
	"sync"
	"sync/atomic"
	"time"

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
