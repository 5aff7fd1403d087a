package frame

import (
	"bytes"
	"io"
	"testing"
)

// firstFrame encodes a call req and returns its first frame as read back.
func firstFrame(t *testing.T, arg3 int, headers Headers) *Frame {
	t.Helper()
	var frames [][]byte
	w := MessageWriter{Emit: func(b []byte) error { frames = append(frames, bytes.Clone(b)); return nil }}
	w.BeginCallReq(9, &CallReq{TTL: 100, Service: []byte("orders"), Headers: headers, Checksum: ChecksumCRC32})
	if err := w.WriteArgs([]byte("get"), []byte("h"), bytes.Repeat([]byte("b"), arg3)); err != nil {
		t.Fatal(err)
	}
	f, err := NewReader(bytes.NewReader(frames[0])).ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestAppendCallReqWithHeader(t *testing.T) {
	cases := []struct {
		name    string
		arg3    int
		headers Headers
		fits    bool
		caller  string // a second header, mesh-caller, when set
	}{
		{"small call", 100, AppendHeader(nil, "as", "raw"), true, ""},
		{"header already set (by a caller)", 100, AppendHeader(AppendHeader(nil, "mesh-instance", "forged"), "as", "raw"), true, ""},
		{"no headers yet", 100, nil, true, ""},
		{"full first frame", 70000, AppendHeader(nil, "as", "raw"), false, ""},
		{"two headers", 100, AppendHeader(nil, "as", "raw"), true, "web"},
		{"two headers, both already set", 100, AppendHeader(AppendHeader(AppendHeader(nil, "mesh-caller", "forged"), "as", "raw"), "mesh-instance", "x"), true, "web"},
		{"two headers, full first frame", 70000, AppendHeader(nil, "as", "raw"), false, "web"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := firstFrame(t, tc.arg3, tc.headers)
			var req CallReq
			var frag Fragment
			if err := DecodeCallReq(f.Payload, &req, &frag); err != nil {
				t.Fatal(err)
			}
			out, ok := AppendCallReqWithHeader(nil, f, &req, "mesh-instance", "orders@10.0.0.1:21300#4")
			if tc.caller != "" {
				out, ok = AppendCallReqWithHeaders(nil, f, &req, [2]string{"mesh-instance", "orders@10.0.0.1:21300#4"}, [2]string{"mesh-caller", tc.caller})
			}
			if ok != tc.fits {
				t.Fatalf("fits = %v, want %v", ok, tc.fits)
			}
			if !ok {
				return
			}
			g, err := NewReader(bytes.NewReader(out)).ReadFrame()
			if err != nil {
				t.Fatalf("rewritten frame does not read back: %v", err)
			}
			var req2 CallReq
			var frag2 Fragment
			if err := DecodeCallReq(g.Payload, &req2, &frag2); err != nil {
				t.Fatalf("rewritten frame does not decode: %v", err)
			}
			if err := req2.Headers.Validate(); err != nil {
				t.Fatal(err)
			}
			if v, _ := req2.Headers.Get("mesh-instance"); string(v) != "orders@10.0.0.1:21300#4" {
				t.Fatalf("instance header = %q", v)
			}
			want := tc.headers.Len() + 1
			if _, had := tc.headers.Get("mesh-instance"); had {
				want--
			}
			if tc.caller != "" {
				if v, _ := req2.Headers.Get("mesh-caller"); string(v) != tc.caller {
					t.Fatalf("caller header = %q", v)
				}
				if _, had := tc.headers.Get("mesh-caller"); !had {
					want++
				}
			}
			if req2.Headers.Len() != want || string(req2.Service) != "orders" || req2.TTL != 100 {
				t.Fatalf("fields changed: %d headers, service %q, ttl %d", req2.Headers.Len(), req2.Service, req2.TTL)
			}
			// The args and their checksum are untouched.
			var a Assembler
			if _, err := a.Add(&frag2); err != nil {
				t.Fatalf("args no longer check: %v", err)
			}
			if !bytes.Equal(bytes.Join(frag2.Chunks[:frag2.NumChunks], nil), bytes.Join(frag.Chunks[:frag.NumChunks], nil)) {
				t.Fatal("args changed")
			}
		})
	}
}

// The in-place rewrites change their field and nothing else: the frame
// still decodes, with the other fields as they were.
func TestRewritesInPlace(t *testing.T) {
	for _, tc := range []struct {
		name    string
		rewrite func(b []byte)
		check   func(t *testing.T, h Header, req *CallReq)
	}{
		{"id", func(b []byte) { SetID(b, 77) }, func(t *testing.T, h Header, req *CallReq) {
			if h.ID != 77 || req.TTL != 100 {
				t.Fatalf("id %d ttl %d", h.ID, req.TTL)
			}
		}},
		{"ttl", func(b []byte) { SetCallReqTTL(b, 12345) }, func(t *testing.T, h Header, req *CallReq) {
			if h.ID != 9 || req.TTL != 12345 {
				t.Fatalf("id %d ttl %d", h.ID, req.TTL)
			}
		}},
		{"tracing", func(b []byte) { SetCallReqTracing(b, Tracing{SpanID: 1, ParentID: 2, TraceID: 3, Flags: 1}) }, func(t *testing.T, h Header, req *CallReq) {
			if req.Tracing != (Tracing{SpanID: 1, ParentID: 2, TraceID: 3, Flags: 1}) || req.TTL != 100 || string(req.Service) != "orders" {
				t.Fatalf("tracing %+v ttl %d service %q", req.Tracing, req.TTL, req.Service)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := firstFrame(t, 100, AppendHeader(nil, "as", "raw"))
			b := bytes.Clone(f.Raw)
			tc.rewrite(b)
			g, err := NewReader(bytes.NewReader(b)).ReadFrame()
			if err != nil {
				t.Fatal(err)
			}
			var req CallReq
			var frag Fragment
			if err := DecodeCallReq(g.Payload, &req, &frag); err != nil {
				t.Fatal(err)
			}
			tc.check(t, g.Header, &req)
		})
	}
}

// SetIDs renumbers every frame of a request laid end to end.
func TestSetIDs(t *testing.T) {
	var all []byte
	w := MessageWriter{Emit: func(b []byte) error { all = append(all, b...); return nil }}
	w.BeginCallReq(9, &CallReq{TTL: 100, Service: []byte("orders"), Checksum: ChecksumCRC32})
	if err := w.WriteArgs([]byte("get"), nil, bytes.Repeat([]byte("b"), 200000)); err != nil {
		t.Fatal(err)
	}
	SetIDs(all, 5)
	r := NewReader(bytes.NewReader(all))
	n := 0
	for ; ; n++ {
		f, err := r.ReadFrame()
		if err == io.EOF {
			break
		}
		if err != nil || f.ID != 5 {
			t.Fatalf("frame %d: id %v, %v", n, f, err)
		}
	}
	if n < 4 {
		t.Fatalf("only %d frames", n)
	}
}
