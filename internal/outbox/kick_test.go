package outbox

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"
)

// tcpPair is a connected pair of loopback sockets.
func tcpPair(t testing.TB) (a, b net.Conn) { return socketPair(t, "tcp", "127.0.0.1:0") }

// socketPair is a connected pair of sockets of a listener on addr.
func socketPair(t testing.TB, network, addr string) (a, b net.Conn) {
	t.Helper()
	l, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		accepted <- c
	}()
	a, err = net.Dial(network, l.Addr().String())
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

// chunks is a read loop's socket in a test: each Read returns the next
// chunk sent, waiting for it.
type chunks chan string

func (c chunks) Read(p []byte) (int, error) { return copy(p, <-c), nil }

// A Batch holds what is sent while a read loop works through what it read
// and sends it, in one write, when the loop reads again: before it waits
// on its socket, so a peer that stops mid-frame holds no one's writes.
// With no loop busy a send goes out at once.
func TestBatchHoldsUntilTheLoopReadsAgain(t *testing.T) {
	a, b := tcpPair(t)
	w := New(a, 1<<20, time.Minute, nil, func(err error) { t.Error(err) })
	go w.Loop()
	defer w.Stop()
	batch := Batch{MaxHold: time.Minute}
	socket := make(chunks)
	rd := batch.Reading(socket)

	read := func() chan string {
		got := make(chan string, 1)
		go func() {
			p := make([]byte, 16)
			n, _ := rd.Read(p)
			got <- string(p[:n])
		}()
		return got
	}

	send(t, &batch, w, "idle ")
	expectRead(t, b, "idle ")
	got := read()
	socket <- "frames"
	if s := <-got; s != "frames" {
		t.Fatalf("read %q", s)
	}
	send(t, &batch, w, "a")
	send(t, &batch, w, "b")
	expectNothing(t, b) // the loop is busy with what it read
	got = read()        // it reads again: waits on a peer that sends nothing more
	expectRead(t, b, "ab")
	socket <- "more"
	<-got
	send(t, &batch, w, "c")
	expectNothing(t, b)
	rd.Stop()
	expectRead(t, b, "c")
}

// A loop busy for long (relaying to a peer that pushes back) holds no
// write past MaxHold.
func TestBatchHoldsAtMostMaxHold(t *testing.T) {
	a, b := tcpPair(t)
	w := New(a, 1<<20, time.Minute, nil, func(err error) { t.Error(err) })
	go w.Loop()
	defer w.Stop()
	batch := Batch{MaxHold: 5 * time.Millisecond}
	socket := make(chunks, 1)
	rd := batch.Reading(socket)
	socket <- "x"
	rd.Read(make([]byte, 1)) // busy, and never reads again
	for i := range 3 {
		w.Add([]byte{byte('a' + i)}, 0)
		batch.Send(w)
		b.SetReadDeadline(time.Now().Add(5 * time.Second))
		var got [1]byte
		if _, err := io.ReadFull(b, got[:]); err != nil || got[0] != byte('a'+i) {
			t.Fatalf("write %d held past MaxHold: %q, %v", i, got[:], err)
		}
	}
	rd.Stop()
}

// On a socket, a loop stays busy while its peer's bytes keep coming and
// sends what it held when the socket runs dry (before it waits), or
// after spellBytes read.
func TestBatchOnASocket(t *testing.T) {
	a, b := tcpPair(t)
	w := New(a, 1<<20, time.Minute, nil, func(err error) { t.Error(err) })
	go w.Loop()
	defer w.Stop()
	batch := Batch{MaxHold: time.Minute}
	in, peer := tcpPair(t)
	rd := batch.Reading(in)
	defer rd.Stop()
	if rd.sock.raw == nil {
		t.Fatal("a TCP socket read without its RawConn")
	}

	peer.Write([]byte("0123456789"))
	p := make([]byte, 4)
	if n, err := rd.Read(p); n != 4 || err != nil {
		t.Fatalf("read %d, %v", n, err)
	}
	send(t, &batch, w, "a")
	if n, _ := rd.Read(p); n != 4 { // more was there: still busy
		t.Fatalf("read %d", n)
	}
	send(t, &batch, w, "b")
	expectNothing(t, b) // the socket still has bytes
	rd.Read(p)          // the last 2 bytes
	done := make(chan struct{})
	go func() {
		rd.Read(p) // the socket is dry: the spell ends, then it waits
		close(done)
	}()
	expectRead(t, b, "ab")
	peer.Write([]byte("x"))
	<-done

	// A peer that keeps sending: the held write goes out as the loop reads on
	// (the socket runs dry a moment, or spellBytes pass).
	go peer.Write(make([]byte, 4*spellBytes))
	big := make([]byte, 1024)
	rd.Read(big)
	send(t, &batch, w, "c")
	for read := 0; read < 2*spellBytes; {
		n, _ := rd.Read(big)
		read += n
	}
	expectRead(t, b, "c")
}

// A write deadline set by Loop's flush and passed since is no deadline
// of Kick's, which never waits: a Kick past it still writes (a gRPC
// connection meshd served whose acks and answers were all kicked closed 30 s
// after its first write had gone through Loop). One set by Abort stays.
func TestKickPastLoopsDeadline(t *testing.T) {
	a, b := tcpPair(t)
	failed := make(chan error, 1)
	const timeout = 200 * time.Millisecond // long enough for a loaded machine's Loop to write within it
	w := New(Socket(a), 1<<20, timeout, nil, func(err error) { failed <- err })
	go w.Loop()
	defer w.Stop()
	w.Write([]byte("loop ")) // through Loop, which sets the deadline
	expectRead(t, b, "loop ")
	time.Sleep(timeout + 100*time.Millisecond)
	for _, s := range []string{"kick ", "again "} {
		w.Add([]byte(s), 1<<20)
		w.Kick()
		expectRead(t, b, s)
	}
	w.Write([]byte("loop again ")) // Loop sets a deadline afresh
	expectRead(t, b, "loop again ")
	select {
	case err := <-failed:
		t.Fatalf("a kick past Loop's deadline failed: %v", err)
	default:
	}

	w.Abort()
	time.Sleep(2 * abortGrace)
	w.Add([]byte("after abort"), 1<<20)
	w.Kick()
	select {
	case err := <-failed:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("a kick past Abort's deadline: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a kick past Abort's deadline went out")
	}
}

// expectRead reads want from c, within 5 s.
func expectRead(t *testing.T, c net.Conn, want string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != want {
		t.Fatalf("read %q, %v; want %q", got, err, want)
	}
}

// expectNothing fails if anything arrives on c within 50 ms.
func expectNothing(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	var one [1]byte
	if n, _ := c.Read(one[:]); n > 0 {
		t.Fatalf("%q went out while the read loop was busy", one[:n])
	}
}

// send queues s on w and sends it through batch.
func send(t *testing.T, batch *Batch, w *Writer, s string) {
	t.Helper()
	if err := batch.Write(w, []byte(s), 1<<20); err != nil {
		t.Fatal(err)
	}
}
