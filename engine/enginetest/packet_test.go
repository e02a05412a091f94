package enginetest

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

var (
	v4a = netip.MustParseAddr("10.8.0.2")
	v4b = netip.MustParseAddr("10.201.0.2")
	v6a = netip.MustParseAddr("fd00:8::2")
	v6b = netip.MustParseAddr("fd00:201::2")
)

func TestPacketBuildersRoundTrip(t *testing.T) {
	for _, payload := range [][]byte{nil, []byte("x"), []byte("even"), bytes.Repeat([]byte{0xff}, 1301)} {
		for _, tc := range []struct {
			name     string
			pkt      []byte
			src, dst netip.Addr
			proto    uint8
		}{
			{"IPv4UDP", IPv4UDP(v4a, v4b, 4000, 53, payload), v4a, v4b, ProtoUDP},
			{"IPv6UDP", IPv6UDP(v6a, v6b, 4000, 53, payload), v6a, v6b, ProtoUDP},
			{"IPv4ICMPEcho", IPv4ICMPEcho(v4a, v4b, 77, 3, payload), v4a, v4b, ProtoICMP},
			{"IPv6ICMPEcho", IPv6ICMPEcho(v6a, v6b, 77, 3, payload), v6a, v6b, ProtoICMPv6},
		} {
			p, ok := ParsePacket(tc.pkt)
			if !ok {
				t.Fatalf("%s (%d-byte payload): ParsePacket failed", tc.name, len(payload))
			}
			if p.Src != tc.src || p.Dst != tc.dst || p.Proto != tc.proto || !bytes.Equal(p.Payload, payload) {
				t.Errorf("%s: parsed %v -> %v proto %d payload %d bytes", tc.name, p.Src, p.Dst, p.Proto, len(p.Payload))
			}
			if tc.proto == ProtoUDP && (p.SrcPort != 4000 || p.DstPort != 53) {
				t.Errorf("%s: ports %d -> %d", tc.name, p.SrcPort, p.DstPort)
			}
			if tc.proto != ProtoUDP && (p.ID != 77 || p.Seq != 3) {
				t.Errorf("%s: id %d seq %d", tc.name, p.ID, p.Seq)
			}
			if err := VerifyChecksums(tc.pkt); err != nil {
				t.Errorf("%s (%d-byte payload): %v", tc.name, len(payload), err)
			}
			src, dst, pl, ok := ParseIP(tc.pkt)
			if !ok || src != tc.src || dst != tc.dst || !bytes.Equal(pl, payload) {
				t.Errorf("%s: ParseIP = %v %v %q %v", tc.name, src, dst, pl, ok)
			}
		}
	}
	if p := UDPPacket(netip.AddrPortFrom(v4a, 1), netip.AddrPortFrom(v4b, 2), nil); p[0]>>4 != 4 {
		t.Error("UDPPacket with IPv4 addresses did not build IPv4")
	}
	if p := UDPPacket(netip.AddrPortFrom(v6a, 1), netip.AddrPortFrom(v6b, 2), nil); p[0]>>4 != 6 {
		t.Error("UDPPacket with IPv6 addresses did not build IPv6")
	}
}

// TestIPv4HeaderKnownVector checks the header against the worked example on Wikipedia's "IPv4 header
// checksum" page (192.168.0.1 -> 192.168.0.199, UDP, 115 bytes, DF, TTL 64: checksum 0xb861), which
// happens to use the builder's defaults.
func TestIPv4HeaderKnownVector(t *testing.T) {
	pkt := IPv4UDP(netip.MustParseAddr("192.168.0.1"), netip.MustParseAddr("192.168.0.199"), 1, 2, make([]byte, 115-28))
	want := []byte{0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61,
		0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7}
	if !bytes.Equal(pkt[:20], want) {
		t.Fatalf("header\n% x\nwant\n% x", pkt[:20], want)
	}
}

// TestTransportChecksumsIndependently recomputes the transport checksums the long way, from pseudo-headers
// laid out byte by byte as the RFCs draw them, and for ICMP compares with golang.org/x/net/icmp.
func TestTransportChecksumsIndependently(t *testing.T) {
	payload := []byte("odd length payload")

	v4 := IPv4UDP(v4a, v4b, 4000, 53, payload)
	seg := v4[20:]
	ph := append(append(append([]byte{}, v4a.AsSlice()...), v4b.AsSlice()...), 0, ProtoUDP, 0, byte(len(seg)))
	if got := refChecksum(ph, seg); got != 0 {
		t.Errorf("IPv4 UDP checksum does not verify (residue %#04x)", got)
	}

	v6 := IPv6UDP(v6a, v6b, 4000, 53, payload)
	seg = v6[40:]
	ph = append(append(append([]byte{}, v6a.AsSlice()...), v6b.AsSlice()...), 0, 0, 0, byte(len(seg)), 0, 0, 0, ProtoUDP)
	if got := refChecksum(ph, seg); got != 0 {
		t.Errorf("IPv6 UDP checksum does not verify (residue %#04x)", got)
	}

	msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: 77, Seq: 3, Data: payload}}
	want, err := msg.Marshal(nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := IPv4ICMPEcho(v4a, v4b, 77, 3, payload)[20:]; !bytes.Equal(got, want) {
		t.Errorf("ICMPv4 echo\n% x\nx/net/icmp\n% x", got, want)
	}

	msg = icmp.Message{Type: ipv6.ICMPTypeEchoRequest, Body: &icmp.Echo{ID: 77, Seq: 3, Data: payload}}
	want, err = msg.Marshal(icmp.IPv6PseudoHeader(v6a.AsSlice(), v6b.AsSlice()))
	if err != nil {
		t.Fatal(err)
	}
	if got := IPv6ICMPEcho(v6a, v6b, 77, 3, payload)[40:]; !bytes.Equal(got, want) {
		t.Errorf("ICMPv6 echo\n% x\nx/net/icmp\n% x", got, want)
	}
}

// refChecksum is a deliberately plain RFC 1071 sum over the concatenation, folded after every addition.
func refChecksum(parts ...[]byte) uint16 {
	var all []byte
	for _, p := range parts {
		all = append(all, p...)
	}
	if len(all)%2 == 1 {
		all = append(all, 0)
	}
	var s uint32
	for i := 0; i < len(all); i += 2 {
		s += uint32(all[i])<<8 | uint32(all[i+1])
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

func TestVerifyChecksumsDetectsCorruption(t *testing.T) {
	for _, tc := range []struct {
		name   string
		pkt    []byte
		offset int // a byte to flip
		want   string
	}{
		{"IPv4 header", IPv4UDP(v4a, v4b, 1, 2, []byte("data")), 8, "IPv4 header"},
		{"IPv4 UDP payload", IPv4UDP(v4a, v4b, 1, 2, []byte("data")), 29, "UDP"},
		{"IPv6 UDP payload", IPv6UDP(v6a, v6b, 1, 2, []byte("data")), 49, "UDP"},
		{"IPv6 source (pseudo-header)", IPv6UDP(v6a, v6b, 1, 2, []byte("data")), 9, "UDP"},
		{"ICMPv4", IPv4ICMPEcho(v4a, v4b, 1, 2, []byte("data")), 25, "ICMP"},
		{"ICMPv6", IPv6ICMPEcho(v6a, v6b, 1, 2, []byte("data")), 45, "ICMPv6"},
	} {
		tc.pkt[tc.offset] ^= 0x01
		if err := VerifyChecksums(tc.pkt); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: flipped byte %d, VerifyChecksums = %v, want a %s checksum error", tc.name, tc.offset, err, tc.want)
		}
	}

	// Zero means "no checksum" over IPv4, but is invalid over IPv6.
	v4 := IPv4UDP(v4a, v4b, 1, 2, []byte("data"))
	binary.BigEndian.PutUint16(v4[26:], 0)
	if err := VerifyChecksums(v4); err != nil {
		t.Errorf("IPv4 UDP without checksum: %v", err)
	}
	v6 := IPv6UDP(v6a, v6b, 1, 2, []byte("data"))
	binary.BigEndian.PutUint16(v6[46:], 0)
	if err := VerifyChecksums(v6); err == nil {
		t.Error("IPv6 UDP with a zero checksum passed")
	}
	if err := VerifyChecksums([]byte{0x45}); err == nil {
		t.Error("VerifyChecksums accepted a truncated packet")
	}
}

func TestParseRejectsMalformed(t *testing.T) {
	good4 := IPv4UDP(v4a, v4b, 1, 2, []byte("data"))
	good6 := IPv6UDP(v6a, v6b, 1, 2, []byte("data"))
	edit := func(pkt []byte, f func([]byte)) []byte {
		p := clone(pkt)
		f(p)
		return p
	}
	for name, pkt := range map[string][]byte{
		"empty":                      nil,
		"version 5":                  edit(good4, func(p []byte) { p[0] = 0x55 }),
		"IPv4 shorter than a header": good4[:19],
		"IPv4 IHL below 5":           edit(good4, func(p []byte) { p[0] = 0x44 }),
		"IPv4 total beyond the data": good4[:len(good4)-1],
		"IPv4 total below IHL":       edit(good4, func(p []byte) { binary.BigEndian.PutUint16(p[2:], 19) }),
		"IPv6 shorter than a header": good6[:39],
		"IPv6 payload beyond data":   good6[:len(good6)-1],
		"UDP shorter than a header":  edit(good4, func(p []byte) { binary.BigEndian.PutUint16(p[2:], 27) }),
		"UDP length below 8":         edit(good4, func(p []byte) { binary.BigEndian.PutUint16(p[24:], 7) }),
		"UDP length beyond IP":       edit(good6, func(p []byte) { binary.BigEndian.PutUint16(p[44:], 13) }),
		"ICMP shorter than a header": IPv4ICMPEcho(v4a, v4b, 1, 2, nil)[:27],
	} {
		if _, ok := ParsePacket(pkt); ok {
			t.Errorf("%s: ParsePacket accepted it", name)
		}
		if _, _, _, ok := ParseIP(pkt); ok {
			t.Errorf("%s: ParseIP accepted it", name)
		}
	}
}

func TestParseIgnoresTrailingBytesAndUnknownProtocols(t *testing.T) {
	padded := append(IPv4UDP(v4a, v4b, 1, 2, []byte("data")), 0, 0, 0, 0)
	if _, _, pl, ok := ParseIP(padded); !ok || string(pl) != "data" {
		t.Fatalf("padded packet: %q %v", pl, ok)
	}
	// A protocol the parser does not know: the payload is the whole IP payload.
	pkt := IPv6UDP(v6a, v6b, 1, 2, []byte("data"))
	pkt[6] = 6 // TCP
	p, ok := ParsePacket(pkt)
	if !ok || p.Proto != 6 || len(p.Payload) != 12 || &p.Payload[0] != &p.IPPayload[0] {
		t.Fatalf("unknown protocol: %+v %v", p, ok)
	}
}

func TestBuildersPanicOnMistakes(t *testing.T) {
	for name, build := range map[string]func(){
		"IPv4UDP with IPv6":      func() { IPv4UDP(v6a, v4b, 1, 2, nil) },
		"IPv6UDP with IPv4":      func() { IPv6UDP(v6a, v4b, 1, 2, nil) },
		"IPv4ICMPEcho with zero": func() { IPv4ICMPEcho(netip.Addr{}, v4b, 1, 2, nil) },
		"IPv4 too long":          func() { IPv4UDP(v4a, v4b, 1, 2, make([]byte, 65535-27)) },
		"IPv6 too long":          func() { IPv6ICMPEcho(v6a, v6b, 1, 2, make([]byte, 65535-7)) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			build()
		}()
	}
	// The largest packets that fit still build.
	IPv4UDP(v4a, v4b, 1, 2, make([]byte, 65535-28))
	IPv6UDP(v6a, v6b, 1, 2, make([]byte, 65535-8))
}

// TestEchoReply: a reply swaps the addresses, keeps id, sequence and payload, has the reply type and
// valid checksums, for both families; anything but an echo request gets none.
func TestEchoReply(t *testing.T) {
	for _, tc := range []struct {
		req  []byte
		typ  uint8
		name string
	}{
		{IPv4ICMPEcho(netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), 7, 9, []byte("hello")), 0, "ipv4"},
		{IPv6ICMPEcho(netip.MustParseAddr("fd00::1"), netip.MustParseAddr("fd00::2"), 7, 9, []byte("hello")), 129, "ipv6"},
	} {
		reply, ok := EchoReply(tc.req)
		if !ok {
			t.Fatalf("%s: no reply", tc.name)
		}
		if err := VerifyChecksums(reply); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		q, _ := ParsePacket(tc.req)
		r, _ := ParsePacket(reply)
		if r.Src != q.Dst || r.Dst != q.Src || r.ICMPType != tc.typ || r.ID != 7 || r.Seq != 9 || string(r.Payload) != "hello" {
			t.Fatalf("%s: reply %+v to %+v", tc.name, r, q)
		}
		if _, ok := EchoReply(reply); ok {
			t.Fatalf("%s: a reply was answered", tc.name)
		}
	}
	if _, ok := EchoReply(UDPPacket(netip.MustParseAddrPort("10.0.0.1:1"), netip.MustParseAddrPort("10.0.0.2:2"), nil)); ok {
		t.Fatal("a UDP packet was answered")
	}
}
