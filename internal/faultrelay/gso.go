package faultrelay

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// UDP segmentation offload. A sender with UDP GSO (Salvo, wireguard-go) hands the kernel up to 64 KiB of
// equal-sized datagrams in one call; over veth and loopback they reach a socket with UDP_GRO on as one
// read. The relay reads them so, judges every datagram on its own, and sends the survivors on the same
// way, so that it neither costs two system calls per datagram nor takes the receiver's batching away.
const (
	// maxGRORead is the read buffer with GRO on: loopback and veth deliver a GSO send of more than 64
	// segments (the kernel takes up to 128) as one message.
	maxGRORead = 1 << 19
	// A GSO batch ends at 64 segments (what every sender uses) or below the 64 KiB a UDP send may carry.
	maxGSOSegments = 64
	maxGSOBytes    = 65507
)

// oobSize holds the control messages a read may carry: the GRO segment size, a fragment size and the
// socket's drop count.
var oobSize = unix.CmsgSpace(4) * 3

// enableGRO turns UDP_GRO on for c and reports whether the kernel took it.
func enableGRO(c *net.UDPConn) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return false
	}
	ok := false
	_ = rc.Control(func(fd uintptr) {
		ok = unix.SetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_GRO, 1) == nil
	})
	return ok
}

// parseControl returns the GRO segment size (0: one datagram), the largest fragment's size (0: not
// fragmented) and the socket's count of datagrams the kernel dropped because the relay did not read fast
// enough (SO_RXQ_OVFL; -1 when absent) from a read's control messages. Parsed by hand:
// unix.ParseSocketControlMessage allocates.
func parseControl(oob []byte) (gso, frag int, ovfl int64) {
	ovfl = -1
	hdr := unix.CmsgLen(0)
	for len(oob) >= hdr {
		var l int
		if unix.SizeofCmsghdr == 16 {
			l = int(binary.NativeEndian.Uint64(oob))
		} else {
			l = int(binary.NativeEndian.Uint32(oob))
		}
		if l < hdr || l > len(oob) {
			return gso, frag, ovfl
		}
		level := int32(binary.NativeEndian.Uint32(oob[unix.SizeofCmsghdr-8:]))
		typ := int32(binary.NativeEndian.Uint32(oob[unix.SizeofCmsghdr-4:]))
		if l >= hdr+4 {
			v := int(int32(binary.NativeEndian.Uint32(oob[hdr:])))
			switch {
			case level == unix.SOL_UDP && typ == unix.UDP_GRO:
				gso = v
			case level == unix.IPPROTO_IP && typ == unix.IP_RECVFRAGSIZE,
				// Like IPv4, the whole fragment: fixed header, fragment header and data.
				level == unix.IPPROTO_IPV6 && typ == ipv6RecvFragSize:
				frag = v
			case level == unix.SOL_SOCKET && typ == unix.SO_RXQ_OVFL:
				ovfl = int64(uint32(v))
			}
		}
		space := unix.CmsgSpace(l - hdr)
		if space >= len(oob) {
			return gso, frag, ovfl
		}
		oob = oob[space:]
	}
	return gso, frag, ovfl
}

// gsoWriter collects the datagrams forwardLoop lets through into GSO batches: consecutive datagrams of
// one size to one destination (a shorter one may end a batch). It is owned by forwardLoop.
type gsoWriter struct {
	on    bool // GSO in use (off for good after the kernel refused it with EIO)
	buf   []byte
	seg   int // segment size of the batch
	n     int // datagrams in buf
	short bool
	to    netip.AddrPort
	oob   []byte // the UDP_SEGMENT control message
}

func (w *gsoWriter) init(on bool) {
	w.on = on
	if !on {
		return
	}
	w.buf = make([]byte, 0, maxGSOBytes)
	w.oob = make([]byte, unix.CmsgSpace(2))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&w.oob[0]))
	h.Level, h.Type = unix.SOL_UDP, unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
}

// probeGSO reports whether sends on c may carry UDP_SEGMENT (Linux 4.18+).
func probeGSO(c *net.UDPConn) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return false
	}
	ok := false
	_ = rc.Control(func(fd uintptr) {
		_, err := unix.GetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_SEGMENT)
		ok = err == nil
	})
	return ok
}

// emit queues b for sending to `to` (ToClient; ignored ToGateway), flushing the batch first when b
// cannot join it.
func (p *path) emit(b []byte, to netip.AddrPort) {
	w := &p.w
	if !w.on {
		p.send(b, to)
		return
	}
	if w.n > 0 && (len(b) > w.seg || w.short || to != w.to || len(w.buf)+len(b) > maxGSOBytes || w.n == maxGSOSegments) {
		p.flush()
	}
	if w.n == 0 {
		w.seg, w.to, w.short = len(b), to, false
	}
	w.buf = append(w.buf, b...)
	w.n++
	if len(b) < w.seg {
		w.short = true
	}
}

// flush sends the batch: one datagram plainly, more with UDP_SEGMENT. If the kernel refuses the batch, its
// datagrams go one by one (EIO, a device without checksum offload, switches GSO off for good).
func (p *path) flush() {
	w := &p.w
	switch {
	case w.n == 0:
		return
	case w.n == 1:
		p.send(w.buf, w.to)
	default:
		binary.NativeEndian.PutUint16(w.oob[unix.CmsgLen(0):], uint16(w.seg))
		var err error
		if p.dir == ToGateway {
			_, _, err = p.out.WriteMsgUDPAddrPort(w.buf, w.oob, netip.AddrPort{})
		} else {
			_, _, err = p.out.WriteMsgUDPAddrPort(w.buf, w.oob, w.to)
		}
		if err == nil {
			p.c.forwarded.Add(uint64(w.n))
			p.c.bytesOut.Add(uint64(len(w.buf)))
			break
		}
		if errors.Is(err, unix.EIO) {
			w.on = false
		}
		for off := 0; off < len(w.buf); off += w.seg {
			p.send(w.buf[off:min(off+w.seg, len(w.buf))], w.to)
		}
	}
	w.buf, w.n = w.buf[:0], 0
}
