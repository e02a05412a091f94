package batch

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// DefaultBatchSize is the default number of datagrams per recvmmsg/sendmmsg call.
const DefaultBatchSize = 128

// DefaultSocketBuffer is the default SO_RCVBUF/SO_SNDBUF size. Forcing 7 MiB measurably raised userspace
// VPN throughput in published measurements: the default ~200 KiB overflows during a single scheduling gap.
const DefaultSocketBuffer = 7 << 20

// ErrAddressFamily is returned by WriteBatch for a destination the socket cannot reach: an IPv6 address on
// an IPv4 socket, or an invalid (zero) address.
var ErrAddressFamily = errors.New("batch: destination address family not supported by socket")

// Options configures Listen. The zero value gives the defaults.
type Options struct {
	// RecvBuffer and SendBuffer are the socket buffer sizes. SO_RCVBUFFORCE/SO_SNDBUFFORCE are tried first
	// (they ignore net.core.rmem_max but need CAP_NET_ADMIN), then SO_RCVBUF/SO_SNDBUF. 0 means
	// DefaultSocketBuffer; negative leaves the kernel default.
	RecvBuffer, SendBuffer int
	// Mark sets SO_MARK when non-zero, so a client's tunnel traffic can escape its own policy routes.
	Mark uint32
	// BatchSize is the maximum number of messages per syscall; 0 means DefaultBatchSize.
	BatchSize int
	// ReusePort sets SO_REUSEPORT so several sockets (one per core) can share a port.
	ReusePort bool
	// DisableGSO turns UDP generic segmentation offload off even where the kernel supports it.
	DisableGSO bool
	// IncomingCPU, when SetIncomingCPU is true, sets SO_INCOMING_CPU: in a reuseport group the kernel then
	// prefers this socket for packets it processes on that CPU, keeping a worker's packets on its core.
	SetIncomingCPU bool
	IncomingCPU    int
	// EnableGRO asks the kernel to coalesce consecutive datagrams of one flow into one receive (UDP_GRO);
	// ReadBatch splits them again. It then needs at least udpMaxSegments buffers per call. Used only on
	// kernels >= 5.12 (earlier ones had UDP GRO bugs with forwarded traffic).
	EnableGRO bool
}

// UDP GSO limits: the kernel refuses more than udpMaxSegments segments in one send (UDP_MAX_SEGMENTS), and
// the whole super-datagram must fit an IP packet's 16-bit length. gsoMaxBytes stays below 65535 minus the
// largest IP + UDP header.
const (
	udpMaxSegments = 64
	gsoMaxBytes    = 65535 - 40 - 8
)

// Conn is a UDP socket that reads and writes datagrams in batches. All per-call state (message headers,
// iovecs, socket addresses) is preallocated per direction, so ReadBatch and WriteBatch allocate nothing.
//
// Blocking goes through the socket's syscall.RawConn, so the Go netpoller parks the goroutine instead of a
// thread; the descriptor stays non-blocking (File/Fd is never used, it would switch it to blocking mode).
//
// One reader and one writer may use a Conn concurrently. Each direction is additionally guarded by its own
// mutex (uncontended ~5 ns per batch, BenchmarkDirectionMutex, against microseconds per syscall), so concurrent callers of the same
// direction are safe, merely serialised.
type Conn struct {
	udp    *net.UDPConn
	raw    syscall.RawConn
	local  netip.AddrPort
	v6     bool // AF_INET6 socket: destinations are written as sockaddr_in6 (IPv4 v4-mapped)
	rmu    sync.Mutex
	rd     mmsgState
	recvFn func(fd uintptr) bool // method value created once: passing c.recv directly would allocate per call
	wmu    sync.Mutex
	wr     mmsgState
	sendFn func(fd uintptr) bool
	gro    bool // UDP_GRO is on: ReadBatch reads few messages and splits them
	// gso is whether WriteBatch coalesces runs of same-size datagrams to one destination into one message
	// with a UDP_SEGMENT control message. Turned off for good when the kernel answers EIO (the egress
	// device cannot checksum), as it then never will.
	gso bool
}

// mmsgState is one direction's preallocated recvmmsg/sendmmsg argument arrays plus the result of the last
// call, which the RawConn callback (a func(uintptr) bool without results) hands back through it.
type mmsgState struct {
	msgs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6 // large enough for sockaddr_in as well
	// ctrl holds one control-message slot per message (UDP_SEGMENT on send); msgs[i].Hdr.Control points
	// into it when the message carries several segments.
	ctrl []byte
	// segs[i] is how many datagrams message i carries (1 without GSO), to count what sendmmsg sent.
	segs []int

	count int        // messages prepared for the call
	done  int        // messages the kernel completed
	errno unix.Errno // error of the last syscall, 0 if none
}

func newMmsgState(n int) mmsgState {
	s := mmsgState{
		msgs:  make([]unix.Mmsghdr, n),
		iovs:  make([]unix.Iovec, n),
		names: make([]unix.RawSockaddrInet6, n),
		ctrl:  make([]byte, n*ctrlSlot),
		segs:  make([]int, n),
	}
	// The pointers between the arrays never change; only lengths and bases are refreshed per call.
	for i := range s.msgs {
		h := &s.msgs[i].Hdr
		h.Name = (*byte)(unsafe.Pointer(&s.names[i]))
		h.Iov = &s.iovs[i]
		h.SetIovlen(1)
	}
	return s
}

// Listen opens a UDP socket on network ("udp", "udp4", "udp6") and address. As with net.ListenUDP, "udp"
// on a wildcard address ("[::]:port", ":port", "0.0.0.0:port") is one dual-stack IPv6 socket
// (IPV6_V6ONLY=0) serving IPv4 clients as v4-mapped addresses; "udp6" is IPv6-only.
func Listen(network, address string, opt Options) (*Conn, error) {
	switch network {
	case "udp", "udp4", "udp6":
	default:
		return nil, fmt.Errorf("batch: unsupported network %q", network)
	}
	if opt.BatchSize <= 0 {
		opt.BatchSize = DefaultBatchSize
	}
	if opt.RecvBuffer == 0 {
		opt.RecvBuffer = DefaultSocketBuffer
	}
	if opt.SendBuffer == 0 {
		opt.SendBuffer = DefaultSocketBuffer
	}
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) { serr = setSockopts(int(fd), &opt) })
		if err != nil {
			return err
		}
		return serr
	}}
	pc, err := lc.ListenPacket(context.Background(), network, address)
	if err != nil {
		return nil, err
	}
	udp := pc.(*net.UDPConn)
	c, err := newConn(udp, opt.BatchSize, opt.DisableGSO, opt.EnableGRO)
	if err != nil {
		udp.Close()
		return nil, err
	}
	return c, nil
}

// setSockopts runs before bind, so SO_REUSEPORT takes effect for this bind.
func setSockopts(fd int, opt *Options) error {
	if opt.ReusePort {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
			return os.NewSyscallError("setsockopt SO_REUSEPORT", err)
		}
	}
	if opt.SetIncomingCPU {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_INCOMING_CPU, opt.IncomingCPU); err != nil {
			return os.NewSyscallError("setsockopt SO_INCOMING_CPU", err)
		}
	}
	if opt.Mark != 0 {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, int(opt.Mark)); err != nil {
			return os.NewSyscallError("setsockopt SO_MARK", err)
		}
	}
	if opt.RecvBuffer > 0 {
		if err := setBuffer(fd, unix.SO_RCVBUFFORCE, unix.SO_RCVBUF, opt.RecvBuffer); err != nil {
			return os.NewSyscallError("setsockopt SO_RCVBUF", err)
		}
	}
	if opt.SendBuffer > 0 {
		if err := setBuffer(fd, unix.SO_SNDBUFFORCE, unix.SO_SNDBUF, opt.SendBuffer); err != nil {
			return os.NewSyscallError("setsockopt SO_SNDBUF", err)
		}
	}
	return nil
}

// setBuffer tries the privileged FORCE variant, which may exceed net.core.[rw]mem_max, and falls back to the
// plain option, which the kernel silently caps at that limit.
func setBuffer(fd, force, plain, size int) error {
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, force, size) == nil {
		return nil
	}
	return unix.SetsockoptInt(fd, unix.SOL_SOCKET, plain, size)
}

func newConn(udp *net.UDPConn, batch int, disableGSO, enableGRO bool) (*Conn, error) {
	raw, err := udp.SyscallConn()
	if err != nil {
		return nil, err
	}
	// The kernel's view of the family decides the sockaddr we must write; net.UDPAddr cannot tell (an AF_INET
	// socket's address is reported in 16-byte form too).
	var domain int
	var serr error
	if err := raw.Control(func(fd uintptr) {
		domain, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN)
	}); err != nil {
		return nil, err
	}
	if serr != nil {
		return nil, os.NewSyscallError("getsockopt SO_DOMAIN", serr)
	}
	c := &Conn{
		udp:   udp,
		raw:   raw,
		local: udp.LocalAddr().(*net.UDPAddr).AddrPort(),
		v6:    domain == unix.AF_INET6,
		rd:    newMmsgState(batch),
		wr:    newMmsgState(batch),
	}
	c.recvFn = c.recv
	c.sendFn = c.send
	if !disableGSO {
		// The option exists (reads back) exactly on kernels that support UDP GSO (4.18+).
		_ = raw.Control(func(fd uintptr) {
			_, err := unix.GetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_SEGMENT)
			c.gso = err == nil
		})
	}
	if enableGRO && kernelAtLeast(5, 12) {
		_ = raw.Control(func(fd uintptr) {
			c.gro = unix.SetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_GRO, 1) == nil
		})
	}
	return c, nil
}

// GRO reports whether ReadBatch receives coalesced datagrams.
func (c *Conn) GRO() bool { return c.gro }

// kernelAtLeast compares the running kernel's release with major.minor.
func kernelAtLeast(major, minor int) bool {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return false
	}
	var ma, mi int
	if _, err := fmt.Sscanf(unix.ByteSliceToString(u.Release[:]), "%d.%d", &ma, &mi); err != nil {
		return false
	}
	return ma > major || ma == major && mi >= minor
}

// ErrGROBatchTooSmall is returned by ReadBatch on a GRO socket given fewer than udpMaxSegments buffers: one
// coalesced receive may hold that many datagrams.
var ErrGROBatchTooSmall = errors.New("batch: ReadBatch on a UDP GRO socket needs at least 64 buffers")

// GSO reports whether WriteBatch currently uses UDP generic segmentation offload.
func (c *Conn) GSO() bool {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.gso
}

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

// LocalAddr is the bound address ("[::]:port" for a dual-stack socket).
func (c *Conn) LocalAddr() netip.AddrPort { return c.local }

// BatchSize is the maximum number of datagrams one ReadBatch returns.
func (c *Conn) BatchSize() int { return len(c.rd.msgs) }

// SyscallConn gives access to the socket (for attaching BPF programs) without making it blocking.
func (c *Conn) SyscallConn() (syscall.RawConn, error) { return c.raw, nil }

// Close closes the socket and wakes blocked ReadBatch/WriteBatch calls, which return net.ErrClosed.
func (c *Conn) Close() error { return c.udp.Close() }

// ReadBatch receives up to min(len(bufs), BatchSize) datagrams: datagram i is bufs[i][:sizes[i]] from
// addrs[i] (IPv4 senders on a dual-stack socket are reported unmapped). Each buffer is filled up to its
// length; a longer datagram is truncated, so give buffers of BufSize (larger than any UDP datagram).
// sizes and addrs must be at least as long as bufs. It blocks until at least one datagram has arrived and
// returns net.ErrClosed after Close.
//
// With GRO, the kernel hands over up to 64 datagrams of one flow as one; ReadBatch receives into the last
// len(bufs)/64 buffers and copies the segments out into bufs from the front, so callers still see one
// datagram per buffer. (Each segment is copied once; the kernel's receive path ran once for all of them.)
func (c *Conn) ReadBatch(bufs [][]byte, sizes []int, addrs []netip.AddrPort) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	r := &c.rd
	n := min(len(bufs), len(r.msgs))
	if n == 0 {
		return 0, nil
	}
	_ = sizes[n-1]
	_ = addrs[n-1]
	first := 0 // index of the buffer the first message is received into
	if c.gro {
		if n < udpMaxSegments {
			return 0, ErrGROBatchTooSmall
		}
		first = n - n/udpMaxSegments
	}
	for i := first; i < n; i++ {
		m := i - first
		setIov(&r.iovs[m], bufs[i])
		h := &r.msgs[m].Hdr
		h.Iov = &r.iovs[m]
		h.SetIovlen(1)
		h.Namelen = unix.SizeofSockaddrInet6
		h.Flags = 0
		if c.gro {
			slot := r.ctrl[m*ctrlSlot : (m+1)*ctrlSlot]
			h.Control = &slot[0]
			h.SetControllen(ctrlSlot)
		}
	}
	r.count, r.done, r.errno = n-first, 0, 0
	if err := c.raw.Read(c.recvFn); err != nil {
		return 0, mapErr(err)
	}
	if r.errno != 0 {
		return 0, os.NewSyscallError("recvmmsg", r.errno)
	}
	if !c.gro {
		for i := 0; i < r.done; i++ {
			sizes[i] = int(r.msgs[i].Len)
			addrs[i] = sockaddrToAddrPort(&r.names[i])
		}
		return r.done, nil
	}
	// Split. Message m sits in bufs[first+m]; the segments land in bufs[out...]. With at most 64 segments
	// per message and n/64 messages, out never passes a message that has not been split yet.
	out := 0
	for m := 0; m < r.done; m++ {
		src := bufs[first+m][:r.msgs[m].Len]
		from := sockaddrToAddrPort(&r.names[m])
		seg := groSegmentSize(&r.msgs[m].Hdr)
		if seg <= 0 || seg > len(src) {
			seg = len(src)
		}
		if len(src) == 0 {
			sizes[out], addrs[out] = 0, from
			out++
			continue
		}
		for off := 0; off < len(src) && out < n; off += seg {
			end := min(off+seg, len(src))
			sizes[out] = copy(bufs[out], src[off:end]) // copy is memmove: src and dst may be one buffer
			addrs[out] = from
			out++
		}
	}
	return out, nil
}

// groSegmentSize returns the UDP_GRO segment size the kernel reported for a received message, or 0.
func groSegmentSize(h *unix.Msghdr) int {
	if h.Control == nil || int(h.Controllen) < unix.CmsgLen(4) {
		return 0
	}
	ctrl := unsafe.Slice(h.Control, int(h.Controllen))
	cm := (*unix.Cmsghdr)(unsafe.Pointer(&ctrl[0]))
	if cm.Level != unix.SOL_UDP || cm.Type != unix.UDP_GRO || int(cm.Len) < unix.CmsgLen(4) {
		return 0
	}
	return int(*(*int32)(unsafe.Pointer(&ctrl[unix.CmsgLen(0)])))
}

// recv is the RawConn read callback; returning false parks the goroutine until the socket is readable.
func (c *Conn) recv(fd uintptr) bool {
	r := &c.rd
	for {
		// The fd is non-blocking, so recvmmsg returns what is queued (at least one) instead of waiting
		// for count datagrams.
		n, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.msgs[0])),
			uintptr(r.count), 0, 0, 0)
		switch e {
		case 0:
			r.done = int(n)
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		r.errno = e
		return true
	}
}

// WriteBatch sends bufs[i] (already sliced to the datagram) to addrs[i], in order, in as many sendmmsg
// calls as needed (the kernel may accept fewer than offered). It returns the number sent and the first
// error; bufs[n] is the datagram that failed. IPv4 destinations on an IPv6 socket are sent v4-mapped.
func (c *Conn) WriteBatch(bufs [][]byte, addrs []netip.AddrPort) (int, error) {
	return c.write(bufs, nil, addrs)
}

// ReadVector reads into v (every v.Bufs slot must hold a buffer) and sets v.N.
func (c *Conn) ReadVector(v *Vector) error {
	n, err := c.ReadBatch(v.Bufs, v.Sizes, v.Addrs)
	v.N = n
	return err
}

// WriteVector sends the first v.N packets of v (Bufs[i][:Sizes[i]] to Addrs[i]); see WriteBatch.
func (c *Conn) WriteVector(v *Vector) (int, error) {
	return c.write(v.Bufs[:v.N], v.Sizes[:v.N], v.Addrs[:v.N])
}

// write sends bufs[i][:sizes[i]] (or all of bufs[i] when sizes is nil) to addrs[i].
//
// With GSO, a run of consecutive datagrams to the same destination, all of one size except a shorter last
// one, becomes one message: one iovec per datagram (no copy) and a UDP_SEGMENT control message, so the
// kernel's UDP/IP send path runs once per run instead of once per datagram.
func (c *Conn) write(bufs [][]byte, sizes []int, addrs []netip.AddrPort) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	w := &c.wr
	// Check lengths up front rather than panicking after part of the batch went out.
	_ = addrs[:len(bufs)]
	if sizes != nil {
		_ = sizes[:len(bufs)]
	}
	datagram := func(i int) []byte {
		if sizes != nil {
			return bufs[i][:sizes[i]]
		}
		return bufs[i]
	}
	sent := 0
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
			b := datagram(i)
			setIov(&w.iovs[iov], b)
			n, total, size := 1, len(b), len(b)
			if c.gso && size > 0 {
				for j := i + 1; j < len(bufs) && n < udpMaxSegments && iov+n < len(w.iovs); j++ {
					bj := datagram(j)
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

// setIov points iov at b. A zero-length datagram has no base (taking &b[0] would panic).
func setIov(iov *unix.Iovec, b []byte) {
	if len(b) == 0 {
		iov.Base = nil
	} else {
		iov.Base = &b[0]
	}
	iov.SetLen(len(b))
}

// fillSockaddr encodes ap for this socket's family and returns the sockaddr length.
func (c *Conn) fillSockaddr(sa *unix.RawSockaddrInet6, ap netip.AddrPort) (uint32, bool) {
	a := ap.Addr()
	if !a.IsValid() {
		return 0, false
	}
	port := ap.Port()
	if c.v6 {
		sa.Family = unix.AF_INET6
		putPort(&sa.Port, port)
		sa.Flowinfo = 0
		sa.Addr = a.As16() // IPv4 becomes ::ffff:a.b.c.d, which a dual-stack socket sends as IPv4
		sa.Scope_id = 0
		if z := a.Zone(); z != "" {
			sa.Scope_id = zoneToIndex(z)
		}
		return unix.SizeofSockaddrInet6, true
	}
	a = a.Unmap()
	if !a.Is4() {
		return 0, false
	}
	sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
	sa4.Family = unix.AF_INET
	putPort(&sa4.Port, port)
	sa4.Addr = a.As4()
	sa4.Zero = [8]uint8{}
	return unix.SizeofSockaddrInet4, true
}

// sockaddrToAddrPort decodes a received sockaddr_in or sockaddr_in6; v4-mapped addresses are unmapped so
// one client has one identity whichever socket family received it.
func sockaddrToAddrPort(sa *unix.RawSockaddrInet6) netip.AddrPort {
	switch sa.Family {
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), getPort(&sa4.Port))
	case unix.AF_INET6:
		a := netip.AddrFrom16(sa.Addr).Unmap()
		if sa.Scope_id != 0 && a.Is6() {
			// Rare (link-local peers) and allocating; the zone is needed to answer such a peer.
			a = a.WithZone(strconv.FormatUint(uint64(sa.Scope_id), 10))
		}
		return netip.AddrPortFrom(a, getPort(&sa.Port))
	}
	return netip.AddrPort{}
}

// zoneToIndex accepts a numeric zone (as ReadBatch reports it) or an interface name.
func zoneToIndex(z string) uint32 {
	if n, err := strconv.ParseUint(z, 10, 32); err == nil {
		return uint32(n)
	}
	if ifi, err := net.InterfaceByName(z); err == nil {
		return uint32(ifi.Index)
	}
	return 0
}

// The sockaddr port field is in network byte order whatever the host order is.
func putPort(p *uint16, port uint16) {
	b := (*[2]byte)(unsafe.Pointer(p))
	b[0], b[1] = byte(port>>8), byte(port)
}

func getPort(p *uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(p))
	return uint16(b[0])<<8 | uint16(b[1])
}

// mapErr turns the netpoller's "use of closed network connection" into the plain net.ErrClosed value.
func mapErr(err error) error {
	if errors.Is(err, net.ErrClosed) {
		return net.ErrClosed
	}
	return err
}
