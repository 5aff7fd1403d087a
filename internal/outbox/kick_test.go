package outbox

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// tcpPair is a connected pair of loopback sockets.
func tcpPair(t *testing.T) (a, b net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		accepted <- c
	}()
	a, err = net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b = <-accepted
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// Kick never waits on a peer that does not read: what the socket does
// not take, Loop writes, first; every frame arrives whole and in order
// once the peer reads, from many writers kicking at once.
func TestKickNeverWaits(t *testing.T) {
	a, b := tcpPair(t)
	w := New(a, 1<<20, time.Minute, nil, func(err error) { t.Error(err) })
	go w.Loop()
	const writers, each, size = 8, 400, 4096 // 12.5 MiB: far past the socket's buffers
	var wg sync.WaitGroup
	start := time.Now()
	for g := range writers {
		wg.Go(func() {
			f := make([]byte, size)
			for i := range each {
				binary.BigEndian.PutUint32(f, uint32(g))
				binary.BigEndian.PutUint32(f[4:], uint32(i))
				if err := w.Add(f, 64<<20); err != nil {
					t.Error(err)
					return
				}
				w.Kick()
			}
		})
	}
	wg.Wait()
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("kicking into a socket no one reads took %v", d)
	}
	next := make([]uint32, writers)
	br := bufio.NewReader(b)
	f := make([]byte, size)
	for range writers * each {
		if _, err := io.ReadFull(br, f); err != nil {
			t.Fatal(err)
		}
		g, i := binary.BigEndian.Uint32(f), binary.BigEndian.Uint32(f[4:])
		if g >= writers || i != next[g] {
			t.Fatalf("writer %d's frame %d out of order (want %d)", g, i, next[g])
		}
		next[g]++
	}
	w.Stop()
}

// A Batch holds what is sent while a read loop is busy and sends it, in
// one write, when the loop's buffer runs dry; with no loop busy a send
// goes out at once.
func TestBatchHoldsUntilTheReadEnds(t *testing.T) {
	a, b := tcpPair(t)
	w := New(a, 1<<20, time.Minute, nil, func(err error) { t.Error(err) })
	go w.Loop()
	defer w.Stop()
	var batch Batch
	in := bufio.NewReader(bytes.NewReader([]byte("three")))
	rd := batch.Reading(in)

	expect := func(want string) {
		t.Helper()
		b.SetReadDeadline(time.Now().Add(5 * time.Second))
		got := make([]byte, len(want))
		if _, err := io.ReadFull(b, got); err != nil || string(got) != want {
			t.Fatalf("read %q, %v; want %q", got, err, want)
		}
	}
	nothing := func() {
		t.Helper()
		b.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		var one [1]byte
		if n, _ := b.Read(one[:]); n > 0 {
			t.Fatalf("%q went out while the read loop was busy", one[:n])
		}
	}
	send := func(s string) {
		if err := w.Add([]byte(s), 0); err != nil {
			t.Fatal(err)
		}
		batch.Send(w)
	}

	send("idle ")
	expect("idle ")
	rd.Next()
	in.ReadByte() // the loop got a frame, more are buffered
	rd.Got()
	send("a")
	send("b")
	rd.Next() // still buffered: still busy
	nothing()
	in.Discard(4)
	rd.Got()
	send("c")
	rd.Next() // dry: the held writes go
	expect("abc")
	rd.Got()
	send("d")
	rd.Stop()
	expect("d")
}
