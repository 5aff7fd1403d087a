package frame

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
)

// message is a call message as the tests build and compare it.
type message struct {
	req  CallReq
	args [3][]byte
}

// encode writes m as frames with message id 7 and returns them.
func encode(t testing.TB, m *message) [][]byte {
	t.Helper()
	var frames [][]byte
	w := MessageWriter{Emit: func(f []byte) error {
		frames = append(frames, bytes.Clone(f))
		return nil
	}}
	if err := w.BeginCallReq(7, &m.req); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteArgs(m.args[0], m.args[1], m.args[2]); err != nil {
		t.Fatal(err)
	}
	return frames
}

// decode reads frames back through a Reader and an Assembler.
func decode(stream []byte) (*message, error) {
	r := NewReader(bytes.NewReader(stream))
	var (
		m    message
		asm  Assembler
		frag Fragment
	)
	for n := 0; ; n++ {
		f, err := r.ReadFrame()
		if err != nil {
			return nil, err
		}
		if f.ID != 7 {
			return nil, fmt.Errorf("frame %d has id %d", n, f.ID)
		}
		switch {
		case n == 0 && f.Type == TypeCallReq:
			if err := DecodeCallReq(f.Payload, &m.req, &frag); err != nil {
				return nil, err
			}
			m.req.Service = bytes.Clone(m.req.Service)
			m.req.Headers = bytes.Clone(m.req.Headers)
		case n > 0 && f.Type == TypeCallReqContinue:
			if err := DecodeContinue(f.Payload, &frag); err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("frame %d has type %s", n, f.Type)
		}
		first, err := asm.Add(&frag)
		if err != nil {
			return nil, err
		}
		for i, chunk := range frag.Chunks[:frag.NumChunks] {
			m.args[first+i] = append(m.args[first+i], chunk...)
		}
		if asm.Done() {
			return &m, nil
		}
	}
}

func sample(csum ChecksumType, sizes [3]int) *message {
	m := &message{req: CallReq{
		TTL:      1500,
		Tracing:  Tracing{SpanID: 1, ParentID: 2, TraceID: 3, Flags: TracingSampled},
		Service:  []byte("orders"),
		Checksum: csum,
	}}
	m.req.Headers = AppendHeader(AppendHeader(nil, "as", "raw"), "cn", "caller")
	for i, n := range sizes {
		m.args[i] = make([]byte, n)
		for j := range m.args[i] {
			m.args[i][j] = byte(j*7 + i)
		}
	}
	return m
}

func TestRoundTrip(t *testing.T) {
	// Sizes around the points where arg2 or arg3 ends exactly at a frame's end.
	prefix := len(encode(t, sample(ChecksumNone, [3]int{0, 0, 0}))[0])
	edge := MaxFrameSize - prefix // bytes of args that fill the first frame exactly
	cases := [][3]int{
		{0, 0, 0}, {3, 0, 0}, {3, 1024, 1024}, {16, 0, 1 << 20}, {5, 3 << 20, 7},
	}
	for d := -3; d <= 3; d++ {
		cases = append(cases,
			[3]int{4, edge - 4 + d, 10},                      // arg2 ends near the first frame's end
			[3]int{4, 0, edge - 4 + d},                       // arg3 ends near it
			[3]int{4, 10, edge - 4 + d + MaxPayloadSize - 8}, // arg3 ends near the second frame's end
			[3]int{MaxArg1Size, edge - MaxArg1Size + d, 1},
		)
	}
	for _, csum := range []ChecksumType{ChecksumNone, ChecksumCRC32, ChecksumFarm32, ChecksumCRC32C} {
		for _, sizes := range cases {
			if sizes[1] < 0 || sizes[2] < 0 {
				continue
			}
			t.Run(fmt.Sprintf("%s/%v", csum, sizes), func(t *testing.T) {
				in := sample(csum, sizes)
				frames := encode(t, in)
				for i, f := range frames {
					if len(f) > MaxFrameSize {
						t.Fatalf("frame %d is %d bytes", i, len(f))
					}
					more := f[HeaderSize]&FlagMoreFragments != 0
					if more != (i < len(frames)-1) {
						t.Fatalf("frame %d of %d: more-fragments flag %v", i, len(frames), more)
					}
				}
				out, err := decode(bytes.Join(frames, nil))
				if err != nil {
					t.Fatal(err)
				}
				for i := range 3 {
					if !bytes.Equal(in.args[i], out.args[i]) {
						t.Fatalf("arg%d: sent %d bytes, got %d", i+1, len(in.args[i]), len(out.args[i]))
					}
				}
				if string(out.req.Service) != "orders" || out.req.TTL != 1500 || out.req.Tracing != in.req.Tracing {
					t.Fatalf("fields changed: %+v", out.req)
				}
				if v, _ := out.req.Headers.Get("cn"); string(v) != "caller" {
					t.Fatalf("cn header = %q", v)
				}
			})
		}
	}
}

// An arg that ends exactly at a frame's end must be closed by a zero-length
// chunk at the start of the next frame.
func TestArgEndingAtFrameEndIsClosedByEmptyChunk(t *testing.T) {
	prefix := len(encode(t, sample(ChecksumNone, [3]int{0, 0, 0}))[0])
	// With arg3 empty the first frame holds 3 chunk headers; leave arg2 the rest.
	m := sample(ChecksumNone, [3]int{2, 0, 5})
	m.args[1] = make([]byte, MaxFrameSize-prefix) // fills frame 1 exactly
	frames := encode(t, m)
	if len(frames) != 2 {
		t.Fatalf("want 2 frames, got %d", len(frames))
	}
	if len(frames[0]) != MaxFrameSize {
		t.Fatalf("first frame is %d bytes, want it full", len(frames[0]))
	}
	var f Fragment
	if err := DecodeContinue(frames[1][HeaderSize:], &f); err != nil {
		t.Fatal(err)
	}
	if f.NumChunks != 2 || len(f.Chunks[0]) != 0 || len(f.Chunks[1]) != 5 {
		t.Fatalf("continue frame chunks = %d, first %d bytes; want an empty chunk then arg3", f.NumChunks, len(f.Chunks[0]))
	}
}

// Farmhash Fingerprint32 checked against vectors published with a farmhash
// library (dgryski/go-farm, which reproduces Google's farmhash.cc).
func TestFarmhashVectors(t *testing.T) {
	for _, v := range []struct {
		in   string
		want uint32
	}{
		{"", 0xdc56d17a},
		{"a", 0x3c973d4d},
		{"abc", 0x2f635ec7},
		{"0123456789", 0x9741ca1a},
		{"size:  a.out:  bad magic", 0xc6246b8d},
		{"Discard medicine more than two years old.", 0xe273108f},
		{"I wouldn't marry him with a ten foot pole.", 0x363394d1},
	} {
		if got := ChecksumFarm32.Update(0, true, []byte(v.in)); got != v.want {
			t.Errorf("Fingerprint32(%q) = %08x, want %08x", v.in, got, v.want)
		}
	}
}

func TestChecksumVectors(t *testing.T) {
	in := []byte("123456789") // the standard check input
	for _, v := range []struct {
		t    ChecksumType
		want uint32
	}{{ChecksumCRC32, 0xcbf43926}, {ChecksumCRC32C, 0xe3069283}} {
		if got := v.t.Update(0, true, in); got != v.want {
			t.Errorf("%s = %08x, want %08x", v.t, got, v.want)
		}
		// Running over two pieces equals the sum over the whole.
		if got := v.t.Update(v.t.Update(0, true, in[:4]), false, in[4:]); got != v.want {
			t.Errorf("%s running = %08x, want %08x", v.t, got, v.want)
		}
	}
}

func TestChecksumMismatchIsRejected(t *testing.T) {
	for _, csum := range []ChecksumType{ChecksumCRC32, ChecksumFarm32, ChecksumCRC32C} {
		frames := encode(t, sample(csum, [3]int{3, 10, 100}))
		frames[0][len(frames[0])-1] ^= 0xFF // flip a byte of arg3
		_, err := decode(bytes.Join(frames, nil))
		if !IsProtocolError(err) {
			t.Errorf("%s: corrupted arg gave %v, want a protocol error", csum, err)
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	good := encode(t, sample(ChecksumCRC32, [3]int{3, 4, 5}))[0]
	headerAt := HeaderSize + 1 + 4 + TracingSize + 1 + len("orders")
	mutate := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	cases := []struct {
		name  string
		frame []byte
		want  string
	}{
		{"truncated tracing", good[:HeaderSize+10], "tracing"},
		{"service runs past the end", good[:HeaderSize+1+4+TracingSize+3], "service"},
		{"unknown checksum type", mutate(func(b []byte) []byte {
			b[len(b)-4-(2+3)-(2+4)-(2+5)-1] = 9
			return b
		}), "checksum type"},
		{"empty header key", mutate(func(b []byte) []byte { b[headerAt+1] = 0; return b }), ""},
		{"duplicate header key", mutate(func(b []byte) []byte {
			b[headerAt+1+1+2+1+3+1] = 'a'
			b[headerAt+1+1+2+1+3+2] = 's'
			return b
		}), "twice"},
		{"four arg chunks", append(bytes.Clone(good), 0, 0), "more than 3"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var (
				m CallReq
				f Fragment
			)
			err := DecodeCallReq(tc.frame[HeaderSize:], &m, &f)
			if err == nil {
				var a Assembler
				_, err = a.Add(&f)
			}
			if !IsProtocolError(err) {
				t.Fatalf("got %v, want a protocol error", err)
			}
			if !bytes.Contains([]byte(err.Error()), []byte(tc.want)) {
				t.Fatalf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

func TestAssemblerRejectsBadSequences(t *testing.T) {
	two := encode(t, sample(ChecksumCRC32C, [3]int{3, 70000, 5}))
	if len(two) != 2 {
		t.Fatalf("want 2 frames, got %d", len(two))
	}
	var (
		a Assembler
		m CallReq
		f Fragment
	)
	DecodeCallReq(two[0][HeaderSize:], &m, &f)
	if _, err := a.Add(&f); err != nil {
		t.Fatal(err)
	}
	// The continue frame with another checksum type.
	bad := bytes.Clone(two[1])
	bad[HeaderSize+1] = byte(ChecksumCRC32)
	DecodeContinue(bad[HeaderSize:], &f)
	if _, err := a.Add(&f); !IsProtocolError(err) {
		t.Fatalf("changed checksum type: %v", err)
	}
	// A last frame with too few args.
	a.Reset()
	short := encode(t, sample(ChecksumNone, [3]int{3, 4, 5}))[0]
	short = short[:len(short)-5-2] // drop arg3's chunk
	DecodeCallReq(short[HeaderSize:], &m, &f)
	if _, err := a.Add(&f); !IsProtocolError(err) {
		t.Fatalf("two args: %v", err)
	}
}

func TestReader(t *testing.T) {
	ping := AppendPing(nil, TypePingReq, 42)
	r := NewReader(bytes.NewReader(append(ping, ping[:5]...)))
	f, err := r.ReadFrame()
	if err != nil || f.Type != TypePingReq || f.ID != 42 || len(f.Payload) != 0 {
		t.Fatalf("ReadFrame = %+v, %v", f, err)
	}
	if _, err := r.ReadFrame(); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("truncated header: %v", err)
	}
	bad := bytes.Clone(ping)
	bad[0], bad[1] = 0, 3
	if _, err := NewReader(bytes.NewReader(bad)).ReadFrame(); !IsProtocolError(err) {
		t.Fatalf("size 3: %v", err)
	}
	if _, err := NewReader(bytes.NewReader(nil)).ReadFrame(); err != io.EOF {
		t.Fatalf("empty stream: %v", err)
	}
	body := append(bytes.Clone(ping[:HeaderSize]), 1, 2, 3)
	body[1] = HeaderSize + 4 // one byte missing
	if _, err := NewReader(bytes.NewReader(body)).ReadFrame(); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("truncated payload: %v", err)
	}
}

func TestControlMessages(t *testing.T) {
	tr := Tracing{SpanID: 9, TraceID: 8, Flags: 1}
	b, err := AppendInit(nil, TypeInitReq, 1, Init{Version: 2, Headers: map[string]string{
		InitHostPort: "1.2.3.4:5", InitProcessName: "p",
	}})
	if err != nil {
		t.Fatal(err)
	}
	in, err := ParseInit(b[HeaderSize:])
	if err != nil || in.Version != 2 || in.Headers[InitHostPort] != "1.2.3.4:5" || len(in.Headers) != 2 {
		t.Fatalf("init = %+v, %v", in, err)
	}
	many := map[string]string{}
	for i := range MaxInitHeaders + 1 {
		many[fmt.Sprint("h", i)] = "v"
	}
	b, _ = AppendInit(nil, TypeInitReq, 1, Init{Version: 2, Headers: many})
	if _, err := ParseInit(b[HeaderSize:]); !IsProtocolError(err) {
		t.Fatalf("an init with %d headers: %v, want a protocol error", len(many), err)
	}
	b, _ = AppendCancel(nil, 3, Cancel{TTL: 5, Tracing: tr, Why: []byte("bye")})
	c, err := DecodeCancel(b[HeaderSize:])
	if err != nil || c.TTL != 5 || c.Tracing != tr || string(c.Why) != "bye" {
		t.Fatalf("cancel = %+v, %v", c, err)
	}
	claim := tr.appendTo(binary.BigEndian.AppendUint32(nil, 6)) // mesh never sends one
	ttl, ctr, err := DecodeClaim(claim)
	if err != nil || ttl != 6 || ctr != tr {
		t.Fatalf("claim = %d %+v %v", ttl, ctr, err)
	}
	long := bytes.Repeat([]byte("x"), 70000)
	b = AppendError(nil, 4, ErrorMsg{Code: ErrCodeBusy, Tracing: tr, Message: long})
	if len(b) != MaxFrameSize {
		t.Fatalf("long error frame is %d bytes, want it cut to the limit", len(b))
	}
	e, err := DecodeError(b[HeaderSize:])
	if err != nil || e.Code != ErrCodeBusy || e.Tracing != tr {
		t.Fatalf("error = %+v, %v", e, err)
	}
	if _, err := DecodeError(make([]byte, 1+TracingSize+2)); !IsProtocolError(err) {
		t.Fatalf("code 0: %v", err)
	}
}

func TestHeadersLimits(t *testing.T) {
	var h Headers
	for i := range MaxHeaders + 1 {
		h = AppendHeader(h, fmt.Sprintf("k%d", i), "v")
	}
	if err := h.Validate(); !IsProtocolError(err) {
		t.Fatalf("129 headers: %v", err)
	}
	if err := AppendHeader(nil, "seventeen-bytes!!", "v").Validate(); !IsProtocolError(err) {
		t.Fatalf("17-byte key: %v", err)
	}
	var w MessageWriter
	w.Emit = func([]byte) error { return nil }
	if err := w.BeginCallReq(1, &CallReq{Service: []byte("s"), Headers: h}); err == nil {
		t.Fatal("writer accepted 129 headers")
	}
	w.BeginCallReq(1, &CallReq{Service: []byte("s")})
	if _, err := w.Write(make([]byte, MaxArg1Size+1)); !IsProtocolError(err) {
		t.Fatalf("oversized arg1: %v", err)
	}
}

func TestRandomMessages(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		sizes := [3]int{rng.IntN(200), rng.IntN(200000), rng.IntN(200000)}
		csum := ChecksumType(rng.IntN(4))
		in := sample(csum, sizes)
		out, err := decode(bytes.Join(encode(t, in), nil))
		if err != nil {
			t.Fatalf("%v %s: %v", sizes, csum, err)
		}
		for i := range 3 {
			if !bytes.Equal(in.args[i], out.args[i]) {
				t.Fatalf("%v %s: arg%d differs", sizes, csum, i+1)
			}
		}
	}
}

// CallReqArg1 finds the method without decoding the rest, whatever the
// checksum, and says nil when the frame does not hold it whole.
func TestCallReqArg1(t *testing.T) {
	for _, cs := range []ChecksumType{ChecksumNone, ChecksumCRC32, ChecksumFarm32, ChecksumCRC32C} {
		for _, fr := range encode(t, sample(cs, [3]int{3, 10, 20})) {
			payload := fr[HeaderSize:]
			var req CallReq
			var frag Fragment
			if err := DecodeCallReq(payload, &req, &frag); err != nil {
				t.Fatal(err)
			}
			if got := CallReqArg1(payload, &req); !bytes.Equal(got, frag.Chunks[0]) {
				t.Fatalf("%v: arg1 %q, want %q", cs, got, frag.Chunks[0])
			}
			for cut := 1; cut < len(frag.Chunks[0])+3; cut++ { // cut inside arg1 or its length
				if got := CallReqArg1(payload[:len(payload)-len(frag.Chunks[1])-len(frag.Chunks[2])-4-cut], &req); got != nil {
					t.Fatalf("%v: a frame cut %d bytes short of arg1's end gave %q", cs, cut, got)
				}
			}
			break // the first frame is the one with arg1
		}
	}
}

// CallReqArg2 finds the application headers of a first frame that holds
// them whole, and says nil otherwise.
func TestCallReqArg2(t *testing.T) {
	for _, cs := range []ChecksumType{ChecksumNone, ChecksumCRC32, ChecksumFarm32, ChecksumCRC32C} {
		fr := encode(t, sample(cs, [3]int{3, 10, 20}))[0]
		payload := fr[HeaderSize:]
		var req CallReq
		var frag Fragment
		if err := DecodeCallReq(payload, &req, &frag); err != nil {
			t.Fatal(err)
		}
		if got := CallReqArg2(payload, &req); !bytes.Equal(got, frag.Chunks[1]) {
			t.Fatalf("%v: arg2 %q, want %q", cs, got, frag.Chunks[1])
		}
		cut := payload[:len(payload)-len(frag.Chunks[2])-2-5] // inside arg2
		if got := CallReqArg2(cut, &req); got != nil {
			t.Fatalf("%v: a frame cut inside arg2 gave %q", cs, got)
		}
	}
}
