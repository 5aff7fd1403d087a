package discovery

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"sync"
)

// Local is the embedded registry: instances registered on this meshd plus any
// static ones loaded from a peers file. It makes a single host work out of
// the box and is what meshd falls back to when no Consul answers.
type Local struct {
	mu        sync.RWMutex
	instances map[string][]Instance // by service, in registration order
	static    int
}

// NewLocal returns an empty local registry.
func NewLocal() *Local { return &Local{instances: make(map[string][]Instance)} }

// StaticFile is the format of a static peers file: instances served by other
// meshds, for a small mesh without Consul.
type StaticFile struct {
	Instances []Instance `json:"instances"`
}

// LoadStatic adds the instances listed in a JSON static peers file.
func (l *Local) LoadStatic(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("static peers file: %w", err)
	}
	var f StaticFile
	if err := json.Unmarshal(b, &f); err != nil {
		return fmt.Errorf("static peers file %s: %w", path, err)
	}
	for n, inst := range f.Instances {
		if err := inst.Validate(); err != nil {
			return fmt.Errorf("static peers file %s, instance %d: %w", path, n+1, err)
		}
		l.Register(context.Background(), inst)
		l.static++
	}
	return nil
}

// Register adds or replaces an instance.
func (l *Local) Register(_ context.Context, inst Instance) error {
	if err := inst.Validate(); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	list := slices.DeleteFunc(slices.Clone(l.instances[inst.Service]), func(i Instance) bool { return i.ID == inst.ID })
	l.instances[inst.Service] = append(list, inst)
	return nil
}

// Deregister removes an instance.
func (l *Local) Deregister(_ context.Context, inst Instance) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	list := slices.DeleteFunc(slices.Clone(l.instances[inst.Service]), func(i Instance) bool { return i.ID == inst.ID })
	if len(list) == 0 {
		delete(l.instances, inst.Service)
	} else {
		l.instances[inst.Service] = list
	}
	return nil
}

// Instances returns the instances of service. The slice is shared: do not
// modify it.
func (l *Local) Instances(_ context.Context, service string) ([]Instance, error) {
	insts, _, err := l.Lookup(service)
	return insts, err
}

// Lookup is Instances: the local registry has nothing to wait for.
func (l *Local) Lookup(service string) ([]Instance, <-chan struct{}, error) {
	l.mu.RLock()
	list := l.instances[service]
	l.mu.RUnlock()
	if len(list) == 0 {
		return nil, nil, NoInstances(service)
	}
	return list, nil, nil
}

// Services lists the services with instances, sorted.
func (l *Local) Services(context.Context) ([]string, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	out := make([]string, 0, len(l.instances))
	for s := range l.instances {
		out = append(out, s)
	}
	slices.Sort(out)
	return out, nil
}

// Status reports the local registry.
func (l *Local) Status() Status {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return Status{Backend: "local", Ready: true, Healthy: true, Detail: fmt.Sprintf("%d services, %d static instances", len(l.instances), l.static)}
}

// Close does nothing: the local registry holds no outside state.
func (l *Local) Close() error { return nil }
