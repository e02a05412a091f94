package faultrelay

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/sys/unix"
)

// A UDP socket sees a fragmented datagram only after the kernel reassembled it. IP_RECVFRAGSIZE (and
// IPV6_RECVFRAGSIZE) report the size of its largest fragment, which is what a narrow link would have
// judged: the MTU clamp uses it, so a sender that fragments to fit after an ICMP answer gets through.
const ipv6RecvFragSize = 77 // IPV6_RECVFRAGSIZE (linux/in6.h); x/sys does not name it

func enableFragSize(c *net.UDPConn) {
	rc, err := c.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		// Either may fail (an IPv4-only socket has no IPv6 level); each that works is used.
		_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_RECVFRAGSIZE, 1)
		_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, ipv6RecvFragSize, 1)
		// And the count of datagrams the kernel dropped for want of room in the socket buffer: the relay's
		// own losses, which must not pass for the faults'.
		_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RXQ_OVFL, 1)
	})
}

// icmpSender holds the raw sockets that answer clamped datagrams.
type icmpSender struct {
	fd4, fd6 int // -1 when that family is not available
}

func newICMPSender() (*icmpSender, error) {
	s := &icmpSender{fd4: -1, fd6: -1}
	var err4, err6 error
	s.fd4, err4 = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
	s.fd6, err6 = unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMPV6)
	if err4 != nil && err6 != nil {
		return nil, fmt.Errorf("faultrelay: raw ICMP sockets (need CAP_NET_RAW): %w", errors.Join(err4, err6))
	}
	if err4 != nil {
		s.fd4 = -1
	}
	if err6 != nil {
		s.fd6 = -1
	}
	return s, nil
}

func (s *icmpSender) close() {
	for _, fd := range []int{s.fd4, s.fd6} {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
}

// answerTooBig tells the sender of b (from) that the path takes at most mtu bytes, quoting the IP and UDP
// headers of what it sent (the kernel matches the quote against its socket and lowers the path MTU to the
// quoted destination). It runs on this direction's forwardLoop and builds the message on its stack.
func (p *path) answerTooBig(b []byte, from netip.AddrPort, mtu int) bool {
	local := p.r.Addr()
	if p.dir == ToClient {
		local = p.r.GatewaySide()
	}
	src, dst := from.Addr().Unmap(), local.Addr().Unmap()
	var msg [8 + 40 + 8]byte
	udpLen := udpHeader + len(b)
	if src.Is4() && dst.Is4() {
		if p.r.icmp.fd4 < 0 {
			return false
		}
		m := msg[:8+20+8]
		m[0], m[1] = 3, 4 // destination unreachable, fragmentation needed and DF set
		binary.BigEndian.PutUint16(m[6:], uint16(mtu))
		ip := m[8:28]
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(20+udpLen))
		binary.BigEndian.PutUint16(ip[6:], 0x4000) // DF
		ip[8], ip[9] = 64, unix.IPPROTO_UDP
		s4, d4 := src.As4(), dst.As4()
		copy(ip[12:], s4[:])
		copy(ip[16:], d4[:])
		binary.BigEndian.PutUint16(ip[10:], checksum(ip))
		putUDPHeader(m[28:], from.Port(), local.Port(), udpLen)
		binary.BigEndian.PutUint16(m[2:], checksum(m))
		return unix.Sendto(p.r.icmp.fd4, m, 0, &unix.SockaddrInet4{Addr: s4}) == nil
	}
	if p.r.icmp.fd6 < 0 {
		return false
	}
	m := msg[:]
	m[0] = 2 // packet too big; the kernel fills in the ICMPv6 checksum
	binary.BigEndian.PutUint32(m[4:], uint32(mtu))
	ip := m[8:48]
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:], uint16(udpLen))
	ip[6], ip[7] = unix.IPPROTO_UDP, 64
	s16, d16 := src.As16(), dst.As16()
	copy(ip[8:], s16[:])
	copy(ip[24:], d16[:])
	putUDPHeader(m[48:], from.Port(), local.Port(), udpLen)
	sa := &unix.SockaddrInet6{Addr: s16}
	return unix.Sendto(p.r.icmp.fd6, m, 0, sa) == nil
}

func putUDPHeader(b []byte, sport, dport uint16, length int) {
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint16(b[4:], uint16(min(length, 0xffff)))
	// Checksum 0: the receiver of the ICMP message does not verify the quote.
}

// checksum is the Internet checksum (RFC 1071) of b.
func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = (sum >> 16) + (sum & 0xffff)
	}
	return ^uint16(sum)
}
