package relay

import (
	"sync/atomic"

	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/conn"
	"github.com/meshrpc/mesh/internal/intentions"
)

// HeaderCaller is the transport header in which the first meshd tells the
// last the identity its caller proved. Like HeaderInstance it is honoured
// only on a connection from another meshd; an app that sends either is
// refused, so neither can be forged from outside the mesh.
const HeaderCaller = "mesh-caller"

var anonymous = []byte(intentions.Anonymous)

// Source is what meshd knows of who is on the far end of a connection; meshd
// sets one as the conn.Options.Tag of every connection.
type Source struct {
	// Meshd: the far end is another meshd that proved it (its certificate,
	// on the host listener) or one this meshd dialed. Calls from it are on
	// their last hop, and its routing headers are honoured.
	Meshd  bool
	caller atomic.Pointer[identity]
}

// identity is a proven name in both forms the hot path needs, made once.
type identity struct {
	name  string
	bytes []byte
}

// SetCaller records the service the app on the connection proved it is (an
// advertise that passed its rule): its calls carry that identity.
func (s *Source) SetCaller(service string) {
	s.caller.CompareAndSwap(nil, &identity{service, []byte(service)}) // the first proven name stays
}

// Caller is the identity proven on the connection, or Anonymous.
func (s *Source) Caller() string {
	if id := s.caller.Load(); id != nil {
		return id.name
	}
	return intentions.Anonymous
}

func sourceOf(c *conn.Conn) *Source {
	s, _ := c.Tag().(*Source)
	return s
}

// fromMeshd reports whether c is a connection from another meshd.
func fromMeshd(c *conn.Conn) bool {
	s := sourceOf(c)
	return s != nil && s.Meshd
}

// callerOf is the identity of a call: the one proven on an app's
// connection (name is "" for Anonymous), or the one another meshd vouches
// for in HeaderCaller (its bytes alias the frame).
func callerOf(from *conn.Conn, h frame.Headers) (caller []byte, name string) {
	s := sourceOf(from)
	switch {
	case s == nil:
	case s.Meshd:
		if v, ok := h.Get(HeaderCaller); ok && len(v) > 0 {
			return v, ""
		}
	default:
		if id := s.caller.Load(); id != nil {
			return id.bytes, id.name
		}
	}
	return anonymous, ""
}

// reservedHeader names a routing header an app sent, which only meshds may set.
func reservedHeader(h frame.Headers) string {
	for _, k := range [...]string{HeaderInstance, HeaderCaller} {
		if _, ok := h.Get(k); ok {
			return k
		}
	}
	return ""
}
