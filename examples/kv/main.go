// Command kv is an example JSON service: an in-memory key-value store with
// methods "put" {"key","value"}, "get" {"key"} and "list". It advertises to
// a meshd.
package main

import (
	"context"
	"errors"
	"flag"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/meshrpc/mesh/client"
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
	meshd := flag.String("meshd", envOr("MESH_VIA", "127.0.0.1:21300"), "meshd `address` to advertise to")
	name := flag.String("service", "kv", "service `name` to advertise")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("service", *name)

	st := &store{m: map[string]string{}}
	s := client.NewServer(client.Options{ServiceName: *name, Logger: log})
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

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	for {
		err := s.Advertise(ctx, *meshd)
		if err == nil {
			break
		}
		log.Warn("advertise failed, retrying", "meshd", *meshd, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
	log.Info("advertised", "meshd", *meshd)
	<-ctx.Done()
	s.Shutdown(context.Background())
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
