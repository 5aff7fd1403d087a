//go:build integration

package integration

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/meshrpc/mesh/client"
	"github.com/meshrpc/mesh/discovery"
	"github.com/meshrpc/mesh/internal/testconsul"
)

// 1,000 services × 3 instances in Consul, every one routed by three meshds:
// how long until a change in Consul reaches each meshd's routing table.
func TestChangePropagationAt1000Services(t *testing.T) {
	const services, perService, changes = 1000, 3, 60
	agent := testconsul.Start(t)
	capi := consulAPI(t, agent.HTTPAddr)
	// The three meshds reach the agent from one address, so they share its
	// 200 HTTP connections: 50 own watches each, the rest shared.
	hosts := []*host{
		startHost(t, "127.0.0.1", agent.HTTPAddr, "--consul-max-watches", "50"),
		startHost(t, "127.0.0.2", agent.HTTPAddr, "--consul-max-watches", "50"),
		startHost(t, "127.0.0.3", agent.HTTPAddr, "--consul-max-watches", "50"),
	}
	name := func(i int) string { return fmt.Sprintf("svc-%04d", i) }
	begin := time.Now()
	inParallel(services, func(i int) {
		for n := range perService {
			registerRemote(t, capi, name(i), fmt.Sprintf("%s-%d", name(i), n), 30000+n, true)
		}
	})
	t.Logf("registered %d instances in %v", services*perService, time.Since(begin).Round(time.Millisecond))

	// Each meshd resolves every service once, so its routing follows all 1,000.
	sdks := make([]*client.Client, len(hosts))
	for i, h := range hosts {
		sdks[i] = dial(t, h.addr)
	}
	begin = time.Now()
	for _, sdk := range sdks {
		for i := range services {
			if got := len(meshdInstances(t, sdk, name(i))); got != perService {
				t.Fatalf("%s: meshd sees %d instances, want %d", name(i), got, perService)
			}
		}
	}
	t.Logf("three meshds resolved all services in %v", time.Since(begin).Round(time.Millisecond))

	// Each change adds a 4th instance to a random service; measure when each
	// meshd's routing shows it.
	var lat []time.Duration
	for c := range changes {
		svc := name(rand.IntN(services))
		id := fmt.Sprintf("%s-x%d", svc, c)
		start := time.Now()
		registerRemote(t, capi, svc, id, 40000+c, true)
		for _, sdk := range sdks {
			for {
				if slices.ContainsFunc(meshdInstances(t, sdk, svc), func(i discovery.Instance) bool { return i.ID == id }) {
					lat = append(lat, time.Since(start))
					break
				}
				if time.Since(start) > 10*time.Second {
					t.Fatalf("change to %s not seen in 10s", svc)
				}
				time.Sleep(2 * time.Millisecond)
			}
		}
		capi.Catalog().Deregister(&api.CatalogDeregistration{Node: "remote-node", ServiceID: id}, nil)
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	p := func(q float64) time.Duration { return lat[int(q*float64(len(lat)-1))].Round(time.Millisecond) }
	t.Logf("change → routing, %d observations over 3 meshds: p50 %v, p90 %v, p99 %v, max %v",
		len(lat), p(0.5), p(0.9), p(0.99), lat[len(lat)-1].Round(time.Millisecond))
	if p(0.99) > time.Second {
		t.Fatalf("p99 propagation %v exceeds 1s", p(0.99))
	}
}
