package consul

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/meshrpc/mesh/discovery"
)

// MeshTag marks the Consul registrations of mesh instances. meshd routes only
// to instances that carry it, so a plain HTTP service registered in the same
// Consul is never sent TChannel frames.
const MeshTag = "meshrpc"

// Instances returns the passing instances of service: those Consul knows,
// and this meshd's own from the moment they are registered, before Consul
// echoes them. The first lookup of a service waits (within ctx, and 2s at
// most) for Consul's answer; later ones read the cache, kept current in the
// background and kept, stale, while Consul is unreachable.
func (c *Registry) Instances(ctx context.Context, service string) ([]discovery.Instance, error) {
	insts, ready, err := c.Lookup(service)
	if ready == nil {
		return insts, err
	}
	select {
	case <-ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(2 * time.Second):
		return nil, fmt.Errorf("service %q: consul has not answered yet", service)
	}
	insts, _, err = c.Lookup(service)
	return insts, err
}

// Lookup is Instances without waiting: before Consul's first answer about
// service (asked for now, if it was not yet), it returns ready, closed when
// that answer came, good or bad.
func (c *Registry) Lookup(service string) ([]discovery.Instance, <-chan struct{}, error) {
	c.mu.RLock()
	w := c.watches[service]
	c.mu.RUnlock()
	if w == nil {
		var err error
		if w, err = c.newWatch(service); err != nil {
			return nil, nil, err
		}
	}
	if !w.used.Load() {
		w.used.Store(true)
	}
	if at := w.recheck.Load(); at != 0 && time.Now().UnixNano() > at {
		c.probe(w)
	}
	cur := w.current.Load()
	if cur == nil {
		select {
		case <-w.ready: // answered, and nothing came of it
			cur = w.current.Load()
		default:
			return nil, w.ready, nil
		}
	}
	if w.stale.Load() {
		c.staleHit.Add(1)
	}
	if cur == nil || len(*cur) == 0 {
		return nil, nil, discovery.NoInstances(service)
	}
	return *cur, nil, nil
}

// read fetches the passing mesh instances of service (q's context bounds
// it), and notes whether Consul answered.
func (c *Registry) read(service string, q *api.QueryOptions) ([]discovery.Instance, *api.QueryMeta, error) {
	q.UseCache = c.cfg.UseCache
	entries, meta, err := c.client.Health().Service(service, MeshTag, true, q)
	c.note(err)
	if err != nil {
		return nil, nil, err
	}
	list := make([]discovery.Instance, 0, len(entries))
	for _, e := range entries {
		list = append(list, discovery.Instance{
			Service: e.Service.Service,
			ID:      e.Service.ID,
			Addr:    net.JoinHostPort(e.Service.Address, strconv.Itoa(e.Service.Port)),
			Tags:    e.Service.Tags,
			Meta:    e.Service.Meta,
		})
	}
	slices.SortFunc(list, func(a, b discovery.Instance) int { return strings.Compare(a.ID, b.ID) })
	return list, meta, nil
}

// Followed returns the instances of the services this meshd follows now,
// without following more.
func (c *Registry) Followed() map[string][]discovery.Instance {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make(map[string][]discovery.Instance)
	for s, w := range c.watches {
		if cur := w.current.Load(); w.mode != absent && cur != nil && len(*cur) > 0 {
			out[s] = *cur
		}
	}
	return out
}

// Services lists the mesh services with passing instances, with one read
// of the passing checks of mesh-tagged services.
func (c *Registry) Services(ctx context.Context) ([]string, error) {
	q := (&api.QueryOptions{Filter: strconv.Quote(MeshTag) + " in ServiceTags"}).WithContext(ctx)
	checks, _, err := c.client.Health().State(api.HealthPassing, q)
	c.note(err)
	if err != nil {
		return nil, fmt.Errorf("consul health: %w", err)
	}
	var out []string
	for _, ch := range checks {
		if ch.ServiceName != "" {
			out = append(out, ch.ServiceName)
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}
