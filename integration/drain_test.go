//go:build integration

package integration

import (
	"strings"
	"testing"
	"time"

	"github.com/meshrpc/mesh/internal/testkit"
)

// SIGTERM drains meshd: a call in flight finishes, then meshd exits 0.
func TestMeshdSIGTERMDrains(t *testing.T) {
	h := startHost(t, "127.0.0.1", "off")
	start(t, "echo", "--via", h.addr)
	testkit.WaitFor(t, 10*time.Second, "echo advertised", func() bool { return seesServices(t, h, "echo") })
	type result struct {
		out, errOut string
		code        int
	}
	done := make(chan result, 1)
	go func() {
		out, errOut, code := meshctl(t, "call", "echo", "sleep", "1s", "--raw", "--via", h.addr)
		done <- result{out, errOut, code}
	}()
	time.Sleep(300 * time.Millisecond) // the call is in flight
	h.meshd.stop(t)                    // SIGTERM; fails unless meshd exits 0
	r := <-done
	if r.code != 0 || strings.TrimSpace(r.out) != "slept 1s" {
		t.Fatalf("call in flight during drain: exit %d, %q %q", r.code, r.out, r.errOut)
	}
}
