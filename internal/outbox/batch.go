package outbox

import (
	"io"
	"sync"
	"time"
)

// A Batch holds back the system calls of writes made while its read loops
// work through what one read brought in, and makes them when a loop is
// done with it: a read that brought many calls sends each peer what they
// produced in one write instead of one write per call. A write made while
// no loop is busy goes out at once; one held goes out within MaxHold
// whatever the loops do (one may be busy for long: relaying to a peer
// that pushes back, which holds its own connection, not everyone's).
type Batch struct {
	// MaxHold bounds how long a write is held; 0: DefaultMaxHold.
	MaxHold time.Duration

	mu    sync.Mutex
	busy  int       // read loops busy with what they read
	dirty []*Writer // written since, their system calls held back
	timer *time.Timer
	armed bool // timer will send what is held
}

// DefaultMaxHold is the longest a Batch holds a write by default: past
// the time a loop takes for one read's calls under load (tens of µs), so it
// fires only when a loop is held up.
const DefaultMaxHold = time.Millisecond

// begin marks a read loop busy with what it read.
func (b *Batch) begin() {
	b.mu.Lock()
	b.busy++
	b.mu.Unlock()
}

// end marks a read loop done with what it read, about to read again, and
// sends what was held back (without waiting on any socket: Kick). spare
// is an empty list the batch keeps for the next writes held; the one
// returned, emptied, is the caller's to pass next time (no allocation).
func (b *Batch) end(spare []*Writer) []*Writer {
	b.mu.Lock()
	b.busy--
	return b.sendHeld(spare)
}

// sendHeld sends what is held, swapping in spare for the list; called with
// mu held, which it lets go.
func (b *Batch) sendHeld(spare []*Writer) []*Writer {
	dirty := b.dirty
	b.dirty = spare
	for _, w := range dirty {
		w.held = false
	}
	b.mu.Unlock()
	for i, w := range dirty {
		w.Kick()
		dirty[i] = nil
	}
	return dirty[:0]
}

// Write queues whole frames on w like Add (past max queued: ErrFull) and
// sends them like Send.
func (b *Batch) Write(w *Writer, f []byte, max int) error {
	if err := w.Add(f, max); err != nil {
		return err
	}
	b.Send(w)
	return nil
}

// Send writes what w has queued (Add) now, if no read loop is busy, or
// else when one ends.
func (b *Batch) Send(w *Writer) {
	if b == nil {
		w.Kick()
		return
	}
	b.mu.Lock()
	if b.busy > 0 {
		if !w.held {
			w.held = true
			b.dirty = append(b.dirty, w)
		}
		if !b.armed {
			b.armed = true
			b.arm()
		}
		b.mu.Unlock()
		return
	}
	b.mu.Unlock()
	w.Kick()
}

// arm starts the timer that sends what is held past MaxHold; called with
// mu held.
func (b *Batch) arm() {
	hold := b.MaxHold
	if hold <= 0 {
		hold = DefaultMaxHold
	}
	if b.timer == nil {
		b.timer = time.AfterFunc(hold, b.expire)
		return
	}
	b.timer.Reset(hold)
}

// expire sends what was held for MaxHold.
func (b *Batch) expire() {
	b.mu.Lock()
	b.armed = false
	b.sendHeld(nil)
}

// Reading wraps a read loop's socket r (b may be nil: no batch): the loop
// is busy, its writes held, from a read of r that brought bytes until a
// read finds the socket empty and is about to wait for the peer, which
// ends the spell first; so does every spellBytes read, so that a peer that
// never lets the socket run dry holds no writes for long. A peer that
// sends half a frame and stops holds no one's writes. Stop ends the loop's
// part.
func (b *Batch) Reading(r io.Reader) *Reading {
	rd := &Reading{b: b, r: r}
	if b != nil {
		rd.sock.raw, rd.sock.idle = rawOf(r), rd.Stop
	}
	return rd
}

// spellBytes ends a busy spell that has read this much.
const spellBytes = 64 << 10

// Reading is one read loop's part in a Batch: an io.Reader for its
// buffer (bufio.Reader) to read from.
type Reading struct {
	b     *Batch
	r     io.Reader
	sock  sysCall // reads r's socket; sock.raw nil: r is not one (the spell ends at each read)
	busy  bool
	read  int // bytes read in this spell
	spare []*Writer
}

func (r *Reading) Read(p []byte) (int, error) {
	if r.sock.raw == nil || r.read >= spellBytes {
		r.Stop()
	}
	var n int
	var err error
	if r.sock.raw == nil {
		n, err = r.r.Read(p)
	} else {
		n, err = r.sock.read(p) // about to wait for the peer, it sends what is held (Stop)
	}
	r.got(n)
	return n, err
}

// got counts n bytes read into the spell, beginning one if need be.
func (r *Reading) got(n int) {
	if n <= 0 || r.b == nil {
		return
	}
	r.read += n
	if !r.busy {
		r.busy = true
		r.b.begin()
	}
}

// Stop ends the loop's busy spell, if it is in one, sending what it held.
func (r *Reading) Stop() {
	r.read = 0
	if r.busy {
		r.busy = false
		r.spare = r.b.end(r.spare)
	}
}
