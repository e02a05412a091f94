package batch

import (
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// groMessageSpan is how many vector slots one Conn-owned GRO buffer is provisioned for: a Conn with
// BatchSize n receives at most max(1, n/groMessageSpan) coalesced messages per recvmmsg. 64 is the old
// kernel segment limit, so a full receive still fills a vector with 64-segment runs; it is no bound on
// what a message holds (whatever does not fit stays pending).
const groMessageSpan = 64

// groBufSize is the size of a Conn-owned GRO buffer: any UDP payload fits (65527 bytes over IPv6, 65507
// over IPv4), and so does any GSO send, which the kernel limits to one IP packet's length. A message
// coalesced by receive-side GRO is assumed to stay within that too (not verified with a raised
// gro_max_size); one that did not would be truncated, and counted in Stats.GROTruncated.
const groBufSize = MaxPacket

// groMsg is one received message as the kernel delivered it.
type groMsg struct {
	b []byte // the coalesced datagrams, back to back
	// seg is the segment size from the UDP_GRO control message, raw: 0 when there was none (one plain
	// datagram); anything else not in 1..len(b) is treated the same way, as the whole message.
	seg  int32
	from netip.AddrPort
}

// segSize is the effective segment size of m: every datagram but the last has it, the last is shorter or
// equal. A message without a usable size is one datagram.
func (m *groMsg) segSize() int {
	s := int(m.seg)
	if s <= 0 || s > len(m.b) {
		return len(m.b)
	}
	return s
}

// groCursor is the next datagram splitGRO hands out: at byte off of message msg. msg == len(msgs) means
// nothing is pending.
type groCursor struct{ msg, off int }

// splitGRO copies datagrams out of msgs, from cur on, into the caller's vector: datagram i becomes
// bufs[i][:sizes[i]] (truncated to len(bufs[i]) if longer, as ReadBatch documents) from addrs[i]. It stops
// when bufs is full or msgs are exhausted, advances cur past what it handed out and returns how many.
// An empty message yields one empty datagram. No syscalls, no allocation: FuzzSplitGRO drives it with
// arbitrary messages. sizes and addrs must be at least as long as bufs.
func splitGRO(msgs []groMsg, cur *groCursor, bufs [][]byte, sizes []int, addrs []netip.AddrPort) int {
	n := 0
	for n < len(bufs) && cur.msg < len(msgs) {
		m := &msgs[cur.msg]
		end := min(cur.off+m.segSize(), len(m.b))
		sizes[n] = copy(bufs[n], m.b[cur.off:end])
		addrs[n] = m.from
		n++
		if end < len(m.b) {
			cur.off = end
		} else {
			// An empty message ends here too, after its one empty datagram.
			cur.msg, cur.off = cur.msg+1, 0
		}
	}
	return n
}

// groState is a GRO Conn's receive side: the buffers coalesced messages land in, and what of the last
// receive has not been handed out. Guarded by Conn.rmu.
type groState struct {
	bufs [][]byte // max(1, BatchSize/groMessageSpan) buffers of groBufSize bytes, allocated once
	msgs []groMsg // the messages of the last recvmmsg, slices of bufs; capacity len(bufs)
	cur  groCursor
}

func newGROState(batch int) groState {
	g := groState{bufs: make([][]byte, max(1, batch/groMessageSpan))}
	for i := range g.bufs {
		g.bufs[i] = make([]byte, groBufSize)
	}
	g.msgs = make([]groMsg, 0, len(g.bufs))
	return g
}

// readGRO is ReadBatch on a GRO socket; bufs, sizes and addrs are already cut to one length, at most
// BatchSize. Pending datagrams are returned first, without a syscall; the socket is read only when none
// are left, so the Conn's buffers are free to be overwritten.
func (c *Conn) readGRO(bufs [][]byte, sizes []int, addrs []netip.AddrPort) (int, error) {
	g := &c.grs
	if g.cur.msg < len(g.msgs) {
		return splitGRO(g.msgs, &g.cur, bufs, sizes, addrs), nil
	}
	r := &c.rd
	// Each message yields at least one datagram, so more messages than buffers would only be kept
	// pending; fewer keeps a one-buffer read cheap.
	k := min(len(g.bufs), len(bufs))
	for m := range k {
		setIov(&r.iovs[m], g.bufs[m])
		h := &r.msgs[m].Hdr
		h.Iov = &r.iovs[m]
		h.SetIovlen(1)
		h.Namelen = unix.SizeofSockaddrInet6
		h.Flags = 0
		slot := r.ctrl[m*ctrlSlot : (m+1)*ctrlSlot]
		h.Control = &slot[0]
		h.SetControllen(ctrlSlot)
	}
	if err := c.recvmmsg(k); err != nil {
		return 0, err
	}
	g.msgs, g.cur = g.msgs[:r.done], groCursor{}
	for m := range r.done {
		h := &r.msgs[m].Hdr
		if h.Flags&unix.MSG_TRUNC != 0 {
			c.groTruncated.Add(1) // the tail is gone; hand out what arrived
		}
		g.msgs[m] = groMsg{b: g.bufs[m][:r.msgs[m].Len], seg: groSegmentSize(h), from: sockaddrToAddrPort(&r.names[m])}
	}
	return splitGRO(g.msgs, &g.cur, bufs, sizes, addrs), nil
}

// groSegmentSize returns the UDP_GRO segment size the kernel reported for a received message, as the
// kernel wrote it (an int), or 0 when the message carries no such control message.
func groSegmentSize(h *unix.Msghdr) int32 {
	if h.Control == nil || int(h.Controllen) < unix.CmsgLen(4) {
		return 0
	}
	ctrl := unsafe.Slice(h.Control, int(h.Controllen))
	cm := (*unix.Cmsghdr)(unsafe.Pointer(&ctrl[0]))
	if cm.Level != unix.SOL_UDP || cm.Type != unix.UDP_GRO || int(cm.Len) < unix.CmsgLen(4) {
		return 0
	}
	return *(*int32)(unsafe.Pointer(&ctrl[unix.CmsgLen(0)]))
}
