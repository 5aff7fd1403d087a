package frame

import "encoding/binary"

// cursor reads fields from a payload, remembering the first failure so that
// decoders check once at the end instead of after every field.
type cursor struct {
	b   []byte
	err error
}

func (c *cursor) fail(what string, need int) {
	if c.err == nil {
		c.err = errShort(what, need, len(c.b))
		c.b = nil
	}
}

func (c *cursor) u8(what string) byte {
	if len(c.b) < 1 {
		c.fail(what, 1)
		return 0
	}
	v := c.b[0]
	c.b = c.b[1:]
	return v
}

func (c *cursor) u16(what string) uint16 {
	if len(c.b) < 2 {
		c.fail(what, 2)
		return 0
	}
	v := binary.BigEndian.Uint16(c.b)
	c.b = c.b[2:]
	return v
}

func (c *cursor) u32(what string) uint32 {
	if len(c.b) < 4 {
		c.fail(what, 4)
		return 0
	}
	v := binary.BigEndian.Uint32(c.b)
	c.b = c.b[4:]
	return v
}

func (c *cursor) u64(what string) uint64 {
	if len(c.b) < 8 {
		c.fail(what, 8)
		return 0
	}
	v := binary.BigEndian.Uint64(c.b)
	c.b = c.b[8:]
	return v
}

func (c *cursor) bytes(what string, n int) []byte {
	if len(c.b) < n {
		c.fail(what, n)
		return nil
	}
	v := c.b[:n:n]
	c.b = c.b[n:]
	return v
}

func (c *cursor) bytes1(what string) []byte { return c.bytes(what, int(c.u8(what))) }
func (c *cursor) bytes2(what string) []byte { return c.bytes(what, int(c.u16(what))) }

func appendU16(b []byte, v uint16) []byte { return binary.BigEndian.AppendUint16(b, v) }
func appendU32(b []byte, v uint32) []byte { return binary.BigEndian.AppendUint32(b, v) }
