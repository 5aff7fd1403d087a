package consul

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/meshrpc/mesh/discovery"
)

// watch caches one service's healthy instances. One blocking query per
// meshd (on the state of every health check) finds which services changed,
// and only those are fetched again: a meshd watching a thousand services
// holds one long poll against its agent, not a thousand (Consul allows 200
// connections per client by default).
type watch struct {
	ready   chan struct{} // closed after the first fetch, good or bad
	current atomic.Pointer[[]discovery.Instance]
	stale   atomic.Bool
}

// Instances returns the passing instances of service. The first lookup of a
// service waits (up to 2s) for Consul's answer; after that lookups read a
// cache kept current in the background, and kept, stale, while Consul is
// unreachable.
func (c *Registry) Instances(ctx context.Context, service string) ([]discovery.Instance, error) {
	c.mu.Lock()
	w := c.watches[service]
	if w == nil {
		w = &watch{ready: make(chan struct{})}
		c.watches[service] = w
		go func() {
			c.fetch(service, w)
			close(w.ready)
		}()
	}
	c.mu.Unlock()
	select {
	case <-w.ready:
	default:
		select {
		case <-w.ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(2 * time.Second):
			return nil, fmt.Errorf("service %q: consul has not answered yet", service)
		}
	}
	cur := w.current.Load()
	if w.stale.Load() {
		c.staleHit.Add(1)
	}
	if cur == nil || len(*cur) == 0 {
		return nil, discovery.NoInstances(service)
	}
	return *cur, nil
}

// fetch reads the passing instances of one service into its watch.
func (c *Registry) fetch(service string, w *watch) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	entries, _, err := c.client.Health().Service(service, "", true, (&api.QueryOptions{}).WithContext(ctx))
	c.note(err)
	if err != nil {
		if !w.stale.Swap(true) {
			c.log.Warn("lookup of service failed; keeping its last known instances", "service", service, "err", err)
		}
		return
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
	w.current.Store(&list)
	w.stale.Store(false)
}

// poll runs a blocking query until Close. query is given the options to
// wait with and returns the index of its answer; a failed query is retried
// with backoff after failed runs. An index that goes backwards (a restarted
// agent) starts over from 0.
func (c *Registry) poll(query func(*api.QueryOptions) (uint64, error), failed func(error)) {
	defer c.done.Done()
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-c.stop; cancel() }()
	var index uint64
	backoff := 100 * time.Millisecond
	for {
		last, err := query((&api.QueryOptions{WaitIndex: index, WaitTime: c.cfg.WaitTime}).WithContext(ctx))
		select {
		case <-c.stop:
			return
		default:
		}
		c.note(err)
		if err != nil {
			failed(err)
			time.Sleep(backoff)
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		if last < index {
			last = 0
		}
		index = last
	}
}

// detect follows every health check in the datacenter with one blocking
// query and fetches again the watched services whose checks changed. After
// an outage it fetches every watched service.
func (c *Registry) detect() {
	var (
		prev map[string]string // check id → service, instance and status
		lost bool              // the last query failed: refresh everything when back
	)
	c.poll(func(q *api.QueryOptions) (uint64, error) {
		checks, meta, err := c.client.Health().State(api.HealthAny, q)
		if err != nil {
			return 0, err
		}
		cur := make(map[string]string, len(checks))
		changed := map[string]bool{}
		for _, ch := range checks {
			if ch.ServiceName == "" {
				continue // node checks
			}
			key := ch.Node + "/" + ch.CheckID
			v := ch.ServiceName + "\x00" + ch.ServiceID + "\x00" + ch.Status
			cur[key] = v
			if prev[key] != v {
				changed[ch.ServiceName] = true
			}
		}
		for key, v := range prev {
			if _, ok := cur[key]; !ok {
				changed[v[:strings.IndexByte(v, 0)]] = true
			}
		}
		prev = cur
		c.refresh(changed, lost)
		lost = false
		return meta.LastIndex, nil
	}, func(error) {
		if !lost {
			c.markStale()
		}
		lost = true
	})
}

// refresh fetches the watched services in changed (all of them if all).
func (c *Registry) refresh(changed map[string]bool, all bool) {
	c.mu.Lock()
	var todo []string
	for s := range c.watches {
		if all || changed[s] {
			todo = append(todo, s)
		}
	}
	c.mu.Unlock()
	work := make(chan string)
	var wg sync.WaitGroup
	for range min(8, len(todo)) {
		wg.Go(func() {
			for s := range work {
				c.mu.Lock()
				w := c.watches[s]
				c.mu.Unlock()
				c.fetch(s, w)
			}
		})
	}
	for _, s := range todo {
		work <- s
	}
	close(work)
	wg.Wait()
}

func (c *Registry) markStale() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, w := range c.watches {
		w.stale.Store(true)
	}
}

// Services lists services with passing instances.
func (c *Registry) Services(ctx context.Context) ([]string, error) {
	all, _, err := c.client.Catalog().Services((&api.QueryOptions{}).WithContext(ctx))
	c.note(err)
	if err != nil {
		return nil, fmt.Errorf("consul catalog: %w", err)
	}
	var out []string
	for name := range all {
		if name == "consul" {
			continue
		}
		entries, _, err := c.client.Health().Service(name, "", true, (&api.QueryOptions{}).WithContext(ctx))
		if err == nil && len(entries) > 0 {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out, nil
}
