//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshrpc/mesh/client"
	"github.com/meshrpc/mesh/internal/testconsul"
	"github.com/meshrpc/mesh/internal/testkit"
)

// zoneInstance serves service through the meshd at addr, answering with
// its name ("zone/n"), so a caller sees where each call went.
func zoneInstance(t *testing.T, service, name, addr string) *client.Server {
	t.Helper()
	s := client.NewServer(client.Options{ServiceName: service, Logger: testkit.Quiet})
	s.Register(service, "where", client.HandlerFunc(func(ctx context.Context, call *client.Call) (*client.Response, error) {
		return &client.Response{Body: []byte(name)}, nil
	}))
	if err := s.Advertise(context.Background(), addr); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(context.Background()) })
	return s
}

// meshdStatus reads a meshd's /status.
func meshdStatus(t *testing.T, h *host) (st struct {
	Zone       string              `json:"zone"`
	ZoneMeshds map[string]int      `json:"zone_meshds"`
	Remote     map[string][]string `json:"services"`
}) {
	t.Helper()
	res, err := http.Get("http://" + h.admin + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if err := json.NewDecoder(res.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	return st
}

// zonesSeen waits until h counts meshds per zone as want and knows n
// instances of service (which c, one of h's apps, calls meanwhile: a
// meshd follows the services its apps call).
func zonesSeen(t *testing.T, h *host, c *client.Client, want map[string]int, service string, n int) {
	t.Helper()
	testkit.WaitFor(t, 20*time.Second, fmt.Sprintf("meshd %s sees zones %v and %d instances of %s", h.addr, want, n, service), func() bool {
		callWhere(c, service, 1)
		st := meshdStatus(t, h)
		return fmt.Sprint(st.ZoneMeshds) == fmt.Sprint(want) && len(st.Remote[service]) == n
	})
}

// callWhere makes calls calls to service's "where" through c and counts
// the answers by instance; failures are counted, not fatal.
func callWhere(c *client.Client, service string, calls int, opts ...func(i int) client.CallOption) (map[string]int, int) {
	got, failed := map[string]int{}, 0
	for i := range calls {
		var o []client.CallOption
		for _, f := range opts {
			o = append(o, f(i))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		res, err := c.Call(ctx, service, "where", nil, nil, o...)
		cancel()
		if err != nil {
			failed++
			continue
		}
		got[string(res.Body)]++
	}
	return got, failed
}

func outside(got map[string]int, zone string) int {
	n := 0
	for name, k := range got {
		if !strings.HasPrefix(name, zone+"/") {
			n += k
		}
	}
	return n
}

// Two zones of three instances each, a meshd (and its callers) in each:
// calls stay home while all are healthy; the same shard key reaches the
// same instance from both zones; when zone a's instances stop, its calls
// go to zone b with none failing. Then zone a gets three meshds to zone
// b's one, and a service with one instance in a and five in b: a's calls
// spill over so that no instance takes over 1.5x the mean.
func TestZoneAwareRouting(t *testing.T) {
	agent := testconsul.Start(t)
	// spill takes turns among the instances zones leave it, so the load per
	// instance measured is the zones' doing, not latency noise's (P2C).
	config := filepath.Join(t.TempDir(), "meshd.yaml")
	if err := os.WriteFile(config, []byte("policies:\n  spill: {balancer: round-robin}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a1 := startHost(t, "127.0.0.1", agent.HTTPAddr, "--zone", "a", "--consul-ttl", "3s", "--config", config)
	b1 := startHost(t, "127.0.0.2", agent.HTTPAddr, "--zone", "b", "--consul-ttl", "3s", "--config", config)
	var homeA []*client.Server
	for i := range 3 {
		homeA = append(homeA, zoneInstance(t, "zsvc", fmt.Sprintf("a/%d", i), a1.addr))
		zoneInstance(t, "zsvc", fmt.Sprintf("b/%d", i), b1.addr)
	}
	fromA, fromB := dial(t, a1.addr), dial(t, b1.addr)
	zonesSeen(t, a1, fromA, map[string]int{"a": 1, "b": 1}, "zsvc", 6)
	zonesSeen(t, b1, fromB, map[string]int{"a": 1, "b": 1}, "zsvc", 6)

	// All healthy: 0 calls leave their zone.
	gotA, failA := callWhere(fromA, "zsvc", 600)
	gotB, failB := callWhere(fromB, "zsvc", 600)
	t.Logf("all healthy: from a %v, from b %v", gotA, gotB)
	if failA+failB > 0 || outside(gotA, "a") != 0 || outside(gotB, "b") != 0 {
		t.Fatalf("all healthy: %d and %d failed, %d calls left zone a, %d left zone b (want 0)",
			failA, failB, outside(gotA, "a"), outside(gotB, "b"))
	}

	// A shard key's instance wins over the zone: from either zone, a key
	// reaches the same instance.
	byKey := func(i int) client.CallOption { return client.WithShardKey(fmt.Sprintf("user-%d", i%50)) }
	keyed := func(c *client.Client) []string {
		var out []string
		for i := range 50 {
			got, failed := callWhere(c, "zsvc", 1, func(int) client.CallOption { return byKey(i) })
			if failed > 0 {
				t.Fatalf("a keyed call failed")
			}
			for name := range got {
				out = append(out, name)
			}
		}
		return out
	}
	keysA, keysB := keyed(fromA), keyed(fromB)
	if fmt.Sprint(keysA) != fmt.Sprint(keysB) {
		t.Fatalf("shard keys landed differently:\nfrom a %v\nfrom b %v", keysA, keysB)
	}
	if outside(callCount(keysA), "a") == 0 {
		t.Fatalf("every key stayed in zone a: affinity did not cross zones (%v)", keysA)
	}

	// Zone a's instances stop while a's callers go on: none of their calls
	// fails, and once discovery has seen them go, all go to zone b.
	var calls, failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				_, err := fromA.Call(ctx, "zsvc", "where", nil, nil)
				cancel()
				calls.Add(1)
				if err != nil {
					failed.Add(1)
					t.Logf("a call failed while zone a's instances stopped: %v", err)
				}
				time.Sleep(2 * time.Millisecond)
			}
		})
	}
	time.Sleep(300 * time.Millisecond)
	for _, s := range homeA {
		s.Shutdown(context.Background())
	}
	took := testkit.WaitFor(t, 15*time.Second, "zone a's calls all in zone b", func() bool {
		got, _ := callWhere(fromA, "zsvc", 20)
		return outside(got, "b") == 0 && len(got) > 0
	})
	time.Sleep(500 * time.Millisecond)
	close(stop)
	wg.Wait()
	t.Logf("zone a's instances stopped: its calls all went to zone b %v later; %d of %d calls meanwhile failed",
		took.Round(time.Millisecond), failed.Load(), calls.Load())
	if failed.Load() != 0 {
		t.Fatalf("%d of %d calls failed while zone a's instances stopped", failed.Load(), calls.Load())
	}

	// Zone a now has three meshds (callers) to b's one, and "spill" one
	// instance in a to five in b: a's share of instances (1/6) is far below
	// its share of callers (3/4), so it keeps 2/9 of its calls and spills
	// the rest; every meshd calling alike, each instance takes about the
	// mean.
	a2 := startHost(t, "127.0.0.3", agent.HTTPAddr, "--zone", "a", "--consul-ttl", "3s", "--config", config)
	a3 := startHost(t, "127.0.0.4", agent.HTTPAddr, "--zone", "a", "--consul-ttl", "3s", "--config", config)
	zoneInstance(t, "spill", "a/0", a1.addr)
	for i := range 5 {
		zoneInstance(t, "spill", fmt.Sprintf("b/%d", i), b1.addr)
	}
	callers := []*host{a1, a2, a3, b1}
	sdks := map[*host]*client.Client{}
	for _, h := range callers {
		sdks[h] = dial(t, h.addr)
		zonesSeen(t, h, sdks[h], map[string]int{"a": 3, "b": 1}, "spill", 6)
	}
	load := map[string]int{}
	var mu sync.Mutex
	inParallel(len(callers), func(i int) {
		got, failed := callWhere(sdks[callers[i]], "spill", 600)
		mu.Lock()
		defer mu.Unlock()
		if failed > 0 {
			t.Errorf("%d calls from %s failed", failed, callers[i].addr)
		}
		for name, n := range got {
			load[name] += n
		}
	})
	mean := float64(len(callers)*600) / 6
	t.Logf("spill: calls per instance %v (mean %.0f)", load, mean)
	for name, n := range load {
		if float64(n) > 1.5*mean {
			t.Errorf("instance %s took %d calls, over 1.5x the mean %.0f", name, n, mean)
		}
	}
	// The meshds count and explain the calls that left their zone.
	out, errOut, code := meshctl(t, "call", "spill", "where", "", "--explain", "--via", a1.addr)
	if code != 0 {
		t.Fatalf("meshctl --explain: %q %q", out, errOut)
	}
	t.Logf("meshctl --explain:\n%s%s", out, errOut)
	if !strings.Contains(out+errOut, "zone a") {
		t.Errorf("--explain does not say what zones did: %q", out+errOut)
	}
	res, err := http.Get("http://" + a1.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	if !strings.Contains(string(body), `mesh_cross_zone_attempts_total{cause="spillover",service="spill"}`) {
		t.Errorf("no mesh_cross_zone_attempts_total for spill's spillover in /metrics")
	}
}

func callCount(names []string) map[string]int {
	out := map[string]int{}
	for _, n := range names {
		out[n]++
	}
	return out
}

// A meshd given no --zone takes its zone from its Consul agent's node
// metadata, and registers it with its instances.
func TestZoneFromConsulNodeMeta(t *testing.T) {
	agent := testconsul.Start(t, "-node-meta", "zone:z9")
	h := startHost(t, "127.0.0.1", agent.HTTPAddr)
	zoneInstance(t, "zsvc", "z9/0", h.addr)
	if st := meshdStatus(t, h); st.Zone != "z9" {
		t.Fatalf("meshd's zone %q, want z9 from the agent's node metadata", st.Zone)
	}
	capi := consulAPI(t, agent.HTTPAddr)
	testkit.WaitFor(t, 10*time.Second, "zsvc registered with zone z9", func() bool {
		e := passing(t, capi, "zsvc")
		return len(e) == 1 && e[0].Service.Meta["zone"] == "z9"
	})
}
