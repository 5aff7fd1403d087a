package frame

import (
	"fmt"
	"hash/crc32"

	"github.com/dgryski/go-farm"
)

// ChecksumType selects how a call's arg bytes are checksummed.
type ChecksumType byte

// The checksum types of TChannel v2.
const (
	ChecksumNone   ChecksumType = 0
	ChecksumCRC32  ChecksumType = 1 // IEEE CRC-32, as tchannel-go computes it
	ChecksumFarm32 ChecksumType = 2 // farmhash Fingerprint32
	ChecksumCRC32C ChecksumType = 3 // CRC-32C (Castagnoli)
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Size is the number of checksum bytes that follow the type byte.
func (t ChecksumType) Size() int {
	if t == ChecksumNone {
		return 0
	}
	return 4
}

func (t ChecksumType) valid() bool { return t <= ChecksumCRC32C }

func (t ChecksumType) String() string {
	switch t {
	case ChecksumNone:
		return "none"
	case ChecksumCRC32:
		return "crc32"
	case ChecksumFarm32:
		return "farmhash32"
	case ChecksumCRC32C:
		return "crc32c"
	}
	return fmt.Sprintf("checksum 0x%02x", byte(t))
}

// Update extends the running checksum prev (0 for a message's first bytes)
// over p. The checksum of a frame covers every arg byte of its message so far.
//
// CRC-32 and CRC-32C run naturally. Farmhash has no running form, and
// tchannel-go does not implement it, so mesh defines one: Fingerprint32 of a
// message's first piece, then Hash32WithSeed(piece, previous value). A message
// that fits in one frame, the common case, thus carries its Fingerprint32.
func (t ChecksumType) Update(prev uint32, first bool, p []byte) uint32 {
	switch t {
	case ChecksumCRC32:
		return crc32.Update(prev, crc32.IEEETable, p)
	case ChecksumCRC32C:
		return crc32.Update(prev, castagnoli, p)
	case ChecksumFarm32:
		if first {
			return farm.Fingerprint32(p)
		}
		return farm.Hash32WithSeed(p, prev)
	}
	return 0
}
