package consul

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/meshrpc/mesh/discovery"
)

func checkID(id string) string { return "mesh:" + id }

// checkOutput is what every renewal says: the same output and status each
// time, so that the agent has nothing to sync to the servers (a changed
// output would be a catalog write every check_update_interval).
const checkOutput = "app connected"

// Register adds the instance to the local Consul agent with a TTL check and
// MeshTag. This meshd's lookups list it at once. If the agent is
// unreachable the instance is kept and registered when it answers; if the
// agent refuses it (an ACL, a bad field) Register fails and keeps nothing.
func (c *Registry) Register(ctx context.Context, inst discovery.Instance) error {
	if err := inst.Validate(); err != nil {
		return err
	}
	c.remember(inst)
	err := c.register(ctx, inst)
	var refused api.StatusError
	if errors.As(err, &refused) {
		c.forget(inst)
		return fmt.Errorf("consul refused %s: %w", inst.ID, err)
	}
	if err != nil {
		c.log.Warn("consul unreachable; the instance is served here and registered when consul answers", "instance", inst.ID, "err", err)
	}
	return nil
}

// IsPermissionDenied reports whether err is Consul refusing a token (403):
// an ACL that does not allow what was asked.
func IsPermissionDenied(err error) bool {
	var se api.StatusError
	return errors.As(err, &se) && se.Code == 403
}

func (c *Registry) register(ctx context.Context, inst discovery.Instance) error {
	host, portStr, err := net.SplitHostPort(inst.Addr)
	if err != nil {
		return fmt.Errorf("instance %s address %q: %w", inst.ID, inst.Addr, err)
	}
	port, _ := strconv.Atoi(portStr)
	tags := inst.Tags
	if !slices.Contains(tags, MeshTag) {
		tags = append(slices.Clip(tags), MeshTag)
	}
	reg := &api.AgentServiceRegistration{
		ID:      inst.ID,
		Name:    inst.Service,
		Address: host,
		Port:    port,
		Tags:    tags,
		Meta:    inst.Meta,
		Check: &api.AgentServiceCheck{
			CheckID:                        checkID(inst.ID),
			Name:                           "mesh app connection",
			TTL:                            c.cfg.TTL.String(),
			Status:                         api.HealthPassing,
			Notes:                          "meshd renews it while the app's connection is open",
			DeregisterCriticalServiceAfter: c.cfg.DeregisterAfter.String(),
		},
	}
	err = c.client.Agent().ServiceRegisterOpts(reg, api.ServiceRegisterOpts{Token: inst.Token}.WithContext(ctx))
	c.note(err)
	return err
}

// Deregister removes the instance from Consul at once.
func (c *Registry) Deregister(ctx context.Context, inst discovery.Instance) error {
	c.forget(inst)
	err := c.client.Agent().ServiceDeregisterOpts(inst.ID, (&api.QueryOptions{Token: inst.Token}).WithContext(ctx))
	c.note(err)
	if err != nil {
		return fmt.Errorf("consul deregister %s: %w", inst.ID, err)
	}
	return nil
}

// remember and forget keep this meshd's own instances, and its lookups'
// answers with them.
func (c *Registry) remember(inst discovery.Instance) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.mine[inst.ID] = inst
	if w := c.watches[inst.Service]; w != nil {
		c.merge(w)
		if w.mode == absent && !w.probing.Load() {
			c.follow(w) // a service this meshd serves is real
		}
	}
}

func (c *Registry) forget(inst discovery.Instance) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.mine, inst.ID)
	if w := c.watches[inst.Service]; w != nil {
		c.merge(w)
	}
}

// renew keeps this meshd's checks passing, and re-registers instances Consul
// lost (an agent restarted with no state).
func (c *Registry) renew() {
	defer c.done.Done()
	t := time.NewTicker(c.cfg.TTL / 3)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
		}
		if c.connected.Load() {
			c.renewAll()
		}
	}
}

// renewWorkers renew checks side by side: one after another, a thousand
// instances on a slow agent could take longer than their TTL, and a check
// that lapses is two writes on the servers (critical, then passing).
const renewWorkers = 8

func (c *Registry) renewAll() {
	c.mu.RLock()
	work := make(chan discovery.Instance, len(c.mine))
	for _, inst := range c.mine {
		work <- inst
	}
	c.mu.RUnlock()
	close(work)
	var wg sync.WaitGroup
	for range min(renewWorkers, len(work)) {
		wg.Go(func() {
			for inst := range work {
				c.renewOne(inst)
			}
		})
	}
	wg.Wait()
}

func (c *Registry) renewOne(inst discovery.Instance) {
	err := c.client.Agent().UpdateTTLOpts(checkID(inst.ID), checkOutput, api.HealthPassing, &api.QueryOptions{Token: inst.Token})
	if err != nil { // the agent may have lost it (restarted): register again
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = c.register(ctx, inst)
		cancel()
		if err == nil {
			c.log.Info("registered instance with consul", "instance", inst.ID)
		}
	}
	c.note(err)
}
