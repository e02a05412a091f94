package enginetest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// IP protocol numbers the builders and the parser know.
const (
	ProtoICMP   = 1
	ProtoUDP    = 17
	ProtoICMPv6 = 58
)

// ICMP echo types: the builders make requests, since the engine forwards any packet alike; EchoReply
// answers them as a host would.
const (
	icmpv4EchoRequest = 8
	icmpv4EchoReply   = 0
	icmpv6EchoRequest = 128
	icmpv6EchoReply   = 129
)

const (
	ipv4HeaderLen = 20
	ipv6HeaderLen = 40
	udpHeaderLen  = 8
	icmpHeaderLen = 8 // type, code, checksum, then four bytes that are id and seq in an echo
	// hopLimit is the TTL the builders set: a typical host default, far from the 0 a router would drop.
	hopLimit = 64
)

// The builders panic on what can only be a mistake in the test: an address of the wrong family or a
// payload that does not fit in one IP packet.

// IPv4UDP returns an IPv4 packet carrying a UDP datagram, with valid IP and UDP checksums.
func IPv4UDP(src, dst netip.Addr, sport, dport uint16, payload []byte) []byte {
	pkt := ipv4Packet(src, dst, ProtoUDP, udpHeaderLen+len(payload))
	putUDP(pkt[ipv4HeaderLen:], src, dst, sport, dport, payload)
	return pkt
}

// IPv6UDP returns an IPv6 packet carrying a UDP datagram, with a valid UDP checksum (mandatory in IPv6).
func IPv6UDP(src, dst netip.Addr, sport, dport uint16, payload []byte) []byte {
	pkt := ipv6Packet(src, dst, ProtoUDP, udpHeaderLen+len(payload))
	putUDP(pkt[ipv6HeaderLen:], src, dst, sport, dport, payload)
	return pkt
}

// UDPPacket returns IPv4UDP or IPv6UDP, by the family of src.
func UDPPacket(src, dst netip.AddrPort, payload []byte) []byte {
	if src.Addr().Unmap().Is4() {
		return IPv4UDP(src.Addr().Unmap(), dst.Addr().Unmap(), src.Port(), dst.Port(), payload)
	}
	return IPv6UDP(src.Addr(), dst.Addr(), src.Port(), dst.Port(), payload)
}

// IPv4ICMPEcho returns an IPv4 ICMP echo request, with valid IP and ICMP checksums.
func IPv4ICMPEcho(src, dst netip.Addr, id, seq uint16, payload []byte) []byte {
	pkt := ipv4Packet(src, dst, ProtoICMP, icmpHeaderLen+len(payload))
	icmp := pkt[ipv4HeaderLen:]
	putEcho(icmp, icmpv4EchoRequest, id, seq, payload)
	// ICMPv4's checksum covers the message alone, no pseudo-header.
	binary.BigEndian.PutUint16(icmp[2:], checksum(icmp, 0))
	return pkt
}

// IPv6ICMPEcho returns an ICMPv6 echo request, with a valid checksum (which, unlike ICMPv4's, covers the
// IPv6 pseudo-header).
func IPv6ICMPEcho(src, dst netip.Addr, id, seq uint16, payload []byte) []byte {
	pkt := ipv6Packet(src, dst, ProtoICMPv6, icmpHeaderLen+len(payload))
	icmp := pkt[ipv6HeaderLen:]
	putEcho(icmp, icmpv6EchoRequest, id, seq, payload)
	binary.BigEndian.PutUint16(icmp[2:], checksum(icmp, pseudoHeaderSum(src, dst, ProtoICMPv6, len(icmp))))
	return pkt
}

// EchoReply returns the reply a host sends to the ICMP or ICMPv6 echo request req (addresses swapped, same
// id, sequence and payload, valid checksums); ok is false if req is not an echo request.
func EchoReply(req []byte) (reply []byte, ok bool) {
	p, ok := ParsePacket(req)
	switch {
	case ok && p.Proto == ProtoICMP && p.ICMPType == icmpv4EchoRequest:
		reply = IPv4ICMPEcho(p.Dst, p.Src, p.ID, p.Seq, p.Payload)
		icmp := reply[ipv4HeaderLen:]
		icmp[0], icmp[2], icmp[3] = icmpv4EchoReply, 0, 0
		binary.BigEndian.PutUint16(icmp[2:], checksum(icmp, 0))
	case ok && p.Proto == ProtoICMPv6 && p.ICMPType == icmpv6EchoRequest:
		reply = IPv6ICMPEcho(p.Dst, p.Src, p.ID, p.Seq, p.Payload)
		icmp := reply[ipv6HeaderLen:]
		icmp[0], icmp[2], icmp[3] = icmpv6EchoReply, 0, 0
		binary.BigEndian.PutUint16(icmp[2:], checksum(icmp, pseudoHeaderSum(p.Dst, p.Src, ProtoICMPv6, len(icmp))))
	default:
		return nil, false
	}
	return reply, true
}

// ipv4Packet returns a packet of a 20-byte IPv4 header (with its checksum) followed by l4Len zero bytes.
func ipv4Packet(src, dst netip.Addr, proto uint8, l4Len int) []byte {
	if !src.Is4() || !dst.Is4() {
		panic(fmt.Sprintf("enginetest: IPv4 packet from %v to %v: both addresses must be IPv4", src, dst))
	}
	total := ipv4HeaderLen + l4Len
	if total > 0xffff {
		panic(fmt.Sprintf("enginetest: IPv4 packet of %d bytes exceeds 65535", total))
	}
	pkt := make([]byte, total)
	h := pkt[:ipv4HeaderLen]
	h[0] = 4<<4 | ipv4HeaderLen/4 // version, header length in 32-bit words
	binary.BigEndian.PutUint16(h[2:], uint16(total))
	binary.BigEndian.PutUint16(h[6:], 0x4000) // don't fragment: the id (h[4:6]) can stay zero
	h[8] = hopLimit
	h[9] = proto
	s, d := src.As4(), dst.As4()
	copy(h[12:16], s[:])
	copy(h[16:20], d[:])
	binary.BigEndian.PutUint16(h[10:], checksum(h, 0))
	return pkt
}

// ipv6Packet returns a packet of a 40-byte IPv6 header followed by l4Len zero bytes.
func ipv6Packet(src, dst netip.Addr, nextHeader uint8, l4Len int) []byte {
	// IPv4-mapped addresses are allowed: they are valid in an IPv6 header, and a test may want to see what
	// the engine makes of one.
	if !src.Is6() || !dst.Is6() {
		panic(fmt.Sprintf("enginetest: IPv6 packet from %v to %v: both addresses must be IPv6", src, dst))
	}
	if l4Len > 0xffff {
		panic(fmt.Sprintf("enginetest: IPv6 payload of %d bytes exceeds 65535 (jumbograms are not built)", l4Len))
	}
	pkt := make([]byte, ipv6HeaderLen+l4Len)
	h := pkt[:ipv6HeaderLen]
	h[0] = 6 << 4 // version; traffic class and flow label stay zero
	binary.BigEndian.PutUint16(h[4:], uint16(l4Len))
	h[6] = nextHeader
	h[7] = hopLimit
	s, d := src.As16(), dst.As16()
	copy(h[8:24], s[:])
	copy(h[24:40], d[:])
	return pkt
}

// putUDP writes a UDP header and payload into seg, which is exactly their length.
func putUDP(seg []byte, src, dst netip.Addr, sport, dport uint16, payload []byte) {
	binary.BigEndian.PutUint16(seg[0:], sport)
	binary.BigEndian.PutUint16(seg[2:], dport)
	binary.BigEndian.PutUint16(seg[4:], uint16(len(seg)))
	copy(seg[udpHeaderLen:], payload)
	sum := checksum(seg, pseudoHeaderSum(src, dst, ProtoUDP, len(seg)))
	if sum == 0 {
		sum = 0xffff // zero on the wire means "no checksum" (RFC 768); 0xffff is the same sum
	}
	binary.BigEndian.PutUint16(seg[6:], sum)
}

// putEcho writes an ICMP echo header (checksum left zero) and payload into msg.
func putEcho(msg []byte, typ uint8, id, seq uint16, payload []byte) {
	msg[0] = typ
	binary.BigEndian.PutUint16(msg[4:], id)
	binary.BigEndian.PutUint16(msg[6:], seq)
	copy(msg[icmpHeaderLen:], payload)
}

// pseudoHeaderSum is the unfolded one's-complement sum of the pseudo-header UDP and ICMPv6 checksums
// cover (RFC 768, RFC 8200 section 8.1). The two layouts differ but sum to the same value.
func pseudoHeaderSum(src, dst netip.Addr, proto uint8, length int) uint64 {
	acc := sum16(src.AsSlice(), 0)
	acc = sum16(dst.AsSlice(), acc)
	return acc + uint64(proto) + uint64(length)
}

// sum16 adds b to acc as big-endian 16-bit words, an odd last byte padded with zero (RFC 1071). A uint64
// cannot overflow on anything shorter than 2^48 bytes, so folding can wait until the end.
func sum16(b []byte, acc uint64) uint64 {
	for len(b) >= 2 {
		acc += uint64(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		acc += uint64(b[0]) << 8
	}
	return acc
}

// checksum is the Internet checksum of b on top of the partial sum acc. Over data that includes a correct
// checksum field it is zero, which is how VerifyChecksums checks.
func checksum(b []byte, acc uint64) uint16 {
	acc = sum16(b, acc)
	for acc > 0xffff {
		acc = acc>>16 + acc&0xffff
	}
	return ^uint16(acc)
}

// Packet is an IP packet as ParsePacket reads it.
type Packet struct {
	Src, Dst netip.Addr
	// Proto is the IPv4 protocol or the IPv6 next header. IPv6 extension headers are not followed, so a
	// packet with one has that header's number here and Payload is the whole IP payload.
	Proto uint8
	// SrcPort and DstPort are set for UDP.
	SrcPort, DstPort uint16
	// ICMPType, ID and Seq are set for ICMP and ICMPv6 (ID and Seq mean something for echo only).
	ICMPType uint8
	ID, Seq  uint16
	// IPPayload is everything after the IP header, up to the length the header declares.
	IPPayload []byte
	// Payload is the data after the UDP or ICMP header; for other protocols it is IPPayload.
	Payload []byte
}

// ParsePacket reads an IPv4 or IPv6 packet. It checks the structure (version, header and declared
// lengths, the UDP length), not checksums; see VerifyChecksums. Bytes after the length the IP header
// declares are ignored, as the engine ignores them. The slices in Packet alias pkt.
func ParsePacket(pkt []byte) (Packet, bool) {
	var p Packet
	if len(pkt) < 1 {
		return p, false
	}
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < ipv4HeaderLen {
			return p, false
		}
		ihl := int(pkt[0]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(pkt[2:]))
		if ihl < ipv4HeaderLen || total < ihl || total > len(pkt) {
			return p, false
		}
		p.Src = netip.AddrFrom4([4]byte(pkt[12:16]))
		p.Dst = netip.AddrFrom4([4]byte(pkt[16:20]))
		p.Proto = pkt[9]
		p.IPPayload = pkt[ihl:total]
	case 6:
		if len(pkt) < ipv6HeaderLen {
			return p, false
		}
		total := ipv6HeaderLen + int(binary.BigEndian.Uint16(pkt[4:]))
		if total > len(pkt) {
			return p, false
		}
		p.Src = netip.AddrFrom16([16]byte(pkt[8:24]))
		p.Dst = netip.AddrFrom16([16]byte(pkt[24:40]))
		p.Proto = pkt[6]
		p.IPPayload = pkt[ipv6HeaderLen:total]
	default:
		return p, false
	}
	l4 := p.IPPayload
	switch {
	case p.Proto == ProtoUDP:
		if len(l4) < udpHeaderLen {
			return p, false
		}
		ulen := int(binary.BigEndian.Uint16(l4[4:]))
		if ulen < udpHeaderLen || ulen > len(l4) {
			return p, false
		}
		p.SrcPort = binary.BigEndian.Uint16(l4[0:])
		p.DstPort = binary.BigEndian.Uint16(l4[2:])
		p.Payload = l4[udpHeaderLen:ulen]
	case p.Proto == ProtoICMP && p.Src.Is4(), p.Proto == ProtoICMPv6 && p.Src.Is6():
		if len(l4) < icmpHeaderLen {
			return p, false
		}
		p.ICMPType = l4[0]
		p.ID = binary.BigEndian.Uint16(l4[4:])
		p.Seq = binary.BigEndian.Uint16(l4[6:])
		p.Payload = l4[icmpHeaderLen:]
	default:
		p.Payload = l4
	}
	return p, true
}

// ParseIP returns the addresses of an IP packet and its payload as ParsePacket defines it (the data after
// the UDP or ICMP header).
func ParseIP(pkt []byte) (src, dst netip.Addr, payload []byte, ok bool) {
	p, ok := ParsePacket(pkt)
	if !ok {
		return netip.Addr{}, netip.Addr{}, nil, false
	}
	return p.Src, p.Dst, p.Payload, true
}

// VerifyChecksums checks the IPv4 header checksum and the UDP, ICMP or ICMPv6 checksum of pkt, whichever
// apply; it says which one is wrong. A zero UDP checksum over IPv4 means none was computed and passes.
func VerifyChecksums(pkt []byte) error {
	p, ok := ParsePacket(pkt)
	if !ok {
		return errors.New("enginetest: not a well-formed IP packet")
	}
	if p.Src.Is4() {
		ihl := int(pkt[0]&0x0f) * 4
		if checksum(pkt[:ihl], 0) != 0 {
			return errors.New("enginetest: bad IPv4 header checksum")
		}
	}
	l4 := p.IPPayload
	switch {
	case p.Proto == ProtoUDP:
		seg := l4[:int(binary.BigEndian.Uint16(l4[4:]))]
		if binary.BigEndian.Uint16(seg[6:]) == 0 {
			if p.Src.Is4() {
				return nil
			}
			return errors.New("enginetest: zero UDP checksum over IPv6")
		}
		if checksum(seg, pseudoHeaderSum(p.Src, p.Dst, ProtoUDP, len(seg))) != 0 {
			return errors.New("enginetest: bad UDP checksum")
		}
	case p.Proto == ProtoICMP && p.Src.Is4():
		if checksum(l4, 0) != 0 {
			return errors.New("enginetest: bad ICMP checksum")
		}
	case p.Proto == ProtoICMPv6 && p.Src.Is6():
		if checksum(l4, pseudoHeaderSum(p.Src, p.Dst, ProtoICMPv6, len(l4))) != 0 {
			return errors.New("enginetest: bad ICMPv6 checksum")
		}
	}
	return nil
}
