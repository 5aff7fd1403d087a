package frame

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// The application headers of the thrift arg scheme (and of YARPC's proto
// encoding, which keeps thrift's) travel in arg2 as a list:
// nh:2 (k~2 v~2){nh}. An empty arg2 is an empty list.

// EachAppHeader calls fn with every header of an arg2 list, as slices of
// it, until fn returns false. It fails on a list cut short, and on bytes
// after its last header (when it read to the end). It allocates nothing.
func EachAppHeader(list []byte, fn func(k, v []byte) bool) error {
	if len(list) == 0 {
		return nil
	}
	if len(list) < 2 {
		return fmt.Errorf("application headers of %d bytes: no count", len(list))
	}
	n, off := int(binary.BigEndian.Uint16(list)), 2
	str := func() ([]byte, bool) {
		if off+2 > len(list) {
			return nil, false
		}
		l := int(binary.BigEndian.Uint16(list[off:]))
		off += 2
		if off+l > len(list) {
			return nil, false
		}
		off += l
		return list[off-l : off], true
	}
	for i := range n {
		k, ok := str()
		v, ok2 := str()
		if !ok || !ok2 {
			return fmt.Errorf("application headers: header %d of %d is cut short", i+1, n)
		}
		if !fn(k, v) {
			return nil
		}
	}
	if off != len(list) {
		return fmt.Errorf("application headers: %d bytes after the last header", len(list)-off)
	}
	return nil
}

// ErrAppHeadersFull is AppendAppHeader's answer for a header past what the
// list can hold: 65,535 headers, each key and value 65,535 bytes.
var ErrAppHeadersFull = errors.New("more application headers, or longer ones, than arg2's list can hold")

// AppendAppHeader adds k=v to an arg2 list (an empty one is started).
func AppendAppHeader(list []byte, k, v string) ([]byte, error) {
	if len(list) < 2 {
		list = append(list[:0], 0, 0)
	}
	n := binary.BigEndian.Uint16(list)
	if n == 0xffff || len(k) > 0xffff || len(v) > 0xffff {
		return list, ErrAppHeadersFull
	}
	binary.BigEndian.PutUint16(list, n+1)
	list = binary.BigEndian.AppendUint16(list, uint16(len(k)))
	list = append(list, k...)
	list = binary.BigEndian.AppendUint16(list, uint16(len(v)))
	return append(list, v...), nil
}
