package enginetest

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
)

// DefaultQueueLen is the receive queue of a new Conn, in datagrams: a socket buffer of a few hundred KB
// holds about as many full-sized datagrams.
const DefaultQueueLen = 1024

// Ports picked for port 0 come from the IANA dynamic range, like the kernel's ephemeral ports, so they
// never collide with the well-known ports tests bind explicitly.
const (
	firstEphemeralPort = 49152
	lastEphemeralPort  = 65535
)

var (
	// ErrAddrInUse is returned by Listen and Rebind for an address a Conn is already bound to.
	ErrAddrInUse = errors.New("enginetest: address already in use")
	// ErrAddressFamily is returned by WriteBatch for a destination that is invalid or of the other IP
	// family than the Conn's own address (the network has no dual-stack sockets).
	ErrAddressFamily = errors.New("enginetest: destination address family does not match the socket")
)

// packetConn mirrors engine.PacketConn method for method; this package must not import engine (it is a
// dependency of engine's own tests), and *Conn satisfies engine.PacketConn through this identical set.
type packetConn interface {
	ReadBatch(bufs [][]byte, sizes []int, addrs []netip.AddrPort) (int, error)
	WriteBatch(bufs [][]byte, addrs []netip.AddrPort) (int, error)
	LocalAddr() netip.AddrPort
	Close() error
}

var _ packetConn = (*Conn)(nil)

// Verdict is a Filter's decision on one datagram.
type Verdict int

const (
	// Deliver lets the datagram continue to its destination.
	Deliver Verdict = iota
	// Drop loses the datagram; it is counted in NetStats.DroppedFilter.
	Drop
)

func (v Verdict) String() string {
	switch v {
	case Deliver:
		return "deliver"
	case Drop:
		return "drop"
	}
	return fmt.Sprintf("Verdict(%d)", int(v))
}

// TapFunc observes one datagram on the wire. b is the tap's own copy and may be kept.
type TapFunc func(from, to netip.AddrPort, b []byte)

// FilterFunc decides whether one datagram reaches its destination. b is the copy that will be delivered:
// the filter may change it in place to model corruption, but must not keep it after returning.
type FilterFunc func(from, to netip.AddrPort, b []byte) Verdict

// NetStats counts what happened to datagrams on a Network. Every datagram sent or injected ends up in
// exactly one of Delivered or a Dropped counter.
type NetStats struct {
	Sent              uint64 // datagrams accepted by WriteBatch
	Injected          uint64 // datagrams passed to Inject
	Delivered         uint64 // datagrams queued at a receiving Conn (sent and injected)
	DroppedNoListener uint64 // no Conn is bound to the destination
	DroppedFilter     uint64 // the Filter returned Drop
	DroppedQueueFull  uint64 // the destination's receive queue was full (the reader is too slow)
	// Truncated counts datagrams ReadBatch cut short because the reader's buffer was smaller.
	Truncated uint64
}

// Network is an in-memory UDP network with no routing: a datagram goes straight from the sending Conn to
// the Conn bound to exactly its destination address. The zero value is not usable; call NewNetwork.
type Network struct {
	// mu guards the bindings (conns, and each Conn's addr and closed). Delivery holds it for reading
	// while it queues a datagram, so a datagram is either queued before a concurrent Close or Rebind
	// takes effect or counted as having no listener: the counters never call a datagram delivered that
	// went into a closed Conn. Callbacks run without it, so they may call any method.
	mu       sync.RWMutex
	conns    map[netip.AddrPort]*Conn
	nextPort uint16 // where the search for a free port starts
	queueLen int

	tap    atomic.Pointer[TapFunc]
	filter atomic.Pointer[FilterFunc]

	sent, injected, delivered                          atomic.Uint64
	droppedNoListener, droppedFilter, droppedQueueFull atomic.Uint64
	truncated                                          atomic.Uint64
}

// NewNetwork returns an empty network whose Conns get receive queues of DefaultQueueLen.
func NewNetwork() *Network {
	return &Network{
		conns:    make(map[netip.AddrPort]*Conn),
		nextPort: firstEphemeralPort,
		queueLen: DefaultQueueLen,
	}
}

// SetQueueLen sets the receive queue length, in datagrams, of Conns created from now on (n < 1 means 1).
func (n *Network) SetQueueLen(queueLen int) {
	n.mu.Lock()
	n.queueLen = max(queueLen, 1)
	n.mu.Unlock()
}

// SetTap installs the observer that sees every datagram sent with WriteBatch, before the Filter decides on
// it and whether or not anyone listens at its destination: an on-path attacker sees what was sent, not
// only what arrived. Injected datagrams bypass it, so a tap that records and replays does not see its own
// replays. nil removes the tap. The tap runs on the sender's goroutine, possibly on several at once.
func (n *Network) SetTap(tap TapFunc) {
	if tap == nil {
		n.tap.Store(nil)
		return
	}
	n.tap.Store(&tap)
}

// SetFilter installs the function that decides, for every datagram sent with WriteBatch, whether it is
// delivered; it models loss and blackouts. Injected datagrams bypass it, so a test can drop a datagram
// and inject it again later to model delay or reordering. nil removes the filter (everything is
// delivered). The filter runs on the sender's goroutine, possibly on several at once.
func (n *Network) SetFilter(filter FilterFunc) {
	if filter == nil {
		n.filter.Store(nil)
		return
	}
	n.filter.Store(&filter)
}

// Stats returns the network's counters. Each counter is read atomically, the set is not a snapshot.
func (n *Network) Stats() NetStats {
	return NetStats{
		Sent:              n.sent.Load(),
		Injected:          n.injected.Load(),
		Delivered:         n.delivered.Load(),
		DroppedNoListener: n.droppedNoListener.Load(),
		DroppedFilter:     n.droppedFilter.Load(),
		DroppedQueueFull:  n.droppedQueueFull.Load(),
		Truncated:         n.truncated.Load(),
	}
}

// Listen binds a new Conn to addr. Port 0 picks a free port. addr must be a concrete address, not
// 0.0.0.0 or ::, because the network has no routing to choose a source address from; an IPv4-mapped IPv6
// address is treated as the IPv4 address, as a dual-stack socket reports it.
func (n *Network) Listen(addr netip.AddrPort) (*Conn, error) {
	addr, err := checkBindAddr(addr)
	if err != nil {
		return nil, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	addr, err = n.claimLocked(addr)
	if err != nil {
		return nil, err
	}
	c := &Conn{
		net:   n,
		addr:  addr,
		queue: make(chan datagram, n.queueLen),
		done:  make(chan struct{}),
	}
	n.conns[addr] = c
	return c, nil
}

// Rebind moves c to addr in place, as a NAT that picks a new external mapping does: the engine keeps the
// same Conn, datagrams it sends from now on come from addr, datagrams to the old address are no longer
// delivered to it, and datagrams already queued stay queued. Port 0 picks a free port. It returns the new
// address.
func (n *Network) Rebind(c *Conn, addr netip.AddrPort) (netip.AddrPort, error) {
	addr, err := checkBindAddr(addr)
	if err != nil {
		return netip.AddrPort{}, err
	}
	if c.net != n {
		return netip.AddrPort{}, errors.New("enginetest: Rebind of a Conn from another Network")
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if c.closed {
		return netip.AddrPort{}, net.ErrClosed
	}
	if addr == c.addr {
		return addr, nil
	}
	addr, err = n.claimLocked(addr)
	if err != nil {
		return netip.AddrPort{}, err
	}
	delete(n.conns, c.addr)
	c.addr = addr
	n.conns[addr] = c
	return addr, nil
}

// Inject delivers b to whoever listens at to, as if it had been sent from from, which can be any address
// (spoofed, or one nobody is bound to). It bypasses the Tap and the Filter: it models a datagram that
// appears next to the receiver. It reports whether the datagram was queued. b is copied.
func (n *Network) Inject(from, to netip.AddrPort, b []byte) bool {
	n.injected.Add(1)
	return n.deliver(from.Addr().Unmap(), from.Port(), to, clone(b))
}

// Close closes every Conn on the network. It suits t.Cleanup.
func (n *Network) Close() {
	n.mu.RLock()
	conns := make([]*Conn, 0, len(n.conns))
	for _, c := range n.conns {
		conns = append(conns, c)
	}
	n.mu.RUnlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

// checkBindAddr returns addr in the form the network keys bindings by.
func checkBindAddr(addr netip.AddrPort) (netip.AddrPort, error) {
	a := addr.Addr().Unmap()
	if !a.IsValid() || a.IsUnspecified() {
		return netip.AddrPort{}, fmt.Errorf("enginetest: cannot bind %v: need a concrete address", addr)
	}
	return netip.AddrPortFrom(a, addr.Port()), nil
}

// claimLocked checks that addr is free, or picks a free port for port 0. n.mu must be held for writing.
func (n *Network) claimLocked(addr netip.AddrPort) (netip.AddrPort, error) {
	if addr.Port() != 0 {
		if _, taken := n.conns[addr]; taken {
			return netip.AddrPort{}, fmt.Errorf("%w: %v", ErrAddrInUse, addr)
		}
		return addr, nil
	}
	const span = lastEphemeralPort - firstEphemeralPort + 1
	for range span {
		p := n.nextPort
		n.nextPort++
		if n.nextPort == 0 || n.nextPort < firstEphemeralPort {
			n.nextPort = firstEphemeralPort
		}
		cand := netip.AddrPortFrom(addr.Addr(), p)
		if _, taken := n.conns[cand]; !taken {
			return cand, nil
		}
	}
	return netip.AddrPort{}, fmt.Errorf("%w: no free port on %v", ErrAddrInUse, addr.Addr())
}

// send carries one datagram written by a Conn bound to from: tap, filter, deliver.
func (n *Network) send(from netip.AddrPort, to netip.AddrPort, b []byte) {
	n.sent.Add(1)
	to = netip.AddrPortFrom(to.Addr().Unmap(), to.Port())
	b = clone(b) // the sender reuses its buffer as soon as WriteBatch returns
	if tap := n.tap.Load(); tap != nil {
		(*tap)(from, to, clone(b))
	}
	if filter := n.filter.Load(); filter != nil && (*filter)(from, to, b) == Drop {
		n.droppedFilter.Add(1)
		return
	}
	n.deliver(from.Addr(), from.Port(), to, b)
}

// deliver queues b, which it now owns, at the Conn bound to to. It reports whether it did.
func (n *Network) deliver(fromAddr netip.Addr, fromPort uint16, to netip.AddrPort, b []byte) bool {
	to = netip.AddrPortFrom(to.Addr().Unmap(), to.Port())
	d := datagram{from: netip.AddrPortFrom(fromAddr, fromPort), b: b}
	n.mu.RLock()
	defer n.mu.RUnlock()
	c := n.conns[to]
	if c == nil {
		n.droppedNoListener.Add(1)
		return false
	}
	select {
	case c.queue <- d:
		n.delivered.Add(1)
		c.delivered.Add(1)
		return true
	default:
		n.droppedQueueFull.Add(1)
		c.droppedQueueFull.Add(1)
		return false
	}
}

func clone(b []byte) []byte { return append([]byte(nil), b...) }

// datagram is one queued datagram; b is owned by the queue.
type datagram struct {
	from netip.AddrPort
	b    []byte
}

// ConnStats counts one Conn's traffic.
type ConnStats struct {
	Sent             uint64 // datagrams accepted by WriteBatch
	Delivered        uint64 // datagrams queued for ReadBatch
	Read             uint64 // datagrams returned by ReadBatch
	DroppedQueueFull uint64 // datagrams to this Conn lost because its queue was full
}

// Conn is a UDP socket on a Network. It implements engine.PacketConn.
type Conn struct {
	net *Network
	// addr is the bound address; Rebind changes it. Guarded by net.mu.
	addr netip.AddrPort
	// closed is set by Close; guarded by net.mu. done is closed at the same time, to wake ReadBatch.
	closed bool
	done   chan struct{}
	// queue is the receive buffer. It is never closed: a send racing with Close cannot panic, and
	// deliver's check under net.mu keeps datagrams out of it once the Conn is unbound.
	queue chan datagram

	sent, delivered, read, droppedQueueFull atomic.Uint64
}

// LocalAddr is the address the Conn is bound to now (Rebind changes it).
func (c *Conn) LocalAddr() netip.AddrPort {
	c.net.mu.RLock()
	defer c.net.mu.RUnlock()
	return c.addr
}

// Stats returns the Conn's counters.
func (c *Conn) Stats() ConnStats {
	return ConnStats{
		Sent:             c.sent.Load(),
		Delivered:        c.delivered.Load(),
		Read:             c.read.Load(),
		DroppedQueueFull: c.droppedQueueFull.Load(),
	}
}

// Queued is how many datagrams wait for ReadBatch: a test can check that something did or did not arrive
// without blocking, since delivery is done by the time WriteBatch or Inject returns.
func (c *Conn) Queued() int { return len(c.queue) }

// Close unbinds the Conn and wakes a blocked ReadBatch. Datagrams still queued are discarded. Like a real
// socket, ReadBatch and WriteBatch return net.ErrClosed afterwards, and so does a second Close.
func (c *Conn) Close() error {
	n := c.net
	n.mu.Lock()
	defer n.mu.Unlock()
	if c.closed {
		return net.ErrClosed
	}
	c.closed = true
	close(c.done)
	if n.conns[c.addr] == c {
		delete(n.conns, c.addr)
	}
	return nil
}

// ReadBatch receives up to len(bufs) datagrams: datagram i is bufs[i][:sizes[i]], sent from addrs[i].
// It blocks until at least one datagram is queued and then takes as many more as are queued and fit,
// without waiting for them. A datagram longer than its buffer is truncated to the buffer's length and
// sizes[i] is the truncated length, as recvmmsg without MSG_TRUNC reports it; NetStats.Truncated counts
// these, since a correct reader never sees one. sizes and addrs must be at least as long as bufs. After
// Close it returns net.ErrClosed.
func (c *Conn) ReadBatch(bufs [][]byte, sizes []int, addrs []netip.AddrPort) (int, error) {
	if len(bufs) == 0 {
		return 0, nil
	}
	_, _ = sizes[:len(bufs)], addrs[:len(bufs)] // fail before consuming a datagram, not after
	select {
	case <-c.done:
		return 0, net.ErrClosed
	default:
	}
	var d datagram
	select {
	case d = <-c.queue:
	case <-c.done:
		return 0, net.ErrClosed
	}
	put := func(i int, d datagram) {
		sizes[i] = copy(bufs[i], d.b)
		addrs[i] = d.from
		if sizes[i] < len(d.b) {
			c.net.truncated.Add(1)
		}
	}
	put(0, d)
	k := 1
	for ; k < len(bufs); k++ {
		select {
		case d = <-c.queue:
			put(k, d)
			continue
		default:
		}
		break // the queue is empty: return what we have rather than wait for a full batch
	}
	c.read.Add(uint64(k))
	return k, nil
}

// WriteBatch sends bufs[i] to addrs[i] and returns how many it sent. Every datagram is copied before it
// returns, so the caller may reuse its buffers at once. Like UDP, sending succeeds whether or not anyone
// receives: a datagram to an address nobody is bound to is counted in NetStats.DroppedNoListener. A
// destination of the other IP family stops the batch with ErrAddressFamily. After Close it returns
// net.ErrClosed.
func (c *Conn) WriteBatch(bufs [][]byte, addrs []netip.AddrPort) (int, error) {
	_ = addrs[:len(bufs)] // fail before part of the batch went out, not after
	n := c.net
	n.mu.RLock()
	from, closed := c.addr, c.closed
	n.mu.RUnlock()
	if closed {
		return 0, net.ErrClosed
	}
	for i, b := range bufs {
		to := addrs[i].Addr().Unmap()
		if !to.IsValid() || to.Is4() != from.Addr().Is4() {
			return i, fmt.Errorf("%w: %v from %v", ErrAddressFamily, addrs[i], from)
		}
		c.sent.Add(1)
		n.send(from, addrs[i], b)
	}
	return len(bufs), nil
}

// String is the bound address, for test messages.
func (c *Conn) String() string { return "enginetest.Conn(" + c.LocalAddr().String() + ")" }
