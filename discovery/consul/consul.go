package consul

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/meshrpc/mesh/discovery"
	"github.com/meshrpc/mesh/internal/backoff"
)

// Config configures the Consul backend. Address, Token and Datacenter
// default to Consul's own environment conventions (CONSUL_HTTP_ADDR,
// CONSUL_HTTP_TOKEN, ...).
type Config struct {
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
	// MaxWatches bounds the services followed by their own blocking query
	// (each holds one of the 200 HTTP connections Consul allows a client
	// address by default); services past it share one query. Default 128.
	MaxWatches int
	// MaxNames bounds the service names cached, followed or not; a lookup of
	// a new name past it fails. Default 10,000.
	MaxNames int
	// IdleAfter stops following a service no one looked up that long.
	// Default 10m.
	IdleAfter time.Duration
	// UseCache reads through the agent's cache (?cached), which on Consul
	// v1.20 serves service health from its streaming backend.
	UseCache bool
	Logger   *slog.Logger
}

// The defaults of Config.
const (
	DefaultMaxWatches = 128
	DefaultMaxNames   = 10000
	DefaultIdleAfter  = 10 * time.Minute
)

// Registry is the discovery.Registry backed by a Consul agent.
type Registry struct {
	cfg    Config
	client *api.Client
	log    *slog.Logger

	mu         sync.RWMutex
	mine       map[string]discovery.Instance // registered by this meshd, by id
	watches    map[string]*watch             // by service
	owned      int                           // watches with their own query
	sharedWake chan struct{}                 // the shared query's services changed

	connected atomic.Bool     // the agent answered once: meshd may serve
	failing   atomic.Bool     // the last request to Consul failed
	staleHit  atomic.Int64    // lookups answered from a cache Consul could not refresh
	ctx       context.Context // of every background query, ended by Close
	stop      context.CancelFunc
	done      sync.WaitGroup
}

// New returns the registry of the Consul agent at cfg.Address. If the agent
// does not answer within ctx, New still returns it, not connected (Status's
// Ready is false): it keeps trying in the background, and registers what it
// was given when the agent answers.
func New(ctx context.Context, cfg Config) (*Registry, error) {
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
	cfg.MaxWatches = cmp.Or(cfg.MaxWatches, DefaultMaxWatches)
	cfg.MaxNames = cmp.Or(cfg.MaxNames, DefaultMaxNames)
	cfg.IdleAfter = cmp.Or(cfg.IdleAfter, DefaultIdleAfter)
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
	c := &Registry{
		cfg:        cfg,
		client:     client,
		log:        cfg.Logger.With("registry", "consul", "consul", ac.Address),
		mine:       make(map[string]discovery.Instance),
		watches:    make(map[string]*watch),
		sharedWake: make(chan struct{}, 1),
	}
	c.ctx, c.stop = context.WithCancel(context.Background())
	c.done.Add(3)
	go c.renew()
	go c.sweep()
	go c.followShared()
	if err := c.answers(ctx); err != nil {
		c.log.Warn("consul agent does not answer; retrying, and meshd is not ready until it does", "err", err)
		c.failing.Store(true)
		c.done.Add(1)
		go c.connect()
		return c, nil
	}
	c.connected.Store(true)
	return c, nil
}

// connect waits for the agent to answer, then registers what was
// registered meanwhile.
func (c *Registry) connect() {
	defer c.done.Done()
	bo := backoff.Backoff{Min: 250 * time.Millisecond, Max: 2 * time.Second}
	for {
		if !bo.Wait(c.ctx.Done()) {
			return
		}
		ctx, cancel := context.WithTimeout(c.ctx, 2*time.Second)
		err := c.answers(ctx)
		cancel()
		if err == nil {
			break
		}
	}
	c.connected.Store(true)
	c.failing.Store(false)
	c.log.Info("consul agent answers; meshd is ready")
	c.renewAll()
}

// answers checks that the agent answers and knows a leader.
func (c *Registry) answers(ctx context.Context) error {
	leader, err := c.client.Status().LeaderWithQueryOptions((&api.QueryOptions{}).WithContext(ctx))
	if err == nil && leader == "" {
		err = errors.New("the agent knows no leader yet")
	}
	return err
}

// Ready reports whether the agent has answered: before that meshd routes only
// to its own instances.
func (c *Registry) Ready() bool { return c.connected.Load() }

// note records whether Consul answered.
func (c *Registry) note(err error) {
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

// Status reports whether Consul answers and whether lookups are stale.
func (c *Registry) Status() discovery.Status {
	stale := false
	var count [3]int
	c.mu.RLock()
	for _, w := range c.watches {
		stale = stale || w.stale.Load()
		count[w.mode]++
	}
	c.mu.RUnlock()
	st := discovery.Status{
		Backend:      "consul",
		Ready:        c.connected.Load(),
		Healthy:      !c.failing.Load(),
		Stale:        stale,
		StaleLookups: c.staleHit.Load(),
		Detail: fmt.Sprintf("%d services followed by their own query, %d by the shared one, %d names without instances; %d stale lookups",
			count[own], count[shared], count[absent], c.staleHit.Load()),
	}
	if !st.Ready {
		st.Detail = "waiting for the consul agent to answer; " + st.Detail
	}
	return st
}

// Client is the Consul API client the registry uses, for the daemon's other
// reads of the same agent (its CA, intentions, policies in KV).
func (c *Registry) Client() *api.Client { return c.client }

// Close stops the watches and deregisters what this meshd registered.
func (c *Registry) Close() error {
	if c.ctx.Err() != nil {
		return nil
	}
	c.stop()
	c.mu.Lock()
	mine := make([]discovery.Instance, 0, len(c.mine))
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
