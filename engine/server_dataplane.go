package engine

import (
	"context"
	"net/netip"
	"time"

	"github.com/salvovpn/salvo/engine/ratelimit"
	"github.com/salvovpn/salvo/protocol"
	"github.com/salvovpn/salvo/protocol/handshake"
	"github.com/salvovpn/salvo/protocol/transport"
)

// bufSize leaves room for a 64 KiB TSO/GRO super-packet plus the Salvo header and tag, so the TUN layer can
// coalesce in place.
const bufSize = protocol.Headroom + 65535 + protocol.TagLen

// defaultVectorLen is how many packets one read or write call moves unless configured otherwise.
const defaultVectorLen = 128

// receiveLoop is the gateway's hot inbound path for one socket: read a vector of datagrams, open the data
// packets in place, check that each inner packet comes from its session's address, and write the survivors
// to the TUN device in one call. Handshake messages are copied to the handshake workers.
func (s *Server) receiveLoop(ctx context.Context, conn int) error {
	c := s.conns[conn].conn
	// This socket's worker writes to its own TUN queue, so the kernel learns to send the replies of these
	// flows back to the same worker.
	worker := conn % s.workers
	dev := s.queues[worker%len(s.queues)]
	var cross uint64
	v := newVector(s.cfg.BatchSize, bufSize)
	var pending []confirmation
	for {
		n, err := c.ReadBatch(v.bufs, v.sizes, v.addrs)
		if err != nil {
			return err
		}
		now := time.Now()
		rt := s.rt.Load()
		out := v.outBufs[:0]
		for i := range n {
			b := v.bufs[i][:v.sizes[i]]
			code, err := protocol.ParseCode(b)
			if err != nil {
				s.global.drop(DropMalformed)
				if s.drops.due() {
					s.drops.logf(DropMalformed, "from", v.addrs[i])
				}
				continue
			}
			switch code {
			case protocol.CodeData, protocol.CodeDisconnect:
			case protocol.CodeClientAuthRequest:
				s.enqueueHandshake(b, v.addrs[i], conn)
				continue
			default:
				s.global.drop(DropMalformed)
				continue
			}
			hdr, err := protocol.ParseDataHeader(b)
			if err != nil {
				s.global.drop(DropMalformed)
				continue
			}
			e, ok := rt.byIndex[hdr.Receiver]
			if !ok {
				s.global.drop(DropUnknownSession)
				if s.drops.due() {
					s.drops.logf(DropUnknownSession, "from", v.addrs[i])
				}
				// Tell a client whose session we lost (gateway restart) to log in again, rate-limited so
				// this cannot be used to amplify or flood.
				if s.notices.Allow(ratelimit.SourcePrefix(v.addrs[i].Addr()), now) {
					_ = s.conns[conn].writeOne(handshake.NewNotice(handshake.NoticeUnknownSession, hdr.Receiver), v.addrs[i])
				}
				continue
			}
			sess := e.sess
			if s.workers > 1 && s.ownerOf(hdr.Receiver) != worker {
				cross++
			}
			gotCode, plen, verdict := e.kp.Open(b, now)
			if verdict != transport.OK {
				r := verdictDrop(verdict)
				sess.counters.drop(r)
				if s.drops.due() {
					s.drops.logf(r, "user", sess.user, "from", v.addrs[i])
				}
				continue
			}
			sess.lastRecv.Store(now.UnixNano())
			if ep := sess.endpoint.Load(); ep.addr != v.addrs[i] || ep.conn != conn {
				// Roaming: an authenticated packet from a new address moves the session there.
				sess.endpoint.Store(&endpoint{addr: v.addrs[i], conn: conn})
			}
			if e.kp == sess.next.Load() {
				pending = append(pending, confirmation{sess, e.kp})
			}
			if gotCode == protocol.CodeDisconnect {
				s.removeSession(sess)
				continue
			}
			if plen == 0 {
				continue // keepalive
			}
			pkt := v.bufs[i][protocol.Headroom : protocol.Headroom+plen]
			src, dst, ok := ipAddrs(pkt)
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
			plen = ipLen(pkt)
			sess.counters.RxPackets.Add(1)
			sess.counters.RxBytes.Add(uint64(plen))
			out = append(out, v.bufs[i][:protocol.Headroom+plen])
		}
		if len(out) > 0 {
			if _, err := dev.Write(out, protocol.Headroom); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				s.global.drop(DropSend)
				if s.drops.due() {
					s.drops.logf(DropSend, "err", err)
				}
			}
		}
		if cross > 0 {
			s.crossWorker.Add(cross) // once per vector, not per packet: the counter is shared by all workers
			cross = 0
		}
		for _, p := range pending {
			s.confirm(p.sess, p.kp, now)
		}
		pending = pending[:0]
	}
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

// tunLoop is the gateway's hot outbound path for one TUN queue: read a vector, find the session that owns
// each destination, seal in place and send the vector with one sendmmsg per socket. It sends through its
// own worker's socket of the listen address the client uses (same address and port: a reuseport group).
func (s *Server) tunLoop(ctx context.Context, q int) error {
	dev := s.queues[q]
	w := q % s.workers
	v := newVector(s.cfg.BatchSize, bufSize)
	outBufs := make([][][]byte, len(s.conns))
	outAddrs := make([][]netip.AddrPort, len(s.conns))
	for i := range s.conns {
		outBufs[i] = make([][]byte, 0, s.cfg.BatchSize)
		outAddrs[i] = make([]netip.AddrPort, 0, s.cfg.BatchSize)
	}
	for {
		n, err := dev.Read(v.bufs, v.sizes, protocol.Headroom)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		now := time.Now()
		rt := s.rt.Load()
		for i := range n {
			pkt := v.bufs[i][protocol.Headroom : protocol.Headroom+v.sizes[i]]
			_, dst, ok := ipAddrs(pkt)
			if !ok {
				s.global.drop(DropMalformed)
				continue
			}
			sess := rt.byAddr[dst]
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
			c := ep.conn - ep.conn%s.workers + w
			outBufs[c] = append(outBufs[c], v.bufs[i][:m])
			outAddrs[c] = append(outAddrs[c], ep.addr)
			sess.counters.TxPackets.Add(1)
			sess.counters.TxBytes.Add(uint64(v.sizes[i]))
		}
		for c := range s.conns {
			if len(outBufs[c]) == 0 {
				continue
			}
			if sent, err := s.conns[c].write(outBufs[c], outAddrs[c]); err != nil {
				s.global.Drops[DropSend].Add(uint64(len(outBufs[c]) - sent))
				if s.drops.due() {
					s.drops.logf(DropSend, "err", err)
				}
			}
			outBufs[c] = outBufs[c][:0]
			outAddrs[c] = outAddrs[c][:0]
		}
	}
}
