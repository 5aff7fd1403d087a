package consul

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/meshrpc/mesh/discovery"
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
	Logger   *slog.Logger
}

// Registry is the discovery.Registry backed by a Consul agent.
type Registry struct {
	cfg    Config
	client *api.Client
	log    *slog.Logger

	mu      sync.Mutex
	mine    map[string]discovery.Instance // registered by this meshd, by id
	watches map[string]*watch             // by service

	failing  atomic.Bool  // the last request to Consul failed
	staleHit atomic.Int64 // lookups answered from a cache Consul could not refresh
	stop     chan struct{}
	done     sync.WaitGroup
}

// New connects to the Consul agent and checks that it answers.
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
		cfg:     cfg,
		client:  client,
		log:     cfg.Logger.With("registry", "consul", "consul", ac.Address),
		mine:    make(map[string]discovery.Instance),
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
	c.mu.Lock()
	for _, w := range c.watches {
		stale = stale || w.stale.Load()
	}
	n := len(c.watches)
	c.mu.Unlock()
	return discovery.Status{
		Backend: "consul",
		Healthy: !c.failing.Load(),
		Stale:   stale,
		Detail:  fmt.Sprintf("%d services watched, %d stale lookups", n, c.staleHit.Load()),
	}
}

// Client is the Consul API client the registry uses, for the daemon's other
// reads of the same agent (policies in KV).
func (c *Registry) Client() *api.Client { return c.client }

// Follow runs a blocking query until Close, on its own goroutine: query gets
// the options to wait with and returns the index of its answer; a failed
// query is retried with backoff (failed hears each failure).
func (c *Registry) Follow(query func(*api.QueryOptions) (uint64, error), failed func(error)) {
	c.done.Add(1)
	go c.poll(query, failed)
}

// StaleLookups counts lookups answered from a cache Consul could not refresh.
func (c *Registry) StaleLookups() int64 { return c.staleHit.Load() }

// Close stops the watches and deregisters what this meshd registered.
func (c *Registry) Close() error {
	select {
	case <-c.stop:
		return nil
	default:
	}
	close(c.stop)
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
