package engine

import (
	"net/netip"

	"github.com/salvovpn/salvo/protocol"
	"github.com/salvovpn/salvo/protocol/transport"
)

// The receive path both ends share. A received datagram is checked in PROTOCOL.md's order: packet code,
// data header, receiver index (each end's own lookup), then transport.Keypair.OpenHeader (key age, tag,
// replay window), then the inner packet. The helpers below are the steps both ends take alike, with one
// drop reason each; what differs (which codes go to the handshake path, how the keypair is found, the
// gateway's source and destination checks) stays in Client.inbound and Server.inbound.

// parseDatagram reads the packet code and, for data and disconnect, the data header. ok is false for a
// datagram that is no Salvo packet at all (DropMalformed).
func parseDatagram(b []byte) (code protocol.Code, hdr protocol.DataHeader, ok bool) {
	code, err := protocol.ParseCode(b)
	if err != nil {
		return 0, hdr, false
	}
	if code != protocol.CodeData && code != protocol.CodeDisconnect {
		return code, hdr, true
	}
	hdr, err = protocol.ParseDataHeader(b)
	return code, hdr, err == nil
}

// verdictDrop is the drop reason of a datagram OpenHeader refused.
func verdictDrop(v transport.Verdict) DropReason {
	switch v {
	case transport.BadMAC:
		return DropBadMAC
	case transport.Replay:
		return DropReplay
	case transport.Expired:
		return DropExpired
	case transport.WrongKey:
		return DropUnknownSession
	}
	return DropMalformed
}

// disconnectReason is the reason an opened disconnect in buf (plaintext length plen) carries; an empty
// one means shutting down.
func disconnectReason(buf []byte, plen int) protocol.DisconnectReason {
	if plen == 0 {
		return protocol.DisconnectShutdown
	}
	return protocol.DisconnectReason(buf[protocol.Headroom])
}

// innerPacket is the IP packet an opened data datagram in buf (plaintext length plen > 0) carries, cut to
// the length its header declares, and its addresses. ok is false if it is no well-formed IP packet
// (DropMalformed): the AEAD proves who sent the bytes, not that they are sane.
func innerPacket(buf []byte, plen int) (pkt []byte, src, dst netip.Addr, ok bool) {
	pkt = buf[protocol.Headroom : protocol.Headroom+plen]
	if src, dst, ok = ipAddrs(pkt); !ok {
		return nil, src, dst, false
	}
	return pkt[:ipLen(pkt)], src, dst, true
}
