package offload

import (
	"encoding/binary"
	"errors"
)

// GRO coalesces the packets of one Write call before they go to a TUN device opened with IFF_VNET_HDR: runs
// of TCP segments (and, with UDP set, UDP datagrams) of one flow become a single GSO packet, so the kernel
// takes one write() and one trip through its stack instead of dozens.
//
// Why the inner checksums are not verified before coalescing. A coalesced packet is written with
// VirtioNeedsCsum, i.e. as CHECKSUM_PARTIAL: its L4 checksum field only holds the pseudo-header sum. The
// receiving kernel does NOT verify such a packet. Delivered locally, CHECKSUM_PARTIAL counts as already
// checked; forwarded, a fresh checksum is computed (in software or by the egress NIC) over whatever bytes we
// wrote. So coalescing launders a wrong inner checksum into a correct one, and it is only acceptable because
// nothing between the sender's TCP/UDP stack and us can have changed the bytes unnoticed:
//   - the bytes came out of the peer's tunnel AEAD: any change on the network is rejected by the tag, and
//     the peer itself is authenticated, so checking a 16-bit sum it chose adds nothing against it;
//   - the peer's kernel produced them and the peer's Split computed each segment's checksum from the same
//     bytes it then sealed, so a mismatch could only come from memory corruption or a bug on a host that
//     holds the key - the same exposure a NIC with checksum offload accepts for the host memory it DMAs from.
//
// Packets that are not coalesced are written with a zero virtio header (no NEEDS_CSUM, no DATA_VALID), so
// the kernel still verifies their checksums as usual.
//
// What Coalesce promises (checkGRO in gro_promise_test.go tests exactly this). Compare the packets given
// with the packets the kernel gets once it has cut every GSO packet written back into segments (Split makes
// the same cut):
//   - Every packet given comes out exactly once, as a packet of its own: none is lost or duplicated.
//   - A flow is the addresses, protocol and ports of a TCP or UDP packet that parse can read: IPv4 without
//     options and not a fragment (neither MF nor an offset), or IPv6 whose next header is TCP or UDP; the
//     IP length field and, for UDP, the UDP length field match the packet, and the TCP header fits in it.
//     Packets of one flow come out in the order given.
//   - Every other packet (another protocol, IPv4 options or a fragment, any IPv6 extension header, the
//     fragment header included, a length field that does not match, junk) is a barrier: it is never
//     coalesced, every packet given before it comes out before it and every packet given after it comes
//     out after it. It may belong to a flow GRO cannot see (a fragment of a UDP datagram, a TCP segment
//     with IP options), so no run may overtake it.
//   - That leaves one reordering: a packet merged into a run comes out right behind the run's earlier
//     packets, so it overtakes the packets given between them, which are all packets of other flows.
//     Packets of different flows can therefore change their order relative to each other.
//   - A packet that is not part of a GSO packet is written byte for byte as given, with a zero virtio
//     header. In a packet that is (the run's first packet included) only these bytes may change: the TCP
//     or UDP checksum and the IPv4 header checksum come out correct whatever they were (a wrong one is
//     laundered, see above; a zero UDP checksum is filled in), and where DF is set the IPv4 ID becomes the
//     run's first ID plus the packet's position in the run (RFC 6864: an atomic datagram's ID means
//     nothing; without DF the IDs must already run that way to join). Everything else, lengths, sequence
//     numbers and flags included, comes out as given: a packet only joins a run whose first packet has
//     the same value in every field the cut copies from it.
//
// A GSO packet holds at most 64 KiB, and a UDP one at most groMaxUDPSegs datagrams.
type GRO struct {
	// UDP enables UDP coalescing; set it only when the kernel accepted TUN_F_USO4|TUN_F_USO6.
	UDP bool

	flows  []groFlow
	table  [groTableSize]int16 // open flows by hash: index+1 into flows, 0 = empty
	merged []bool
}

const (
	groTableSize = 512
	groMaxFlows  = 256 // keeps the open-addressing table at most half full
	groMaxLen    = 65535
	// groMaxUDPSegs is our choice, not a kernel constant: the most UDP datagrams one USO write carries. The
	// TUN refuses (EINVAL) a USO write of more segments than the kernel's UDP_MAX_SEGMENTS: 128 on this
	// 6.18 kernel (129 are refused; see TestDeviceWritesManyUDPSegments), 64 on older kernels, so 64 is taken
	// by every kernel with USO, and 64 datagrams of ~1400 bytes fill a 64 KiB GSO packet anyway. The read
	// side does not rely on any such limit: a USO super-packet from the kernel may hold any number of
	// segments (128 from one UDP_SEGMENT send here, tens of thousands with a small gso_size), and
	// Device.Read keeps what does not fit the caller's vector for its next call.
	groMaxUDPSegs = 64
)

// groFlow is one run being built: a head packet plus the segments appended to it.
type groFlow struct {
	hash    uint64
	head    int // index into bufs
	l4      int
	hdrLen  int
	gso     int // payload size of the head: every appended segment but the last must match it
	count   int // segments in the run
	nextSeq uint32
	open    bool // more segments may still join
	udp     bool
	v6      bool
	psh     bool
}

// pktInfo is what coalescing needs from one packet; ok is false for anything that can only be written as is.
type pktInfo struct {
	v6, udp bool
	l4      int
	hdrLen  int
	payload int
	seq     uint32
	flags   uint8
	hash    uint64
	tuple   bool // the 5-tuple is known (hash valid) even when the packet cannot join a run
	ok      bool
}

var errOffset = errors.New("offload: write offset must leave room for the virtio header")

// parse classifies pkt. Only plain IPv4 (no options, not a fragment, exact total length) and IPv6 without
// extension headers carrying TCP or UDP are candidates. Everything else comes back with tuple false: a
// barrier for Coalesce.
func (g *GRO) parse(pkt []byte) pktInfo {
	var in pktInfo
	if len(pkt) < 20 {
		return in
	}
	var proto uint8
	switch pkt[0] >> 4 {
	case 4:
		// A fragment (MF or a fragment offset) is excluded before anything looks at its L4 bytes: those of a
		// non-first fragment are payload that may pass for a UDP or TCP header (crafted, or by chance), and
		// merging it into a USO run made the kernel lose both datagrams.
		if pkt[0] != 0x45 || int(binary.BigEndian.Uint16(pkt[2:])) != len(pkt) ||
			binary.BigEndian.Uint16(pkt[6:])&0x3fff != 0 {
			return in
		}
		proto, in.l4 = pkt[9], 20
		in.hash = uint64(binary.LittleEndian.Uint32(pkt[12:])) | uint64(binary.LittleEndian.Uint32(pkt[16:]))<<32
	case 6:
		if len(pkt) < 40 || int(binary.BigEndian.Uint16(pkt[4:]))+40 != len(pkt) {
			return in
		}
		// Any extension header, the fragment header (44) among them, leaves proto neither TCP nor UDP.
		proto, in.l4, in.v6 = pkt[6], 40, true
		in.hash = binary.LittleEndian.Uint64(pkt[8:]) ^ binary.LittleEndian.Uint64(pkt[16:])*0x9e3779b97f4a7c15 ^
			binary.LittleEndian.Uint64(pkt[24:])*0xc2b2ae3d27d4eb4f ^ binary.LittleEndian.Uint64(pkt[32:])
	default:
		return in
	}
	switch proto {
	case protoTCP:
		if len(pkt) < in.l4+20 {
			return in
		}
		thl := int(pkt[in.l4+12]>>4) * 4
		if thl < 20 || in.l4+thl > len(pkt) {
			return in
		}
		in.hdrLen = in.l4 + thl
		in.seq = binary.BigEndian.Uint32(pkt[in.l4+4:])
		in.flags = pkt[in.l4+13]
	case protoUDP:
		if len(pkt) < in.l4+8 || int(binary.BigEndian.Uint16(pkt[in.l4+4:])) != len(pkt)-in.l4 {
			return in
		}
		in.udp, in.hdrLen = true, in.l4+8
	default:
		return in
	}
	in.hash ^= uint64(binary.LittleEndian.Uint32(pkt[in.l4:]))*0x9e3779b97f4a7c15 + uint64(proto)
	in.hash *= 0xff51afd7ed558ccd
	in.hash ^= in.hash >> 29
	in.tuple = true
	in.payload = len(pkt) - in.hdrLen
	if in.payload == 0 {
		return in
	}
	if in.udp {
		in.ok = g.UDP
		return in
	}
	// Only ACK, optionally with PSH: SYN/FIN/RST/URG/ECE/CWR each change what the receiver must do with
	// the segment and the kernel's own GRO would flush on them too.
	in.ok = in.flags&^tcpPSH == tcpACK
	return in
}

// sameTuple reports whether a and b (both parsed with tuple set, same v6/udp) share addresses and ports.
func sameTuple(a, b []byte, in *pktInfo) bool {
	if in.v6 {
		return string(a[8:40]) == string(b[8:40]) && string(a[40:44]) == string(b[40:44])
	}
	return string(a[12:20]) == string(b[12:20]) && a[9] == b[9] && string(a[20:24]) == string(b[20:24])
}

// canJoin checks everything but the tuple: the IP and L4 header fields a run must share, sequence and size.
func canJoin(f *groFlow, head, pkt []byte, in *pktInfo) bool {
	if !f.open || !in.ok || in.hdrLen != f.hdrLen || in.payload > f.gso {
		return false
	}
	if f.v6 {
		// Version, traffic class, flow label; next header and hop limit.
		if string(head[0:4]) != string(pkt[0:4]) || head[7] != pkt[7] {
			return false
		}
	} else {
		// TOS, flags (DF), TTL. Without DF the IDs must be consecutive so the kernel, which numbers
		// segments head.ID+i when it splits the run again, reproduces them exactly.
		if head[1] != pkt[1] || head[6] != pkt[6] || head[8] != pkt[8] {
			return false
		}
		if head[6]&0x40 == 0 && binary.BigEndian.Uint16(pkt[4:]) != binary.BigEndian.Uint16(head[4:])+uint16(f.count) {
			return false
		}
	}
	if f.udp {
		return f.count < groMaxUDPSegs
	}
	l4 := f.l4
	// Ack, data offset, window, urgent pointer and options must match (the split copies the head's); the
	// flags byte is checked by parse.
	return in.seq == f.nextSeq &&
		string(head[l4+8:l4+13]) == string(pkt[l4+8:l4+13]) &&
		string(head[l4+14:l4+16]) == string(pkt[l4+14:l4+16]) &&
		string(head[l4+18:f.hdrLen]) == string(pkt[l4+18:f.hdrLen])
}

// Coalesce merges packets of bufs (each at bufs[i][offset:], len(bufs[i]) = offset + packet length) in place
// and writes a virtio header into the 10 bytes before every packet that must be written. It appends those
// packets' indices to toWrite and returns it. Merged segments are appended to their run's head buffer as far
// as its capacity allows, and the head's slice in bufs is extended to the new length. Per flow, the order of
// packets is preserved: a packet that cannot join the open run closes it. A packet without a flow closes
// every run (see the GRO doc for the whole promise).
func (g *GRO) Coalesce(bufs [][]byte, offset int, toWrite []int) ([]int, error) {
	if offset < VirtioHdrLen {
		return toWrite, errOffset
	}
	g.flows = g.flows[:0]
	clear(g.table[:])
	if cap(g.merged) < len(bufs) {
		g.merged = make([]bool, len(bufs))
	}
	g.merged = g.merged[:len(bufs)]
	clear(g.merged)
	barrier := -1 // the last packet without a flow: runs that started before it are closed
	for i := range bufs {
		if len(bufs[i]) < offset {
			barrier = i
			continue // written as is; Write reports the short buffer
		}
		pkt := bufs[i][offset:]
		in := g.parse(pkt)
		if !in.tuple {
			barrier = i
			continue
		}
		slot, fi := g.lookup(bufs, offset, pkt, &in)
		if fi >= 0 {
			f := &g.flows[fi]
			head := bufs[f.head][offset:]
			if f.head > barrier && canJoin(f, head, pkt, &in) &&
				len(bufs[f.head])+in.payload <= cap(bufs[f.head]) && len(head)+in.payload <= groMaxLen {
				b := bufs[f.head]
				bufs[f.head] = append(b, pkt[in.hdrLen:]...) // within cap: no allocation
				f.count++
				f.nextSeq += uint32(in.payload)
				g.merged[i] = true
				if in.payload < f.gso || in.flags&tcpPSH != 0 {
					f.open, f.psh = false, in.flags&tcpPSH != 0
				}
				continue
			}
			f.open = false
		}
		// The packet starts a new run of its flow (or, if it cannot, just ends the old one).
		// A closed flow stays in the table (open = false) so later packets of the tuple still find it.
		if !in.ok || len(g.flows) >= groMaxFlows {
			continue
		}
		g.flows = append(g.flows, groFlow{hash: in.hash, head: i, l4: in.l4, hdrLen: in.hdrLen, gso: in.payload,
			count: 1, nextSeq: in.seq + uint32(in.payload), open: in.flags&tcpPSH == 0, udp: in.udp, v6: in.v6})
		if slot >= 0 {
			g.table[slot] = int16(len(g.flows))
		}
	}
	for i := range bufs {
		if !g.merged[i] {
			if len(bufs[i]) >= offset {
				clear(bufs[i][offset-VirtioHdrLen : offset])
			}
			toWrite = append(toWrite, i)
		}
	}
	for fi := range g.flows {
		if f := &g.flows[fi]; f.count > 1 {
			f.finish(bufs[f.head][offset-VirtioHdrLen:])
		}
	}
	return toWrite, nil
}

// lookup finds the open-addressing slot for in's tuple: (slot, flow index) when a flow with the tuple is
// known, (slot, -1) with slot empty when not, (-1, -1) when the table is full.
func (g *GRO) lookup(bufs [][]byte, offset int, pkt []byte, in *pktInfo) (int, int) {
	for p := range groTableSize {
		slot := int((in.hash + uint64(p)) % groTableSize)
		e := g.table[slot]
		if e == 0 {
			return slot, -1
		}
		f := &g.flows[e-1]
		if f.hash == in.hash && f.udp == in.udp && f.v6 == in.v6 && sameTuple(bufs[f.head][offset:], pkt, in) {
			return slot, int(e - 1)
		}
	}
	return -1, -1
}

// finish turns the head of a run into a GSO packet: lengths, IPv4 header checksum, the L4 checksum field set
// to the pseudo-header sum (CHECKSUM_PARTIAL), PSH if the last segment had it, and the virtio header in b[:10].
func (f *groFlow) finish(b []byte) {
	pkt := b[VirtioHdrLen:]
	n, l4, l4Len := len(pkt), f.l4, len(pkt)-f.l4
	var proto uint8 = protoTCP
	h := VirtioHdr{Flags: VirtioNeedsCsum, HdrLen: uint16(f.hdrLen), GSOSize: uint16(f.gso), CsumStart: uint16(l4)}
	if f.udp {
		proto, h.GSOType, h.CsumOffset = protoUDP, GSOUDPL4, 6
		binary.BigEndian.PutUint16(pkt[l4+4:], uint16(l4Len))
	} else {
		h.CsumOffset = 16
		if f.psh {
			pkt[l4+13] |= tcpPSH
		}
	}
	var sum uint16
	if f.v6 {
		if !f.udp {
			h.GSOType = GSOTCPv6
		}
		binary.BigEndian.PutUint16(pkt[4:], uint16(n-40))
		sum = PseudoSum6(proto, pkt[8:24], pkt[24:40], l4Len)
	} else {
		if !f.udp {
			h.GSOType = GSOTCPv4
		}
		binary.BigEndian.PutUint16(pkt[2:], uint16(n))
		binary.BigEndian.PutUint16(pkt[10:], 0)
		binary.BigEndian.PutUint16(pkt[10:], Checksum(pkt[:20], 0))
		sum = PseudoSum4(proto, pkt[12:16], pkt[16:20], l4Len)
	}
	binary.BigEndian.PutUint16(pkt[l4+int(h.CsumOffset):], sum)
	h.Encode(b)
}
