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

// messageArgs reads the frames in b (a call req, then its continue frames),
// checks them in order with an Assembler, and returns all their args' bytes
// joined, the number of frames, and the Assembler's verdict.
func messageArgs(t testing.TB, b []byte) (args []byte, frames int, err error) {
	t.Helper()
	r := NewReader(bytes.NewReader(b))
	var a Assembler
	for {
		f, rerr := r.ReadFrame()
		if rerr == io.EOF {
			return args, frames, err
		}
		if rerr != nil {
			t.Fatalf("frame %d does not read: %v", frames, rerr)
		}
		var frag Fragment
		if frames == 0 {
			var req CallReq
			rerr = DecodeCallReq(f.Payload, &req, &frag)
		} else {
			if f.Type != TypeCallReqContinue {
				t.Fatalf("frame %d is %v", frames, f.Type)
			}
			rerr = DecodeContinue(f.Payload, &frag)
		}
		if rerr != nil {
			t.Fatalf("frame %d does not decode: %v", frames, rerr)
		}
		if _, aerr := a.Add(&frag); aerr != nil && err == nil {
			err = aerr
		}
		args = append(args, bytes.Join(frag.Chunks[:frag.NumChunks], nil)...)
		frames++
	}
}

// A whole message whose first frame is full gets its headers: the first
// frame is split, and the message (split frames, then its own later frames
// untouched) checks and carries the same args, for every checksum type that
// runs as one stream; farmhash, which does not, is left alone.
func TestFullFirstFrameIsSplitForHeaders(t *testing.T) {
	for _, tc := range []struct {
		csum  ChecksumType
		arg3  int
		split bool
	}{
		{ChecksumCRC32C, 70000, true},
		{ChecksumCRC32, 200000, true},
		{ChecksumNone, 65520, true},
		{ChecksumFarm32, 70000, false},
	} {
		var frames [][]byte
		w := MessageWriter{Emit: func(b []byte) error { frames = append(frames, bytes.Clone(b)); return nil }}
		w.BeginCallReq(9, &CallReq{TTL: 100, Service: []byte("orders"), Headers: AppendHeader(nil, "as", "raw"), Checksum: tc.csum})
		body := make([]byte, tc.arg3)
		for i := range body {
			body[i] = byte(i * 7)
		}
		if err := w.WriteArgs([]byte("get"), []byte("h"), body); err != nil {
			t.Fatal(err)
		}
		whole := bytes.Join(frames, nil)
		wantArgs, _, err := messageArgs(t, whole)
		if err != nil {
			t.Fatal(err)
		}
		f, _ := NewReader(bytes.NewReader(frames[0])).ReadFrame()
		var req CallReq
		var frag Fragment
		if err := DecodeCallReq(f.Payload, &req, &frag); err != nil {
			t.Fatal(err)
		}
		out, ok := AppendCallReqWithHeaders(nil, f, &req, [2]string{"mesh-instance", "orders@10.0.0.1:21302#4"}, [2]string{"mesh-caller", "web"})
		if ok != tc.split {
			t.Fatalf("%s: split = %v, want %v", tc.csum, ok, tc.split)
		}
		if !ok {
			continue
		}
		out = append(out, bytes.Join(frames[1:], nil)...)
		got, n, err := messageArgs(t, out)
		if err != nil || n != len(frames)+1 || !bytes.Equal(got, wantArgs) {
			t.Fatalf("%s: %d frames (from %d), args equal %v, check %v", tc.csum, n, len(frames), bytes.Equal(got, wantArgs), err)
		}
		g, _ := NewReader(bytes.NewReader(out)).ReadFrame()
		var req2 CallReq
		var frag2 Fragment
		DecodeCallReq(g.Payload, &req2, &frag2)
		if v, _ := req2.Headers.Get("mesh-caller"); string(v) != "web" || len(g.Raw) > MaxFrameSize {
			t.Fatalf("%s: caller %q in a first frame of %d bytes", tc.csum, v, len(g.Raw))
		}
	}
}

func TestAppendCallReqWithAHeader(t *testing.T) {
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
		{"full first frame", 70000, AppendHeader(nil, "as", "raw"), true, ""},
		{"two headers", 100, AppendHeader(nil, "as", "raw"), true, "web"},
		{"two headers, both already set", 100, AppendHeader(AppendHeader(AppendHeader(nil, "mesh-caller", "forged"), "as", "raw"), "mesh-instance", "x"), true, "web"},
		{"two headers, full first frame", 70000, AppendHeader(nil, "as", "raw"), true, "web"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := firstFrame(t, tc.arg3, tc.headers)
			var req CallReq
			var frag Fragment
			if err := DecodeCallReq(f.Payload, &req, &frag); err != nil {
				t.Fatal(err)
			}
			out, ok := AppendCallReqWithHeaders(nil, f, &req, [2]string{"mesh-instance", "orders@10.0.0.1:21300#4"}, [2]string{})
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
			allArgs, _, _ := messageArgs(t, out)
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
			// The args are untouched, and check (a full first frame is split in two).
			var a Assembler
			if _, err := a.Add(&frag2); err != nil {
				t.Fatalf("args no longer check: %v", err)
			}
			if !bytes.Equal(allArgs, bytes.Join(frag.Chunks[:frag.NumChunks], nil)) {
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
