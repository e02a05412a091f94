package offload

import (
	"encoding/binary"
	"math/bits"
)

// Internet checksum (RFC 1071). The ones' complement sum is independent of byte order as long as the final
// 16-bit value is swapped back (RFC 1071 section 2(B)), so the loop adds the data as little-endian 64-bit
// words - one load and one add-with-carry per 8 bytes - and swaps once at the end. With 32 bytes per
// iteration in one carry chain the compiler emits ADCQ back to back.

// sumLE returns the ones' complement sum of b as 16-bit little-endian words, plus acc, folded to 16 bits.
func sumLE(b []byte, acc uint64) uint16 {
	var c uint64
	for len(b) >= 32 {
		acc, c = bits.Add64(acc, binary.LittleEndian.Uint64(b[0:8]), c)
		acc, c = bits.Add64(acc, binary.LittleEndian.Uint64(b[8:16]), c)
		acc, c = bits.Add64(acc, binary.LittleEndian.Uint64(b[16:24]), c)
		acc, c = bits.Add64(acc, binary.LittleEndian.Uint64(b[24:32]), c)
		b = b[32:]
	}
	for len(b) >= 8 {
		acc, c = bits.Add64(acc, binary.LittleEndian.Uint64(b), c)
		b = b[8:]
	}
	acc, c = bits.Add64(acc, c, 0) // end-around carry; c is now 0 or 1 from this add
	acc += c                       // cannot overflow again: acc was at most 2^64-2 after wrapping
	// The tail starts at an even offset (we consumed multiples of 8), so a lone last byte is the low byte
	// of a little-endian word.
	var t uint64
	if len(b) >= 4 {
		t = uint64(binary.LittleEndian.Uint32(b))
		b = b[4:]
	}
	if len(b) >= 2 {
		t += uint64(binary.LittleEndian.Uint16(b)) << 32
		b = b[2:]
	}
	if len(b) == 1 {
		t += uint64(b[0]) << 48
	}
	acc, c = bits.Add64(acc, t, 0)
	acc += c
	// Fold 64 -> 32 -> 16 with end-around carries.
	s := (acc >> 32) + (acc & 0xffffffff)
	s = (s >> 32) + (s & 0xffffffff)
	s = (s >> 16) + (s & 0xffff)
	s = (s >> 16) + (s & 0xffff)
	return uint16(s)
}

// Sum returns the 16-bit ones' complement sum of b (big-endian words, as on the wire) plus initial, not
// inverted. Sums of pieces can be chained through initial as long as every piece but the last has even length.
func Sum(b []byte, initial uint16) uint16 {
	return bits.ReverseBytes16(sumLE(b, uint64(bits.ReverseBytes16(initial))))
}

// Checksum returns the Internet checksum of b: the inverted ones' complement sum, ready to store.
func Checksum(b []byte, initial uint16) uint16 {
	return ^Sum(b, initial)
}

// PseudoSum4 returns the (non-inverted) sum of the IPv4 pseudo-header: src, dst, protocol and L4 length.
// src and dst must be 4 bytes each.
func PseudoSum4(proto uint8, src, dst []byte, l4Len int) uint16 {
	s := uint64(binary.BigEndian.Uint32(src)) + uint64(binary.BigEndian.Uint32(dst)) + uint64(proto) + uint64(uint32(l4Len))
	s = (s >> 32) + (s & 0xffffffff)
	s = (s >> 16) + (s & 0xffff)
	s = (s >> 16) + (s & 0xffff)
	s = (s >> 16) + (s & 0xffff)
	return uint16(s)
}

// PseudoSum6 returns the (non-inverted) sum of the IPv6 pseudo-header (RFC 8200 section 8.1). src and dst
// must be 16 bytes each.
func PseudoSum6(proto uint8, src, dst []byte, l4Len int) uint16 {
	var acc, c uint64
	acc, c = bits.Add64(acc, binary.LittleEndian.Uint64(src[0:8]), 0)
	acc, c = bits.Add64(acc, binary.LittleEndian.Uint64(src[8:16]), c)
	acc, c = bits.Add64(acc, binary.LittleEndian.Uint64(dst[0:8]), c)
	acc, c = bits.Add64(acc, binary.LittleEndian.Uint64(dst[8:16]), c)
	acc += c
	// Length (32 bits) and next header as big-endian words, swapped into the little-endian accumulator.
	tail := uint64(bits.ReverseBytes16(uint16(uint32(l4Len)>>16))) + uint64(bits.ReverseBytes16(uint16(l4Len))) +
		uint64(bits.ReverseBytes16(uint16(proto)))
	acc, c = bits.Add64(acc, tail, 0)
	acc += c
	s := (acc >> 32) + (acc & 0xffffffff)
	s = (s >> 32) + (s & 0xffffffff)
	s = (s >> 16) + (s & 0xffff)
	s = (s >> 16) + (s & 0xffff)
	return bits.ReverseBytes16(uint16(s))
}
