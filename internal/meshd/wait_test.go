package meshd_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshrpc/mesh/discovery"
	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/testkit"
)

// gatedRegistry is the embedded registry whose first answer about the
// services in gated comes only when the test opens the gate: a Consul that
// is slow to answer about a name, the one fault this test needs and cannot
// get from a real agent on demand.
type gatedRegistry struct {
	*discovery.Local
	mu    sync.Mutex
	gated map[string]chan struct{}
}

func (g *gatedRegistry) gate(service string) func() {
	ch := make(chan struct{})
	g.mu.Lock()
	g.gated[service] = ch
	g.mu.Unlock()
	return func() { close(ch) }
}

func (g *gatedRegistry) Lookup(service string) ([]discovery.Instance, <-chan struct{}, error) {
	g.mu.Lock()
	ch := g.gated[service]
	g.mu.Unlock()
	if ch != nil {
		select {
		case <-ch:
		default:
			return nil, ch, nil
		}
	}
	return g.Local.Lookup(service)
}

// A call whose first lookup must wait is parked off the read loop: the
// other calls on the same connection go on meanwhile; once the registry
// answers, the parked calls (one of them of many frames, whose later frames
// came while it waited) are delivered whole; one whose caller gives up
// ends there, and one that outlives its deadline times out.
func TestAWaitingLookupHoldsNoOtherCall(t *testing.T) {
	reg := &gatedRegistry{Local: discovery.NewLocal(), gated: map[string]chan struct{}{}}
	a := startMeshd(t, "127.0.0.1:0", reg)
	echoServer(t, a.Addr(), "echo")
	echoServer(t, a.Addr(), "late")
	open := reg.gate("late")
	c := dialMeshd(t, a.Addr())

	big := bytes.Repeat([]byte("x"), 200<<10) // several frames
	type result struct {
		body []byte
		err  error
	}
	parked := make(chan result, 2)
	for _, body := range [][]byte{[]byte("small"), big} {
		go func() {
			b, err := callEcho(c, "late", body)
			parked <- result{b, err}
		}()
	}
	cancelled := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		_, err := c.Call(ctx, "late", "echo", nil, []byte("gives up"))
		cancelled <- err
	}()
	timedOut := make(chan error, 1)
	go func() {
		ctx, stop := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer stop()
		_, err := c.Call(ctx, "late", "echo", nil, []byte("too late"))
		timedOut <- err
	}()
	testkit.WaitFor(t, 5*time.Second, "4 calls parked", func() bool { return a.Status(context.Background()).InFlight >= 4 })

	// Meanwhile echo, on the same connection, answers as ever.
	for i := range 200 {
		body, err := callEcho(c, "echo", []byte(fmt.Sprint(i)))
		if err != nil || string(body) != fmt.Sprint("echo:", i) {
			t.Fatalf("echo call %d while late's lookup waits: %q %v", i, body, err)
		}
	}
	cancel()
	if err := <-cancelled; frame.CodeOf(err) != frame.ErrCodeCancelled {
		t.Fatalf("a parked call its caller gave up: %v", err)
	}
	if err := <-timedOut; frame.CodeOf(err) != frame.ErrCodeTimeout {
		t.Fatalf("a parked call past its deadline: %v", err)
	}
	open()
	for range 2 {
		r := <-parked
		if r.err != nil || !bytes.HasPrefix(r.body, []byte("late:")) || len(r.body) != len("late:small") && len(r.body) != len("late:")+len(big) {
			t.Fatalf("a parked call after the lookup: %d bytes, %v", len(r.body), r.err)
		}
	}
	testkit.WaitFor(t, 5*time.Second, "no call left in flight", func() bool { return a.Status(context.Background()).InFlight == 0 })
	if got := testkit.Metric(t, a.AdminAddr(), `mesh_relay_parked_total{stage="discover"}`); got != "4" {
		t.Fatalf("calls parked for a lookup: %s, want 4", got)
	}
}

// A host that accepts TCP and never answers (a tarpit) holds no caller:
// the first call to its instance waits off the read loop for the dial to
// fail, the ones after it skip it at once while it stays down, and echo on
// the same connection is never slowed.
func TestADeadHostHoldsNoOtherCall(t *testing.T) {
	tarpit := testkit.Tarpit(t, "127.0.0.3")
	reg := discovery.NewLocal()
	a := startMeshd(t, "127.0.0.1:0", reg)
	echoServer(t, a.Addr(), "echo")
	reg.Register(context.Background(), discovery.Instance{Service: "slow", ID: "slow@tarpit", Addr: tarpit.String()})
	c := dialMeshd(t, a.Addr())

	first := make(chan error, 1)
	go func() { _, err := callEcho(c, "slow", []byte("x")); first <- err }()
	testkit.WaitFor(t, 5*time.Second, "the first call to slow parked", func() bool { return a.Status(context.Background()).InFlight >= 1 })
	var slowest time.Duration
	for i := range 100 {
		start := time.Now()
		if _, err := callEcho(c, "echo", []byte("ok")); err != nil {
			t.Fatalf("echo call %d: %v", i, err)
		}
		slowest = max(slowest, time.Since(start))
	}
	if slowest > 300*time.Millisecond {
		t.Fatalf("an echo call took %v while the dial to the tarpit waited", slowest)
	}
	err := <-first
	if frame.CodeOf(err) != frame.ErrCodeDeclined || !strings.Contains(err.Error(), "connecting to") {
		t.Fatalf("the first call to the tarpit: %v", err)
	}
	// Down now: the next calls to slow are declined at once.
	start := time.Now()
	_, err = callEcho(c, "slow", []byte("x"))
	if took := time.Since(start); frame.CodeOf(err) != frame.ErrCodeDeclined || took > 500*time.Millisecond {
		t.Fatalf("a call to the host known down: %v after %v", err, took)
	}
	if got := testkit.Metric(t, a.AdminAddr(), `mesh_relay_parked_total{stage="connect"}`); got != "1" {
		t.Fatalf("calls parked for a dial: %s, want 1 (the first; then the host is known down)", got)
	}
	t.Logf("echo's slowest of 100 calls while the tarpit's dial waited: %v; slow then declined at once: %v", slowest, err)
}

// A call with more frames than meshd holds for a waiting route is refused
// Busy once it passes the bound, and the connection's other calls go on.
func TestAParkedCallIsBounded(t *testing.T) {
	reg := &gatedRegistry{Local: discovery.NewLocal(), gated: map[string]chan struct{}{}}
	a := startMeshd(t, "127.0.0.1:0", reg)
	echoServer(t, a.Addr(), "echo")
	echoServer(t, a.Addr(), "late")
	open := reg.gate("late")
	defer open()
	c := dialMeshd(t, a.Addr())
	_, err := callEcho(c, "late", bytes.Repeat([]byte("x"), 1<<20))
	if frame.CodeOf(err) != frame.ErrCodeBusy {
		t.Fatalf("1 MiB held while the route waits: %v", err)
	}
	if _, err := callEcho(c, "echo", []byte("after")); err != nil {
		t.Fatal(err)
	}
}
