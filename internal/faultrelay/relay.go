// Package faultrelay is a UDP relay that makes a network bad on purpose, for tests and benchmarks: it sits
// between one VPN client and its gateway (in a test namespace, or on loopback) and loses, drops in
// bursts, reorders, duplicates, rate-limits, clamps or blacks out the datagrams that pass, per direction.
// There is no tc netem on the machines Salvo is tested on; this is what stands in for it.
//
// The client sends to the relay's front address (Relay.Addr); the relay forwards from its own back socket,
// connected to the gateway, so the gateway sees one peer whatever the client does. Replies go to the
// client endpoint the relay last heard from, so a client that changes its source port or address is
// followed, as a NAT would.
//
// Goroutines: each direction has one forwarding goroutine (forwardLoop), which owns that direction's
// random source, burst state, token bucket and GSO batch, and one goroutine serving its delay queue
// (delayLoop). Nothing is started per datagram and nothing is allocated per datagram: delayed datagrams
// are copied into buffers that are reused. Faults may be changed from any goroutine while traffic flows
// (Set, Blackout, Lift); the forwarding goroutines read them atomically per datagram.
//
// Speed: with UDP GRO and GSO (the default) the relay reads and sends up to 64 KiB of datagrams per
// system call, judging each datagram on its own, and keeps up with a VPN moving several Gbit/s over veth;
// a datagram-at-a-time relay (Config.NoOffload) manages about a third of that and takes the receiver's
// batching away. What the relay cannot keep up with, the kernel drops at its socket: DirStats.SocketDrops.
package faultrelay

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Config is what New needs. Faults start off (everything is forwarded) until Set is called.
type Config struct {
	// Listen is the front address the client sends to (port 0 picks one; see Relay.Addr).
	Listen netip.AddrPort
	// Gateway is where the relay forwards the client's datagrams.
	Gateway netip.AddrPort
	// Seed, if not zero, makes every random decision reproducible: the same seed and the same sequence of
	// datagrams in a direction give the same losses, duplicates and delays.
	Seed uint64
	// Tap, if set, sees every datagram the relay reads, before any fault, on that direction's forwarding
	// goroutine. It must not keep b and must be quick: it runs on the forwarding path.
	Tap func(dir Direction, b []byte)
	// RecoveryBytes is how much must be forwarded in a direction after a blackout ends before the relay
	// counts the traffic as flowing again (DirStats.Recovery); default 256 KiB, enough that keepalives and
	// single retransmissions do not count but the first round trips of slow start do.
	RecoveryBytes uint64
	// ICMP opens raw ICMP sockets (needs CAP_NET_RAW) so that Faults.MTUReply can answer. Listen must then
	// name a specific address: the answer quotes the datagram the sender sent, destination included.
	ICMP bool
	// NoOffload turns UDP GRO (reading many datagrams at once) and GSO (sending them so) off: one system
	// call per datagram each way, as a plain relay would.
	NoOffload bool
	// SocketBuffer is SO_RCVBUF/SO_SNDBUF of both sockets (forced beyond the system maximum when the
	// process may); default 4 MiB, so Gbit/s bursts are not lost in the relay itself.
	SocketBuffer int
}

// Relay is a running fault-injecting relay. Its methods are safe for concurrent use.
type Relay struct {
	cfg   Config
	front *net.UDPConn // bound to Config.Listen: the client talks to this
	back  *net.UDPConn // connected to Config.Gateway
	epoch time.Time    // mono() counts from here
	paths [2]*path     // indexed by dirIndex
	icmp  *icmpSender  // nil unless Config.ICMP

	// client is the endpoint the client was last heard from; nil until the first datagram. Stored as a
	// pointer so the forwarding goroutines read it without a lock; a new value is allocated only when the
	// client's source changes.
	client atomic.Pointer[netip.AddrPort]

	closeOnce sync.Once
	done      chan struct{}
	wg        sync.WaitGroup
}

// New opens the relay's sockets on the calling goroutine (so inside netns.NS.Do they belong to that
// namespace) and starts forwarding.
func New(cfg Config) (*Relay, error) {
	if !cfg.Gateway.IsValid() || cfg.Gateway.Port() == 0 {
		return nil, fmt.Errorf("faultrelay: gateway address %v: need an address and a port", cfg.Gateway)
	}
	if cfg.RecoveryBytes == 0 {
		cfg.RecoveryBytes = 256 << 10
	}
	if cfg.SocketBuffer == 0 {
		cfg.SocketBuffer = 4 << 20
	}
	if cfg.ICMP && (!cfg.Listen.IsValid() || cfg.Listen.Addr().IsUnspecified()) {
		return nil, fmt.Errorf("faultrelay: ICMP answers need a specific listen address, not %v", cfg.Listen)
	}
	r := &Relay{cfg: cfg, epoch: time.Now(), done: make(chan struct{})}
	var err error
	if r.front, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(cfg.Listen)); err != nil {
		return nil, fmt.Errorf("faultrelay: listen on %v: %w", cfg.Listen, err)
	}
	if r.back, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(cfg.Gateway)); err != nil {
		r.front.Close()
		return nil, fmt.Errorf("faultrelay: socket to gateway %v: %w", cfg.Gateway, err)
	}
	for _, c := range []*net.UDPConn{r.front, r.back} {
		tuneSocket(c, cfg.SocketBuffer)
	}
	if cfg.ICMP {
		if r.icmp, err = newICMPSender(); err != nil {
			r.front.Close()
			r.back.Close()
			return nil, err
		}
	}
	seed := cfg.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	r.paths[0] = newPath(r, ToGateway, r.front, r.back, seed)
	r.paths[1] = newPath(r, ToClient, r.back, r.front, seed)
	for _, p := range r.paths {
		r.wg.Add(2)
		go p.forwardLoop()
		go p.delayLoop()
	}
	return r, nil
}

// Addr is the front address the client must send to.
func (r *Relay) Addr() netip.AddrPort { return r.front.LocalAddr().(*net.UDPAddr).AddrPort() }

// GatewaySide is the address the gateway sees the relay's datagrams come from.
func (r *Relay) GatewaySide() netip.AddrPort { return r.back.LocalAddr().(*net.UDPAddr).AddrPort() }

// Client is the client endpoint the relay last heard from (invalid until the first datagram).
func (r *Relay) Client() netip.AddrPort {
	if c := r.client.Load(); c != nil {
		return *c
	}
	return netip.AddrPort{}
}

// Set replaces the faults of the given direction(s). The change applies from the next datagram; datagrams
// already delayed keep their delay.
func (r *Relay) Set(d Direction, f Faults) error {
	if err := f.Validate(); err != nil {
		return err
	}
	if f.MTUReply && r.icmp == nil {
		return errors.New("faultrelay: MTUReply needs a relay made with Config.ICMP")
	}
	if d&Both == 0 {
		return fmt.Errorf("faultrelay: no direction in %v", d)
	}
	f = f.withDefaults()
	for _, p := range r.pathsOf(d) {
		p.faults.Store(&f)
	}
	return nil
}

// Faults returns the faults of one direction (with defaults filled in).
func (r *Relay) Faults(d Direction) Faults {
	ps := r.pathsOf(d)
	if len(ps) == 0 {
		return Faults{}
	}
	return *ps[0].faults.Load()
}

// Clear removes every fault in both directions and lifts a blackout.
func (r *Relay) Clear() {
	_ = r.Set(Both, Faults{})
	r.Lift(Both)
}

// Blackout drops every datagram of the given direction(s) for d, or until Lift when d is 0 (or negative).
// A blackout replaces one in progress. When it ends, the relay measures how long traffic takes to flow
// again (DirStats.Recovery).
func (r *Relay) Blackout(dir Direction, d time.Duration) {
	until := int64(math.MaxInt64)
	if d > 0 {
		until = r.mono() + int64(d)
	}
	for _, p := range r.pathsOf(dir) {
		// until before gen: forwardLoop loads gen first, so a new gen always comes with its until.
		p.blackUntil.Store(until)
		p.blackGen.Add(1)
	}
}

// Lift ends a blackout now (a no-op if there is none).
func (r *Relay) Lift(dir Direction) {
	now := r.mono()
	for _, p := range r.pathsOf(dir) {
		if p.blackUntil.Load() > now {
			p.blackUntil.Store(now)
		}
	}
}

// InjectToGateway sends b to the gateway from the relay's back socket, as if the client had sent it
// (spoofed, replayed or corrupted datagrams). It bypasses the faults and the counters.
func (r *Relay) InjectToGateway(b []byte) error {
	_, err := r.back.Write(b)
	return err
}

// InjectToClient sends b to the client's last endpoint as if the gateway had sent it.
func (r *Relay) InjectToClient(b []byte) error {
	c := r.client.Load()
	if c == nil {
		return errors.New("faultrelay: no client endpoint known yet")
	}
	_, err := r.front.WriteToUDPAddrPort(b, *c)
	return err
}

// Close stops forwarding, drops what is still delayed and closes the sockets. It waits for the relay's
// goroutines to end.
func (r *Relay) Close() error {
	var err error
	r.closeOnce.Do(func() {
		close(r.done)
		err = errors.Join(r.front.Close(), r.back.Close())
		r.wg.Wait()
		if r.icmp != nil {
			r.icmp.close()
		}
	})
	return err
}

// mono is the relay's clock: monotonic nanoseconds since New.
func (r *Relay) mono() int64 { return int64(time.Since(r.epoch)) }

func (r *Relay) monoTime(t int64) time.Time { return r.epoch.Add(time.Duration(t)) }

func (r *Relay) pathsOf(d Direction) []*path {
	switch d & Both {
	case ToGateway:
		return r.paths[:1]
	case ToClient:
		return r.paths[1:]
	case Both:
		return r.paths[:]
	}
	return nil
}

// tuneSocket raises the socket buffers, beyond net.core.[rw]mem_max when the process is privileged.
func tuneSocket(c *net.UDPConn, size int) {
	_ = c.SetReadBuffer(size)
	_ = c.SetWriteBuffer(size)
	if rc, err := c.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) {
			_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, size)
			_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUFFORCE, size)
		})
	}
	enableFragSize(c)
}
