package offload

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// This file is the test oracle for the promise in the GRO doc comment. It reads packets on its own (it
// shares no code with parse and canJoin), so a classification bug in gro.go shows up as a broken promise.

// groFlowKey returns the flow of p as the GRO doc defines it (version, protocol, addresses, ports), or ""
// for a packet that has none and must therefore be a barrier.
func groFlowKey(p []byte) string {
	if len(p) < 20 {
		return ""
	}
	var l4 int
	var proto byte
	switch p[0] >> 4 {
	case 4:
		if p[0] != 0x45 || int(binary.BigEndian.Uint16(p[2:])) != len(p) || binary.BigEndian.Uint16(p[6:])&0x3fff != 0 {
			return ""
		}
		l4, proto = 20, p[9]
	case 6:
		if len(p) < 40 || int(binary.BigEndian.Uint16(p[4:]))+40 != len(p) {
			return ""
		}
		l4, proto = 40, p[6]
	default:
		return ""
	}
	switch proto {
	case protoTCP:
		if len(p) < l4+20 {
			return ""
		}
		if thl := int(p[l4+12]>>4) * 4; thl < 20 || l4+thl > len(p) {
			return ""
		}
	case protoUDP:
		if len(p) < l4+8 || int(binary.BigEndian.Uint16(p[l4+4:])) != len(p)-l4 {
			return ""
		}
	default:
		return ""
	}
	addrs := p[12:20]
	if l4 == 40 {
		addrs = p[8:40]
	}
	return string([]byte{p[0] >> 4, proto}) + string(addrs) + string(p[l4:l4+4])
}

// groSame reports whether seg, the segment at position pos of a run whose first packet was head, is orig
// with only the changes the GRO doc allows in a coalesced packet, and has correct checksums.
func groSame(orig, seg []byte, pos int, head []byte) bool {
	if len(orig) != len(seg) || groFlowKey(orig) == "" {
		return false
	}
	v6 := orig[0]>>4 == 6
	l4, proto := 20, orig[9]
	if v6 {
		l4, proto = 40, orig[6]
	}
	at := l4 + 16
	if proto == protoUDP {
		at = l4 + 6
	}
	if refL4Checksum(seg) != binary.BigEndian.Uint16(seg[at:]) {
		return false
	}
	masked := func(p []byte) []byte {
		c := append([]byte(nil), p...)
		c[at], c[at+1] = 0, 0
		if !v6 {
			c[4], c[5], c[10], c[11] = 0, 0, 0, 0 // ID (checked below), header checksum
		}
		return c
	}
	if !v6 {
		if refSum(seg[:20], 0) != 0xffff {
			return false
		}
		id := binary.BigEndian.Uint16(orig[4:])
		if orig[6]&0x40 != 0 { // DF: renumbered from the run's first packet
			id = binary.BigEndian.Uint16(head[4:]) + uint16(pos)
		}
		if binary.BigEndian.Uint16(seg[4:]) != id {
			return false
		}
	}
	return bytes.Equal(masked(orig), masked(seg))
}

// checkGRO checks the GRO doc comment's promise for one Coalesce call: in holds the packets as given (not
// aliased with bufs), bufs and idx are what Coalesce left and returned at offset off. It returns the
// packets the kernel gets once it has cut every GSO packet into segments, in order.
func checkGRO(t testing.TB, in, bufs [][]byte, off int, idx []int) [][]byte {
	t.Helper()
	written := make([]bool, len(in))
	for k, i := range idx {
		if i < 0 || i >= len(in) || k > 0 && i <= idx[k-1] {
			t.Fatalf("toWrite %v: indices not increasing within [0,%d)", idx, len(in))
		}
		written[i] = true
	}
	keys := make([]string, len(in))
	for i, p := range in {
		keys[i] = groFlowKey(p)
	}
	runOf := make([]int, len(in)) // index of the written packet each input came out of; -1: not (yet) found
	for i := range runOf {
		runOf[i] = -1
	}
	var order []int // input index of each packet the kernel gets
	var back [][]byte
	zero := make([]byte, VirtioHdrLen)
	for _, i := range idx {
		if len(bufs[i]) < off {
			t.Fatalf("packet %d: buffer of %d bytes, shorter than the offset", i, len(bufs[i]))
		}
		hb, pkt := bufs[i][off-VirtioHdrLen:off], bufs[i][off:]
		var h VirtioHdr
		if err := h.Decode(hb); err != nil {
			t.Fatalf("packet %d: bad virtio header: %v", i, err)
		}
		if h.GSOType == GSONone {
			if !bytes.Equal(hb, zero) {
				t.Fatalf("packet %d written as is with virtio header %x", i, hb)
			}
			if !bytes.Equal(pkt, in[i]) {
				t.Fatalf("packet %d written as is but changed:\n got %x\nwant %x", i, short(pkt), short(in[i]))
			}
			runOf[i] = i
			order, back = append(order, i), append(back, pkt)
			continue
		}
		if h.Flags != VirtioNeedsCsum || len(pkt) > groMaxLen {
			t.Fatalf("packet %d: GSO packet of %d bytes with header %+v", i, len(pkt), h)
		}
		if keys[i] == "" {
			t.Fatalf("packet %d has no flow but heads a GSO packet: %x", i, short(in[i]))
		}
		n := len(in) // a run cannot have more segments than there were packets
		sb, sizes := makeBufs(n, off+int(h.HdrLen)+int(h.GSOSize)+64), make([]int, n)
		cnt, err := Split(&h, append([]byte(nil), pkt...), sb, sizes, off)
		if err != nil {
			t.Fatalf("packet %d: the kernel would not split the GSO packet: %v", i, err)
		}
		if cnt < 2 || h.GSOType == GSOUDPL4 && cnt > groMaxUDPSegs {
			t.Fatalf("packet %d: GSO packet of %d segments", i, cnt)
		}
		prev := i
		for j := range cnt {
			seg := sb[j][off : off+sizes[j]]
			src := -1
			if j == 0 {
				if groSame(in[i], seg, 0, in[i]) {
					src = i
				}
			} else {
				for m := prev + 1; m < len(in); m++ {
					if !written[m] && runOf[m] < 0 && keys[m] == keys[i] && groSame(in[m], seg, j, in[i]) {
						src = m
						break
					}
				}
			}
			if src < 0 {
				t.Fatalf("segment %d of the GSO packet at %d is no given packet with allowed changes: %x", j, i, short(seg))
			}
			runOf[src], prev = i, src
			order, back = append(order, src), append(back, seg)
		}
	}
	for i := range in {
		if runOf[i] < 0 {
			t.Fatalf("packet %d lost (%d of %d came out): %x", i, len(order), len(in), short(in[i]))
		}
	}
	for p := range order {
		for q := p + 1; q < len(order); q++ {
			a, b := order[p], order[q] // a comes out before b
			if a < b {
				continue
			}
			ka, kb := keys[a], keys[b]
			switch {
			case kb == "":
				t.Fatalf("packet %d has no flow (a barrier) but packet %d overtook it", b, a)
			case ka == kb:
				t.Fatalf("packets %d and %d of one flow come out in the wrong order", b, a)
			case written[a] || runOf[a] >= b:
				t.Fatalf("packet %d overtook packet %d without being merged into an earlier run", a, b)
			}
		}
	}
	return back
}

// groVector builds up to 128 packets of four flows (TCP and UDP over IPv4 and IPv6) from prog, two bytes
// per packet: which flow and what to do (the next segment, a short one, a header field changed for good,
// a retransmission, a wrong checksum, a barrier), so that runs, their limits and every reason to close
// one are reached far more often than with arbitrary bytes. The first byte picks the segment size and the
// buffers' capacity.
func groVector(prog []byte) (in [][]byte, capacity int) {
	if len(prog) == 0 {
		return nil, 0
	}
	gso := []int{100, 1000, 1400, 37}[prog[0]&3]
	capacity = testOff + []int{1500, 8000, 65535, 70000}[prog[0]>>2&3]
	prog = prog[1:]
	var flows [4]pktSpec
	for i := range flows {
		flows[i] = defaultSpec(i&1 != 0, i&2 != 0)
		flows[i].sport += uint16(i)
	}
	for ; len(prog) >= 2 && len(in) < 128; prog = prog[2:] {
		op, arg := prog[0], prog[1]
		fl := &flows[op&3]
		s := *fl
		size := gso
		switch op >> 2 & 7 {
		case 0, 1: // the next segment
		case 2: // a short segment (ends a run)
			size = int(arg)%gso + 1
		case 3: // a TCP flag flipped in this segment
			s.flags ^= 1 << (arg & 7)
		case 4: // a header field changed for this and every later segment
			switch arg & 7 {
			case 0:
				fl.ttl--
			case 1:
				fl.tos ^= 1 << (arg >> 3 & 7)
			case 2:
				fl.df = !fl.df
			case 3:
				fl.id += uint16(arg)
			case 4:
				fl.ack++
			case 5:
				fl.win++
			case 6:
				fl.opts = append(fl.opts[:0:0], 1, 1, 1, arg)
			case 7:
				fl.opts = nil
			}
			s = *fl
		case 5: // a barrier: a fragment of the flow, another protocol, junk
			p := s
			p.payload = make([]byte, size)
			b := p.build()
			switch arg & 3 {
			case 0:
				b[6] |= 0x20
			case 1:
				if s.v6 {
					b[6] = 58 // ICMPv6
				} else {
					b[9] = 1 // ICMP
				}
			case 2:
				b = b[:arg>>2]
			case 3:
				b = append(b, 0)
			}
			in = append(in, b)
			continue
		case 6: // a retransmission, or data beyond a gap
			s.seq += uint32(int(int8(arg)) * gso)
		case 7: // a packet with a wrong checksum
		}
		s.payload = make([]byte, size)
		for i := range s.payload {
			s.payload[i] = byte(len(in))
		}
		p := s.build()
		if op>>2&7 == 7 {
			at := len(p) - size - 20 - len(s.opts) + 16 // the TCP checksum
			if s.udp {
				at = len(p) - size - 2
			}
			if arg&1 == 0 && !s.v6 {
				at = 10 // the IPv4 header checksum
			}
			p[at] ^= arg | 1
		}
		in = append(in, p)
		fl.seq += uint32(size)
		fl.id++
	}
	return in, capacity
}

// FuzzGROVector checks the promise of the GRO doc comment on vectors built by groVector.
func FuzzGROVector(f *testing.F) {
	f.Add([]byte{0x0a, 0, 0, 1, 0, 2, 0, 3, 0, 0, 0, 1, 0, 2, 0, 3, 0})
	long := []byte{0x09}
	for i := range 100 {
		long = append(long, byte(i&3), 0)
	}
	f.Add(long)
	udp := []byte{0x08}
	for range 127 {
		udp = append(udp, 2, 0)
	}
	f.Add(udp)
	f.Add([]byte{0x0e, 0, 0, 0, 0, 5 << 2, 0, 0, 0, 4 << 2, 2, 0, 0, 6 << 2, 0xff, 0, 0, 7 << 2, 4, 0, 0})
	f.Fuzz(func(t *testing.T, prog []byte) {
		in, capacity := groVector(prog)
		bufs := vec(capacity, in...)
		g := GRO{UDP: true}
		idx, err := g.Coalesce(bufs, testOff, nil)
		if err != nil {
			t.Fatal(err)
		}
		checkGRO(t, in, bufs, testOff, idx)
	})
}

// short returns at most the first 80 bytes of p, for messages.
func short(p []byte) []byte { return p[:min(len(p), 80)] }
