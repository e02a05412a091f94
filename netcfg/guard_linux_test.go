package netcfg

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"github.com/salvovpn/salvo/internal/netns"
)

// testMark is the fwmark of the guard tests (and of the "guard" helper).
const testMark = 0x5a17

// guardLAN is lanTun with a peer that counts, per kind, what arrives from
// the client on its eth0 (see peerCount; RS and MLD only from fd50::2), and holds two more addresses,
// 10.50.0.200 and fd50::1:1, that the AllowLAN of the tests leaves out.
func guardLAN(t *testing.T) (c, peer *netns.NS, tun *os.File) {
	t.Helper()
	c, peer, tun = lanTun(t)
	must(t, peer.AddAddr("eth0", "10.50.0.200/24"))
	must(t, peer.AddAddr("eth0", "fd50::1:1/64"))
	script := "add table inet salvo_t_count; " +
		"add chain inet salvo_t_count pre { type filter hook prerouting priority -300; }; "
	for _, r := range []struct{ name, match string }{
		{"dhcp", "udp sport { 68, 546 }"},
		{"udp", "meta l4proto udp"},
		{"tcp", "meta l4proto tcp"},
		{"icmp", "icmp type echo-request"},
		{"icmp", "icmpv6 type echo-request"},
		// The kernel's own RS and MLD reports come from link-local
		// addresses; only the tests' come from fd50::2.
		{"rs", "ip6 saddr fd50::2 icmpv6 type nd-router-solicit"},
		{"ns", "icmpv6 type nd-neighbor-solicit"},
		{"na", "icmpv6 type nd-neighbor-advert"},
		{"mld", "ip6 saddr fd50::2 icmpv6 type mld2-listener-report"},
	} {
		// Counter names get a prefix: "udp" and the like are nft keywords.
		if !strings.Contains(script, "counter inet salvo_t_count n_"+r.name+";") {
			script += "add counter inet salvo_t_count n_" + r.name + "; "
		}
		script += fmt.Sprintf("add rule inet salvo_t_count pre iifname \"eth0\" %s counter name \"n_%s\" return; ", r.match, r.name)
	}
	run(t, peer, "nft", script)
	return c, peer, tun
}

var packetsRe = regexp.MustCompile(`packets (\d+)`)

// peerCount reads one of guardLAN's counters in peer.
func peerCount(t *testing.T, peer *netns.NS, name string) uint64 {
	t.Helper()
	out := run(t, peer, "nft", "list", "counter", "inet", "salvo_t_count", "n_"+name)
	m := packetsRe.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no packet count in %q", out)
	}
	n, err := strconv.ParseUint(m[1], 10, 64)
	must(t, err)
	return n
}

// peerCounts reads all of guardLAN's counters.
func peerCounts(t *testing.T, peer *netns.NS) map[string]uint64 {
	t.Helper()
	m := map[string]uint64{}
	for _, n := range []string{"dhcp", "udp", "tcp", "icmp", "rs", "ns", "na", "mld"} {
		m[n] = peerCount(t, peer, n)
	}
	return m
}

func applyGuardIn(t *testing.T, ns *netns.NS, g LeakGuard) (undo func() error) {
	t.Helper()
	must(t, ns.Do(func() error {
		var err error
		undo, err = ApplyLeakGuard(g)
		return err
	}))
	t.Cleanup(func() { _ = undo() })
	return undo
}

// sendUDP sends one datagram from inside ns to raddr, from laddr if set and
// with SO_MARK mark if non-zero, and returns the error of the send.
func sendUDP(ns *netns.NS, mark uint32, laddr, raddr string) error {
	return ns.Do(func() error {
		d := net.Dialer{}
		if mark != 0 {
			d.Control = MarkControl(mark)
		}
		if laddr != "" {
			a, err := net.ResolveUDPAddr("udp", laddr)
			if err != nil {
				return err
			}
			d.LocalAddr = a
		}
		c, err := d.Dial("udp", raddr)
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("leak?"))
		return err
	})
}

// dialTCP connects from inside ns to raddr with a short timeout.
func dialTCP(ns *netns.NS, raddr string) error {
	return ns.Do(func() error {
		c, err := net.DialTimeout("tcp", raddr, 2*time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})
}

// sendICMP sends one ICMP or ICMPv6 message of type typ (24 bytes, the
// kernel fills the ICMPv6 checksum) from a raw socket inside ns to dst.
func sendICMP(ns *netns.NS, dst netip.Addr, typ icmp.Type) error {
	return ns.Do(func() error {
		network, laddr := "ip4:icmp", "0.0.0.0"
		if dst.Is6() {
			network, laddr = "ip6:ipv6-icmp", "::"
		}
		c, err := icmp.ListenPacket(network, laddr)
		if err != nil {
			return err
		}
		defer c.Close()
		msg := icmp.Message{Type: typ, Body: &icmp.RawBody{Data: make([]byte, 20)}}
		if typ == ipv4.ICMPTypeEcho || typ == ipv6.ICMPTypeEchoRequest {
			msg.Body = &icmp.Echo{ID: 1, Seq: 1, Data: make([]byte, 16)}
		}
		b, err := msg.Marshal(nil)
		if err != nil {
			return err
		}
		_, err = c.WriteTo(b, &net.IPAddr{IP: dst.AsSlice()})
		return err
	})
}

// readTunTo reads packets from the TUN until one is addressed to dst.
func readTunTo(t *testing.T, tun *os.File, dst netip.Addr) {
	t.Helper()
	must(t, tun.SetReadDeadline(time.Now().Add(3*time.Second)))
	buf := make([]byte, 2048)
	for {
		n, err := tun.Read(buf)
		if err != nil {
			t.Fatalf("no packet to %s came out of the tunnel: %v", dst, err)
		}
		var got netip.Addr
		switch {
		case n >= 20 && buf[0]>>4 == 4:
			got = netip.AddrFrom4([4]byte(buf[16:20]))
		case n >= 40 && buf[0]>>4 == 6:
			got = netip.AddrFrom16([16]byte(buf[24:40]))
		}
		if got == dst {
			return
		}
	}
}

func wantEPERM(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, syscall.EPERM) {
		t.Errorf("%s: err = %v, want EPERM from the guard", what, err)
	}
}

func guardDrops(t *testing.T, ns *netns.NS, dev string) uint64 {
	t.Helper()
	var n uint64
	must(t, ns.Do(func() error {
		var err error
		n, err = LeakGuardDrops(dev)
		return err
	}))
	return n
}

// guardState reads the guard table's state in ns straight from the kernel.
func guardState(t *testing.T, ns *netns.NS, dev string) nftTableState {
	t.Helper()
	var st nftTableState
	must(t, ns.Do(func() error {
		c, err := netfilterHere()
		if err != nil {
			return err
		}
		defer c.Close()
		st, err = queryTable(c, byte(nftables.TableFamilyINet), guardTableName(dev))
		return err
	}))
	return st
}

// TestLeakGuardBlocks proves that with the guard up nothing leaves outside
// the tunnel: UDP and ICMP echo over IPv4 and IPv6, to the LAN and to the
// internet (default route via the LAN), fail at once with EPERM, TCP
// connects are refused at once (reset by the guard, not by the peer: the
// peer sees no SYN), and the peer's counters do not move; before the guard
// the same traffic arrived, so the silence is the guard's doing. The drop
// counter counts each refused packet, and the table is listed as described.
func TestLeakGuardBlocks(t *testing.T) {
	c, peer, _ := guardLAN(t)
	for _, dst := range []string{"10.50.0.1:9", "[fd50::1]:9"} {
		must(t, sendUDP(c, 0, "", dst))
	}
	if err := dialTCP(c, "10.50.0.1:80"); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("TCP before the guard: %v, want refused by the peer", err)
	}
	must(t, sendICMP(c, netip.MustParseAddr("10.50.0.1"), ipv4.ICMPTypeEcho))
	if got := peerCounts(t, peer); got["udp"] != 2 || got["tcp"] == 0 || got["icmp"] != 1 {
		t.Fatalf("before the guard the peer counted %v, want udp 2, tcp > 0, icmp 1", got)
	}

	applyGuardIn(t, c, LeakGuard{Dev: "stun0", FwMark: testMark})
	out := run(t, c, "nft", "list", "table", "inet", "salvo_guard_stun0")
	for _, want := range []string{
		"type filter hook output priority 2147483647; policy accept;",
		`oifname "lo" accept`, `oifname "stun0" accept`, "meta mark 0x00005a17 accept",
		"udp sport 68 udp dport 67 accept", "udp sport 546 udp dport 547 accept",
		"icmpv6 type nd-router-solicit accept", "icmpv6 type nd-neighbor-solicit accept",
		"icmpv6 type nd-neighbor-advert accept", "icmpv6 type mld2-listener-report accept",
		"meta l4proto tcp counter packets 0 bytes 0 reject with tcp reset", "counter packets 0 bytes 0 drop",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("guard table lacks %q:\n%s", want, out)
		}
	}
	before := peerCounts(t, peer)
	attempts := uint64(0)
	for _, dst := range []string{"10.50.0.1", "fd50::1", "192.0.2.1", "2001:db8::1"} {
		a := netip.MustParseAddr(dst)
		hostPort := func(port int) string { return netip.AddrPortFrom(a, uint16(port)).String() }
		wantEPERM(t, "UDP to "+dst, sendUDP(c, 0, "", hostPort(9)))
		start := time.Now()
		if err := dialTCP(c, hostPort(80)); !errors.Is(err, syscall.ECONNREFUSED) || time.Since(start) > time.Second {
			t.Errorf("TCP to %s: %v after %v, want refused at once", dst, err, time.Since(start))
		}
		echo := icmp.Type(ipv4.ICMPTypeEcho)
		if a.Is6() {
			echo = ipv6.ICMPTypeEchoRequest
		}
		wantEPERM(t, "ICMP echo to "+dst, sendICMP(c, a, echo))
		attempts += 3
	}
	after := peerCounts(t, peer)
	for _, k := range []string{"udp", "tcp", "icmp", "dhcp"} { // the kernel's NDP and MLD may pass
		if after[k] != before[k] {
			t.Errorf("%s leaked to the peer: counters %v, before %v", k, after, before)
		}
	}
	if n := guardDrops(t, c, "stun0"); n < attempts {
		t.Errorf("LeakGuardDrops = %d, want at least the %d packets refused", n, attempts)
	}
}

// TestLeakGuardAllows proves what the guard lets through, each against a
// destination it would otherwise block: UDP with the fwmark (IPv4, IPv6,
// after the neighbor caches were flushed so the kernel's own neighbor
// solicitations had to pass too), traffic into the tunnel device (read back
// from the TUN), AllowLAN prefixes but not the rest of the LAN, DHCP and
// DHCPv6 client traffic but nothing else from port 68, router and neighbor
// solicitations, neighbor advertisements and MLD reports but not an echo
// request, and the kernel's neighbor advertisements in answer to the peer.
func TestLeakGuardAllows(t *testing.T) {
	c, peer, tun := guardLAN(t)
	applyGuardIn(t, c, LeakGuard{Dev: "stun0", FwMark: testMark, AllowLAN: []netip.Prefix{
		netip.MustParsePrefix("10.50.0.0/25"), netip.MustParsePrefix("fd50::/112"),
	}})
	run(t, c, "ip", "neigh", "flush", "all")
	base := peerCounts(t, peer)
	delta := func(name string) uint64 { return peerCount(t, peer, name) - base[name] }
	// Datagrams may wait in the kernel for neighbor resolution (the caches
	// were flushed), so counts are given a moment to arrive.
	settle := func(name string, want uint64) uint64 {
		eventually(func() bool { return delta(name) >= want })
		return delta(name)
	}

	must(t, sendUDP(c, testMark, "", "10.50.0.200:9"))
	must(t, sendUDP(c, testMark, "", "[fd50::1:1]:9"))
	must(t, sendUDP(c, 0, "", "10.8.0.1:9"))
	readTunTo(t, tun, netip.MustParseAddr("10.8.0.1"))
	must(t, sendUDP(c, 0, "", "[fd08::1]:9"))
	readTunTo(t, tun, netip.MustParseAddr("fd08::1"))
	must(t, sendUDP(c, 0, "", "10.50.0.1:9"))
	must(t, sendUDP(c, 0, "", "[fd50::1]:9"))
	wantEPERM(t, "UDP to 10.50.0.200 (outside AllowLAN)", sendUDP(c, 0, "", "10.50.0.200:9"))
	wantEPERM(t, "UDP to fd50::1:1 (outside AllowLAN)", sendUDP(c, 0, "", "[fd50::1:1]:9"))
	if got := settle("udp", 4); got != 4 {
		t.Errorf("peer got %d UDP datagrams, want 4 (2 marked, 2 to AllowLAN)", got)
	}
	if got := delta("ns"); got == 0 {
		t.Error("the kernel's neighbor solicitations did not reach the peer")
	}

	// DNS to the LAN stays refused even inside AllowLAN (no LANDNS).
	wantEPERM(t, "DNS to 10.50.0.1 (inside AllowLAN)", sendUDP(c, 0, "", "10.50.0.1:53"))
	wantEPERM(t, "DNS over TLS to fd50::1 (inside AllowLAN)", sendUDP(c, 0, "", "[fd50::1]:853"))
	if err := dialTCP(c, "10.50.0.1:53"); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("TCP DNS to 10.50.0.1: %v, want connection refused", err)
	}
	if got := delta("tcp"); got != 0 {
		t.Errorf("%d TCP packets to port 53 reached the peer", got)
	}

	must(t, sendUDP(c, 0, "10.50.0.2:68", "10.50.0.200:67"))
	must(t, sendUDP(c, 0, "[fd50::2]:546", "[fd50::1:1]:547"))
	wantEPERM(t, "UDP from port 68 to port 53", sendUDP(c, 0, "10.50.0.2:68", "10.50.0.200:53"))
	if got := settle("dhcp", 2); got != 2 {
		t.Errorf("peer got %d DHCP messages, want 2", got)
	}

	ns0 := delta("ns")
	for _, typ := range []icmp.Type{ipv6.ICMPTypeRouterSolicitation, ipv6.ICMPTypeNeighborSolicitation,
		ipv6.ICMPTypeNeighborAdvertisement, ipv6.ICMPTypeVersion2MulticastListenerReport} {
		must(t, sendICMP(c, netip.MustParseAddr("fd50::1:1"), typ))
	}
	wantEPERM(t, "ICMPv6 echo request", sendICMP(c, netip.MustParseAddr("fd50::1:1"), ipv6.ICMPTypeEchoRequest))
	if rs, ns, na, mld := settle("rs", 1), settle("ns", ns0+1)-ns0, settle("na", 1), settle("mld", 1); rs != 1 || ns < 1 || na < 1 || mld != 1 {
		t.Errorf("peer got RS %d, NS %d, NA %d, MLD %d; want 1, >= 1, >= 1, 1", rs, ns, na, mld)
	}
	if delta("icmp") != 0 {
		t.Error("an echo request reached the peer")
	}

	// The peer, its neighbor cache flushed, must learn the client's
	// link-layer address from the client's neighbor advertisement.
	var pc net.PacketConn
	must(t, c.Do(func() error {
		var err error
		pc, err = net.ListenPacket("udp", "[fd50::2]:7000")
		return err
	}))
	defer pc.Close()
	run(t, peer, "ip", "neigh", "flush", "all")
	must(t, sendUDP(peer, 0, "", "[fd50::2]:7000"))
	must(t, pc.SetReadDeadline(time.Now().Add(3*time.Second)))
	if _, _, err := pc.ReadFrom(make([]byte, 64)); err != nil {
		t.Errorf("peer could not reach the client over IPv6 (neighbor advertisement blocked?): %v", err)
	}

	// With LANDNS, DNS to AllowLAN goes through; elsewhere it stays refused.
	udp0 := delta("udp")
	applyGuardIn(t, c, LeakGuard{Dev: "stun0", FwMark: testMark, LANDNS: true, AllowLAN: []netip.Prefix{
		netip.MustParsePrefix("10.50.0.0/25"), netip.MustParsePrefix("fd50::/112"),
	}})
	must(t, sendUDP(c, 0, "", "10.50.0.1:53"))
	must(t, sendUDP(c, 0, "", "[fd50::1]:853"))
	wantEPERM(t, "DNS to 10.50.0.200 (outside AllowLAN)", sendUDP(c, 0, "", "10.50.0.200:53"))
	if got := settle("udp", udp0+2) - udp0; got != 2 {
		t.Errorf("with LANDNS the peer got %d DNS datagrams, want 2", got)
	}
}

// TestLeakGuardPersistSurvivesKill proves the kill switch: a client (a
// child process) that installed a persistent guard owns it while it runs,
// so RemoveLeakGuard refuses, saying a client is running; once the child is
// killed with SIGKILL the table stays, no longer owned, and still blocks;
// RemoveLeakGuard then lifts it (traffic flows again), and a second
// RemoveLeakGuard finds nothing and is fine.
func TestLeakGuardPersistSurvivesKill(t *testing.T) {
	c, peer, _ := guardLAN(t)
	h := startHelper(t, c, "guard", "stun0:persist")
	if st := guardState(t, c, "stun0"); !st.owned || st.flags&nftTableFlagPersist == 0 {
		t.Fatalf("guard of the running helper: %+v, want owned and persistent", st)
	}
	err := c.Do(func() error { return RemoveLeakGuard("stun0") })
	var owned *TableOwnedError
	if !errors.As(err, &owned) || !strings.Contains(err.Error(), "running Salvo client") {
		t.Errorf("RemoveLeakGuard while the client runs: %v, want a *TableOwnedError saying a client is running", err)
	}

	h.kill()
	if !eventually(func() bool { return !guardState(t, c, "stun0").owned }) {
		t.Fatalf("guard still owned after its owner was killed: %+v", guardState(t, c, "stun0"))
	}
	if st := guardState(t, c, "stun0"); !st.exists {
		t.Fatal("persistent guard vanished with the process")
	}
	wantEPERM(t, "UDP after the client died", sendUDP(c, 0, "", "10.50.0.1:9"))
	if n := peerCount(t, peer, "udp"); n != 0 {
		t.Errorf("peer got %d datagrams while the orphaned guard was up", n)
	}
	var installed bool
	must(t, c.Do(func() error {
		var err error
		installed, err = LeakGuardInstalled("stun0")
		return err
	}))
	if !installed {
		t.Error("LeakGuardInstalled = false for the orphaned guard")
	}

	must(t, c.Do(func() error { return RemoveLeakGuard("stun0") }))
	must(t, c.Do(func() error {
		var err error
		installed, err = LeakGuardInstalled("stun0")
		return err
	}))
	if installed {
		t.Error("LeakGuardInstalled = true after RemoveLeakGuard")
	}
	must(t, sendUDP(c, 0, "", "10.50.0.1:9"))
	must(t, c.Do(func() error { return RemoveLeakGuard("stun0") }))
	if _, err := guardDropsErr(c, "stun0"); !errors.Is(err, ErrNoLeakGuard) {
		t.Errorf("LeakGuardDrops without a guard: %v, want ErrNoLeakGuard", err)
	}
}

func guardDropsErr(ns *netns.NS, dev string) (n uint64, err error) {
	err = ns.Do(func() error {
		var err error
		n, err = LeakGuardDrops(dev)
		return err
	})
	return n, err
}

// TestLeakGuardDiesWithProcess proves that a guard without Persist is owned
// by its process: another process cannot take it over (ApplyLeakGuard fails
// with a *TableOwnedError and leaves it) nor remove it, and when the owner
// is killed the guard vanishes and traffic flows again.
func TestLeakGuardDiesWithProcess(t *testing.T) {
	c, _, _ := guardLAN(t)
	h := startHelper(t, c, "guard", "stun0")
	if st := guardState(t, c, "stun0"); !st.owned || st.flags&nftTableFlagPersist != 0 {
		t.Fatalf("guard of the running helper: %+v, want owned, not persistent", st)
	}
	err := c.Do(func() error {
		_, err := ApplyLeakGuard(LeakGuard{Dev: "stun0", FwMark: testMark, Persist: true})
		return err
	})
	var owned *TableOwnedError
	if !errors.As(err, &owned) || owned.Table != "inet salvo_guard_stun0" {
		t.Errorf("ApplyLeakGuard over a live client's guard: %v, want a *TableOwnedError", err)
	}
	if out, err := c.Run("nft", "delete", "table", "inet", "salvo_guard_stun0"); err == nil {
		t.Errorf("nft could delete the owned guard: %s", out)
	}
	if out, err := c.Run("nft", "flush", "ruleset"); err != nil || !guardState(t, c, "stun0").exists {
		t.Errorf("nft flush ruleset (%q, %v) removed the owned guard", out, err)
	}
	wantEPERM(t, "UDP while the client runs", sendUDP(c, 0, "", "10.50.0.1:9"))

	h.kill()
	if !eventually(func() bool { return !guardState(t, c, "stun0").exists }) {
		t.Fatal("guard of the killed client is still there")
	}
	must(t, sendUDP(c, 0, "", "10.50.0.1:9"))
}

// TestLeakGuardTakesOverLeftovers proves a restarted client takes over what
// a crashed one left without lifting the block: the orphan of a persistent
// guard and a plain table (what a kernel without NFT_TABLE_F_PERSIST keeps,
// here with a stale rule) are both replaced by the new guard, owned by this
// process and with nothing of the old content; undo then removes it.
func TestLeakGuardTakesOverLeftovers(t *testing.T) {
	c, _, _ := guardLAN(t)
	startHelper(t, c, "guard", "stun0:persist").kill()
	if !eventually(func() bool { return !guardState(t, c, "stun0").owned }) {
		t.Fatal("guard still owned after its owner was killed")
	}
	allow := []netip.Prefix{netip.MustParsePrefix("10.50.0.1/32")}
	undo := applyGuardIn(t, c, LeakGuard{Dev: "stun0", FwMark: testMark, AllowLAN: allow, Persist: true})
	if st := guardState(t, c, "stun0"); !st.owned || st.flags&nftTableFlagPersist == 0 {
		t.Errorf("guard after taking over the orphan: %+v, want owned and persistent", st)
	}
	if out := run(t, c, "nft", "list", "table", "inet", "salvo_guard_stun0"); !strings.Contains(out, "ip daddr 10.50.0.1 accept") {
		t.Errorf("new guard lacks its AllowLAN rule:\n%s", out)
	}
	must(t, undo())
	must(t, undo())
	if guardState(t, c, "stun0").exists {
		t.Fatal("guard still there after undo")
	}

	run(t, c, "nft", "add table inet salvo_guard_stun0; add chain inet salvo_guard_stun0 output "+
		"{ type filter hook output priority 0; }; add rule inet salvo_guard_stun0 output counter drop comment \"stale\"")
	applyGuardIn(t, c, LeakGuard{Dev: "stun0", FwMark: testMark})
	out := run(t, c, "nft", "list", "table", "inet", "salvo_guard_stun0")
	if strings.Contains(out, "stale") || !strings.Contains(out, "flags owner") {
		t.Errorf("plain leftover not replaced by an owned guard:\n%s", out)
	}
}

// TestLeakGuardReapplyNoWindow proves that re-applying a guard (with other
// AllowLAN, switching Persist) replaces it without a moment unguarded: a
// sender loops unmarked UDP to the LAN throughout 40 replacements and not
// one datagram gets out. It also proves an earlier undo does nothing once
// its guard was replaced, and that the last undo removes the guard.
func TestLeakGuardReapplyNoWindow(t *testing.T) {
	c, peer, _ := guardLAN(t)
	g := LeakGuard{Dev: "stun0", FwMark: testMark}
	undo := applyGuardIn(t, c, g)

	var conn net.Conn
	must(t, c.Do(func() error {
		var err error
		conn, err = net.Dial("udp", "10.50.0.1:9")
		return err
	}))
	defer conn.Close()
	var stop atomic.Bool
	var sent, leaked atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			sent.Add(1)
			if _, err := conn.Write([]byte("leak?")); err == nil {
				leaked.Add(1)
			}
		}
	}()
	for i := range 40 {
		first := undo
		g.Persist = i%2 == 0
		g.AllowLAN = nil
		if i%3 == 0 {
			g.AllowLAN = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}
		}
		undo = applyGuardIn(t, c, g)
		must(t, first()) // replaced: a no-op
		if !guardState(t, c, "stun0").exists {
			t.Fatalf("replacement %d: the earlier undo removed the current guard", i)
		}
	}
	stop.Store(true)
	wg.Wait()
	if leaked.Load() != 0 || peerCount(t, peer, "udp") != 0 || sent.Load() < 100 {
		t.Errorf("%d of %d sends succeeded, peer counted %d; want 0 of at least 100, 0",
			leaked.Load(), sent.Load(), peerCount(t, peer, "udp"))
	}
	must(t, undo())
	if guardState(t, c, "stun0").exists {
		t.Error("guard still there after the last undo")
	}
	must(t, sendUDP(c, 0, "", "10.50.0.1:9"))
}

// TestLeakGuardRefusesBadConfig proves that a guard that would not guard
// (mark 0 matches every unmarked packet, an AllowLAN /0 everything) and bad
// device names are refused before anything is installed.
func TestLeakGuardRefusesBadConfig(t *testing.T) {
	ns := netns.ForTest(t, nsPrefix) // should validation fail to refuse, the host is spared
	for _, g := range []LeakGuard{
		{Dev: "stun0"},
		{Dev: "stun0", FwMark: 1, AllowLAN: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}},
		{Dev: "stun0", FwMark: 1, AllowLAN: []netip.Prefix{netip.MustParsePrefix("::ffff:0.0.0.0/96")}},
		{Dev: "stun0", FwMark: 1, AllowLAN: []netip.Prefix{{}}},
		{Dev: "", FwMark: 1},
		{Dev: "0123456789abcdef", FwMark: 1},
	} {
		err := ns.Do(func() error { _, err := ApplyLeakGuard(g); return err })
		if err == nil || !strings.Contains(err.Error(), "leak guard") {
			t.Errorf("ApplyLeakGuard(%+v) = %v, want an error", g, err)
		}
	}
}

// TestLeakGuardPlainFallback proves the kill switch where the kernel has no
// NFT_TABLE_F_PERSIST (simulated: the flag is not asked for) and the guard
// is a plain table: it survives a SIGKILLed client and RemoveLeakGuard
// lifts it; and in one process a plain guard is replaced by an owned one
// and back (each over the socket that holds the guard, in one batch), with
// the last undo removing it.
func TestLeakGuardPlainFallback(t *testing.T) {
	c, _, _ := guardLAN(t)
	startHelper(t, c, "guard", "stun0:plain").kill()
	if st := guardState(t, c, "stun0"); !st.exists || st.flags != 0 {
		t.Fatalf("plain guard after its client was killed: %+v, want a plain table", st)
	}
	wantEPERM(t, "UDP after the client died", sendUDP(c, 0, "", "10.50.0.1:9"))
	must(t, c.Do(func() error { return RemoveLeakGuard("stun0") }))
	must(t, sendUDP(c, 0, "", "10.50.0.1:9"))

	persistUnsupported.Store(true)
	t.Cleanup(func() { persistUnsupported.Store(false) })
	var undo func() error
	for _, step := range []struct {
		persist bool
		flags   uint32
	}{{true, 0}, {false, nftTableFlagOwner}, {true, 0}} {
		undo = applyGuardIn(t, c, LeakGuard{Dev: "stun0", FwMark: testMark, Persist: step.persist})
		if st := guardState(t, c, "stun0"); st.flags != step.flags {
			t.Errorf("Persist %v: table flags %#x, want %#x", step.persist, st.flags, step.flags)
		}
		wantEPERM(t, fmt.Sprintf("UDP with the guard (Persist %v)", step.persist), sendUDP(c, 0, "", "10.50.0.1:9"))
	}
	must(t, undo())
	if guardState(t, c, "stun0").exists {
		t.Error("plain guard still there after undo")
	}
}

// TestBatchFailureKeepsSocketUsable proves that after a batch fails the
// socket answers the next requests correctly (send drained the rest of the
// failed batch's answers): what a guard's owning socket needs, since closing
// it after a failed re-apply would drop the guard still in force.
func TestBatchFailureKeepsSocketUsable(t *testing.T) {
	ns := netns.ForTest(t, nsPrefix)
	must(t, ns.Do(func() error {
		c, err := netfilterHere()
		if err != nil {
			return err
		}
		defer c.Close()
		fam := byte(nftables.TableFamilyINet)
		b := &nftBatch{family: fam}
		b.delTable("salvo_t_missing1")
		b.delTable("salvo_t_missing2")
		b.newTable("salvo_t_x", 0)
		b.delTable("salvo_t_missing3")
		if err := b.send(c); !errors.Is(err, syscall.ENOENT) {
			return fmt.Errorf("failing batch: %v, want ENOENT", err)
		}
		if st, err := queryTable(c, fam, "salvo_t_x"); err != nil || st.exists {
			return fmt.Errorf("after the failed batch: table %+v, %v; want none (all or nothing) and no error", st, err)
		}
		b = &nftBatch{family: fam}
		b.newTable("salvo_t_x", nftTableFlagOwner)
		if err := b.send(c); err != nil {
			return fmt.Errorf("batch after the failed one: %w", err)
		}
		if st, err := queryTable(c, fam, "salvo_t_x"); err != nil || !st.owned {
			return fmt.Errorf("after the good batch: table %+v, %v; want owned", st, err)
		}
		return nil
	}))
}
