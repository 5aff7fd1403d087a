// Command kv is an example JSON service: an in-memory key-value store with
// methods "put" {"key","value"}, "get" {"key"} and "list". It advertises to
// a meshd.
package main

import (
	"context"
	"errors"
	"slices"
	"sync"

	"github.com/meshrpc/mesh/client"
	"github.com/meshrpc/mesh/examples/internal/run"
)

type entry struct {
	Key   string `json:"key"`
	Value string `json:"value,omitempty"`
}

type store struct {
	mu sync.RWMutex
	m  map[string]string
}

func main() {
	f := run.ParseFlags("kv")
	name, log := &f.Service, run.Logger(f.Service)

	st := &store{m: map[string]string{}}
	s := client.NewServer(f.Options(log))
	s.Register(*name, "put", client.JSON(func(ctx context.Context, h map[string]string, e entry) (entry, error) {
		if e.Key == "" {
			return entry{}, errors.New("key is required")
		}
		st.mu.Lock()
		st.m[e.Key] = e.Value
		st.mu.Unlock()
		return e, nil
	}))
	s.Register(*name, "get", client.JSON(func(ctx context.Context, h map[string]string, e entry) (entry, error) {
		st.mu.RLock()
		v, ok := st.m[e.Key]
		st.mu.RUnlock()
		if !ok {
			return entry{}, errors.New("no such key: " + e.Key)
		}
		return entry{Key: e.Key, Value: v}, nil
	}))
	s.Register(*name, "list", client.JSON(func(ctx context.Context, h map[string]string, _ struct{}) ([]string, error) {
		st.mu.RLock()
		defer st.mu.RUnlock()
		keys := make([]string, 0, len(st.m))
		for k := range st.m {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		return keys, nil
	}))

	run.Serve(s, f.Meshd, log)
}
