package e2e

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/salvovpn/salvo/internal/netns"
)

// The leak tests play the published attacks on full-tunnel VPN clients (TunnelCrack LocalNet, TunnelVision,
// IPv6 beside an IPv4 tunnel, DNS, a hostile gateway, a crash). The gateway namespace G is also the
// client's LAN router, run by the attacker: it hands out addresses and routes, and a counter on its side of
// the client's link counts every packet that arrives from the client and is neither the tunnel's UDP nor
// what keeps the link up (DHCP, neighbor discovery, MLD). A leak is that counter going up.

const fullTunnel = `routes = ["0.0.0.0/0", "::/0"]`

// lanWatch is the attacker's counter on G for one client's link.
type lanWatch struct {
	gw    *netns.NS
	c     *client
	table string
}

// watchLAN installs the counter. gateways are the addresses of the tunnel's UDP (default: the gateway's
// addresses on the client's link).
func watchLAN(t *testing.T, w *world, c *client, gateways ...string) *lanWatch {
	t.Helper()
	if len(gateways) == 0 {
		gateways = []string{c.gwV4, c.gwV6}
	}
	l := &lanWatch{gw: w.gw, c: c, table: fmt.Sprintf("salvo_t_leak%d", c.n)}
	iif := fmt.Sprintf("toc%d", c.n)
	script := fmt.Sprintf("add table inet %[1]s; add counter inet %[1]s leaked; add counter inet %[1]s marker; "+
		"add chain inet %[1]s pre { type filter hook prerouting priority -300; }; ", l.table)
	rule := func(r string) { script += fmt.Sprintf("add rule inet %s pre iifname %q %s; ", l.table, iif, r) }
	for _, g := range gateways {
		fam := "ip"
		if netip.MustParseAddr(g).Is6() {
			fam = "ip6"
		}
		rule(fmt.Sprintf("%s daddr %s udp dport 51820 return", fam, g))
	}
	// The probes' markers (see probe), which look like DHCP to the guard.
	rule("udp sport 68 udp dport 67 counter name marker return")
	rule("udp sport 546 udp dport 547 counter name marker return")
	rule("icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert, mld2-listener-report } return")
	rule("counter name leaked")
	_, err := w.gw.Run("nft", script)
	must(t, err)
	return l
}

var nftPacketsRe = regexp.MustCompile(`packets (\d+)`)

func (l *lanWatch) count(t *testing.T, name string) uint64 {
	t.Helper()
	out, err := l.gw.Run("nft", "list", "counter", "inet", l.table, name)
	must(t, err)
	m := nftPacketsRe.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no packet count in %q", out)
	}
	n, err := strconv.ParseUint(m[1], 10, 64)
	must(t, err)
	return n
}

// probe sends from the client what an application would to each destination: an ICMP echo, UDP to ports
// 9 and 53 (DNS), a TCP connection to port 80. Then, for each, a marker that the guard lets through
// (UDP from the DHCP client port, bound to the LAN device) along the same route a leak would take, and
// waits for the markers: what the probes leaked has arrived by then. It returns the packets leaked.
func (l *lanWatch) probe(t *testing.T, dsts ...string) uint64 {
	t.Helper()
	leaked, markers := l.count(t, "leaked"), l.count(t, "marker")
	for _, d := range dsts {
		dst := netip.MustParseAddr(d)
		_ = l.c.ns.Ping(dst, 300*time.Millisecond)
		for _, port := range []uint16{9, 53} {
			_ = l.c.ns.Do(func() error { return sendUDP(netip.AddrPort{}, netip.AddrPortFrom(dst, port), "") })
		}
		_ = l.c.ns.Do(func() error {
			c, err := net.DialTimeout("tcp", netip.AddrPortFrom(dst, 80).String(), time.Second)
			if err == nil {
				c.Close()
			}
			return err
		})
		from, to := netip.AddrPortFrom(netip.IPv4Unspecified(), 68), netip.AddrPortFrom(dst, 67)
		if dst.Is6() {
			from, to = netip.AddrPortFrom(netip.IPv6Unspecified(), 546), netip.AddrPortFrom(dst, 547)
		}
		must(t, l.c.ns.Do(func() error { return sendUDP(from, to, "tog") }))
	}
	want := markers + uint64(len(dsts))
	waitFor(t, 5*time.Second, "the probes' markers on the LAN", func() error {
		if n := l.count(t, "marker"); n < want {
			return fmt.Errorf("%d of %d markers", n-markers, len(dsts))
		}
		return nil
	})
	return l.count(t, "leaked") - leaked
}

// sendUDP sends one datagram to to, from from if valid, bound to device dev if set. A send the leak guard
// refuses fails with EPERM; that error is returned.
func sendUDP(from, to netip.AddrPort, dev string) error {
	d := net.Dialer{}
	if from.IsValid() {
		d.LocalAddr = net.UDPAddrFromAddrPort(from)
	}
	if dev != "" {
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptString(int(fd), syscall.SOL_SOCKET, syscall.SO_BINDTODEVICE, dev)
			})
			return errors.Join(err, serr)
		}
	}
	c, err := d.Dial("udp", to.String())
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write([]byte("leak?"))
	return err
}

// guardInstalled reports whether the client namespace holds a leak guard table.
func guardInstalled(c *client) bool {
	_, err := c.ns.Run("nft", "list", "table", "inet", "salvo_guard_"+clientTun)
	return err == nil
}

// restart stops the client (cleanly) and connects it again with extra configuration.
func (w *world) restart(c *client, server, extra string) {
	w.t.Helper()
	if err := c.proc.stop(w.t); err != nil {
		w.t.Fatalf("client exit: %v", err)
	}
	w.connect(c, "alice", server, extra)
}

// leakWorld is a gateway started with the server configuration extra and one client on the LAN the
// gateway's namespace watches; gwAddr is the tunnel's address for the client.
type leakWorld struct {
	*world
	srv    *proc
	c      *client
	lan    *lanWatch
	gwAddr string
}

func newLeakWorld(t *testing.T, extra string) *leakWorld {
	t.Helper()
	w := newWorld(t)
	l := &leakWorld{world: w, srv: w.startServer(extra), c: w.addClient()}
	l.lan = watchLAN(t, w, l.c)
	l.gwAddr = l.c.gwV4 + ":51820"
	return l
}

// stopClean stops the client cleanly and checks it left nothing behind.
func stopClean(t *testing.T, c *client) {
	t.Helper()
	must(t, c.proc.stop(t))
	assertClean(t, c)
}

// TestLeakLocalNet (TunnelCrack LocalNet): the LAN hands the client 198.51.0.2/16, so the target
// 198.51.100.1, which the attacker answers, looks local and its connected route beats the tunnel. Without
// the guard that leaks (the control); with it nothing leaves, and the tunnel still carries traffic. With
// allow_lan the public /16 stays blocked (and is logged), while the LAN's private prefix is let through.
func TestLeakLocalNet(t *testing.T) {
	w := newLeakWorld(t, fullTunnel)
	c, lan, gw := w.c, w.lan, w.gwAddr
	must(t, w.gw.AddAddr("toc1", "198.51.100.1/16"))
	must(t, c.ns.AddAddr("tog", "198.51.0.2/16"))
	const target = "198.51.100.1"

	w.connect(c, "alice", gw, `leak_guard = "off"`)
	if n := lan.probe(t, target); n == 0 {
		t.Fatal("control: without the guard nothing leaked, so the test proves nothing")
	}

	w.restart(c, gw, "")
	if n := lan.probe(t, target); n != 0 {
		t.Errorf("guard on: %d packets to %s leaked onto the LAN", n, target)
	}
	must(t, c.ns.Ping(netip.MustParseAddr(hostV4), 5*time.Second))
	if st, err := c.status(); err != nil || st.LeakGuard == nil || st.LeakGuard.Blocked == 0 {
		t.Errorf("status does not show the guard blocking: %+v, %v", st.LeakGuard, err)
	}

	w.restart(c, gw, "allow_lan = true")
	if n := lan.probe(t, target); n != 0 {
		t.Errorf("allow_lan: %d packets to the public LAN prefix leaked", n)
	}
	if !strings.Contains(c.proc.output(), "claims public address space") {
		t.Error("allow_lan: the public LAN prefix was not logged")
	}
	if n := lan.probe(t, c.gwV4); n == 0 {
		t.Error("allow_lan: nothing reached the LAN's private prefix 10.200.1.0/24")
	}
	stopClean(t, c)
}

// TestLeakTunnelVision (CVE-2024-3661): after the tunnel is up the LAN router injects 0.0.0.0/1,
// 128.0.0.0/1, ::/1 and 8000::/1, which beat the tunnel's default routes. The control leaks; with the
// guard nothing leaves, and the client's status shows the guard at work.
func TestLeakTunnelVision(t *testing.T) {
	w := newLeakWorld(t, fullTunnel)
	c, lan, gw := w.c, w.lan, w.gwAddr
	inject := func(op string) {
		for _, r := range [][]string{{"0.0.0.0/1", c.gwV4}, {"128.0.0.0/1", c.gwV4}, {"::/1", c.gwV6}, {"8000::/1", c.gwV6}} {
			_, err := c.ns.Run("ip", "route", op, r[0], "via", r[1])
			must(t, err)
		}
	}
	targets := []string{"192.0.2.1", "2001:db8::1", hostV4, hostV6}

	w.connect(c, "alice", gw, `leak_guard = "off"`)
	inject("add")
	if n := lan.probe(t, targets...); n == 0 {
		t.Fatal("control: without the guard nothing leaked, so the test proves nothing")
	}
	inject("del")

	w.restart(c, gw, "")
	if n := lan.probe(t, targets...); n != 0 {
		t.Fatalf("guard on, before the attack: %d packets leaked", n)
	}
	inject("add")
	if n := lan.probe(t, targets...); n != 0 {
		t.Errorf("guard on, routes injected: %d packets leaked", n)
	}
	st, err := c.status()
	must(t, err)
	if st.LeakGuard == nil || st.LeakGuard.Blocked == 0 {
		t.Errorf("status does not show the guard blocking: %+v", st.LeakGuard)
	}
	inject("del")
	must(t, c.ns.Ping(netip.MustParseAddr(hostV4), 5*time.Second))
	stopClean(t, c)
}

// TestLeakOtherFamily: a full tunnel for one family only, with the other family on the LAN. The family
// the tunnel does not carry is blocked, not leaked: IPv6 beside an IPv4-only tunnel, and IPv4 beside an
// IPv6-only one.
func TestLeakOtherFamily(t *testing.T) {
	w := newLeakWorld(t, `routes = ["0.0.0.0/0"]`)
	srv, c, lan, gw := w.srv, w.c, w.lan, w.gwAddr

	w.connect(c, "alice", gw, `leak_guard = "off"`)
	if n := lan.probe(t, hostV6); n == 0 {
		t.Fatal("control: without the guard no IPv6 leaked, so the test proves nothing")
	}
	w.restart(c, gw, "")
	if n := lan.probe(t, hostV6, "2001:db8::1"); n != 0 {
		t.Errorf("IPv4-only full tunnel: %d IPv6 packets leaked", n)
	}
	must(t, c.ns.Ping(netip.MustParseAddr(hostV4), 5*time.Second))
	must(t, c.proc.stop(t))

	must(t, srv.stop(t))
	w.startServer(`routes = ["::/0"]`)
	w.connect(c, "alice", gw, "")
	if n := lan.probe(t, hostV4, "192.0.2.1"); n != 0 {
		t.Errorf("IPv6-only full tunnel: %d IPv4 packets leaked", n)
	}
	must(t, c.ns.Ping(netip.MustParseAddr(hostV6), 5*time.Second))
	stopClean(t, c)
}

// TestLeakServerIP (TunnelCrack ServerIP): the LAN's DNS answers the gateway's name with the address of
// a destination the attacker wants in the clear, and the attacker relays the tunnel's UDP to the real
// gateway (here the LAN router is the gateway, at 203.0.113.1 off the client's link). Only the client's
// marked socket goes outside the tunnel, never a host route to the server's address, so everything else
// sent to that address goes through the tunnel, even with the guard off.
func TestLeakServerIP(t *testing.T) {
	const serverIP = "203.0.113.1"
	w := newWorld(t)
	must(t, w.gw.AddAddr("lo", serverIP+"/32"))
	// Bound to the address, so replies leave from it (a wildcard socket answers from the address the
	// route picks: see README, "Listen addresses").
	w.startServer(fullTunnel + "\n" + `listen = ["` + serverIP + `:51820"]`)
	c := w.addClient()
	lan := watchLAN(t, w, c, serverIP)
	netnsEtc(t, c, "hosts", serverIP+" vpn.test\n")

	w.connect(c, "alice", "vpn.test:51820", `leak_guard = "off"`)
	if n := lan.probe(t, serverIP); n != 0 {
		t.Errorf("%d packets to the server's address left outside the tunnel", n)
	}
	must(t, c.ns.Ping(netip.MustParseAddr(hostV4), 5*time.Second))
	stopClean(t, c)
}

// netnsEtc gives the client's namespace its own /etc/<name> (ip netns exec bind-mounts
// /etc/netns/<namespace>/<name> over it), as DHCP or a hostile LAN's DNS would shape a host's.
func netnsEtc(t *testing.T, c *client, name, content string) {
	t.Helper()
	dir := filepath.Join("/etc/netns", c.ns.Name)
	must(t, os.MkdirAll(dir, 0o755))
	t.Cleanup(func() { os.RemoveAll(dir) })
	must(t, os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644))
}

// TestLeakDNSNotApplicable: the gateway pushes DNS servers, the client cannot apply them (no
// systemd-resolved, no resolvconf: its PATH has neither), and resolv.conf points at the LAN. A full
// tunnel then refuses to run, says why and leaves nothing behind. With dns_fail_open it runs, and the
// guard still keeps the system's look-ups off the LAN; with allow_lan as well, DNS to the LAN's resolver
// is what the user asked for and goes through.
func TestLeakDNSNotApplicable(t *testing.T) {
	w := newLeakWorld(t, fullTunnel+"\n"+`dns = ["10.77.0.1"]`)
	c, lan, gw := w.c, w.lan, w.gwAddr
	netnsEtc(t, c, "resolv.conf", "nameserver "+c.gwV4+"\n") // the LAN router resolves
	w.env = append(w.env, "PATH="+t.TempDir())

	path := w.clientConfig(c, "alice", password, gw, "")
	cmd := c.ns.Exec(t.Context(), w.bin, "client", "--config", path)
	cmd.Env = append(os.Environ(), w.env...)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("want exit code 1, got %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "salvo: configure tunnel: full tunnel refused") || !strings.Contains(string(out), "dns_fail_open") {
		t.Fatalf("the refusal does not say why:\n%s", out)
	}
	assertClean(t, c)

	lookup := func() uint64 {
		return lan.probe(t, c.gwV4) // UDP and TCP to port 53 of the LAN's resolver, among others
	}
	w.connect(c, "alice", gw, "dns_fail_open = true")
	if !strings.Contains(c.proc.output(), "DNS not applied") {
		t.Errorf("dns_fail_open: the client did not warn:\n%s", c.proc.output())
	}
	// The system's resolver (glibc, reading the namespace's resolv.conf) asks the LAN: blocked.
	_, _ = c.ns.Run("getent", "hosts", "leak.example")
	if n := lookup(); n != 0 {
		t.Errorf("dns_fail_open: %d packets reached the LAN (its resolver among them)", n)
	}

	w.restart(c, gw, "dns_fail_open = true\nallow_lan = true")
	before := lan.count(t, "leaked")
	_, _ = c.ns.Run("getent", "hosts", "leak.example")
	waitFor(t, 5*time.Second, "a look-up at the LAN's resolver", func() error {
		if lan.count(t, "leaked") == before {
			return errors.New("none yet")
		}
		return nil
	})
	stopClean(t, c)
}

// TestHostileGatewaySettings: the gateway (authenticated, but not trusted blindly) pushes excluded routes
// that take everything back out of a full tunnel, a route over the client's own LAN, and MTU 9000. The
// client applies neither, says so, clamps the MTU to what its path carries, and nothing leaks.
func TestHostileGatewaySettings(t *testing.T) {
	w := newLeakWorld(t, `routes = ["0.0.0.0/0", "::/0", "10.200.1.0/24"]`+"\n"+
		`excluded_routes = ["0.0.0.0/1", "128.0.0.0/1", "::/1", "8000::/1"]`+"\nmtu = 9000")
	c, lan := w.c, w.lan
	w.connect(c, "alice", w.gwAddr, "")
	out := c.proc.output()
	for _, want := range []string{"excluded route 0.0.0.0/1 not applied", "excluded route 8000::/1 not applied",
		"route 10.200.1.0/24 not applied", "pushed 9000 lowered to 1440"} {
		if !strings.Contains(out, want) {
			t.Errorf("the client did not log %q", want)
		}
	}
	for dst, dev := range map[string]string{"192.0.2.1": clientTun, "2001:db8::1": clientTun, "10.200.1.7": "tog"} {
		if d := routeDev(t, c, dst); d != dev {
			t.Errorf("%s goes via %s, want %s", dst, d, dev)
		}
	}
	link, err := c.ns.Run("ip", "link", "show", clientTun)
	must(t, err)
	if !strings.Contains(link, "mtu 1440 ") {
		t.Errorf("tunnel MTU not clamped to 1500 - 60: %s", link)
	}
	if n := lan.probe(t, "192.0.2.1", "2001:db8::1", c.gwV4); n != 0 {
		t.Errorf("%d packets leaked", n)
	}
	rx := w.serverStatus().Sessions[0].Counters.RxPackets
	must(t, c.ns.Ping(netip.MustParseAddr(hostV4), 5*time.Second))
	if w.serverStatus().Sessions[0].Counters.RxPackets <= rx {
		t.Error("traffic did not go through the tunnel")
	}
	stopClean(t, c)
}

// TestKillSwitch: a SIGKILLed client leaves its guard behind, unowned, and nothing leaks; a new client
// takes it over and the tunnel works again; `salvo client --down` refuses while a client runs and, after
// another SIGKILL, lifts the guard and the stale rules, and the LAN is reachable again.
func TestKillSwitch(t *testing.T) {
	w := newLeakWorld(t, fullTunnel)
	c, lan, gw := w.c, w.lan, w.gwAddr
	targets := []string{"192.0.2.1", "2001:db8::1", c.gwV4}
	w.connect(c, "alice", gw, "")
	path := filepath.Join(c.dir, "client.toml")

	c.proc.kill()
	if !guardInstalled(c) {
		t.Fatal("the guard died with the client")
	}
	if n := lan.probe(t, targets...); n != 0 {
		t.Errorf("after SIGKILL: %d packets leaked", n)
	}

	w.connect(c, "alice", gw, "")
	if !strings.Contains(c.proc.output(), "leak guard an earlier run left") {
		t.Error("the new client did not say it found the old guard")
	}
	must(t, c.ns.Ping(netip.MustParseAddr(hostV4), 5*time.Second))
	if out, err := c.ns.Run(w.bin, "client", "--down", "--config", path); err == nil {
		t.Errorf("--down while the client runs succeeded: %s", out)
	}
	if n := lan.probe(t, targets...); n != 0 {
		t.Errorf("after a refused --down: %d packets leaked", n)
	}

	c.proc.kill()
	out, err := c.ns.Run(w.bin, "client", "--down", "--config", path)
	must(t, err)
	if !strings.Contains(out, "lifted the leak guard") {
		t.Errorf("--down did not say what it did: %s", out)
	}
	if n := lan.probe(t, c.gwV4); n == 0 {
		t.Error("after --down the LAN is still blocked")
	}
	assertClean(t, c)
	if out, err := c.ns.Run(w.bin, "client", "--down", "--config", path); err != nil || !strings.Contains(out, "no leak guard") {
		t.Errorf("a second --down: %v: %s", err, out)
	}
}
