package meshd_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/uber/tchannel-go"
	"github.com/uber/tchannel-go/hyperbahn"
	"github.com/uber/tchannel-go/raw"

	"github.com/meshrpc/mesh/client"
	"github.com/meshrpc/mesh/discovery"
	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/meshd"
	"github.com/meshrpc/mesh/internal/relay"
	"github.com/meshrpc/mesh/internal/testkit"
	"github.com/meshrpc/mesh/internal/tracing"
	"github.com/meshrpc/mesh/internal/trust"
	"github.com/meshrpc/mesh/router"
)

// testCA signs the certificates of every in-process meshd, so their host
// boundary is mutual TLS as in production.
var testCA = sync.OnceValue(func() *testkit.CA {
	ca, err := testkit.MakeCA("mesh.test")
	if err != nil {
		panic(err)
	}
	return ca
})

// meshdTrust is a Store with a fresh meshd certificate of testCA.
func meshdTrust(tb testing.TB) *trust.Store {
	tb.Helper()
	cert, key := testCA().Issue(tb, trust.MeshdService)
	b, err := trust.NewBundle(cert, key, testCA().PEM)
	if err != nil {
		tb.Fatal(err)
	}
	return trust.NewStore(b)
}

// startMeshd runs a meshd for apps on addr (host:0), with its host listener
// (mTLS) on the same IP, sharing reg with the others, which stands in for
// Consul in these in-process tests and benchmarks; with a tracer, it traces.
func startMeshd(tb testing.TB, addr string, reg discovery.Registry, tracer ...*tracing.Tracer) *meshd.Daemon {
	tb.Helper()
	cfg := meshdConfig(tb, addr, reg)
	if len(tracer) > 0 {
		cfg.Tracer = tracer[0]
	}
	return startWith(tb, cfg)
}

// meshdConfig is the Config of startMeshd's meshds.
func meshdConfig(tb testing.TB, addr string, reg discovery.Registry) meshd.Config {
	host, _, _ := net.SplitHostPort(addr)
	return meshd.Config{Listen: addr, PeerListen: net.JoinHostPort(host, "0"), Trust: meshdTrust(tb),
		Admin: "127.0.0.1:0", Registry: reg, Logger: testkit.Quiet, DrainTimeout: 2 * time.Second}
}

func startWith(tb testing.TB, cfg meshd.Config) *meshd.Daemon {
	tb.Helper()
	d, err := meshd.Start(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { d.Shutdown(context.Background()) })
	return d
}

func echoServer(t testing.TB, meshdAddr, service string) *client.Server {
	t.Helper()
	s := client.NewServer(client.Options{ServiceName: service, Logger: testkit.Quiet})
	s.Register(service, "echo", client.HandlerFunc(func(ctx context.Context, call *client.Call) (*client.Response, error) {
		return &client.Response{Headers: call.Headers, Body: append([]byte(service+":"), call.Body...)}, nil
	}))
	if err := s.Advertise(context.Background(), meshdAddr); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(context.Background()) })
	return s
}

func callEcho(c *client.Client, service string, body []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := c.Call(ctx, service, "echo", nil, body)
	if err != nil {
		return nil, err
	}
	return res.Body, nil
}

func TestCallAcrossTwoMeshds(t *testing.T) {
	reg := discovery.NewLocal()
	a := startMeshd(t, "127.0.0.1:0", reg)
	b := startMeshd(t, "127.0.0.2:0", reg)
	echoServer(t, b.Addr(), "orders")

	c, err := client.Dial(context.Background(), a.Addr(), client.Options{ServiceName: "test", Logger: testkit.Quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, size := range []int{0, 1 << 10, 10 << 20} {
		body := bytes.Repeat([]byte("z"), size)
		got, err := callEcho(c, "orders", body)
		if err != nil {
			t.Fatalf("%d bytes: %v", size, err)
		}
		if !bytes.Equal(got, append([]byte("orders:"), body...)) {
			t.Fatalf("%d bytes: got %d bytes back", size, len(got))
		}
	}
	st := a.Status(context.Background())
	if st.Relayed < 3 || len(st.Peers) != 1 || st.Peers[0] != b.PeerAddr() {
		t.Fatalf("meshd A status: relayed %d, peers %v", st.Relayed, st.Peers)
	}
	if n := len(b.Status(context.Background()).Local); n != 1 {
		t.Fatalf("meshd B has %d local instances, want 1", n)
	}

	// An unknown service is refused at once, naming the service.
	_, err = callEcho(c, "nosuch", nil)
	var e *client.Error
	if !errors.As(err, &e) || e.Code != frame.ErrCodeDeclined || !strings.Contains(e.Message, `"nosuch"`) {
		t.Fatalf("unknown service: %v", err)
	}
}

func TestAppDisconnectWithdrawsInstance(t *testing.T) {
	reg := discovery.NewLocal()
	a := startMeshd(t, "127.0.0.1:0", reg)
	s := echoServer(t, a.Addr(), "ephemeral")
	if insts, _ := reg.Instances(context.Background(), "ephemeral"); len(insts) != 1 {
		t.Fatalf("registered %d instances", len(insts))
	}
	s.Shutdown(context.Background())
	deadline := time.Now().Add(2 * time.Second)
	for {
		if _, err := reg.Instances(context.Background(), "ephemeral"); errors.Is(err, discovery.ErrNoInstances) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("instance still registered 2s after its app left")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type tgoEcho struct{}

func (tgoEcho) Handle(ctx context.Context, args *raw.Args) (*raw.Res, error) {
	return &raw.Res{Arg2: args.Arg2, Arg3: append([]byte("tgo:"), args.Arg3...)}, nil
}
func (tgoEcho) OnError(context.Context, error) {}

// A tchannel-go program registers through its hyperbahn client and is called
// from another host by mesh's SDK and by a tchannel-go client.
func TestTChannelGoAdvertisesThroughHyperbahnClient(t *testing.T) {
	reg := discovery.NewLocal()
	a := startMeshd(t, "127.0.0.1:0", reg)
	c3 := startMeshd(t, "127.0.0.3:0", reg)

	ch, err := tchannel.NewChannel("tgo-svc", &tchannel.ChannelOptions{Logger: tchannel.NullLogger})
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	ch.Register(raw.Wrap(tgoEcho{}), "echo")
	if err := ch.ListenAndServe("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	hc, err := hyperbahn.NewClient(ch, hyperbahn.Configuration{InitialNodes: []string{a.Addr()}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Close()
	if err := hc.Advertise(); err != nil {
		t.Fatalf("hyperbahn advertise: %v", err)
	}

	c := dialMeshd(t, c3.Addr())
	got, err := callEcho(c, "tgo-svc", []byte("hi"))
	if err != nil || string(got) != "tgo:hi" {
		t.Fatalf("mesh SDK via meshd C: %q %v", got, err)
	}

	caller, err := tchannel.NewChannel("tgo-caller", &tchannel.ChannelOptions{Logger: tchannel.NullLogger})
	if err != nil {
		t.Fatal(err)
	}
	defer caller.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, arg3, _, err := raw.Call(ctx, caller, c3.Addr(), "tgo-svc", "echo", nil, []byte("yo"))
	if err != nil || string(arg3) != "tgo:yo" {
		t.Fatalf("tchannel-go client via meshd C: %q %v", arg3, err)
	}
}

// The SDK reconnects to a restarted meshd and advertises again.
func TestSDKReadvertisesAfterMeshdRestart(t *testing.T) {
	reg := discovery.NewLocal()
	d, err := meshd.Start(meshd.Config{Listen: "127.0.0.1:0", Registry: reg, Logger: testkit.Quiet, DrainTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	addr := d.Addr()
	echoServer(t, addr, "phoenix")
	d.Shutdown(context.Background())

	d2, err := meshd.Start(meshd.Config{Listen: addr, Registry: discovery.NewLocal(), Logger: testkit.Quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Shutdown(context.Background())
	c, err := client.Dial(context.Background(), addr, client.Options{Logger: testkit.Quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, err := callEcho(c, "phoenix", []byte("back"))
		if err == nil && string(got) == "phoenix:back" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("service not callable 5s after meshd restarted: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Shutdown lets calls in flight finish while it withdraws the instances.
func TestShutdownDrainsInFlightCalls(t *testing.T) {
	reg := discovery.NewLocal()
	a := startMeshd(t, "127.0.0.1:0", reg)
	s := client.NewServer(client.Options{Logger: testkit.Quiet})
	release := make(chan struct{})
	s.Register("slow", "wait", client.HandlerFunc(func(ctx context.Context, call *client.Call) (*client.Response, error) {
		<-release
		return &client.Response{Body: []byte("done")}, nil
	}))
	if err := s.Advertise(context.Background(), a.Addr()); err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(context.Background())
	c := dialMeshd(t, a.Addr())
	result := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		res, err := c.Call(ctx, "slow", "wait", nil, nil)
		if err == nil && string(res.Body) != "done" {
			err = errors.New("wrong answer")
		}
		result <- err
	}()
	testkit.WaitFor(t, 5*time.Second, "the call in flight", func() bool { return a.Status(context.Background()).InFlight > 0 })
	stopped := make(chan error, 1)
	go func() { stopped <- a.Shutdown(context.Background()) }()
	testkit.WaitFor(t, 5*time.Second, "slow withdrawn while its call runs", func() bool {
		_, err := reg.Instances(context.Background(), "slow")
		return errors.Is(err, discovery.ErrNoInstances)
	})
	close(release)
	for what, ch := range map[string]chan error{"the call in flight during the drain": result, "shutdown": stopped} {
		select {
		case err := <-ch:
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: no end within 5s", what)
		}
	}
}

// dialMeshd connects an SDK client to a meshd, closed when the test ends.
func dialMeshd(t testing.TB, addr string) *client.Client {
	t.Helper()
	c, err := client.Dial(context.Background(), addr, client.Options{Logger: testkit.Quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// countingServer advertises service with a handler that answers with code
// (0: success) and counts its calls.
func countingServer(t *testing.T, meshdAddr, service string, code frame.ErrCode, calls *atomic.Int64) {
	t.Helper()
	s := client.NewServer(client.Options{Logger: testkit.Quiet})
	s.Register(service, "m", client.HandlerFunc(func(ctx context.Context, call *client.Call) (*client.Response, error) {
		calls.Add(1)
		if code != 0 {
			return nil, client.Errorf(code, "refusing on purpose")
		}
		return &client.Response{Body: []byte("ok")}, nil
	}))
	if err := s.Advertise(context.Background(), meshdAddr); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(context.Background()) })
}

// A busy instance's calls are retried on another instance until its breaker
// opens and takes it out; "re: n" hands the busy answers to the caller.
func TestRetriesGoElsewhere(t *testing.T) {
	a := startMeshd(t, "127.0.0.1:0", discovery.NewLocal())
	// Round robin keeps sending the busy instance its share until the
	// breaker takes it out (P2C may shun it after one or two busy answers,
	// before the breaker has seen enough).
	if err := a.SetPolicies(router.Policies{"svc": {Balancer: router.BalancerRoundRobin}}); err != nil {
		t.Fatal(err)
	}
	var busy, good atomic.Int64
	countingServer(t, a.Addr(), "svc", frame.ErrCodeBusy, &busy)
	countingServer(t, a.Addr(), "svc", 0, &good)
	countingServer(t, a.Addr(), "svc", 0, &good)
	c := dialMeshd(t, a.Addr())
	const n = 300
	for i := range n {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := c.Call(ctx, "svc", "m", nil, nil)
		cancel()
		if err != nil {
			t.Fatalf("call %d failed despite two healthy instances: %v", i, err)
		}
	}
	st := a.Status(context.Background())
	t.Logf("%d calls: busy instance answered %d (then its breaker opened), healthy ones %d; %d retries", n, busy.Load(), good.Load(), st.Retried)
	if busy.Load() == 0 || st.Retried != busy.Load() {
		t.Fatalf("retries %d, busy answers %d: every busy answer should have been retried", st.Retried, busy.Load())
	}
	if busy.Load() > 10 {
		t.Fatalf("the busy instance got %d calls: its breaker should have opened after 5", busy.Load())
	}
	// /metrics tells the same story, once the last call is counted (a call
	// is counted after its answer is on its way to the caller).
	wants := []string{
		fmt.Sprintf(`mesh_retries_total{service="svc"} %d`, busy.Load()),
		`result="busy",service="svc"} ` + fmt.Sprint(busy.Load()),
		`mesh_breaker_transitions_total{instance_addr=`,
		`to="open"} 1`,
		`mesh_instance_attempt_duration_seconds_bucket{instance_addr=`,
		`mesh_breaker_state{instance_addr=`,
		`mesh_calls_total{caller="anonymous",method="m",result="ok",service="svc"} ` + fmt.Sprint(n), // retried calls count once
	}
	var missing []string
	defer func() {
		if t.Failed() && len(missing) > 0 {
			t.Logf("/metrics lacks %q", missing)
		}
	}()
	testkit.WaitFor(t, 2*time.Second, "/metrics to tell every call", func() bool {
		resp, err := http.Get("http://" + a.AdminAddr() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		missing = missing[:0]
		for _, want := range wants {
			if !strings.Contains(string(body), want) {
				missing = append(missing, want)
			}
		}
		return len(missing) == 0
	})

	// A fresh service, and "re: n": the busy answers reach the caller.
	var busy2, good2 atomic.Int64
	countingServer(t, a.Addr(), "svc2", frame.ErrCodeBusy, &busy2)
	countingServer(t, a.Addr(), "svc2", 0, &good2)
	failures := 0
	for range 100 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := c.Call(ctx, "svc2", "m", nil, nil, client.WithRetryFlags("n"))
		cancel()
		if frame.CodeOf(err) == frame.ErrCodeBusy {
			failures++
		}
	}
	if failures == 0 || int64(failures) != busy2.Load() {
		t.Fatalf(`with "re: n" %d calls failed busy, the instance answered busy %d times`, failures, busy2.Load())
	}
}

// A request of several frames is retried whole on another instance, each
// frame under the new message id; one larger than the 256 KiB kept for
// retries is forwarded as it streams, and its busy answer reaches the caller.
func TestRetriesMultiFrameRequests(t *testing.T) {
	a := startMeshd(t, "127.0.0.1:0", discovery.NewLocal())
	var busy atomic.Int64
	for _, service := range []string{"big", "huge"} {
		for _, code := range []frame.ErrCode{frame.ErrCodeBusy, 0} {
			s := client.NewServer(client.Options{Logger: testkit.Quiet})
			s.Register(service, "echo", client.HandlerFunc(func(ctx context.Context, call *client.Call) (*client.Response, error) {
				if code != 0 {
					busy.Add(1)
					return nil, client.Errorf(code, "busy on purpose")
				}
				return &client.Response{Body: call.Body}, nil
			}))
			if err := s.Advertise(context.Background(), a.Addr()); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Shutdown(context.Background()) })
		}
	}
	c := dialMeshd(t, a.Addr())
	body := make([]byte, 150<<10) // three frames
	for i := range body {
		body[i] = byte(i * 7)
	}
	for i := range 40 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		res, err := c.Call(ctx, "big", "echo", nil, body)
		cancel()
		if err != nil {
			t.Fatalf("call %d of 150 KiB: %v", i, err)
		}
		if !bytes.Equal(res.Body, body) {
			t.Fatalf("call %d: the retried request arrived changed (%d bytes back)", i, len(res.Body))
		}
	}
	if busy.Load() == 0 {
		t.Fatal("the busy instance got none of the calls: nothing was retried")
	}
	t.Logf("40 calls of 150 KiB: the busy instance refused %d, all retried whole on the other", busy.Load())

	huge := make([]byte, 300<<10)
	var refused int
	for range 40 {
		_, err := c.Call(context.Background(), "huge", "echo", nil, huge)
		if frame.CodeOf(err) == frame.ErrCodeBusy {
			refused++
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if refused == 0 {
		t.Fatal("no 300 KiB call met the busy instance")
	}
	t.Logf("40 calls of 300 KiB: %d busy answers reached the caller (too big to keep for a retry)", refused)
}

// With every instance declining (which opens no breaker), the retry budget
// keeps attempts near the number of calls instead of multiplying them.
func TestRetryBudgetHoldsInOutage(t *testing.T) {
	a := startMeshd(t, "127.0.0.1:0", discovery.NewLocal())
	var attempts atomic.Int64
	for range 3 {
		countingServer(t, a.Addr(), "down", frame.ErrCodeDeclined, &attempts)
	}
	c := dialMeshd(t, a.Addr())
	const calls = 1000
	for range calls {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		c.Call(ctx, "down", "m", nil, nil)
		cancel()
	}
	ratio := float64(attempts.Load()) / calls
	t.Logf("%d calls to a service whose instances all decline: %d attempts (%.3fx), %d retries refused by the budget",
		calls, attempts.Load(), ratio, a.Status(context.Background()).BudgetExhausted)
	if ratio > 1.2+10.0/calls { // 20% plus the budget's small floor
		t.Fatalf("attempts = %.3fx calls, want ≤ 1.2x", ratio)
	}
}

// A per-attempt timeout moves a call off a hung instance to a healthy one
// within the caller's deadline ("re: t" allows retrying timeouts).
func TestTryTimeoutRetriesElsewhere(t *testing.T) {
	a := startMeshd(t, "127.0.0.1:0", discovery.NewLocal())
	if err := a.SetPolicies(router.Policies{"flaky": {TryTimeout: router.Duration(100 * time.Millisecond)}}); err != nil {
		t.Fatal(err)
	}
	hung := client.NewServer(client.Options{Logger: testkit.Quiet})
	var hungTTL atomic.Int64
	hung.Register("flaky", "m", client.HandlerFunc(func(ctx context.Context, call *client.Call) (*client.Response, error) {
		dl, _ := ctx.Deadline()
		hungTTL.Store(int64(time.Until(dl)))
		<-ctx.Done() // never answers in time
		return nil, ctx.Err()
	}))
	if err := hung.Advertise(context.Background(), a.Addr()); err != nil {
		t.Fatal(err)
	}
	defer hung.Shutdown(context.Background())
	var good atomic.Int64
	countingServer(t, a.Addr(), "flaky", 0, &good)
	c := dialMeshd(t, a.Addr())
	for i := range 20 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		start := time.Now()
		_, err := c.Call(ctx, "flaky", "m", nil, nil, client.WithRetryFlags("ct"))
		cancel()
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		if d := time.Since(start); d > 500*time.Millisecond {
			t.Fatalf("call %d took %v: the 100ms attempt timeout did not move it on", i, d)
		}
	}
	if ttl := time.Duration(hungTTL.Load()); ttl == 0 || ttl > 100*time.Millisecond {
		t.Fatalf("the hung instance saw a TTL of %v, want at most the 100ms attempt timeout", ttl)
	}
}

// An instance that never answers (a partition, a hung process) does not hold
// a call past the per-attempt timeout: the relay gives up on the attempt
// itself and retries elsewhere.
func TestSilentInstanceIsLeftAtTheAttemptTimeout(t *testing.T) {
	a := startMeshd(t, "127.0.0.1:0", discovery.NewLocal())
	if err := a.SetPolicies(router.Policies{"mute": {TryTimeout: router.Duration(100 * time.Millisecond)}}); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	defer close(release)
	silent := client.NewServer(client.Options{Logger: testkit.Quiet})
	silent.Register("mute", "m", client.HandlerFunc(func(ctx context.Context, call *client.Call) (*client.Response, error) {
		<-release // ignores its deadline
		return nil, ctx.Err()
	}))
	if err := silent.Advertise(context.Background(), a.Addr()); err != nil {
		t.Fatal(err)
	}
	var good atomic.Int64
	countingServer(t, a.Addr(), "mute", 0, &good)
	c := dialMeshd(t, a.Addr())
	for i := range 20 {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		start := time.Now()
		_, err := c.Call(ctx, "mute", "m", nil, nil, client.WithRetryFlags("ct"))
		cancel()
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		if d := time.Since(start); d > time.Second {
			t.Fatalf("call %d took %v despite the 100ms attempt timeout", i, d)
		}
	}
}

// A caller's cancel travels through the relay to the handler, after the
// whole request went out.
func TestCancelCrossesTheRelay(t *testing.T) {
	a := startMeshd(t, "127.0.0.1:0", discovery.NewLocal())
	started, stopped := make(chan struct{}), make(chan struct{})
	s := client.NewServer(client.Options{Logger: testkit.Quiet})
	s.Register("slow", "wait", client.HandlerFunc(func(ctx context.Context, call *client.Call) (*client.Response, error) {
		close(started)
		<-ctx.Done()
		close(stopped)
		return nil, ctx.Err()
	}))
	if err := s.Advertise(context.Background(), a.Addr()); err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(context.Background())
	c := dialMeshd(t, a.Addr())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	go func() { <-started; cancel() }()
	if _, err := c.Call(ctx, "slow", "wait", nil, nil); frame.CodeOf(err) != frame.ErrCodeCancelled {
		t.Fatalf("got %v, want cancelled", err)
	}
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("the cancel did not reach the handler through meshd")
	}
	if n := a.Status(context.Background()).InFlight; n != 0 {
		t.Fatalf("%d calls still in flight in the relay", n)
	}
}

// max_concurrent=2 holds across 20 policy updates while 2 calls are in
// flight: each update (of another service, of this one, or the same
// policies again) used to reset the count, so a third call got through.
func TestConcurrencyLimitHoldsAcrossPolicyUpdates(t *testing.T) {
	a := startMeshd(t, "127.0.0.1:0", discovery.NewLocal())
	base := router.Policies{"slow": {MaxConcurrent: 2, MaxAttempts: 1}}
	if err := a.SetPolicies(base); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	var inside atomic.Int32
	s := client.NewServer(client.Options{Logger: testkit.Quiet})
	s.Register("slow", "wait", client.HandlerFunc(func(ctx context.Context, call *client.Call) (*client.Response, error) {
		inside.Add(1)
		defer inside.Add(-1)
		select {
		case <-release:
		case <-ctx.Done():
		}
		return &client.Response{Body: []byte("done")}, nil
	}))
	if err := s.Advertise(context.Background(), a.Addr()); err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(context.Background())
	c := dialMeshd(t, a.Addr())
	call := func(timeout time.Duration) error {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		_, err := c.Call(ctx, "slow", "wait", nil, nil)
		return err
	}
	held := make(chan error, 2)
	for range 2 {
		go func() { held <- call(20 * time.Second) }()
	}
	for deadline := time.Now().Add(5 * time.Second); inside.Load() < 2; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the two calls did not reach the handler")
		}
	}
	for i := range 20 {
		next := base
		switch i % 3 {
		case 0:
			next = router.Policies{"slow": {MaxConcurrent: 2, MaxAttempts: 1}, fmt.Sprint("svc-", i): {RateLimit: 5}}
		case 1:
			next = router.Policies{"slow": {MaxConcurrent: 2, MaxAttempts: 1, RateLimit: 1e6, Burst: 1000}}
		}
		if err := a.SetPolicies(next); err != nil {
			t.Fatal(err)
		}
		if err := call(2 * time.Second); frame.CodeOf(err) != frame.ErrCodeBusy {
			t.Fatalf("update %d: a third call with 2 in flight got %v, want Busy", i+1, err)
		}
	}
	close(release)
	for range 2 {
		if err := <-held; err != nil {
			t.Fatalf("a held call: %v", err)
		}
	}
	if err := call(2 * time.Second); err != nil {
		t.Fatalf("after the two finished: %v", err)
	}
}

// A routing key ("rk") routes a call to an instance of the key's service,
// on another host too, while the call keeps naming its own: here a proxy
// that also serves "orders" gets every orders call sent with rk=proxy,
// and the real orders instance none of them.
func TestRoutingKeyRoutesOnAnotherService(t *testing.T) {
	reg := discovery.NewLocal()
	a := startMeshd(t, "127.0.0.1:0", reg)
	b := startMeshd(t, "127.0.0.2:0", reg)
	// Round robin, so that without rk both orders instances surely get calls.
	if err := a.SetPolicies(router.Policies{"orders": {Balancer: router.BalancerRoundRobin}}); err != nil {
		t.Fatal(err)
	}
	echoServer(t, b.Addr(), "orders")
	proxy := client.NewServer(client.Options{ServiceName: "proxy", Logger: testkit.Quiet})
	for _, svc := range []string{"proxy", "orders"} {
		proxy.Register(svc, "echo", client.HandlerFunc(func(ctx context.Context, call *client.Call) (*client.Response, error) {
			return &client.Response{Body: []byte("proxy:" + call.Service)}, nil
		}))
	}
	if err := proxy.Advertise(context.Background(), b.Addr()); err != nil {
		t.Fatal(err)
	}
	defer proxy.Shutdown(context.Background())
	c := dialMeshd(t, a.Addr())
	answers := map[string]int{}
	for range 40 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		res, err := c.Call(ctx, "orders", "echo", nil, []byte("x"), client.WithRoutingKey("proxy"))
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		answers[string(res.Body)]++
	}
	if answers["proxy:orders"] != 40 {
		t.Fatalf("with rk=proxy the answers were %v, want all 40 from the proxy, for service orders", answers)
	}
	clear(answers)
	for range 40 {
		body, err := callEcho(c, "orders", []byte("x"))
		if err != nil {
			t.Fatal(err)
		}
		answers[string(body)]++
	}
	if answers["orders:x"] != 20 || answers["proxy:orders"] != 20 {
		t.Fatalf("without rk, round robin over both orders instances answered %v", answers)
	}
}

// A caller that sends meshd's routing headers itself (the instance to
// deliver to, the caller's proven identity) is refused with a clear error:
// only another meshd, on its authenticated connection, may set them. Its
// calls fail alone; the connection between the two hosts and other callers'
// calls are untouched.
func TestCallerSentRoutingHeadersAreRefused(t *testing.T) {
	reg := discovery.NewLocal()
	a := startMeshd(t, "127.0.0.1:0", reg)
	b := startMeshd(t, "127.0.0.2:0", reg)
	echoServer(t, b.Addr(), "svc")
	c := dialMeshd(t, a.Addr())
	other := dialMeshd(t, a.Addr())
	for i := range 20 {
		header := [...]string{relay.HeaderInstance, relay.HeaderCaller}[i%2]
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := c.Call(ctx, "svc", "echo", nil, []byte("x"), client.WithTransportHeader(header, "forged"))
		cancel()
		var ce *client.Error
		if !errors.As(err, &ce) || ce.Code != frame.ErrCodeBadRequest || !strings.Contains(ce.Message, header) {
			t.Fatalf("call %d with a forged %s header: %v, want a bad request naming it", i, header, err)
		}
		if body, err := callEcho(other, "svc", []byte("y")); err != nil || string(body) != "svc:y" {
			t.Fatalf("another caller's call %d: %q %v", i, body, err)
		}
	}
}

// The admin listener serves /health, /live and /metrics; /debug/pprof only
// when enabled, since a profile or the command line can carry secrets.
func TestAdminEndpoints(t *testing.T) {
	for _, pprofOn := range []bool{false, true} {
		d, err := meshd.Start(meshd.Config{Listen: "127.0.0.1:0", Admin: "127.0.0.1:0", Pprof: pprofOn, Registry: discovery.NewLocal(), Logger: testkit.Quiet})
		if err != nil {
			t.Fatal(err)
		}
		wantPprof := http.StatusNotFound
		if pprofOn {
			wantPprof = http.StatusOK
		}
		for path, want := range map[string]int{"/health": 200, "/live": 200, "/metrics": 200, "/debug/pprof/cmdline": wantPprof, "/debug/pprof/": wantPprof} {
			res, err := http.Get("http://" + d.AdminAddr() + path)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode != want {
				t.Errorf("pprof %v: %s answered %d, want %d", pprofOn, path, res.StatusCode, want)
			}
		}
		d.Shutdown(context.Background())
	}
}

// recentCalls reads meshd's explanations of its recent calls (/calls?query).
func recentCalls(t testing.TB, admin, query string) []relay.Explanation {
	t.Helper()
	res, err := http.Get("http://" + admin + "/calls?" + query)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var calls []relay.Explanation
	if err := json.NewDecoder(res.Body).Decode(&calls); err != nil {
		t.Fatalf("/calls?%s: %v", query, err)
	}
	return calls
}
