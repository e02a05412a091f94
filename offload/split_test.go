package offload

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
)

const testOff = 16 // protocol.Headroom

func TestSplit(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for _, v6 := range []bool{false, true} {
		for _, udp := range []bool{false, true} {
			for _, plen := range []int{1, 1420, 1420 * 3, 1420*3 + 17, 65535 - 60 - 40} {
				for _, flags := range []uint8{tcpACK, tcpACK | tcpPSH, tcpACK | tcpPSH | tcpFIN | tcpCWR | tcpECE} {
					for _, ipOpts := range [][]byte{nil, ipv4RouterAlert} {
						if udp && flags != tcpACK || v6 && ipOpts != nil {
							continue
						}
						name := fmt.Sprintf("v6=%v/udp=%v/len=%d/flags=%#x/ipopts=%d", v6, udp, plen, flags, len(ipOpts))
						t.Run(name, func(t *testing.T) {
							s := defaultSpec(v6, udp)
							s.flags, s.payload, s.ipOpts = flags, randBytes(r, plen), ipOpts
							if !udp {
								s.opts = []byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2} // NOP NOP timestamps
							}
							if v6 || udp { // keep IPv6/UDP payload within the 64 KiB limits too
								s.payload = s.payload[:min(plen, 65535-48-12)]
							}
							h, super := superOf(s, 1420)
							want := segmentsOf(s, 1420)
							bufs := makeBufs(64, testOff+65535)
							sizes := make([]int, 64)
							n, err := Split(&h, super, bufs, sizes, testOff)
							if err != nil {
								t.Fatal(err)
							}
							if n != len(want) {
								t.Fatalf("%d segments, want %d", n, len(want))
							}
							for i := range n {
								got := bufs[i][testOff : testOff+sizes[i]]
								if !bytes.Equal(got, want[i]) {
									t.Fatalf("segment %d differs:\n got %x\nwant %x", i, got[:60], want[i][:60])
								}
								if c := refL4Checksum(got); c != l4Csum(got) {
									t.Fatalf("segment %d: L4 checksum %#x, reference %#x", i, l4Csum(got), c)
								}
							}
						})
					}
				}
			}
		}
	}
}

// ipv4RouterAlert is an IPv4 option (RFC 2113) that makes a 24-byte header.
var ipv4RouterAlert = []byte{0x94, 4, 0, 0}

// l4Csum returns the checksum field of a TCP or UDP packet (IPv4 with or without options, IPv6 without
// extension headers).
func l4Csum(pkt []byte) uint16 {
	l4, proto := int(pkt[0]&0xf)*4, pkt[9]
	if pkt[0]>>4 == 6 {
		l4, proto = 40, pkt[6]
	}
	if proto == protoUDP {
		return binary.BigEndian.Uint16(pkt[l4+6:])
	}
	return binary.BigEndian.Uint16(pkt[l4+16:])
}

func TestSplitNoGSOFinishesChecksum(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		for _, udp := range []bool{false, true} {
			s := defaultSpec(v6, udp)
			s.payload = []byte("hello, checksum offload!!")
			want := s.build()
			h, pkt := superOf(s, 1420)
			h.GSOType, h.GSOSize = GSONone, 0
			bufs, sizes := makeBufs(1, 2000), make([]int, 1)
			n, err := Split(&h, pkt, bufs, sizes, testOff)
			if err != nil || n != 1 || !bytes.Equal(bufs[0][testOff:testOff+sizes[0]], want) {
				t.Fatalf("v6=%v udp=%v: n=%d err=%v\n got %x\nwant %x", v6, udp, n, err, bufs[0][testOff:testOff+sizes[0]], want)
			}
		}
	}
}

func TestSplitErrors(t *testing.T) {
	s := defaultSpec(false, false)
	s.payload = make([]byte, 5000)
	h, pkt := superOf(s, 1000)
	bufs, sizes := makeBufs(8, 2000), make([]int, 8)
	if _, err := Split(&h, pkt, bufs[:3], sizes, testOff); !errors.Is(err, ErrTooManySegments) {
		t.Errorf("too many segments: %v", err)
	}
	if _, err := Split(&h, pkt, makeBufs(8, 500), sizes, testOff); err == nil {
		t.Error("short buffers accepted")
	}
	cases := map[string]func(h *VirtioHdr, p []byte) []byte{
		"short":          func(h *VirtioHdr, p []byte) []byte { return p[:19] },
		"version":        func(h *VirtioHdr, p []byte) []byte { p[0] = 0x55; return p },
		"ihl":            func(h *VirtioHdr, p []byte) []byte { p[0] = 0x4f; return p[:50] },
		"v6 type":        func(h *VirtioHdr, p []byte) []byte { h.GSOType = GSOTCPv6; return p },
		"proto":          func(h *VirtioHdr, p []byte) []byte { p[9] = protoUDP; return p },
		"fragment":       func(h *VirtioHdr, p []byte) []byte { p[6] = 0x20; return p },
		"csum start":     func(h *VirtioHdr, p []byte) []byte { h.CsumStart = 24; return p },
		"csum offset":    func(h *VirtioHdr, p []byte) []byte { h.CsumOffset = 6; return p },
		"tcp hlen":       func(h *VirtioHdr, p []byte) []byte { p[32] = 0x20; return p },
		"tcp hlen long":  func(h *VirtioHdr, p []byte) []byte { p[32] = 0xf0; return p[:60] },
		"no payload":     func(h *VirtioHdr, p []byte) []byte { return p[:40] },
		"header only v6": func(h *VirtioHdr, p []byte) []byte { p[0] = 0x60; h.GSOType = GSOTCPv6; return p[:39] },
	}
	for name, mod := range cases {
		hh, pp := h, append([]byte(nil), pkt...)
		pp = mod(&hh, pp)
		if _, err := Split(&hh, pp, bufs, sizes, testOff); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err %v, want ErrMalformed", name, err)
		}
	}
}

func TestVirtioRoundTrip(t *testing.T) {
	h := VirtioHdr{Flags: VirtioNeedsCsum, GSOType: GSOTCPv6, ECN: true, HdrLen: 72, GSOSize: 1420, CsumStart: 40, CsumOffset: 16}
	var b [VirtioHdrLen]byte
	h.Encode(b[:])
	var g VirtioHdr
	if err := g.Decode(b[:]); err != nil || g != h {
		t.Fatalf("decode %+v, %v; want %+v", g, err, h)
	}
	bad := [][]byte{
		{}, {0, 0, 0, 0, 0, 0, 0, 0, 0},
		{4, 0, 0, 0, 0, 0, 0, 0, 0, 0},    // RSC_INFO
		{0, 3, 0, 0, 1, 0, 0, 0, 0, 0},    // UFO
		{0, 1, 0, 0, 0, 0, 0, 0, 0, 0},    // TSO, gso_size 0
		{0, 0x80, 0, 0, 0, 0, 0, 0, 0, 0}, // ECN without GSO
		{1, 0, 0, 0, 0, 0, 20, 0, 9, 0},   // csum_offset 9
		{0, 7, 0, 0, 0, 0, 0, 0, 0, 0},    // unknown type
	}
	for _, b := range bad {
		if err := g.Decode(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%x: %v", b, err)
		}
	}
}

func FuzzVirtioDecode(f *testing.F) {
	f.Add([]byte{1, 1, 52, 0, 140, 5, 20, 0, 16, 0})
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		var h VirtioHdr
		if h.Decode(b) != nil {
			return
		}
		var out [VirtioHdrLen]byte
		h.Encode(out[:])
		if !bytes.Equal(out[:], b[:VirtioHdrLen]) {
			t.Fatalf("re-encoded %x from %x", out, b[:VirtioHdrLen])
		}
	})
}

func TestSplitAllocs(t *testing.T) {
	s := defaultSpec(false, false)
	s.payload = make([]byte, 65535-40)
	h, pkt := superOf(s, 1420)
	bufs, sizes := makeBufs(64, testOff+1500), make([]int, 64)
	if a := testing.AllocsPerRun(100, func() { _, _ = Split(&h, pkt, bufs, sizes, testOff) }); a != 0 {
		t.Fatalf("%v allocs per split", a)
	}
}

func BenchmarkSplit(b *testing.B) {
	for _, v6 := range []bool{false, true} {
		b.Run(fmt.Sprintf("tcp/v6=%v", v6), func(b *testing.B) {
			s := defaultSpec(v6, false)
			s.payload = make([]byte, 65535-60)
			h, pkt := superOf(s, 1420)
			bufs, sizes := makeBufs(64, testOff+1500), make([]int, 64)
			n, _ := Split(&h, pkt, bufs, sizes, testOff)
			b.SetBytes(int64(len(pkt)))
			b.ReportAllocs()
			for b.Loop() {
				_, _ = Split(&h, pkt, bufs, sizes, testOff)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/pkt")
		})
	}
}
