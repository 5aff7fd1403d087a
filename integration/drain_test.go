//go:build integration

package integration

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/meshrpc/mesh/internal/testconsul"
	"github.com/meshrpc/mesh/internal/testkit"
)

// SIGTERM drains meshd: the calls in flight finish, then meshd exits 0.
func TestMeshdSIGTERMDrains(t *testing.T) {
	h := startHost(t, "127.0.0.1", "off", "--drain-timeout", "5s")
	start(t, "echo", "--via", h.addr)
	testkit.WaitFor(t, 10*time.Second, "echo advertised", func() bool { return seesServices(t, h, "echo") })
	took, errs := drainWithCalls(t, h, 3, "1s")
	for i, err := range errs {
		if err != nil {
			t.Errorf("call %d in flight during the drain failed: %v", i, err)
		}
	}
	t.Logf("meshd exited %v after SIGTERM, with 3 calls of 1s in flight", took.Round(time.Millisecond))
}

// A meshd that follows Consul (service health, its CA for the host
// boundary, intentions, policies in KV: each a blocking query of minutes)
// exits within its drain time of SIGTERM, with calls in flight: every
// follower ends mid-query. It once waited out a 5-minute query on the CA.
func TestMeshdWithConsulExitsWithinDrainTime(t *testing.T) {
	agent := testconsul.Start(t)
	const drain = 3 * time.Second
	h := startHost(t, "127.0.0.1", agent.HTTPAddr, "--drain-timeout", drain.String())
	if st := status(t, h); st.Trust.Identity == nil || st.Trust.Identity.Source != "consul" {
		t.Fatalf("meshd does not take its identity from Consul's CA: %+v", st.Trust)
	}
	start(t, "echo", "--via", h.addr)
	testkit.WaitFor(t, 10*time.Second, "echo advertised", func() bool { return seesServices(t, h, "echo") })
	time.Sleep(time.Second) // every follower is inside a blocking query by now
	took, errs := drainWithCalls(t, h, 5, "1s")
	for i, err := range errs {
		if err != nil {
			t.Errorf("call %d in flight during the drain failed: %v", i, err)
		}
	}
	if took > drain+time.Second {
		t.Fatalf("meshd took %v to exit after SIGTERM; its drain time is %v", took, drain)
	}
	t.Logf("meshd with Consul's CA, intentions and KV policies followed exited %v after SIGTERM (drain time %v)", took.Round(time.Millisecond), drain)
}

// drainWithCalls makes n calls of echo's sleep (for d) through h, waits
// until meshd holds them all in flight, sends it SIGTERM and returns how
// long it took to exit 0 (at most 15s) and each call's error.
func drainWithCalls(t *testing.T, h *host, n int, d string) (time.Duration, []error) {
	t.Helper()
	sdk := dial(t, h.addr)
	errs := make(chan error, n)
	for range n {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			res, err := sdk.Call(ctx, "echo", "sleep", nil, []byte(d))
			if err == nil && string(res.Body) != "slept "+d {
				err = fmt.Errorf("answered %q", res.Body)
			}
			errs <- err
		}()
	}
	testkit.WaitFor(t, 5*time.Second, fmt.Sprintf("%d calls in flight", n), func() bool { return status(t, h).InFlight >= n })
	start := time.Now()
	h.meshd.cmd.Process.Signal(syscall.SIGTERM)
	exited := make(chan error, 1)
	go func() { exited <- h.meshd.cmd.Wait() }()
	var took time.Duration
	select {
	case err := <-exited:
		took = time.Since(start)
		if err != nil {
			t.Fatalf("meshd exited with %v after SIGTERM", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("meshd did not exit within 15s of SIGTERM")
	}
	out := make([]error, n)
	for i := range out {
		out[i] = <-errs
	}
	return took, out
}
