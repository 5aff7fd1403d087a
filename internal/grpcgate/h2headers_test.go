package grpcgate

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Header blocks read as x/net's ReadMetaHeaders read them: split over
// CONTINUATIONs, the peer's dynamic table kept across blocks, the limit,
// and each malformation its stream or connection error.
func TestHeaderReader(t *testing.T) {
	request := []hpack.HeaderField{{Name: ":method", Value: "POST"}, {Name: ":path", Value: "/a.B/C"}, {Name: "content-type", Value: "application/grpc"}, {Name: "rpc-service", Value: "words"}}
	long := hpack.HeaderField{Name: "x-long", Value: strings.Repeat("v", 900)}
	mid := hpack.HeaderField{Name: "x-mid", Value: strings.Repeat("m", 250)}
	for _, tc := range []struct {
		name      string
		blocks    [][]hpack.HeaderField
		split     int // bytes per frame of the last block; 0: one frame
		max       uint32
		truncated bool
		stream    bool // a StreamError
		conn      http2.ErrCode
	}{
		{name: "request", blocks: [][]hpack.HeaderField{request}},
		{name: "the table kept across blocks", blocks: [][]hpack.HeaderField{request, request, request}},
		{name: "continuations", blocks: [][]hpack.HeaderField{append(request[:4:4], long)}, split: 100},
		{name: "response", blocks: [][]hpack.HeaderField{{{Name: ":status", Value: "200"}, {Name: "grpc-status", Value: "0"}}}},
		{name: "past the limit", blocks: [][]hpack.HeaderField{append(request[:4:4], mid, mid)}, max: 500, truncated: true},
		{name: "one value past the limit", blocks: [][]hpack.HeaderField{append(request[:4:4], long)}, max: 500, conn: http2.ErrCodeCompression},
		{name: "far past the limit", blocks: [][]hpack.HeaderField{append(request[:4:4], long, long, long)}, max: 200, conn: http2.ErrCodeProtocol},
		{name: "upper case name", blocks: [][]hpack.HeaderField{append(request[:4:4], hpack.HeaderField{Name: "X-Up", Value: "v"})}, stream: true},
		{name: "bad value", blocks: [][]hpack.HeaderField{append(request[:4:4], hpack.HeaderField{Name: "x", Value: "a\x00b"})}, stream: true},
		{name: "pseudo after regular", blocks: [][]hpack.HeaderField{append(request[2:4:4], request[0])}, stream: true},
		{name: "unknown pseudo", blocks: [][]hpack.HeaderField{{{Name: ":what", Value: "x"}}}, stream: true},
		{name: "pseudo twice", blocks: [][]hpack.HeaderField{{request[0], request[0]}}, stream: true},
		{name: "request and response", blocks: [][]hpack.HeaderField{{request[0], {Name: ":status", Value: "200"}}}, stream: true},
		{name: "a bad name with continuations after it", blocks: [][]hpack.HeaderField{{{Name: "X-Up", Value: "v"}, long}}, split: 50, conn: http2.ErrCodeProtocol},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var wire bytes.Buffer
			fw := http2.NewFramer(&wire, nil)
			var hb bytes.Buffer
			enc := hpack.NewEncoder(&hb)
			for i, fields := range tc.blocks {
				hb.Reset()
				for _, f := range fields {
					enc.WriteField(f)
				}
				block := hb.Bytes()
				first := block
				if i == len(tc.blocks)-1 && tc.split > 0 {
					first = block[:tc.split]
				}
				fw.WriteHeaders(http2.HeadersFrameParam{StreamID: uint32(2*i + 1), BlockFragment: first, EndHeaders: len(first) == len(block), EndStream: true})
				for rest := block[len(first):]; len(rest) > 0; {
					n := min(tc.split, len(rest))
					fw.WriteContinuation(uint32(2*i+1), n == len(rest), rest[:n])
					rest = rest[n:]
				}
			}
			fr := http2.NewFramer(nil, &wire)
			max := tc.max
			if max == 0 {
				max = DefaultMaxHeaderList
			}
			r := newHeaderReader(fr, max)
			for i, fields := range tc.blocks {
				f, err := fr.ReadFrame()
				if err != nil {
					t.Fatal(err)
				}
				b, err := r.read(f.(*http2.HeadersFrame))
				last := i == len(tc.blocks)-1
				var se http2.StreamError
				var ce http2.ConnectionError
				switch {
				case last && tc.stream:
					if !errors.As(err, &se) || se.StreamID != uint32(2*i+1) {
						t.Fatalf("got %v, want a stream error", err)
					}
					return
				case last && tc.conn != 0:
					if !errors.As(err, &ce) || http2.ErrCode(ce) != tc.conn {
						t.Fatalf("got %v, want connection error %v", err, tc.conn)
					}
					return
				case err != nil:
					t.Fatal(err)
				}
				if !b.ended || b.streamID != uint32(2*i+1) || b.truncated != (last && tc.truncated) {
					t.Fatalf("block %d: ended %v, stream %d, truncated %v", i, b.ended, b.streamID, b.truncated)
				}
				if b.truncated {
					if len(b.fields) != 5 {
						t.Fatalf("truncated: %d fields kept, want the 5 before the limit", len(b.fields))
					}
					continue
				}
				if len(b.fields) != len(fields) {
					t.Fatalf("block %d: %d fields, want %d", i, len(b.fields), len(fields))
				}
				for j, f := range fields {
					if b.fields[j].Name != f.Name || b.fields[j].Value != f.Value {
						t.Fatalf("block %d field %d: %v, want %v", i, j, b.fields[j], f)
					}
				}
			}
		})
	}
}

// A block's pseudo-headers and regular fields are told apart.
func TestHeaderBlockParts(t *testing.T) {
	b := headerBlock{fields: []hpack.HeaderField{{Name: ":status", Value: "200"}, {Name: "a", Value: "1"}, {Name: "b", Value: "2"}}}
	if b.pseudo("status") != "200" || b.pseudo("path") != "" || len(b.regular()) != 2 || b.regular()[0].Name != "a" {
		t.Fatalf("pseudo %q, regular %v", b.pseudo("status"), b.regular())
	}
	if (&headerBlock{fields: b.fields[:1]}).regular() != nil {
		t.Fatal("regular fields in a block of pseudo-headers only")
	}
}

// Any header block, split anywhere over CONTINUATIONs, reads as fields
// within the limit or as an error; the decoder survives to the next block.
func FuzzHeaderReader(f *testing.F) {
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, hf := range []hpack.HeaderField{{Name: ":method", Value: "POST"}, {Name: ":path", Value: "/a.B/C"}, {Name: "rpc-service", Value: "words"}} {
		enc.WriteField(hf)
	}
	f.Add(hb.Bytes(), uint8(3))
	f.Add([]byte{0x3f, 0xe1, 0x1f}, uint8(0)) // a table size update past the limit
	f.Add([]byte{0x40, 0x01, 'X', 0x01, 'y'}, uint8(1))
	f.Fuzz(func(t *testing.T, block []byte, split uint8) {
		var wire bytes.Buffer
		fw := http2.NewFramer(&wire, nil)
		first := block[:min(int(split), len(block))]
		fw.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: first, EndHeaders: len(first) == len(block), EndStream: true})
		if rest := block[len(first):]; len(rest) > 0 {
			fw.WriteContinuation(1, true, rest)
		}
		fw.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: hb.Bytes(), EndHeaders: true})
		fr := http2.NewFramer(nil, &wire)
		const max = 512
		r := newHeaderReader(fr, max)
		fm, err := fr.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		b, err := r.read(fm.(*http2.HeadersFrame))
		if err != nil {
			var se http2.StreamError
			if !errors.As(err, &se) {
				return // the connection would end here
			}
		} else {
			size := uint32(0)
			for _, hf := range b.fields {
				size += hf.Size()
			}
			if size > max {
				t.Fatalf("%d bytes of fields past a %d limit", size, max)
			}
		}
		fm, err = fr.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		r.read(fm.(*http2.HeadersFrame)) // no panic, whatever the table holds
	})
}

// The fields encoded once are what an encoder writes for them, and a block
// of them and others, from an encoder fresh from the pool or not, decodes
// to its fields in order with a stock decoder, whatever field comes first.
func TestConstFields(t *testing.T) {
	for f, b := range constFields {
		e := newEncoder()
		e.enc.WriteField(f)
		if !bytes.Equal(e.buf.Bytes(), b) {
			t.Errorf("%v: encoded once as %x, an encoder writes %x", f, b, e.buf.Bytes())
		}
	}
	blocks := [][]hpack.HeaderField{
		{status200, contentType, {Name: "x-id", Value: "7"}},
		{{Name: "x-id", Value: "7"}, statusOKField, {Name: "grpc-message", Value: "fine"}},
		{methodPOST, schemeHTTP, {Name: ":path", Value: "/p.S/M"}, {Name: ":authority", Value: "words"}, contentType, teTrailers, userAgent},
		{statusOKField},
	}
	for round := 0; round < 2; round++ { // the first from fresh encoders, then reused ones
		for _, want := range blocks {
			if round == 0 {
				encoders.Put(newEncoder())
			}
			b := appendHeaders(nil, 1, 16384, true, want)
			got, err := hpack.NewDecoder(4096, nil).DecodeFull(b[9:])
			if err != nil {
				t.Fatalf("%v: %v", want, err)
			}
			if !slices.Equal(got, want) {
				t.Fatalf("decoded %v, want %v", got, want)
			}
		}
	}
}
