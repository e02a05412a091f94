// Package ippool hands out tunnel addresses from an IPv4 or IPv6 prefix.
//
// The first host address of the prefix belongs to the gateway. The network
// address is never handed out, nor is the IPv4 broadcast address. IPv6 pools
// are commonly a /64, so the pool never materialises the range: it keeps a
// cursor that walks forward through the range and a map of addresses in use,
// and the number of simultaneous leases is capped at MaxLeases.
package ippool

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
)

// MaxLeases bounds the number of addresses a Pool hands out at once, which
// bounds its memory whatever the size of the prefix.
const MaxLeases = 1 << 20

var (
	// ErrExhausted means no address is left (or MaxLeases is reached).
	ErrExhausted = errors.New("address pool exhausted")
	// ErrInUse means the address is already leased.
	ErrInUse = errors.New("address already in use")
	// ErrOutside means the address is not one the pool can hand out: outside
	// the prefix, of the other family, or the network, gateway or broadcast
	// address.
	ErrOutside = errors.New("address outside the pool")
)

// Pool is a set of leasable addresses. It is safe for concurrent use.
type Pool struct {
	prefix  netip.Prefix
	gateway netip.Addr
	first   netip.Addr // first leasable address (gateway + 1)
	last    netip.Addr // last leasable address
	// size is the number of addresses in [first, last], saturated at
	// MaxUint64 for huge IPv6 ranges; it bounds the scan in Allocate.
	size uint64

	mu       sync.Mutex
	used     map[netip.Addr]struct{}
	reserved map[netip.Addr]struct{}
	// elsewhere are addresses that clients of other gateways hold (a shared lease store said so): Allocate
	// skips them, so that the store, which has the last word, rarely has to refuse one.
	elsewhere map[netip.Addr]struct{}
	cursor    netip.Addr // where the next Allocate starts looking
}

// New returns a pool over prefix (its host bits are ignored). Addresses in
// reserved are never returned by Allocate but may still be taken with Claim:
// pass the fixed addresses from the users file here so that a dynamic lease
// never takes an address a named user is entitled to.
//
// An IPv4 prefix must be /30 or shorter and an IPv6 prefix /126 or shorter,
// so that at least one address is left for a client.
func New(prefix netip.Prefix, reserved ...netip.Addr) (*Pool, error) {
	if !prefix.IsValid() {
		return nil, fmt.Errorf("ippool: invalid prefix %v", prefix)
	}
	addr := prefix.Addr()
	if addr.Is4In6() {
		return nil, fmt.Errorf("ippool: prefix %v is an IPv4-mapped IPv6 prefix; use the plain IPv4 form", prefix)
	}
	prefix = prefix.Masked()
	hostBits := addr.BitLen() - prefix.Bits()
	// Two host bits leave room for network, gateway and one client, plus
	// the broadcast address for IPv4.
	if hostBits < 2 {
		longest := "/30"
		if addr.Is6() {
			longest = "/126"
		}
		return nil, fmt.Errorf("ippool: prefix %v is too small: the pool must be %s or shorter", prefix, longest)
	}
	p := &Pool{
		prefix:   prefix,
		gateway:  prefix.Addr().Next(),
		used:     make(map[netip.Addr]struct{}),
		reserved: make(map[netip.Addr]struct{}),
	}
	p.first = p.gateway.Next()
	p.last = lastAddr(prefix)
	if addr.Is4() {
		p.last = p.last.Prev() // skip the broadcast address
	}
	// Host bits h give 2^h addresses, minus network and gateway (and
	// broadcast for IPv4).
	switch {
	case hostBits >= 64:
		p.size = ^uint64(0)
	case addr.Is4():
		p.size = 1<<hostBits - 3
	default:
		p.size = 1<<hostBits - 2
	}
	p.cursor = p.first
	if err := p.SetReserved(reserved...); err != nil {
		return nil, err
	}
	return p, nil
}

// lastAddr returns the highest address of prefix.
func lastAddr(prefix netip.Prefix) netip.Addr {
	b := prefix.Addr().As16()
	start := 0
	if prefix.Addr().Is4() {
		start = 96 // the IPv4 address sits in the last four bytes of As16
	}
	for i := start + prefix.Bits(); i < 128; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a := netip.AddrFrom16(b)
	if prefix.Addr().Is4() {
		a = a.Unmap()
	}
	return a
}

// SetReserved replaces the set of addresses Allocate must not hand out, for
// example after the users file is reloaded. An address currently leased
// stays leased; it simply will not be handed out again once released.
func (p *Pool) SetReserved(addrs ...netip.Addr) error {
	set := make(map[netip.Addr]struct{}, len(addrs))
	for _, a := range addrs {
		if !p.prefix.Contains(a) {
			return fmt.Errorf("ippool: reserved address %v: %w %v", a, ErrOutside, p.prefix)
		}
		set[a] = struct{}{}
	}
	p.mu.Lock()
	p.reserved = set
	p.mu.Unlock()
	return nil
}

// SetElsewhere replaces the set of addresses held by clients of other gateways, which Allocate skips like
// reserved ones. Addresses outside the pool are ignored: another gateway may have other pools.
func (p *Pool) SetElsewhere(addrs []netip.Addr) {
	set := make(map[netip.Addr]struct{}, len(addrs))
	for _, a := range addrs {
		if p.leasable(a) {
			set[a] = struct{}{}
		}
	}
	p.mu.Lock()
	p.elsewhere = set
	p.mu.Unlock()
}

// Prefix returns the pool's (masked) prefix.
func (p *Pool) Prefix() netip.Prefix { return p.prefix }

// Gateway returns the gateway's own address, the first host of the prefix.
func (p *Pool) Gateway() netip.Addr { return p.gateway }

// Contains reports whether a lies inside the pool's prefix.
func (p *Pool) Contains(a netip.Addr) bool { return p.prefix.Contains(a) }

// InUse returns the number of addresses currently leased.
func (p *Pool) InUse() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.used)
}

// Reserved reports whether a is reserved (someone's fixed address): Allocate never hands it out, and
// only its owner should Claim it.
func (p *Pool) Reserved(a netip.Addr) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.reserved[a]
	return ok
}

// Leased reports whether a is currently leased.
func (p *Pool) Leased(a netip.Addr) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.used[a]
	return ok
}

// leasable reports whether a is in [first, last].
func (p *Pool) leasable(a netip.Addr) bool {
	return p.prefix.Contains(a) && a.Compare(p.first) >= 0 && a.Compare(p.last) <= 0
}

// Allocate leases a free, unreserved address. The cursor keeps moving
// forward, so a released address is reused only after the rest of the range
// has been tried; that keeps a departed client's address from being given to
// someone else while stale packets for it may still be in flight.
func (p *Pool) Allocate() (netip.Addr, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.used) >= MaxLeases {
		return netip.Addr{}, fmt.Errorf("ippool %v: %w (%d leases, the maximum)", p.prefix, ErrExhausted, MaxLeases)
	}
	// At most size steps: every address is visited once. For huge ranges a
	// free address is found after at most len(used)+len(reserved)+len(elsewhere)
	// steps.
	a := p.cursor
	for i := uint64(0); i < p.size; i++ {
		_, used := p.used[a]
		_, res := p.reserved[a]
		_, taken := p.elsewhere[a]
		next := a.Next()
		if a == p.last {
			next = p.first
		}
		if !used && !res && !taken {
			p.used[a] = struct{}{}
			p.cursor = next
			return a, nil
		}
		a = next
	}
	return netip.Addr{}, fmt.Errorf("ippool %v: %w (%d leased)", p.prefix, ErrExhausted, len(p.used))
}

// Claim leases a specific address, typically a user's fixed address. It may
// take a reserved address (that is what reservations are for).
func (p *Pool) Claim(a netip.Addr) error {
	if !p.leasable(a) {
		return fmt.Errorf("ippool: cannot claim %v: %w %v (network, gateway and broadcast addresses are excluded)", a, ErrOutside, p.prefix)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.used[a]; ok {
		return fmt.Errorf("ippool: cannot claim %v: %w", a, ErrInUse)
	}
	if len(p.used) >= MaxLeases {
		return fmt.Errorf("ippool %v: cannot claim %v: %w (%d leases, the maximum)", p.prefix, a, ErrExhausted, MaxLeases)
	}
	p.used[a] = struct{}{}
	return nil
}

// Release returns a to the pool. Releasing an address that is not leased
// does nothing, so a double release cannot corrupt the pool.
func (p *Pool) Release(a netip.Addr) {
	p.mu.Lock()
	delete(p.used, a)
	p.mu.Unlock()
}
