package classifier

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"
)

// Classifier owns the loaded programs and maps and remembers every socket and TUN device it attached to,
// so Close can undo all of it. Methods are safe for concurrent use.
type Classifier struct {
	cfg Config

	// mu guards closed and the attachment lists; the read side also keeps map and program fds alive
	// across the map syscalls of AddSession & co. (closing an fd under a concurrent syscall could hit a
	// reused descriptor).
	mu     sync.RWMutex
	closed bool

	sessions  *ebpf.Map // HASH: 4 wire bytes of a receiver index -> 1 (presence only)
	counters  *ebpf.Map // PERCPU_ARRAY: drop reason -> u64
	sources   *ebpf.Map // LRU_HASH: sourceKeyLen key -> u64 theoretical arrival time; nil without HandshakeRate
	routes    *ebpf.Map // LPM_TRIE: routeKeyLen key -> u32 queue; nil without TUNSteering
	reuseport *ebpf.Program
	earlyDrop *ebpf.Program
	steering  *ebpf.Program // nil without TUNSteering

	groups [][]syscall.RawConn // attached reuseport groups (selector + early drop), Config.GroupSize() each
	tuns   []syscall.RawConn   // TUN fds with the steering program
}

// Load creates the maps and loads the programs. Errors wrap ErrPermission (EPERM/EACCES from the kernel)
// or ErrUnsupported (anything else the kernel refuses: missing program/map type, helper, or a verifier
// rejection on an old kernel), always together with the kernel's own error.
func Load(cfg Config) (*Classifier, error) {
	if cfg.Sockets < 1 || cfg.Sockets > 1<<16 {
		return nil, fmt.Errorf("classifier: Sockets = %d, want 1..65536", cfg.Sockets)
	}
	if cfg.MaxSessions == 0 {
		cfg.MaxSessions = DefaultMaxSessions
	}
	if cfg.UnknownSample < 0 || cfg.UnknownSample > time.Duration(math.MaxInt32) {
		return nil, fmt.Errorf("classifier: UnknownSample = %s, want 0..%s", cfg.UnknownSample, time.Duration(math.MaxInt32))
	}
	if cfg.MaxSessions < 1 || cfg.MaxSessions > 1<<24 {
		return nil, fmt.Errorf("classifier: MaxSessions = %d, want 1..%d", cfg.MaxSessions, 1<<24)
	}
	lim, err := handshakeLimit(&cfg)
	if err != nil {
		return nil, err
	}
	c := &Classifier{cfg: cfg}
	if err := c.load(lim); err != nil {
		c.closeObjects()
		return nil, err
	}
	return c, nil
}

// handshakeLimit checks the login-limit fields, fills in their defaults and returns the limit the filter
// compiles in (zero without HandshakeRate).
func handshakeLimit(cfg *Config) (limit, error) {
	const maxRate, maxBurst = 1e9, 1e9
	r := cfg.HandshakeRate
	if r == 0 {
		return limit{}, nil
	}
	if !(r >= 1e-3 && r <= maxRate) { // also NaN
		return limit{}, fmt.Errorf("classifier: HandshakeRate = %v, want 0 (no limit) or 0.001..%g per second", r, float64(maxRate))
	}
	if cfg.HandshakeBurst == 0 {
		cfg.HandshakeBurst = DefaultHandshakeBurst
	}
	if cfg.HandshakeBurst < 1 || cfg.HandshakeBurst > maxBurst {
		return limit{}, fmt.Errorf("classifier: HandshakeBurst = %d, want 1..%d", cfg.HandshakeBurst, int(maxBurst))
	}
	if cfg.HandshakeSources == 0 {
		cfg.HandshakeSources = DefaultHandshakeSources
	}
	if cfg.HandshakeSources < 1 || cfg.HandshakeSources > 1<<24 {
		return limit{}, fmt.Errorf("classifier: HandshakeSources = %d, want 1..%d", cfg.HandshakeSources, 1<<24)
	}
	interval := max(uint64(math.Round(1e9/r)), 1)
	// A slow rate with a big burst could overflow the filter's 64-bit time arithmetic (now + up to
	// burst tokens' worth of ns must stay far from 2^64).
	if bn := float64(interval) * float64(cfg.HandshakeBurst); bn > 1<<62 {
		return limit{}, fmt.Errorf("classifier: HandshakeBurst %d at HandshakeRate %v takes %.3g s to refill, want at most %.3g s",
			cfg.HandshakeBurst, r, bn/1e9, float64(1<<62)/1e9)
	}
	b := uint64(cfg.HandshakeBurst)
	return limit{interval: interval, burst: b, burstNs: interval * b}, nil
}

func (c *Classifier) load(lim limit) error {
	var err error
	// Preallocated (the default for HASH): no allocation in AddSession's kernel path can fail later at
	// packet time, and lookups are the fastest kind.
	c.sessions, err = ebpf.NewMap(&ebpf.MapSpec{
		Name: "salvo_sessions", Type: ebpf.Hash,
		KeySize: 4, ValueSize: 1, MaxEntries: uint32(c.cfg.MaxSessions),
	})
	if err != nil {
		return kernelErr("create session map", err)
	}
	c.counters, err = ebpf.NewMap(&ebpf.MapSpec{
		Name: "salvo_drops", Type: ebpf.PerCPUArray,
		KeySize: 4, ValueSize: 8, MaxEntries: numReasons + 1, // + the sampling gate's timestamp
	})
	if err != nil {
		return kernelErr("create drop counter map", err)
	}
	if c.cfg.HandshakeRate > 0 {
		// LRU maps are always preallocated: HandshakeSources entries of memory from the start, and a
		// new source at packet time evicts instead of allocating.
		c.sources, err = ebpf.NewMap(&ebpf.MapSpec{
			Name: "salvo_loginsrc", Type: ebpf.LRUHash,
			KeySize: sourceKeyLen, ValueSize: 8, MaxEntries: uint32(c.cfg.HandshakeSources),
		})
		if err != nil {
			return kernelErr("create login source map", err)
		}
	}
	if c.reuseport, err = loadProg("salvo_reuseport", reuseportInsns(c.cfg.Sockets, c.cfg.HandshakeSocket)); err != nil {
		return err
	}
	if c.earlyDrop, err = loadProg("salvo_earlydrop", earlyDropInsns(c.sessions, c.counters, c.sources, c.cfg.UnknownSample, lim)); err != nil {
		return err
	}
	if !c.cfg.TUNSteering {
		return nil
	}
	c.routes, err = ebpf.NewMap(&ebpf.MapSpec{
		Name: "salvo_routes", Type: ebpf.LPMTrie,
		KeySize: routeKeyLen, ValueSize: 4, MaxEntries: uint32(c.cfg.MaxSessions),
		Flags: unix.BPF_F_NO_PREALLOC, // required for LPM tries
	})
	if err != nil {
		return kernelErr("create route map", err)
	}
	c.steering, err = loadProg("salvo_tunsteer", tunSteeringInsns(c.routes))
	return err
}

func loadProg(name string, insns asm.Instructions) (*ebpf.Program, error) {
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: name, Type: ebpf.SocketFilter, License: progLicense, Instructions: insns,
	})
	if err != nil {
		return nil, kernelErr("load "+name, err)
	}
	return p, nil
}

// kernelErr classifies a kernel refusal for the "auto"/"on" decision. A verifier rejection counts as
// unsupported (an older kernel that lacks something the programs use) even when its errno is EACCES.
func kernelErr(what string, err error) error {
	var verr *ebpf.VerifierError
	if !errors.As(err, &verr) && errors.Is(err, os.ErrPermission) { // EPERM, EACCES
		return fmt.Errorf("%w: %s: %w", ErrPermission, what, err)
	}
	return fmt.Errorf("%w: %s: %w", ErrUnsupported, what, err)
}

// Supported reports whether this kernel and these privileges can load the classifier: nil, or an error
// that wraps ErrUnsupported or ErrPermission. It loads and discards a minimal classifier with every
// program and map (handshake socket, login limit, TUN steering).
func Supported() error {
	c, err := Load(Config{Sockets: 1, MaxSessions: 1, TUNSteering: true, HandshakeSocket: true,
		HandshakeRate: 1, HandshakeSources: 16})
	if err != nil {
		return err
	}
	return c.Close()
}

// AttachGroup attaches the selector to one reuseport group and the early-drop filter to each of its
// sockets. conns are the group's sockets in bind order, which is the order of reuseport indexes:
// conns[i] is worker i's socket for i < Config.Sockets, and with Config.HandshakeSocket conns[Sockets],
// bound last, is the handshake socket. There must be exactly Config.GroupSize() of them, all already
// bound, and the group must have no other members. SO_ATTACH_BPF replaces any filter a socket had. On
// error nothing of this call stays attached.
func (c *Classifier) AttachGroup(conns []syscall.RawConn) error {
	if n := c.cfg.GroupSize(); len(conns) != n {
		if c.cfg.HandshakeSocket {
			return fmt.Errorf("classifier: AttachGroup with %d sockets, want %d (Config.Sockets = %d workers + the handshake socket)",
				len(conns), n, c.cfg.Sockets)
		}
		return fmt.Errorf("classifier: AttachGroup with %d sockets, Config.Sockets is %d", len(conns), c.cfg.Sockets)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return ErrClosed
	}
	// Filters first: once the selector steers packets, every socket already filters them.
	for i, rc := range conns {
		if err := setsockopt(rc, unix.SO_ATTACH_BPF, c.earlyDrop.FD()); err != nil {
			detachGroup(conns[:i], false)
			return attachErr(fmt.Sprintf("SO_ATTACH_BPF on socket %d", i), err)
		}
	}
	// The selector belongs to the group, not to a socket: setting it on any member sets it for all. A
	// single socket is no reuseport group (it may not even have SO_REUSEPORT: the kernel refuses the
	// program with EINVAL then) and has nothing to select between: it only gets the filter. (With a
	// handshake socket even one worker makes a group of two.)
	if c.cfg.GroupSize() == 1 {
		c.groups = append(c.groups, append([]syscall.RawConn(nil), conns...))
		return nil
	}
	if err := setsockopt(conns[0], unix.SO_ATTACH_REUSEPORT_EBPF, c.reuseport.FD()); err != nil {
		detachGroup(conns, false)
		return attachErr("SO_ATTACH_REUSEPORT_EBPF", err)
	}
	c.groups = append(c.groups, append([]syscall.RawConn(nil), conns...))
	return nil
}

// AttachTUN attaches the steering program to the multi-queue TUN device behind tunFd (any one of its
// queue fds). Needs Config.TUNSteering.
func (c *Classifier) AttachTUN(tunFd syscall.RawConn) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return ErrClosed
	}
	if c.steering == nil {
		return errors.New("classifier: AttachTUN needs Config.TUNSteering")
	}
	if err := setSteering(tunFd, c.steering.FD()); err != nil {
		return attachErr("TUNSETSTEERINGEBPF", err)
	}
	c.tuns = append(c.tuns, tunFd)
	return nil
}

// AddSession marks a receiver index live. Call it before the serverAuthResponse that announces the index
// is sent, or the client's first data packets can be dropped.
func (c *Classifier) AddSession(index uint32) error {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		return ErrClosed
	}
	if err := c.sessions.Put(sessionKey(index), uint8(1)); err != nil {
		return fmt.Errorf("classifier: add session %d: %w", index, err)
	}
	return nil
}

// RemoveSession forgets a receiver index; removing an index that is not there is not an error.
func (c *Classifier) RemoveSession(index uint32) error {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		return ErrClosed
	}
	if err := c.sessions.Delete(sessionKey(index)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("classifier: remove session %d: %w", index, err)
	}
	return nil
}

// sessionKey is the index as its 4 wire bytes (little endian), which is what the filter looks up.
func sessionKey(index uint32) [4]byte {
	var k [4]byte
	binary.LittleEndian.PutUint32(k[:], index)
	return k
}

// sourceKey is the source map key of addr (see sourceKeyLen): the IPv4 address, or the /64 of an IPv6
// one. An IPv4-mapped IPv6 address counts as IPv4, as the filter sees such a client's IPv4 header.
func sourceKey(addr netip.Addr) [sourceKeyLen]byte {
	var k [sourceKeyLen]byte
	addr = addr.Unmap()
	if addr.Is4() {
		binary.NativeEndian.PutUint32(k[:4], familyV4)
		a := addr.As4()
		copy(k[8:], a[:])
	} else {
		binary.NativeEndian.PutUint32(k[:4], familyV6)
		a := addr.As16()
		copy(k[4:], a[:8])
	}
	return k
}

// SetRoute steers packets whose destination falls in prefix to TUN queue queue (longest prefix wins).
func (c *Classifier) SetRoute(prefix netip.Prefix, queue uint32) error {
	key, err := routeKey(prefix)
	if err != nil {
		return err
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		return ErrClosed
	}
	if c.routes == nil {
		return errors.New("classifier: SetRoute needs Config.TUNSteering")
	}
	if err := c.routes.Put(key, queue); err != nil {
		return fmt.Errorf("classifier: set route %s: %w", prefix, err)
	}
	return nil
}

// DeleteRoute removes a route set with SetRoute; a missing route is not an error.
func (c *Classifier) DeleteRoute(prefix netip.Prefix) error {
	key, err := routeKey(prefix)
	if err != nil {
		return err
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		return ErrClosed
	}
	if c.routes == nil {
		return errors.New("classifier: DeleteRoute needs Config.TUNSteering")
	}
	if err := c.routes.Delete(key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("classifier: delete route %s: %w", prefix, err)
	}
	return nil
}

// routeKey encodes prefix as the trie key: host-order prefix length (8 family bits + prefix bits), family
// byte, address bytes. Host bits are masked off so that equal prefixes are equal keys.
func routeKey(prefix netip.Prefix) ([routeKeyLen]byte, error) {
	var k [routeKeyLen]byte
	if !prefix.IsValid() {
		return k, fmt.Errorf("classifier: invalid prefix %v", prefix)
	}
	prefix = prefix.Masked()
	addr := prefix.Addr()
	if addr.Is4In6() {
		return k, fmt.Errorf("classifier: route %s: use the plain IPv4 form", prefix)
	}
	binary.NativeEndian.PutUint32(k[:4], uint32(8+prefix.Bits()))
	if addr.Is4() {
		k[4] = familyV4
		a := addr.As4()
		copy(k[5:], a[:])
	} else {
		k[4] = familyV6
		a := addr.As16()
		copy(k[5:], a[:])
	}
	return k, nil
}

// Stats sums the drop counters over all CPUs.
func (c *Classifier) Stats() (Stats, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		return Stats{}, ErrClosed
	}
	var sums [numReasons]uint64
	for r := range sums {
		var perCPU []uint64
		if err := c.counters.Lookup(uint32(r), &perCPU); err != nil {
			return Stats{}, fmt.Errorf("classifier: read drop counter %d: %w", r, err)
		}
		for _, v := range perCPU {
			sums[r] += v
		}
	}
	return Stats{
		DroppedBadCode:        sums[reasonBadCode],
		DroppedShort:          sums[reasonShort],
		DroppedUnknownSession: sums[reasonUnknownSession],
		DroppedRateLimited:    sums[reasonRateLimited],
	}, nil
}

// Close detaches everything it attached and releases the programs and maps. Sockets or TUN fds that were
// closed in the meantime are skipped (the kernel dropped their attachments with them). Calling Close
// again returns nil.
func (c *Classifier) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	var errs []error
	for _, g := range c.groups {
		errs = append(errs, detachGroup(g, c.cfg.GroupSize() > 1))
	}
	for _, t := range c.tuns {
		if err := setSteering(t, -1); err != nil && !gone(err) {
			errs = append(errs, fmt.Errorf("classifier: detach TUN steering: %w", err))
		}
	}
	c.groups, c.tuns = nil, nil
	errs = append(errs, c.closeObjects())
	return errors.Join(errs...)
}

// detachGroup removes the early-drop filter from every socket and, with selector, the group's selector.
func detachGroup(conns []syscall.RawConn, selector bool) error {
	var errs []error
	if selector {
		// Any live member can detach the group's program; conns[0] may have been closed already. When
		// every member is closed, the group and its program went away with them.
		for _, rc := range conns {
			err := setsockopt(rc, unix.SO_DETACH_REUSEPORT_BPF, 0)
			if err == nil || errors.Is(err, unix.ENOENT) {
				break
			}
			if !gone(err) {
				errs = append(errs, fmt.Errorf("classifier: SO_DETACH_REUSEPORT_BPF: %w", err))
				break
			}
		}
	}
	for i, rc := range conns {
		if err := setsockopt(rc, unix.SO_DETACH_BPF, 0); err != nil && !gone(err) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("classifier: SO_DETACH_BPF on socket %d: %w", i, err))
		}
	}
	return errors.Join(errs...)
}

func (c *Classifier) closeObjects() error {
	var errs []error
	for _, p := range []*ebpf.Program{c.reuseport, c.earlyDrop, c.steering} {
		if p != nil {
			errs = append(errs, p.Close())
		}
	}
	for _, m := range []*ebpf.Map{c.sessions, c.counters, c.sources, c.routes} {
		if m != nil {
			errs = append(errs, m.Close())
		}
	}
	return errors.Join(errs...)
}

// errControl marks an error from RawConn.Control itself: the fd is closed, so there is nothing to detach.
type errControl struct{ err error }

func (e errControl) Error() string { return "fd unusable: " + e.err.Error() }
func (e errControl) Unwrap() error { return e.err }

func gone(err error) bool {
	var ec errControl
	return errors.As(err, &ec) || errors.Is(err, unix.EBADF)
}

func setsockopt(rc syscall.RawConn, opt, value int) error {
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, opt, value)
	}); err != nil {
		return errControl{err}
	}
	return serr
}

func setSteering(rc syscall.RawConn, progFD int) error {
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.IoctlSetPointerInt(int(fd), unix.TUNSETSTEERINGEBPF, progFD)
	}); err != nil {
		return errControl{err}
	}
	return serr
}

// attachErr classifies setsockopt/ioctl failures like kernelErr: an unknown option or ioctl means an old
// kernel, EPERM means missing CAP_NET_ADMIN.
func attachErr(what string, err error) error {
	switch {
	case errors.Is(err, os.ErrPermission):
		return fmt.Errorf("%w: %s: %w", ErrPermission, what, err)
	case errors.Is(err, unix.ENOPROTOOPT), errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOTTY),
		errors.Is(err, unix.EOPNOTSUPP):
		return fmt.Errorf("%w: %s: %w", ErrUnsupported, what, err)
	}
	return fmt.Errorf("classifier: %s: %w", what, err)
}
