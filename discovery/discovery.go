package discovery

import (
	"context"
	"errors"
	"fmt"
)

// Instance is one running copy of a service, reachable through a meshd.
type Instance struct {
	Service string            `json:"service"`
	ID      string            `json:"id"`   // unique across the mesh
	Addr    string            `json:"addr"` // host:port of the meshd that delivers to it
	Tags    []string          `json:"tags,omitempty"`
	Meta    map[string]string `json:"meta,omitempty"`
	// Token is the ACL token the instance is registered, renewed and
	// withdrawn with: the app's own, its proof that it may serve Service;
	// empty for the registry's. Never shown.
	Token string `json:"-"`
}

// MetaZone is the Meta key of an instance's zone (its meshd's, set by the
// meshd that registers it): balancers keep calls inside the caller's zone
// while it has the capacity.
const MetaZone = "zone"

// Registry stores and looks up instances.
type Registry interface {
	// Register announces an instance served by this meshd. It stays
	// registered until Deregister or until this meshd stops renewing it.
	Register(ctx context.Context, inst Instance) error
	// Deregister withdraws an instance at once.
	Deregister(ctx context.Context, inst Instance) error
	// Instances returns the healthy instances of service. After the first
	// lookup of a service it answers from a cache kept current in the
	// background, so it is cheap enough for every call; the first may wait
	// (within ctx) for the backend.
	Instances(ctx context.Context, service string) ([]Instance, error)
	// Lookup is Instances that never waits, for callers that must not
	// (a connection's read loop): the instances known now, or, while the
	// first answer about service is still to come, ready, closed when it
	// has come (ask again then).
	Lookup(service string) (insts []Instance, ready <-chan struct{}, err error)
	// Services lists the names of the services with healthy instances.
	Services(ctx context.Context) ([]string, error)
	// Status describes the backend for operators (name, health, staleness).
	Status() Status
	// Close stops background work and withdraws what this meshd registered.
	Close() error
}

// Status is what a registry says about itself on meshd's /status.
type Status struct {
	Backend string `json:"backend"`
	// Ready: the backend has answered since meshd started; until then
	// meshd reports not ready.
	Ready   bool `json:"ready"`
	Healthy bool `json:"healthy"`
	Stale   bool `json:"stale"` // answering from a cache the backend could not refresh
	// StaleLookups counts lookups answered from a cache the backend could
	// not refresh (0 for a backend without a cache).
	StaleLookups int64  `json:"stale_lookups"`
	Detail       string `json:"detail,omitempty"`
}

// Following is a Registry that caches only the services looked up, and
// follows those: Followed lists them with their instances, without looking
// up (and so following) any more. meshd's /status shows it rather than
// looking every service up. Optional: a Registry without it is listed by
// Services and Instances.
type Following interface {
	Registry
	Followed() map[string][]Instance
}

// ErrNoInstances is (wrapped in) the error of a lookup that found none.
var ErrNoInstances = errors.New("no healthy instances")

// NoInstances is the error of a lookup of service that found none.
func NoInstances(service string) error {
	return fmt.Errorf("service %q: %w", service, ErrNoInstances)
}

// Validate checks the fields every backend needs.
func (i Instance) Validate() error {
	switch {
	case i.Service == "":
		return errors.New("instance has no service name")
	case len(i.Service) > 255:
		return fmt.Errorf("service name of %d bytes exceeds 255", len(i.Service))
	case i.ID == "":
		return fmt.Errorf("instance of %q has no id", i.Service)
	case i.Addr == "":
		return fmt.Errorf("instance %q has no address", i.ID)
	}
	return nil
}
