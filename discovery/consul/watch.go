package consul

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/meshrpc/mesh/discovery"
	"github.com/meshrpc/mesh/internal/follow"
)

// MeshTag marks the Consul registrations of mesh instances. meshd routes only
// to instances that carry it, so a plain HTTP service registered in the same
// Consul is never sent TChannel frames.
const MeshTag = "meshrpc"

// A watch caches one looked-up service's passing mesh instances. meshd
// follows only the services its callers use: a service Consul has instances
// of gets its own blocking query on /v1/health/service/NAME, so a health
// change costs Consul one small answer per meshd that uses the service, not
// the whole catalog per meshd. Past Config.MaxWatches (each query holds an
// HTTP connection, and Consul allows 200 per client address), services share
// one query. A name Consul has no instance of is not followed: it is looked
// at again at most every absentRecheck while callers ask for it (unless this
// meshd has instances of it: then it is followed). A watch no one looked up
// for Config.IdleAfter stops.
type watch struct {
	service string
	ready   chan struct{} // closed after the first answer, good or bad
	current atomic.Pointer[[]discovery.Instance]
	stale   atomic.Bool
	used    atomic.Bool  // looked up since the last sweep
	recheck atomic.Int64 // unix nanos after which an absent service is looked at again; 0 while followed
	probing atomic.Bool

	// Under Registry.mu:
	remote []discovery.Instance // Consul's answer
	mode   mode
	idle   int                // sweeps without a lookup
	stop   context.CancelFunc // ends an own watch's query
	index  uint64             // of the answer remote came from
}

type mode int

const (
	absent mode = iota // Consul had no instance at the last look
	own                // followed by its own blocking query
	shared             // followed by the query the services past MaxWatches share
)

// absentRecheck is how often a name with no instance is looked at again
// while callers ask for it: a service deployed after its callers is found
// that much later.
const absentRecheck = time.Second

// Instances returns the passing instances of service: those Consul knows,
// and this meshd's own from the moment they are registered, before Consul
// echoes them. The first lookup of a service waits (up to 2s) for Consul's
// answer; later ones read the cache, kept current in the background and
// kept, stale, while Consul is unreachable.
func (c *Registry) Instances(ctx context.Context, service string) ([]discovery.Instance, error) {
	c.mu.RLock()
	w := c.watches[service]
	c.mu.RUnlock()
	if w == nil {
		var err error
		if w, err = c.newWatch(service); err != nil {
			return nil, err
		}
	}
	if !w.used.Load() {
		w.used.Store(true)
	}
	if at := w.recheck.Load(); at != 0 && time.Now().UnixNano() > at {
		c.probe(w)
	}
	if cur := w.current.Load(); cur == nil {
		select {
		case <-w.ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(2 * time.Second):
			return nil, fmt.Errorf("service %q: consul has not answered yet", service)
		}
	}
	if w.stale.Load() {
		c.staleHit.Add(1)
	}
	cur := w.current.Load()
	if cur == nil || len(*cur) == 0 {
		return nil, discovery.NoInstances(service)
	}
	return *cur, nil
}

// newWatch starts caching service, unless the registry holds MaxNames
// already (after dropping the absent names due for a look).
func (c *Registry) newWatch(service string) (*watch, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if w := c.watches[service]; w != nil {
		return w, nil
	}
	if len(c.watches) >= c.cfg.MaxNames {
		now := time.Now().UnixNano()
		for s, w := range c.watches {
			if w.mode == absent && w.recheck.Load() < now && !w.probing.Load() {
				delete(c.watches, s)
			}
		}
		if len(c.watches) >= c.cfg.MaxNames {
			return nil, fmt.Errorf("service %q: meshd follows %d service names, its limit", service, len(c.watches))
		}
	}
	w := &watch{service: service, ready: make(chan struct{})}
	if mine := c.mineOf(service); len(mine) > 0 {
		w.current.Store(&mine) // answer at once with this meshd's own
	}
	c.watches[service] = w
	w.probing.Store(true)
	go c.look(w)
	return w, nil
}

// probe looks at an absent service again, once at a time.
func (c *Registry) probe(w *watch) {
	if w.probing.CompareAndSwap(false, true) {
		go c.look(w)
	}
}

// look reads service once; if Consul has instances of it, it is followed
// from then on.
func (c *Registry) look(w *watch) {
	defer w.probing.Store(false)
	defer closeOnce(w.ready)
	ctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
	defer cancel()
	list, meta, err := c.read(w.service, (&api.QueryOptions{}).WithContext(ctx))
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.watches[w.service] != w {
		return // dropped meanwhile
	}
	if err != nil {
		if !w.stale.Swap(true) {
			c.log.Warn("lookup of service failed; keeping its last known instances", "service", w.service, "err", err)
		}
		if w.mode == absent && len(c.mineOf(w.service)) > 0 {
			c.follow(w) // a service this meshd serves is real: its query retries
		} else if w.mode == absent {
			w.recheck.Store(time.Now().Add(absentRecheck).UnixNano())
		}
		return
	}
	c.setRemote(w, list, meta.LastIndex)
	if w.mode != absent {
		return
	}
	if len(list) == 0 && len(c.mineOf(w.service)) == 0 {
		w.recheck.Store(time.Now().Add(absentRecheck).UnixNano())
		return
	}
	c.follow(w)
}

// follow starts following w: by its own query while there is room, else by
// the shared one. Called with mu held.
func (c *Registry) follow(w *watch) {
	w.recheck.Store(0)
	if c.owned < c.cfg.MaxWatches {
		c.owned++
		w.mode = own
		ctx, cancel := context.WithCancel(c.ctx)
		w.stop = cancel
		cfg := follow.Config{Wait: c.cfg.WaitTime, From: w.index, Failed: func(err error) {
			if !w.stale.Swap(true) {
				c.log.Warn("watch of service failed; keeping its last known instances", "service", w.service, "err", err)
			}
		}}
		c.done.Go(func() {
			follow.Run(ctx, cfg, func(q *api.QueryOptions) ([]discovery.Instance, *api.QueryMeta, error) {
				return c.read(w.service, q)
			}, func(list []discovery.Instance, meta *api.QueryMeta) {
				c.mu.Lock()
				defer c.mu.Unlock()
				if c.watches[w.service] == w {
					c.setRemote(w, list, meta.LastIndex)
				}
			})
		})
		return
	}
	w.mode = shared
	c.sharedChanged()
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

// setRemote stores Consul's answer for w. Called with mu held.
func (c *Registry) setRemote(w *watch, list []discovery.Instance, index uint64) {
	same := w.remote != nil && slices.EqualFunc(list, w.remote, func(a, b discovery.Instance) bool { return a.ID == b.ID })
	w.remote, w.index = list, index
	w.stale.Store(false)
	c.merge(w)
	if !same {
		// At debug level, with its time: make bench-discovery measures propagation from it.
		c.log.Debug("instances changed", "service", w.service, "instances", len(list), "index", index)
	}
}

// merge makes w's answer Consul's instances plus this meshd's own that
// Consul does not list (yet). Called with mu held.
func (c *Registry) merge(w *watch) {
	list := w.remote
	for _, inst := range c.mineOf(w.service) {
		if !slices.ContainsFunc(list, func(i discovery.Instance) bool { return i.ID == inst.ID }) {
			list = append(slices.Clip(list), inst)
		}
	}
	w.current.Store(&list)
}

// mineOf lists this meshd's own instances of service. Called with mu held.
func (c *Registry) mineOf(service string) []discovery.Instance {
	var out []discovery.Instance
	for _, inst := range c.mine {
		if inst.Service == service {
			out = append(out, inst)
		}
	}
	slices.SortFunc(out, func(a, b discovery.Instance) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// sweepEvery is how often sweep looks for watches no one looked up: a name
// without instances is dropped after one such round, a followed service
// after IdleAfter.
const sweepEvery = 30 * time.Second

// sweep stops the watches no one looked up, and gives the own queries it
// frees to shared services.
func (c *Registry) sweep() {
	defer c.done.Done()
	t := time.NewTicker(min(sweepEvery, c.cfg.IdleAfter))
	defer t.Stop()
	rounds := max(int(c.cfg.IdleAfter/sweepEvery), 1)
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
		}
		c.mu.Lock()
		for s, w := range c.watches {
			if w.used.Swap(false) {
				w.idle = 0
				continue
			}
			if w.idle++; w.mode != absent && w.idle < rounds {
				continue
			}
			if w.mode == own {
				w.stop()
				c.owned--
			}
			delete(c.watches, s)
		}
		for _, w := range c.watches {
			if c.owned >= c.cfg.MaxWatches {
				break
			}
			if w.mode == shared {
				c.follow(w)
			}
		}
		c.mu.Unlock()
	}
}

// sharedChanged wakes the shared query if it is idle. Called with mu held.
func (c *Registry) sharedChanged() {
	select {
	case c.sharedWake <- struct{}{}:
	default:
	}
}

// followShared runs the one query the services past MaxWatches share while
// there are any: a blocking query on the state of every mesh service's
// health checks, after which the shared services whose checks changed are
// read again. A host calling that many services pays what following the whole
// catalog costs; the others never do.
func (c *Registry) followShared() {
	defer c.done.Done()
	var prev map[string]string // check → its service, instance and status
	cfg := follow.Config{Wait: c.cfg.WaitTime, Failed: func(error) {
		prev = nil
		c.mu.RLock()
		defer c.mu.RUnlock()
		for _, w := range c.watches {
			if w.mode == shared {
				w.stale.Store(true)
			}
		}
	}}
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-c.sharedWake:
		}
		ctx, cancel := context.WithCancel(c.ctx)
		follow.Run(ctx, cfg, func(q *api.QueryOptions) (struct{}, *api.QueryMeta, error) {
			if c.sharedCount() == 0 {
				cancel() // idle until a service is shared again
				return struct{}{}, nil, ctx.Err()
			}
			q.Filter = strconv.Quote(MeshTag) + " in ServiceTags"
			checks, meta, err := c.client.Health().State(api.HealthAny, q)
			c.note(err)
			if err != nil {
				return struct{}{}, nil, err
			}
			cur := make(map[string]string, len(checks))
			changed := map[string]bool{}
			for _, ch := range checks {
				key := ch.Node + "/" + ch.CheckID
				v := ch.ServiceName + "\x00" + ch.ServiceID + "\x00" + ch.Status
				cur[key] = v
				if prev != nil && prev[key] != v {
					changed[ch.ServiceName] = true
				}
			}
			for key, v := range prev {
				if _, ok := cur[key]; !ok {
					changed[v[:strings.IndexByte(v, 0)]] = true
				}
			}
			all := prev == nil // the first answer, or the first after a failure
			prev = cur
			return struct{}{}, meta, c.readShared(ctx, changed, all)
		}, func(struct{}, *api.QueryMeta) {})
		cancel()
	}
}

// readShared reads again the shared services in changed (all if all).
func (c *Registry) readShared(ctx context.Context, changed map[string]bool, all bool) error {
	c.mu.RLock()
	var todo []*watch
	for s, w := range c.watches {
		if w.mode == shared && (all || changed[s]) {
			todo = append(todo, w)
		}
	}
	c.mu.RUnlock()
	for _, w := range todo {
		list, meta, err := c.read(w.service, (&api.QueryOptions{}).WithContext(ctx))
		if err != nil {
			return err
		}
		c.mu.Lock()
		if c.watches[w.service] == w && w.mode == shared {
			c.setRemote(w, list, meta.LastIndex)
		}
		c.mu.Unlock()
	}
	return nil
}

func (c *Registry) sharedCount() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	n := 0
	for _, w := range c.watches {
		if w.mode == shared {
			n++
		}
	}
	return n
}

func closeOnce(ch chan struct{}) {
	select {
	case <-ch:
	default:
		close(ch)
	}
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
