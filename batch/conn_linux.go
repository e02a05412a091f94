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
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/salvovpn/salvo/internal/batchsize"
)

// DefaultBatchSize is the default number of datagrams per recvmmsg/sendmmsg call.
const DefaultBatchSize = batchsize.Default

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
	// ReadBatch splits them again, into vectors of any length (see ReadBatch). Used only on kernels >= 5.12
	// (earlier ones had UDP GRO bugs with forwarded traffic).
	EnableGRO bool
}

// UDP GSO send limits. udpMaxSegments is the most segments WriteBatch puts in one send: older kernels
// refuse more than 64 (UDP_MAX_SEGMENTS, EINVAL); newer ones accept more (128 on this 6.18 kernel, 129 is
// EINVAL), so it limits only what this Conn sends, never what a receiver may get: any local process can
// send 128 segments, and over loopback or veth they reach a UDP_GRO socket as one message. The whole
// super-datagram must also fit an IP packet's 16-bit length: gsoMaxBytes stays below 65535 minus the
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
// mutex (once per batch, uncontended: far cheaper than the system call; BenchmarkDirectionMutex), so
// concurrent callers of the same direction are safe, merely serialised.
//
// With GRO (Options.EnableGRO), the kernel hands over a whole run of one flow's datagrams as one message,
// with no bound the receiver can rely on: the kernel's segment limit has grown (128 here) and any local
// process may send such runs. The Conn therefore receives into buffers of its own (max(1, BatchSize/64)
// of MaxPacket bytes, allocated once) and copies the datagrams out into the caller's vector; what does not
// fit (the rest of a message, further messages) stays pending in the Conn and the next ReadBatch returns
// it first, without a syscall. Nothing is dropped; a message larger than the Conn's buffer, which no
// kernel is known to build, would lose its tail and is counted in Stats.GROTruncated.
//
// With GSO, WriteBatch sends a run of same-size datagrams to one destination as one message. Two kernel
// refusals are handled:
//   - EIO: the egress device cannot do the checksum offload GSO needs. The message is resent one datagram
//     at a time and GSO is switched off for the whole Conn for good (GSO reports false), as that device
//     never will.
//   - EMSGSIZE for a message of several segments: its segment size exceeds the MTU of the path to that
//     destination (a narrower link: a tunnel inside a tunnel, a mobile path; the device MTU or a route's
//     or learned PMTU). The kernel refuses GSO then, but fragments the same datagrams sent one by one (with
//     the default IP_MTU_DISCOVER), which is why traffic without GSO flows. The message is resent one
//     datagram at a time (fragmented by the kernel), Stats.GSORefused counts the refusal, and the Conn
//     remembers for that destination address (any port) that GSO messages with segments of that size or
//     larger must not be tried; smaller segments to it, and every other destination, still use GSO. The
//     memory is a fixed table of 256 entries (64 sets of 4 by address hash, allocated with the Conn). An
//     entry expires after 10 minutes, as the kernel's learned path MTU does: GSO is then tried again, so
//     a path that widened gets it back, and one that did not costs one more refused send. A full set
//     replaces its entry closest to expiry, whose destination likewise costs one more refused send.
//     Nothing is lost either way. A plain datagram refused with EMSGSIZE (larger than UDP allows) is
//     still an error.
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
	// grs is what ReadBatch received with GRO and has not handed out yet; guarded by rmu.
	grs groState
	// limits remembers destinations whose path refused GSO messages of some segment size (see above);
	// guarded by wmu. Its expiry times count from epoch, on the monotonic clock.
	limits gsoLimits
	epoch  time.Time
	// Counters behind Stats, atomic so Stats can be read while another goroutine reads or writes.
	groTruncated, gsoRefused atomic.Uint64
}

// Stats counts what a Conn handled on its own. The counters only grow.
type Stats struct {
	// GROTruncated counts coalesced receives larger than the Conn's MaxPacket-byte GRO buffer, whose tail
	// the kernel discarded (MSG_TRUNC): datagrams lost. No kernel is known to build UDP messages that
	// large, so it should stay 0.
	GROTruncated uint64
	// GSORefused counts GSO messages the kernel refused with EMSGSIZE (segments larger than the path MTU)
	// that WriteBatch resent one datagram at a time; nothing was lost. Each refusal also limits GSO to that
	// destination for a while, so this grows by about one per narrow destination every gsoLimitTTL.
	GSORefused uint64
}

// Stats returns the Conn's counters.
func (c *Conn) Stats() Stats {
	return Stats{GROTruncated: c.groTruncated.Load(), GSORefused: c.gsoRefused.Load()}
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
		epoch: time.Now(),
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
	if c.gro {
		c.grs = newGROState(batch)
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

// GSO reports whether WriteBatch currently uses UDP generic segmentation offload.
func (c *Conn) GSO() bool {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.gso
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
// length; a longer datagram is truncated, so give buffers of MaxPacket bytes (as large as any UDP datagram).
// sizes and addrs must be at least as long as bufs. It blocks until at least one datagram has arrived and
// returns net.ErrClosed after Close.
//
// Without GRO the kernel writes straight into bufs (no copy). With GRO it coalesces runs of one flow's
// datagrams into single messages of any number of segments; ReadBatch receives them into the Conn's own
// buffers and copies the segments out, one datagram per buffer, so callers see the same datagrams either
// way and may pass vectors of any length. (Each segment is copied once; the kernel's receive path ran once
// for all of them.) Datagrams that do not fit the vector stay in the Conn and are returned, without a
// syscall, by the next ReadBatch, which may therefore return fewer than len(bufs) datagrams although more
// have arrived.
func (c *Conn) ReadBatch(bufs [][]byte, sizes []int, addrs []netip.AddrPort) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	r := &c.rd
	n := min(len(bufs), len(r.msgs))
	if n == 0 {
		return 0, nil
	}
	bufs, sizes, addrs = bufs[:n], sizes[:n], addrs[:n]
	if c.gro {
		return c.readGRO(bufs, sizes, addrs)
	}
	for i := range n {
		setIov(&r.iovs[i], bufs[i])
		h := &r.msgs[i].Hdr
		h.Iov = &r.iovs[i]
		h.SetIovlen(1)
		h.Namelen = unix.SizeofSockaddrInet6
		h.Flags = 0
	}
	if err := c.recvmmsg(n); err != nil {
		return 0, err
	}
	for i := 0; i < r.done; i++ {
		sizes[i] = int(r.msgs[i].Len)
		addrs[i] = sockaddrToAddrPort(&r.names[i])
	}
	return r.done, nil
}

// recvmmsg receives up to count messages into the prepared c.rd.msgs, blocking until at least one.
func (c *Conn) recvmmsg(count int) error {
	r := &c.rd
	r.count, r.done, r.errno = count, 0, 0
	if err := c.raw.Read(c.recvFn); err != nil {
		return mapErr(err)
	}
	if r.errno != 0 {
		return os.NewSyscallError("recvmmsg", r.errno)
	}
	return nil
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
