package engine

import (
	"context"
	"net/netip"
	"time"

	"github.com/salvovpn/salvo/protocol"
	"github.com/salvovpn/salvo/protocol/handshake"
	"github.com/salvovpn/salvo/protocol/transport"
	"golang.zx2c4.com/wireguard/tun"
)

// bufSize leaves room for a 64 KiB TSO/GRO super-packet plus the Salvo header and tag, so the TUN layer can
// coalesce in place.
const bufSize = protocol.Headroom + 65535 + protocol.TagLen

// inboundState is what one receive loop keeps between vectors.
type inboundState struct {
	ctx     context.Context
	socket  int
	worker  int
	dev     tun.Device
	v       *vector
	pending []confirmation
	cross   uint64
	intake  intakeSocket // this socket, for the handshakes it receives
}

// inbound processes the n datagrams of one received vector. A panic in here (a bug reached by some input)
// loses this vector, is counted and logged, and the loop goes on: one packet must never take the gateway
// down, which would also hand whoever found the bug a way to kill every session at will.
func (s *Server) inbound(r *inboundState, n int) {
	defer s.panics.recoverVector(s.log, "udp receive")
	r.pending, r.cross = r.pending[:0], 0 // start clean even if the last vector panicked half-way
	v := r.v
	now := time.Now()
	out := v.outBufs[:0]
	for i := range n {
		b := v.bufs[i][:v.sizes[i]]
		code, hdr, ok := parseDatagram(b)
		if !ok {
			s.global.drop(DropMalformed)
			if s.drops.due() {
				s.drops.logf(DropMalformed, "from", v.addrs[i])
			}
			continue
		}
		switch code {
		case protocol.CodeData, protocol.CodeDisconnect:
		case protocol.CodeClientAuthRequest:
			s.intakeHandshake(b, v.addrs[i], r.intake, now)
			continue
		default:
			s.global.drop(DropMalformed)
			continue
		}
		e, ok := s.table.index(hdr.Receiver)
		if !ok {
			s.global.drop(DropUnknownSession)
			if s.drops.due() {
				s.drops.logf(DropUnknownSession, "from", v.addrs[i])
			}
			// Tell a client whose session we lost (gateway restart) to log in again, rate-limited so
			// this cannot be used to amplify or flood.
			if s.notices.allow(v.addrs[i].Addr(), now) {
				_ = s.sockets[r.socket].writeOne(handshake.NewNotice(handshake.NoticeUnknownSession, hdr.Receiver), v.addrs[i])
			}
			continue
		}
		sess := e.sess
		if s.workers > 1 && s.layout.owner(hdr.Receiver) != r.worker {
			r.cross++
		}
		plen, verdict := e.kp.OpenHeader(hdr, b, now)
		if verdict != transport.OK {
			r := verdictDrop(verdict)
			sess.counters.drop(r)
			if s.drops.due() {
				s.drops.logf(r, "user", sess.user, "from", v.addrs[i])
			}
			continue
		}
		sess.lastRecv.Store(now.UnixNano())
		if ep := sess.endpoint.Load(); ep.addr != v.addrs[i] || ep.socket != r.socket {
			// Roaming: an authenticated packet from a new address moves the session there.
			sess.endpoint.Store(&endpoint{addr: v.addrs[i], socket: r.socket})
		}
		if e.kp == sess.next.Load() {
			r.pending = append(r.pending, confirmation{sess, e.kp})
		}
		if code == protocol.CodeDisconnect {
			s.removeSession(sess)
			continue
		}
		if plen == 0 {
			continue // keepalive
		}
		pkt, src, dst, ok := innerPacket(v.bufs[i], plen)
		if !ok {
			sess.counters.drop(DropMalformed)
			continue
		}
		if !sess.owns(src) {
			sess.counters.drop(DropSpoofed)
			if s.drops.due() {
				s.drops.logf(DropSpoofed, "user", sess.user, "src", src)
			}
			continue
		}
		if !routableDestination(dst) {
			sess.counters.drop(DropDestination)
			continue
		}
		if !s.cfg.ClientToClient && s.isClientAddr(dst) {
			sess.counters.drop(DropPolicy)
			continue
		}
		sess.counters.RxPackets.Add(1)
		sess.counters.RxBytes.Add(uint64(len(pkt)))
		out = append(out, v.bufs[i][:protocol.Headroom+len(pkt)])
	}
	if len(out) > 0 {
		if _, err := r.dev.Write(out, protocol.Headroom); err != nil {
			if r.ctx.Err() != nil {
				return
			}
			s.global.drop(DropSend)
			if s.drops.due() {
				s.drops.logf(DropSend, "err", err)
			}
		}
	}
	if r.cross > 0 {
		s.crossWorker.Add(r.cross) // once per vector, not per packet: the counter is shared by all workers
		r.cross = 0
	}
	for _, p := range r.pending {
		s.confirm(p.sess, p.kp, now)
	}
	r.pending = r.pending[:0]
}

type confirmation struct {
	sess *serverSession
	kp   *transport.Keypair
}

// routableDestination reports whether a client may send to dst through the gateway. Loopback, link-local,
// multicast, unspecified and limited-broadcast destinations mean something only on the gateway's own links:
// forwarded there, a client could reach services bound to the gateway's loopback (the kernel drops
// martians on most paths, but not all: a TUN packet to ::1 is delivered locally) or spray multicast onto
// its LANs. They are dropped and counted as bad_destination.
func routableDestination(dst netip.Addr) bool {
	return !(dst.IsLoopback() || dst.IsLinkLocalUnicast() || dst.IsMulticast() || dst.IsUnspecified() ||
		dst == netip.AddrFrom4([4]byte{255, 255, 255, 255}))
}

// isClientAddr reports whether a is a tunnel address that belongs to the pools, other than the gateway's own.
func (s *Server) isClientAddr(a netip.Addr) bool {
	if p := s.cfg.Pool4; p != nil && p.Contains(a) {
		return a != p.Gateway()
	}
	if p := s.cfg.Pool6; p != nil && p.Contains(a) {
		return a != p.Gateway()
	}
	return false
}

// outboundState is what one TUN loop keeps between vectors: its vector and, per socket, the datagrams to
// send through it.
type outboundState struct {
	worker int
	v      *vector
	bufs   [][][]byte
	addrs  [][]netip.AddrPort
}

// outbound seals the n packets of one TUN vector and sends them; a panic loses the vector (see inbound).
func (s *Server) outbound(o *outboundState, n int) {
	defer s.panics.recoverVector(s.log, "tun read")
	// Start clean even if the last vector panicked half-way: a stale entry would point into a buffer that
	// now holds another, unsealed packet.
	for c := range o.bufs {
		o.bufs[c], o.addrs[c] = o.bufs[c][:0], o.addrs[c][:0]
	}
	v := o.v
	now := time.Now()
	for i := range n {
		pkt := v.bufs[i][protocol.Headroom : protocol.Headroom+v.sizes[i]]
		_, dst, ok := ipAddrs(pkt)
		if !ok {
			s.global.drop(DropMalformed)
			continue
		}
		sess := s.table.session(dst)
		if sess == nil {
			s.global.drop(DropNoRoute)
			continue
		}
		kp := sess.current.Load()
		if kp == nil {
			sess.counters.drop(DropNoKey)
			continue
		}
		m, err := kp.Seal(protocol.CodeData, v.bufs[i], v.sizes[i], now)
		if err != nil {
			sess.counters.drop(DropExpired)
			continue
		}
		ep := sess.endpoint.Load()
		c := s.layout.sibling(ep.socket, o.worker)
		o.bufs[c] = append(o.bufs[c], v.bufs[i][:m])
		o.addrs[c] = append(o.addrs[c], ep.addr)
		sess.counters.TxPackets.Add(1)
		sess.counters.TxBytes.Add(uint64(v.sizes[i]))
	}
	for c := range s.sockets {
		if len(o.bufs[c]) == 0 {
			continue
		}
		if sent, err := s.sockets[c].write(o.bufs[c], o.addrs[c]); err != nil {
			s.global.Drops[DropSend].Add(uint64(len(o.bufs[c]) - sent))
			if s.drops.due() {
				s.drops.logf(DropSend, "err", err)
			}
		}
		o.bufs[c] = o.bufs[c][:0]
		o.addrs[c] = o.addrs[c][:0]
	}
}
