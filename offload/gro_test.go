package offload

import (
	"bytes"
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

func FuzzGRO(f *testing.F) {
	s := defaultSpec(false, false)
	s.payload = make([]byte, 300)
	segs := segmentsOf(s, 100)
	u := defaultSpec(true, true)
	u.payload = make([]byte, 200)
	useg := segmentsOf(u, 100)
	f.Add(segs[0], segs[1], segs[2], useg[0], useg[1])
	f.Fuzz(func(t *testing.T, a, b, c, d, e []byte) {
		in := [][]byte{a, b, c, d, e}
		bufs := vec(testOff+2000, in...)
		g := GRO{UDP: true}
		idx, err := g.Coalesce(bufs, testOff, nil)
		if err != nil {
			t.Fatal(err)
		}
		// Whatever the kernel would split back out must be the input packets, in order.
		var hs []VirtioHdr
		var out [][]byte
		for _, i := range idx {
			var h VirtioHdr
			if err := h.Decode(bufs[i][testOff-VirtioHdrLen:]); err != nil {
				t.Fatal(err)
			}
			hs = append(hs, h)
			out = append(out, bufs[i][testOff:])
		}
		back := resplit(t, hs, out)
		if len(back) != len(in) {
			t.Fatalf("%d packets back, %d in", len(back), len(in))
		}
		for i := range back {
			if hs0 := back[i]; !bytes.Equal(hs0, in[i]) && !sameButChecksum(hs0, in[i]) {
				t.Fatalf("packet %d:\n got %x\nwant %x", i, back[i], in[i])
			}
		}
	})
}

// sameButChecksum allows the L4 checksum (recomputed by the split; the input's may be wrong) and a zero
// IPv4 UDP checksum to differ.
func sameButChecksum(a, b []byte) bool {
	if len(a) != len(b) || len(a) < 28 {
		return false
	}
	l4, proto := 20, a[9]
	if a[0]>>4 == 6 {
		l4, proto = 40, a[6]
	}
	at := l4 + 16
	if proto == protoUDP {
		at = l4 + 6
	}
	if at+2 > len(a) {
		return false
	}
	return bytes.Equal(a[:at], b[:at]) && bytes.Equal(a[at+2:], b[at+2:])
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
