package batch

import (
	"encoding/binary"
	"net/netip"
	"os"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ctrlSlot is the space of one control message: a uint16 (UDP_SEGMENT) on send, an int (UDP_GRO) on
// receive.
var ctrlSlot = unix.CmsgSpace(4)

// putSegmentCmsg writes a UDP_SEGMENT control message with the segment size into b.
func putSegmentCmsg(b []byte, size int) {
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level = unix.SOL_UDP
	h.Type = unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	*(*uint16)(unsafe.Pointer(&b[unix.CmsgLen(0)])) = uint16(size)
}

// WriteBatch sends bufs[i] (already sliced to the datagram) to addrs[i], in order, in as many sendmmsg
// calls as needed (the kernel may accept fewer than offered). It returns the number sent and the first
// error; bufs[n] is the datagram that failed. IPv4 destinations on an IPv6 socket are sent v4-mapped.
// GSO messages the kernel refuses are resent without GSO (see Conn) and are no error.
//
// With GSO, a run of consecutive datagrams to the same destination, all of one size except a shorter last
// one, becomes one message: one iovec per datagram (no copy) and a UDP_SEGMENT control message, so the
// kernel's UDP/IP send path runs once per run instead of once per datagram. After a refusal (EIO, or
// EMSGSIZE for a destination's path MTU; see Conn) the loop prepares the rest again from the refused
// datagram, now without GSO for it, so the refused message goes out one datagram at a time.
func (c *Conn) WriteBatch(bufs [][]byte, addrs []netip.AddrPort) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	w := &c.wr
	// Check lengths up front rather than panicking after part of the batch went out.
	_ = addrs[:len(bufs)]
	sent := 0
	refused := -1 // the datagram whose GSO message was last refused with EMSGSIZE
	for sent < len(bufs) {
		var (
			m       int // messages prepared
			iov     int // iovecs used
			badAddr bool
		)
		for i := sent; i < len(bufs) && m < len(w.msgs) && iov < len(w.iovs); {
			nl, ok := c.fillSockaddr(&w.names[m], addrs[i])
			if !ok {
				// Send what precedes the bad destination, then report it as bufs[i].
				badAddr = true
				break
			}
			h := &w.msgs[m].Hdr
			h.Namelen = nl
			h.Iov = &w.iovs[iov]
			b := bufs[i]
			setIov(&w.iovs[iov], b)
			n, total, size := 1, len(b), len(b)
			if c.gso && size > 0 && c.gsoAllowed(addrs[i], size) {
				for j := i + 1; j < len(bufs) && n < udpMaxSegments && iov+n < len(w.iovs); j++ {
					bj := bufs[j]
					if addrs[j] != addrs[i] || len(bj) > size || len(bj) == 0 || total+len(bj) > gsoMaxBytes {
						break
					}
					setIov(&w.iovs[iov+n], bj)
					n++
					total += len(bj)
					if len(bj) < size {
						break // a shorter datagram can only end a run
					}
				}
			}
			h.SetIovlen(n)
			if n > 1 {
				slot := w.ctrl[m*ctrlSlot : (m+1)*ctrlSlot]
				putSegmentCmsg(slot, size)
				h.Control = &slot[0]
				h.SetControllen(ctrlSlot)
			} else {
				h.Control = nil
				h.SetControllen(0)
			}
			w.segs[m] = n
			m++
			iov += n
			i += n
		}
		if m > 0 {
			w.count, w.done, w.errno = m, 0, 0
			err := c.raw.Write(c.sendFn)
			for k := 0; k < w.done; k++ {
				sent += w.segs[k]
			}
			if err != nil {
				return sent, mapErr(err)
			}
			if w.errno == unix.EIO && c.gso {
				// The egress device cannot do the checksum offload GSO needs; send the rest one by one.
				c.gso = false
				continue
			}
			if w.errno == unix.EMSGSIZE && w.done < w.count && w.segs[w.done] > 1 && sent != refused {
				// A GSO message (bufs[sent] onwards) whose segments exceed the path MTU to its destination
				// (see Conn). Remember that, so the retry below and later batches send that destination's
				// datagrams of this size one by one, which the kernel fragments. (The same datagram
				// refused twice would mean the limit did not take; it is then reported, not retried.)
				refused = sent
				c.limits.record(addrs[sent].Addr().Unmap(), len(bufs[sent]), time.Since(c.epoch))
				c.gsoRefused.Add(1)
				continue
			}
			if w.errno != 0 {
				return sent, os.NewSyscallError("sendmmsg", w.errno)
			}
		}
		if badAddr {
			return sent, ErrAddressFamily
		}
	}
	return sent, nil
}

// send is the RawConn write callback. It keeps calling sendmmsg until everything prepared is sent, an error
// occurs (sendmmsg reports an error only for the first message of a call, so it surfaces on the call after a
// partial one) or the socket buffer is full (return false: wait for writability, then resume from done).
func (c *Conn) send(fd uintptr) bool {
	w := &c.wr
	for w.done < w.count {
		n, _, e := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&w.msgs[w.done])),
			uintptr(w.count-w.done), 0, 0, 0)
		switch e {
		case 0:
			w.done += int(n)
		case unix.EINTR:
		case unix.EAGAIN:
			return false
		default:
			w.errno = e
			return true
		}
	}
	return true
}

// GSO limits per destination (see Conn): a table of gsoLimitSets sets of gsoLimitWays entries, the set
// chosen by a hash of the address: 256 entries of 40 bytes (10 KiB), allocated with the Conn.
const (
	gsoLimitBits = 6 // the set index is the hash's top gsoLimitBits bits
	gsoLimitSets = 1 << gsoLimitBits
	gsoLimitWays = 4
	// gsoLimitTTL is how long a refusal is remembered: as long as the kernel keeps a learned path MTU
	// (net.ipv4.route.mtu_expires, 10 minutes by default), after which a path may have widened again.
	gsoLimitTTL = 10 * time.Minute
)

// gsoLimit says that GSO messages with segments of seg bytes or more are not tried to addr.
type gsoLimit struct {
	addr    netip.Addr    // unmapped, so one IPv4 peer has one entry whatever the socket family
	seg     int           // the smallest segment size refused
	expires time.Duration // since Conn.epoch; 0 marks a free entry
}

type gsoLimits struct {
	sets [gsoLimitSets][gsoLimitWays]gsoLimit
	used int // entries not free (expired ones included); 0 lets WriteBatch skip the lookup entirely
}

// gsoAllowed reports whether a GSO message with segments of seg bytes may be sent to dst. Free while no
// destination was ever limited; otherwise one hashed set of four entries is searched.
func (c *Conn) gsoAllowed(dst netip.AddrPort, seg int) bool {
	if c.limits.used == 0 {
		return true
	}
	return c.limits.allows(dst.Addr().Unmap(), seg, c.epoch)
}

// allows reports whether GSO with segments of seg bytes may be tried to a. The clock is read only when an
// entry forbids it, to see whether the entry has expired (it is then freed).
func (l *gsoLimits) allows(a netip.Addr, seg int, epoch time.Time) bool {
	set := &l.sets[l.index(a)]
	for i := range set {
		e := &set[i]
		if e.expires == 0 || e.addr != a {
			continue
		}
		if seg < e.seg {
			return true
		}
		if time.Since(epoch) >= e.expires {
			*e = gsoLimit{}
			l.used--
			return true
		}
		return false
	}
	return true
}

// record notes that a GSO message with segments of seg bytes to a was refused at time now (since epoch).
// A live entry for a keeps the smaller size; otherwise a free entry of the set is taken, or the one
// closest to expiry is replaced.
func (l *gsoLimits) record(a netip.Addr, seg int, now time.Duration) {
	set := &l.sets[l.index(a)]
	victim := &set[0]
	for i := range set {
		e := &set[i]
		if e.expires != 0 && e.addr == a {
			if now < e.expires {
				seg = min(seg, e.seg)
			}
			e.seg, e.expires = seg, now+gsoLimitTTL
			return
		}
		if e.expires < victim.expires {
			victim = e // a free entry (0) sorts first
		}
	}
	if victim.expires == 0 {
		l.used++
	}
	*victim = gsoLimit{addr: a, seg: seg, expires: now + gsoLimitTTL}
}

// index hashes an address to its set: both 8-byte halves mixed by a multiplicative (Fibonacci) hash, top
// bits. The zone is not hashed (it only matters for link-local peers), but it is compared.
func (l *gsoLimits) index(a netip.Addr) int {
	b := a.As16()
	h := (binary.LittleEndian.Uint64(b[:8])*0x9e3779b97f4a7c15 ^ binary.LittleEndian.Uint64(b[8:])) * 0x9e3779b97f4a7c15
	return int(h >> (64 - gsoLimitBits))
}
