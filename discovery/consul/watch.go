package consul

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/meshrpc/mesh/discovery"
	"github.com/meshrpc/mesh/internal/follow"
)

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
	// holdUntil: after Consul lost its state (its index went backwards), an
	// answer with no instance is not believed until then: the meshds that
	// serve the service register again within a TTL.
	holdUntil time.Time
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

// setRemote stores Consul's answer for w. Called with mu held.
func (c *Registry) setRemote(w *watch, list []discovery.Instance, index uint64) {
	if len(list) == 0 && len(w.remote) > 0 {
		if index < w.index { // Consul restarted empty, or is a new cluster
			w.holdUntil = time.Now().Add(c.cfg.TTL)
			c.log.Warn("consul lost its state; keeping the instances it listed until theirs re-register", "service", w.service, "for", c.cfg.TTL)
		}
		if time.Now().Before(w.holdUntil) {
			w.index = index
			w.stale.Store(true)
			return
		}
	}
	w.holdUntil = time.Time{}
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

func closeOnce(ch chan struct{}) {
	select {
	case <-ch:
	default:
		close(ch)
	}
}
