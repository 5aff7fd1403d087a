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

// watch caches one service's healthy instances. One blocking query per
// meshd (on the state of every health check) finds which services changed,
// and only those are fetched again: a meshd watching a thousand services
// holds one long poll against its agent, not a thousand (Consul allows 200
// connections per client by default).
type watch struct {
	ready   chan struct{} // closed after the first fetch, good or bad
	current atomic.Pointer[[]Instance]
	stale   atomic.Bool
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
	c.done.Add(2)
	go c.renew()
	go c.detect()
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
// cache kept current in the background, and kept, stale, while Consul is
// unreachable.
func (c *Consul) Instances(ctx context.Context, service string) ([]Instance, error) {
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
		return nil, noInstances(service)
	}
	return *cur, nil
}

// fetch reads the passing instances of one service into its watch.
func (c *Consul) fetch(service string, w *watch) {
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
	w.stale.Store(false)
}

// poll runs a blocking query until Close. query is given the options to
// wait with and returns the index of its answer; a failed query is retried
// with backoff after failed runs. An index that goes backwards (a restarted
// agent) starts over from 0.
func (c *Consul) poll(query func(*api.QueryOptions) (uint64, error), failed func(error)) {
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
func (c *Consul) detect() {
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
func (c *Consul) refresh(changed map[string]bool, all bool) {
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

func (c *Consul) markStale() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, w := range c.watches {
		w.stale.Store(true)
	}
}

// WatchKV calls fn with every key under prefix and its value, first at
// once and then each time any of them changes, until Close. While Consul is
// unreachable fn is not called: the last values stay in force.
func (c *Consul) WatchKV(prefix string, fn func(map[string][]byte)) {
	c.done.Add(1)
	var seen uint64
	go c.poll(func(q *api.QueryOptions) (uint64, error) {
		pairs, meta, err := c.client.KV().List(prefix, q)
		if err != nil {
			return 0, err
		}
		if meta.LastIndex == seen {
			return seen, nil // the wait ended with nothing new
		}
		seen = meta.LastIndex
		kv := make(map[string][]byte, len(pairs))
		for _, p := range pairs {
			kv[p.Key] = p.Value
		}
		fn(kv)
		return meta.LastIndex, nil
	}, func(error) {})
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
