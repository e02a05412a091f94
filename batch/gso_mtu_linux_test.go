package batch

import (
	"bytes"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/salvovpn/salvo/internal/netns"
)

// vpnSegment is the UDP payload the VPN sends for a 1420-byte inner MTU: 1420 + 32 bytes of data header
// and tag. Over IPv4 that is a 1480-byte packet, over IPv6 1500.
const vpnSegment = 1452

// narrowPath is a sender namespace with two paths: to a receiver behind a veth of the given MTU ("narrow")
// and to one behind a 9000-byte veth ("wide"), over IPv4 and IPv6.
type narrowPath struct {
	snd, narrow, wide *netns.NS
}

func newNarrowPath(t *testing.T, mtu int) *narrowPath {
	t.Helper()
	p := &narrowPath{
		snd:    netns.ForTest(t, "salvo-bt-"),
		narrow: netns.ForTest(t, "salvo-bt-"),
		wide:   netns.ForTest(t, "salvo-bt-"),
	}
	steps := []func() error{
		func() error { return netns.Veth(p.snd, "vn", p.narrow, "vn") },
		func() error { return netns.Veth(p.snd, "vw", p.wide, "vw") },
		func() error { return p.snd.AddAddr("vn", "10.91.1.1/24") },
		func() error { return p.narrow.AddAddr("vn", "10.91.1.2/24") },
		func() error { return p.snd.AddAddr("vw", "10.91.2.1/24") },
		func() error { return p.wide.AddAddr("vw", "10.91.2.2/24") },
		func() error { return p.snd.AddAddr("vn", "fd91:1::1/64") },
		func() error { return p.narrow.AddAddr("vn", "fd91:1::2/64") },
		func() error { return p.snd.AddAddr("vw", "fd91:2::1/64") },
		func() error { return p.wide.AddAddr("vw", "fd91:2::2/64") },
	}
	for _, ns := range []struct {
		ns  *netns.NS
		dev string
		mtu int
	}{{p.snd, "vn", mtu}, {p.narrow, "vn", mtu}, {p.snd, "vw", 9000}, {p.wide, "vw", 9000}} {
		steps = append(steps, func() error {
			_, err := ns.ns.Run("ip", "link", "set", ns.dev, "mtu", fmt.Sprint(ns.mtu))
			return err
		})
	}
	for _, step := range steps {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	// Resolve the neighbours first: datagrams queued behind ARP/ND resolution can overflow its small queue.
	for _, dst := range []string{"10.91.1.2", "10.91.2.2", "fd91:1::2", "fd91:2::2"} {
		if err := p.snd.Ping(netip.MustParseAddr(dst), 3*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// listenIn opens a Conn inside ns; the socket stays in that namespace for its whole life.
func listenIn(t *testing.T, ns *netns.NS, network, address string, opt Options) *Conn {
	t.Helper()
	var c *Conn
	if err := ns.Do(func() error {
		var err error
		c, err = Listen(network, address, opt)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestGSONarrowPath is the regression test for bulk traffic black-holed by a narrower outer path: the
// kernel refuses (EMSGSIZE) a UDP GSO send whose segments exceed the path MTU, while it fragments the same
// datagrams sent one by one. The sender must get no error, every datagram must arrive (reassembled), the
// refusal must be remembered for that destination only (one refused send, not one per WriteBatch), and a
// destination behind a 9000-byte path must still get real GSO: one coalesced message at its GRO receiver.
func TestGSONarrowPath(t *testing.T) {
	for _, mtu := range []int{1280, 1400, 1492} {
		t.Run(fmt.Sprint(mtu), func(t *testing.T) {
			p := newNarrowPath(t, mtu)
			for _, fam := range []struct {
				network, any, narrow, wide string
				hdr                        int // IP + UDP header bytes
			}{
				{"udp4", "0.0.0.0:0", "10.91.1.2", "10.91.2.2", 28},
				{"udp6", "[::]:0", "fd91:1::2", "fd91:2::2", 48},
			} {
				t.Run(fam.network, func(t *testing.T) {
					testNarrowPath(t, p, mtu, fam.network, fam.any, fam.narrow, fam.wide, fam.hdr)
				})
			}
		})
	}
}

func testNarrowPath(t *testing.T, p *narrowPath, mtu int, network, any, narrowIP, wideIP string, hdr int) {
	cli := listenIn(t, p.snd, network, any, Options{})
	if !cli.GSO() {
		t.Skip("kernel without UDP GSO")
	}
	narrow := listenIn(t, p.narrow, network, "["+narrowIP+"]:0", Options{EnableGRO: true})
	wide := listenIn(t, p.wide, network, "["+wideIP+"]:0", Options{EnableGRO: true})
	narrowDst := netip.AddrPortFrom(netip.MustParseAddr(narrowIP), narrow.LocalAddr().Port())
	wideDst := netip.AddrPortFrom(netip.MustParseAddr(wideIP), wide.LocalAddr().Port())
	refused := vpnSegment+hdr > mtu

	const k = 40 // 40*1452 bytes: one GSO message
	next := 0
	send := func(dst netip.AddrPort) [][]byte {
		t.Helper()
		run := groRun(&next, k, vpnSegment, 0)
		dsts := make([]netip.AddrPort, k)
		for i := range dsts {
			dsts[i] = dst
		}
		if n, err := cli.WriteBatch(run, dsts); n != k || err != nil {
			t.Fatalf("WriteBatch of %d x %d bytes to %v (MTU %d) = %d, %v; want %d, nil", k, vpnSegment, dst, mtu, n, err, k)
		}
		return run
	}
	expect := func(srv *Conn, want [][]byte) {
		t.Helper()
		got, from := readVec(t, srv, 128, len(want))
		for i := range got {
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("datagram %d: %d bytes, want %d (or content differs)", i, len(got[i]), len(want[i]))
			}
			if from[i].Port() != cli.LocalAddr().Port() {
				t.Fatalf("datagram %d from %v", i, from[i])
			}
		}
	}
	wantRefused := uint64(0)
	if refused {
		wantRefused = 1
	}
	for range 3 {
		expect(narrow, send(narrowDst))
		// Only the first WriteBatch may hit the refusal; later ones know the limit.
		if s := cli.Stats(); s.GSORefused != wantRefused {
			t.Fatalf("Stats().GSORefused = %d, want %d (path MTU %d, %d-byte packets)", s.GSORefused, wantRefused, mtu, vpnSegment+hdr)
		}
	}
	if !cli.GSO() {
		t.Fatal("GSO switched off for the whole socket")
	}
	if refused {
		// The limited destination's steady state allocates nothing either.
		run := groRun(&next, k, vpnSegment, 0)
		dsts := make([]netip.AddrPort, k)
		for i := range dsts {
			dsts[i] = narrowDst
		}
		bufs, sizes, addrs := make([][]byte, 128), make([]int, 128), make([]netip.AddrPort, 128)
		for i := range bufs {
			bufs[i] = make([]byte, MaxPacket)
		}
		if a := testing.AllocsPerRun(20, func() {
			if n, err := cli.WriteBatch(run, dsts); n != k || err != nil {
				t.Fatalf("WriteBatch = %d, %v", n, err)
			}
			for got := 0; got < k; {
				n, err := narrow.ReadBatch(bufs, sizes, addrs)
				if err != nil {
					t.Fatal(err)
				}
				got += n
			}
		}); a != 0 {
			t.Errorf("%v allocations per WriteBatch to a limited destination, want 0", a)
		}
	}

	// The wide destination, right after the narrow one was limited: still one GSO message.
	want := send(wideDst)
	expect(wide, want)
	if m := lastGROMessages(wide); len(m) != 1 || len(m[0].b) != k*vpnSegment || m[0].seg != vpnSegment {
		t.Fatalf("wide receiver's last receive: %+v; want one message of %d x %d bytes", m, k, vpnSegment)
	}
}

// TestGSOLimits checks the per-destination memory of GSO refusals on its own: the limit applies to that
// address only (any port, IPv4 mapped or not), to that segment size and larger, keeps the smallest size
// refused, expires after gsoLimitTTL, and a full set replaces the entry closest to expiry while the others
// stay.
func TestGSOLimits(t *testing.T) {
	c := &Conn{epoch: time.Now()}
	l := &c.limits
	a := netip.MustParseAddr("192.0.2.1")
	aPort := netip.AddrPortFrom(a, 4242)
	aMapped := netip.AddrPortFrom(netip.AddrFrom16(a.As16()), 1)
	b := netip.AddrPortFrom(netip.MustParseAddr("192.0.2.2"), 4242)
	if !c.gsoAllowed(aPort, 1452) {
		t.Fatal("limited before any refusal")
	}
	l.record(a, 1452, time.Since(c.epoch))
	for _, tc := range []struct {
		dst  netip.AddrPort
		seg  int
		want bool
	}{
		{aPort, 1452, false}, {aPort, 9000, false}, {aMapped, 1452, false}, {aPort, 1451, true}, {b, 1452, true},
	} {
		if got := c.gsoAllowed(tc.dst, tc.seg); got != tc.want {
			t.Errorf("gsoAllowed(%v, %d) = %v, want %v", tc.dst, tc.seg, got, tc.want)
		}
	}
	l.record(a, 1300, time.Since(c.epoch))
	l.record(a, 1400, time.Since(c.epoch)) // a larger refusal must not lift the smaller limit
	if c.gsoAllowed(aPort, 1350) || !c.gsoAllowed(aPort, 1299) || l.used != 1 {
		t.Fatalf("after refusals of 1452, 1300, 1400: 1350 allowed %v, 1299 allowed %v, %d entries",
			c.gsoAllowed(aPort, 1350), c.gsoAllowed(aPort, 1299), l.used)
	}
	// Expiry: seen from an epoch gsoLimitTTL earlier, the entry has lived its time and is freed.
	if !l.allows(a, 1452, c.epoch.Add(-gsoLimitTTL)) || l.used != 0 {
		t.Fatalf("entry not expired after gsoLimitTTL (%d entries)", l.used)
	}

	// Fill one set beyond its ways: gsoLimitWays+1 addresses with the same index.
	var same []netip.Addr
	want := l.index(a)
	for i := 0; len(same) < gsoLimitWays+1; i++ {
		x := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		if l.index(x) == want {
			same = append(same, x)
		}
	}
	for i, x := range same {
		l.record(x, 1000, time.Duration(i+1)*time.Second) // same[0] expires first
	}
	if !l.allows(same[0], 1000, c.epoch) {
		t.Error("the entry closest to expiry was not the one replaced")
	}
	for _, x := range same[1:] {
		if l.allows(x, 1000, c.epoch) {
			t.Errorf("%v forgotten although younger entries exist", x)
		}
	}
	if l.used != gsoLimitWays {
		t.Errorf("%d entries used, want %d", l.used, gsoLimitWays)
	}
	// Spread: addresses of one /24 do not crowd into a few sets.
	sets := map[int]bool{}
	for i := range 256 {
		sets[l.index(netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}))] = true
	}
	if len(sets) < gsoLimitSets*3/4 {
		t.Errorf("256 addresses of a /24 fall into %d of %d sets", len(sets), gsoLimitSets)
	}
}
