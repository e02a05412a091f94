package engine

import (
	"encoding/binary"
	"net/netip"
)

// ipAddrs returns the source and destination of an IPv4 or IPv6 packet. It is called for every packet in
// both directions, so it returns ok=false on anything malformed instead of an error value, and never
// allocates. The length check against the IP header's own length field rejects packets whose declared
// size disagrees with what arrived (the AEAD only proves the peer sent these bytes, not that they are sane).
func ipAddrs(p []byte) (src, dst netip.Addr, ok bool) {
	if len(p) < 1 {
		return src, dst, false
	}
	switch p[0] >> 4 {
	case 4:
		if len(p) < 20 {
			return src, dst, false
		}
		ihl := int(p[0]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(p[2:4]))
		if ihl < 20 || total < ihl || total > len(p) {
			return src, dst, false
		}
		return netip.AddrFrom4([4]byte(p[12:16])), netip.AddrFrom4([4]byte(p[16:20])), true
	case 6:
		if len(p) < 40 {
			return src, dst, false
		}
		if 40+int(binary.BigEndian.Uint16(p[4:6])) > len(p) {
			return src, dst, false
		}
		return netip.AddrFrom16([16]byte(p[8:24])), netip.AddrFrom16([16]byte(p[24:40])), true
	}
	return src, dst, false
}

// ipLen is the length the IP header declares (trailing bytes beyond it, e.g. padding, are not forwarded).
func ipLen(p []byte) int {
	if p[0]>>4 == 4 {
		return int(binary.BigEndian.Uint16(p[2:4]))
	}
	return 40 + int(binary.BigEndian.Uint16(p[4:6]))
}
