package engine

import (
	"context"
	"time"

	"github.com/salvovpn/salvo/protocol"
	"github.com/salvovpn/salvo/protocol/transport"
)

// receiveLoop is the client's hot inbound path: open the data packets of a vector in place and write them to
// the TUN device in one call. Handshake-phase messages go to the control goroutine.
// It returns only when the socket fails or is closed.
func (c *Client) receiveLoop() error {
	v := newVector(c.cfg.BatchSize, bufSize)
	conn := c.conn.conn
	for {
		n, err := conn.ReadBatch(v.bufs, v.sizes, v.addrs)
		if err != nil {
			return err
		}
		c.inbound(v, n)
	}
}

// inbound processes one received vector; a panic loses the vector, is counted and logged (see
// Server.inbound).
func (c *Client) inbound(v *vector, n int) {
	defer c.panics.recoverVector(c.log, "udp receive")
	server := c.ServerAddr()
	now := time.Now()
	out := v.outBufs[:0]
	for i := range n {
		b := v.bufs[i][:v.sizes[i]]
		if v.addrs[i] != server {
			c.global.drop(DropMalformed) // not from our gateway
			continue
		}
		code, hdr, ok := parseDatagram(b)
		if !ok {
			c.global.drop(DropMalformed)
			continue
		}
		switch code {
		case protocol.CodeData, protocol.CodeDisconnect:
		case protocol.CodeServerAuthResponse, protocol.CodeCookieReply, protocol.CodeNotice:
			select {
			case c.hsIn <- append([]byte(nil), b...):
			default:
				c.global.drop(DropHandshakeQueue)
			}
			continue
		default:
			c.global.drop(DropMalformed)
			continue
		}
		kp := c.current.Load()
		if kp == nil || kp.LocalIndex() != hdr.Receiver {
			kp = c.previous.Load()
			if kp == nil || kp.LocalIndex() != hdr.Receiver {
				c.global.drop(DropUnknownSession)
				continue
			}
		}
		plen, verdict := kp.OpenHeader(hdr, b, now)
		if verdict != transport.OK {
			c.counters.drop(verdictDrop(verdict))
			if c.drops.due() {
				c.drops.logf(verdictDrop(verdict))
			}
			continue
		}
		c.lastRecv.Store(now.UnixNano())
		if code == protocol.CodeDisconnect {
			select {
			case c.ended <- disconnectReason(v.bufs[i], plen):
			default: // one is already waiting for the control loop
			}
			continue
		}
		if plen == 0 {
			continue // keepalive
		}
		pkt, _, _, ok := innerPacket(v.bufs[i], plen)
		if !ok {
			c.counters.drop(DropMalformed)
			continue
		}
		c.counters.RxPackets.Add(1)
		c.counters.RxBytes.Add(uint64(len(pkt)))
		out = append(out, v.bufs[i][:protocol.Headroom+len(pkt)])
	}
	if dev := c.device(); len(out) > 0 && dev != nil {
		if _, err := dev.Write(out, protocol.Headroom); err != nil {
			c.global.drop(DropSend)
			if c.drops.due() {
				c.drops.logf(DropSend, "err", err)
			}
		}
	}
}

// tunLoop is the client's hot outbound path: a vector from the TUN device is sealed in place under the
// current key and sent with one sendmmsg.
func (c *Client) tunLoop(ctx context.Context) error {
	v := newVector(c.cfg.BatchSize, bufSize)
	dev := c.device()
	for {
		n, err := dev.Read(v.bufs, v.sizes, protocol.Headroom)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		c.outbound(v, n)
	}
}

// outbound seals one TUN vector under the current key and sends it; a panic loses the vector.
func (c *Client) outbound(v *vector, n int) {
	defer c.panics.recoverVector(c.log, "tun read")
	now := time.Now()
	kp := c.current.Load()
	if kp == nil {
		c.counters.Drops[DropNoKey].Add(uint64(n))
		return
	}
	if err := kp.SealBatch(v.bufs[:n], v.sizes[:n], now); err != nil {
		c.counters.Drops[DropExpired].Add(uint64(n))
		return
	}
	out := v.outBufs[:0]
	var bytes uint64
	for i := range n {
		bytes += uint64(v.sizes[i] - protocol.DataOverhead)
		out = append(out, v.bufs[i][:v.sizes[i]])
	}
	server := c.ServerAddr()
	for i := range n {
		v.addrs[i] = server
	}
	sent, err := c.conn.write(out, v.addrs[:n])
	if err != nil {
		c.global.Drops[DropSend].Add(uint64(n - sent))
		if c.drops.due() {
			c.drops.logf(DropSend, "err", err)
		}
	}
	c.counters.TxPackets.Add(uint64(sent))
	c.counters.TxBytes.Add(bytes)
	c.lastSend.Store(now.UnixNano())
}
