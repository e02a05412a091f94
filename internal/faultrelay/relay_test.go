package faultrelay

import (
	"encoding/binary"
	"errors"
	"math"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The tests run a relay on loopback between a "client" socket and a "gateway" sink, with datagrams that
// carry a sequence number and their send time, and check what the sink saw against the relay's counters.

var loopback = netip.MustParseAddrPort("127.0.0.1:0")

// arrival is one datagram the sink (or the client) received.
type arrival struct {
	seq  uint64
	sent time.Duration // since the test's epoch, from the payload
	at   time.Duration // since the test's epoch
	size int
}

// endpoint is a UDP socket that records what it receives.
type endpoint struct {
	t     *testing.T
	conn  *net.UDPConn
	epoch time.Time
	mu    sync.Mutex
	got   []arrival
	from  netip.AddrPort // the last sender
	done  chan struct{}
}

func newEndpoint(t *testing.T, epoch time.Time) *endpoint {
	t.Helper()
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(loopback))
	if err != nil {
		t.Fatal(err)
	}
	tuneSocket(c, 8<<20)
	e := &endpoint{t: t, conn: c, epoch: epoch, done: make(chan struct{})}
	go e.read()
	t.Cleanup(func() { c.Close(); <-e.done })
	return e
}

func (e *endpoint) addr() netip.AddrPort { return e.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

func (e *endpoint) read() {
	defer close(e.done)
	buf := make([]byte, maxDatagram)
	for {
		n, from, err := e.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		a := arrival{at: time.Since(e.epoch), size: n}
		if n >= 16 {
			a.seq = binary.LittleEndian.Uint64(buf)
			a.sent = time.Duration(binary.LittleEndian.Uint64(buf[8:]))
		}
		e.mu.Lock()
		e.got = append(e.got, a)
		e.from = from
		e.mu.Unlock()
	}
}

func (e *endpoint) arrivals() []arrival {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.got)
}

func (e *endpoint) count() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.got)
}

func (e *endpoint) lastFrom() netip.AddrPort {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.from
}

// sendSeq sends datagrams first..first+n-1 of size bytes to dst, paced in bursts so that no socket on the
// way overflows (the counters must match exactly).
func (e *endpoint) sendSeq(dst netip.AddrPort, first, n uint64, size int, gap time.Duration) {
	e.t.Helper()
	b := make([]byte, max(size, 16))
	for i := range n {
		binary.LittleEndian.PutUint64(b, first+i)
		binary.LittleEndian.PutUint64(b[8:], uint64(time.Since(e.epoch)))
		if _, err := e.conn.WriteToUDPAddrPort(b[:size], dst); err != nil {
			e.t.Fatal(err)
		}
		if gap > 0 {
			time.Sleep(gap)
		} else if i%64 == 63 {
			time.Sleep(200 * time.Microsecond)
		}
	}
}

type rig struct {
	t       *testing.T
	epoch   time.Time
	relay   *Relay
	client  *endpoint
	gateway *endpoint
}

func newRig(t *testing.T, cfg Config) *rig {
	t.Helper()
	g := &rig{t: t, epoch: time.Now()}
	g.gateway = newEndpoint(t, g.epoch)
	g.client = newEndpoint(t, g.epoch)
	if !cfg.Listen.IsValid() {
		cfg.Listen = loopback
	}
	cfg.Gateway = g.gateway.addr()
	if cfg.Seed == 0 {
		cfg.Seed = 1
	}
	var err error
	if g.relay, err = New(cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.relay.Close() })
	return g
}

func (g *rig) set(d Direction, f Faults) {
	g.t.Helper()
	if err := g.relay.Set(d, f); err != nil {
		g.t.Fatal(err)
	}
}

// quiet waits until every datagram the relay read in d has been forwarded or dropped and the receiver has
// read all forwarded ones, then checks the relay's books balance.
func (g *rig) quiet(d Direction, recv *endpoint, want uint64) DirStats {
	g.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := g.relay.Stats().Dir(d)
		if st.Received >= want && st.Queued == 0 && uint64(recv.count()) >= st.Forwarded && st.Balanced() == nil {
			if uint64(recv.count()) != st.Forwarded {
				g.t.Fatalf("receiver got %d datagrams, relay forwarded %d", recv.count(), st.Forwarded)
			}
			return st
		}
		if time.Now().After(deadline) {
			g.t.Fatalf("relay not quiet: want %d received; %v; receiver has %d; balance: %v", want, st, recv.count(), st.Balanced())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// within fails unless got is within k standard deviations of a binomial(n, p).
func within(t *testing.T, what string, got uint64, n int, p float64, k float64) {
	t.Helper()
	mean := float64(n) * p
	sd := math.Sqrt(float64(n) * p * (1 - p))
	if math.Abs(float64(got)-mean) > k*sd {
		t.Errorf("%s: %d, want %.0f ± %.0f (binomial n=%d p=%g)", what, got, mean, k*sd, n, p)
	}
}

func TestForwardAndFollowClient(t *testing.T) {
	g := newRig(t, Config{})
	g.client.sendSeq(g.relay.Addr(), 0, 10, 100, 0)
	g.quiet(ToGateway, g.gateway, 10)
	if got := g.gateway.lastFrom(); got != g.relay.GatewaySide() {
		t.Fatalf("gateway saw %v, want the relay's back socket %v", got, g.relay.GatewaySide())
	}
	// The gateway answers to the relay, which knows where the client is.
	if _, err := g.gateway.conn.WriteToUDPAddrPort(make([]byte, 50), g.relay.GatewaySide()); err != nil {
		t.Fatal(err)
	}
	g.quiet(ToClient, g.client, 1)
	if got := g.client.lastFrom(); got != g.relay.Addr() {
		t.Fatalf("client got the reply from %v, want %v", got, g.relay.Addr())
	}
	// The client moves to another port (a NAT rebinding, a roaming laptop): replies follow it.
	moved := newEndpoint(t, g.epoch)
	moved.sendSeq(g.relay.Addr(), 10, 1, 100, 0)
	g.quiet(ToGateway, g.gateway, 11)
	if _, err := g.gateway.conn.WriteToUDPAddrPort(make([]byte, 50), g.relay.GatewaySide()); err != nil {
		t.Fatal(err)
	}
	waitCount(t, moved, 1)
	st := g.relay.Stats()
	if st.ToGateway.ClientChanges != 1 || st.Client != moved.addr().String() {
		t.Fatalf("client changes %d, client %s; want 1, %s", st.ToGateway.ClientChanges, st.Client, moved.addr())
	}
	if err := g.relay.InjectToGateway([]byte("injected")); err != nil {
		t.Fatal(err)
	}
	waitCount(t, g.gateway, 12)
}

func waitCount(t *testing.T, e *endpoint, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for e.count() < n {
		if time.Now().After(deadline) {
			t.Fatalf("receiver has %d datagrams, want %d", e.count(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestLoss(t *testing.T) {
	const n = 4000
	g := newRig(t, Config{Seed: 42})
	g.set(ToGateway, Faults{Loss: 0.1})
	g.client.sendSeq(g.relay.Addr(), 0, n, 200, 0)
	st := g.quiet(ToGateway, g.gateway, n)
	within(t, "lost", st.Lost, n, 0.1, 5)
	if st.Forwarded != n-st.Lost {
		t.Errorf("forwarded %d, lost %d of %d", st.Forwarded, st.Lost, n)
	}
	// The other direction has no faults.
	if f := g.relay.Faults(ToClient); f != (Faults{}) {
		t.Errorf("ToClient faults %v, want none", f)
	}

	// Deterministic: the same seed and the same datagrams lose the same ones.
	lostSeqs := func(e *endpoint, n uint64) []uint64 {
		seen := make([]bool, n)
		for _, a := range e.arrivals() {
			seen[a.seq] = true
		}
		var lost []uint64
		for i, s := range seen {
			if !s {
				lost = append(lost, uint64(i))
			}
		}
		return lost
	}
	g2 := newRig(t, Config{Seed: 42, NoOffload: true}) // and the plain path decides the same
	g2.set(ToGateway, Faults{Loss: 0.1})
	g2.client.sendSeq(g2.relay.Addr(), 0, n, 200, 0)
	g2.quiet(ToGateway, g2.gateway, n)
	if a, b := lostSeqs(g.gateway, n), lostSeqs(g2.gateway, n); !slices.Equal(a, b) {
		t.Errorf("same seed, different losses: %d vs %d datagrams", len(a), len(b))
	}
}

func TestBurstLoss(t *testing.T) {
	const n, burst = 5000, 5
	g := newRig(t, Config{})
	g.set(ToGateway, Faults{BurstProb: 0.01, BurstLen: burst})
	g.client.sendSeq(g.relay.Addr(), 0, n, 200, 0)
	st := g.quiet(ToGateway, g.gateway, n)
	// Every gap in the sequence is a whole number of bursts (bursts may follow each other back to back).
	seen := make([]bool, n)
	for _, a := range g.gateway.arrivals() {
		seen[a.seq] = true
	}
	var gaps []int
	run := 0
	for i, s := range seen {
		if !s {
			run++
		}
		if (s || i == n-1) && run > 0 {
			if !(i == n-1 && !s) { // a burst cut off by the end of the test may be short
				gaps = append(gaps, run)
			}
			run = 0
		}
	}
	for _, l := range gaps {
		if l%burst != 0 {
			t.Fatalf("a loss run of %d datagrams: not a multiple of the burst length %d (runs %v)", l, burst, gaps)
		}
	}
	// Bursts start at datagrams that are not already in a burst: about n*p/(1+p*(len-1)) of them.
	p := 0.01
	starts := float64(n) * p / (1 + p*(burst-1))
	if bursts := float64(st.BurstLost) / burst; math.Abs(bursts-starts) > 5*math.Sqrt(starts) {
		t.Errorf("%v bursts, want about %.0f", bursts, starts)
	}
	if len(gaps) == 0 || st.Lost != 0 || st.Bursts*burst < st.BurstLost || st.Bursts*burst > st.BurstLost+burst {
		t.Errorf("gaps %v, independent losses %d, %d bursts, %d lost in them", gaps, st.Lost, st.Bursts, st.BurstLost)
	}

	// A burst counts datagrams, so in a sparse flow it lasts as long as they take to come, unless
	// BurstMax ends it.
	for _, max := range []time.Duration{0, 20 * time.Millisecond} {
		g := newRig(t, Config{})
		g.set(ToGateway, Faults{BurstProb: 1, BurstLen: 1000, BurstMax: max})
		g.client.sendSeq(g.relay.Addr(), 0, 2, 100, 0)
		time.Sleep(50 * time.Millisecond)
		g.client.sendSeq(g.relay.Addr(), 2, 1, 100, 0)
		st := g.quiet(ToGateway, g.gateway, 3)
		want := uint64(1) // one burst, still dropping 50 ms later
		if max > 0 {
			want = 2 // the first ended after 20 ms; the third datagram began another
		}
		if st.Bursts != want || st.BurstLost != 3 {
			t.Errorf("BurstMax %v: %d bursts, %d lost; want %d, 3", max, st.Bursts, st.BurstLost, want)
		}
	}
}

func TestReorder(t *testing.T) {
	const n = 2000
	g := newRig(t, Config{})
	g.set(ToGateway, Faults{Reorder: 0.1})
	// One datagram every 100 µs: a datagram delayed 2-5 ms is overtaken by 20-50 later ones.
	g.client.sendSeq(g.relay.Addr(), 0, n, 200, 100*time.Microsecond)
	st := g.quiet(ToGateway, g.gateway, n)
	within(t, "delayed", st.Delayed, n, 0.1, 5)
	got := g.gateway.arrivals()
	if len(got) != n || st.Forwarded != n {
		t.Fatalf("%d arrived, %d forwarded: reordering must not lose anything", len(got), st.Forwarded)
	}
	var late, overtaken int
	var highest uint64
	var lateBy []time.Duration
	for i, a := range got {
		if i > 0 && a.seq < highest {
			overtaken++
		}
		highest = max(highest, a.seq)
		if d := a.at - a.sent; d >= DefaultReorderMin {
			late++
			lateBy = append(lateBy, d)
		}
	}
	// Single datagrams may wait for a core on a loaded machine; the typical one keeps to 2-5 ms.
	slices.Sort(lateBy)
	if med := lateBy[len(lateBy)/2]; med > DefaultReorderMax+5*time.Millisecond {
		t.Errorf("late datagrams took %v (median), want 2-5 ms", med)
	}
	// Every delayed datagram arrives at least 2 ms late and after later ones; a few undelayed ones may be
	// late too on a loaded machine (scheduling), so compare loosely.
	if late < int(st.Delayed) || late > int(st.Delayed)*3/2+20 {
		t.Errorf("%d datagrams arrived >= 2 ms late, relay delayed %d", late, st.Delayed)
	}
	if overtaken < int(st.Delayed)*9/10 {
		t.Errorf("only %d datagrams arrived after a later one; %d were delayed", overtaken, st.Delayed)
	}
}

func TestDuplicate(t *testing.T) {
	const n = 4000
	g := newRig(t, Config{})
	g.set(Both, Faults{Duplicate: 0.05})
	g.client.sendSeq(g.relay.Addr(), 0, n, 200, 0)
	st := g.quiet(ToGateway, g.gateway, n)
	within(t, "duplicated", st.Duplicated, n, 0.05, 5)
	times := map[uint64]int{}
	for _, a := range g.gateway.arrivals() {
		times[a.seq]++
	}
	var twice int
	for _, c := range times {
		if c == 2 {
			twice++
		} else if c != 1 {
			t.Fatalf("a datagram arrived %d times", c)
		}
	}
	if len(times) != n || uint64(twice) != st.Duplicated || st.Forwarded != n+st.Duplicated {
		t.Errorf("%d distinct, %d twice; relay: duplicated %d, forwarded %d", len(times), twice, st.Duplicated, st.Forwarded)
	}
	// Duplicated and delayed: both copies come late.
	g.set(ToGateway, Faults{Duplicate: 1, Reorder: 1})
	g.client.sendSeq(g.relay.Addr(), n, 10, 200, 0)
	d := g.quiet(ToGateway, g.gateway, n+10).Sub(st)
	if d.Delayed != 10 || d.Duplicated != 10 || d.Forwarded != 20 {
		t.Errorf("delayed %d, duplicated %d, forwarded %d; want 10, 10, 20", d.Delayed, d.Duplicated, d.Forwarded)
	}
	for _, a := range g.gateway.arrivals() {
		if a.seq >= n && a.at-a.sent < DefaultReorderMin {
			t.Errorf("datagram %d (duplicated and delayed) arrived after %v", a.seq, a.at-a.sent)
		}
	}
}

func TestBlackout(t *testing.T) {
	g := newRig(t, Config{RecoveryBytes: 20 * 200})
	g.client.sendSeq(g.relay.Addr(), 0, 10, 200, 0)
	g.quiet(ToGateway, g.gateway, 10)

	// A timed blackout drops everything, then ends by itself.
	g.relay.Blackout(Both, 300*time.Millisecond)
	if st := g.relay.Stats().ToGateway; !st.InBlackout || st.Blackouts != 1 {
		t.Fatalf("blackout not in progress: %+v", st)
	}
	g.client.sendSeq(g.relay.Addr(), 10, 50, 200, 0)
	if _, err := g.gateway.conn.WriteToUDPAddrPort(make([]byte, 50), g.relay.GatewaySide()); err != nil {
		t.Fatal(err)
	}
	st := g.quiet(ToGateway, g.gateway, 60)
	if st.Blackholed != 50 || g.gateway.count() != 10 {
		t.Fatalf("during the blackout: blackholed %d, gateway has %d (want 50, 10)", st.Blackholed, g.gateway.count())
	}
	waitStat(t, g.relay, func(s Stats) bool { return s.ToClient.Blackholed == 1 }, "the gateway's datagram blackholed")
	time.Sleep(320 * time.Millisecond)
	if st := g.relay.Stats().ToGateway; st.InBlackout || st.BlackoutEnd.IsZero() || st.Recovered {
		t.Fatalf("after the blackout: %+v", st)
	}
	g.client.sendSeq(g.relay.Addr(), 60, 30, 200, 0)
	st = g.quiet(ToGateway, g.gateway, 90)
	if g.gateway.count() != 40 || !st.Recovered || st.Recovery < 10*time.Millisecond || st.Recovery > 5*time.Second {
		t.Fatalf("after the blackout: gateway has %d (want 40), %+v", g.gateway.count(), st)
	}
	t.Logf("recovery measured %v after the end (traffic resumed ~20 ms after it)", st.Recovery)

	// An open-ended blackout lasts until lifted.
	g.relay.Blackout(ToGateway, 0)
	g.client.sendSeq(g.relay.Addr(), 90, 10, 200, 0)
	g.quiet(ToGateway, g.gateway, 100)
	if g.gateway.count() != 40 {
		t.Fatalf("open blackout let %d through", g.gateway.count()-40)
	}
	if st := g.relay.Stats().ToGateway; !st.InBlackout || st.Recovered {
		t.Fatalf("open blackout: %+v", st)
	}
	g.relay.Lift(ToGateway)
	g.client.sendSeq(g.relay.Addr(), 100, 30, 200, 0)
	st = g.quiet(ToGateway, g.gateway, 130)
	if g.gateway.count() != 70 || st.InBlackout || !st.Recovered || st.Recovery > time.Second {
		t.Fatalf("after Lift: gateway has %d (want 70), %+v", g.gateway.count(), st)
	}
}

func waitStat(t *testing.T, r *Relay, cond func(Stats) bool, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond(r.Stats()) {
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: %+v", what, r.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestRateLimit(t *testing.T) {
	const rate, size = 1 << 20, 1000 // 1 MiB/s
	burst := int64(32 << 10)
	g := newRig(t, Config{})
	g.set(ToGateway, Faults{RateBytes: rate, RateBurst: burst})
	// Offer about 4 MiB/s for a second.
	start := time.Now()
	var sent uint64
	for time.Since(start) < time.Second {
		g.client.sendSeq(g.relay.Addr(), sent, 40, size, 0)
		sent += 40
		time.Sleep(10 * time.Millisecond)
	}
	elapsed := time.Since(start)
	st := g.quiet(ToGateway, g.gateway, sent)
	allowed := float64(rate)*elapsed.Seconds() + float64(burst)
	if got := float64(st.BytesOut); got > allowed*1.02 || got < allowed*0.85 {
		t.Errorf("forwarded %.0f bytes in %v at %d B/s (burst %d): want about %.0f", got, elapsed, rate, burst, allowed)
	}
	if st.RateLimited == 0 || st.RateLimited+st.Forwarded != sent {
		t.Errorf("rate limited %d, forwarded %d, sent %d", st.RateLimited, st.Forwarded, sent)
	}
	t.Logf("offered %.1f MiB/s, forwarded %.2f MiB/s", float64(sent*size)/elapsed.Seconds()/(1<<20), float64(st.BytesOut)/elapsed.Seconds()/(1<<20))
}

func TestMTUClamp(t *testing.T) {
	g := newRig(t, Config{})
	g.set(Both, Faults{MTU: 1000})
	// IPv4: 20 + 8 + payload. 972 bytes of payload make a 1000-byte packet: that passes, 973 does not.
	g.client.sendSeq(g.relay.Addr(), 0, 1, 972, 0)
	g.client.sendSeq(g.relay.Addr(), 1, 1, 973, 0)
	g.client.sendSeq(g.relay.Addr(), 2, 1, 5000, 0)
	st := g.quiet(ToGateway, g.gateway, 3)
	if st.Clamped != 2 || st.Forwarded != 1 || st.ICMPSent != 0 {
		t.Fatalf("clamp: %+v", st)
	}
	if err := g.relay.Set(ToGateway, Faults{MTU: 1000, MTUReply: true}); err == nil {
		t.Fatal("MTUReply accepted without Config.ICMP")
	}
	if err := (Faults{Loss: 1.5}).Validate(); err == nil {
		t.Fatal("loss 150% accepted")
	}
}

func TestConcurrentChanges(t *testing.T) {
	g := newRig(t, Config{})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		fs := []Faults{{Loss: 0.1}, {Reorder: 0.5}, {Duplicate: 0.3}, {RateBytes: 1 << 20}, {BurstProb: 0.1, BurstLen: 3}, {}}
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			_ = g.relay.Set(Direction(1+i%3), fs[i%len(fs)])
			if i%7 == 0 {
				g.relay.Blackout(Both, time.Millisecond)
			}
			_ = g.relay.Stats()
			time.Sleep(100 * time.Microsecond)
		}
	}()
	g.client.sendSeq(g.relay.Addr(), 0, 3000, 300, 0)
	close(stop)
	wg.Wait()
	g.relay.Clear()
	g.quiet(ToGateway, g.gateway, 3000)
}

// TestNoAllocations: the forwarding path allocates nothing per datagram, also with every fault on (once
// the delay queue's buffers exist).
func TestNoAllocations(t *testing.T) {
	g := newRig(t, Config{})
	g.set(ToGateway, Faults{Loss: 0.05, Duplicate: 0.05, Reorder: 0.2, ReorderMin: 10 * time.Microsecond, ReorderMax: 20 * time.Microsecond, RateBytes: 1 << 40})
	p := g.relay.paths[0]
	b := make([]byte, 1400)
	from := g.client.addr()
	for range 2000 { // warm-up: the client endpoint, the delay queue's buffers and heap
		p.handle(b, 0, from)
	}
	time.Sleep(10 * time.Millisecond)
	if a := testing.AllocsPerRun(2000, func() { p.handle(b, 0, from) }); a != 0 {
		t.Errorf("%v allocations per datagram", a)
	}
}

func TestParseControl(t *testing.T) {
	// Control messages as the kernel writes them: IP_RECVFRAGSIZE, IPV6_RECVFRAGSIZE, UDP_GRO.
	oob := make([]byte, oobSize)
	n := writeCmsg(oob, 0, unix.IPPROTO_IP, unix.IP_RECVFRAGSIZE, 1300)
	if gso, frag, _ := parseControl(oob[:n]); frag != 1300 || gso != 0 {
		t.Fatalf("IPv4 fragment size: gso %d, frag %d; want 0, 1300", gso, frag)
	}
	n = writeCmsg(oob, 0, unix.SOL_UDP, unix.UDP_GRO, 1420)
	n = writeCmsg(oob, n, unix.IPPROTO_IPV6, ipv6RecvFragSize, 1296)
	n = writeCmsg(oob, n, unix.SOL_SOCKET, unix.SO_RXQ_OVFL, 7)
	if gso, frag, ovfl := parseControl(oob[:n]); frag != 1296 || gso != 1420 || ovfl != 7 {
		t.Fatalf("GRO, IPv6 fragment size, drops: %d, %d, %d; want 1420, 1296, 7", gso, frag, ovfl)
	}
	if g, f, _ := parseControl(nil); g != 0 || f != 0 {
		t.Fatal("no control data must give 0, 0")
	}
	if g, f, _ := parseControl(oob[:5]); g != 0 || f != 0 {
		t.Fatal("truncated control data must give 0, 0")
	}
}

// BenchmarkRelay pushes 1400-byte datagrams through a relay with no faults, one way, one per send
// (plain) or 40 per GSO send (gso), and reports the share the receiver got.
func BenchmarkRelay(b *testing.B) {
	for _, mode := range []string{"plain", "gso"} {
		b.Run(mode, func(b *testing.B) {
			sink, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(loopback))
			if err != nil {
				b.Fatal(err)
			}
			defer sink.Close()
			tuneSocket(sink, 8<<20)
			enableGRO(sink)
			r, err := New(Config{Listen: loopback, Gateway: sink.LocalAddr().(*net.UDPAddr).AddrPort()})
			if err != nil {
				b.Fatal(err)
			}
			defer r.Close()
			src, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(loopback))
			if err != nil {
				b.Fatal(err)
			}
			defer src.Close()
			var received int
			done := make(chan struct{})
			go func() {
				defer close(done)
				buf, oob := make([]byte, maxGRORead), make([]byte, oobSize)
				for {
					if err := sink.SetReadDeadline(time.Now().Add(200 * time.Millisecond)); err != nil {
						return
					}
					n, _, _, _, err := sink.ReadMsgUDPAddrPort(buf, oob)
					if err != nil {
						return
					}
					received += n
				}
			}()
			const seg, batch = 1400, 40
			msg := make([]byte, seg*batch)
			oob := make([]byte, unix.CmsgSpace(2))
			h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
			h.Level, h.Type = unix.SOL_UDP, unix.UDP_SEGMENT
			h.SetLen(unix.CmsgLen(2))
			binary.NativeEndian.PutUint16(oob[unix.CmsgLen(0):], seg)
			b.SetBytes(seg * batch)
			b.ResetTimer()
			for i := range b.N {
				if mode == "gso" {
					_, _, _ = src.WriteMsgUDPAddrPort(msg, oob, r.Addr())
				} else {
					for j := range batch {
						_, _ = src.WriteToUDPAddrPort(msg[:seg], r.Addr())
						if j%16 == 15 {
							time.Sleep(time.Microsecond)
						}
					}
				}
				if i%4 == 3 {
					time.Sleep(time.Microsecond)
				}
			}
			<-done
			b.ReportMetric(float64(received)/float64(b.N*seg*batch)*100, "%delivered")
		})
	}
}

// writeCmsg writes one 4-byte control message at off in b and returns the offset after it.
func writeCmsg(b []byte, off int, level, typ int32, v int32) int {
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[off]))
	h.SetLen(unix.CmsgLen(4))
	h.Level, h.Type = level, typ
	binary.NativeEndian.PutUint32(b[off+unix.CmsgLen(0):], uint32(v))
	return off + unix.CmsgSpace(4)
}
