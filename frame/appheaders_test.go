package frame

import (
	"strings"
	"testing"
)

func TestAppHeaders(t *testing.T) {
	list, _ := AppendAppHeader(nil, "a", "1")
	list, _ = AppendAppHeader(list, "a", "2")
	list, _ = AppendAppHeader(list, "bin", "\x00\xff")
	var got []string
	if err := EachAppHeader(list, func(k, v []byte) bool { got = append(got, string(k)+"="+string(v)); return true }); err != nil ||
		strings.Join(got, ",") != "a=1,a=2,bin=\x00\xff" {
		t.Fatalf("read back %q, %v", got, err)
	}
	for _, bad := range [][]byte{{0}, {0, 1, 0, 1, 'k'}, {0, 1, 0, 1, 'k', 0, 2, 'v'}, append(append([]byte{}, list...), 0)} {
		if err := EachAppHeader(bad, func(k, v []byte) bool { return true }); err == nil {
			t.Errorf("%q was read", bad)
		}
	}
	if err := EachAppHeader(nil, func(k, v []byte) bool { t.Fatal("a header in an empty list"); return true }); err != nil {
		t.Fatal(err)
	}
	if _, err := AppendAppHeader(nil, strings.Repeat("k", 1<<16), ""); err != ErrAppHeadersFull {
		t.Fatalf("a 64 KiB key: %v", err)
	}
	n := 0
	EachAppHeader(list, func(k, v []byte) bool { n++; return false })
	if n != 1 {
		t.Fatalf("read %d headers after fn said stop", n)
	}
	if a := testing.AllocsPerRun(100, func() {
		var found bool
		EachAppHeader(list, func(k, v []byte) bool { found = string(k) == "bin"; return !found })
	}); a != 0 {
		t.Fatalf("%v allocations per read", a)
	}
}
