package offload

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
)

// refSum is the textbook RFC 1071 sum: big-endian 16-bit words into a 32-bit accumulator.
func refSum(b []byte, initial uint16) uint16 {
	s := uint32(initial)
	for len(b) >= 2 {
		s += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint32(b[0]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

// refL4Checksum computes the L4 checksum of an IP packet the slow way, with the checksum field zeroed.
func refL4Checksum(pkt []byte) uint16 {
	var ph []byte
	var l4 int
	var proto byte
	if pkt[0]>>4 == 4 {
		l4, proto = int(pkt[0]&0xf)*4, pkt[9]
		ph = append(ph, pkt[12:20]...)
	} else {
		l4, proto = 40, pkt[6]
		ph = append(ph, pkt[8:40]...)
	}
	seg := append([]byte(nil), pkt[l4:]...)
	at := 16
	if proto == protoUDP {
		at = 6
	}
	seg[at], seg[at+1] = 0, 0
	ph = binary.BigEndian.AppendUint32(ph, uint32(len(seg)))
	ph = append(ph, 0, 0, 0, proto)
	c := ^refSum(seg, refSum(ph, 0))
	if proto == protoUDP && c == 0 {
		c = 0xffff
	}
	return c
}

// pktSpec describes a test packet.
type pktSpec struct {
	v6       bool
	udp      bool
	src, dst string
	sport    uint16
	dport    uint16
	seq, ack uint32
	flags    uint8
	id       uint16
	ttl      uint8
	tos      uint8
	df       bool
	opts     []byte // TCP options (multiple of 4)
	ipOpts   []byte // IPv4 options (multiple of 4)
	win      uint16 // TCP window; 0 means 502
	payload  []byte
}

func defaultSpec(v6, udp bool) pktSpec {
	s := pktSpec{v6: v6, udp: udp, src: "10.0.0.1", dst: "10.0.0.2", sport: 1000, dport: 2000, seq: 7777,
		ack: 99, flags: tcpACK, id: 100, ttl: 64, df: true}
	if v6 {
		s.src, s.dst = "fd00::1", "fd00::2"
	}
	return s
}

// build returns the packet with correct IP and L4 checksums.
func (s pktSpec) build() []byte {
	var l4 []byte
	if s.udp {
		l4 = make([]byte, 8, 8+len(s.payload))
		binary.BigEndian.PutUint16(l4[0:], s.sport)
		binary.BigEndian.PutUint16(l4[2:], s.dport)
		binary.BigEndian.PutUint16(l4[4:], uint16(8+len(s.payload)))
	} else {
		l4 = make([]byte, 20, 20+len(s.opts)+len(s.payload))
		binary.BigEndian.PutUint16(l4[0:], s.sport)
		binary.BigEndian.PutUint16(l4[2:], s.dport)
		binary.BigEndian.PutUint32(l4[4:], s.seq)
		binary.BigEndian.PutUint32(l4[8:], s.ack)
		l4[12] = byte((20+len(s.opts))/4) << 4
		l4[13] = s.flags
		win := s.win
		if win == 0 {
			win = 502
		}
		binary.BigEndian.PutUint16(l4[14:], win)
		l4 = append(l4, s.opts...)
	}
	l4 = append(l4, s.payload...)
	src, dst := netip.MustParseAddr(s.src), netip.MustParseAddr(s.dst)
	var ip []byte
	proto := byte(protoTCP)
	if s.udp {
		proto = protoUDP
	}
	if s.v6 {
		ip = make([]byte, 40)
		ip[0] = 0x60 | s.tos>>4
		ip[1] = s.tos << 4
		binary.BigEndian.PutUint16(ip[4:], uint16(len(l4)))
		ip[6], ip[7] = proto, s.ttl
		copy(ip[8:], src.AsSlice())
		copy(ip[24:], dst.AsSlice())
	} else {
		ip = append(make([]byte, 20, 20+len(s.ipOpts)), s.ipOpts...)
		ip[0], ip[1] = 0x40|byte(len(ip)/4), s.tos
		binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)+len(l4)))
		binary.BigEndian.PutUint16(ip[4:], s.id)
		if s.df {
			ip[6] = 0x40
		}
		ip[8], ip[9] = s.ttl, proto
		copy(ip[12:], src.AsSlice())
		copy(ip[16:], dst.AsSlice())
		binary.BigEndian.PutUint16(ip[10:], ^refSum(ip, 0))
	}
	pkt := append(ip, l4...)
	at := len(ip) + 16
	if s.udp {
		at = len(ip) + 6
	}
	binary.BigEndian.PutUint16(pkt[at:], refL4Checksum(pkt))
	return pkt
}

// superOf builds what the kernel hands over for a TSO/USO send: the virtio header (NEEDS_CSUM, pseudo-header
// sum in the checksum field) and one packet with the whole payload.
func superOf(s pktSpec, gso int) (VirtioHdr, []byte) {
	pkt := s.build()
	l4 := 20 + len(s.ipOpts)
	h := VirtioHdr{Flags: VirtioNeedsCsum, GSOSize: uint16(gso), CsumStart: uint16(l4), CsumOffset: 16}
	if s.v6 {
		l4, h.CsumStart = 40, 40
	}
	var proto uint8 = protoTCP
	switch {
	case s.udp:
		proto, h.GSOType, h.CsumOffset = protoUDP, GSOUDPL4, 6
	case s.v6:
		h.GSOType = GSOTCPv6
	default:
		h.GSOType = GSOTCPv4
	}
	var ps uint16
	if s.v6 {
		ps = PseudoSum6(proto, pkt[8:24], pkt[24:40], len(pkt)-l4)
	} else {
		ps = PseudoSum4(proto, pkt[12:16], pkt[16:20], len(pkt)-l4)
	}
	binary.BigEndian.PutUint16(pkt[l4+int(h.CsumOffset):], ps)
	h.HdrLen = uint16(len(pkt) - len(s.payload))
	return h, pkt
}

func randBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// makeBufs returns n buffers of size bytes.
func makeBufs(n, size int) [][]byte {
	b := make([][]byte, n)
	for i := range b {
		b[i] = make([]byte, size)
	}
	return b
}

// segmentsOf cuts s into the packets a sender would emit one by one with segment size gso: what Split must
// reproduce and what GRO gets as input.
func segmentsOf(s pktSpec, gso int) [][]byte {
	var out [][]byte
	pl := s.payload
	for i := 0; len(pl) > 0; i++ {
		n := min(gso, len(pl))
		seg := s
		seg.payload = pl[:n]
		seg.seq = s.seq + uint32(i*gso)
		seg.id = s.id + uint16(i)
		seg.flags = s.flags
		if len(pl) > n {
			seg.flags &^= tcpFIN | tcpPSH
		}
		if i > 0 {
			seg.flags &^= tcpCWR
		}
		out = append(out, seg.build())
		pl = pl[n:]
	}
	return out
}

// fragment cuts the IPv4 packet p (IHL 5) into two fragments at offset at (a multiple of 8) of its IP
// payload: MF on the first, the offset on the second, DF cleared, header checksums recomputed.
func fragment(p []byte, at int) (first, second []byte) {
	mk := func(data []byte, off int, mf bool) []byte {
		f := append(append([]byte(nil), p[:20]...), data...)
		binary.BigEndian.PutUint16(f[2:], uint16(len(f)))
		v := uint16(off / 8)
		if mf {
			v |= 0x2000
		}
		binary.BigEndian.PutUint16(f[6:], v)
		f[10], f[11] = 0, 0
		binary.BigEndian.PutUint16(f[10:], ^refSum(f[:20], 0))
		return f
	}
	return mk(p[20:20+at], 0, true), mk(p[20+at:], at, false)
}

// udpFragPair returns the two fragments of a 264-byte UDP datagram from src:7000 to dst:5001 with IPv4 ID
// id, its payload filled with mark, cut so that the second fragment passes for a UDP datagram of its own:
// its first 8 bytes read as a header (ports 7000 -> 5001, length 200 = the fragment's payload). Two such
// datagrams with consecutive IDs are what the old parse merged into one USO packet.
func udpFragPair(src, dst string, id uint16, mark byte) (first, second []byte) {
	s := defaultSpec(false, true)
	s.src, s.dst, s.sport, s.dport, s.id, s.df = src, dst, 7000, 5001, id, false
	s.payload = make([]byte, 256)
	for i := range s.payload {
		s.payload[i] = mark
	}
	// The second fragment starts 64 bytes into the UDP datagram, at payload[56:], and holds 200 bytes.
	copy(s.payload[56:], []byte{0x1b, 0x58, 0x13, 0x89, 0, 200, 0, 0})
	return fragment(s.build(), 64)
}
