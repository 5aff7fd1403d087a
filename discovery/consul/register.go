package consul

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/meshrpc/mesh/discovery"
)

func checkID(id string) string { return "mesh:" + id }

// Register adds the instance to the local Consul agent with a TTL check.
func (c *Registry) Register(ctx context.Context, inst discovery.Instance) error {
	if err := inst.Validate(); err != nil {
		return err
	}
	if err := c.register(ctx, inst); err != nil {
		return err
	}
	c.mu.Lock()
	c.mine[inst.ID] = inst
	c.mu.Unlock()
	return nil
}

func (c *Registry) register(ctx context.Context, inst discovery.Instance) error {
	host, portStr, err := net.SplitHostPort(inst.Addr)
	if err != nil {
		return fmt.Errorf("instance %s address %q: %w", inst.ID, inst.Addr, err)
	}
	port, _ := strconv.Atoi(portStr)
	reg := &api.AgentServiceRegistration{
		ID:      inst.ID,
		Name:    inst.Service,
		Address: host,
		Port:    port,
		Tags:    inst.Tags,
		Meta:    inst.Meta,
		Check: &api.AgentServiceCheck{
			CheckID:                        checkID(inst.ID),
			Name:                           "mesh app connection",
			TTL:                            c.cfg.TTL.String(),
			Status:                         api.HealthPassing,
			DeregisterCriticalServiceAfter: c.cfg.DeregisterAfter.String(),
		},
	}
	err = c.client.Agent().ServiceRegisterOpts(reg, api.ServiceRegisterOpts{}.WithContext(ctx))
	c.note(err)
	if err != nil {
		return fmt.Errorf("consul register %s: %w", inst.ID, err)
	}
	return nil
}

// Deregister removes the instance from Consul at once.
func (c *Registry) Deregister(ctx context.Context, inst discovery.Instance) error {
	c.mu.Lock()
	delete(c.mine, inst.ID)
	c.mu.Unlock()
	err := c.client.Agent().ServiceDeregisterOpts(inst.ID, (&api.QueryOptions{}).WithContext(ctx))
	c.note(err)
	if err != nil {
		return fmt.Errorf("consul deregister %s: %w", inst.ID, err)
	}
	return nil
}

// renew keeps this meshd's checks passing, and re-registers instances Consul
// lost (an agent restarted with no state).
func (c *Registry) renew() {
	defer c.done.Done()
	t := time.NewTicker(c.cfg.TTL / 3)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
		}
		c.mu.Lock()
		mine := make([]discovery.Instance, 0, len(c.mine))
		for _, inst := range c.mine {
			mine = append(mine, inst)
		}
		c.mu.Unlock()
		for _, inst := range mine {
			err := c.client.Agent().UpdateTTL(checkID(inst.ID), "app connected", api.HealthPassing)
			if err != nil { // the agent may have lost it (restarted): register again
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				err = c.register(ctx, inst)
				cancel()
				if err == nil {
					c.log.Info("re-registered instance Consul had lost", "instance", inst.ID)
				}
			}
			c.note(err)
		}
	}
}
