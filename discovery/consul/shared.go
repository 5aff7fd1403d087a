package consul

import (
	"context"
	"strconv"
	"strings"

	"github.com/hashicorp/consul/api"
	"github.com/meshrpc/mesh/internal/follow"
)

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
