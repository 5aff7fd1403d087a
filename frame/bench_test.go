package frame

import (
	"testing"
)

// BenchmarkEncodeCallReq1K builds a 1 KiB call req into a reused buffer,
// the way the connection layer does.
func BenchmarkEncodeCallReq1K(b *testing.B) {
	m := sample(ChecksumCRC32C, [3]int{8, 32, 1024})
	out := make([]byte, 0, 4096)
	w := MessageWriter{Emit: func(f []byte) error {
		out = append(out[:0], f...)
		return nil
	}}
	b.ReportAllocs()
	b.SetBytes(1024)
	for b.Loop() {
		w.BeginCallReq(7, &m.req)
		if err := w.WriteArgs(m.args[0], m.args[1], m.args[2]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeCallReq1K decodes and checks the same frame.
func BenchmarkDecodeCallReq1K(b *testing.B) {
	fr := encode(b, sample(ChecksumCRC32C, [3]int{8, 32, 1024}))[0]
	var (
		req  CallReq
		frag Fragment
		asm  Assembler
		n    int
	)
	b.ReportAllocs()
	b.SetBytes(1024)
	for b.Loop() {
		if err := DecodeCallReq(fr[HeaderSize:], &req, &frag); err != nil {
			b.Fatal(err)
		}
		if _, ok := req.Headers.Get("cn"); !ok {
			b.Fatal("no cn")
		}
		asm.Reset()
		first, err := asm.Add(&frag)
		if err != nil || first != 0 {
			b.Fatal(err)
		}
		for _, c := range frag.Chunks[:frag.NumChunks] {
			n += len(c)
		}
	}
}
