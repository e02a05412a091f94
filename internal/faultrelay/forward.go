package faultrelay

import (
	"errors"
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// maxDatagram is the largest UDP payload the relay reads (the IPv4 maximum, 65535-28, rounded up).
const maxDatagram = 65536

// counters are one direction's tallies, written by its goroutines and read by Stats.
type counters struct {
	received, bytesIn          atomic.Uint64
	forwarded, bytesOut        atomic.Uint64
	lost, burstLost, blackhole atomic.Uint64
	bursts                     atomic.Uint64
	rateLimited, clamped       atomic.Uint64
	icmpSent                   atomic.Uint64
	duplicated, delayed        atomic.Uint64
	delayOverflow              atomic.Uint64
	noClient                   atomic.Uint64
	readErrors, writeErrors    atomic.Uint64
	socketDrops                atomic.Uint64 // SO_RXQ_OVFL of the receiving socket
	clientChanges              atomic.Uint64
}

// path is one direction through the relay.
type path struct {
	r   *Relay
	dir Direction
	in  *net.UDPConn // where this direction's datagrams arrive (front for ToGateway, back for ToClient)
	out *net.UDPConn // where they leave
	gro bool         // UDP_GRO is on for in: reads may hold many datagrams

	faults atomic.Pointer[Faults] // with defaults applied; never nil
	// blackUntil is the relay clock (mono) at which the current blackout ends: 0 = none ever,
	// math.MaxInt64 = until Lift. blackGen counts blackouts, so the end of each is measured once.
	blackUntil   atomic.Int64
	blackGen     atomic.Uint64
	recoveredAt  atomic.Int64  // when RecoveryBytes had been forwarded after blackout recoveredGen ended
	recoveredGen atomic.Uint64 // the blackout recoveredAt belongs to
	c            counters
	delay        delayQueue

	// Owned by forwardLoop.
	rng        *rand.Rand
	burstLeft  int     // datagrams still to drop in the current burst
	burstStart int64   // mono when it began
	tokens     float64 // token bucket, bytes
	lastRefill int64   // mono of the last refill
	trackGen   uint64  // the blackout whose recovery is being measured
	trackBase  uint64  // bytesOut when it ended
	lastICMP   int64   // mono of the last ICMP answer
	w          gsoWriter
}

func newPath(r *Relay, dir Direction, in, out *net.UDPConn, seed uint64) *path {
	p := &path{r: r, dir: dir, in: in, out: out, rng: rand.New(rand.NewPCG(seed, uint64(dir))), lastICMP: math.MinInt64 / 2}
	if !r.cfg.NoOffload {
		p.gro = enableGRO(in)
		p.w.init(probeGSO(out))
	}
	p.faults.Store(&Faults{})
	p.delay.init()
	return p
}

// forwardLoop reads this direction's datagrams and applies the faults, until the relay closes. With UDP
// GRO a read may return many datagrams of one sender glued together (segments of gso bytes, the last one
// possibly shorter); each is judged on its own, and the survivors leave in GSO batches again (gsoWriter),
// so the relay costs a few system calls per 64 KiB rather than two per datagram.
func (p *path) forwardLoop() {
	defer p.r.wg.Done()
	size := maxDatagram
	if p.gro {
		size = maxGRORead
	}
	buf := make([]byte, size)
	oob := make([]byte, oobSize)
	for {
		n, oobn, flags, from, err := p.in.ReadMsgUDPAddrPort(buf, oob)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// An ICMP error reported on the connected back socket (the gateway not listening yet), or a
			// transient failure: count it and go on, as a network would.
			p.c.readErrors.Add(1)
			select {
			case <-p.r.done:
				return
			default:
			}
			continue
		}
		if flags&unix.MSG_TRUNC != 0 {
			p.c.readErrors.Add(1)
			continue
		}
		gso, frag, ovfl := parseControl(oob[:oobn])
		if ovfl >= 0 {
			p.c.socketDrops.Store(uint64(ovfl))
		}
		if gso <= 0 || gso >= n {
			p.handle(buf[:n], frag, from)
		} else {
			for off := 0; off < n; off += gso {
				p.handle(buf[off:min(off+gso, n)], 0, from)
			}
		}
		p.flush()
	}
}

// handle decides the fate of one datagram b from `from`; wire is the size of its largest fragment when it
// arrived fragmented (0 otherwise).
func (p *path) handle(b []byte, wire int, from netip.AddrPort) {
	r := p.r
	var to netip.AddrPort // ToClient: the client's endpoint; ToGateway: unused (the back socket is connected)
	if p.dir == ToGateway {
		if c := r.client.Load(); c == nil || *c != from {
			v := from
			r.client.Store(&v)
			if c != nil {
				p.c.clientChanges.Add(1)
			}
		}
	} else {
		c := r.client.Load()
		if c == nil {
			p.c.received.Add(1)
			p.c.noClient.Add(1)
			return
		}
		to = *c
	}
	if r.cfg.Tap != nil {
		r.cfg.Tap(p.dir, b)
	}
	n := len(b)
	p.c.received.Add(1)
	p.c.bytesIn.Add(uint64(n))
	f := p.faults.Load()
	now := r.mono()

	if f.MTU > 0 {
		size := wire
		if size == 0 {
			size = n + udpHeader + ipHeader(from.Addr())
		}
		if size > f.MTU {
			p.c.clamped.Add(1)
			if f.MTUReply && r.icmp != nil && now-p.lastICMP >= int64(10*time.Millisecond) {
				p.lastICMP = now
				if p.answerTooBig(b, from, f.MTU) {
					p.c.icmpSent.Add(1)
				}
			}
			return
		}
	}
	gen := p.blackGen.Load()
	until := p.blackUntil.Load()
	if now < until {
		p.c.blackhole.Add(1)
		return
	}
	if f.RateBytes > 0 {
		p.tokens += float64(now-p.lastRefill) * float64(f.RateBytes) / 1e9
		p.lastRefill = now
		if p.tokens > float64(f.RateBurst) {
			p.tokens = float64(f.RateBurst)
		}
		if p.tokens < float64(n) {
			p.c.rateLimited.Add(1)
			return
		}
		p.tokens -= float64(n)
	} else {
		// Start from a full bucket whenever a rate is set.
		p.tokens, p.lastRefill = 1e18, now
	}
	// A burst in progress ends when burst loss is switched off, or when it has lasted BurstMax.
	if p.burstLeft > 0 && f.BurstProb > 0 && (f.BurstMax == 0 || now-p.burstStart <= int64(f.BurstMax)) {
		p.burstLeft--
		p.c.burstLost.Add(1)
		return
	}
	p.burstLeft = 0
	if f.BurstProb > 0 && p.rng.Float64() < f.BurstProb {
		p.burstLeft, p.burstStart = f.BurstLen-1, now
		p.c.bursts.Add(1)
		p.c.burstLost.Add(1)
		return
	}
	if f.Loss > 0 && p.rng.Float64() < f.Loss {
		p.c.lost.Add(1)
		return
	}
	copies := 1
	if f.Duplicate > 0 && p.rng.Float64() < f.Duplicate {
		copies = 2
		p.c.duplicated.Add(1)
	}
	if f.Reorder > 0 && p.rng.Float64() < f.Reorder {
		d := f.ReorderMin
		if span := f.ReorderMax - f.ReorderMin; span > 0 {
			d += time.Duration(p.rng.Int64N(int64(span) + 1))
		}
		if p.delay.push(now+int64(d), b, to, copies) {
			p.c.delayed.Add(1)
		} else {
			p.c.delayOverflow.Add(1)
		}
	} else {
		for range copies {
			p.emit(b, to)
		}
	}
	p.trackRecovery(gen, until, now)
}

// trackRecovery notes when RecoveryBytes have been forwarded since blackout gen ended (at until).
func (p *path) trackRecovery(gen uint64, until, now int64) {
	if gen == 0 || p.recoveredGen.Load() == gen {
		return
	}
	if p.trackGen != gen {
		p.trackGen, p.trackBase = gen, p.c.bytesOut.Load()
		return
	}
	if p.c.bytesOut.Load()-p.trackBase >= p.r.cfg.RecoveryBytes {
		p.recoveredAt.Store(now)
		p.recoveredGen.Store(gen)
	}
}

// send forwards one datagram b at once: to the gateway over the connected back socket, or to the client
// at `to`. It is safe to call from forwardLoop and delayLoop at the same time.
func (p *path) send(b []byte, to netip.AddrPort) {
	var err error
	if p.dir == ToGateway {
		_, err = p.out.Write(b)
	} else {
		_, err = p.out.WriteToUDPAddrPort(b, to)
	}
	if err != nil {
		p.c.writeErrors.Add(1)
		return
	}
	p.c.forwarded.Add(1)
	p.c.bytesOut.Add(uint64(len(b)))
}

const udpHeader = 8

func ipHeader(a netip.Addr) int {
	if a.Unmap().Is4() {
		return 20
	}
	return 40
}
