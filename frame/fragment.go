package frame

// MessageWriter splits a call req or call res into frames: the first frame
// carries the message's fields and as much of arg1, arg2 and arg3 as fits,
// continue frames carry the rest. It keeps the wire's rules: every chunk is
// length-prefixed, an arg that ends exactly at a frame's end is closed by a
// zero-length chunk at the start of the next frame, the checksum runs over all
// arg bytes sent so far, and only the last frame lacks the more-fragments flag.
//
// Each finished frame is handed to Emit, which must copy it before returning:
// the writer reuses its buffer. A MessageWriter can be reused after Close.
type MessageWriter struct {
	// Emit receives each finished frame.
	Emit func(frame []byte) error

	buf      []byte
	contType Type
	csum     ChecksumType
	sum      uint32
	hashed   bool // whether any chunk has been checksummed yet
	flagsOff int
	sumOff   int
	chunkOff int // offset of the open chunk's length field, or -1
	arg      int
	err      error
}

// BeginCallReq starts a call request with message id.
func (w *MessageWriter) BeginCallReq(id uint32, m *CallReq) error {
	w.begin(TypeCallReq, TypeCallReqContinue, id, m.Flags, m.Checksum)
	w.buf = appendU32(w.buf, m.TTL)
	w.buf = m.Tracing.appendTo(w.buf)
	if len(m.Service) > 0xFF {
		return w.fail(errf("service name of %d bytes exceeds 255", len(m.Service)))
	}
	w.buf = append(w.buf, byte(len(m.Service)))
	w.buf = append(w.buf, m.Service...)
	return w.beginArgs(m.Headers, m.Checksum)
}

// BeginCallRes starts a call response to message id.
func (w *MessageWriter) BeginCallRes(id uint32, m *CallRes) error {
	w.begin(TypeCallRes, TypeCallResContinue, id, m.Flags, m.Checksum)
	w.buf = append(w.buf, byte(m.Code))
	w.buf = m.Tracing.appendTo(w.buf)
	return w.beginArgs(m.Headers, m.Checksum)
}

func (w *MessageWriter) begin(t, cont Type, id uint32, flags byte, csum ChecksumType) {
	w.buf = beginFrame(w.buf[:0], t, id)
	w.contType = cont
	w.csum = csum
	w.sum = 0
	w.hashed = false
	w.arg = 0
	w.err = nil
	w.chunkOff = -1
	w.flagsOff = len(w.buf)
	w.buf = append(w.buf, flags&^FlagMoreFragments)
}

func (w *MessageWriter) beginArgs(h Headers, csum ChecksumType) error {
	if len(h) == 0 {
		w.buf = append(w.buf, 0)
	} else {
		if err := h.Validate(); err != nil {
			return w.fail(err)
		}
		w.buf = append(w.buf, h...)
	}
	if !csum.valid() {
		return w.fail(errf("unknown checksum type %d", csum))
	}
	w.appendChecksumField()
	if len(w.buf) > MaxFrameSize-2 {
		return w.fail(errf("call fields of %d bytes leave no room for args", len(w.buf)))
	}
	w.openChunk()
	return nil
}

func (w *MessageWriter) appendChecksumField() {
	w.buf = append(w.buf, byte(w.csum))
	w.sumOff = len(w.buf)
	if w.csum != ChecksumNone {
		w.buf = append(w.buf, 0, 0, 0, 0)
	}
}

func (w *MessageWriter) fail(err error) error {
	if w.err == nil {
		w.err = err
	}
	return w.err
}

// Write appends p to the current arg, emitting full frames as it goes.
func (w *MessageWriter) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if w.arg == 0 && w.chunkLen()+len(p) > MaxArg1Size {
		return 0, w.fail(errf("arg1 longer than %d bytes", MaxArg1Size))
	}
	n := 0
	for len(p) > 0 {
		room := MaxFrameSize - len(w.buf)
		if room == 0 {
			if err := w.flush(true); err != nil {
				return n, err
			}
			w.startContinue()
			w.openChunk()
			continue
		}
		k := min(room, len(p))
		w.buf = append(w.buf, p[:k]...)
		p = p[k:]
		n += k
	}
	return n, nil
}

func (w *MessageWriter) chunkLen() int {
	if w.chunkOff < 0 {
		return 0
	}
	return len(w.buf) - w.chunkOff - 2
}

// EndArg completes the current arg (arg1 or arg2) and starts the next.
func (w *MessageWriter) EndArg() error {
	if w.err != nil {
		return w.err
	}
	if w.arg >= 2 {
		return w.fail(errf("a call has exactly 3 args"))
	}
	w.closeChunk()
	w.arg++
	if MaxFrameSize-len(w.buf) < 2 {
		// The next chunk does not fit, so the arg just ended would look open:
		// close it with a zero-length chunk at the start of the next frame.
		if err := w.flush(true); err != nil {
			return err
		}
		w.startContinue()
		w.buf = append(w.buf, 0, 0)
		w.hashChunk(nil)
	}
	w.openChunk()
	return nil
}

// Close completes arg3 and emits the last frame.
func (w *MessageWriter) Close() error {
	if w.err != nil {
		return w.err
	}
	if w.arg != 2 {
		return w.fail(errf("message closed after %d of 3 args", w.arg+1))
	}
	err := w.flush(false)
	w.err = errClosed
	return err
}

var errClosed = errf("message writer used after Close")

// WriteArgs writes all three args of a message held in memory and closes it.
func (w *MessageWriter) WriteArgs(arg1, arg2, arg3 []byte) error {
	w.Write(arg1)
	w.EndArg()
	w.Write(arg2)
	w.EndArg()
	w.Write(arg3)
	return w.Close()
}

func (w *MessageWriter) openChunk() {
	w.chunkOff = len(w.buf)
	w.buf = append(w.buf, 0, 0)
}

func (w *MessageWriter) closeChunk() {
	if w.chunkOff < 0 {
		return
	}
	n := w.chunkLen()
	w.buf[w.chunkOff] = byte(n >> 8)
	w.buf[w.chunkOff+1] = byte(n)
	w.hashChunk(w.buf[w.chunkOff+2:])
	w.chunkOff = -1
}

func (w *MessageWriter) hashChunk(p []byte) {
	if w.csum != ChecksumNone {
		w.sum = w.csum.Update(w.sum, !w.hashed, p)
	}
	w.hashed = true
}

// flush finishes the current frame and hands it to Emit.
func (w *MessageWriter) flush(more bool) error {
	w.closeChunk()
	if more {
		w.buf[w.flagsOff] |= FlagMoreFragments
	}
	if w.csum != ChecksumNone {
		b := w.buf[w.sumOff:]
		b[0], b[1], b[2], b[3] = byte(w.sum>>24), byte(w.sum>>16), byte(w.sum>>8), byte(w.sum)
	}
	w.buf, _ = finishFrame(w.buf, 0)
	if err := w.Emit(w.buf); err != nil {
		return w.fail(err)
	}
	return nil
}

func (w *MessageWriter) startContinue() {
	var id uint32 = uint32(w.buf[4])<<24 | uint32(w.buf[5])<<16 | uint32(w.buf[6])<<8 | uint32(w.buf[7])
	w.buf = beginFrame(w.buf[:0], w.contType, id)
	w.flagsOff = len(w.buf)
	w.buf = append(w.buf, 0)
	w.appendChecksumField()
}

// Assembler follows the frames of one incoming call message, checks their
// checksums and the fragmentation rules, and says which arg each chunk
// belongs to and when each arg is complete.
type Assembler struct {
	sum     uint32
	arg     uint8 // the arg the next chunk belongs to: 0, 1 or 2
	csum    ChecksumType
	started bool // a frame has been added
	hashed  bool // a chunk has been checksummed
	done    bool
}

// Reset prepares the Assembler for a new message.
func (a *Assembler) Reset() { *a = Assembler{} }

// Done reports whether the last frame of the message has been added.
func (a *Assembler) Done() bool { return a.done }

// Add checks one frame's fragment against the message so far: checksum,
// checksum type, the number of args. On success chunk i of f belongs to arg
// first+i (0, 1 or 2), and f.Ends(i) says whether that arg is then complete.
func (a *Assembler) Add(f *Fragment) (first int, err error) {
	if a.done {
		return 0, errf("frame after the last fragment of a message")
	}
	if !a.started {
		a.csum = f.Checksum
		a.started = true
	} else if f.Checksum != a.csum {
		return 0, errf("checksum type changed from %s to %s within a message", a.csum, f.Checksum)
	}
	last := int(a.arg) + max(f.NumChunks-1, 0)
	if last > 2 {
		return 0, errf("message carries more than 3 args")
	}
	if !f.More() && last != 2 {
		return 0, errf("message ends with %d of 3 args", last+1)
	}
	if a.csum != ChecksumNone {
		sum, first := a.sum, !a.hashed
		for _, c := range f.Chunks[:f.NumChunks] {
			sum = a.csum.Update(sum, first, c)
			first = false
		}
		if sum != f.Sum {
			return 0, errf("%s checksum mismatch: frame says %08x, args give %08x", a.csum, f.Sum, sum)
		}
		a.sum = sum
	}
	if f.NumChunks > 0 {
		a.hashed = true
	}
	first = int(a.arg)
	a.arg = uint8(last)
	a.done = !f.More()
	return first, nil
}

// Ends reports whether chunk i completes its arg: another chunk follows it in
// the frame, or the frame is the message's last.
func (f *Fragment) Ends(i int) bool { return i < f.NumChunks-1 || !f.More() }

// Started reports whether a frame has been added since the last Reset.
func (a *Assembler) Started() bool { return a.started }
