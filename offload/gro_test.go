package offload

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"
)

// vec places packets at testOff in buffers of capacity size (len = testOff + packet length).
func vec(size int, pkts ...[]byte) [][]byte {
	bufs := make([][]byte, len(pkts))
	for i, p := range pkts {
		b := make([]byte, testOff+len(p), max(size, testOff+len(p)))
		copy(b[testOff:], p)
		bufs[i] = b
	}
	return bufs
}

// coalesce runs GRO and returns, per written packet, its virtio header and packet bytes.
func coalesce(t testing.TB, udp bool, bufs [][]byte) ([]VirtioHdr, [][]byte) {
	t.Helper()
	g := GRO{UDP: udp}
	idx, err := g.Coalesce(bufs, testOff, nil)
	if err != nil {
		t.Fatal(err)
	}
	var hs []VirtioHdr
	var out [][]byte
	for _, i := range idx {
		var h VirtioHdr
		if err := h.Decode(bufs[i][testOff-VirtioHdrLen:]); err != nil {
			t.Fatalf("packet %d: bad virtio header: %v", i, err)
		}
		hs = append(hs, h)
		out = append(out, bufs[i][testOff:])
	}
	return hs, out
}

// resplit turns GRO output back into packets, as the kernel would.
func resplit(t testing.TB, hs []VirtioHdr, pkts [][]byte) [][]byte {
	t.Helper()
	var all [][]byte
	for i := range pkts {
		if hs[i].GSOType == GSONone {
			all = append(all, pkts[i])
			continue
		}
		bufs, sizes := makeBufs(128, testOff+int(hs[i].HdrLen)+int(hs[i].GSOSize)), make([]int, 128)
		n, err := Split(&hs[i], append([]byte(nil), pkts[i]...), bufs, sizes, testOff)
		if err != nil {
			t.Fatalf("split of GRO output %d: %v", i, err)
		}
		for j := range n {
			all = append(all, bufs[j][testOff:testOff+sizes[j]])
		}
	}
	return all
}

func TestGRORoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	for _, v6 := range []bool{false, true} {
		for _, udp := range []bool{false, true} {
			for _, df := range []bool{true, false} {
				t.Run(fmt.Sprintf("v6=%v/udp=%v/df=%v", v6, udp, df), func(t *testing.T) {
					s := defaultSpec(v6, udp)
					s.df = df
					s.flags = tcpACK | tcpPSH
					s.payload = randBytes(r, 1420*44+300)
					if !udp {
						s.opts = []byte{1, 1, 8, 10, 1, 2, 3, 4, 5, 6, 7, 8}
					}
					orig := segmentsOf(s, 1420)
					bufs := vec(testOff+65600, orig...)
					hs, out := coalesce(t, true, bufs)
					if len(out) >= len(orig)/20 {
						t.Fatalf("%d packets in, %d out", len(orig), len(out))
					}
					for i, h := range hs {
						if h.GSOType != GSONone && (h.Flags != VirtioNeedsCsum || h.GSOSize != 1420) {
							t.Fatalf("out %d: header %+v", i, h)
						}
						if len(out[i]) > 65535 {
							t.Fatalf("out %d: %d bytes", i, len(out[i]))
						}
					}
					back := resplit(t, hs, out)
					if len(back) != len(orig) {
						t.Fatalf("round trip: %d packets, want %d", len(back), len(orig))
					}
					for i := range orig {
						if !bytes.Equal(back[i], orig[i]) {
							t.Fatalf("packet %d differs after GRO+split:\n got %x\nwant %x", i, back[i][:64], orig[i][:64])
						}
					}
				})
			}
		}
	}
}

// TestGROEdges lists cases where the second packet must not join the first.
func TestGROEdges(t *testing.T) {
	type tc struct {
		name string
		udp  bool
		mod  func(a, b *pktSpec)
		join bool
	}
	cases := []tc{
		{name: "adjacent", join: true, mod: func(a, b *pktSpec) {}},
		{name: "adjacent udp", udp: true, join: true, mod: func(a, b *pktSpec) {}},
		{name: "psh on last", join: true, mod: func(a, b *pktSpec) { b.flags |= tcpPSH }},
		{name: "psh on first", mod: func(a, b *pktSpec) { a.flags |= tcpPSH }},
		{name: "shorter last", join: true, mod: func(a, b *pktSpec) { b.payload = b.payload[:10] }},
		{name: "longer second", mod: func(a, b *pktSpec) { b.payload = append(b.payload, 1) }},
		{name: "other port", mod: func(a, b *pktSpec) { b.sport++ }},
		{name: "other dst", mod: func(a, b *pktSpec) { b.dst = otherAddr(b.v6) }},
		{name: "other port udp", udp: true, mod: func(a, b *pktSpec) { b.dport++ }},
		{name: "syn", mod: func(a, b *pktSpec) { b.flags |= tcpSYN }},
		{name: "fin", mod: func(a, b *pktSpec) { b.flags |= tcpFIN }},
		{name: "rst", mod: func(a, b *pktSpec) { b.flags |= tcpRST }},
		{name: "urg", mod: func(a, b *pktSpec) { b.flags |= tcpURG }},
		{name: "cwr", mod: func(a, b *pktSpec) { b.flags |= tcpCWR }},
		{name: "no ack", mod: func(a, b *pktSpec) { b.flags = tcpPSH }},
		{name: "options differ", mod: func(a, b *pktSpec) { b.opts = []byte{1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 0} }},
		{name: "options length", mod: func(a, b *pktSpec) { b.opts = nil }},
		{name: "ack differs", mod: func(a, b *pktSpec) { b.ack++ }},
		{name: "seq gap", mod: func(a, b *pktSpec) { b.seq += 1 }},
		{name: "seq behind", mod: func(a, b *pktSpec) { b.seq = a.seq }},
		{name: "ttl", mod: func(a, b *pktSpec) { b.ttl-- }},
		{name: "ttl udp", udp: true, mod: func(a, b *pktSpec) { b.ttl-- }},
		{name: "tos", mod: func(a, b *pktSpec) { b.tos = 4 }},
		{name: "ecn ce", udp: true, mod: func(a, b *pktSpec) { b.tos = 3 }},
		{name: "df differs", mod: func(a, b *pktSpec) { b.df = false }},
		{name: "no df id gap", mod: func(a, b *pktSpec) { a.df, b.df = false, false; b.id += 5 }},
		{name: "no df id next", join: true, mod: func(a, b *pktSpec) { a.df, b.df = false, false }},
		{name: "df any id", join: true, mod: func(a, b *pktSpec) { b.id += 77 }},
		{name: "empty second", mod: func(a, b *pktSpec) { b.payload = nil }},
		{name: "empty first", mod: func(a, b *pktSpec) { a.payload = nil; b.seq = a.seq }},
	}
	for _, c := range cases {
		for _, v6 := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/v6=%v", c.name, v6), func(t *testing.T) {
				a := defaultSpec(v6, c.udp)
				a.payload = bytes.Repeat([]byte{0xaa}, 1000)
				a.opts = []byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0}
				if c.udp {
					a.opts = nil
				}
				b := a
				b.payload = bytes.Repeat([]byte{0xbb}, 1000)
				b.seq, b.id = a.seq+1000, a.id+1
				c.mod(&a, &b)
				if v6 && (c.name == "df differs" || c.name == "no df id gap") {
					return // IPv6 has no DF/ID
				}
				pa, pb := a.build(), b.build()
				_, out := coalesce(t, true, vec(testOff+65535, pa, pb))
				if got := len(out) == 1; got != c.join {
					t.Fatalf("joined=%v, want %v", got, c.join)
				}
				if !c.join && (!bytes.Equal(out[0], pa) || !bytes.Equal(out[1], pb)) {
					t.Fatal("packets changed although not coalesced")
				}
			})
		}
	}
}

func otherAddr(v6 bool) string {
	if v6 {
		return "fd00::3"
	}
	return "10.0.0.3"
}

func TestGROUDPNeedsUSO(t *testing.T) {
	a := defaultSpec(false, true)
	a.payload = make([]byte, 500)
	pa := a.build()
	_, out := coalesce(t, false, vec(4000, pa, pa))
	if len(out) != 2 {
		t.Fatalf("UDP coalesced without USO: %d packets", len(out))
	}
}

func TestGROIPv4OptionsAndFragments(t *testing.T) {
	a := defaultSpec(false, false)
	a.payload = make([]byte, 500)
	pa := a.build()
	frag := append([]byte(nil), pa...)
	frag[6] |= 0x20 // MF
	b := a
	b.seq += 500
	b.id++
	pb := b.build()
	_, out := coalesce(t, false, vec(4000, frag, pb))
	if len(out) != 2 {
		t.Fatalf("fragment coalesced")
	}
	// An options-bearing header (IHL 6) is never a candidate.
	opt := append(append([]byte{0x46}, pa[1:20]...), 1, 1, 1, 1)
	opt = append(opt, pa[20:]...)
	opt[3] += 4
	_, out = coalesce(t, false, vec(4000, opt, pb))
	if len(out) != 2 {
		t.Fatalf("IPv4 options coalesced")
	}
}

// TestGROFragments: no IPv4 packet with MF or a fragment offset and no IPv6 packet with a fragment header is
// coalesced, even when its first bytes pass for a TCP or UDP header whose lengths match; each is written as
// is and is a barrier. The old parse checked the fragment bits only for TCP, so the second fragments of two
// datagrams (a2, b2) became one USO packet and the kernel lost both datagrams.
func TestGROFragments(t *testing.T) {
	a1, a2 := udpFragPair("10.0.0.1", "10.0.0.2", 0x1234, 'a')
	b1, b2 := udpFragPair("10.0.0.1", "10.0.0.2", 0x1235, 'b')
	// First fragments whose UDP length field lies (it gives the fragment's length, not the datagram's).
	lie := func(p []byte, id uint16) []byte {
		p = append([]byte(nil), p...)
		binary.BigEndian.PutUint16(p[4:], id)
		binary.BigEndian.PutUint16(p[24:], uint16(len(p)-20))
		p[10], p[11] = 0, 0
		binary.BigEndian.PutUint16(p[10:], ^refSum(p[:20], 0))
		return p
	}
	// TCP: two segments of one stream turned into fragments (MF on both; then an offset on both).
	ts := defaultSpec(false, false)
	ts.payload = make([]byte, 400)
	tsegs := segmentsOf(ts, 200)
	asFrag := func(p []byte, bits uint16) []byte {
		p = append([]byte(nil), p...)
		binary.BigEndian.PutUint16(p[6:], bits)
		p[10], p[11] = 0, 0
		binary.BigEndian.PutUint16(p[10:], ^refSum(p[:20], 0))
		return p
	}
	// IPv6 with a fragment header (next header 44) in front of bytes that read as UDP.
	v6frag := func(off uint16, more bool, mark byte) []byte {
		u := defaultSpec(true, true)
		u.payload = bytes.Repeat([]byte{mark}, 200)
		p := u.build()
		fh := []byte{protoUDP, 0, 0, 0, 0, 0, 0, 7}
		v := off << 3
		if more {
			v |= 1
		}
		binary.BigEndian.PutUint16(fh[2:], v)
		q := append(append(append([]byte(nil), p[:40]...), fh...), p[40:]...)
		q[6] = 44
		binary.BigEndian.PutUint16(q[4:], uint16(len(q)-40))
		return q
	}
	cases := map[string][][]byte{
		"udp second fragments":         {a2, b2},
		"udp fragments interleaved":    {a1, b1, a2, b2},
		"udp datagrams in order":       {a1, a2, b1, b2},
		"udp first fragments that lie": {lie(a1, 0x1234), lie(b1, 0x1235)},
		"tcp with MF":                  {asFrag(tsegs[0], 0x2000), asFrag(tsegs[1], 0x2000)},
		"tcp with offset":              {asFrag(tsegs[0], 0x0040), asFrag(tsegs[1], 0x0040)},
		"tcp with DF and offset":       {asFrag(tsegs[0], 0x4040), asFrag(tsegs[1], 0x4040)},
		"ipv6 fragment header":         {v6frag(8, false, 'a'), v6frag(8, false, 'a')},
		"ipv6 fragment header, M":      {v6frag(0, true, 'a'), v6frag(0, true, 'b')},
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			bufs := vec(testOff+65535, in...)
			g := GRO{UDP: true}
			idx, err := g.Coalesce(bufs, testOff, nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(idx) != len(in) {
				t.Fatalf("%d packets written, want %d: fragments coalesced", len(idx), len(in))
			}
			checkGRO(t, in, bufs, testOff, idx)
			for i, p := range in {
				if g.parse(p).tuple {
					t.Fatalf("packet %d parsed as a flow packet (it would not be a barrier)", i)
				}
			}
		})
	}
}

// TestGROBarrier: a packet GRO cannot attribute to a flow closes every run, so nothing given after it is
// written before it; runs of the flows start again after it.
func TestGROBarrier(t *testing.T) {
	a, b := defaultSpec(false, false), defaultSpec(true, true)
	a.payload, b.payload = make([]byte, 1000*6), make([]byte, 1000*6)
	sa, sb := segmentsOf(a, 1000), segmentsOf(b, 1000)
	f1, _ := udpFragPair("10.0.0.1", "10.0.0.2", 0x1234, 'x')
	icmp := append([]byte(nil), sa[0][:28]...)
	icmp[9] = 1
	binary.BigEndian.PutUint16(icmp[2:], 28)
	for name, barrier := range map[string][]byte{"fragment": f1, "icmp": icmp, "junk": {0x45}, "empty": {}} {
		t.Run(name, func(t *testing.T) {
			var in [][]byte
			for i := range sa {
				in = append(in, sa[i], sb[i])
				if i == 2 {
					in = append(in, barrier)
				}
			}
			bufs := vec(testOff+65535, in...)
			g := GRO{UDP: true}
			idx, err := g.Coalesce(bufs, testOff, nil)
			if err != nil {
				t.Fatal(err)
			}
			back := checkGRO(t, in, bufs, testOff, idx)
			if len(idx) != 5 { // two runs before the barrier, the barrier, two runs after it
				t.Fatalf("%d packets written, want 5", len(idx))
			}
			if !bytes.Equal(back[6], barrier) {
				t.Fatalf("barrier not at position 6: %x", back[6])
			}
		})
	}
}

func TestGROCapacityAndLimit(t *testing.T) {
	s := defaultSpec(false, false)
	s.payload = make([]byte, 1420*3)
	segs := segmentsOf(s, 1420)
	// Head buffer too small for even one more segment.
	bufs := vec(0, segs...)
	_, out := coalesce(t, false, bufs)
	if len(out) != 3 {
		t.Fatalf("coalesced beyond capacity: %d", len(out))
	}
	// 64 KiB limit: 60 segments of 1420 need two runs.
	s.payload = make([]byte, 1420*60)
	segs = segmentsOf(s, 1420)
	hs, out := coalesce(t, false, vec(testOff+70000, segs...))
	if len(out) != 2 || hs[0].GSOType != GSOTCPv4 || len(out[0]) > 65535 {
		t.Fatalf("%d packets out, first %d bytes", len(out), len(out[0]))
	}
	if back := resplit(t, hs, out); len(back) != 60 {
		t.Fatalf("%d packets after split", len(back))
	}
}

// TestGROInterleavedFlows checks per-flow order and that runs of two flows form independently.
func TestGROInterleavedFlows(t *testing.T) {
	a, b := defaultSpec(false, false), defaultSpec(true, false)
	a.payload, b.payload = make([]byte, 1000*10), make([]byte, 1000*10)
	sa, sb := segmentsOf(a, 1000), segmentsOf(b, 1000)
	var in [][]byte
	for i := range sa {
		in = append(in, sa[i], sb[i])
	}
	hs, out := coalesce(t, false, vec(testOff+65535, in...))
	if len(out) != 2 {
		t.Fatalf("%d packets out", len(out))
	}
	back := resplit(t, hs, out)
	if !bytes.Equal(back[0], sa[0]) || !bytes.Equal(back[10], sb[0]) || !bytes.Equal(back[19], sb[9]) {
		t.Fatal("interleaved flows not reproduced")
	}
	// A retransmission in the middle closes the run; later segments start a new one after it.
	in = [][]byte{sa[0], sa[1], sa[0], sa[2], sa[3]}
	hs, out = coalesce(t, false, vec(testOff+65535, in...))
	back = resplit(t, hs, out)
	for i := range in {
		if !bytes.Equal(back[i], in[i]) {
			t.Fatalf("order changed at %d (%d out)", i, len(out))
		}
	}
}

func TestGROManyFlows(t *testing.T) {
	var in [][]byte
	for i := range 300 {
		s := defaultSpec(i%2 == 0, i%3 == 0)
		s.sport = uint16(i)
		s.payload = make([]byte, 100)
		in = append(in, s.build())
	}
	_, out := coalesce(t, true, vec(testOff+2000, in...))
	for i := range in {
		if !bytes.Equal(out[i], in[i]) {
			t.Fatalf("packet %d changed", i)
		}
	}
}

// FuzzGRO checks the promise of the GRO doc comment (checkGRO) on five arbitrary packets. Seeds in
// testdata/fuzz/FuzzGRO: ipv6-udp-junk-between (one-byte junk between datagrams of one flow: the old
// oracle wanted the input order, which GRO never promised for packets of other flows; junk is now a
// barrier) and ipv4-bad-header-checksum (the head of a TCP run with a wrong IPv4 header checksum comes
// back with a correct one, as the doc allows).
func FuzzGRO(f *testing.F) {
	s := defaultSpec(false, false)
	s.payload = make([]byte, 300)
	segs := segmentsOf(s, 100)
	u := defaultSpec(true, true)
	u.payload = make([]byte, 200)
	useg := segmentsOf(u, 100)
	f.Add(segs[0], segs[1], segs[2], useg[0], useg[1])
	// Two flows interleaved: the second flow's first packet is overtaken (allowed).
	f.Add(segs[0], useg[0], segs[1], useg[1], segs[2])
	// A barrier (a fragment of the flow, then junk) between segments of one run.
	frag := append([]byte(nil), segs[1]...)
	frag[6] |= 0x20
	f.Add(segs[0], frag, segs[1], []byte{0x45}, segs[2])
	// DF with unrelated IDs: the IDs of the merged segments are renumbered (allowed).
	d := s
	d.id = 4000
	dseg := segmentsOf(d, 100)
	f.Add(segs[0], dseg[1], dseg[2], []byte{}, []byte{})
	// UDP over IPv4 with a zero (absent) checksum: comes back with a computed one.
	z := defaultSpec(false, true)
	z.payload = make([]byte, 200)
	zseg := segmentsOf(z, 100)
	for _, p := range zseg {
		p[26], p[27] = 0, 0
	}
	f.Add(zseg[0], zseg[1], segs[0], segs[1], []byte{})
	// Non-first IPv4 fragments whose bytes pass for UDP (the parse bug of TestGROFragments).
	a1, a2 := udpFragPair("10.0.0.1", "10.0.0.2", 0x1234, 'a')
	b1, b2 := udpFragPair("10.0.0.1", "10.0.0.2", 0x1235, 'b')
	f.Add(a1, b1, a2, b2, []byte{})
	f.Fuzz(func(t *testing.T, a, b, c, d, e []byte) {
		in := [][]byte{a, b, c, d, e}
		bufs := vec(testOff+2000, in...)
		g := GRO{UDP: true}
		idx, err := g.Coalesce(bufs, testOff, nil)
		if err != nil {
			t.Fatal(err)
		}
		checkGRO(t, in, bufs, testOff, idx)
	})
}

func TestGROAllocs(t *testing.T) {
	s := defaultSpec(false, false)
	s.payload = make([]byte, 1420*44)
	segs := segmentsOf(s, 1420)
	bufs := vec(testOff+65535, segs...)
	orig := make([][]byte, len(bufs))
	copy(orig, bufs)
	var g GRO
	var idx []int
	idx, _ = g.Coalesce(bufs, testOff, idx)
	if a := testing.AllocsPerRun(100, func() {
		copy(bufs, orig) // resets lengths; contents of the heads stay valid packets for this purpose
		for i, p := range segs {
			copy(bufs[i][testOff:], p)
		}
		idx, _ = g.Coalesce(bufs, testOff, idx[:0])
	}); a != 0 {
		t.Fatalf("%v allocs per coalesce", a)
	}
}

func BenchmarkGRO(b *testing.B) {
	for _, v6 := range []bool{false, true} {
		b.Run(fmt.Sprintf("tcp/v6=%v", v6), func(b *testing.B) {
			s := defaultSpec(v6, false)
			s.payload = make([]byte, 1420*44)
			segs := segmentsOf(s, 1420)
			bufs := vec(testOff+65535, segs...)
			orig := make([][]byte, len(bufs))
			copy(orig, bufs)
			var g GRO
			var idx []int
			b.ReportAllocs()
			for b.Loop() {
				copy(bufs, orig)
				copy(bufs[0][testOff:], segs[0]) // the head's header was rewritten
				idx, _ = g.Coalesce(bufs, testOff, idx[:0])
			}
			if len(idx) != 1 {
				b.Fatalf("%d packets out", len(idx))
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(segs)), "ns/pkt")
		})
	}
}
