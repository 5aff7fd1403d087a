//go:build integration

package integration

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/meshrpc/mesh/client"
	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/conn"
	"github.com/meshrpc/mesh/internal/testconsul"
	"github.com/meshrpc/mesh/internal/testkit"
	"github.com/meshrpc/mesh/internal/trust"
)

// managementToken is the test agents' bootstrap token (a UUID, as Consul
// wants).
const managementToken = "6a1c3b2e-8f4d-4c1a-9e7b-2d5f0a9c8b71"

// aclAgent runs a dev agent with ACLs on and deny by default, as a
// production mesh runs; its client is the management token's.
func aclAgent(t *testing.T) (*testconsul.Agent, *api.Client) {
	t.Helper()
	agent := testconsul.Start(t, "-hcl", `acl { enabled = true  default_policy = "deny"  enable_token_persistence = true
		tokens { initial_management = "`+managementToken+`"  agent = "`+managementToken+`" } }`)
	cfg := api.DefaultConfig()
	cfg.Address, cfg.Token = agent.HTTPAddr, managementToken
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 10*time.Second, "acl system up", func() bool {
		_, _, err := c.ACL().TokenReadSelf(nil)
		return err == nil
	})
	return agent, c
}

// token makes a token with the given rules and returns its secret.
func token(t *testing.T, c *api.Client, name, rules string) string {
	t.Helper()
	p, _, err := c.ACL().PolicyCreate(&api.ACLPolicy{Name: name, Rules: rules}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := c.ACL().TokenCreate(&api.ACLToken{Policies: []*api.ACLTokenPolicyLink{{ID: p.ID}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return tok.SecretID
}

// meshdPolicy is what a meshd's own token needs (deploy/README.md): read
// the catalog and intentions, its policies in KV, and its own leaf.
const meshdPolicy = `service_prefix "" { policy = "read" intentions = "read" }
node_prefix "" { policy = "read" }
key_prefix "mesh/" { policy = "read" }
service "meshd" { policy = "write" }`

func serviceWrite(name string) string {
	return `service "` + name + `" { policy = "write" }` + "\nservice_prefix \"\" { policy = \"read\" }"
}

// aclHosts starts meshds on the agent with a meshd token, taking advertise
// proof from Consul tokens only.
func aclHosts(t *testing.T, agent *testconsul.Agent, c *api.Client, ips ...string) []*host {
	t.Helper()
	tokFile := filepath.Join(t.TempDir(), "meshd.token")
	if err := os.WriteFile(tokFile, []byte(token(t, c, "meshd", meshdPolicy)), 0o600); err != nil {
		t.Fatal(err)
	}
	var hosts []*host
	for _, ip := range ips {
		hosts = append(hosts, startHost(t, ip, agent.HTTPAddr, "--consul-token-file", tokFile, "--advertise-same-user", "off"))
	}
	return hosts
}

func intention(t *testing.T, c *api.Client, source, dest, action string) time.Time {
	t.Helper()
	_, err := c.Connect().IntentionUpsert(&api.Intention{SourceName: source, DestinationName: dest, Action: api.IntentionAction(action)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return time.Now()
}

func server(t *testing.T, addr, service, tok, marker string) (*client.Server, error) {
	s := client.NewServer(client.Options{ServiceName: service, Token: tok, Logger: testkit.Quiet})
	s.Register(service, "echo", client.HandlerFunc(func(ctx context.Context, call *client.Call) (*client.Response, error) {
		return &client.Response{Body: []byte(marker)}, nil
	}))
	err := s.Advertise(context.Background(), addr)
	t.Cleanup(func() { s.Shutdown(context.Background()) })
	return s, err
}

// The impostor: a second program that advertises echo without echo's token
// (none, or another service's) is refused with the reason and gets no
// call; with echo's token it joins and gets its share.
func TestImpostorIsRefusedByConsul(t *testing.T) {
	agent, mgmt := aclAgent(t)
	hosts := aclHosts(t, agent, mgmt, "127.0.0.1", "127.0.0.2")
	a, b := hosts[0], hosts[1]
	echoTok := token(t, mgmt, "echo", serviceWrite("echo"))
	webTok := token(t, mgmt, "web", serviceWrite("web"))
	intention(t, mgmt, "*", "echo", "allow") // any proven service may call echo; deny by default otherwise

	if _, err := server(t, b.addr, "echo", echoTok, "real"); err != nil {
		t.Fatalf("echo with its token: %v", err)
	}
	for _, tc := range []struct{ name, tok, why string }{
		{"no token", "", "advertise refused"},
		{"web's token", webTok, `consul says the token may not register "echo"`},
	} {
		if _, err := server(t, a.addr, "echo", tc.tok, "impostor"); err == nil || !strings.Contains(err.Error(), tc.why) {
			t.Fatalf("impostor with %s: %v, want %q", tc.name, err, tc.why)
		}
	}
	if got := testkit.Metric(t, a.admin, `mesh_proof_refused_total{call="advertise"}`); got != "2" {
		t.Fatalf("refusals counted: %s", got)
	}
	caller, err := client.Dial(context.Background(), a.addr, client.Options{ServiceName: "web", Token: webTok, Logger: testkit.Quiet})
	if err != nil {
		t.Fatal(err) // web proves its name with its token: * covers proven callers only
	}
	defer caller.Close()
	count := func(n int) map[string]int {
		seen := map[string]int{}
		for range n {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			res, err := caller.Call(ctx, "echo", "echo", nil, nil)
			cancel()
			if err != nil {
				t.Fatalf("call to echo: %v", err)
			}
			seen[string(res.Body)]++
		}
		return seen
	}
	testkit.WaitFor(t, 10*time.Second, "echo visible on a", func() bool { return seesServices(t, a, "echo") })
	if seen := count(200); seen["real"] != 200 {
		t.Fatalf("200 calls answered %v, want all by the real echo", seen)
	}

	if _, err := server(t, a.addr, "echo", echoTok, "second"); err != nil {
		t.Fatalf("a second echo with echo's token: %v", err)
	}
	var seen map[string]int
	testkit.WaitFor(t, 10*time.Second, "the second instance gets calls", func() bool {
		seen = count(50)
		return seen["second"] > 0 && seen["real"] > 0
	})
	t.Logf("impostors refused (no token, another's token); with echo's token the second instance shares: %v", seen)
}

// Intentions in Consul, enforced per call: web may not call payments until
// an intention allows it; a deny is in force within a second, with the
// rule named; an allow again within a second. The caller is web by its
// proof (its token), not by its caller name.
func TestIntentionsFromConsul(t *testing.T) {
	agent, mgmt := aclAgent(t)
	hosts := aclHosts(t, agent, mgmt, "127.0.0.1", "127.0.0.2")
	a, b := hosts[0], hosts[1]
	if _, err := server(t, b.addr, "payments", token(t, mgmt, "payments", serviceWrite("payments")), "paid"); err != nil {
		t.Fatal(err)
	}
	web, err := client.Dial(context.Background(), a.addr, client.Options{ServiceName: "web", Token: token(t, mgmt, "web", serviceWrite("web")), Logger: testkit.Quiet})
	if err != nil {
		t.Fatalf("web proving its name with its token: %v", err)
	}
	defer web.Close()
	if web.Identity() != "web" {
		t.Fatalf("identity %q", web.Identity())
	}
	if _, err := client.Dial(context.Background(), a.addr, client.Options{ServiceName: "payments", Token: "00000000-0000-0000-0000-000000000001", Logger: testkit.Quiet}); err == nil {
		t.Fatal("a caller with a bogus token took the name payments")
	}
	testkit.WaitFor(t, 10*time.Second, "payments visible on a", func() bool { return seesServices(t, a, "payments") })
	call := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := web.Call(ctx, "payments", "echo", nil, nil)
		return err
	}
	denied := func(rule string) bool {
		var ce *client.Error
		err := call()
		return errors.As(err, &ce) && ce.Code == frame.ErrCodeBadRequest && strings.Contains(ce.Message, rule)
	}
	if !denied("default deny") {
		t.Fatalf("with no intention and ACLs default deny: %v", call())
	}
	for _, step := range []struct {
		action string
		ok     func() bool
	}{
		{"allow", func() bool { return call() == nil }},
		{"deny", func() bool { return denied("intention web => payments (deny)") }},
		{"allow", func() bool { return call() == nil }},
	} {
		at := intention(t, mgmt, "web", "payments", step.action)
		took := testkit.WaitFor(t, time.Second, "intention "+step.action+" in force", step.ok)
		t.Logf("intention web => payments %s in force after %v", step.action, took.Round(time.Millisecond))
		_ = at
	}
	// Each meshd follows the intentions itself, so the first hop or the
	// destination (whichever heard of the deny first) refused the calls.
	if series := `mesh_stage_refusals_total{service="payments",stage="authorize"}`; !strings.Contains(metricsOfAddr(t, a.admin), series) && !strings.Contains(metricsOfAddr(t, b.admin), series) {
		t.Fatal("no meshd counted a denial")
	}
}

// Consul's CA rotates (a new root, new leaves) while calls flow between two
// meshds: no call fails, both meshds take the new identity, and a meshd that
// starts after the rotation calls through.
func TestConsulCARotationUnderLoad(t *testing.T) {
	agent := testconsul.Start(t)
	capi := consulAPI(t, agent.HTTPAddr)
	a := startHost(t, "127.0.0.1", agent.HTTPAddr)
	b := startHost(t, "127.0.0.2", agent.HTTPAddr)
	start(t, "echo", "--via", b.addr)
	testkit.WaitFor(t, 10*time.Second, "echo visible", func() bool { return seesServices(t, a, "echo") })
	rotations := func(h *host) int64 { return status(t, h).Trust.Identity.Rotations }

	var calls, failed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			c := dial(t, a.addr)
			for {
				select {
				case <-stop:
					return
				default:
				}
				calls.Add(1)
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_, err := c.Call(ctx, "echo", "echo", nil, []byte("r"))
				cancel()
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				}
			}
		})
	}
	time.Sleep(time.Second)
	before := calls.Load()
	// A new key type makes Consul generate a new root and sign new leaves.
	if _, err := capi.Connect().CASetConfig(&api.CAConfig{Provider: "consul", Config: map[string]any{"PrivateKeyType": "ec", "PrivateKeyBits": 384}}, nil); err != nil {
		t.Fatal(err)
	}
	for _, h := range []*host{a, b} {
		testkit.WaitFor(t, 20*time.Second, "meshd "+h.addr+" rotated", func() bool { return rotations(h) >= 1 })
	}
	time.Sleep(time.Second)
	c := startHost(t, "127.0.0.3", agent.HTTPAddr)
	testkit.WaitFor(t, 10*time.Second, "echo visible on c", func() bool { return seesServices(t, c, "echo") })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := dial(t, c.addr).Call(ctx, "echo", "echo", nil, []byte("new")); err != nil {
		t.Fatalf("a meshd started after the rotation: %v", err)
	}
	close(stop)
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d of %d calls failed across the CA rotation (first: %v)", failed.Load(), calls.Load(), firstErr.Load())
	}
	t.Logf("consul CA rotated under load: %d calls (%d after the rotation began), 0 failed; identity now %s",
		calls.Load(), calls.Load()-before, status(t, a).Trust.Identity.ID)
}

// A real meshd's host listener, with its identity from the agent's CA, lets
// in a client with a meshd leaf of that CA and no one else: not plaintext
// TChannel, not an app's leaf of the same CA, not a meshd certificate of
// another CA.
func TestHostListenerAdmitsOnlyMeshds(t *testing.T) {
	agent := testconsul.Start(t)
	capi := consulAPI(t, agent.HTTPAddr)
	h := startHost(t, "127.0.0.1", agent.HTTPAddr)
	roots, _, err := capi.Agent().ConnectCARoots(nil)
	if err != nil {
		t.Fatal(err)
	}
	var rootsPEM []byte
	for _, r := range roots.Roots {
		rootsPEM = append(rootsPEM, r.RootCertPEM...)
	}
	leafConfig := func(service string) *tls.Config {
		leaf, _, err := capi.Agent().ConnectCALeaf(service, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, err := trust.NewBundle([]byte(leaf.CertPEM), []byte(leaf.PrivateKeyPEM), rootsPEM)
		if err != nil {
			t.Fatal(err)
		}
		return trust.NewStore(b).ClientConfig()
	}
	other := testkit.NewCA(t, roots.TrustDomain) // same trust domain name, another key
	cert, key := other.Issue(t, "meshd")
	ob, err := trust.NewBundle(cert, key, other.PEM)
	if err != nil {
		t.Fatal(err)
	}
	connect := func(cfg *tls.Config) error {
		if cfg == nil {
			_, err := conn.Dial(context.Background(), h.peer, conn.Options{Logger: testkit.Quiet, HandshakeTimeout: 5 * time.Second})
			return err
		}
		nc, err := tls.Dial("tcp", h.peer, cfg)
		if err != nil {
			return err
		}
		c, err := conn.Client(nc, conn.Options{Logger: testkit.Quiet, HandshakeTimeout: 5 * time.Second})
		if err == nil {
			c.Close()
		}
		return err
	}
	testkit.WaitFor(t, 10*time.Second, "meshd's identity", func() bool { return status(t, h).Trust.Identity.Ready })
	for name, cfg := range map[string]*tls.Config{
		"plaintext TChannel":           nil,
		"an app's leaf of the same CA": leafConfig("web"),
		"a meshd cert of another CA":   trust.NewStore(ob).ClientConfig(),
	} {
		if err := connect(cfg); err == nil {
			t.Errorf("%s: let in", name)
		}
	}
	if err := connect(leafConfig("meshd")); err != nil {
		t.Fatalf("a meshd leaf of the agent's CA refused: %v", err)
	}
	testkit.WaitFor(t, 5*time.Second, "3 refusals counted", func() bool {
		return testkit.Metric(t, h.admin, `mesh_connections_closed_total{reason="tls_refused"}`) == "3"
	})
}

// The impostor of the issue, as a real program of another Unix user: an
// echo run as nobody advertises echo to a meshd whose rule is "meshd's own
// user" (the quick start's), over the loopback and over the Unix socket, and
// is refused both ways, naming its uid; every call goes to the real echo.
func TestAnotherUsersImpostorIsRefused(t *testing.T) {
	if os.Getuid() != 0 {
		t.Fatal("this test runs a program as another user, which needs root (CI runs as root)")
	}
	dir, err := os.MkdirTemp("", "mesh-sock") // t.TempDir's parent is closed to other users
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	sock := filepath.Join(dir, "meshd.sock")
	h := startHost(t, "127.0.0.1", "off", "--listen-unix", sock)
	real := start(t, "echo", "--via", h.addr)
	imp1 := startAs(t, 65534, "echo", "--via", h.addr)
	imp2 := startAs(t, 65534, "echo", "--via", "unix:"+sock)
	testkit.WaitFor(t, 10*time.Second, "the real echo advertised", func() bool { return seesServices(t, h, "echo") })
	for _, p := range []*proc{imp1, imp2} {
		testkit.WaitFor(t, 5*time.Second, "the impostor told why", func() bool {
			b, _ := os.ReadFile(p.log)
			return strings.Contains(string(b), `advertise refused: uid 65534 may not advertise \"echo\"`)
		})
	}
	c := dial(t, h.addr)
	pid := fmt.Sprint(real.cmd.Process.Pid)
	for i := range 100 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		res, err := c.Call(ctx, "echo", "whoami", nil, nil)
		cancel()
		if err != nil || !strings.HasSuffix(string(res.Body), " pid "+pid) {
			t.Fatalf("call %d answered %q (%v), want the real echo, pid %s", i, res.Body, err, pid)
		}
	}
	t.Logf("an echo of uid 65534 refused over TCP and the Unix socket; 100 of 100 calls answered by the real one")
}

// With ACLs on and deny by default, "* => echo allow" lets proven callers in
// and not anonymous ones (they follow Consul's default, deny); meshctl with
// a token in CONSUL_HTTP_TOKEN and --as web calls as web, and --explain
// says so.
func TestMeshctlCallsAsItsProvenIdentity(t *testing.T) {
	agent, c := aclAgent(t)
	h := aclHosts(t, agent, c, "127.0.0.1")[0]
	if _, err := server(t, h.addr, "echo", token(t, c, "echo", serviceWrite("echo")), "echo says hi"); err != nil {
		t.Fatal(err)
	}
	webToken := token(t, c, "web", serviceWrite("web"))
	intention(t, c, "*", "echo", "allow")
	testkit.WaitFor(t, 5*time.Second, "a proven caller allowed", func() bool {
		_, _, code := meshctlEnv(t, []string{"CONSUL_HTTP_TOKEN=" + webToken}, "call", "echo", "echo", "x", "--raw", "--as", "web", "--via", h.addr)
		return code == 0
	})
	if _, errOut, code := meshctlEnv(t, nil, "call", "echo", "echo", "x", "--raw", "--via", h.addr); code == 0 || !strings.Contains(errOut, "denied by") {
		t.Fatalf("anonymous meshctl under * => echo with ACL default deny: exit %d, %q", code, errOut)
	}
	out, errOut, code := meshctlEnv(t, []string{"CONSUL_HTTP_TOKEN=" + webToken}, "call", "echo", "echo", "x", "--raw", "--as", "web", "--explain", "--via", h.addr)
	if code != 0 || strings.TrimSpace(out) != "echo says hi" || !strings.Contains(errOut, `meshctl called as "web"`) {
		t.Fatalf("meshctl --as web with web's token: exit %d, %q %q", code, out, errOut)
	}
	if _, errOut, code := meshctlEnv(t, []string{"CONSUL_HTTP_TOKEN=" + webToken}, "call", "echo", "echo", "x", "--raw", "--as", "payments", "--via", h.addr); code == 0 {
		t.Fatalf("meshctl --as payments with web's token was taken for payments: %q", errOut)
	}
}

// An L7 intention in a real Consul (ACLs, default deny): with KV's
// service-defaults protocol http, web may call KV::get and not KV::put, in
// force within a second of the write; the denial names the permission in
// meshctl's error and --explain, /calls and the metrics.
func TestL7IntentionsFromConsul(t *testing.T) {
	agent, c := aclAgent(t)
	h := aclHosts(t, agent, c, "127.0.0.1")[0]
	kv := client.NewServer(client.Options{ServiceName: "KV", Token: token(t, c, "KV", serviceWrite("KV")), Logger: testkit.Quiet})
	for _, m := range []string{"KV::get", "KV::put"} {
		kv.Register("KV", m, client.HandlerFunc(func(ctx context.Context, _ *client.Call) (*client.Response, error) {
			return &client.Response{Body: []byte(m + " done")}, nil
		}))
	}
	if err := kv.Advertise(context.Background(), h.addr); err != nil {
		t.Fatal(err)
	}
	defer kv.Shutdown(context.Background())
	webEnv := []string{"CONSUL_HTTP_TOKEN=" + token(t, c, "web", serviceWrite("web"))}
	call := func(method string, extra ...string) (string, string, int) {
		return meshctlEnv(t, webEnv, append([]string{"call", "KV", method, "x", "--raw", "--as", "web", "--via", h.addr}, extra...)...)
	}
	if _, errOut, code := call("KV::get"); code == 0 || !strings.Contains(errOut, "default deny") {
		t.Fatalf("before any intention, with ACLs default deny: exit %d %q", code, errOut)
	}
	// Consul stores permissions only for a destination whose protocol is HTTP-based.
	if _, _, err := c.ConfigEntries().Set(&api.ServiceConfigEntry{Kind: api.ServiceDefaults, Name: "KV", Protocol: "http"}, nil); err != nil {
		t.Fatal(err)
	}
	written := time.Now()
	if _, _, err := c.ConfigEntries().Set(&api.ServiceIntentionsConfigEntry{Kind: api.ServiceIntentions, Name: "KV",
		Sources: []*api.SourceIntention{{Name: "web", Permissions: []*api.IntentionPermission{
			{Action: api.IntentionActionAllow, HTTP: &api.IntentionHTTPPermission{PathExact: "/KV::get"}},
			{Action: api.IntentionActionDeny, HTTP: &api.IntentionHTTPPermission{PathPrefix: "/KV::"}},
		}}}}, nil); err != nil {
		t.Fatal(err)
	}
	took := testkit.WaitFor(t, time.Second, "web => KV::get allowed", func() bool {
		out, _, code := call("KV::get")
		return code == 0 && strings.TrimSpace(out) == "KV::get done"
	})
	t.Logf("the L7 intention in force %v after the write (%v after it was sent)", took.Round(time.Millisecond), time.Since(written).Round(time.Millisecond))
	const rule = "intention web => KV, permission 2 (deny path_prefix /KV::)"
	_, errOut, code := call("KV::put", "--explain")
	if code == 0 || !strings.Contains(errOut, rule) || !strings.Contains(errOut, `meshctl called as "web"`) {
		t.Fatalf("web => KV::put: exit %d, %q: want the denial naming %q", code, errOut, rule)
	}
	res, err := http.Get("http://" + h.admin + "/calls?service=KV&limit=1")
	if err != nil {
		t.Fatal(err)
	}
	var calls []struct {
		Stage, Refused, Method, Caller string
	}
	json.NewDecoder(res.Body).Decode(&calls)
	res.Body.Close()
	if len(calls) != 1 || calls[0].Stage != "authorize" || !strings.Contains(calls[0].Refused, rule) || calls[0].Method != "KV::put" || calls[0].Caller != "web" {
		t.Fatalf("/calls: %+v", calls)
	}
	if got := testkit.Metric(t, h.admin, `mesh_stage_refusals_total{service="KV",stage="authorize"}`); got == "0" {
		t.Fatal("no refusal by authorize counted")
	}
}
