package router

import (
	"bytes"
	"testing"

	"github.com/meshrpc/mesh/frame"
)

// firstFrame encodes a call req and returns its first frame as read back.
func firstFrame(t *testing.T, arg3 int, headers frame.Headers) *frame.Frame {
	t.Helper()
	var frames [][]byte
	w := frame.MessageWriter{Emit: func(b []byte) error { frames = append(frames, bytes.Clone(b)); return nil }}
	w.BeginCallReq(9, &frame.CallReq{TTL: 100, Service: []byte("orders"), Headers: headers, Checksum: frame.ChecksumCRC32})
	if err := w.WriteArgs([]byte("get"), []byte("h"), bytes.Repeat([]byte("b"), arg3)); err != nil {
		t.Fatal(err)
	}
	f, err := frame.NewReader(bytes.NewReader(frames[0])).ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestWithHeader(t *testing.T) {
	cases := []struct {
		name    string
		arg3    int
		headers frame.Headers
		fits    bool
	}{
		{"small call", 100, frame.AppendHeader(nil, "as", "raw"), true},
		{"no headers yet", 100, nil, true},
		{"full first frame", 70000, frame.AppendHeader(nil, "as", "raw"), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := firstFrame(t, tc.arg3, tc.headers)
			var req frame.CallReq
			var frag frame.Fragment
			if err := frame.DecodeCallReq(f.Payload, &req, &frag); err != nil {
				t.Fatal(err)
			}
			out, ok := withHeader(nil, f, &req, HeaderInstance, "orders@10.0.0.1:21300#4")
			if ok != tc.fits {
				t.Fatalf("fits = %v, want %v", ok, tc.fits)
			}
			if !ok {
				return
			}
			g, err := frame.NewReader(bytes.NewReader(out)).ReadFrame()
			if err != nil {
				t.Fatalf("rewritten frame does not read back: %v", err)
			}
			var req2 frame.CallReq
			var frag2 frame.Fragment
			if err := frame.DecodeCallReq(g.Payload, &req2, &frag2); err != nil {
				t.Fatalf("rewritten frame does not decode: %v", err)
			}
			if err := req2.Headers.Validate(); err != nil {
				t.Fatal(err)
			}
			if v, _ := req2.Headers.Get(HeaderInstance); string(v) != "orders@10.0.0.1:21300#4" {
				t.Fatalf("instance header = %q", v)
			}
			if req2.Headers.Len() != tc.headers.Len()+1 || string(req2.Service) != "orders" || req2.TTL != 100 {
				t.Fatalf("fields changed: %d headers, service %q, ttl %d", req2.Headers.Len(), req2.Service, req2.TTL)
			}
			// The args and their checksum are untouched.
			var a frame.Assembler
			if _, err := a.Add(&frag2); err != nil {
				t.Fatalf("args no longer check: %v", err)
			}
			if !bytes.Equal(bytes.Join(frag2.Chunks[:frag2.NumChunks], nil), bytes.Join(frag.Chunks[:frag.NumChunks], nil)) {
				t.Fatal("args changed")
			}
		})
	}
}
