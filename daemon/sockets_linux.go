package daemon

import (
	"fmt"
	"net/netip"
	"runtime"

	"github.com/salvovpn/salvo/batch"
	"github.com/salvovpn/salvo/engine"
)

// socketStats sums what the batched sockets counted.
func socketStats(conns []engine.PacketConn) engine.SocketStats {
	var st engine.SocketStats
	for _, c := range conns {
		if bc, ok := c.(*batch.Conn); ok {
			s := bc.Stats()
			st.GSORefused += s.GSORefused
			st.GROTruncated += s.GROTruncated
		}
	}
	return st
}

// listenUDP opens a batched socket; an IPv6 address gets an IPv6-only socket so a separate IPv4 listener
// on the same port does not collide with it.
// worker is the socket's worker in a reuseport group (its SO_INCOMING_CPU), or -1.
func listenUDP(sw switches, addr string, mark uint32, batchSize int, reusePort bool, worker int) (*batch.Conn, error) {
	ap, err := netip.ParseAddrPort(addr)
	network := "udp4"
	if err == nil && ap.Addr().Is6() {
		network = "udp6"
	}
	c, err := batch.Listen(network, addr, batch.Options{Mark: mark, BatchSize: batchSize, ReusePort: reusePort,
		SetIncomingCPU: reusePort && worker >= 0 && worker < runtime.NumCPU(), IncomingCPU: worker,
		DisableGSO: sw.noUDPGSO, EnableGRO: !sw.noUDPGRO})
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	return c, nil
}

// listenHandshake opens a listen address's handshake socket: a member of the address's reuseport group
// that only receives login requests (small, one at a time: no GRO, small buffers).
func listenHandshake(addr string) (*batch.Conn, error) {
	ap, err := netip.ParseAddrPort(addr)
	network := "udp4"
	if err == nil && ap.Addr().Is6() {
		network = "udp6"
	}
	c, err := batch.Listen(network, addr, batch.Options{BatchSize: 32, ReusePort: true, RecvBuffer: 1 << 20, SendBuffer: 1 << 20})
	if err != nil {
		return nil, fmt.Errorf("listen %s (handshake socket): %w", addr, err)
	}
	return c, nil
}
