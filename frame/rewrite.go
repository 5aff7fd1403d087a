package frame

import "encoding/binary"

// In-place rewrites of encoded frames, for a relay: it forwards a frame's
// bytes and changes only what a hop must (the message id, a call req's ttl
// and tracing field, one added transport header), without decoding the rest.

// SetID rewrites the message id of the frame that starts f.
func SetID(f []byte, id uint32) { binary.BigEndian.PutUint32(f[4:8], id) }

// SetIDs rewrites the message id of every frame in frames, whole frames laid
// one after another (a request's first frame and its continuations).
func SetIDs(frames []byte, id uint32) {
	for at := 0; at+HeaderSize <= len(frames); {
		size := int(binary.BigEndian.Uint16(frames[at:]))
		if size < HeaderSize {
			return
		}
		SetID(frames[at:], id)
		at += size
	}
}

// SetCallReqTTL rewrites the ttl, in milliseconds, of call req frame f.
func SetCallReqTTL(f []byte, ttl uint32) { binary.BigEndian.PutUint32(f[HeaderSize+1:], ttl) }

// SetCallReqTracing rewrites the tracing field of call req frame f.
func SetCallReqTracing(f []byte, t Tracing) { t.Put(f[CallReqTracingOffset:]) }

// AppendCallReqWithHeaders appends to dst a copy of call req frame f (req
// decoded from it) with headers a and b (key, value) set in its transport
// headers: added, or in place of the values the frame had (a duplicate key
// would make the frame invalid); a pair with an empty key is left out (a
// relay hop sets its instance and, when proven, its caller). Its args and
// their checksum are untouched. It reports false, appending nothing, when
// the frame has no header block to extend, a header is invalid, or the
// result would not fit in the frames below.
//
// A first frame too full for the headers (a call whose body fills it) is
// split in two, when its checksum runs over the bytes as one stream (none,
// CRC-32, CRC-32C) and its last chunk is arg2's or arg3's: the tail of that
// chunk moves into a call req continue frame appended after it, which takes
// the frame's flags and checksum, and the first frame gets the checksum of
// what it keeps and the more-fragments flag. The message's later frames are
// then valid as they are: an arg that ends a frame goes on in the next.
// The caller must give every frame appended the new message id (SetIDs).
func AppendCallReqWithHeaders(dst []byte, f *Frame, req *CallReq, a, b [2]string) ([]byte, bool) {
	p := f.Payload
	hdrOff := 1 + 4 + TracingSize + 1 + len(req.Service)
	hdrLen := len(req.Headers)
	if hdrLen == 0 || a[0] == "" || a[0] == b[0] {
		return dst, false
	}
	set := [2][2]string{a, b}
	n := req.Headers.Len()
	size := len(f.Raw)
	for _, kv := range set {
		key, value := kv[0], kv[1]
		if key == "" {
			continue
		}
		if len(key) > MaxHeaderKeySize || len(value) > 255 {
			return dst, false
		}
		size += 2 + len(key) + len(value)
		if old, had := req.Headers.Get(key); had {
			size -= 2 + len(key) + len(old)
		} else if n++; n > MaxHeaders {
			return dst, false
		}
	}
	args := p[hdrOff+hdrLen:]
	var split splitPoint
	if size > MaxFrameSize {
		var ok bool
		if split, ok = splitArgs(args, size-MaxFrameSize); !ok {
			return dst, false
		}
		size -= split.moved
	}
	at := len(dst)
	dst = append(dst, f.Raw[:HeaderSize]...)
	binary.BigEndian.PutUint16(dst[at:], uint16(size))
	flags := len(dst)
	dst = append(dst, p[:hdrOff]...)
	dst = append(dst, byte(n))
	req.Headers.Each(func(k, v []byte) bool {
		if string(k) != a[0] && string(k) != b[0] {
			dst = append(dst, byte(len(k)))
			dst = append(dst, k...)
			dst = append(dst, byte(len(v)))
			dst = append(dst, v...)
		}
		return true
	})
	for _, kv := range set {
		if kv[0] == "" {
			continue
		}
		dst = append(dst, byte(len(kv[0])))
		dst = append(dst, kv[0]...)
		dst = append(dst, byte(len(kv[1])))
		dst = append(dst, kv[1]...)
	}
	if split.moved == 0 {
		return append(dst, args...), true
	}
	return split.appendFrames(dst, flags, f, args), true
}

// splitPoint says where a full first frame's args are cut: the last chunk
// (at lastOff in the args, lastLen bytes) keeps lastLen-moved bytes.
type splitPoint struct {
	csum             ChecksumType
	lastOff, lastLen int
	moved            int
}

// splitArgs finds how to free excess bytes from a first frame's args (from
// its checksum type on): the last chunk's tail, when it is arg2's or arg3's
// and longer than that, under a checksum that runs over the bytes as one
// stream.
func splitArgs(args []byte, excess int) (splitPoint, bool) {
	if len(args) == 0 {
		return splitPoint{}, false
	}
	sp := splitPoint{csum: ChecksumType(args[0]), moved: excess}
	if sp.csum != ChecksumNone && sp.csum != ChecksumCRC32 && sp.csum != ChecksumCRC32C {
		return sp, false // farmhash32 runs per piece: a split piece would change every later frame's sum
	}
	at, chunks := 1+sp.csum.Size(), 0
	for at+2 <= len(args) {
		l := int(binary.BigEndian.Uint16(args[at:]))
		if at+2+l > len(args) {
			return sp, false
		}
		sp.lastOff, sp.lastLen = at, l
		at += 2 + l
		chunks++
	}
	return sp, at == len(args) && chunks >= 2 && sp.lastLen > sp.moved // chunk 0 is arg1: never split
}

// appendFrames writes the first frame's args with its last chunk cut
// (flagsAt is where the first frame's flags byte is in dst), then the
// continue frame with the cut-off tail.
func (sp splitPoint) appendFrames(dst []byte, flagsAt int, f *Frame, args []byte) []byte {
	origFlags := dst[flagsAt]
	dst[flagsAt] |= FlagMoreFragments
	sumLen := sp.csum.Size()
	keep := sp.lastLen - sp.moved
	csumAt := len(dst) + 1
	dst = append(dst, args[:sp.lastOff]...)
	dst = binary.BigEndian.AppendUint16(dst, uint16(keep))
	dst = append(dst, args[sp.lastOff+2:sp.lastOff+2+keep]...)
	if sumLen > 0 { // the first frame's sum covers the bytes it keeps
		var sum uint32
		for at := 1 + sumLen; at < sp.lastOff; {
			l := int(binary.BigEndian.Uint16(args[at:]))
			sum = sp.csum.Update(sum, false, args[at+2:at+2+l])
			at += 2 + l
		}
		sum = sp.csum.Update(sum, false, args[sp.lastOff+2:sp.lastOff+2+keep])
		binary.BigEndian.PutUint32(dst[csumAt:], sum)
	}
	// The continue frame: the frame's own flags, and its sum, which a
	// running CRC gives for the whole of its bytes either way.
	tail := args[sp.lastOff+2+keep : sp.lastOff+2+sp.lastLen]
	at := len(dst)
	dst = append(dst, f.Raw[:HeaderSize]...)
	binary.BigEndian.PutUint16(dst[at:], uint16(HeaderSize+1+1+sumLen+2+len(tail)))
	dst[at+2] = byte(TypeCallReqContinue)
	dst = append(dst, origFlags&FlagMoreFragments, byte(sp.csum))
	dst = append(dst, args[1:1+sumLen]...)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(tail)))
	return append(dst, tail...)
}
