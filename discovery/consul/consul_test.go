//go:build integration

package consul_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/meshrpc/mesh/discovery"
	"github.com/meshrpc/mesh/discovery/consul"
	"github.com/meshrpc/mesh/internal/testconsul"
	"github.com/meshrpc/mesh/internal/testkit"
)

func count(reg discovery.Registry, service string) int {
	got, err := reg.Instances(context.Background(), service)
	if err != nil {
		return 0
	}
	return len(got)
}

func TestConsulRegisterWatchDeregister(t *testing.T) {
	agent := testconsul.Start(t)
	ctx := context.Background()
	reg, err := consul.New(ctx, consul.Config{Address: agent.HTTPAddr, TTL: 2 * time.Second, Logger: testkit.Quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	other, err := consul.New(ctx, consul.Config{Address: agent.HTTPAddr, Logger: testkit.Quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()

	if n := count(other, "orders"); n != 0 {
		t.Fatalf("%d instances before registering", n)
	}
	inst := discovery.Instance{Service: "orders", ID: "orders-1", Addr: "127.0.0.2:21300", Meta: map[string]string{"node": "b"}}
	if err := reg.Register(ctx, inst); err != nil {
		t.Fatal(err)
	}
	// The other meshd looked the name up before it had instances: it looks
	// again within a second while asked, then follows it.
	d := testkit.WaitFor(t, 2*time.Second, "registration seen", func() bool { return count(other, "orders") == 1 })
	t.Logf("registration reached the watcher in %v", d)
	got, _ := other.Instances(ctx, "orders")
	if got[0].Addr != inst.Addr || got[0].ID != inst.ID || got[0].Meta["node"] != "b" {
		t.Fatalf("watcher sees %+v", got[0])
	}
	// The TTL check stays passing while renewed.
	time.Sleep(3 * time.Second)
	if count(other, "orders") != 1 {
		t.Fatal("instance fell out of the healthy set while its check was renewed")
	}
	if err := reg.Deregister(ctx, inst); err != nil {
		t.Fatal(err)
	}
	d = testkit.WaitFor(t, time.Second, "deregistration seen", func() bool { return count(other, "orders") == 0 })
	t.Logf("deregistration reached the watcher in %v", d)
}

// A meshd that dies stops renewing: its instances leave the healthy set
// within the TTL.
func TestConsulTTLExpiresDeadMeshd(t *testing.T) {
	agent := testconsul.Start(t)
	ctx := context.Background()
	dying, err := consul.New(ctx, consul.Config{Address: agent.HTTPAddr, TTL: 2 * time.Second, Logger: testkit.Quiet})
	if err != nil {
		t.Fatal(err)
	}
	watcher, err := consul.New(ctx, consul.Config{Address: agent.HTTPAddr, Logger: testkit.Quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer watcher.Close()
	dying.Register(ctx, discovery.Instance{Service: "kv", ID: "kv-1", Addr: "127.0.0.3:21300"})
	testkit.WaitFor(t, time.Second, "registration seen", func() bool { return count(watcher, "kv") == 1 })
	dying.Abandon() // as if killed: no deregistration, no renewal
	d := testkit.WaitFor(t, 4*time.Second, "expiry", func() bool { return count(watcher, "kv") == 0 })
	t.Logf("dead meshd's instance left the healthy set after %v (TTL 2s)", d)
}

// With Consul down, lookups keep answering from the last known instances;
// when a fresh agent comes back, registrations are restored.
func TestConsulDownServesStale(t *testing.T) {
	agent := testconsul.Start(t)
	ctx := context.Background()
	reg, err := consul.New(ctx, consul.Config{Address: agent.HTTPAddr, TTL: time.Second, WaitTime: time.Second, Logger: testkit.Quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	reg.Register(ctx, discovery.Instance{Service: "s", ID: "s-1", Addr: "127.0.0.1:21300"})
	testkit.WaitFor(t, time.Second, "registration seen", func() bool { return count(reg, "s") == 1 })
	agent.Kill()
	time.Sleep(2 * time.Second)
	if count(reg, "s") != 1 {
		t.Fatal("lookup failed while Consul was down; want the stale instances")
	}
	if st := reg.Status(); st.Healthy || !st.Stale {
		t.Fatalf("status while down = %+v", st)
	}
	agent.Restart()
	testkit.WaitFor(t, 10*time.Second, "re-registration after restart", func() bool {
		got, err := reg.Instances(ctx, "s")
		return err == nil && len(got) == 1 && reg.Status().Healthy && !reg.Status().Stale
	})
	if _, err := reg.Instances(ctx, "nosuch"); !errors.Is(err, discovery.ErrNoInstances) {
		t.Fatalf("unknown service: %v", err)
	}
}

// raftIndex is the agent's (a dev server's) last applied raft index: every
// catalog write moves it.
func raftIndex(t *testing.T, addr string) int {
	t.Helper()
	res, err := http.Get("http://" + addr + "/v1/agent/self")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var self struct {
		Stats struct {
			Raft struct {
				AppliedIndex string `json:"applied_index"`
			} `json:"raft"`
		} `json:"Stats"`
	}
	if err := json.NewDecoder(res.Body).Decode(&self); err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(self.Stats.Raft.AppliedIndex)
	if err != nil {
		t.Fatalf("applied_index %q: %v", self.Stats.Raft.AppliedIndex, err)
	}
	return n
}

// Renewing the TTL checks of 1,000 instances, every TTL/3, writes nothing to
// the servers while nothing changed: the raft index stands still. (The TTL is
// the default 10s, so that a loaded machine does not let checks lapse.)
func TestRenewalsWriteNothing(t *testing.T) {
	agent := testconsul.Start(t)
	ctx := context.Background()
	reg, err := consul.New(ctx, consul.Config{Address: agent.HTTPAddr, Logger: testkit.Quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	for i := range 1000 {
		if err := reg.Register(ctx, discovery.Instance{Service: fmt.Sprintf("svc-%03d", i%100), ID: fmt.Sprintf("inst-%04d", i), Addr: "127.0.0.1:21300"}); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(3 * time.Second) // registrations synced to the catalog
	before := raftIndex(t, agent.HTTPAddr)
	time.Sleep(10 * time.Second) // 3 rounds of 1,000 renewals
	moved := raftIndex(t, agent.HTTPAddr) - before
	t.Logf("3,000 renewals of 1,000 instances moved the raft index by %d", moved)
	if moved > 5 {
		t.Fatalf("renewals moved the raft index by %d: they write to the servers", moved)
	}
}
