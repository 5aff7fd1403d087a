package conn

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/meshrpc/mesh/frame"
	"github.com/meshrpc/mesh/internal/outbox"
	"github.com/meshrpc/mesh/internal/testkit"
)

// stuckPeer dials a peer that answers the handshake and then never reads.
func stuckPeer(t *testing.T, o Options) *Conn {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		nc, err := l.Accept()
		if err != nil {
			return
		}
		t.Cleanup(func() { nc.Close() })
		frame.NewReader(nc).ReadFrame()
		b, _ := frame.AppendInit(nil, frame.TypeInitRes, 1, frame.Init{Version: 2, Headers: map[string]string{"host_port": "x:1", "process_name": "stuck"}})
		nc.Write(b)
	}()
	o.Logger = testkit.Quiet
	c, err := Dial(context.Background(), l.Addr().String(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Fail(errors.New("test over")) })
	return c
}

// fill writes 64 KiB at a time to c until TryWrite fails, and returns why.
func fill(t *testing.T, c *Conn) error {
	t.Helper()
	chunk := make([]byte, 64<<10)
	for range 16 << 10 { // 1 GiB: far past any socket buffer
		if err := c.TryWrite(chunk); err != nil {
			return err
		}
	}
	t.Fatal("TryWrite never failed on a peer that does not read")
	return nil
}

// Slow peers sharing a QueueBudget hold about its Max in all, not MaxQueued
// each (past each one's free 64 KiB); a connection that keeps up still writes while the budget is spent,
// and a slow one's bytes go back to the budget when it fails.
func TestQueueBudgetBoundsSlowPeersInAll(t *testing.T) {
	budget := &outbox.Budget{Max: 4 << 20}
	o := Options{MaxQueued: 64 << 20, QueueBudget: budget, WriteTimeout: time.Minute}
	a, b := stuckPeer(t, o), stuckPeer(t, o)

	if err := fill(t, a); !errors.Is(err, ErrQueuesFull) {
		t.Fatalf("first slow peer: got %v, want ErrQueuesFull", err)
	}
	if n := budget.Bytes(); n < budget.Max || n > budget.Max+(1<<20) {
		t.Fatalf("one slow peer holds %d counted bytes, want just past Max %d", n, budget.Max)
	}
	if err := fill(t, b); !errors.Is(err, ErrQueuesFull) {
		t.Fatalf("second slow peer: got %v, want ErrQueuesFull", err)
	}
	if n := budget.Bytes(); n > budget.Max+(1<<20) {
		t.Fatalf("two slow peers hold %d counted bytes, want about Max %d", n, budget.Max)
	}
	// What the first holds does not grow either.
	if err := a.TryWrite(make([]byte, 1024)); !errors.Is(err, ErrQueuesFull) {
		t.Fatalf("first slow peer again: got %v, want ErrQueuesFull", err)
	}

	// A peer that reads: small writes go through while the budget is spent.
	fast, _ := pairWith(t, echo, Options{QueueBudget: budget})
	for i := range 100 {
		if _, err := call(fast, "m", make([]byte, 1024), 5*time.Second); err != nil {
			t.Fatalf("call %d on a connection that keeps up: %v", i, err)
		}
	}

	start := time.Now()
	a.Fail(ErrFull)
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("failing a slow peer took %v: its stuck write held it", d)
	}
	if !errors.Is(a.Err(), ErrFull) {
		t.Fatalf("Err() = %v, want ErrFull", a.Err())
	}
	b.Fail(ErrFull)
	testkit.WaitFor(t, 5*time.Second, "the budget back to 0", func() bool { return budget.Bytes() == 0 })
}

// The causes of a closed connection match with errors.Is.
func TestCloseCauses(t *testing.T) {
	t.Run("handshake timeout", func(t *testing.T) {
		a, b := net.Pipe()
		defer a.Close()
		_, err := Server(b, Options{HandshakeTimeout: 100 * time.Millisecond, Logger: testkit.Quiet})
		if !errors.Is(err, ErrHandshakeTimeout) || frame.CodeOf(err) != frame.ErrCodeNetwork {
			t.Fatalf("got %v, want ErrHandshakeTimeout and a network error", err)
		}
	})
	t.Run("handshake cut short", func(t *testing.T) {
		a, b := net.Pipe()
		go func() { a.Write([]byte{0, 40}); a.Close() }()
		_, err := Server(b, Options{HandshakeTimeout: time.Second, Logger: testkit.Quiet})
		if err == nil || errors.Is(err, ErrHandshakeTimeout) {
			t.Fatalf("got %v, want a failure that is not a timeout", err)
		}
	})
	t.Run("idle", func(t *testing.T) {
		c := stuckPeer(t, Options{IdleTimeout: 200 * time.Millisecond})
		select {
		case <-c.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("an idle peer that answers no ping is still connected")
		}
		if !errors.Is(c.Err(), ErrIdle) {
			t.Fatalf("Err() = %v, want ErrIdle", c.Err())
		}
	})
}
