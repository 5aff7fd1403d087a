package relay

import (
	"fmt"
	"slices"

	"github.com/meshrpc/mesh/discovery"
	"github.com/meshrpc/mesh/internal/conn"
)

// The instances on this host, reached over their apps' own connections.

// localInstance is an instance on this host and its app's connection.
type localInstance struct {
	inst []discovery.Instance // just it: what a delivered call's Instances are
	conn *conn.Conn
}

// AddLocal makes a local instance deliverable over c, the app's connection.
func (r *Relay) AddLocal(inst discovery.Instance, c *conn.Conn) {
	r.localMu.Lock()
	defer r.localMu.Unlock()
	if _, ok := r.locals[inst.ID]; !ok {
		r.byService[inst.Service] = append(slices.Clone(r.byService[inst.Service]), inst.ID)
	}
	r.locals[inst.ID] = &localInstance{inst: []discovery.Instance{inst}, conn: c}
}

// RemoveLocal forgets a local instance.
func (r *Relay) RemoveLocal(inst discovery.Instance) {
	r.localMu.Lock()
	defer r.localMu.Unlock()
	delete(r.locals, inst.ID)
	ids := slices.DeleteFunc(slices.Clone(r.byService[inst.Service]), func(id string) bool { return id == inst.ID })
	if len(ids) == 0 {
		delete(r.byService, inst.Service)
	} else {
		r.byService[inst.Service] = ids
	}
}

func (r *Relay) local(id string) *localInstance {
	r.localMu.RLock()
	l := r.locals[id]
	r.localMu.RUnlock()
	return l
}

// reach is the relay's way to the picked instance (routing.Connect's Dial):
// an instance on this host over its app's own connection, any other over
// the connection to its meshd, which may be still to dial (ready: the call
// waits off the read loop) or down (the error says until when).
func (r *Relay) reach(inst discovery.Instance) (*conn.Conn, <-chan struct{}, error) {
	var c *conn.Conn
	if inst.Addr != r.cfg.Self {
		var ready <-chan struct{}
		var err error
		if c, ready, err = r.peers.TryGet(inst.Addr); c == nil {
			return nil, ready, err
		}
	} else if l := r.local(inst.ID); l != nil {
		c = l.conn
	} else {
		return nil, nil, fmt.Errorf("instance %s is not connected to this meshd", inst.ID)
	}
	if err := r.halfSentFull(c); err != nil {
		return nil, nil, fmt.Errorf("instance %s: %w", inst.ID, err)
	}
	return c, nil, nil
}
