package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"
)

// ConsulConfig configures the Consul backend. Address, Token and Datacenter
// default to Consul's own environment conventions (CONSUL_HTTP_ADDR,
// CONSUL_HTTP_TOKEN, ...).
type ConsulConfig struct {
	Address    string
	Token      string
	Datacenter string
	// TTL of each instance's health check: meshd renews it every TTL/3 while
	// the app is connected, so a meshd that dies takes its instances out of
	// the healthy set within TTL. Default 10s.
	TTL time.Duration
	// DeregisterAfter removes an instance whose check stayed critical that
	// long (Consul's minimum is 1m). Default 1m.
	DeregisterAfter time.Duration
	// WaitTime bounds one blocking query. Default 30s.
	WaitTime time.Duration
	Logger   *slog.Logger
}

// Consul is the registry backed by a Consul agent.
type Consul struct {
	cfg    ConsulConfig
	client *api.Client
	log    *slog.Logger

	mu      sync.Mutex
	mine    map[string]Instance // registered by this meshd, by id
	watches map[string]*watch   // by service

	failing  atomic.Bool  // the last request to Consul failed
	staleHit atomic.Int64 // lookups answered from a cache Consul could not refresh
	stop     chan struct{}
	done     sync.WaitGroup
}

// watch keeps one service's healthy instances current with blocking queries.
type watch struct {
	ready   chan struct{} // closed after the first answer (or failure)
	current atomic.Pointer[[]Instance]
	stale   atomic.Bool
	index   uint64
}

// NewConsul connects to the Consul agent and checks that it answers.
func NewConsul(ctx context.Context, cfg ConsulConfig) (*Consul, error) {
	if cfg.TTL == 0 {
		cfg.TTL = 10 * time.Second
	}
	if cfg.DeregisterAfter == 0 {
		cfg.DeregisterAfter = time.Minute
	}
	if cfg.WaitTime == 0 {
		cfg.WaitTime = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	ac := api.DefaultConfig() // reads CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN, ...
	if cfg.Address != "" {
		ac.Address = cfg.Address
	}
	if cfg.Token != "" {
		ac.Token = cfg.Token
	}
	if cfg.Datacenter != "" {
		ac.Datacenter = cfg.Datacenter
	}
	client, err := api.NewClient(ac)
	if err != nil {
		return nil, fmt.Errorf("consul client: %w", err)
	}
	c := &Consul{
		cfg:     cfg,
		client:  client,
		log:     cfg.Logger.With("registry", "consul", "consul", ac.Address),
		mine:    make(map[string]Instance),
		watches: make(map[string]*watch),
		stop:    make(chan struct{}),
	}
	if _, err := client.Agent().Self(); err != nil {
		return nil, fmt.Errorf("consul agent at %s does not answer: %w", ac.Address, err)
	}
	c.done.Add(1)
	go c.renew()
	return c, nil
}

func checkID(id string) string { return "mesh:" + id }

// Register adds the instance to the local Consul agent with a TTL check.
func (c *Consul) Register(ctx context.Context, inst Instance) error {
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

func (c *Consul) register(ctx context.Context, inst Instance) error {
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
func (c *Consul) Deregister(ctx context.Context, inst Instance) error {
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
func (c *Consul) renew() {
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
		mine := make([]Instance, 0, len(c.mine))
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

// note records whether Consul answered.
func (c *Consul) note(err error) {
	if err == nil {
		if c.failing.Swap(false) {
			c.log.Info("consul answers again")
		}
		return
	}
	if !c.failing.Swap(true) {
		c.log.Warn("consul request failed; serving from the last known instances", "err", err)
	}
}

// Instances returns the passing instances of service. The first lookup of a
// service waits (up to 2s) for Consul's answer; after that lookups read a
// cache that a blocking query keeps current, and that is kept, stale, while
// Consul is unreachable.
func (c *Consul) Instances(ctx context.Context, service string) ([]Instance, error) {
	c.mu.Lock()
	w := c.watches[service]
	if w == nil {
		w = &watch{ready: make(chan struct{})}
		c.watches[service] = w
		c.done.Add(1)
		go c.follow(service, w)
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
		return nil, noInstances(service)
	}
	return *cur, nil
}

// follow runs blocking queries for one service until Close.
func (c *Consul) follow(service string, w *watch) {
	defer c.done.Done()
	backoff := 100 * time.Millisecond
	first := true
	for {
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			select {
			case <-c.stop:
			case <-ctx.Done():
			}
			cancel()
		}()
		q := (&api.QueryOptions{WaitIndex: w.index, WaitTime: c.cfg.WaitTime}).WithContext(ctx)
		entries, meta, err := c.client.Health().Service(service, "", true, q)
		cancel()
		select {
		case <-c.stop:
			return
		default:
		}
		c.note(err)
		if err != nil {
			if !w.stale.Swap(true) {
				c.log.Warn("watch of service failed; keeping its last known instances", "service", service, "err", err)
			}
			if first {
				first = false
				close(w.ready)
			}
			time.Sleep(backoff)
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		w.stale.Store(false)
		if meta.LastIndex < w.index {
			w.index = 0 // the index went backwards (agent restart): start over
		} else {
			w.index = meta.LastIndex
		}
		list := make([]Instance, 0, len(entries))
		for _, e := range entries {
			list = append(list, Instance{
				Service: e.Service.Service,
				ID:      e.Service.ID,
				Addr:    net.JoinHostPort(e.Service.Address, strconv.Itoa(e.Service.Port)),
				Tags:    e.Service.Tags,
				Meta:    e.Service.Meta,
			})
		}
		slices.SortFunc(list, func(a, b Instance) int { return strings.Compare(a.ID, b.ID) })
		w.current.Store(&list)
		if first {
			first = false
			close(w.ready)
		}
	}
}

// Services lists services with passing instances.
func (c *Consul) Services(ctx context.Context) ([]string, error) {
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

// Status reports whether Consul answers and whether lookups are stale.
func (c *Consul) Status() Status {
	stale := false
	c.mu.Lock()
	for _, w := range c.watches {
		stale = stale || w.stale.Load()
	}
	n := len(c.watches)
	c.mu.Unlock()
	return Status{
		Backend: "consul",
		Healthy: !c.failing.Load(),
		Stale:   stale,
		Detail:  fmt.Sprintf("%d services watched, %d stale lookups", n, c.staleHit.Load()),
	}
}

// StaleLookups counts lookups answered from a cache Consul could not refresh.
func (c *Consul) StaleLookups() int64 { return c.staleHit.Load() }

// Abandon stops renewing and watching without deregistering anything, as a
// killed meshd would: Consul then expires its instances after the TTL.
func (c *Consul) Abandon() {
	c.mu.Lock()
	c.mine = make(map[string]Instance)
	c.mu.Unlock()
	c.Close()
}

// Close stops the watches and deregisters what this meshd registered.
func (c *Consul) Close() error {
	select {
	case <-c.stop:
		return nil
	default:
	}
	close(c.stop)
	c.mu.Lock()
	mine := make([]Instance, 0, len(c.mine))
	for _, inst := range c.mine {
		mine = append(mine, inst)
	}
	c.mu.Unlock()
	var errs []error
	for _, inst := range mine {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		errs = append(errs, c.Deregister(ctx, inst))
		cancel()
	}
	c.done.Wait()
	return errors.Join(errs...)
}
