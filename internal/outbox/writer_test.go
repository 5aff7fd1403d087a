package outbox

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// recorder is a net.Conn that keeps what is written and counts the writes.
type recorder struct {
	net.Conn
	mu     sync.Mutex
	got    bytes.Buffer
	writes atomic.Int64
	delay  time.Duration
}

func (r *recorder) Write(b []byte) (int, error) {
	r.writes.Add(1)
	time.Sleep(r.delay)
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.got.Write(b)
}

func (r *recorder) SetWriteDeadline(time.Time) error { return nil }

// Every way of writing delivers every frame whole, in each writer's order,
// whichever goroutine flushes: through Loop, inline, Inline mode, Add
// then Flush.
func TestWriterModes(t *testing.T) {
	for _, mode := range []string{"write", "inline", "direct", "add-flush"} {
		t.Run(mode, func(t *testing.T) {
			r := &recorder{delay: 50 * time.Microsecond}
			w := New(r, 1<<20, time.Minute, nil, func(err error) { t.Error(err) })
			if mode == "direct" {
				w.Inline()
			}
			go w.Loop()
			const writers, each = 16, 200
			var wg sync.WaitGroup
			for g := range writers {
				wg.Go(func() {
					for i := range each {
						f := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, uint32(g)), uint32(i))
						var err error
						switch mode {
						case "write", "direct":
							err = w.Write(f)
						case "add-flush":
							if err = w.Add(f, 1<<20); err == nil {
								err = w.Flush()
							}
						default:
							err = w.WriteInline(f)
						}
						if err != nil {
							t.Error(err)
						}
					}
				})
			}
			wg.Wait()
			w.Stop()
			b := r.got.Bytes()
			if len(b) != writers*each*8 {
				t.Fatalf("%d bytes written, want %d", len(b), writers*each*8)
			}
			next := make([]uint32, writers)
			for ; len(b) > 0; b = b[8:] {
				g, i := binary.BigEndian.Uint32(b), binary.BigEndian.Uint32(b[4:])
				if g >= writers || i != next[g] {
					t.Fatalf("writer %d's frame %d out of order (want %d)", g, i, next[g])
				}
				next[g]++
			}
			t.Logf("%s: %d frames in %d writes", mode, writers*each, r.writes.Load())
		})
	}
}

// A writer keeps its two buffers: in every mode, once warm, a write
// allocates nothing. (An Inline writer's limit is MaxInt, and 4×MaxInt
// overflowed: it dropped its buffer after every flush, two 1 KiB
// allocations per relayed gRPC call.)
func TestWriterReusesItsBuffers(t *testing.T) {
	f := make([]byte, 1024)
	for _, mode := range []string{"inline", "direct", "add-flush"} {
		t.Run(mode, func(t *testing.T) {
			w := New(&recorder{}, 1<<20, time.Minute, nil, func(err error) { t.Error(err) })
			if mode == "direct" {
				w.Inline()
			}
			write := func() {
				var err error
				switch mode {
				case "add-flush":
					if err = w.Add(f, 1<<20); err == nil {
						err = w.Flush()
					}
				case "direct":
					err = w.Write(f)
				default:
					err = w.WriteInline(f)
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			write()
			write() // both buffers made
			if n := testing.AllocsPerRun(100, write); n != 0 {
				t.Fatalf("%.1f allocations per write", n)
			}
		})
	}
}

// A write that fails fails the writer once, and every write after it.
func TestWriterFails(t *testing.T) {
	failed := make(chan error, 2)
	w := New(failing{}, 1<<20, time.Minute, nil, func(err error) { failed <- err })
	go w.Loop()
	defer w.Stop()
	if err := w.WriteInline([]byte("x")); !errors.Is(err, errBroken) {
		t.Fatalf("the failed write: %v", err)
	}
	if err := w.Write([]byte("y")); !errors.Is(err, errBroken) {
		t.Fatalf("a write after it: %v", err)
	}
	if err := <-failed; !errors.Is(err, errBroken) {
		t.Fatal(err)
	}
	select {
	case err := <-failed:
		t.Fatalf("onFail ran twice: %v", err)
	case <-time.After(20 * time.Millisecond):
	}
}

var errBroken = errors.New("broken")

type failing struct{ net.Conn }

func (failing) Write([]byte) (int, error)        { return 0, errBroken }
func (failing) SetWriteDeadline(time.Time) error { return nil }

// Past max, TryWrite and Add refuse what would not fit, however little is
// over: a large frame cannot take the last room a small one (another
// caller's) still fits in; a frame larger than max goes when nothing waits.
func TestWriterMaxLeavesRoom(t *testing.T) {
	const max = 1000
	w := New(&recorder{}, 1<<10, 0, nil, nil)
	for i, step := range []struct {
		size  int  // 0: Flush
		fails bool // ErrFull
	}{
		{600, false},
		{500, true}, // 1,100 > max: refused, though only 600 wait
		{100, false},
		{300, false}, // exactly max
		{1, true},
		{0, false},
		{5000, false}, // alone: goes
		{1, true},
	} {
		var err error
		if step.size == 0 {
			err = w.Flush()
		} else {
			err = w.Add(make([]byte, step.size), max)
		}
		if got := errors.Is(err, ErrFull); got != step.fails || err != nil && !got {
			t.Fatalf("step %d (%d bytes): %v, want refused %v", i, step.size, err, step.fails)
		}
	}
}
