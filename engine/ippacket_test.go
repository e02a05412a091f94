package engine

import (
	"encoding/binary"
	"net/netip"
	"testing"
)

func ipv4Packet(src, dst string, payload int) []byte {
	p := make([]byte, 20+payload)
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:4], uint16(len(p)))
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(p[12:16], s[:])
	copy(p[16:20], d[:])
	return p
}

func ipv6Packet(src, dst string, payload int) []byte {
	p := make([]byte, 40+payload)
	p[0] = 0x60
	binary.BigEndian.PutUint16(p[4:6], uint16(payload))
	s, d := netip.MustParseAddr(src).As16(), netip.MustParseAddr(dst).As16()
	copy(p[8:24], s[:])
	copy(p[24:40], d[:])
	return p
}

func TestIPAddrs(t *testing.T) {
	src, dst, ok := ipAddrs(ipv4Packet("10.77.0.2", "10.201.0.2", 8))
	if !ok || src.String() != "10.77.0.2" || dst.String() != "10.201.0.2" {
		t.Fatalf("v4: %v %v %v", src, dst, ok)
	}
	src, dst, ok = ipAddrs(ipv6Packet("fd77::2", "fd00:201::2", 8))
	if !ok || src.String() != "fd77::2" || dst.String() != "fd00:201::2" {
		t.Fatalf("v6: %v %v %v", src, dst, ok)
	}
	// Trailing padding is allowed and trimmed by ipLen; a declared length beyond the data is not.
	p := append(ipv4Packet("1.1.1.1", "2.2.2.2", 4), 0, 0, 0)
	if _, _, ok := ipAddrs(p); !ok || ipLen(p) != 24 {
		t.Fatalf("padding: ok=%v len=%d", ok, ipLen(p))
	}
	bad := map[string][]byte{
		"empty":             {},
		"version 5":         {0x50, 0, 0, 20},
		"short v4":          ipv4Packet("1.1.1.1", "2.2.2.2", 0)[:19],
		"ihl too small":     func() []byte { p := ipv4Packet("1.1.1.1", "2.2.2.2", 0); p[0] = 0x44; return p }(),
		"total > data":      func() []byte { p := ipv4Packet("1.1.1.1", "2.2.2.2", 0); p[3] = 60; return p }(),
		"total < ihl":       func() []byte { p := ipv4Packet("1.1.1.1", "2.2.2.2", 0); p[3] = 10; return p }(),
		"short v6":          ipv6Packet("::1", "::2", 0)[:39],
		"v6 payload > data": func() []byte { p := ipv6Packet("::1", "::2", 4); p[5] = 5; return p }(),
	}
	for name, p := range bad {
		if _, _, ok := ipAddrs(p); ok {
			t.Errorf("%s: accepted", name)
		}
	}
}

func FuzzIPAddrs(f *testing.F) {
	f.Add(ipv4Packet("10.0.0.1", "10.0.0.2", 10))
	f.Add(ipv6Packet("fd00::1", "fd00::2", 10))
	f.Add([]byte{0x45})
	f.Add([]byte{0x60, 0, 0, 0, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, p []byte) {
		_, _, ok := ipAddrs(p)
		if ok {
			if n := ipLen(p); n > len(p) || n < 20 {
				t.Fatalf("accepted packet declares %d bytes of %d", n, len(p))
			}
		}
	})
}

func TestIPAddrsAllocs(t *testing.T) {
	p := ipv6Packet("fd77::2", "fd00:201::2", 100)
	if n := testing.AllocsPerRun(100, func() { ipAddrs(p) }); n != 0 {
		t.Fatalf("%v allocs per packet", n)
	}
}

func BenchmarkIPAddrs(b *testing.B) {
	p := ipv4Packet("10.77.0.2", "10.201.0.2", 1400)
	b.ReportAllocs()
	for b.Loop() {
		ipAddrs(p)
	}
}

func BenchmarkRoutableDestination(b *testing.B) {
	addrs := []netip.Addr{netip.MustParseAddr("10.201.0.2"), netip.MustParseAddr("fd00:201::2"), netip.MustParseAddr("8.8.8.8")}
	n := 0
	for i := 0; b.Loop(); i++ {
		if routableDestination(addrs[i%len(addrs)]) {
			n++
		}
	}
	if n == 0 {
		b.Fatal("nothing routable")
	}
}
