package frame

import (
	"bytes"
	"testing"
)

// FuzzDecode feeds arbitrary bytes to the frame reader and every payload
// decoder. Nothing may panic, and whatever decodes must respect the limits.
func FuzzDecode(f *testing.F) {
	for _, sizes := range [][3]int{{0, 0, 0}, {3, 10, 20}, {5, 70000, 3}} {
		for _, fr := range encode(f, sample(ChecksumCRC32, sizes)) {
			f.Add(fr)
		}
	}
	f.Add(AppendPing(nil, TypePingReq, 1))
	f.Add(AppendError(nil, 1, ErrorMsg{Code: ErrCodeBusy, Message: []byte("busy")}))
	b, _ := AppendInit(nil, TypeInitReq, 1, Init{Version: 2, Headers: map[string]string{"host_port": "a:1"}})
	f.Add(b)
	b, _ = AppendCancel(nil, 1, Cancel{Why: []byte("x")})
	f.Add(b)
	r := NewReader(nil) // reused: a fresh 64 KiB buffer per input slows fuzzing tenfold
	f.Fuzz(func(t *testing.T, data []byte) {
		r.Reset(bytes.NewReader(data))
		var (
			asm  Assembler
			frag Fragment
			req  CallReq
			res  CallRes
		)
		for range 64 {
			fr, err := r.ReadFrame()
			if err != nil {
				return
			}
			if int(fr.Size) != len(fr.Payload)+HeaderSize {
				t.Fatalf("size %d but payload %d", fr.Size, len(fr.Payload))
			}
			var derr error
			switch fr.Type {
			case TypeInitReq, TypeInitRes:
				_, derr = ParseInit(fr.Payload)
			case TypeCallReq:
				if derr = DecodeCallReq(fr.Payload, &req, &frag); derr == nil {
					if err := req.Headers.Validate(); err != nil {
						t.Fatalf("decoded headers fail validation: %v", err)
					}
					// The shortcut to the method agrees with the full decode.
					if arg1 := CallReqArg1(fr.Payload, &req); frag.NumChunks > 0 && !bytes.Equal(arg1, frag.Chunks[0]) {
						t.Fatalf("CallReqArg1 %q, decoded arg1 %q", arg1, frag.Chunks[0])
					}
					checkRewrites(t, fr, &req, &frag)
					asm.Reset()
				}
			case TypeCallRes:
				if derr = DecodeCallRes(fr.Payload, &res, &frag); derr == nil {
					asm.Reset()
				}
			case TypeCallReqContinue, TypeCallResContinue:
				derr = DecodeContinue(fr.Payload, &frag)
			case TypeCancel:
				_, derr = DecodeCancel(fr.Payload)
			case TypeClaim:
				_, _, derr = DecodeClaim(fr.Payload)
			case TypeError:
				_, derr = DecodeError(fr.Payload)
			default:
				continue
			}
			if derr != nil {
				if !IsProtocolError(derr) {
					t.Fatalf("decode error is not a protocol error: %v", derr)
				}
				continue
			}
			switch fr.Type {
			case TypeCallReq, TypeCallRes, TypeCallReqContinue, TypeCallResContinue:
				first, err := asm.Add(&frag)
				if err == nil && (first < 0 || first+frag.NumChunks-1 > 2) {
					t.Fatalf("chunks %d..%d are past arg3", first, first+frag.NumChunks-1)
				}
				if err != nil && !IsProtocolError(err) {
					t.Fatalf("assembler error is not a protocol error: %v", err)
				}
				if err != nil || asm.Done() {
					asm.Reset()
				}
			}
		}
	})
}

// checkRewrites holds the relay's in-place rewrites of a decoded call req to
// their promise: the rewritten frame decodes, with only the rewritten field
// changed (and, with a header added, the same args).
func checkRewrites(t *testing.T, fr *Frame, req *CallReq, frag *Fragment) {
	b := bytes.Clone(fr.Raw)
	SetID(b, fr.ID+1)
	SetCallReqTTL(b, req.TTL+1)
	SetCallReqTracing(b, Tracing{SpanID: 7, TraceID: 9, Flags: 1})
	var r2 CallReq
	var f2 Fragment
	if err := DecodeCallReq(b[HeaderSize:], &r2, &f2); err != nil {
		t.Fatalf("rewritten call req does not decode: %v", err)
	}
	if h, _ := ParseHeader(b); h.ID != fr.ID+1 || r2.TTL != req.TTL+1 || r2.Tracing.SpanID != 7 || !bytes.Equal(r2.Service, req.Service) {
		t.Fatalf("rewrites: id %d ttl %d tracing %+v service %q", h.ID, r2.TTL, r2.Tracing, r2.Service)
	}
	out, ok := AppendCallReqWithHeaders(nil, fr, req, [2]string{"mesh-instance", "svc@10.0.0.1:21300#1"}, [2]string{})
	if !ok {
		return
	}
	g, err := NewReader(bytes.NewReader(out)).ReadFrame()
	if err != nil {
		t.Fatalf("frame with a header added does not read: %v", err)
	}
	if err := DecodeCallReq(g.Payload, &r2, &f2); err != nil {
		t.Fatalf("frame with a header added does not decode: %v", err)
	}
	want := req.Headers.Len() + 1
	if _, had := req.Headers.Get("mesh-instance"); had {
		want-- // set in place: a key never appears twice
	}
	if v, _ := r2.Headers.Get("mesh-instance"); string(v) != "svc@10.0.0.1:21300#1" || r2.Headers.Len() != want {
		t.Fatalf("added header %q, %d headers from %d", v, r2.Headers.Len(), req.Headers.Len())
	}
	// The args are the same (a full first frame is split in two), and check
	// if they did before.
	var before Assembler
	_, origErr := before.Add(frag)
	args, _, err := messageArgs(t, out)
	if !bytes.Equal(args, bytes.Join(frag.Chunks[:frag.NumChunks], nil)) {
		t.Fatal("adding a header changed the args")
	}
	if origErr == nil && err != nil {
		t.Fatalf("args that checked no longer do after adding a header: %v", err)
	}
}
