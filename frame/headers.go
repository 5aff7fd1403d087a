package frame

import "bytes"

// Limits of transport headers (nh:1 (k~1 v~1){nh}).
const (
	MaxHeaders       = 128
	MaxHeaderKeySize = 16
)

// Well-known transport header keys.
const (
	HeaderArgScheme       = "as"
	HeaderCallerName      = "cn"
	HeaderRetryFlags      = "re"
	HeaderShardKey        = "sk"
	HeaderFailureDomain   = "fd"
	HeaderSpeculative     = "se"
	HeaderRoutingDelegate = "rd"
	HeaderRoutingKey      = "rk"
)

// Headers is an encoded block of transport headers, the count byte included,
// exactly as it stands on the wire. Keeping it encoded lets a relay forward it
// untouched and lets lookups run without allocating. The zero value is an
// empty block.
type Headers []byte

// AppendHeader returns h with key=value added. It does not check limits; the
// encoders do (see Headers.Validate).
func AppendHeader(h Headers, key, value string) Headers {
	if len(h) == 0 {
		h = append(h, 0)
	}
	h[0]++
	h = append(h, byte(len(key)))
	h = append(h, key...)
	h = append(h, byte(len(value)))
	return append(h, value...)
}

// Len is the number of headers in the block.
func (h Headers) Len() int {
	if len(h) == 0 {
		return 0
	}
	return int(h[0])
}

// Get returns the value of key and whether it is present.
func (h Headers) Get(key string) ([]byte, bool) {
	var found []byte
	ok := false
	h.Each(func(k, v []byte) bool {
		if string(k) == key {
			found, ok = v, true
			return false
		}
		return true
	})
	return found, ok
}

// Each calls fn for every header in order until fn returns false. The block
// must be valid (decoded blocks are).
func (h Headers) Each(fn func(key, value []byte) bool) {
	if len(h) == 0 {
		return
	}
	c := cursor{b: h[1:]}
	for i := 0; i < int(h[0]); i++ {
		k := c.bytes1("header key")
		v := c.bytes1("header value")
		if c.err != nil || !fn(k, v) {
			return
		}
	}
}

// Validate checks the rules of transport headers: at most 128, keys of 1 to
// 16 bytes, no duplicate keys, values of at most 255 bytes, and nothing after
// the last header.
func (h Headers) Validate() error {
	if len(h) == 0 {
		return nil
	}
	_, err := parseHeaders(&cursor{b: h})
	if err == nil && h.encodedLen() != len(h) {
		return errf("transport headers block has %d trailing bytes", len(h)-h.encodedLen())
	}
	return err
}

func (h Headers) encodedLen() int {
	c := cursor{b: h[1:]}
	for i := 0; i < int(h[0]); i++ {
		c.bytes1("")
		c.bytes1("")
	}
	return len(h) - len(c.b)
}

// parseHeaders reads an nh:1 headers block from c and returns it as a view.
func parseHeaders(c *cursor) (Headers, error) {
	start := c.b
	n := int(c.u8("header count"))
	if n > MaxHeaders {
		return nil, errf("%d transport headers, the limit is %d", n, MaxHeaders)
	}
	for i := 0; i < n; i++ {
		k := c.bytes1("header key")
		c.bytes1("header value")
		if c.err != nil {
			return nil, c.err
		}
		if len(k) == 0 || len(k) > MaxHeaderKeySize {
			return nil, errf("transport header key %q must be 1 to %d bytes", k, MaxHeaderKeySize)
		}
		if n > 1 && dupKey(start[1:len(start)-len(c.b)], k, i) {
			return nil, errf("transport header key %q appears twice", k)
		}
	}
	if c.err != nil {
		return nil, c.err
	}
	return Headers(start[: len(start)-len(c.b) : len(start)-len(c.b)]), nil
}

// dupKey reports whether key (the i-th key in block) appeared among the first i.
func dupKey(block []byte, key []byte, i int) bool {
	c := cursor{b: block}
	for j := 0; j < i; j++ {
		if bytes.Equal(c.bytes1(""), key) {
			return true
		}
		c.bytes1("")
	}
	return false
}
