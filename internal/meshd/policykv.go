package meshd

import (
	"context"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/meshrpc/mesh/internal/dashboard"
	"github.com/meshrpc/mesh/internal/follow"
	"github.com/meshrpc/mesh/router"
)

// Policies in Consul KV are the daemon's configuration, not discovery: they
// are read from the same agent the registry uses, over the YAML file's.

// PolicyPrefix is where meshd reads per-service policies in Consul KV: the
// key mesh/policies/SERVICE holds that service's policy as JSON.
const PolicyPrefix = "mesh/policies/"

// followPolicies follows the keys under PolicyPrefix in Consul KV, applying
// them over the file's policies at once and after each change, until ctx
// ends. While Consul is unreachable the last policies stay.
func (d *Daemon) followPolicies(ctx context.Context, client *api.Client, file router.Policies) {
	apply := d.policiesFromKV(file)
	list := func(q *api.QueryOptions) (api.KVPairs, *api.QueryMeta, error) {
		return client.KV().List(PolicyPrefix, q)
	}
	cfg := follow.Config{Failed: func(err error) {
		d.log.Warn("policies in consul not read; the last ones stay in force", "err", err)
	}}
	follow.Run(ctx, cfg, list, func(pairs api.KVPairs, _ *api.QueryMeta) {
		kv := make(map[string][]byte, len(pairs))
		for _, p := range pairs {
			kv[p.Key] = p.Value
		}
		apply(kv)
	})
}

// policiesFromKV returns the handler of Consul KV policy updates: each key
// overrides the file's policy of its service; a key that does not parse is
// refused and logged, and that service keeps its last good policy.
func (d *Daemon) policiesFromKV(file router.Policies) func(map[string][]byte) {
	lastGood := router.Policies{}
	return func(kv map[string][]byte) {
		next := router.Policies{}
		sources := map[string]string{}
		for k, v := range file {
			next[k] = v
			sources[k] = "the config file"
		}
		seen := map[string]bool{}
		for key, val := range kv {
			service := strings.TrimPrefix(key, PolicyPrefix)
			if service == "" {
				continue
			}
			seen[service] = true
			p, err := router.ParsePolicy(val)
			if err != nil {
				d.log.Error("policy in consul refused; keeping the last good one", "service", service, "key", key, "err", err)
				d.policyLog.reject(dashboard.Rejection{At: time.Now(), Service: service, Source: "consul kv " + key, Error: err.Error()})
				if good, ok := lastGood[service]; ok {
					next[service] = good
					sources[service] = "consul kv " + key + " (its last good value)"
				}
				continue
			}
			lastGood[service] = p
			next[service] = p
			sources[service] = "consul kv " + key
		}
		for s := range lastGood {
			if !seen[s] {
				delete(lastGood, s) // removed from KV: back to the file's policy
			}
		}
		if err := d.SetPolicies(next); err != nil {
			d.log.Error("policies refused", "err", err)
			d.policyLog.reject(dashboard.Rejection{At: time.Now(), Source: "consul kv " + PolicyPrefix, Error: err.Error()})
			return
		}
		d.policyLog.setSources(sources)
		d.log.Info("policies updated from consul", "services", len(kv))
	}
}
