//go:build integration

package integration

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/meshrpc/mesh/client"
	"github.com/meshrpc/mesh/discovery/consul"
	"github.com/meshrpc/mesh/internal/testconsul"
)

// BenchmarkDiscovery measures what following Consul costs as the catalog and
// the fleet grow (`make bench-discovery`): a real Consul agent holding S
// services x 3 instances (on S*3/10 nodes), K meshd processes each using 10 of the services,
// and health flips (an instance's check passing ↔ critical) of used services
// at 5 per second. It reports, per flip: Consul's CPU, each meshd's CPU and
// the bytes each meshd reads from Consul (both less what they use idle), the
// time until a meshd that uses the flipped service has it in its routing
// (p50/p99, from meshd's "instances changed" debug log), and meshd's memory.
// Run it once per size (-benchtime 1x); sizes from MESH_BENCH_SERVICES and
// MESH_BENCH_MESHDS (comma-separated, default 100 and 10), the meshd binary
// from MESH_BENCH_MESHD (default: this tree's), more meshd arguments from
// MESH_BENCH_MESHD_ARGS (e.g. "--consul-reads cached"). The meshds share one agent
// (and so one client address): the agent's connection limit is raised.
func BenchmarkDiscovery(b *testing.B) {
	for _, s := range sizes(b, "MESH_BENCH_SERVICES", "100") {
		for _, k := range sizes(b, "MESH_BENCH_MESHDS", "10") {
			b.Run(fmt.Sprintf("services=%d/meshds=%d", s, k), func(b *testing.B) {
				for range b.N {
					benchDiscovery(b, s, k)
				}
			})
		}
	}
}

func sizes(b *testing.B, env, def string) []int {
	var out []int
	for _, f := range strings.Split(cmp.Or(os.Getenv(env), def), ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			b.Fatalf("%s: %q is not a size", env, f)
		}
		out = append(out, n)
	}
	return out
}

const (
	benchInstances = 3
	benchUsed      = 10 // services each meshd's callers use
	benchFlips     = 100
	benchRate      = 5 // flips per second
)

func benchDiscovery(b *testing.B, services, meshds int) {
	b.StopTimer()
	agent := testconsul.Start(b, "-hcl", "limits { http_max_conns_per_client = 10000 }")
	capi := consulAPI(b, agent.HTTPAddr)
	name := func(i int) string { return fmt.Sprintf("svc-%05d", i) }
	// About 10 instances per node, as on hosts that run a few services each.
	nodes := max(services*benchInstances/10, 1)
	node := func(i, n int) string { return fmt.Sprintf("node-%05d", (i*benchInstances+n)%nodes) }
	check := func(i, n int, status string) error {
		_, err := capi.Catalog().Register(&api.CatalogRegistration{
			Node: node(i, n), Address: "10.9.0.1", SkipNodeUpdate: true,
			Service: &api.AgentService{ID: fmt.Sprintf("%s-%d", name(i), n), Service: name(i), Address: "10.9.0.1", Port: 30000 + n, Tags: []string{consul.MeshTag}},
			Check:   &api.AgentCheck{Node: node(i, n), CheckID: fmt.Sprintf("check:%s-%d", name(i), n), Name: "app", Status: status, ServiceID: fmt.Sprintf("%s-%d", name(i), n)},
		}, nil)
		return err
	}
	inParallel(services, func(i int) {
		for n := range benchInstances {
			if err := check(i, n, api.HealthPassing); err != nil {
				b.Error(err)
			}
		}
	})

	bin := cmp.Or(os.Getenv("MESH_BENCH_MESHD"), "meshd")
	rng := rand.New(rand.NewPCG(uint64(services), uint64(meshds)))
	type meshdProc struct {
		p    *proc
		used []int
	}
	procs := make([]meshdProc, meshds)
	usedBy := map[int][]int{} // service → the meshds using it
	ports := testconsul.FreePorts(b, "127.0.0.1", meshds)
	for k := range procs {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[k]))
		args := []string{"--listen", addr, "--admin", "off", "--consul", agent.HTTPAddr,
			"--node", fmt.Sprintf("bench-%d", k), "--log-format", "json", "--log-level", "debug"}
		procs[k].p = start(b, bin, append(args, strings.Fields(os.Getenv("MESH_BENCH_MESHD_ARGS"))...)...)
		sdk := dialWhenUp(b, addr)
		for len(procs[k].used) < benchUsed {
			i := rng.IntN(services)
			if slices.Contains(procs[k].used, i) {
				continue
			}
			procs[k].used = append(procs[k].used, i)
			usedBy[i] = append(usedBy[i], k)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			var out []json.RawMessage
			if _, err := sdk.CallJSON(ctx, "meshd", "instances", nil, map[string]string{"service": name(i)}, &out); err != nil || len(out) != benchInstances {
				b.Fatalf("meshd %d: instances of %s: %d, %v", k, name(i), len(out), err)
			}
			cancel()
		}
		sdk.Close()
	}
	pids := make([]int, meshds)
	for k := range procs {
		pids[k] = procs[k].p.cmd.Process.Pid
	}
	used := make([]int, 0, len(usedBy))
	for i := range usedBy {
		used = append(used, i)
	}
	slices.Sort(used)

	time.Sleep(2 * time.Second) // every watch settled on its blocking query
	idle := 5 * time.Second
	c0, m0, r0 := cpu(b, agent.PID()), cpuAll(b, pids), readAll(b, pids)
	time.Sleep(idle)
	c1, m1, r1 := cpu(b, agent.PID()), cpuAll(b, pids), readAll(b, pids)

	type flip struct {
		service int
		at      time.Time
	}
	var flips []flip
	critical := map[int]bool{}
	b.StartTimer()
	begin := time.Now()
	for f := range benchFlips {
		time.Sleep(time.Until(begin.Add(time.Duration(f) * time.Second / benchRate)))
		i := used[f%len(used)] // round robin: a service flips again only after the others did
		status := api.HealthCritical
		if critical[i] {
			status = api.HealthPassing
		}
		critical[i] = !critical[i]
		at := time.Now()
		if err := check(i, 0, status); err != nil {
			b.Fatal(err)
		}
		flips = append(flips, flip{i, at})
	}
	time.Sleep(2 * time.Second) // the last flips arrive
	b.StopTimer()
	took := time.Since(begin)
	c2, m2, r2 := cpu(b, agent.PID()), cpuAll(b, pids), readAll(b, pids)
	time.Sleep(idle) // idle again: Consul's own background work comes in bursts
	c3, m3, r3 := cpu(b, agent.PID()), cpuAll(b, pids), readAll(b, pids)

	b.Logf("consul CPU %v and %v idle over %v before and after, %v over %v of flips; meshds %v, %v idle, %v during flips; meshds read %d B, %d B idle, %d B during flips",
		c1-c0, c3-c2, idle, c2-c1, took.Round(time.Millisecond), m1-m0, m3-m2, m2-m1, r1-r0, r3-r2, r2-r1)
	idleShare := float64(took) / float64(2*idle) // the idle cost over as long a time
	perFlip := func(busy, quiet time.Duration) float64 {
		return max(float64(busy)-float64(quiet)*idleShare, 0) / benchFlips / float64(time.Millisecond)
	}
	consulMs := perFlip(c2-c1, c1-c0+c3-c2)
	meshdMs := perFlip(m2-m1, m1-m0+m3-m2) / float64(meshds)
	bytesPerFlip := max(float64(r2-r1)-float64(r1-r0+r3-r2)*idleShare, 0) / benchFlips / float64(meshds)

	// When each meshd using a flipped service saw the change.
	seen := make([]map[string][]time.Time, meshds)
	for k := range procs {
		seen[k] = changes(b, procs[k].p.log)
	}
	var lat []time.Duration
	missed := 0
	for _, f := range flips {
		for _, k := range usedBy[f.service] {
			times := seen[k][name(f.service)]
			n, _ := slices.BinarySearchFunc(times, f.at, func(t, at time.Time) int { return t.Compare(at) })
			if n == len(times) {
				missed++
				continue
			}
			lat = append(lat, times[n].Sub(f.at))
		}
	}
	slices.Sort(lat)
	q := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return float64(lat[int(p*float64(len(lat)-1))]) / float64(time.Millisecond)
	}
	var rssSum int64
	for _, pid := range pids {
		rssSum += rss(pid)
	}
	b.ReportMetric(float64(c1-c0+c3-c2)/float64(2*idle)*1000, "consul-idle-ms/s")
	b.ReportMetric(consulMs, "consul-ms/flip")
	b.ReportMetric(meshdMs, "meshd-ms/flip")
	b.ReportMetric(bytesPerFlip, "meshd-B/flip")
	b.ReportMetric(q(0.5), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(float64(rssSum)/float64(meshds)/(1<<20), "meshd-MiB")
	b.ReportMetric(float64(missed), "missed")
	b.ReportMetric(0, "ns/op")
}

// dialWhenUp connects an SDK client to a meshd that is starting.
func dialWhenUp(b *testing.B, addr string) *client.Client {
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := client.Dial(context.Background(), addr, client.Options{})
		if err == nil {
			return c
		}
		if time.Now().After(deadline) {
			b.Fatalf("meshd at %s: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// changes reads a meshd's JSON log for when each service's instances changed.
func changes(b *testing.B, path string) map[string][]time.Time {
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	out := map[string][]time.Time{}
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 1<<20), 1<<20)
	for s.Scan() {
		var rec struct {
			Time    time.Time `json:"time"`
			Msg     string    `json:"msg"`
			Service string    `json:"service"`
		}
		if json.Unmarshal(s.Bytes(), &rec) == nil && rec.Msg == "instances changed" {
			out[rec.Service] = append(out[rec.Service], rec.Time)
		}
	}
	return out
}

// cpu is a process's user and system time so far, from /proc.
func cpu(b *testing.B, pid int) time.Duration {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	s := string(raw)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:]) // past the command name
	ut, _ := strconv.ParseInt(fields[11], 10, 64)
	st, _ := strconv.ParseInt(fields[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond // clock ticks of 1/100 s
}

func cpuAll(b *testing.B, pids []int) time.Duration {
	var d time.Duration
	for _, pid := range pids {
		d += cpu(b, pid)
	}
	return d
}

// readAll is the bytes the processes read so far (rchar: for meshd, all of
// it comes from Consul while no call is made).
func readAll(b *testing.B, pids []int) int64 { return ioSum(b, pids, "rchar") }

// ioSum sums one field of the processes' I/O accounting (/proc/PID/io).
func ioSum(b *testing.B, pids []int, field string) int64 {
	var n int64
	for _, pid := range pids {
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
		if err != nil {
			b.Fatal(err)
		}
		for _, line := range strings.Split(string(raw), "\n") {
			if v, ok := strings.CutPrefix(line, field+": "); ok {
				c, _ := strconv.ParseInt(v, 10, 64)
				n += c
			}
		}
	}
	return n
}
