// Package offload owns the TUN device side of the data plane: opening the device with or without the
// virtio-net header (TSO/USO super-packets split on read, GRO on write) and the checksum helpers that go
// with it.
package offload

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/salvovpn/salvo/internal/batchsize"
)

// Implementations selectable with Options.Impl.
const (
	ImplSalvo     = "salvo"     // Device, this package
	ImplWireGuard = "wireguard" // golang.zx2c4.com/wireguard/tun, kept for side-by-side comparisons
)

// Options selects the kernel offloads of a TUN device.
type Options struct {
	// VNetHdr opens the device with IFF_VNET_HDR so the kernel hands over TSO/USO super-packets and accepts
	// GRO-coalesced writes; reads and writes then move vectors of up to 128 packets per call. Off gives one
	// packet per read: the fallback and a test switch.
	VNetHdr bool
	// Impl picks the implementation: ImplSalvo (default when empty) or ImplWireGuard.
	Impl string
	// NoUSO keeps UDP segmentation offload off even when the kernel supports it (Salvo device only).
	NoUSO bool
}

// Open creates (or attaches to) the TUN device name with the given MTU. The returned device reads and writes
// packets at an offset: callers keep protocol.Headroom bytes in front of each packet (10 of them hold the
// virtio header, Salvo needs 16 for its data header).
func Open(name string, mtu int, opt Options) (tun.Device, error) {
	switch opt.Impl {
	case "", ImplSalvo:
		return OpenDevice(name, mtu, opt)
	case ImplWireGuard:
	default:
		return nil, fmt.Errorf("offload: unknown TUN implementation %q", opt.Impl)
	}
	if opt.VNetHdr {
		dev, err := tun.CreateTUN(name, mtu)
		if err != nil {
			return nil, fmt.Errorf("create tun %q: %w", name, err)
		}
		return dev, nil
	}
	f, _, err := openTUN(name, false, false)
	if err != nil {
		return nil, err
	}
	dev, err := tun.CreateTUNFromFile(f, mtu)
	if err != nil {
		return nil, fmt.Errorf("create tun %q: %w", name, err)
	}
	return dev, nil
}

// openTUN opens /dev/net/tun, attaches it to name and hands the descriptor to the runtime poller.
func openTUN(name string, vnet, multiQueue bool) (*os.File, string, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, "", fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, "", fmt.Errorf("tun name %q: %w", name, err)
	}
	flags := uint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if vnet {
		flags |= unix.IFF_VNET_HDR
	}
	if multiQueue {
		flags |= unix.IFF_MULTI_QUEUE
	}
	ifr.SetUint16(flags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, "", fmt.Errorf("create tun %q: %w", name, err)
	}
	// Non-blocking before os.NewFile so the runtime poller owns the descriptor (and Fd() is never called,
	// which would switch it back to blocking).
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, "", err
	}
	return os.NewFile(uintptr(fd), "/dev/net/tun"), ifr.Name(), nil
}

// Device is Salvo's TUN device. It satisfies tun.Device. Read is meant for one goroutine; Write may be
// called concurrently (calls are serialized, the kernel has no batched TUN write anyway).
type Device struct {
	f    *os.File
	name string
	ctl  int // AF_INET socket for MTU ioctls, made in the device's namespace (the caller may be elsewhere later)
	vnet bool
	uso  bool

	// Read side (one reader).
	rc      syscall.RawConn
	tryFn   func(fd uintptr) bool // d.tryRead as a method value, made once: creating it per call allocates
	tryBuf  []byte                // argument and results of tryFn
	tryN    int
	tryErr  error
	rbuf    []byte      // super-packets that do not fit the caller's buffer, and split leftovers
	pending superPacket // segments of a super-packet that did not fit the last Read's bufs
	hasPend bool

	wmu     sync.Mutex
	gro     GRO
	toWrite []int

	// Dropped counts packets read from the kernel that could not be parsed or whose segments did not fit
	// the caller's buffers (they are dropped, a super-packet counts once, and the read goes on: a Read
	// error stops the engine's loop). Segments that only outnumber the buffers are never dropped.
	Dropped atomic.Uint64

	closeOnce sync.Once
}

// USO reports whether the kernel accepted UDP segmentation offload.
func (d *Device) USO() bool { return d.uso }

const (
	tunTCPOffloads = unix.TUN_F_CSUM | unix.TUN_F_TSO4 | unix.TUN_F_TSO6
	tunUDPOffloads = unix.TUN_F_USO4 | unix.TUN_F_USO6
	readBufLen     = VirtioHdrLen + 65535
)

// OpenQueues opens n queues of one multi-queue TUN device (IFF_MULTI_QUEUE), one per worker: each queue
// is read and written by its own goroutine, and the kernel spreads flows over the queues (and sends a
// flow's packets to the queue that last wrote it). n <= 1 opens an ordinary single-queue device.
func OpenQueues(name string, mtu, n int, opt Options) ([]tun.Device, error) {
	if n <= 1 {
		d, err := Open(name, mtu, opt)
		if err != nil {
			return nil, err
		}
		return []tun.Device{d}, nil
	}
	var qs []tun.Device
	closeAll := func() {
		for _, q := range qs {
			q.Close()
		}
	}
	for i := range n {
		var (
			q   tun.Device
			err error
		)
		qmtu := 0
		if i == 0 {
			qmtu = mtu // the MTU is the device's, set once
		}
		switch opt.Impl {
		case "", ImplSalvo:
			q, err = openDevice(name, qmtu, opt, true)
		case ImplWireGuard:
			var f *os.File
			if f, _, err = openTUN(name, opt.VNetHdr, true); err == nil {
				if q, err = tun.CreateTUNFromFile(f, mtu); err != nil {
					f.Close()
				}
			}
		default:
			err = fmt.Errorf("offload: unknown TUN implementation %q", opt.Impl)
		}
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("tun %q queue %d: %w", name, i, err)
		}
		qs = append(qs, q)
	}
	return qs, nil
}

// OpenDevice opens name as a Salvo Device (see Open).
func OpenDevice(name string, mtu int, opt Options) (*Device, error) {
	return openDevice(name, mtu, opt, false)
}

func openDevice(name string, mtu int, opt Options, multiQueue bool) (*Device, error) {
	f, ifname, err := openTUN(name, opt.VNetHdr, multiQueue)
	if err != nil {
		return nil, err
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	d := &Device{f: f, name: ifname, vnet: opt.VNetHdr, rc: rc}
	d.tryFn = d.tryRead
	if opt.VNetHdr {
		var ierr error
		err = rc.Control(func(fd uintptr) {
			if ierr = unix.IoctlSetInt(int(fd), unix.TUNSETOFFLOAD, tunTCPOffloads); ierr != nil {
				return
			}
			if !opt.NoUSO {
				// Kernels before 6.2 reject USO; TCP offloads stay set then.
				d.uso = unix.IoctlSetInt(int(fd), unix.TUNSETOFFLOAD, tunTCPOffloads|tunUDPOffloads) == nil
			}
		})
		if err == nil {
			err = ierr
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("tun %q: TUNSETOFFLOAD: %w", ifname, err)
		}
		d.gro.UDP = d.uso
		d.rbuf = make([]byte, readBufLen)
	}
	if d.ctl, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("tun %q: control socket: %w", ifname, err)
	}
	if mtu > 0 {
		if _, err := mtuIoctl(d.ctl, ifname, unix.SIOCSIFMTU, mtu); err != nil {
			d.Close()
			return nil, err
		}
	}
	return d, nil
}

// ifreqMTU is struct ifreq with the int ifr_mtu member.
type ifreqMTU struct {
	name [unix.IFNAMSIZ]byte
	mtu  int32
	_    [20]byte
}

func mtuIoctl(s int, name string, req uint, mtu int) (int, error) {
	var ifr ifreqMTU
	copy(ifr.name[:unix.IFNAMSIZ-1], name)
	ifr.mtu = int32(mtu)
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(s), uintptr(req), uintptr(unsafe.Pointer(&ifr))); e != 0 {
		return 0, fmt.Errorf("tun %q: MTU ioctl: %w", name, e)
	}
	return int(ifr.mtu), nil
}

// MTU returns the interface MTU.
func (d *Device) MTU() (int, error) { return mtuIoctl(d.ctl, d.name, unix.SIOCGIFMTU, 0) }

// Name returns the interface name the kernel gave the device.
func (d *Device) Name() (string, error) { return d.name, nil }

// File returns the device file. Do not call its Fd method: that makes the descriptor blocking.
func (d *Device) File() *os.File { return d.f }

// Events returns nil: nobody in Salvo watches link events.
func (d *Device) Events() <-chan tun.Event { return nil }

// BatchSize is the largest vector Read can fill and Write can coalesce.
func (d *Device) BatchSize() int {
	return batchsize.Default // with or without the virtio header, Read drains queued packets into the whole vector
}

// Close closes the device; a blocked Read returns os.ErrClosed.
func (d *Device) Close() error {
	err := os.ErrClosed
	d.closeOnce.Do(func() {
		err = d.f.Close()
		unix.Close(d.ctl)
	})
	return err
}

// Read reads packets into bufs[i][offset:] and their lengths into sizes[i]. Without the virtio header it
// reads one packet. With it, one read() fetches a packet or a super-packet; a super-packet is split into as
// many buffers as there are and the rest is kept for the next call, however many segments it has (the
// kernel sends more than 64 UDP segments in one, and a small gso_size gives thousands). A packet is read
// straight into bufs[0] when that buffer can hold a 64 KiB super-packet, so ordinary packets are never
// copied and the first segment of a super-packet stays in place. Malformed packets from the kernel are
// counted and skipped.
func (d *Device) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if len(bufs) == 0 || len(sizes) < len(bufs) || offset < 0 || len(bufs[0]) < offset {
		return 0, errShortBuffer
	}
	cnt, err := d.readOne(bufs, sizes, offset, false)
	if err != nil || cnt == 0 {
		return cnt, err
	}
	// Drain: take whatever else the kernel has queued, without waiting, until the vector is full. Small
	// packets arrive one per read(); collecting them here lets the engine seal them as one vector and send
	// them as one GSO message instead of one syscall per packet. It never waits, so latency is unchanged.
	for cnt < len(bufs) && !d.hasPend {
		n, err := d.readOne(bufs[cnt:], sizes[cnt:], offset, true)
		if err != nil || n == 0 {
			break // nothing queued (or an error the next blocking Read will report)
		}
		cnt += n
	}
	return cnt, nil
}

// tryRead is the RawConn callback of a non-blocking read: it returns true even on EAGAIN so the poller
// never parks the goroutine.
func (d *Device) tryRead(fd uintptr) bool {
	for {
		n, err := unix.Read(int(fd), d.tryBuf)
		if err == unix.EINTR {
			continue
		}
		d.tryN, d.tryErr = n, err
		return true
	}
}

// readFile reads one packet from the device; with noWait it returns (0, nil) when none is queued.
func (d *Device) readFile(b []byte, noWait bool) (int, error) {
	if !noWait {
		return d.f.Read(b)
	}
	d.tryBuf = b
	if err := d.rc.Read(d.tryFn); err != nil {
		return 0, err
	}
	d.tryBuf = nil
	if d.tryErr == unix.EAGAIN {
		return 0, nil
	}
	if d.tryErr != nil {
		return 0, d.tryErr
	}
	if d.tryN == 0 {
		return 0, nil
	}
	return d.tryN, nil
}

// readOne turns one read() of the device (a packet or a super-packet) into packets in bufs, or returns the
// leftovers of the previous super-packet. With noWait it returns 0 packets when nothing is queued.
func (d *Device) readOne(bufs [][]byte, sizes []int, offset int, noWait bool) (int, error) {
	if !d.vnet {
		n, err := d.readFile(bufs[0][offset:], noWait)
		if err != nil || n == 0 {
			return 0, err
		}
		sizes[0] = n
		return 1, nil
	}
	if d.hasPend {
		return d.splitPending(bufs, sizes, offset)
	}
	for {
		direct := offset >= VirtioHdrLen && len(bufs[0])-(offset-VirtioHdrLen) >= readBufLen
		buf := d.rbuf
		if direct {
			buf = bufs[0][offset-VirtioHdrLen:]
		}
		n, err := d.readFile(buf[:readBufLen], noWait)
		if err != nil || n == 0 {
			return 0, err
		}
		cnt, err := d.handle(buf[:n], direct, bufs, sizes, offset)
		if err == nil {
			return cnt, nil
		}
		if !errors.Is(err, ErrMalformed) && err != errShortBuffer {
			return 0, err
		}
		d.Dropped.Add(1)
	}
}

// handle turns one read (virtio header + packet) into packets in bufs.
func (d *Device) handle(b []byte, direct bool, bufs [][]byte, sizes []int, offset int) (int, error) {
	var h VirtioHdr
	if err := h.Decode(b); err != nil {
		return 0, err
	}
	pkt := b[VirtioHdrLen:]
	if h.GSOType == GSONone {
		if !direct {
			return Split(&h, pkt, bufs, sizes, offset)
		}
		if err := finishChecksum(&h, pkt); err != nil {
			return 0, err
		}
		sizes[0] = len(pkt)
		return 1, nil
	}
	sp, err := parseSuper(&h, pkt)
	if err != nil {
		return 0, err
	}
	if !direct {
		// rbuf is the source; leftovers are split from it on the next call without a copy.
		d.pending = sp
		n, err := d.splitPending(bufs, sizes, offset)
		if err != nil {
			return 0, err
		}
		return n, nil
	}
	// Segments 1.. are copied out of bufs[0] first; leftovers move to rbuf; segment 0 is finished in place
	// last (every segment's header fields are rebuilt from sp, so the order is only for clarity).
	k := min(sp.nseg, len(bufs))
	n, err := sp.splitIntoFrom(bufs, sizes, offset, 1, k)
	if err != nil {
		return 0, err
	}
	if k < sp.nseg {
		r, ok := sp.remainder(k, d.rbuf)
		if !ok {
			return 0, malformed("super-packet remainder does not fit")
		}
		d.pending, d.hasPend = r, true
	}
	sizes[0] = sp.writeSegment(bufs[0][offset:], 0)
	return n + 1, nil
}

// splitIntoFrom writes segments from..to-1 of sp into bufs[from..to-1].
func (sp *superPacket) splitIntoFrom(bufs [][]byte, sizes []int, offset, from, to int) (int, error) {
	for i := from; i < to; i++ {
		b := bufs[i]
		if offset > len(b) || len(b)-offset < sp.segLen(i) {
			return 0, errShortBuffer
		}
		sizes[i] = sp.writeSegment(b[offset:], i)
	}
	return to - from, nil
}

// splitPending emits the next segments of d.pending.
func (d *Device) splitPending(bufs [][]byte, sizes []int, offset int) (int, error) {
	n, err := d.pending.splitInto(bufs, sizes, offset, 0)
	d.hasPend = err == nil && d.pending.next < d.pending.nseg
	if err != nil {
		return 0, err
	}
	return n, nil
}

// Write writes bufs[i][offset:] to the device. With the virtio header the packets are first coalesced (GRO)
// in place, which needs offset >= VirtioHdrLen and may extend bufs[i] for run heads; every resulting packet
// then costs one write(). It returns len(bufs) on success or the first error after trying every packet.
func (d *Device) Write(bufs [][]byte, offset int) (int, error) {
	if !d.vnet {
		for i, b := range bufs {
			if offset > len(b) {
				return i, errShortBuffer
			}
			if _, err := d.f.Write(b[offset:]); err != nil {
				return i, err
			}
		}
		return len(bufs), nil
	}
	d.wmu.Lock()
	defer d.wmu.Unlock()
	var err error
	d.toWrite, err = d.gro.Coalesce(bufs, offset, d.toWrite[:0])
	if err != nil {
		return 0, err
	}
	var first error
	for _, i := range d.toWrite {
		if len(bufs[i]) < offset {
			first = cmpErr(first, errShortBuffer)
			continue
		}
		if _, werr := d.f.Write(bufs[i][offset-VirtioHdrLen:]); werr != nil {
			if errors.Is(werr, os.ErrClosed) || errors.Is(werr, unix.EBADFD) {
				return 0, os.ErrClosed
			}
			first = cmpErr(first, werr)
		}
	}
	if first != nil {
		return 0, first
	}
	return len(bufs), nil
}

func cmpErr(first, err error) error {
	if first != nil {
		return first
	}
	return err
}
