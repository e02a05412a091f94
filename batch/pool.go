// Package batch moves packets in vectors ("salvos"): fixed-size packet buffers from a bounded pool, and a
// UDP connection that reads and writes many datagrams per system call (recvmmsg/sendmmsg on Linux).
//
// Buffers are allocated once and recycled. The pool is bounded on purpose: an unbounded pool lets a burst
// (or a slow consumer) grow memory without limit, which is how userspace VPNs run small routers out of
// memory. When the pool is exhausted Get returns nil and the caller drops and counts the packet.
package batch

import (
	"net/netip"
	"sync"

	"github.com/salvovpn/salvo/protocol"
)

// MaxPacket is the largest IP packet (and the largest super-packet TUN GSO/GRO hands over) a buffer holds.
const MaxPacket = 65535

// BufSize is the length and capacity of every pool buffer: Headroom for the data header, a 64 KiB
// super-packet so TUN GRO/GSO can coalesce in place, and the AEAD tag behind it, rounded up to the Go
// allocator's 8 KiB page. Objects this large are allocated in whole pages anyway, so the rounding costs no
// memory and leaves slack in front of or behind a packet (for a virtio-net header, for example).
const BufSize = (protocol.Headroom + MaxPacket + protocol.TagLen + pageSize - 1) / pageSize * pageSize

// pageSize is the Go runtime's heap page; large objects are rounded up to a multiple of it.
const pageSize = 8192

// Pool is a bounded LIFO free list of BufSize buffers. Buffers are allocated lazily, one at a time, until
// max exist; after that Get returns nil until a buffer is Put back. LIFO order hands out the most recently
// used (cache-warm) buffer first. A mutex-protected slice was chosen over a buffered channel (BenchmarkPool*
// in pool_test.go, 2 cores): uncontended Get+Put ~10 ns against ~31 ns, and GetBatch/PutBatch move a whole
// vector under one lock at ~4-5 ns per buffer even with two goroutines contending. Two goroutines hammering
// single-buffer Get/Put degrade the mutex (17-390 ns, noisy) more than the channel (~31 ns), so hot paths
// should use the batch calls.
//
// A Pool is safe for concurrent use. The zero value is not usable; use NewPool.
type Pool struct {
	mu        sync.Mutex
	free      [][]byte
	allocated int
	max       int
	misses    uint64 // Gets answered with nil because the bound was reached
}

// NewPool returns a pool that never holds more than max buffers (max*BufSize bytes) in total.
func NewPool(max int) *Pool {
	if max < 1 {
		max = 1
	}
	// The free list can never be longer than max; reserve it up front (bounded) so Put never allocates.
	return &Pool{free: make([][]byte, 0, max), max: max}
}

// Get returns a buffer of length and capacity BufSize, or nil when max buffers are already outstanding.
// The contents are whatever the previous user left.
func (p *Pool) Get() []byte {
	p.mu.Lock()
	if n := len(p.free); n > 0 {
		b := p.free[n-1]
		p.free[n-1] = nil
		p.free = p.free[:n-1]
		p.mu.Unlock()
		return b
	}
	if p.allocated >= p.max {
		p.misses++
		p.mu.Unlock()
		return nil
	}
	p.allocated++
	p.mu.Unlock()
	// Allocate outside the lock: a 72 KiB zeroed allocation takes microseconds.
	return make([]byte, BufSize)
}

// GetBatch fills dst with buffers under one lock acquisition and returns how many it filled (all of dst
// unless the bound was reached; the unfilled tail is set to nil).
func (p *Pool) GetBatch(dst [][]byte) int {
	p.mu.Lock()
	n := 0
	for n < len(dst) && len(p.free) > 0 {
		k := len(p.free) - 1
		dst[n] = p.free[k]
		p.free[k] = nil
		p.free = p.free[:k]
		n++
	}
	fresh := min(len(dst)-n, p.max-p.allocated)
	p.allocated += fresh
	if n+fresh < len(dst) {
		p.misses++
	}
	p.mu.Unlock()
	for i := 0; i < fresh; i++ {
		dst[n] = make([]byte, BufSize)
		n++
	}
	clear(dst[n:])
	return n
}

// Put returns a buffer obtained from Get. Putting a buffer that did not come from a Pool (wrong capacity),
// or more buffers than were handed out, is a programming error and panics: silently accepting it would
// break the memory bound.
func (p *Pool) Put(b []byte) {
	if cap(b) != BufSize {
		panic("batch: Put of a buffer that is not from a Pool")
	}
	b = b[:BufSize]
	p.mu.Lock()
	if len(p.free) >= p.allocated {
		p.mu.Unlock()
		panic("batch: Put of more buffers than were handed out")
	}
	p.free = append(p.free, b)
	p.mu.Unlock()
}

// PutBatch returns every non-nil buffer in bufs under one lock acquisition and sets the slots to nil.
func (p *Pool) PutBatch(bufs [][]byte) {
	for _, b := range bufs {
		if b != nil && cap(b) != BufSize {
			panic("batch: Put of a buffer that is not from a Pool")
		}
	}
	p.mu.Lock()
	for i, b := range bufs {
		if b == nil {
			continue
		}
		if len(p.free) >= p.allocated {
			p.mu.Unlock()
			panic("batch: Put of more buffers than were handed out")
		}
		p.free = append(p.free, b[:BufSize])
		bufs[i] = nil
	}
	p.mu.Unlock()
}

// Allocated is the number of buffers the pool has allocated so far (never more than its bound).
func (p *Pool) Allocated() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.allocated
}

// Outstanding is the number of buffers currently handed out and not yet returned.
func (p *Pool) Outstanding() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.allocated - len(p.free)
}

// Misses is the number of Get/GetBatch calls that could not be fully served because the bound was reached.
func (p *Pool) Misses() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.misses
}

// Max is the pool's bound.
func (p *Pool) Max() int { return p.max }

// Vector is a salvo of packets: packet i is Bufs[i][:Sizes[i]], to or from Addrs[i], for i < N. Bufs hold
// whole buffers (length BufSize) so one Vector can be reused for reads of any size without reslicing.
type Vector struct {
	Bufs  [][]byte
	Sizes []int
	Addrs []netip.AddrPort
	N     int
}

// NewVector returns a Vector with room for n packets. With a pool its buffers come from p (slots stay nil if
// the pool is exhausted; see Fill); with p == nil it allocates n private buffers of BufSize.
func NewVector(n int, p *Pool) *Vector {
	v := &Vector{
		Bufs:  make([][]byte, n),
		Sizes: make([]int, n),
		Addrs: make([]netip.AddrPort, n),
	}
	if p == nil {
		for i := range v.Bufs {
			v.Bufs[i] = make([]byte, BufSize)
		}
		return v
	}
	p.GetBatch(v.Bufs)
	return v
}

// Fill takes buffers from p for every nil slot and reports whether every slot now holds a buffer.
func (v *Vector) Fill(p *Pool) bool {
	full := true
	for i, b := range v.Bufs {
		if b == nil {
			if v.Bufs[i] = p.Get(); v.Bufs[i] == nil {
				full = false
			}
		}
	}
	return full
}

// Release returns every buffer to p, leaves the slots nil and resets N.
func (v *Vector) Release(p *Pool) {
	p.PutBatch(v.Bufs)
	v.N = 0
}

// Packet returns packet i (Bufs[i][:Sizes[i]]).
func (v *Vector) Packet(i int) []byte { return v.Bufs[i][:v.Sizes[i]] }
