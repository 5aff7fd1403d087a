package outbox

import (
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// BenchmarkPrices is what this machine charges for the steps every relayed
// message takes, made as mesh makes them (sysRead, sysWrite, Go's poller):
// a read that finds the socket empty (each read loop's last before it
// parks), a write and a read of 1 KiB, a round trip of 1 KiB between two
// goroutines waiting in the poller (two of each step above, and two
// wake-ups by the poller), and a hand-off between two goroutines on a
// channel. A hop adds at least two of each of a round trip's steps to a
// call, so these prices bound what a hop can cost on this machine (make
// bench prints them; docs/PERFORMANCE.md).
func BenchmarkPrices(b *testing.B) {
	msg := make([]byte, 1<<10)
	for _, tc := range []struct {
		name string
		pair func(testing.TB) (net.Conn, net.Conn)
	}{{"tcp", tcpPair}, {"unix", unixPair}} {
		b.Run(tc.name+"/read-empty", func(b *testing.B) {
			_, r := tc.pair(b)
			fd, p := fdOf(b, r), make([]byte, 64)
			for b.Loop() {
				if _, err := sysRead(fd, p); err != syscall.EAGAIN {
					b.Fatalf("a read of an empty socket: %v, want EAGAIN", err)
				}
			}
		})
		b.Run(tc.name+"/write-read-1KiB", func(b *testing.B) {
			w, r := tc.pair(b)
			wfd, rfd, p := fdOf(b, w), fdOf(b, r), make([]byte, 64<<10)
			var wrote, read time.Duration
			for b.Loop() {
				t0 := time.Now()
				if n, err := sysWrite(wfd, msg); n != len(msg) {
					b.Fatalf("write: %d bytes, %v", n, err)
				}
				t1 := time.Now()
				for got := 0; got < len(msg); { // TCP may hand the bytes over in parts
					n, err := sysRead(rfd, p)
					if err != nil && err != syscall.EAGAIN {
						b.Fatalf("read: %v", err)
					}
					got += n
				}
				read += time.Since(t1)
				wrote += t1.Sub(t0)
			}
			b.ReportMetric(float64(wrote.Nanoseconds())/float64(b.N), "write-ns")
			b.ReportMetric(float64(read.Nanoseconds())/float64(b.N), "read-ns")
		})
		b.Run(tc.name+"/round-trip-1KiB", func(b *testing.B) {
			a, e := tc.pair(b)
			a, e = Socket(a), Socket(e)
			go func() { // echoes until the pair closes
				p := make([]byte, len(msg))
				for {
					if _, err := io.ReadFull(e, p); err != nil {
						return
					}
					if _, err := e.Write(p); err != nil {
						return
					}
				}
			}()
			p := make([]byte, len(msg))
			for b.Loop() {
				if _, err := a.Write(msg); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(a, p); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("hand-off", func(b *testing.B) {
		ping, pong := make(chan struct{}), make(chan struct{})
		go func() {
			for range ping {
				pong <- struct{}{}
			}
		}()
		for b.Loop() {
			ping <- struct{}{}
			<-pong
		}
		close(ping)
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(2*b.N), "ns/hand-off")
	})
}

// fdOf is c's file descriptor, valid while c is open (the pair's cleanup
// closes it after the benchmark).
func fdOf(b *testing.B, c net.Conn) uintptr {
	var fd uintptr
	if err := rawOf(c).Control(func(s uintptr) { fd = s }); err != nil {
		b.Fatal(err)
	}
	return fd
}
