package outbox

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// unixPair is a connected pair of Unix sockets.
func unixPair(t testing.TB) (a, b net.Conn) {
	return socketPair(t, "unix", filepath.Join(t.TempDir(), "s"))
}

// A Socket carries bytes both ways like the socket under it: whole and in
// order, a write larger than the socket's buffers waiting for the reader,
// end of stream as io.EOF; deadlines and Close end a Read that waits, with
// the errors net's own sockets give.
func TestSocket(t *testing.T) {
	for _, tc := range []struct {
		name string
		pair func(testing.TB) (net.Conn, net.Conn)
	}{{"tcp", tcpPair}, {"unix", unixPair}} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := tc.pair(t)
			sa, sb := Socket(a), Socket(b)
			if _, ok := sa.(*socket); !ok {
				t.Fatalf("Socket(%T) is %T, not wrapped", a, sa)
			}
			if u := sa.(interface{ NetConn() net.Conn }).NetConn(); u != a {
				t.Fatalf("NetConn is %v, want the socket under it", u)
			}
			if rc, err := sa.(syscall.Conn).SyscallConn(); err != nil || rc == nil {
				t.Fatalf("SyscallConn: %v, %v", rc, err) // the gRPC sniff peeks through it
			}

			big := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB: more than the kernel buffers
			var got bytes.Buffer
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := make([]byte, 7000) // odd sizes: many reads, partial ones
				for got.Len() < len(big) {
					n, err := sb.Read(buf)
					if err != nil {
						t.Errorf("read after %d bytes: %v", got.Len(), err)
						return
					}
					got.Write(buf[:n])
					if got.Len() < 1<<20 {
						time.Sleep(time.Microsecond) // a slow reader at first: the writer waits
					}
				}
			}()
			if n, err := sa.Write(big); n != len(big) || err != nil {
				t.Fatalf("write: %d of %d, %v", n, len(big), err)
			}
			wg.Wait()
			if !bytes.Equal(got.Bytes(), big) {
				t.Fatal("the bytes read are not the bytes written")
			}

			// A read deadline ends a Read that waits, as a timeout.
			sb.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
			var ne net.Error
			if _, err := sb.Read(make([]byte, 10)); !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
				t.Fatalf("read past the deadline: %v, want a timeout", err)
			}
			sb.SetReadDeadline(time.Time{})

			// Close ends a Read that waits, with net.ErrClosed.
			done := make(chan error, 1)
			go func() {
				_, err := sb.Read(make([]byte, 10))
				done <- err
			}()
			time.Sleep(10 * time.Millisecond)
			sb.Close()
			if err := <-done; !errors.Is(err, net.ErrClosed) {
				t.Fatalf("read on a closed socket: %v, want net.ErrClosed", err)
			}

			// The peer's close is io.EOF; a write to a peer gone fails.
			if _, err := sa.Read(make([]byte, 10)); err != io.EOF {
				t.Fatalf("read after the peer closed: %v, want io.EOF", err)
			}
			var werr error
			for i := 0; i < 100 && werr == nil; i++ { // the first writes may still be taken
				_, werr = sa.Write([]byte("x"))
				time.Sleep(time.Millisecond)
			}
			if werr == nil {
				t.Fatal("writes to a closed peer kept succeeding")
			}
		})
	}
}

// What is not a TCP or Unix socket is left as it is.
func TestSocketLeavesOthers(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if Socket(a) != a {
		t.Fatal("a net.Pipe was wrapped")
	}
}
