package offload

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// VirtioHdrLen is the size of struct virtio_net_hdr, the header a TUN device opened with IFF_VNET_HDR puts in
// front of every packet it reads and expects in front of every packet written to it (TUNSETVNETHDRSZ is left
// at its default of 10).
const VirtioHdrLen = 10

// virtio_net_hdr flags.
const (
	// VirtioNeedsCsum: the L4 checksum is not computed; the field at CsumStart+CsumOffset holds the
	// pseudo-header sum and the sum over [CsumStart, end) still has to be folded in (CHECKSUM_PARTIAL).
	VirtioNeedsCsum = 1
	// VirtioDataValid: the checksum was already verified (CHECKSUM_UNNECESSARY). Only ever read.
	VirtioDataValid = 2
)

// virtio_net_hdr gso_type values.
const (
	GSONone  = 0
	GSOTCPv4 = 1
	GSOUDP   = 3 // UFO (IP fragmentation offload): never enabled by us, rejected on read
	GSOTCPv6 = 4
	GSOUDPL4 = 5 // USO: UDP segmentation, every segment a complete datagram
	GSOECN   = 0x80
)

// VirtioHdr is a decoded virtio_net_hdr. The TUN device uses the host's byte order for it (we never call
// TUNSETVNETLE/BE), hence binary.NativeEndian.
type VirtioHdr struct {
	Flags      uint8
	GSOType    uint8  // GSO* without the GSOECN bit; see ECN
	ECN        bool   // GSOECN was set: the TCP stream uses ECN (CWR on the first segment only)
	HdrLen     uint16 // length of the IP + L4 headers (advisory: the kernel's value is not always exact)
	GSOSize    uint16 // payload bytes per segment
	CsumStart  uint16 // offset of the L4 header from the start of the IP packet
	CsumOffset uint16 // offset of the checksum field from CsumStart
}

// Errors returned for malformed virtio headers and packets. They wrap ErrMalformed so callers can tell
// hostile or unsupported input (drop the packet, keep going) from I/O errors.
var (
	ErrMalformed = errors.New("offload: malformed packet")
	errShortHdr  = fmt.Errorf("%w: short virtio header", ErrMalformed)
)

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
}

// Decode parses b[:10] and rejects flags and GSO types this package does not handle. Checks that depend on
// the packet (CsumStart within it, the IP version matching the GSO type) are made by the code that reads it.
func (h *VirtioHdr) Decode(b []byte) error {
	if len(b) < VirtioHdrLen {
		return errShortHdr
	}
	*h = VirtioHdr{
		Flags:      b[0],
		GSOType:    b[1] &^ GSOECN,
		ECN:        b[1]&GSOECN != 0,
		HdrLen:     binary.NativeEndian.Uint16(b[2:]),
		GSOSize:    binary.NativeEndian.Uint16(b[4:]),
		CsumStart:  binary.NativeEndian.Uint16(b[6:]),
		CsumOffset: binary.NativeEndian.Uint16(b[8:]),
	}
	if h.Flags&^(VirtioNeedsCsum|VirtioDataValid) != 0 {
		return malformed("virtio flags %#x", h.Flags)
	}
	switch h.GSOType {
	case GSONone:
		if h.ECN {
			return malformed("virtio ECN without GSO")
		}
	case GSOTCPv4, GSOTCPv6, GSOUDPL4:
		if h.GSOSize == 0 {
			return malformed("virtio GSO type %d with gso_size 0", h.GSOType)
		}
	default:
		return malformed("virtio GSO type %d", h.GSOType)
	}
	if h.Flags&VirtioNeedsCsum != 0 && h.CsumOffset != 6 && h.CsumOffset != 16 {
		// Only UDP (6) and TCP (16) checksums are offloaded to a TUN device with TUN_F_CSUM; anything else
		// would make us write two bytes at a place we have no reason to trust.
		return malformed("virtio csum_offset %d", h.CsumOffset)
	}
	return nil
}

// Encode writes h into b[:10]. It panics only if b is shorter than VirtioHdrLen, which is a caller bug
// (every writer here checks offset >= VirtioHdrLen first).
func (h *VirtioHdr) Encode(b []byte) {
	_ = b[VirtioHdrLen-1]
	b[0] = h.Flags
	b[1] = h.GSOType
	if h.ECN {
		b[1] |= GSOECN
	}
	binary.NativeEndian.PutUint16(b[2:], h.HdrLen)
	binary.NativeEndian.PutUint16(b[4:], h.GSOSize)
	binary.NativeEndian.PutUint16(b[6:], h.CsumStart)
	binary.NativeEndian.PutUint16(b[8:], h.CsumOffset)
}
