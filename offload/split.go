package offload

import (
	"encoding/binary"
	"errors"
)

// TCP flag bits (byte 13 of the TCP header).
const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpPSH = 0x08
	tcpACK = 0x10
	tcpURG = 0x20
	tcpECE = 0x40
	tcpCWR = 0x80
)

const (
	protoTCP = 6
	protoUDP = 17
)

// ErrTooManySegments is returned by Split when bufs cannot hold every segment of a super-packet.
var ErrTooManySegments = errors.New("offload: super-packet has more segments than buffers")

// errShortBuffer: a caller buffer cannot hold a segment at offset.
var errShortBuffer = errors.New("offload: buffer too small for segment")

// superPacket is a validated TSO/USO super-packet: one IP + L4 header followed by up to 64 KiB of payload
// that the kernel wants cut into gso-byte segments. Every per-segment header field is rebuilt from the
// values captured here, so writing one segment (even in place over pkt) never disturbs the others.
type superPacket struct {
	pkt    []byte // header (hdrLen bytes) followed by the payload of segments base, base+1, ...
	v6     bool
	udp    bool
	l4     int // offset of the L4 header
	hdrLen int // l4 + L4 header length
	gso    int
	base   int // index of the segment whose payload starts at pkt[hdrLen]
	next   int // next segment splitInto emits
	nseg   int // total number of segments of the original super-packet
	id0    uint16
	seq0   uint32
	flags0 uint8
}

// parseSuper validates a super-packet against its virtio header. The kernel's hdr_len is not used: on the
// forwarding path it can cover the whole first segment, so the header length is taken from the packet.
func parseSuper(h *VirtioHdr, pkt []byte) (superPacket, error) {
	sp := superPacket{pkt: pkt, gso: int(h.GSOSize)}
	if len(pkt) < 20 {
		return sp, malformed("super-packet of %d bytes", len(pkt))
	}
	var proto uint8
	switch pkt[0] >> 4 {
	case 4:
		if h.GSOType == GSOTCPv6 {
			return sp, malformed("IPv4 packet with GSO type TCPv6")
		}
		ihl := int(pkt[0]&0xf) * 4
		if ihl < 20 || ihl > len(pkt) {
			return sp, malformed("IPv4 header length %d", ihl)
		}
		if binary.BigEndian.Uint16(pkt[6:])&0x3fff != 0 {
			return sp, malformed("IPv4 fragment with GSO")
		}
		proto, sp.l4, sp.id0 = pkt[9], ihl, binary.BigEndian.Uint16(pkt[4:])
	case 6:
		if h.GSOType == GSOTCPv4 {
			return sp, malformed("IPv6 packet with GSO type TCPv4")
		}
		if len(pkt) < 40 {
			return sp, malformed("IPv6 super-packet of %d bytes", len(pkt))
		}
		// Extension headers would need walking and, for a routing header, a different pseudo-header
		// destination; the kernel does not produce them for locally generated TSO traffic.
		proto, sp.l4, sp.v6 = pkt[6], 40, true
	default:
		return sp, malformed("IP version %d", pkt[0]>>4)
	}
	if h.Flags&VirtioNeedsCsum != 0 && int(h.CsumStart) != sp.l4 {
		return sp, malformed("csum_start %d, L4 header at %d", h.CsumStart, sp.l4)
	}
	switch h.GSOType {
	case GSOTCPv4, GSOTCPv6:
		if proto != protoTCP || len(pkt) < sp.l4+20 {
			return sp, malformed("TSO packet: protocol %d, %d bytes", proto, len(pkt))
		}
		thl := int(pkt[sp.l4+12]>>4) * 4
		if thl < 20 || sp.l4+thl > len(pkt) {
			return sp, malformed("TCP header length %d", thl)
		}
		sp.hdrLen = sp.l4 + thl
		sp.seq0 = binary.BigEndian.Uint32(pkt[sp.l4+4:])
		sp.flags0 = pkt[sp.l4+13]
	case GSOUDPL4:
		if proto != protoUDP || len(pkt) < sp.l4+8 {
			return sp, malformed("USO packet: protocol %d, %d bytes", proto, len(pkt))
		}
		sp.udp, sp.hdrLen = true, sp.l4+8
	default:
		return sp, malformed("GSO type %d", h.GSOType)
	}
	if h.Flags&VirtioNeedsCsum != 0 && (sp.udp && h.CsumOffset != 6 || !sp.udp && h.CsumOffset != 16) {
		return sp, malformed("csum_offset %d", h.CsumOffset)
	}
	payload := len(pkt) - sp.hdrLen
	if payload <= 0 {
		return sp, malformed("super-packet without payload")
	}
	if sp.hdrLen+sp.gso > 65535 {
		return sp, malformed("gso_size %d", sp.gso)
	}
	sp.nseg = (payload + sp.gso - 1) / sp.gso
	return sp, nil
}

// segLen returns the length of segment i (base <= i < nseg).
func (sp *superPacket) segLen(i int) int {
	start := sp.hdrLen + (i-sp.base)*sp.gso
	return sp.hdrLen + min(sp.gso, len(sp.pkt)-start)
}

// writeSegment builds segment i into dst (len(dst) >= segLen(i)) and returns its length. dst may be pkt
// itself for i == base: header and payload are then already in place and only the fields are rewritten.
func (sp *superPacket) writeSegment(dst []byte, i int) int {
	start := sp.hdrLen + (i-sp.base)*sp.gso
	end := min(start+sp.gso, len(sp.pkt))
	n := sp.hdrLen + end - start
	dst = dst[:n]
	copy(dst, sp.pkt[:sp.hdrLen])
	copy(dst[sp.hdrLen:], sp.pkt[start:end])
	l4, l4Len := sp.l4, n-sp.l4
	var proto uint8 = protoTCP
	if sp.udp {
		proto = protoUDP
	}
	var csum uint16
	if sp.v6 {
		binary.BigEndian.PutUint16(dst[4:], uint16(n-40))
		csum = PseudoSum6(proto, dst[8:24], dst[24:40], l4Len)
	} else {
		binary.BigEndian.PutUint16(dst[2:], uint16(n))
		binary.BigEndian.PutUint16(dst[4:], sp.id0+uint16(i))
		binary.BigEndian.PutUint16(dst[10:], 0)
		binary.BigEndian.PutUint16(dst[10:], Checksum(dst[:l4], 0))
		csum = PseudoSum4(proto, dst[12:16], dst[16:20], l4Len)
	}
	if sp.udp {
		binary.BigEndian.PutUint16(dst[l4+4:], uint16(l4Len))
		binary.BigEndian.PutUint16(dst[l4+6:], 0)
		c := Checksum(dst[l4:], csum)
		if c == 0 {
			c = 0xffff // RFC 768: zero means "no checksum"
		}
		binary.BigEndian.PutUint16(dst[l4+6:], c)
		return n
	}
	binary.BigEndian.PutUint32(dst[l4+4:], sp.seq0+uint32(i*sp.gso))
	f := sp.flags0
	if i != sp.nseg-1 {
		f &^= tcpFIN | tcpPSH
	}
	if i != 0 {
		f &^= tcpCWR
	}
	dst[l4+13] = f
	binary.BigEndian.PutUint16(dst[l4+16:], 0)
	binary.BigEndian.PutUint16(dst[l4+16:], Checksum(dst[l4:], csum))
	return n
}

// remainder copies the header and the payload of segments from..nseg-1 into buf (which must not overlap
// pkt) and returns the super-packet that produces exactly those segments.
func (sp *superPacket) remainder(from int, buf []byte) (superPacket, bool) {
	start := sp.hdrLen + (from-sp.base)*sp.gso
	need := sp.hdrLen + len(sp.pkt) - start
	if from >= sp.nseg || len(buf) < need {
		return superPacket{}, false
	}
	r := *sp
	copy(buf, sp.pkt[:sp.hdrLen])
	copy(buf[sp.hdrLen:], sp.pkt[start:])
	r.pkt, r.base, r.next = buf[:need], from, from
	return r, true
}

// Split cuts the super-packet pkt (the bytes after the virtio header h) into segments written to
// bufs[i][offset:], their lengths into sizes[i], and returns how many. A packet without GSO is copied to
// bufs[0], its checksum finished when h asks for it. Malformed input returns an error wrapping ErrMalformed;
// more segments than buffers returns ErrTooManySegments (Device.Read instead keeps the rest for its next call).
func Split(h *VirtioHdr, pkt []byte, bufs [][]byte, sizes []int, offset int) (int, error) {
	if len(bufs) == 0 || len(sizes) < len(bufs) || offset < 0 {
		return 0, errShortBuffer
	}
	if h.GSOType == GSONone {
		if len(bufs[0]) < offset || len(pkt) > len(bufs[0])-offset {
			return 0, errShortBuffer
		}
		n := copy(bufs[0][offset:], pkt)
		if err := finishChecksum(h, bufs[0][offset:offset+n]); err != nil {
			return 0, err
		}
		sizes[0] = n
		return 1, nil
	}
	sp, err := parseSuper(h, pkt)
	if err != nil {
		return 0, err
	}
	if sp.nseg > len(bufs) {
		return 0, ErrTooManySegments
	}
	return sp.splitInto(bufs, sizes, offset, 0)
}

// splitInto writes segments sp.next.. into bufs[first:], as many as fit, advances sp.next and returns the
// count.
func (sp *superPacket) splitInto(bufs [][]byte, sizes []int, offset, first int) (int, error) {
	n := 0
	for ; sp.next < sp.nseg && first+n < len(bufs); sp.next++ {
		b := bufs[first+n]
		if offset > len(b) || len(b)-offset < sp.segLen(sp.next) {
			return n, errShortBuffer
		}
		sizes[first+n] = sp.writeSegment(b[offset:], sp.next)
		n++
	}
	return n, nil
}

// finishChecksum completes a CHECKSUM_PARTIAL packet (VirtioNeedsCsum without GSO): the field at
// CsumStart+CsumOffset holds the pseudo-header sum; fold in the rest of the L4 bytes and invert.
func finishChecksum(h *VirtioHdr, pkt []byte) error {
	if h.Flags&VirtioNeedsCsum == 0 {
		return nil
	}
	start, at := int(h.CsumStart), int(h.CsumStart)+int(h.CsumOffset)
	if at+2 > len(pkt) || start < 20 {
		return malformed("csum_start %d csum_offset %d in a %d-byte packet", h.CsumStart, h.CsumOffset, len(pkt))
	}
	c := Checksum(pkt[start:], 0)
	if c == 0 && h.CsumOffset == 6 && isUDP(pkt) {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(pkt[at:], c)
	return nil
}

// isUDP reports whether an IPv4 or IPv6 packet without extension headers carries UDP.
func isUDP(pkt []byte) bool {
	switch pkt[0] >> 4 {
	case 4:
		return pkt[9] == protoUDP
	case 6:
		return len(pkt) >= 40 && pkt[6] == protoUDP
	}
	return false
}
