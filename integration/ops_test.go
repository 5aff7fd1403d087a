//go:build integration

package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshrpc/mesh/client"
	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/dashboard"
	"github.com/meshrpc/mesh/internal/relay"
	"github.com/meshrpc/mesh/internal/testconsul"
	"github.com/meshrpc/mesh/internal/testkit"
)

// meshctl stat, top and tap against two meshds under load: what they say
// agrees with the load (calls per second within 10%, the failing method's
// success rate), from either meshd; tap streams a failing call with its
// explanation as it happens.
func TestMeshctlStatTopTap(t *testing.T) {
	agent := testconsul.Start(t)
	a := startHost(t, "127.0.0.1", agent.HTTPAddr)
	b := startHost(t, "127.0.0.2", agent.HTTPAddr)
	srv := client.NewServer(client.Options{ServiceName: "orders", Logger: testkit.Quiet})
	srv.Register("orders", "list", client.HandlerFunc(func(ctx context.Context, _ *client.Call) (*client.Response, error) {
		return &client.Response{Body: []byte("[]")}, nil
	}))
	srv.Register("orders", "cancel", client.HandlerFunc(func(ctx context.Context, _ *client.Call) (*client.Response, error) {
		return nil, client.Errorf(frame.ErrCodeUnexpected, "cancel is broken")
	}))
	if err := srv.Advertise(context.Background(), b.addr); err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(context.Background())
	testkit.WaitFor(t, 10*time.Second, "orders visible", func() bool { return seesServices(t, a, "orders") })

	web, err := client.Dial(context.Background(), a.addr, client.Options{ServiceName: "web", Logger: testkit.Quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer web.Close()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer func() { close(stop); wg.Wait() }()
	load := func(method string, every time.Duration) {
		wg.Go(func() {
			t := time.NewTicker(every)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					ctx, cancel := context.WithTimeout(context.Background(), time.Second)
					web.Call(ctx, "orders", method, nil, nil)
					cancel()
				}
			}
		})
	}
	load("list", 20*time.Millisecond)    // 50/s
	load("cancel", 100*time.Millisecond) // 10/s, all failing
	time.Sleep(25 * time.Second)         // two full steps of history and more

	run := func(args ...string) []byte {
		t.Helper()
		out, errOut, code := meshctl(t, args...)
		if code != 0 {
			t.Fatalf("meshctl %s: exit %d: %s", strings.Join(args, " "), code, errOut)
		}
		return []byte(out)
	}
	// stat, from the meshd that did not count the calls: the whole mesh.
	var services dashboard.ServicesView
	if err := json.Unmarshal(run("stat", "--via", b.addr, "--range", "1m", "-o", "json"), &services); err != nil {
		t.Fatal(err)
	}
	var orders *dashboard.ServiceRow
	for i := range services.Services {
		if services.Services[i].Name == "orders" {
			orders = &services.Services[i]
		}
	}
	if orders == nil || len(services.Meshds) != 2 {
		res, _ := http.Get("http://" + b.admin + "/api/v1/services?range=1m")
		body, _ := io.ReadAll(res.Body)
		t.Fatalf("stat from b: %+v\nb's admin API: %s", services, body)
	}
	t.Logf("meshctl stat via b: orders %.1f calls/s, %.1f%% answered, p99 %.2fms, from %d meshds", orders.PerSecond, 100*orders.Success, orders.P99, len(services.Meshds))
	if math.Abs(orders.PerSecond-60)/60 > 0.1 || math.Abs(orders.Success-50.0/60) > 0.05 {
		t.Errorf("stat says orders has %.1f calls/s, %.3f answered; the load makes 60/s, 5/6 answered", orders.PerSecond, orders.Success)
	}
	// stat SERVICE: its callers and methods.
	var svc dashboard.ServiceView
	if err := json.Unmarshal(run("stat", "orders", "--via", a.addr, "--range", "1m", "-o", "json"), &svc); err != nil {
		t.Fatal(err)
	}
	methods := map[string]dashboard.EdgeRow{}
	for _, m := range svc.Methods {
		methods[m.Name] = m
	}
	if len(svc.Callers) != 1 || svc.Callers[0].Name != "web" || methods["cancel"].Success != 0 || methods["list"].Success != 1 {
		t.Errorf("stat orders: callers %+v, methods %+v", svc.Callers, svc.Methods)
	}
	// stat as text, not on a terminal: printed once.
	text := string(run("stat", "--via", a.addr))
	if !strings.Contains(text, "SERVICE") || !strings.Contains(text, "orders") {
		t.Errorf("stat as text:\n%s", text)
	}
	// top: the busiest edge first.
	var edges dashboard.EdgesView
	if err := json.Unmarshal(run("top", "--via", a.addr, "--range", "1m", "-o", "json"), &edges); err != nil {
		t.Fatal(err)
	}
	if len(edges.Edges) < 2 || edges.Edges[0].Caller != "web" || edges.Edges[0].Method != "list" {
		t.Fatalf("top: %+v", edges.Edges)
	}
	t.Logf("meshctl top: %s → %s::%s %.1f/s first", edges.Edges[0].Caller, edges.Edges[0].Service, edges.Edges[0].Method, edges.Edges[0].PerSecond)

	// tap: failing calls as they happen, with their explanation.
	cmd := exec.Command(filepath.Join(binDir, "meshctl"), "tap", "--via", a.addr, "--failed", "--count", "3", "--for", "20s", "-o", "json")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("meshctl tap: %v: %s", err, stderr.String())
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	n := 0
	for sc.Scan() {
		var e relay.Explanation
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("tap line %q: %v", sc.Text(), err)
		}
		if e.Service != "orders" || e.Method != "cancel" || e.Outcome != "unexpected" || e.Caller != "web" || len(e.Attempts) == 0 || e.Attempts[0].Why == "" {
			t.Errorf("tap --failed printed %+v", e)
		}
		n++
	}
	if n != 3 {
		t.Errorf("tap --count 3 printed %d calls", n)
	}
}
