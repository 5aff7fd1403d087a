package meshd

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/meshrpc/mesh/client"
	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/relay"
	"github.com/meshrpc/mesh/internal/testkit"
)

// Intentions with permissions in meshd's YAML (the embedded registry): web
// may call KV::get and not KV::put; the denial names the permission in the
// error, the explanation and the metrics.
func TestMethodPermissionsFromYAML(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	admin := l.Addr().String()
	l.Close()
	addr := runFromYAML(t, `
default_intention: deny
intentions:
  - source: web
    destination: KV
    permissions:
      - {action: deny, http: {path_exact: "/KV::put"}}
      - {action: allow, http: {path_prefix: "/KV::get"}}
  - {source: kv-owner, destination: KV, action: allow}
`, "--admin", admin)
	serveMethods(t, addr, "KV", map[string]string{"KV::get": "KV::get", "KV::put": "KV::put", "KV::del": "KV::del"})
	web := dialAs(t, addr, "web")
	if web.Identity() != "web" {
		t.Fatalf("identity %q", web.Identity())
	}
	for range 3 {
		if res, err := web.Call(context.Background(), "KV", "KV::get", nil, nil); err != nil || string(res.Body) != "KV::get" {
			t.Fatalf("web → KV::get: %v", err)
		}
	}
	var ce *client.Error
	_, err = web.Call(context.Background(), "KV", "KV::del", nil, nil)
	if !errors.As(err, &ce) || ce.Code != frame.ErrCodeBadRequest || !strings.Contains(ce.Message, `denied by default deny (no intention matches)`) {
		t.Fatalf("web → KV::del: %v, want a denial by the default (no permission of web => KV matches)", err)
	}
	_, err = web.Call(context.Background(), "KV", "KV::put", nil, nil)
	if !errors.As(err, &ce) || !strings.Contains(ce.Message, `denied by intention web => KV, permission 1 (deny path_exact /KV::put)`) {
		t.Fatalf("web → KV::put: %v, want a denial naming the permission", err)
	}
	// The explanation and the metrics say it too. (The last get's record
	// may be kept after the refusals: its answer reached web first.)
	res, err := http.Get("http://" + admin + "/calls?service=KV&limit=10")
	if err != nil {
		t.Fatal(err)
	}
	var all, calls []relay.Explanation
	json.NewDecoder(res.Body).Decode(&all)
	res.Body.Close()
	for _, c := range all {
		if c.Method == "KV::put" {
			calls = append(calls, c)
		}
	}
	if len(calls) != 1 || calls[0].Stage != "authorize" || calls[0].Method != "KV::put" || calls[0].Outcome != "refused_authorize" ||
		!strings.Contains(calls[0].Refused, "permission 1 (deny path_exact /KV::put)") {
		t.Fatalf("/calls: %+v", calls)
	}
	if got := testkit.Metric(t, admin, `mesh_calls_total{caller="web",service="KV",method="KV::put",result="refused_authorize"}`); got != "1" {
		t.Fatalf("refusals counted: %s", got)
	}
}

// A permission with a header match reads a JSON call's application headers.
func TestHeaderPermissionsReadJSONHeaders(t *testing.T) {
	addr := runFromYAML(t, `
default_intention: deny
intentions:
  - source: web
    destination: Acct
    permissions:
      - {action: allow, http: {path_prefix: "/Acct::", header: [{name: tenant, prefix: "acme-"}]}}
`)
	serveMethods(t, addr, "Acct", map[string]string{"Acct::balance": `{"balance": 3}`})
	web := dialAs(t, addr, "web")
	var out map[string]int
	if _, err := web.CallJSON(context.Background(), "Acct", "Acct::balance", map[string]string{"tenant": "acme-9"}, map[string]string{}, &out); err != nil || out["balance"] != 3 {
		t.Fatalf("tenant acme-9: %v %v", out, err)
	}
	_, err := web.CallJSON(context.Background(), "Acct", "Acct::balance", map[string]string{"tenant": "other"}, map[string]string{}, &out)
	var ce *client.Error
	if !errors.As(err, &ce) || !strings.Contains(ce.Message, "default deny") {
		t.Fatalf("tenant other: %v, want the default's denial", err)
	}
}

// serveMethods advertises service through the meshd at addr, each method
// answering with its body, until the test ends.
func serveMethods(t *testing.T, addr, service string, bodies map[string]string) {
	t.Helper()
	srv := client.NewServer(client.Options{ServiceName: service, Logger: testkit.Quiet})
	for m, body := range bodies {
		srv.Register(service, m, client.HandlerFunc(func(ctx context.Context, _ *client.Call) (*client.Response, error) {
			return &client.Response{Body: []byte(body)}, nil
		}))
	}
	if err := srv.Advertise(context.Background(), addr); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
}

// dialAs connects an app named name to the meshd at addr, until the test
// ends.
func dialAs(t *testing.T, addr, name string) *client.Client {
	t.Helper()
	c, err := client.Dial(context.Background(), addr, client.Options{ServiceName: name, Logger: testkit.Quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
