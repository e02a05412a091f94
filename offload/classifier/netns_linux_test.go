package classifier

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/salvovpn/salvo/internal/netns"
	"github.com/salvovpn/salvo/protocol"
)

const groupSize = 4

// reuseGroup binds n SO_REUSEPORT UDP sockets to one port of addr inside ns, in order: conns[i] is
// reuseport index i.
func reuseGroup(t *testing.T, ns *netns.NS, network, addr string, n int) []*net.UDPConn {
	t.Helper()
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		})
		return errors.Join(err, serr)
	}}
	var conns []*net.UDPConn
	err := ns.Do(func() error {
		port := "0"
		for range n {
			pc, err := lc.ListenPacket(context.Background(), network, net.JoinHostPort(addr, port))
			if err != nil {
				return err
			}
			c := pc.(*net.UDPConn)
			conns = append(conns, c)
			port = strconv.Itoa(c.LocalAddr().(*net.UDPAddr).Port)
		}
		return nil
	})
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	if err != nil {
		t.Fatalf("bind reuseport group: %v", err)
	}
	return conns
}

func rawConns(t *testing.T, conns []*net.UDPConn) []syscall.RawConn {
	t.Helper()
	var rcs []syscall.RawConn
	for _, c := range conns {
		rc, err := c.SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		rcs = append(rcs, rc)
	}
	return rcs
}

// sender opens one UDP socket (one source 4-tuple) inside ns.
func sender(t *testing.T, ns *netns.NS, network, addr string) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	if err := ns.Do(func() error {
		var err error
		c, err = net.ListenUDP(network, net.UDPAddrFromAddrPort(netipAddrPort(addr, 0)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func send(t *testing.T, from *net.UDPConn, to *net.UDPConn, payloads ...[]byte) {
	t.Helper()
	dst := to.LocalAddr().(*net.UDPAddr)
	for _, p := range payloads {
		if _, err := from.WriteToUDP(p, dst); err != nil {
			t.Fatalf("send: %v", err)
		}
	}
}

// collect reads from every socket of the group until want datagrams arrived in total (or 3 s passed),
// then keeps listening 100 ms more to catch anything unexpected. got[i] are socket i's datagrams.
func collect(t *testing.T, conns []*net.UDPConn, want int) [][][]byte {
	t.Helper()
	got := make([][][]byte, len(conns))
	total := 0
	buf := make([]byte, 2048)
	deadline := time.Now().Add(3 * time.Second)
	var quietUntil time.Time
	for {
		now := time.Now()
		if total >= want && quietUntil.IsZero() {
			quietUntil = now.Add(100 * time.Millisecond)
		}
		if now.After(deadline) || (!quietUntil.IsZero() && now.After(quietUntil)) {
			break
		}
		for i, c := range conns {
			c.SetReadDeadline(time.Now().Add(2 * time.Millisecond))
			n, _, err := c.ReadFromUDP(buf)
			if err != nil {
				continue
			}
			got[i] = append(got[i], append([]byte(nil), buf[:n]...))
			total++
		}
	}
	return got
}

func indexes(ps [][]byte) []uint32 {
	var out []uint32
	for _, p := range ps {
		if len(p) >= 8 {
			out = append(out, binary.LittleEndian.Uint32(p[4:8]))
		}
	}
	return out
}

func dataPackets(from, to uint32) [][]byte {
	var ps [][]byte
	for i := from; i < to; i++ {
		ps = append(ps, packet(protocol.CodeData, i, 64))
	}
	return ps
}

// snmp reads the namespace's UDP and ICMP counters (/proc/thread-self/net follows the calling thread's
// network namespace; /proc/net would show the process's, i.e. the host's).
func snmp(t *testing.T, ns *netns.NS) map[string]uint64 {
	t.Helper()
	out := map[string]uint64{}
	err := ns.Do(func() error {
		b, err := os.ReadFile("/proc/thread-self/net/snmp")
		if err != nil {
			return err
		}
		var hdr []string
		for l := range strings.Lines(string(b)) {
			f := strings.Fields(l)
			if len(f) == 0 {
				continue
			}
			if hdr == nil || hdr[0] != f[0] {
				hdr = f
				continue
			}
			for i := 1; i < len(f) && i < len(hdr); i++ {
				v, _ := strconv.ParseUint(f[i], 10, 64)
				out[strings.TrimSuffix(f[0], ":")+"."+hdr[i]] = v
			}
			hdr = nil
		}
		b, err = os.ReadFile("/proc/thread-self/net/snmp6")
		if err != nil {
			return err
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) == 2 {
				v, _ := strconv.ParseUint(f[1], 10, 64)
				out[f[0]] = v
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// socketDrops sums the "drops" column of /proc/net/udp{,6} for local port port inside ns.
func socketDrops(t *testing.T, ns *netns.NS, port int) uint64 {
	t.Helper()
	var sum uint64
	err := ns.Do(func() error {
		for _, f := range []string{"/proc/thread-self/net/udp", "/proc/thread-self/net/udp6"} {
			b, err := os.ReadFile(f)
			if err != nil {
				return err
			}
			for l := range strings.Lines(string(b)) {
				fs := strings.Fields(l)
				if len(fs) < 13 || fs[0] == "sl" {
					continue
				}
				local := fs[1]
				p, _ := strconv.ParseUint(local[strings.LastIndexByte(local, ':')+1:], 16, 16)
				if int(p) != port {
					continue
				}
				d, _ := strconv.ParseUint(fs[len(fs)-1], 10, 64)
				sum += d
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return sum
}

func TestReuseportGroupNamespace(t *testing.T) {
	for _, fam := range []struct{ network, addr string }{{"udp4", "127.0.0.1"}, {"udp6", "::1"}} {
		t.Run(fam.network, func(t *testing.T) { testReuseportGroup(t, fam.network, fam.addr) })
	}
}

func testReuseportGroup(t *testing.T, network, addr string) {
	c := loadForTest(t, Config{Sockets: groupSize, MaxSessions: 1024})
	ns := netns.ForTest(t, "salvo-bpf-")
	conns := reuseGroup(t, ns, network, addr, groupSize)
	port := conns[0].LocalAddr().(*net.UDPAddr).Port
	const nIdx = 64
	for i := range uint32(nIdx) {
		if err := c.AddSession(i); err != nil {
			t.Fatal(err)
		}
	}
	v6 := network == "udp6"
	counter := func(m map[string]uint64, v4name, v6name string) uint64 {
		if v6 {
			return m[v6name]
		}
		return m[v4name]
	}

	// Sanity check that the counters we read are this namespace's and that an unbound port does produce
	// NoPorts + ICMP port unreachable (loopback is exempt from the ICMP rate limit).
	before := snmp(t, ns)
	probe := sender(t, ns, network, addr)
	if _, err := probe.WriteToUDP([]byte{3}, net.UDPAddrFromAddrPort(netipAddrPort(addr, 9))); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	after := snmp(t, ns)
	if d := counter(after, "Udp.NoPorts", "Udp6NoPorts") - counter(before, "Udp.NoPorts", "Udp6NoPorts"); d != 1 {
		t.Fatalf("closed-port probe: NoPorts +%d, want +1", d)
	}
	if d := counter(after, "Icmp.OutDestUnreachs", "Icmp6OutDestUnreachs") - counter(before, "Icmp.OutDestUnreachs", "Icmp6OutDestUnreachs"); d != 1 {
		t.Fatalf("closed-port probe: ICMP dest unreachable +%d, want +1", d)
	}

	// Control: without the selector the kernel hashes the 4-tuple, so one source lands on one socket.
	src := sender(t, ns, network, addr)
	send(t, src, conns[0], dataPackets(0, nIdx)...)
	got := collect(t, conns, nIdx)
	var used []int
	for i, g := range got {
		if len(g) > 0 {
			used = append(used, i)
		}
	}
	if len(used) != 1 || len(got[used[0]]) != nIdx {
		t.Fatalf("control: one 4-tuple spread as %v, want all %d on one socket", counts(got), nIdx)
	}
	t.Logf("control (no program): per-socket counts %v", counts(got))

	if err := c.AttachGroup(rawConns(t, conns)); err != nil {
		t.Fatalf("AttachGroup: %v", err)
	}

	// Session affinity: index i goes to socket i % 4, for one source and after NAT rebinding.
	checkAffinity := func(label string, from *net.UDPConn) {
		t.Helper()
		send(t, from, conns[0], dataPackets(0, nIdx)...)
		got := collect(t, conns, nIdx)
		for s, g := range got {
			idx := indexes(g)
			if len(idx) != nIdx/groupSize {
				t.Errorf("%s: socket %d got %d packets (%v), want %d", label, s, len(idx), idx, nIdx/groupSize)
			}
			for _, i := range idx {
				if int(i)%groupSize != s {
					t.Errorf("%s: index %d on socket %d, want socket %d", label, i, s, int(i)%groupSize)
				}
			}
		}
		t.Logf("%s: per-socket counts %v", label, counts(got))
	}
	checkAffinity("one source", src)
	checkAffinity("rebound source port", sender(t, ns, network, addr))

	// Handshakes fall through to the kernel's hash: each is delivered once, and 16 source ports spread
	// over more than one socket (all on one would happen with probability 4^-15).
	var hs []*net.UDPConn
	for range 16 {
		s := sender(t, ns, network, addr)
		hs = append(hs, s)
		send(t, s, conns[0], packet(protocol.CodeClientAuthRequest, 99, protocol.MinRequestLen))
	}
	got = collect(t, conns, len(hs))
	n, spread := 0, 0
	for _, g := range got {
		n += len(g)
		if len(g) > 0 {
			spread++
		}
	}
	if n != len(hs) || spread < 2 {
		t.Fatalf("handshakes: per-socket %v, want %d delivered over >= 2 sockets", counts(got), len(hs))
	}
	t.Logf("handshakes from 16 ports: per-socket counts %v", counts(got))

	// Junk is dropped silently by the socket filter: nothing delivered, no NoPorts, no ICMP, counted in
	// Udp InErrors and the sockets' drop counters, and in Stats by reason.
	bad := packet(protocol.CodeData, 1, 64)
	bad[2] = 1
	junk := map[int][][]byte{
		reasonBadCode: {packet(0, 1, 64), packet(7, 1, 64), packet(255, 1, 64), bad},
		reasonShort: {{}, {3}, packet(protocol.CodeData, 1, protocol.MinDataLen-1),
			packet(protocol.CodeClientAuthRequest, 1, protocol.MinRequestLen-1)},
		reasonUnknownSession: dataPackets(1000, 1016),
	}
	stBefore, err := c.Stats()
	if err != nil {
		t.Fatal(err)
	}
	before = snmp(t, ns)
	dropsBefore := socketDrops(t, ns, port)
	total := 0
	for _, ps := range junk {
		send(t, src, conns[0], ps...)
		total += len(ps)
	}
	got = collect(t, conns, 0)
	for s, g := range got {
		if len(g) > 0 {
			t.Errorf("junk delivered to socket %d: %d datagrams", s, len(g))
		}
	}
	after = snmp(t, ns)
	st, err := c.Stats()
	if err != nil {
		t.Fatal(err)
	}
	delta := func(v4, v6name string) uint64 { return counter(after, v4, v6name) - counter(before, v4, v6name) }
	if d := delta("Udp.InErrors", "Udp6InErrors"); d != uint64(total) {
		t.Errorf("InErrors +%d, want +%d", d, total)
	}
	if d := delta("Udp.NoPorts", "Udp6NoPorts"); d != 0 {
		t.Errorf("NoPorts +%d, want 0", d)
	}
	if d := delta("Icmp.OutDestUnreachs", "Icmp6OutDestUnreachs"); d != 0 {
		t.Errorf("ICMP destination unreachable sent: +%d", d)
	}
	if d := delta("Udp.InDatagrams", "Udp6InDatagrams"); d != 0 {
		t.Errorf("InDatagrams +%d, want 0", d)
	}
	if d := socketDrops(t, ns, port) - dropsBefore; d != uint64(total) {
		t.Errorf("socket drop counters +%d, want +%d", d, total)
	}
	want := Stats{
		DroppedBadCode:        stBefore.DroppedBadCode + uint64(len(junk[reasonBadCode])),
		DroppedShort:          stBefore.DroppedShort + uint64(len(junk[reasonShort])),
		DroppedUnknownSession: stBefore.DroppedUnknownSession + uint64(len(junk[reasonUnknownSession])),
	}
	if st != want {
		t.Errorf("Stats %+v, want %+v", st, want)
	}
	t.Logf("junk: %d datagrams, InErrors +%d, NoPorts +%d, ICMP unreachable +%d, Stats %+v", total,
		delta("Udp.InErrors", "Udp6InErrors"), delta("Udp.NoPorts", "Udp6NoPorts"),
		delta("Icmp.OutDestUnreachs", "Icmp6OutDestUnreachs"), st)

	// Close detaches both programs: junk is delivered again and one source lands on one socket.
	ids := progIDs(t, c)
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	waitProgsGone(t, ids)
	send(t, src, conns[0], dataPackets(0, nIdx)...)
	send(t, src, conns[0], junk[reasonBadCode]...)
	want2 := nIdx + len(junk[reasonBadCode])
	got = collect(t, conns, want2)
	used = used[:0]
	for i, g := range got {
		if len(g) > 0 {
			used = append(used, i)
		}
	}
	if len(used) != 1 || len(got[used[0]]) != want2 {
		t.Fatalf("after Close: per-socket %v, want all %d on one socket", counts(got), want2)
	}
}

func counts(got [][][]byte) []int {
	out := make([]int, len(got))
	for i, g := range got {
		out[i] = len(g)
	}
	return out
}

// TestAttachGroupErrors: wrong group size is refused, and a closed socket makes AttachGroup fail without
// leaving filters behind.
func TestAttachGroupErrors(t *testing.T) {
	c := loadForTest(t, Config{Sockets: 2})
	ns := netns.ForTest(t, "salvo-bpf-")
	conns := reuseGroup(t, ns, "udp4", "127.0.0.1", 2)
	if err := c.AttachGroup(rawConns(t, conns[:1])); err == nil {
		t.Fatal("AttachGroup with 1 of 2 sockets succeeded")
	}
	rcs := rawConns(t, conns)
	conns[1].Close()
	if err := c.AttachGroup(rcs); err == nil {
		t.Fatal("AttachGroup with a closed socket succeeded")
	}
	// The first socket must have no filter left: SO_DETACH_BPF reports ENOENT.
	if err := setsockopt(rcs[0], unix.SO_DETACH_BPF, 0); !errors.Is(err, unix.ENOENT) {
		t.Fatalf("filter left on socket 0 after failed AttachGroup: %v", err)
	}
}

func netipAddrPort(addr string, port uint16) netip.AddrPort {
	return netip.AddrPortFrom(netip.MustParseAddr(addr), port)
}

// progIDs returns the kernel IDs of c's programs.
func progIDs(t *testing.T, c *Classifier) []ebpf.ProgramID {
	t.Helper()
	var ids []ebpf.ProgramID
	for _, p := range []*ebpf.Program{c.reuseport, c.earlyDrop, c.steering} {
		if p == nil {
			continue
		}
		info, err := p.Info()
		if err != nil {
			t.Fatal(err)
		}
		id, ok := info.ID()
		if !ok {
			t.Fatal("program ID not available")
		}
		ids = append(ids, id)
	}
	return ids
}

// waitProgsGone proves that nothing holds the programs any more after Close: a program still attached to
// a socket, a reuseport group or a TUN device would keep existing (and stay reachable by ID). Programs
// are freed after an RCU grace period, hence the polling.
func waitProgsGone(t *testing.T, ids []ebpf.ProgramID) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for _, id := range ids {
		for {
			p, err := ebpf.NewProgramFromID(id)
			if err != nil {
				break
			}
			p.Close()
			if time.Now().After(deadline) {
				t.Fatalf("program %d still exists after Close: something is still attached", id)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// TestSingleSocketGroup: a gateway with one worker has a plain socket (no SO_REUSEPORT); attaching gives it
// the early-drop filter only, and Close detaches cleanly.
func TestSingleSocketGroup(t *testing.T) {
	c := loadForTest(t, Config{Sockets: 1, MaxSessions: 16})
	ns := netns.ForTest(t, "salvo-bpf-")
	var conn *net.UDPConn
	if err := ns.Do(func() (err error) {
		conn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		return
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rc, err := conn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.AttachGroup([]syscall.RawConn{rc}); err != nil {
		t.Fatalf("AttachGroup on a single plain socket: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}
