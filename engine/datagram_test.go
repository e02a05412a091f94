package engine

import (
	"net/netip"
	"testing"

	"github.com/salvovpn/salvo/engine/enginetest"
	"github.com/salvovpn/salvo/protocol"
)

// TestParseDatagram: codes outside data and disconnect come back without a header, a data datagram with
// its header, and anything that is no packet, or data with a bad header, is refused.
func TestParseDatagram(t *testing.T) {
	data := make([]byte, protocol.MinDataLen)
	protocol.PutDataHeader(data, protocol.CodeData, 7, 9)
	if code, hdr, ok := parseDatagram(data); !ok || code != protocol.CodeData || hdr.Receiver != 7 || hdr.Counter != 9 {
		t.Fatalf("data: %v %+v %v", code, hdr, ok)
	}
	if code, _, ok := parseDatagram([]byte{byte(protocol.CodeClientAuthRequest), 1, 2}); !ok || code != protocol.CodeClientAuthRequest {
		t.Fatalf("login: %v %v", code, ok)
	}
	reserved := append([]byte(nil), data...)
	reserved[2] = 1
	for name, b := range map[string][]byte{"empty": nil, "short data": data[:8], "reserved bits": reserved, "unknown code": {0x7f}} {
		if _, _, ok := parseDatagram(b); ok {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestInnerPacket: the inner packet is cut to the length its IP header declares (padding after it is not
// forwarded) and comes with its addresses; a plaintext that is no IP packet is refused.
func TestInnerPacket(t *testing.T) {
	src, dst := netip.MustParseAddrPort("10.77.0.2:4000"), netip.MustParseAddrPort("10.201.0.2:53")
	ip := enginetest.UDPPacket(src, dst, []byte("hello"))
	buf := make([]byte, protocol.Headroom+len(ip)+3) // 3 bytes of padding behind the packet
	copy(buf[protocol.Headroom:], ip)
	pkt, s, d, ok := innerPacket(buf, len(ip)+3)
	if !ok || len(pkt) != len(ip) || s != src.Addr() || d != dst.Addr() {
		t.Fatalf("innerPacket = %d bytes, %v -> %v, %v", len(pkt), s, d, ok)
	}
	if _, _, _, ok := innerPacket(buf, 10); ok {
		t.Fatal("a truncated packet was accepted")
	}
	if r := disconnectReason(buf, 0); r != protocol.DisconnectShutdown {
		t.Fatalf("empty disconnect: %v", r)
	}
}
