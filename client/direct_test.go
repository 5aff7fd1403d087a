package client_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshrpc/mesh/client"
	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/testkit"
	"github.com/meshrpc/mesh/router"
)

// peer is one real TChannel server of service "svc" on a loopback port.
type peer struct {
	name   string
	addr   string
	srv    *client.Server
	calls  atomic.Int64
	mode   atomic.Value // "ok", "slow", or the error to answer: "busy", "timeout", "unexpected", "badrequest"
	closed bool
}

func startPeer(t *testing.T, name string) *peer {
	t.Helper()
	p := &peer{name: name}
	p.mode.Store("ok")
	p.srv = client.NewServer(client.Options{ServiceName: "svc", Logger: testkit.Quiet})
	p.srv.Register("svc", "who", client.HandlerFunc(func(ctx context.Context, call *client.Call) (*client.Response, error) {
		p.calls.Add(1)
		switch p.mode.Load() {
		case "busy":
			return nil, client.Errorf(frame.ErrCodeBusy, "%s is overloaded", p.name)
		case "timeout":
			return nil, client.Errorf(frame.ErrCodeTimeout, "%s ran out of time", p.name)
		case "unexpected":
			return nil, errors.New("the handler failed") // a plain error: Unexpected
		case "badrequest":
			return nil, client.Errorf(frame.ErrCodeBadRequest, "%s refuses the arguments", p.name)
		case "slow":
			select {
			case <-time.After(2 * time.Second):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		return &client.Response{Body: []byte(p.name)}, nil
	}))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = l.Addr().String()
	go p.srv.Serve(l)
	t.Cleanup(func() { p.stop() })
	return p
}

func (p *peer) stop() {
	if !p.closed {
		p.closed = true
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		p.srv.Shutdown(ctx)
		cancel()
	}
}

func startPeers(t *testing.T, n int) ([]*peer, []string) {
	var peers []*peer
	var addrs []string
	for i := range n {
		p := startPeer(t, fmt.Sprintf("p%d", i))
		peers, addrs = append(peers, p), append(addrs, p.addr)
	}
	return peers, addrs
}

func dialPeers(t *testing.T, addrs []string, ps router.Policies) *client.Client {
	t.Helper()
	c, err := client.DialPeers(context.Background(), addrs, client.Options{ServiceName: "caller", Logger: testkit.Quiet, Policies: ps})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// callMany makes n calls from 8 goroutines and returns how many answered
// by each peer name, and the failures.
func callMany(t *testing.T, c *client.Client, n int, opts ...client.CallOption) (map[string]int, []error) {
	var mu sync.Mutex
	by := map[string]int{}
	var errs []error
	var wg sync.WaitGroup
	next := atomic.Int64{}
	for range 8 {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				res, err := c.Call(ctx, "svc", "who", nil, nil, opts...)
				cancel()
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else {
					by[string(res.Body)]++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return by, errs
}

// Calls spread over every peer; one answering Busy to everything loses its
// traffic to its breaker and no call fails, because Busy is always safe
// to retry on another peer.
func TestDirectModeSpreadsAndRoutesAroundAFailingPeer(t *testing.T) {
	peers, addrs := startPeers(t, 3)
	c := dialPeers(t, addrs, nil)
	by, errs := callMany(t, c, 600)
	if len(errs) > 0 {
		t.Fatalf("%d calls failed, first: %v", len(errs), errs[0])
	}
	for _, p := range peers {
		if by[p.name] == 0 {
			t.Fatalf("peer %s got no calls: %v", p.name, by)
		}
	}
	peers[0].mode.Store("busy")
	before := peers[0].calls.Load()
	by, errs = callMany(t, c, 2000)
	if len(errs) > 0 {
		t.Fatalf("%d of 2000 calls failed with a busy peer, first: %v", len(errs), errs[0])
	}
	reached := peers[0].calls.Load() - before
	t.Logf("answers %v; the busy peer was tried %d times of 2000 calls", by, reached)
	if by["p0"] != 0 || reached > 50 {
		t.Fatalf("the busy peer answered %d and was tried %d times: its breaker did not keep calls away", by["p0"], reached)
	}
}

// A peer that is gone (its process stopped) costs no failed call: the
// connection error is retried on another peer ("re: c", the default).
func TestDirectModeRetriesAPeerThatIsGone(t *testing.T) {
	peers, addrs := startPeers(t, 3)
	c := dialPeers(t, addrs, nil)
	if _, errs := callMany(t, c, 300); len(errs) > 0 {
		t.Fatal(errs[0])
	}
	peers[1].stop()
	by, errs := callMany(t, c, 1000)
	if len(errs) > 0 {
		t.Fatalf("%d of 1000 calls failed after a peer stopped, first: %v", len(errs), errs[0])
	}
	if by["p1"] != 0 {
		t.Fatalf("a stopped peer answered: %v", by)
	}
}

// The same shard key reaches the same peer on every call.
func TestDirectModeShardKeySticks(t *testing.T) {
	_, addrs := startPeers(t, 3)
	c := dialPeers(t, addrs, nil)
	owner := map[string]string{}
	counts := map[string]int{}
	for round := range 3 {
		for k := range 200 {
			key := fmt.Sprintf("user-%d", k)
			res, err := c.Call(context.Background(), "svc", "who", nil, nil, client.WithShardKey(key))
			if err != nil {
				t.Fatal(err)
			}
			got := string(res.Body)
			if round == 0 {
				owner[key] = got
				counts[got]++
			} else if owner[key] != got {
				t.Fatalf("key %s moved from %s to %s", key, owner[key], got)
			}
		}
	}
	if len(counts) != 3 {
		t.Fatalf("200 keys landed on %d of 3 peers: %v", len(counts), counts)
	}
}

// With a per-attempt timeout, a hung peer costs a call one attempt's
// timeout, not its deadline: with "re: ct" the call is then answered by the
// other peer, with "re: c" the caller hears the timeout.
func TestDirectModeTryTimeout(t *testing.T) {
	peers, addrs := startPeers(t, 2)
	c := dialPeers(t, addrs, router.Policies{"svc": {TryTimeout: router.Duration(100 * time.Millisecond)}})
	key := ""
	for k := 0; key == ""; k++ { // a shard key that p0 owns
		res, err := c.Call(context.Background(), "svc", "who", nil, nil, client.WithShardKey(fmt.Sprint(k)))
		if err != nil {
			t.Fatal(err)
		}
		if string(res.Body) == "p0" {
			key = fmt.Sprint(k)
		}
	}
	peers[0].mode.Store("slow")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	res, err := c.Call(ctx, "svc", "who", nil, nil, client.WithShardKey(key), client.WithRetryFlags("ct"))
	if err != nil || string(res.Body) != "p1" {
		t.Fatalf("re: ct: %v %s", err, res.Body)
	}
	took := time.Since(start)
	start = time.Now()
	_, err = c.Call(ctx, "svc", "who", nil, nil, client.WithShardKey(key), client.WithRetryFlags("c"))
	if frame.CodeOf(err) != frame.ErrCodeTimeout {
		t.Fatalf("re: c: %v", err)
	}
	t.Logf("hung owner of the key: re: ct answered by p1 after %v; re: c timed out after %v (deadline 2s)", took, time.Since(start))
	if time.Since(start) > time.Second {
		t.Fatal("the attempt outlived its 100ms per-attempt timeout by far")
	}
}

// An error the handler answered goes to another peer only when it is safe
// to retry under the call's "re" flags: Busy always (the handler did not
// start the call; it is the control that shows retries are counted here),
// a Timeout only with "t", and never Unexpected or BadRequest, nor anything
// under "n". Each case counts the attempts that reached a handler.
func TestDirectModeDoesNotRetryUnsafeErrors(t *testing.T) {
	for _, tc := range []struct {
		mode  string
		flags string // the "re" header; "" leaves it out (meaning "c")
		code  frame.ErrCode
		tries int64
	}{
		{"busy", "", frame.ErrCodeBusy, 3},
		{"busy", "n", frame.ErrCodeBusy, 1},
		{"timeout", "", frame.ErrCodeTimeout, 1},
		{"timeout", "c", frame.ErrCodeTimeout, 1},
		{"timeout", "ct", frame.ErrCodeTimeout, 3},
		{"unexpected", "", frame.ErrCodeUnexpected, 1},
		{"unexpected", "ct", frame.ErrCodeUnexpected, 1},
		{"badrequest", "ct", frame.ErrCodeBadRequest, 1},
	} {
		t.Run(tc.mode+"/re="+tc.flags, func(t *testing.T) {
			peers, addrs := startPeers(t, 3)
			for _, p := range peers {
				p.mode.Store(tc.mode)
			}
			c := dialPeers(t, addrs, nil)
			var opts []client.CallOption
			if tc.flags != "" {
				opts = append(opts, client.WithRetryFlags(tc.flags))
			}
			_, err := c.Call(context.Background(), "svc", "who", nil, nil, opts...)
			if frame.CodeOf(err) != tc.code {
				t.Fatalf("answered %v, want code %v", err, tc.code)
			}
			var tries int64
			for _, p := range peers {
				tries += p.calls.Load()
			}
			if tries != tc.tries {
				t.Fatalf("handlers ran %d times, want %d", tries, tc.tries)
			}
		})
	}
}

func TestDialPeersRefusesBadOptions(t *testing.T) {
	_, addrs := startPeers(t, 1)
	if _, err := client.DialPeers(context.Background(), nil, client.Options{}); err == nil {
		t.Fatal("no peers accepted")
	}
	if _, err := client.DialPeers(context.Background(), addrs, client.Options{Policies: router.Policies{"svc": {MaxAttempts: -1}}}); err == nil {
		t.Fatal("an invalid policy accepted")
	}
}

// A peer that goes away and comes back on the same address gets calls again:
// its breaker probes after BreakerOpenFor and the connection is dialled anew.
func TestDirectModePeerComesBack(t *testing.T) {
	peers, addrs := startPeers(t, 2)
	c := dialPeers(t, addrs, router.Policies{"svc": {BreakerOpenFor: router.Duration(200 * time.Millisecond)}})
	if _, errs := callMany(t, c, 200); len(errs) > 0 {
		t.Fatal(errs[0])
	}
	peers[0].stop()
	if by, errs := callMany(t, c, 300); len(errs) > 0 || by["p0"] != 0 {
		t.Fatalf("with p0 gone: %v, %d failed", by, len(errs))
	}
	// p0 again, on its old address.
	again := &peer{name: "p0-again"}
	again.mode.Store("ok")
	again.srv = client.NewServer(client.Options{ServiceName: "svc", Logger: testkit.Quiet})
	again.srv.Register("svc", "who", client.HandlerFunc(func(ctx context.Context, call *client.Call) (*client.Response, error) {
		return &client.Response{Body: []byte("p0-again")}, nil
	}))
	l, err := net.Listen("tcp", addrs[0])
	if err != nil {
		t.Fatal(err)
	}
	go again.srv.Serve(l)
	t.Cleanup(again.stop)
	deadline := time.Now().Add(5 * time.Second)
	for {
		by, errs := callMany(t, c, 100)
		if len(errs) > 0 {
			t.Fatal(errs[0])
		}
		if by["p0-again"] > 0 {
			t.Logf("the returned peer answers again: %v", by)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the returned peer got no calls in 5s: %v", by)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Direct mode hedges as meshd's relay does (the same routing decisions): a
// peer that hangs costs a call the hedge delay, not its deadline; the hung
// attempt is cancelled; a caller that says "re: n" is never hedged.
func TestDirectModeHedges(t *testing.T) {
	peers, addrs := startPeers(t, 3)
	c := dialPeers(t, addrs, router.Policies{"svc": {HedgeMethods: []string{"who"}, HedgeDelay: router.Duration(20 * time.Millisecond),
		HedgeBudget: 1, Balancer: router.BalancerRoundRobin}})
	peers[0].mode.Store("slow")
	var slowest time.Duration
	for range 30 {
		start := time.Now()
		res, err := c.Call(context.Background(), "svc", "who", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if string(res.Body) == "p0" {
			t.Fatal("the hung peer answered")
		}
		slowest = max(slowest, time.Since(start))
	}
	t.Logf("30 calls, one peer of three hung: slowest %v; p0 took %d calls", slowest.Round(time.Millisecond), peers[0].calls.Load())
	if slowest > time.Second || peers[0].calls.Load() == 0 {
		t.Fatalf("slowest call %v, p0 called %d times: want the hung peer's calls hedged within the delay", slowest, peers[0].calls.Load())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	for range 3 { // with "re: n", the call that lands on p0 waits out its deadline
		if _, err := c.Call(ctx, "svc", "who", nil, nil, client.WithRetryFlags("n")); err != nil {
			if frame.CodeOf(err) != frame.ErrCodeTimeout {
				t.Fatalf("re: n on the hung peer: %v", err)
			}
			return
		}
	}
	t.Fatal("three calls with re: n, round robin over three peers, none reached the hung one")
}
