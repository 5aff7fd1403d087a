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

// AppendCallReqWithHeader appends to dst a copy of call req frame f (req
// decoded from it) with key=value set in its transport headers: added, or in
// place of the value the frame had (a duplicate key would make the frame
// invalid); its args and their checksum are untouched. It reports false,
// appending nothing, when the frame has no header block to extend, the
// header is invalid, or the result would not fit in a frame.
func AppendCallReqWithHeader(dst []byte, f *Frame, req *CallReq, key, value string) ([]byte, bool) {
	return AppendCallReqWithHeaders(dst, f, req, [2]string{key, value}, [2]string{})
}

// AppendCallReqWithHeaders is AppendCallReqWithHeader for two headers at
// once (a relay hop's instance and caller); a pair with an empty key is
// left out.
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
	if size > MaxFrameSize {
		return dst, false
	}
	at := len(dst)
	dst = append(dst, f.Raw[:HeaderSize]...)
	binary.BigEndian.PutUint16(dst[at:], uint16(size))
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
	return append(dst, p[hdrOff+hdrLen:]...), true
}
