package classifier

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/salvovpn/salvo/protocol"
)

// Offsets the programs see, verified here with BPF_PROG_TEST_RUN and on real sockets in netns_linux_test.go:
//
//	program      prog.Run input            offset 0 in prog.Run      offset 0 on the real hook
//	early drop   eth(14) | udp(8) | pay    UDP header                UDP header (sk_filter on UDP)
//	  its IP header (BPF_HDR_START_NET)    the same UDP header       IP header, in front of the UDP header
//	reuseport    eth(14) | pay             Salvo payload             Salvo payload (UDP header pulled)
//	TUN steer    eth(14) | IP packet       IP header                 IP header (TUN has no L2 header)
//
// BPF_PROG_TEST_RUN builds an skb from the input, runs eth_type_trans on it (which pulls the 14-byte
// Ethernet header), resets the network header to where the data now starts and, for socket-filter
// programs (not "L2" types like SCHED_CLS), does not push it back. So in prog.Run the early-drop filter's
// IP header and UDP header are the same bytes (see loginFrom in handshake_linux_test.go).

// etherExperimental is an EtherType the test-run code does not parse (0x0800/0x86dd make it read an IP
// header from the input).
const etherExperimental = 0x88b5

func loadForTest(t testing.TB, cfg Config) *Classifier {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root (CI=true: refusing to skip)")
		}
		t.Skip("needs root to load BPF programs")
	}
	c, err := Load(cfg)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return c
}

func frame(ethertype uint16, parts ...[]byte) []byte {
	b := make([]byte, 14, 64)
	binary.BigEndian.PutUint16(b[12:], ethertype)
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

// udpHeader is a placeholder UDP header: the early-drop filter skips it without reading it.
var udpHeader = make([]byte, udpHeaderLen)

// packet returns a datagram of n bytes with code c and, when n allows, receiver index idx at 4..7.
func packet(c protocol.Code, idx uint32, n int) []byte {
	b := make([]byte, max(n, 8))
	b[0] = byte(c)
	binary.LittleEndian.PutUint32(b[4:8], idx)
	return b[:n]
}

func run(t testing.TB, p *ebpf.Program, in []byte) uint32 {
	t.Helper()
	ret, err := p.Run(&ebpf.RunOptions{Data: in})
	if err != nil {
		t.Fatalf("prog.Run: %v", err)
	}
	return ret
}

const passed = 0xffffffff

func TestEarlyDropProgram(t *testing.T) {
	c := loadForTest(t, Config{Sockets: 4, MaxSessions: 16})
	const known, unknown = 0x01020304, 0x0a0b0c0d
	if err := c.AddSession(known); err != nil {
		t.Fatal(err)
	}
	type tc struct {
		name    string
		payload []byte
		want    int // -1 pass, else the reason counted
	}
	cases := []tc{
		{"empty", nil, reasonShort},
		{"code0", packet(0, known, 64), reasonBadCode},
		{"code7", packet(7, known, 64), reasonBadCode},
		{"code255", packet(255, known, 64), reasonBadCode},
		{"code0-short", []byte{0}, reasonBadCode},
		{"code7-3bytes", []byte{7, 0, 0}, reasonBadCode},
		{"data-known", packet(protocol.CodeData, known, protocol.MinDataLen), -1},
		{"data-known-1420", packet(protocol.CodeData, known, 1420), -1},
		{"disconnect-known", packet(protocol.CodeDisconnect, known, protocol.MinDataLen+1), -1},
		{"data-unknown", packet(protocol.CodeData, unknown, 100), reasonUnknownSession},
		{"disconnect-unknown", packet(protocol.CodeDisconnect, unknown, 100), reasonUnknownSession},
		{"data-1byte", []byte{3}, reasonShort},
		{"data-7bytes", packet(protocol.CodeData, known, 7), reasonShort},
		{"data-8bytes", packet(protocol.CodeData, known, 8), reasonShort},
		{"data-short", packet(protocol.CodeData, known, protocol.MinDataLen-1), reasonShort},
		{"disconnect-short", packet(protocol.CodeDisconnect, known, protocol.MinDataLen-1), reasonShort},
	}
	for _, r := range []int{1, 2, 3} {
		p := packet(protocol.CodeData, known, 64)
		p[r] = 0x80
		cases = append(cases, tc{fmt.Sprintf("data-reserved%d", r), p, reasonBadCode})
		p = packet(protocol.CodeDisconnect, known, 64)
		p[r] = 1
		cases = append(cases, tc{fmt.Sprintf("disconnect-reserved%d", r), p, reasonBadCode})
	}
	// Handshake-side codes: exactly the minimum passes, one byte less is short, reserved bytes and the
	// index are not looked at (their index is a sender index, not a session).
	for _, code := range []protocol.Code{
		protocol.CodeClientAuthRequest, protocol.CodeServerAuthResponse,
		protocol.CodeCookieReply, protocol.CodeNotice,
	} {
		m := minLen[code]
		cases = append(cases,
			tc{code.String() + "-min", packet(code, unknown, m), -1},
			tc{code.String() + "-big", packet(code, unknown, m+300), -1},
			tc{code.String() + "-short", packet(code, unknown, m-1), reasonShort},
			tc{code.String() + "-1byte", []byte{byte(code)}, reasonShort},
		)
	}
	if minLen[protocol.CodeClientAuthRequest] != protocol.MinRequestLen || protocol.MinRequestLen != 114 {
		t.Fatalf("MinRequestLen changed (%d): recheck minLen", protocol.MinRequestLen)
	}

	var want Stats
	for _, tc := range cases {
		got := run(t, c.earlyDrop, frame(etherExperimental, udpHeader, tc.payload))
		switch tc.want {
		case -1:
			if got != passed {
				t.Errorf("%s: returned %#x, want pass (%#x)", tc.name, got, uint32(passed))
			}
			continue
		case reasonBadCode:
			want.DroppedBadCode++
		case reasonShort:
			want.DroppedShort++
		case reasonUnknownSession:
			want.DroppedUnknownSession++
		}
		if got != 0 {
			t.Errorf("%s: returned %#x, want drop (0)", tc.name, got)
		}
		st, err := c.Stats()
		if err != nil {
			t.Fatal(err)
		}
		if st != want {
			t.Fatalf("%s: stats %+v, want %+v (wrong reason counted)", tc.name, st, want)
		}
	}

	// Session map updates take effect for the next packet.
	data := frame(etherExperimental, udpHeader, packet(protocol.CodeData, unknown, 64))
	if got := run(t, c.earlyDrop, data); got != 0 {
		t.Fatalf("unknown session passed before AddSession: %#x", got)
	}
	if err := c.AddSession(unknown); err != nil {
		t.Fatal(err)
	}
	if got := run(t, c.earlyDrop, data); got != passed {
		t.Fatalf("session not passed after AddSession: %#x", got)
	}
	if err := c.RemoveSession(unknown); err != nil {
		t.Fatal(err)
	}
	if err := c.RemoveSession(unknown); err != nil {
		t.Fatalf("second RemoveSession: %v", err)
	}
	if got := run(t, c.earlyDrop, data); got != 0 {
		t.Fatalf("session passed after RemoveSession: %#x", got)
	}
}

// TestEarlyDropOffsets proves the program reads the payload 8 bytes after what prog.Run calls offset 0,
// i.e. after the Ethernet header that the test run pulls: shifting the payload by one byte breaks it.
func TestEarlyDropOffsets(t *testing.T) {
	c := loadForTest(t, Config{Sockets: 1, MaxSessions: 4})
	if err := c.AddSession(7); err != nil {
		t.Fatal(err)
	}
	good := packet(protocol.CodeData, 7, 64)
	if got := run(t, c.earlyDrop, frame(etherExperimental, udpHeader, good)); got != passed {
		t.Fatalf("aligned: %#x", got)
	}
	if got := run(t, c.earlyDrop, frame(etherExperimental, udpHeader[:7], good)); got != 0 {
		t.Fatalf("shifted by one byte still passes: %#x", got)
	}
}

func TestSessionMapFull(t *testing.T) {
	c := loadForTest(t, Config{Sockets: 1, MaxSessions: 2})
	for i := range uint32(2) {
		if err := c.AddSession(i); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.AddSession(2); err == nil {
		t.Fatal("AddSession beyond MaxSessions succeeded")
	}
	if err := c.AddSession(1); err != nil {
		t.Fatalf("re-adding a present index: %v", err)
	}
}

func TestReuseportProgram(t *testing.T) {
	for _, sockets := range []int{1, 3, 4} {
		c := loadForTest(t, Config{Sockets: sockets, MaxSessions: 4})
		for _, idx := range []uint32{0, 1, 2, 3, 5, 0x7fffffff, 0x80000000, 0xffffffff, 0x01020304} {
			for _, code := range []protocol.Code{protocol.CodeData, protocol.CodeDisconnect} {
				for _, n := range []int{8, protocol.MinDataLen, 1420} {
					got := run(t, c.reuseport, frame(etherExperimental, packet(code, idx, n)))
					if want := uint32(protocol.IndexOwner(idx, sockets)); got != want {
						t.Errorf("sockets=%d %v idx=%#x len=%d: socket %d, want %d", sockets, code, idx, n, got, want)
					}
				}
			}
		}
		// Everything else falls through to the kernel's hash (an index >= the group size).
		fall := [][]byte{
			nil, {3}, packet(protocol.CodeData, 1, 7), packet(protocol.CodeDisconnect, 1, 7),
			packet(protocol.CodeClientAuthRequest, 1, protocol.MinRequestLen),
			packet(protocol.CodeServerAuthResponse, 1, 100), packet(protocol.CodeCookieReply, 1, 64),
			packet(protocol.CodeNotice, 1, 8), packet(0, 1, 64), packet(7, 1, 64), packet(255, 1, 64),
		}
		for _, p := range fall {
			if got := run(t, c.reuseport, frame(etherExperimental, p)); got != passed {
				t.Errorf("sockets=%d payload % x: %#x, want fall-through %#x", sockets, p, got, uint32(passed))
			}
		}
	}
}

func ipv4Packet(dst netip.Addr) []byte {
	b := make([]byte, 28)
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	b[8], b[9] = 64, 17
	copy(b[12:16], []byte{10, 0, 0, 1})
	d := dst.As4()
	copy(b[16:20], d[:])
	return b
}

func ipv6Packet(dst netip.Addr) []byte {
	b := make([]byte, 48)
	b[0] = 0x60
	binary.BigEndian.PutUint16(b[4:], 8)
	b[6], b[7] = 17, 64
	b[23] = 1
	d := dst.As16()
	copy(b[24:40], d[:])
	return b
}

func TestTUNSteeringProgram(t *testing.T) {
	c := loadForTest(t, Config{Sockets: 2, MaxSessions: 16, TUNSteering: true})
	routes := map[string]uint32{
		"10.7.0.0/16":    1,
		"10.7.3.0/24":    2,
		"10.7.3.9/32":    3,
		"fd00:7::/64":    4,
		"fd00:7::9/128":  5,
		"::/0":           6, // must not catch IPv4
		"192.168.1.7/24": 7, // host bits are masked off
	}
	for p, q := range routes {
		if err := c.SetRoute(netip.MustParsePrefix(p), q); err != nil {
			t.Fatalf("SetRoute %s: %v", p, err)
		}
	}
	steer := func(dst string) uint32 {
		a := netip.MustParseAddr(dst)
		if a.Is4() {
			return run(t, c.steering, frame(0x0800, ipv4Packet(a)))
		}
		return run(t, c.steering, frame(0x86dd, ipv6Packet(a)))
	}
	for dst, want := range map[string]uint32{
		"10.7.0.1": 1, "10.7.255.255": 1, "10.7.3.1": 2, "10.7.3.9": 3, "10.8.0.1": 0, "8.8.8.8": 0,
		"192.168.1.200": 7,
		"fd00:7::1":     4, "fd00:7::9": 5, "fd00:7:0:1::9": 6, "2001:db8::1": 6, "::ffff:10.7.3.9": 6,
	} {
		if got := steer(dst); got != want {
			t.Errorf("dst %s: queue %d, want %d", dst, got, want)
		}
	}
	if err := c.DeleteRoute(netip.MustParsePrefix("10.7.3.9/32")); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteRoute(netip.MustParsePrefix("::/0")); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteRoute(netip.MustParsePrefix("::/0")); err != nil {
		t.Fatalf("deleting a missing route: %v", err)
	}
	for dst, want := range map[string]uint32{"10.7.3.9": 2, "2001:db8::1": 0, "fd00:7::1": 4} {
		if got := steer(dst); got != want {
			t.Errorf("after delete: dst %s: queue %d, want %d", dst, got, want)
		}
	}
	// Not IP, or truncated: queue 0.
	for _, in := range [][]byte{
		frame(etherExperimental, []byte{0x10, 1, 2, 3}),
		frame(etherExperimental, []byte{0x45, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10, 7, 0, 1, 10, 7}),
		frame(etherExperimental, ipv6Packet(netip.MustParseAddr("fd00:7::1"))[:30]),
	} {
		if got := run(t, c.steering, in); got != 0 {
			t.Errorf("input % x: queue %d, want 0", in[14:], got)
		}
	}
}

func TestLoadErrorsAndClose(t *testing.T) {
	if _, err := Load(Config{Sockets: 0}); err == nil {
		t.Fatal("Sockets=0 accepted")
	}
	c := loadForTest(t, Config{Sockets: 2})
	if err := c.SetRoute(netip.MustParsePrefix("10.0.0.0/8"), 1); err == nil {
		t.Fatal("SetRoute without TUNSteering succeeded")
	}
	if err := Supported(); err != nil {
		t.Fatalf("Supported: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := c.AddSession(1); !errors.Is(err, ErrClosed) {
		t.Fatalf("AddSession after Close: %v", err)
	}
	if _, err := c.Stats(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Stats after Close: %v", err)
	}
}

func TestKernelErrClassification(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want error
	}{
		{fmt.Errorf("x: %w", os.ErrPermission), ErrPermission},
		{fmt.Errorf("wrapped: %w", errEPERM), ErrPermission},
		{fmt.Errorf("wrapped: %w", errEINVAL), ErrUnsupported},
		{ebpf.ErrNotSupported, ErrUnsupported},
	} {
		if got := kernelErr("op", tc.err); !errors.Is(got, tc.want) {
			t.Errorf("kernelErr(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func BenchmarkEarlyDrop(b *testing.B) {
	c := loadForTest(b, Config{Sockets: 4})
	lim := loadForTest(b, Config{Sockets: 4, HandshakeSocket: true, HandshakeRate: 1e9, HandshakeBurst: 1e9})
	empty := loadForTest(b, Config{Sockets: 4, HandshakeRate: 0.001, HandshakeBurst: 1})
	for i := range uint32(1000) {
		if err := c.AddSession(i); err != nil {
			b.Fatal(err)
		}
		if err := lim.AddSession(i); err != nil {
			b.Fatal(err)
		}
	}
	if run(b, empty.earlyDrop, loginFrom(netip.MustParseAddr("192.0.2.1"), 200)) != passed {
		b.Fatal("first login refused")
	}
	for _, bc := range []struct {
		name string
		prog *ebpf.Program
		in   []byte
	}{
		{"earlydrop/data-known", c.earlyDrop, frame(etherExperimental, udpHeader, packet(protocol.CodeData, 500, 1420))},
		{"earlydrop/data-unknown", c.earlyDrop, frame(etherExperimental, udpHeader, packet(protocol.CodeData, 5000, 1420))},
		{"earlydrop/badcode", c.earlyDrop, frame(etherExperimental, udpHeader, packet(9, 1, 64))},
		{"earlydrop/handshake", c.earlyDrop, frame(etherExperimental, udpHeader, packet(protocol.CodeClientAuthRequest, 1, 200))},
		{"reuseport/data", c.reuseport, frame(etherExperimental, packet(protocol.CodeData, 500, 1420))},
		// The login limit: a source whose bucket never empties (so every run takes the admit path and
		// stores), one whose bucket is empty (lookup, refuse, count), data under the limit (unchanged
		// path), and the selector's handshake verdict.
		{"earlydrop/login-limited-pass", lim.earlyDrop, loginFrom(netip.MustParseAddr("192.0.2.1"), 200)},
		{"earlydrop/login-limited-drop", empty.earlyDrop, loginFrom(netip.MustParseAddr("192.0.2.1"), 200)},
		{"earlydrop/login-limited-v6-pass", lim.earlyDrop, loginFrom(netip.MustParseAddr("100::1"), 200)},
		{"earlydrop/data-known-with-limit", lim.earlyDrop, frame(etherExperimental, udpHeader, packet(protocol.CodeData, 500, 1420))},
		{"reuseport/handshake", lim.reuseport, frame(etherExperimental, packet(protocol.CodeClientAuthRequest, 1, 200))},
		{"reuseport/data-with-handshake-socket", lim.reuseport, frame(etherExperimental, packet(protocol.CodeData, 500, 1420))},
	} {
		b.Run(bc.name, func(b *testing.B) {
			// The kernel repeats the program b.N times in one syscall and reports the mean run time, so
			// ns/op is the program itself, not the syscall around it.
			_, per, err := bc.prog.Benchmark(bc.in, b.N, nil)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(per.Nanoseconds()), "kernel-ns/op")
		})
	}
	// One BPF_PROG_TEST_RUN syscall per packet, as TestEarlyDropProgram does: mostly syscall cost.
	b.Run("earlydrop/prog.Run-per-call", func(b *testing.B) {
		in := frame(etherExperimental, udpHeader, packet(protocol.CodeData, 500, 1420))
		for b.Loop() {
			if _, err := c.earlyDrop.Run(&ebpf.RunOptions{Data: in}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

var (
	errEPERM  error = unix.EPERM
	errEINVAL error = unix.EINVAL
)

// TestEarlyDropUnknownSample: with UnknownSample set, the first unknown-session packet on a CPU passes (so
// the gateway can answer a client it forgot), the following ones within the interval are dropped and
// counted, and after the interval one passes again. Known sessions and junk are unaffected.
func TestEarlyDropUnknownSample(t *testing.T) {
	const interval = 200 * time.Millisecond
	c := loadForTest(t, Config{Sockets: 2, MaxSessions: 16, UnknownSample: interval})
	unknown := frame(etherExperimental, udpHeader, packet(protocol.CodeData, 0x0a0b0c0d, 100))
	junk := frame(etherExperimental, udpHeader, packet(7, 1, 64))
	// prog.Run may move between CPUs; pin to one so the per-CPU gate is the same slot throughout.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var orig, set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &orig); err != nil {
		t.Fatal(err)
	}
	set.Set(0)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		t.Fatal(err)
	}
	// The thread goes back to the runtime's pool afterwards: give it back all its CPUs.
	defer func() { _ = unix.SchedSetaffinity(0, &orig) }()
	start := time.Now()
	if got := run(t, c.earlyDrop, unknown); got != passed {
		t.Fatalf("first unknown-session packet: %#x, want pass", got)
	}
	for range 5 {
		if got := run(t, c.earlyDrop, unknown); got != 0 {
			if time.Since(start) < interval {
				t.Fatalf("unknown-session packet within the interval passed")
			}
		}
	}
	if got := run(t, c.earlyDrop, junk); got != 0 {
		t.Fatalf("junk passed")
	}
	st, err := c.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.DroppedUnknownSession < 1 || st.DroppedBadCode != 1 {
		t.Fatalf("stats %+v", st)
	}
	time.Sleep(interval) // the gate is time-based; waiting out the interval is the behaviour under test
	if got := run(t, c.earlyDrop, unknown); got != passed {
		t.Fatalf("unknown-session packet after the interval: %#x, want pass", got)
	}
}
