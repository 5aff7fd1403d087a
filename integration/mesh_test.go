//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/uber/tchannel-go"
	"github.com/uber/tchannel-go/hyperbahn"
	"github.com/uber/tchannel-go/raw"

	"github.com/meshrpc/mesh/internal/testconsul"
	"github.com/meshrpc/mesh/internal/testkit"
)

func consulAPI(t testing.TB, addr string) *api.Client {
	t.Helper()
	cfg := api.DefaultConfig()
	cfg.Address = addr
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func passing(t *testing.T, c *api.Client, service string) []*api.ServiceEntry {
	t.Helper()
	entries, _, err := c.Health().Service(service, "", true, nil)
	if err != nil {
		t.Fatal(err)
	}
	return entries
}

func seesServices(t *testing.T, h *host, want ...string) bool {
	out, _, code := meshctl(t, "services", "--via", h.addr)
	if code != 0 {
		return false
	}
	var got []string
	json.Unmarshal([]byte(out), &got)
	for _, w := range want {
		if !slices.Contains(got, w) {
			return false
		}
	}
	return true
}

type tgoEcho struct{}

func (tgoEcho) Handle(ctx context.Context, args *raw.Args) (*raw.Res, error) {
	return &raw.Res{Arg3: append([]byte("tgo:"), args.Arg3...)}, nil
}
func (tgoEcho) OnError(context.Context, error) {}

// Three hosts (127.0.0.1-3), one Consul: every service is callable from every
// host, by meshctl and by the SDK; Consul holds exactly the advertised
// instances; a tchannel-go program joins through its hyperbahn client; apps
// and meshds that die leave the healthy set.
func TestMeshAcrossThreeHosts(t *testing.T) {
	agent := testconsul.Start(t)
	capi := consulAPI(t, agent.HTTPAddr)
	a := startHost(t, "127.0.0.1", agent.HTTPAddr, "--consul-ttl", "3s")
	b := startHost(t, "127.0.0.2", agent.HTTPAddr, "--consul-ttl", "3s")
	c := startHost(t, "127.0.0.3", agent.HTTPAddr, "--consul-ttl", "3s")
	hosts := []*host{a, b, c}

	echo := start(t, "echo", "--via", b.addr)
	start(t, "kv", "--via", c.addr)
	for _, h := range hosts {
		testkit.WaitFor(t, 10*time.Second, "meshd "+h.addr+" sees echo and kv", func() bool { return seesServices(t, h, "echo", "kv") })
	}

	// Consul holds exactly the advertised instances, at their hosts' meshds,
	// and each meshd as an instance of meshd (how dashboards find them all).
	svcs, _, err := capi.Catalog().Services(nil)
	if err != nil {
		t.Fatal(err)
	}
	delete(svcs, "consul")
	if len(svcs) != 3 || svcs["echo"] == nil || svcs["kv"] == nil || svcs["meshd"] == nil {
		t.Fatalf("consul catalog services = %v, want echo, kv and meshd", svcs)
	}
	if got := passing(t, capi, "meshd"); len(got) != len(hosts) {
		t.Fatalf("%d meshds registered, want %d", len(got), len(hosts))
	}
	for svc, h := range map[string]*host{"echo": b, "kv": c} {
		e := passing(t, capi, svc)
		if len(e) != 1 || addrOf(e[0]) != h.peer {
			t.Fatalf("consul has %d passing %s instances (first at %s), want 1 at %s", len(e), svc, addrOf(e[0]), h.peer)
		}
	}

	// Every service from every host, with meshctl and the SDK.
	for _, h := range hosts {
		out, errOut, code := meshctl(t, "call", "echo", "echo", "hello from "+h.ip, "--via", h.addr)
		if code != 0 || strings.TrimSpace(out) != "hello from "+h.ip {
			t.Fatalf("meshctl via %s: %q %q exit %d", h.addr, out, errOut, code)
		}
		key := "k-" + h.ip
		if out, errOut, code = meshctl(t, "call", "kv", "put", fmt.Sprintf(`{"key":%q,"value":"v"}`, key), "--via", h.addr); code != 0 {
			t.Fatalf("meshctl kv put via %s: %q %q", h.addr, out, errOut)
		}
		sdk := dial(t, h.addr)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		res, err := sdk.Call(ctx, "echo", "echo", nil, []byte("sdk"))
		if err != nil || string(res.Body) != "sdk" {
			t.Fatalf("SDK echo via %s: %v", h.addr, err)
		}
		var got struct{ Key, Value string }
		if _, err := sdk.CallJSON(ctx, "kv", "get", nil, map[string]string{"key": key}, &got); err != nil || got.Value != "v" {
			t.Fatalf("SDK kv get via %s: %+v %v", h.addr, got, err)
		}
		cancel()
	}
	// A failing call shows its code and exits non-zero.
	if _, errOut, code := meshctl(t, "call", "nosuch", "m", "--via", a.addr); code == 0 || !strings.Contains(errOut, "declined") {
		t.Fatalf("unknown service: exit %d, %q", code, errOut)
	}

	// A tchannel-go program advertises to meshd A with its hyperbahn client...
	ch, err := tchannel.NewChannel("tgo-svc", &tchannel.ChannelOptions{Logger: tchannel.NullLogger})
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	ch.Register(raw.Wrap(tgoEcho{}), "echo")
	if err := ch.ListenAndServe("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	hc, err := hyperbahn.NewClient(ch, hyperbahn.Configuration{InitialNodes: []string{a.addr}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Close()
	if err := hc.Advertise(); err != nil {
		t.Fatalf("hyperbahn advertise to meshd: %v", err)
	}
	testkit.WaitFor(t, 5*time.Second, "meshd C sees tgo-svc", func() bool { return seesServices(t, c, "tgo-svc") })
	// ...and is called from host C by meshctl and by a tchannel-go client.
	if out, errOut, code := meshctl(t, "call", "tgo-svc", "echo", "x", "--raw", "--via", c.addr); code != 0 || strings.TrimSpace(out) != "tgo:x" {
		t.Fatalf("meshctl to tchannel-go service: %q %q", out, errOut)
	}
	caller, _ := tchannel.NewChannel("tgo-caller", &tchannel.ChannelOptions{Logger: tchannel.NullLogger})
	defer caller.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_, arg3, _, err := raw.Call(ctx, caller, c.addr, "tgo-svc", "echo", nil, []byte("y"))
	cancel()
	if err != nil || string(arg3) != "tgo:y" {
		t.Fatalf("tchannel-go client through meshd C: %q %v", arg3, err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	_, arg3, _, err = raw.Call(ctx, caller, c.addr, "echo", "echo", nil, []byte("z"))
	cancel()
	if err != nil || string(arg3) != "z" {
		t.Fatalf("tchannel-go client to a mesh service: %q %v", arg3, err)
	}

	// An app that dies leaves Consul at once (its connection closes).
	echo.kill()
	d := testkit.WaitFor(t, time.Second, "dead app leaves consul", func() bool { return len(passing(t, capi, "echo")) == 0 })
	t.Logf("killed app left the healthy set after %v", d)

	// A meshd killed with SIGKILL stops renewing: its instances expire with the TTL.
	c.meshd.kill()
	d = testkit.WaitFor(t, 3*time.Second+time.Second, "killed meshd's instances leave the healthy set", func() bool { return len(passing(t, capi, "kv")) == 0 })
	t.Logf("SIGKILLed meshd's instance left the healthy set after %v (TTL 3s)", d)
}

func addrOf(e *api.ServiceEntry) string {
	if e == nil {
		return ""
	}
	return e.Service.Address + ":" + strconv.Itoa(e.Service.Port)
}

// Consul stopped for 30s under steady calls: no call fails, and meshd's
// registrations come back when a fresh agent does.
func TestConsulOutageUnderSteadyCalls(t *testing.T) {
	agent := testconsul.Start(t)
	capi := consulAPI(t, agent.HTTPAddr)
	a := startHost(t, "127.0.0.1", agent.HTTPAddr, "--consul-ttl", "2s")
	b := startHost(t, "127.0.0.2", agent.HTTPAddr, "--consul-ttl", "2s")
	start(t, "echo", "--via", b.addr)
	testkit.WaitFor(t, 10*time.Second, "meshd A sees echo", func() bool { return seesServices(t, a, "echo") })

	sdk := dial(t, a.addr)
	stop := make(chan struct{})
	l := runLoad(sdk, "echo", "echo", 200, stop)
	time.Sleep(2 * time.Second)
	agent.Kill()
	t.Log("consul stopped")
	time.Sleep(30 * time.Second)
	agent.Restart()
	t.Log("consul restarted (empty)")
	d := testkit.WaitFor(t, 15*time.Second, "echo registered again", func() bool { return len(passing(t, capi, "echo")) == 1 })
	t.Logf("registration restored %v after consul came back", d)
	time.Sleep(3 * time.Second)
	l.stop(stop)
	t.Logf("calls during the outage test: %d ok, %d failed", l.ok(), l.failed())
	if l.failed() > 0 {
		t.Fatalf("%d calls failed (first: %v)", l.failed(), l.firstErr())
	}
	if l.ok() < 1000 {
		t.Fatalf("only %d calls made", l.ok())
	}
	if _, _, code := meshctl(t, "call", "echo", "echo", "after", "--via", a.addr); code != 0 {
		t.Fatal("call after recovery failed")
	}
}
