package netns

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// Ping sends one ICMP echo from inside the namespace to dst and waits up to
// timeout for the matching reply. It uses a raw socket opened inside the
// namespace (via Do), so it works without a ping binary and never sends from
// the host's namespace.
func (ns *NS) Ping(dst netip.Addr, timeout time.Duration) error {
	network, proto := "ip4:icmp", 1
	var reqType, replyType icmp.Type = ipv4.ICMPTypeEcho, ipv4.ICMPTypeEchoReply
	if dst.Is6() && !dst.Is4In6() {
		network, proto = "ip6:ipv6-icmp", 58
		reqType, replyType = ipv6.ICMPTypeEchoRequest, ipv6.ICMPTypeEchoReply
	}
	var conn *icmp.PacketConn
	if err := ns.Do(func() error {
		var err error
		conn, err = icmp.ListenPacket(network, "")
		return err
	}); err != nil {
		return fmt.Errorf("netns: %s: ping %s: open socket: %w", ns.Name, dst, err)
	}
	defer conn.Close()

	payload := make([]byte, 16)
	_, _ = rand.Read(payload)
	id := os.Getpid() & 0xffff
	msg := icmp.Message{Type: reqType, Body: &icmp.Echo{ID: id, Seq: 1, Data: payload}}
	wire, err := msg.Marshal(nil) // kernel fills the ICMPv6 checksum
	if err != nil {
		return fmt.Errorf("netns: %s: ping %s: marshal: %w", ns.Name, dst, err)
	}
	to := &net.IPAddr{IP: dst.AsSlice(), Zone: dst.Zone()}
	if _, err := conn.WriteTo(wire, to); err != nil {
		return fmt.Errorf("netns: %s: ping %s: send: %w", ns.Name, dst, err)
	}
	deadline := time.Now().Add(timeout)
	if err := conn.SetReadDeadline(deadline); err != nil {
		return fmt.Errorf("netns: %s: ping %s: deadline: %w", ns.Name, dst, err)
	}
	buf := make([]byte, 1500)
	for {
		n, from, err := conn.ReadFrom(buf)
		if err != nil {
			return fmt.Errorf("netns: %s: ping %s: no reply: %w", ns.Name, dst, err)
		}
		// A raw socket sees every ICMP packet in the namespace (including
		// our own request on loopback), so match type, source and payload.
		rm, err := icmp.ParseMessage(proto, buf[:n])
		if err != nil || rm.Type != replyType {
			continue
		}
		echo, ok := rm.Body.(*icmp.Echo)
		if !ok || !bytes.Equal(echo.Data, payload) {
			continue
		}
		if ip, ok := from.(*net.IPAddr); ok {
			if a, ok := netip.AddrFromSlice(ip.IP); ok && a.Unmap() != dst.Unmap() {
				continue
			}
		}
		return nil
	}
}
