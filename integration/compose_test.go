//go:build integration

package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/meshrpc/mesh/client"
	"github.com/meshrpc/mesh/internal/loadgen"
	"github.com/meshrpc/mesh/internal/meshd"
	"github.com/meshrpc/mesh/internal/testkit"
)

// script runs one of scripts/ (images.sh, compose.sh) and fails the test loudly
// when Docker cannot do it: these tests are never skipped.
func script(t *testing.T, name string, args ...string) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	cmd := exec.Command(filepath.Join(filepath.Dir(file), "..", "scripts", name), args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("scripts/%s %v: %v\n%s", name, args, err, lastLines(out, 40))
	}
	return string(out)
}

// cluster drives the compose mesh: containers by service name, Docker
// commands, and SDK clients through the published meshd ports.
type cluster struct {
	t  *testing.T
	dc []string
}

func (c *cluster) id(service string) string {
	c.t.Helper()
	out, err := exec.Command(c.dc[0], append(c.dc[1:], "ps", "-q", service)...).Output()
	if err != nil || len(strings.TrimSpace(string(out))) == 0 {
		c.t.Fatalf("no container for %s: %v", service, err)
	}
	return strings.TrimSpace(string(out))
}

func (c *cluster) docker(args ...string) string {
	c.t.Helper()
	out, err := exec.Command("docker", args...).CombinedOutput()
	if err != nil {
		c.t.Fatalf("docker %v: %v: %s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// composeManagementToken is deploy/compose.yaml's (x-acl.management).
const composeManagementToken = "8d3c5a90-1f2e-4b6a-9c7d-0e1f2a3b4c5d"

func statusOfAddr(t *testing.T, admin string) meshd.Status {
	t.Helper()
	var st meshd.Status
	res, err := http.Get("http://" + admin + "/status")
	if err != nil {
		return st
	}
	defer res.Body.Close()
	json.NewDecoder(res.Body).Decode(&st)
	return st
}

// The three-host mesh of deploy/compose.yaml comes up from locally built
// images, routes calls between its hosts, and holds under faults: each
// subtest prints its figures.
func TestComposeMesh(t *testing.T) {
	if out, err := exec.Command("docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		t.Fatalf("the Docker engine is not usable here, so the container tests cannot run: %v: %s", err, out)
	}
	begin := time.Now()
	script(t, "images.sh")
	t.Logf("images built in %v", time.Since(begin).Round(time.Second))
	begin = time.Now()
	t.Cleanup(func() { script(t, "compose.sh", "down") })
	script(t, "compose.sh", "up")
	t.Logf("compose mesh healthy in %v", time.Since(begin).Round(time.Second))
	dc := []string{"docker-compose", "-p", "mesh", "-f", "../deploy/compose.yaml"}
	if _, err := exec.LookPath("docker-compose"); err != nil {
		dc = []string{"docker", "compose", "-p", "mesh", "-f", "../deploy/compose.yaml"}
	}
	c := &cluster{t: t, dc: dc}

	t.Run("routes between hosts", func(t *testing.T) {
		// echo runs on every host and kv on host3; call both from every host.
		for _, via := range []string{"127.0.0.1:21301", "127.0.0.1:21302", "127.0.0.1:21303"} {
			testkit.WaitFor(t, 30*time.Second, "echo and kv visible via "+via, func() bool {
				out, _, code := meshctl(t, "instances", "echo", "--via", via)
				kv, _, _ := meshctl(t, "services", "--via", via)
				return code == 0 && strings.Count(out, `"id"`) == 3 && strings.Contains(kv, `"kv"`)
			})
			out, errOut, code := meshctl(t, "call", "echo", "echo", "hi from "+via, "--raw", "--via", via)
			if code != 0 || strings.TrimSpace(out) != "hi from "+via {
				t.Fatalf("echo via %s: %q %q", via, out, errOut)
			}
			if _, errOut, code := meshctl(t, "call", "kv", "put", `{"key":"k","value":"`+via+`"}`, "--via", via); code != 0 {
				t.Fatalf("kv put via %s: %s", via, errOut)
			}
		}
		out, _, _ := meshctl(t, "instances", "kv", "--via", "127.0.0.1:21301")
		if !strings.Contains(out, "10.89.0.13:21302") {
			t.Fatalf("kv should be registered at host3's meshd: %s", out)
		}
	})

	t.Run("trust is on", func(t *testing.T) {
		// Each meshd: mTLS between hosts with its identity from Consul's CA,
		// advertise proof by token only, and Consul's intentions in force.
		for i, admin := range []string{"127.0.0.1:21311", "127.0.0.1:21312", "127.0.0.1:21313"} {
			var st meshd.Status
			testkit.WaitFor(t, 30*time.Second, "identity on host"+fmt.Sprint(i+1), func() bool {
				st = statusOfAddr(t, admin)
				return st.Trust.Identity != nil && st.Trust.Identity.Ready
			})
			tr := st.Trust
			if !strings.HasPrefix(tr.HostBoundary, "mTLS 1.3") || !strings.HasSuffix(tr.Identity.ID, "/svc/meshd") ||
				tr.Intentions < 3 || !strings.Contains(tr.AdvertiseRule, "Consul token") || strings.Contains(tr.AdvertiseRule, "own user") {
				t.Fatalf("host%d trust: %+v, identity %+v", i+1, tr, *tr.Identity)
			}
		}
		// An impostor on the machine, through host1's published app port,
		// without echo's token: refused, and echo still has its 3 instances.
		s := client.NewServer(client.Options{ServiceName: "echo", Logger: testkit.Quiet})
		s.Register("echo", "echo", client.HandlerFunc(func(ctx context.Context, call *client.Call) (*client.Response, error) {
			return &client.Response{Body: []byte("impostor")}, nil
		}))
		defer s.Shutdown(context.Background())
		if err := s.Advertise(context.Background(), "127.0.0.1:21301"); err == nil || !strings.Contains(err.Error(), "advertise refused") {
			t.Fatalf("impostor's advertise: %v", err)
		}
		out, _, _ := meshctl(t, "instances", "echo", "--via", "127.0.0.1:21301")
		if n := strings.Count(out, `"id"`); n != 3 {
			t.Fatalf("echo has %d instances after the impostor tried", n)
		}
		t.Logf("compose meshds: %s; impostor refused", statusOfAddr(t, "127.0.0.1:21311").Trust.HostBoundary)
	})

	t.Run("one trace across the three hosts", func(t *testing.T) {
		// host1 → front on host2, which forwards to kv on host3.
		out, errOut, code := meshctl(t, "call", "front", "forward", `{"service":"kv","method":"list","body":"{}"}`,
			"--raw", "--trace", "--via", "127.0.0.1:21301")
		if code != 0 {
			t.Fatalf("forward: %q %q", out, errOut)
		}
		_, traceID, _ := strings.Cut(errOut, "trace id: ")
		traceID = strings.TrimSpace(strings.Split(traceID, "\n")[0])
		want := map[string]int{"meshd": 4, "front": 2, "kv": 1}
		var spans []jaegerSpan
		var svc map[string]string
		testkit.WaitFor(t, 20*time.Second, "the trace in Jaeger", func() bool {
			resp, err := http.Get("http://127.0.0.1:16686/api/traces/" + traceID)
			if err != nil {
				return false
			}
			resp.Body.Close()
			spans, svc = fetchTrace(t, traceID)
			return len(spans) >= 7
		})
		got := map[string]int{}
		var instances []string
		for _, s := range spans {
			got[svc[s.SpanID]]++
			if i := s.tag("mesh.instance"); i != "" {
				instances = append(instances, i)
			}
		}
		t.Logf("trace %s in Jaeger: spans by service %v; meshd hops chose %v", traceID, got, instances)
		for k, n := range want {
			if got[k] != n {
				t.Fatalf("%d %s spans, want %d", got[k], k, n)
			}
		}
		joined := strings.Join(instances, " ")
		if !strings.Contains(joined, "front@10.89.0.12") || !strings.Contains(joined, "kv@10.89.0.13") {
			t.Fatalf("the hops did not route host1 → host2 → host3: %v", instances)
		}
	})

	t.Run("rolling restart of every instance", func(t *testing.T) {
		// meshctl bench through host1, open loop at 1,000 calls/s for 40s,
		// while echo1..3 restart one by one: each drains (withdraws, finishes
		// in-flight calls, exits) and comes back. The bench's JSON must show
		// every call answered.
		bench := exec.Command(filepath.Join(binDir, "meshctl"), "bench", "echo", "echo", "r", "--via", "127.0.0.1:21301",
			"-d", "40s", "--rps", "1000", "-c", "200", "--warmup", "0s", "-o", "json")
		var out, errb bytes.Buffer
		bench.Stdout, bench.Stderr = &out, &errb
		if err := bench.Start(); err != nil {
			t.Fatal(err)
		}
		began := time.Now()
		time.Sleep(2 * time.Second)
		for _, svc := range []string{"echo1", "echo2", "echo3"} {
			c.docker("restart", "-t", "10", c.id(svc))
			testkit.WaitFor(t, 30*time.Second, svc+" back", func() bool {
				out, _, _ := meshctl(t, "instances", "echo", "--via", "127.0.0.1:21301")
				return strings.Count(out, `"id"`) == 3
			})
		}
		restarts := time.Since(began)
		benchErr := bench.Wait()
		var r loadgen.Result
		if err := json.Unmarshal(out.Bytes(), &r); err != nil {
			t.Fatalf("meshctl bench: %v, %v: %q %q", benchErr, err, out.String(), errb.String())
		}
		t.Logf("rolling restart of 3 instances (done %v into the bench) under meshctl bench, %s: %d calls, %d errors %v; p50 %.2fms p99 %.2fms p99.9 %.2fms max %.2fms",
			restarts.Round(time.Millisecond), r.Mode, r.Calls, r.Errors, r.ErrorsBy, r.Latency.P50, r.Latency.P99, r.Latency.P999, r.Latency.Max)
		if restarts > 38*time.Second { // 15-22 s here, once 31 s: the bench outlasts them
			t.Fatalf("the restarts took %v, longer than the bench", restarts)
		}
		if r.Errors != 0 || benchErr != nil {
			t.Fatalf("%d calls failed (%v), meshctl exit %v", r.Errors, r.ErrorsBy, benchErr)
		}
		if r.Calls < 38000 {
			t.Fatalf("only %d calls made in 40s at 1,000/s", r.Calls)
		}
	})

	t.Run("kill -9 of one of three instances", func(t *testing.T) {
		sdk := dial(t, "127.0.0.1:21302")
		stop := make(chan struct{})
		l := runLoad(sdk, "echo", "whoami", 200, stop)
		time.Sleep(3 * time.Second)
		victim := c.id("echo3")
		// Which answers come from the victim: it runs on host3.
		host3 := c.docker("inspect", "-f", "{{.Config.Hostname}}", c.id("host3"))
		killed := time.Now()
		c.docker("kill", "-s", "KILL", victim)
		defer c.docker("start", victim) // the next subtests call host3's echo, whatever this one found
		var lastSeen time.Time
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			l.mu.Lock()
			for who := range l.by {
				if strings.HasPrefix(who, host3+" ") {
					lastSeen = time.Now()
				}
			}
			l.by = map[string]int{}
			l.mu.Unlock()
			time.Sleep(20 * time.Millisecond)
		}
		l.stop(stop)
		routedFor := time.Duration(0)
		if !lastSeen.IsZero() {
			routedFor = lastSeen.Sub(killed)
		}
		t.Logf("kill -9 under 200 calls/s: %d ok, %d failed; answers from the killed instance stopped %v after the kill",
			l.ok(), l.failed(), routedFor.Round(time.Millisecond))
		if l.failed() > 0 {
			t.Fatalf("%d calls failed (first: %v)", l.failed(), l.firstErr())
		}
	})

	t.Run("meshd restart on a called host", func(t *testing.T) {
		// echo runs on all three hosts; host3's meshd restarts (an upgrade)
		// while host1 sends it calls: they are retried elsewhere, and host3's
		// echo reconnects and advertises again.
		sdk := dial(t, "127.0.0.1:21301")
		stop := make(chan struct{})
		l := runLoad(sdk, "echo", "whoami", 200, stop)
		time.Sleep(2 * time.Second)
		host3 := c.docker("inspect", "-f", "{{.Config.Hostname}}", c.id("host3"))
		restarted := time.Now()
		c.docker("restart", "-t", "10", c.id("meshd3"))
		l.reset()
		testkit.WaitFor(t, 30*time.Second, "host3's echo answering again", func() bool {
			n, _ := l.sharePrefix(host3 + " ")
			return n > 0
		})
		back := time.Since(restarted)
		time.Sleep(time.Second)
		l.stop(stop)
		t.Logf("meshd restarted on a called host under 200 calls/s: %d ok, %d failed; its echo answered again %v after the restart began",
			l.ok(), l.failed(), back.Round(time.Millisecond))
		if l.failed() > 0 {
			t.Fatalf("%d calls failed (first: %v)", l.failed(), l.firstErr())
		}
	})

	t.Run("a host cut off the network", func(t *testing.T) {
		// With a 300ms attempt timeout for echo (a policy in Consul KV), calls
		// that may be retried on timeouts ("re: ct") move off a host that
		// stops answering.
		capi := consulAPI(t, "127.0.0.1:8511")
		capi.AddHeader("X-Consul-Token", composeManagementToken) // ACLs deny by default there
		if _, err := capi.KV().Put(&api.KVPair{Key: "mesh/policies/echo", Value: []byte(`{"try_timeout": "300ms"}`)}, nil); err != nil {
			t.Fatal(err)
		}
		defer capi.KV().Delete("mesh/policies/echo", nil)
		time.Sleep(time.Second)
		sdk := dial(t, "127.0.0.1:21301")
		stop := make(chan struct{})
		l := runLoad(sdk, "echo", "whoami", 200, stop, client.WithRetryFlags("ct"))
		host3 := c.docker("inspect", "-f", "{{.Config.Hostname}}", c.id("host3"))
		time.Sleep(2 * time.Second)
		before := l.p99()
		network := c.docker("inspect", "-f", "{{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{end}}", c.id("host3"))
		cut := time.Now()
		c.docker("network", "disconnect", network, c.id("host3"))
		var lastSeen time.Time
		for time.Since(cut) < 10*time.Second {
			if n, _ := l.sharePrefix(host3 + " "); n > 0 {
				lastSeen = time.Now()
			}
			l.reset()
			time.Sleep(20 * time.Millisecond)
		}
		during := l.p99()
		c.docker("network", "connect", "--ip", "10.89.0.13", network, c.id("host3"))
		reconnected := time.Now()
		testkit.WaitFor(t, 60*time.Second, "host3 answering again", func() bool {
			n, _ := l.sharePrefix(host3 + " ")
			return n > 0
		})
		recovered := time.Since(reconnected)
		time.Sleep(2 * time.Second)
		after := l.p99()
		l.stop(stop)
		routedAround := time.Duration(0)
		if !lastSeen.IsZero() {
			routedAround = lastSeen.Sub(cut)
		}
		t.Logf("host3 cut off for 10s under 200 calls/s: %d ok, %d failed; p99 before %v, during %v, after %v; "+
			"last answer from host3 %v after the cut; host3 answering again %v after reconnecting",
			l.ok(), l.failed(), before, during, after, routedAround.Round(time.Millisecond), recovered.Round(time.Millisecond))
		if l.failed() > 0 {
			t.Fatalf("%d calls failed (first: %v)", l.failed(), l.firstErr())
		}
	})

	t.Run("consul client agent stopped for 60s", func(t *testing.T) {
		// host1's agent goes away: its meshd keeps routing from its last
		// known instances (stale), and re-registers when the agent is back.
		sdk := dial(t, "127.0.0.1:21301")
		stop := make(chan struct{})
		l := runLoad(sdk, "echo", "whoami", 200, stop)
		time.Sleep(2 * time.Second)
		agent := c.id("agent1")
		c.docker("stop", "-t", "5", agent)
		testkit.WaitFor(t, 10*time.Second, "meshd1 reports a stale registry", func() bool {
			return strings.Contains(metricsOfAddr(t, "127.0.0.1:21311"), "mesh_registry_stale{backend=\"consul\"} 1")
		})
		time.Sleep(60 * time.Second)
		c.docker("start", agent)
		testkit.WaitFor(t, 30*time.Second, "meshd1's registry fresh again", func() bool {
			return strings.Contains(metricsOfAddr(t, "127.0.0.1:21311"), "mesh_registry_stale{backend=\"consul\"} 0")
		})
		time.Sleep(time.Second)
		l.stop(stop)
		t.Logf("host1's Consul agent stopped for 60s under 200 calls/s: %d ok, %d failed", l.ok(), l.failed())
		if l.failed() > 0 {
			t.Fatalf("%d calls failed (first: %v)", l.failed(), l.firstErr())
		}
	})

	t.Run("consul leader killed", func(t *testing.T) {
		sdk := dial(t, "127.0.0.1:21301")
		stop := make(chan struct{})
		l := runLoad(sdk, "echo", "echo", 200, stop)
		time.Sleep(2 * time.Second)
		peers := c.docker("exec", c.id("consul1"), "/consul", "operator", "raft", "list-peers")
		var leader string
		for _, line := range strings.Split(peers, "\n") {
			if f := strings.Fields(line); len(f) >= 4 && f[3] == "leader" {
				leader = f[0]
			}
		}
		if leader == "" {
			t.Fatalf("no leader in:\n%s", peers)
		}
		c.docker("kill", "-s", "KILL", c.id(leader))
		time.Sleep(10 * time.Second)
		l.stop(stop)
		t.Logf("consul leader %s killed under 200 calls/s: %d ok, %d failed", leader, l.ok(), l.failed())
		if l.failed() > 0 {
			t.Fatalf("%d calls failed (first: %v)", l.failed(), l.firstErr())
		}
		c.docker("start", c.id(leader))
	})
}

func metricsOfAddr(t *testing.T, admin string) string {
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
