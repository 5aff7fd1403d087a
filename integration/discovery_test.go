//go:build integration

package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/meshrpc/mesh/client"
	"github.com/meshrpc/mesh/discovery"
	"github.com/meshrpc/mesh/discovery/consul"
	"github.com/meshrpc/mesh/internal/meshd"
	"github.com/meshrpc/mesh/internal/testconsul"
	"github.com/meshrpc/mesh/internal/testkit"
)

// registerRemote writes an instance of another host's meshd to the catalog,
// as that host's agent would, with a passing check; mesh says whether it
// carries the mesh tag.
func registerRemote(t testing.TB, c *api.Client, svc, id string, port int, mesh bool) {
	t.Helper()
	var tags []string
	if mesh {
		tags = []string{consul.MeshTag}
	}
	_, err := c.Catalog().Register(&api.CatalogRegistration{
		Node: "remote-node", Address: "10.9.0.1",
		Service: &api.AgentService{ID: id, Service: svc, Address: "10.9.0.1", Port: port, Tags: tags},
		Check:   &api.AgentCheck{Node: "remote-node", CheckID: "check:" + id, Name: "app", Status: api.HealthPassing, ServiceID: id},
	}, nil)
	if err != nil {
		t.Error(err) // not Fatal: called from goroutines
	}
}

func meshdInstances(t *testing.T, sdk *client.Client, svc string) []discovery.Instance {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var out []discovery.Instance
	if _, err := sdk.CallJSON(ctx, "meshd", "instances", nil, map[string]string{"service": svc}, &out); err != nil {
		t.Fatalf("instances %s: %v", svc, err)
	}
	return out
}

// connectionsTo counts the established TCP connections to port on the
// loopback, from /proc/net/tcp.
func connectionsTo(t *testing.T, port int) int {
	t.Helper()
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want := fmt.Sprintf(":%04X", port)
	n := 0
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) > 3 && strings.HasSuffix(fields[2], want) && fields[3] == "01" { // remote address, ESTABLISHED
			n++
		}
	}
	return n
}

// A meshd whose callers use 500 services follows every one of them while it
// holds at most --consul-max-watches (128) blocking queries: Consul never
// refuses it for too many connections, and a change reaches its routing both
// for a service with its own query and for one on the shared query. The 50
// services no caller uses are not followed, /status included.
func TestFollowing500ServicesStaysWithinConsulsConnectionLimit(t *testing.T) {
	const services = 500
	agent := testconsul.Start(t)
	capi := consulAPI(t, agent.HTTPAddr)
	name := func(i int) string { return fmt.Sprintf("used-%03d", i) }
	inParallel(services, func(i int) {
		registerRemote(t, capi, name(i), name(i)+"-0", 30000, true)
		if i < 50 { // services no caller of this meshd uses
			registerRemote(t, capi, fmt.Sprintf("unused-%02d", i), fmt.Sprintf("unused-%02d-0", i), 30000, true)
		}
	})
	h := startHost(t, "127.0.0.1", agent.HTTPAddr)
	sdk := dial(t, h.addr)
	for i := range services {
		if got := len(meshdInstances(t, sdk, name(i))); got != 1 {
			t.Fatalf("%s: meshd sees %d instances, want 1", name(i), got)
		}
	}
	_, port, _ := net.SplitHostPort(agent.HTTPAddr)
	p, _ := strconv.Atoi(port)
	time.Sleep(500 * time.Millisecond) // the blocking queries are all out
	conns := connectionsTo(t, p)
	t.Logf("a meshd following %d services holds %d connections to its agent (Consul allows 200)", services, conns)
	if conns > 200 || conns < 128 {
		t.Fatalf("%d connections to the agent, want 128 own watches and a few more, at most 200", conns)
	}
	status(t, h) // /status lists what meshd follows, and must not follow the unused services to do it
	st := status(t, h)
	t.Logf("registry: %s", st.Registry.Detail)
	// The 128 own queries include meshd's own service (every meshd follows the
	// meshds); the 500 services take the other 127 and the shared one.
	if !strings.Contains(st.Registry.Detail, "128 services followed by their own query, 373 by the shared one") {
		t.Fatalf("registry detail %q", st.Registry.Detail)
	}
	for _, i := range []int{0, services - 1} { // the first has its own query; the last is shared
		svc := name(i)
		start := time.Now()
		registerRemote(t, capi, svc, svc+"-1", 30001, true)
		testkit.WaitFor(t, 5*time.Second, svc+"'s new instance routed", func() bool { return len(meshdInstances(t, sdk, svc)) == 2 })
		t.Logf("%s: a new instance reached meshd's routing in %v", svc, time.Since(start).Round(time.Millisecond))
	}
	b, _ := os.ReadFile(h.meshd.log)
	if strings.Contains(string(b), "response code: 429") {
		t.Fatalf("Consul refused meshd for too many connections (429):\n%s", lastLines(b, 20))
	}
}

type statusDoc = meshd.Status

func status(t *testing.T, h *host) statusDoc {
	t.Helper()
	return statusAt(t, h.admin)
}

// statusAt is the /status of the meshd whose admin address is admin.
func statusAt(t testing.TB, admin string) statusDoc {
	t.Helper()
	res, err := http.Get("http://" + admin + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var st statusDoc
	if err := json.NewDecoder(res.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	return st
}

// A plain service registered in Consul without the mesh tag (an HTTP
// service) is neither listed nor routed to: its port is never sent TChannel
// frames.
func TestPlainConsulServiceIsNeverRouted(t *testing.T) {
	agent := testconsul.Start(t)
	capi := consulAPI(t, agent.HTTPAddr)
	plain, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	got := make(chan int, 1)
	go func() { // counts the connections anyone makes to the plain service
		n := 0
		for {
			c, err := plain.Accept()
			if err != nil {
				got <- n
				return
			}
			n++
			c.Close()
		}
	}()
	port := plain.Addr().(*net.TCPAddr).Port
	if _, err := capi.Catalog().Register(&api.CatalogRegistration{
		Node: "web-node", Address: "127.0.0.1",
		Service: &api.AgentService{ID: "web-1", Service: "web", Address: "127.0.0.1", Port: port, Tags: []string{"http"}},
		Check:   &api.AgentCheck{Node: "web-node", CheckID: "web-http", Name: "http", Status: api.HealthPassing, ServiceID: "web-1"},
	}, nil); err != nil {
		t.Fatal(err)
	}
	h := startHost(t, "127.0.0.1", agent.HTTPAddr)
	start(t, "echo", "--via", h.addr)
	testkit.WaitFor(t, 10*time.Second, "echo listed", func() bool { return seesServices(t, h, "echo") })
	out, _, _ := meshctl(t, "services", "--via", h.addr)
	if strings.Contains(out, "web") {
		t.Fatalf("meshctl services lists the plain service: %s", out)
	}
	sdk := dial(t, h.addr)
	for range 5 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := sdk.Call(ctx, "web", "GET", nil, nil)
		cancel()
		if err == nil {
			t.Fatal("a call to the plain service succeeded")
		}
	}
	if n := len(meshdInstances(t, sdk, "web")); n != 0 {
		t.Fatalf("meshd routes to %d instances of the plain service", n)
	}
	plain.Close()
	if n := <-got; n != 0 {
		t.Fatalf("meshd opened %d connections to the plain service's port", n)
	}
}

// meshd started with --consul while its agent is down waits: /health says
// not ready (and /status why) until the agent answers, then it is ready and
// routes; it never falls back to the embedded registry.
func TestMeshdWaitsForItsAgent(t *testing.T) {
	agent := testconsul.Start(t)
	agent.Kill()
	h := &host{ip: "127.0.0.1", consul: agent.HTTPAddr}
	ports := testconsul.FreePorts(t, "127.0.0.1", 3)
	h.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
	h.admin = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[1]))
	h.peer = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[2]))
	h.meshd = start(t, "meshd", "--listen", h.addr, "--peer-listen", h.peer, "--admin", h.admin, "--consul", h.consul, "--node", "waiting")
	health := func() int {
		res, err := http.Get("http://" + h.admin + "/health")
		if err != nil {
			return 0
		}
		res.Body.Close()
		return res.StatusCode
	}
	testkit.WaitFor(t, 10*time.Second, "admin up", func() bool { return health() != 0 })
	for range 10 {
		if code := health(); code != http.StatusServiceUnavailable {
			t.Fatalf("/health = %d with the agent down, want 503", code)
		}
		time.Sleep(200 * time.Millisecond)
	}
	st := status(t, h)
	if st.Registry.Backend != "consul" || st.Registry.Ready || !strings.Contains(st.Registry.Detail, "waiting for the consul agent") {
		t.Fatalf("/status registry while the agent is down: %+v", st.Registry)
	}
	start(t, "echo", "--via", h.addr) // accepted meanwhile, registered when the agent answers
	agent.Restart()
	d := testkit.WaitFor(t, 15*time.Second, "ready once the agent answers", func() bool { return health() == http.StatusOK })
	t.Logf("meshd was ready %v after its agent came up", d.Round(time.Millisecond))
	capi := consulAPI(t, agent.HTTPAddr)
	testkit.WaitFor(t, 10*time.Second, "echo registered in consul", func() bool { return len(passing(t, capi, "echo")) == 1 })
	b, _ := os.ReadFile(h.meshd.log)
	if strings.Contains(string(b), "embedded registry") {
		t.Fatalf("meshd fell back to the embedded registry:\n%s", b)
	}
}

// A call right after Advertise returns succeeds: the meshd that accepted
// the instance routes to it before Consul echoes it back.
func TestCallRightAfterAdvertise(t *testing.T) {
	agent := testconsul.Start(t)
	h := startHost(t, "127.0.0.1", agent.HTTPAddr)
	sdk := dial(t, h.addr)
	for i := range 20 {
		svc := fmt.Sprintf("fresh-%02d", i)
		srv := client.NewServer(client.Options{ServiceName: svc, Logger: testkit.Quiet})
		srv.Register(svc, "echo", client.HandlerFunc(func(ctx context.Context, call *client.Call) (*client.Response, error) {
			return &client.Response{Body: call.Body}, nil
		}))
		if err := srv.Advertise(context.Background(), h.addr); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		res, err := sdk.Call(ctx, svc, "echo", nil, []byte("first"))
		cancel()
		if err != nil || string(res.Body) != "first" {
			t.Fatalf("try %d: the first call after Advertise: %v", i+1, err)
		}
		srv.Shutdown(context.Background())
	}
}
