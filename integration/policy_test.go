//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/meshrpc/mesh/client"
	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/dashboard"
	"github.com/meshrpc/mesh/internal/testconsul"
	"github.com/meshrpc/mesh/internal/testkit"
)

// A policy written to Consul KV takes effect on every meshd within a second;
// an invalid one is refused and logged, and the last good one stays.
func TestPolicyFromConsulKV(t *testing.T) {
	agent := testconsul.Start(t)
	capi := consulAPI(t, agent.HTTPAddr)
	hosts := []*host{
		startHost(t, "127.0.0.1", agent.HTTPAddr),
		startHost(t, "127.0.0.2", agent.HTTPAddr),
		startHost(t, "127.0.0.3", agent.HTTPAddr),
	}
	start(t, "echo", "--via", hosts[1].addr)
	for _, h := range hosts {
		testkit.WaitFor(t, 10*time.Second, "echo visible", func() bool { return seesServices(t, h, "echo") })
	}
	sdks := make([]*client.Client, len(hosts))
	for i, h := range hosts {
		sdks[i] = dial(t, h.addr) // caller name "integration"
	}
	blocked := func(c *client.Client) bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := c.Call(ctx, "echo", "echo", nil, []byte("x"))
		var e *client.Error
		return asError(err, &e) && e.Code == frame.ErrCodeDeclined && strings.Contains(e.Message, "kill switch")
	}
	for _, c := range sdks {
		if blocked(c) {
			t.Fatal("blocked before any policy")
		}
	}
	put := func(v string) time.Time {
		if _, err := capi.KV().Put(&api.KVPair{Key: "mesh/policies/echo", Value: []byte(v)}, nil); err != nil {
			t.Fatal(err)
		}
		return time.Now()
	}
	at := put(`{"blocked": ["integration"]}`)
	for i, c := range sdks {
		testkit.WaitFor(t, time.Second, "kill switch on meshd "+hosts[i].addr, func() bool { return blocked(c) })
		t.Logf("kill switch in force on meshd %d after %v", i+1, time.Since(at).Round(time.Millisecond))
	}
	put(`{"blocked": ["integration"], "max_attempts": "three"}`) // invalid
	testkit.WaitFor(t, 2*time.Second, "invalid policy logged", func() bool {
		b, _ := os.ReadFile(hosts[0].meshd.log)
		return strings.Contains(string(b), "policy in consul refused")
	})
	for i, c := range sdks {
		if !blocked(c) {
			t.Fatalf("meshd %d dropped the last good policy after an invalid one", i+1)
		}
	}
	// The dashboard says which policy is in force, where it is from, and the
	// reload that was refused.
	var view dashboard.ServiceView
	res, err := http.Get("http://" + hosts[0].admin + "/api/v1/services/echo?scope=local")
	if err != nil {
		t.Fatal(err)
	}
	json.NewDecoder(res.Body).Decode(&view)
	res.Body.Close()
	det := view.Details
	if len(det.Policy.Blocked) != 1 || det.PolicySource != "consul kv mesh/policies/echo (its last good value)" ||
		len(det.Rejections) != 1 || !strings.Contains(det.Rejections[0].Error, "max_attempts") {
		t.Fatalf("the dashboard's view of echo's policy: %+v", det)
	}
	at = time.Now()
	if _, err := capi.KV().Delete("mesh/policies/echo", nil); err != nil {
		t.Fatal(err)
	}
	for i, c := range sdks {
		testkit.WaitFor(t, time.Second, "kill switch lifted on meshd "+hosts[i].addr, func() bool { return !blocked(c) })
	}
	t.Logf("kill switch lifted everywhere after %v", time.Since(at).Round(time.Millisecond))
}
