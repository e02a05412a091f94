package classifier

import (
	"encoding/binary"
	"fmt"
	"math"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/salvovpn/salvo/protocol"
)

// prog.Run tests of the handshake socket (selector) and the per-source login limit (early-drop filter).
//
// Where the filter finds the source address in prog.Run: BPF_PROG_TEST_RUN resets the network header to
// where skb->data starts (after the Ethernet header it pulls), so the "IP header" the filter reads with
// BPF_HDR_START_NET is the same bytes as its UDP header and payload:
//
//	IP header byte   0         8..11        12..15        16..23
//	prog.Run input   udp[0]    payload 0..3 payload 4..7  payload 8..15
//	meaning          version   IPv6 src 0..3 / IPv4 src   IPv6 src 8..15 (not in the /64 key)
//
// so loginFrom puts the version nibble in the (unread) UDP header, an IPv4 source in the payload's sender
// index, and an IPv6 source's first 8 bytes over the payload's first 8, which is why IPv6 test sources
// start with 0x01, the code. On a real socket the IP header is in front of the UDP header (namespace
// tests in handshake_netns_linux_test.go).

// loginFrom is a prog.Run input for a login request of n payload bytes from src.
func loginFrom(src netip.Addr, n int) []byte {
	hdr := make([]byte, udpHeaderLen)
	p := packet(protocol.CodeClientAuthRequest, 0, max(n, 16))
	if src.Is4() {
		hdr[0] = 0x45
		a := src.As4()
		copy(p[4:8], a[:])
	} else {
		a := src.As16()
		if a[0] != byte(protocol.CodeClientAuthRequest) {
			panic("loginFrom: an IPv6 test source must start with 0x01 (see the table above)")
		}
		hdr[0] = 0x60
		copy(p[:16], a[:])
	}
	return frame(etherExperimental, hdr, p[:n])
}

// skbCtx is struct __sk_buff as BPF_PROG_TEST_RUN takes it as ctx_in: only a few fields may be set (the
// rest must be zero), gso_size among them.
type skbCtx struct {
	_       [offGsoSize]byte
	GsoSize uint32
	_       [192 - offGsoSize - 4]byte
}

// runTrain runs p on in as if it were a GRO train of gsoSize-byte datagrams (0: a single datagram).
func runTrain(t testing.TB, p *ebpf.Program, in []byte, gsoSize uint32) uint32 {
	t.Helper()
	ret, err := p.Run(&ebpf.RunOptions{Data: in, Context: skbCtx{GsoSize: gsoSize}})
	if err != nil {
		t.Fatalf("prog.Run with gso_size %d: %v", gsoSize, err)
	}
	return ret
}

func stats(t testing.TB, c *Classifier) Stats {
	t.Helper()
	st, err := c.Stats()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestReuseportHandshakeSocket(t *testing.T) {
	for _, sockets := range []int{1, 2, 4} {
		c := loadForTest(t, Config{Sockets: sockets, HandshakeSocket: true, MaxSessions: 4})
		if got := c.cfg.GroupSize(); got != sockets+1 {
			t.Fatalf("GroupSize = %d, want %d", got, sockets+1)
		}
		// Every datagram that starts with 0x01 goes to the handshake socket, whatever its length.
		for _, n := range []int{1, 7, 8, protocol.MinRequestLen - 1, protocol.MinRequestLen, 1420} {
			if got := run(t, c.reuseport, frame(etherExperimental, packet(protocol.CodeClientAuthRequest, 3, n))); got != uint32(sockets) {
				t.Errorf("sockets=%d login len=%d: socket %d, want the handshake socket %d", sockets, n, got, sockets)
			}
		}
		// Data and disconnect go to workers only: index % Sockets, never index % (Sockets+1).
		for _, idx := range []uint32{0, 1, 2, 3, 4, 5, 0x7fffffff, 0xffffffff, 0x01020304} {
			for _, code := range []protocol.Code{protocol.CodeData, protocol.CodeDisconnect} {
				for _, n := range []int{8, protocol.MinDataLen, 1420} {
					got := run(t, c.reuseport, frame(etherExperimental, packet(code, idx, n)))
					if want := idx % uint32(sockets); got != want {
						t.Errorf("sockets=%d %v idx=%#x len=%d: socket %d, want %d", sockets, code, idx, n, got, want)
					}
				}
			}
		}
		// Everything else keeps the kernel's hash.
		for _, p := range [][]byte{
			nil, {3}, {6}, packet(protocol.CodeData, 1, 7), packet(protocol.CodeDisconnect, 1, 7),
			packet(protocol.CodeServerAuthResponse, 1, 100), packet(protocol.CodeCookieReply, 1, 64),
			packet(protocol.CodeNotice, 1, 8), packet(0, 1, 64), packet(7, 1, 64), packet(255, 1, 64),
		} {
			if got := run(t, c.reuseport, frame(etherExperimental, p)); got != passed {
				t.Errorf("sockets=%d payload % x: %#x, want fall-through %#x", sockets, p, got, uint32(passed))
			}
		}
	}
}

// TestEarlyDropLoginLimit covers every branch of the login limit with a bucket that cannot refill during
// the test (one token per 100 s).
func TestEarlyDropLoginLimit(t *testing.T) {
	const burst = 3
	c := loadForTest(t, Config{Sockets: 2, MaxSessions: 16, HandshakeRate: 0.01, HandshakeBurst: burst})
	const known = 5
	if err := c.AddSession(known); err != nil {
		t.Fatal(err)
	}
	var want Stats
	check := func(label string, in []byte, gsoSize uint32, pass bool) {
		t.Helper()
		got := runTrain(t, c.earlyDrop, in, gsoSize)
		switch {
		case pass && got != passed:
			t.Errorf("%s: %#x, want pass", label, got)
		case !pass && got != 0:
			t.Errorf("%s: %#x, want drop", label, got)
		}
		if st := stats(t, c); st != want {
			t.Fatalf("%s: stats %+v, want %+v", label, st, want)
		}
	}
	// login sends one login request from src, or with segs > 0 a GRO train of segs of them.
	login := func(label, src string, segs int, pass bool) {
		t.Helper()
		if !pass {
			want.DroppedRateLimited++
		}
		const seg = protocol.MinRequestLen
		if segs == 0 {
			check(label, loginFrom(netip.MustParseAddr(src), seg), 0, pass)
			return
		}
		check(label, loginFrom(netip.MustParseAddr(src), segs*seg), seg, pass)
	}

	// One IPv4 source: burst, then nothing.
	for i := range burst {
		login(fmt.Sprintf("v4 A #%d", i), "192.0.2.1", 0, true)
	}
	login("v4 A over the burst", "192.0.2.1", 0, false)
	login("v4 A again", "192.0.2.1", 0, false)
	// A bigger request is no different.
	want.DroppedRateLimited++
	check("v4 A 1420 bytes", loginFrom(netip.MustParseAddr("192.0.2.1"), 1420), 0, false)
	// Another address has its own bucket.
	login("v4 B", "192.0.2.2", 0, true)
	// A's other packets are not limited (bytes 4..7 of a payload are the IPv4 source here, see above).
	v4hdr := []byte{0x45, 0, 0, 0, 0, 0, 0, 0}
	addrA := binary.LittleEndian.Uint32([]byte{192, 0, 2, 1})
	for _, p := range [][]byte{
		packet(protocol.CodeServerAuthResponse, addrA, protocol.MinResponseLen),
		packet(protocol.CodeCookieReply, addrA, protocol.CookieReplyLen),
		packet(protocol.CodeNotice, addrA, protocol.NoticeLen),
		packet(protocol.CodeData, known, 200), // its "source" is the index: not A, but not limited either
	} {
		check(fmt.Sprintf("v4 A code %d", p[0]), frame(etherExperimental, v4hdr, p), 0, true)
	}
	// Short login requests are dropped as short and cost no token.
	for i := range 5 {
		want.DroppedShort++
		check(fmt.Sprintf("v4 C short #%d", i), loginFrom(netip.MustParseAddr("192.0.2.3"), protocol.MinRequestLen-1), 0, false)
	}
	for i := range burst {
		login(fmt.Sprintf("v4 C #%d after short ones", i), "192.0.2.3", 0, true)
	}
	login("v4 C over the burst", "192.0.2.3", 0, false)

	// IPv6: the key is the /64, so the low 64 bits do not matter.
	for i := range burst {
		login(fmt.Sprintf("v6 P #%d", i), fmt.Sprintf("100:0:0:1::%x", i+1), 0, true)
	}
	login("v6 P other host in the /64", "100:0:0:1:ffff:ffff:ffff:ffff", 0, false)
	login("v6 other /64", "100:0:0:2::1", 0, true)
	// An IPv6 /64 holding v4 A's address bytes is another source: the family is part of the key.
	login("v6 /64 holding v4 A's bytes", "100:0:c000:201::1", 0, true)

	// Not IP (version 0, 5, 7): not limited, no map entry.
	for _, v := range []byte{0x00, 0x50, 0x70} {
		for i := range burst + 2 {
			in := loginFrom(netip.MustParseAddr("192.0.2.1"), protocol.MinRequestLen)
			in[14] = v
			check(fmt.Sprintf("version nibble %d #%d", v>>4, i), in, 0, true)
		}
	}

	// GRO trains cost one token per datagram (payload / gso_size, rounded up) and pass only whole.
	login("train of burst+1 from fresh D", "192.0.2.4", burst+1, false)
	login("train of 2 from D", "192.0.2.4", 2, true)
	login("train of 2 from D with 1 left", "192.0.2.4", 2, false)
	login("single from D with 1 left", "192.0.2.4", 0, true)
	login("single from D, empty", "192.0.2.4", 0, false)
	for i := range burst {
		login(fmt.Sprintf("train of 1 from E #%d", i), "192.0.2.5", 1, true)
	}
	login("train of 1 from E, empty", "192.0.2.5", 1, false)
	// 2 full datagrams and a shorter last one are 3.
	check("train of 2 1/2 from fresh F: 3 of 3 tokens", loginFrom(netip.MustParseAddr("192.0.2.6"), 2*protocol.MinRequestLen+50), protocol.MinRequestLen, true)
	login("one more from F", "192.0.2.6", 0, false)
	// gso_size 1: 3000 one-byte "datagrams" (a forged train) never fit; no overflow either.
	login("first from G", "192.0.2.7", 0, true)
	want.DroppedRateLimited++
	check("3000 datagrams from G", loginFrom(netip.MustParseAddr("192.0.2.7"), 3000), 1, false)
	login("single from G after a refused train", "192.0.2.7", 0, true)

	// The map holds exactly the IP sources seen, keyed by family and address or /64.
	var keys []string
	var k [sourceKeyLen]byte
	var v uint64
	it := c.sources.Iterate()
	for it.Next(&k, &v) {
		keys = append(keys, fmt.Sprintf("% x", k))
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	var wantKeys []string
	for _, a := range []string{"192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4", "192.0.2.5", "192.0.2.6",
		"192.0.2.7", "100:0:0:1::", "100:0:0:2::", "100:0:c000:201::"} {
		wantKeys = append(wantKeys, fmt.Sprintf("% x", sourceKey(netip.MustParseAddr(a))))
	}
	slices.Sort(keys)
	slices.Sort(wantKeys)
	if !slices.Equal(keys, wantKeys) {
		t.Errorf("source map keys:\n%s\nwant:\n%s", strings.Join(keys, "\n"), strings.Join(wantKeys, "\n"))
	}
	v4 := sourceKey(netip.MustParseAddr("192.0.2.1"))
	littleEndian := binary.NativeEndian.Uint16([]byte{1, 0}) == 1
	if littleEndian && v4 != [sourceKeyLen]byte{familyV4, 0, 0, 0, 0, 0, 0, 0, 192, 0, 2, 1} {
		t.Errorf("IPv4 key layout % x", v4)
	}
	v6 := sourceKey(netip.MustParseAddr("2001:db8:1:2:3:4:5:6"))
	if littleEndian && v6 != [sourceKeyLen]byte{familyV6, 0, 0, 0, 0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 2} {
		t.Errorf("IPv6 key layout % x", v6)
	}
	if sourceKey(netip.MustParseAddr("::ffff:192.0.2.1")) != v4 {
		t.Error("IPv4-mapped address keyed apart from its IPv4 form")
	}
}

// TestEarlyDropLoginRefill: the bucket refills at HandshakeRate and holds no more than HandshakeBurst.
func TestEarlyDropLoginRefill(t *testing.T) {
	const interval = 20 * time.Millisecond
	c := loadForTest(t, Config{Sockets: 1, HandshakeRate: float64(time.Second / interval), HandshakeBurst: 2})
	in := loginFrom(netip.MustParseAddr("198.51.100.7"), protocol.MinRequestLen)
	// A verdict that depends on time is only checked when the machine was quick enough for it to be
	// certain. The second round proves the cap: five intervals of idling are worth two tokens, not five.
	for _, round := range []string{"fresh", "after idling 5 intervals"} {
		start := time.Now()
		a, b, cc := run(t, c.earlyDrop, in), run(t, c.earlyDrop, in), run(t, c.earlyDrop, in)
		if a != passed || b != passed {
			t.Fatalf("%s: first two of a burst of 2: %#x %#x, want pass", round, a, b)
		}
		if cc != 0 && time.Since(start) < interval {
			t.Fatalf("%s: third within one interval passed", round)
		}
		if round == "fresh" {
			time.Sleep(5 * interval) // the bucket is time-based: waiting is the behaviour under test
		}
	}
	// After one interval exactly one token is back.
	time.Sleep(interval + interval/2)
	start := time.Now()
	if got := run(t, c.earlyDrop, in); got != passed {
		t.Fatalf("after a refill: %#x, want pass", got)
	}
	if got := run(t, c.earlyDrop, in); got != 0 && time.Since(start) < interval/2 {
		t.Fatal("second right after a refill passed: the bucket was not empty")
	}
	if st := stats(t, c); st.DroppedRateLimited == 0 || st.DroppedRateLimited > 3 {
		t.Errorf("stats %+v, want 1..3 rate limited", st)
	}
}

// TestEarlyDropLoginNoLimit: HandshakeRate 0 builds no source map and never limits.
func TestEarlyDropLoginNoLimit(t *testing.T) {
	c := loadForTest(t, Config{Sockets: 2, HandshakeBurst: 1})
	if c.sources != nil {
		t.Fatal("source map created without HandshakeRate")
	}
	in := loginFrom(netip.MustParseAddr("192.0.2.1"), protocol.MinRequestLen)
	for i := range 100 {
		if got := runTrain(t, c.earlyDrop, in, uint32(i)); got != passed {
			t.Fatalf("login #%d: %#x, want pass", i, got)
		}
	}
	if st := stats(t, c); st != (Stats{}) {
		t.Fatalf("stats %+v", st)
	}
}

// TestLoginLimitEviction pins down what the kernel's LRU does when the source map is full, which decides
// what a flood from many (spoofed) sources can do. It is not plain LRU but two lists: a source seen once
// is inactive and evicted first, a source seen again while in the map is active and stays while new
// sources come and go. So
//   - every new source starts with a full bucket: a flood from fresh addresses is never limited;
//   - it evicts the sources seen only once (a genuine client that then comes back just gets a fresh,
//     full bucket: eviction never limits anybody more);
//   - it does not evict a source that keeps sending (the flooder of TestEarlyDropLoginLimit stays
//     limited).
//
// Pinned to one CPU: the LRU keeps per-CPU lists, and an entry parked on an idle CPU's list is not
// evicted at all (which only ever lets a source keep its bucket longer).
func TestLoginLimitEviction(t *testing.T) {
	const capacity = 1024
	c := loadForTest(t, Config{Sockets: 1, HandshakeRate: 0.01, HandshakeBurst: 1, HandshakeSources: capacity})
	pinToOneCPU(t)
	hot := loginFrom(netip.MustParseAddr("203.0.113.1"), protocol.MinRequestLen)
	once := loginFrom(netip.MustParseAddr("203.0.113.2"), protocol.MinRequestLen)
	if run(t, c.earlyDrop, hot) != passed || run(t, c.earlyDrop, hot) != 0 || run(t, c.earlyDrop, once) != passed {
		t.Fatal("burst of 1 not enforced")
	}
	for i := range 10 * capacity {
		src := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		if got := run(t, c.earlyDrop, loginFrom(src, protocol.MinRequestLen)); got != passed {
			t.Fatalf("new source %s: %#x, want pass (a fresh bucket)", src, got)
		}
	}
	n := 0
	var k [sourceKeyLen]byte
	var v uint64
	for it := c.sources.Iterate(); it.Next(&k, &v); {
		n++
	}
	if n > capacity {
		t.Errorf("source map holds %d entries, capacity %d", n, capacity)
	}
	t.Logf("after %d one-shot sources: %d entries of %d", 10*capacity, n, capacity)
	if got := run(t, c.earlyDrop, once); got != passed {
		t.Errorf("source seen once not evicted by %d new ones: %#x", 10*capacity, got)
	}
	if got := run(t, c.earlyDrop, hot); got != 0 {
		t.Errorf("source seen twice was evicted by one-shot sources: %#x", got)
	}
}

// pinToOneCPU keeps the calling goroutine on CPU 0 until the test ends.
func pinToOneCPU(t *testing.T) {
	t.Helper()
	runtime.LockOSThread()
	var orig, set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &orig); err != nil {
		t.Fatal(err)
	}
	set.Set(0)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// The thread goes back to the runtime's pool: give it back all its CPUs first.
		_ = unix.SchedSetaffinity(0, &orig)
		runtime.UnlockOSThread()
	})
}

func TestLoadHandshakeConfig(t *testing.T) {
	for _, cfg := range []Config{
		{Sockets: 1, HandshakeRate: -1},
		{Sockets: 1, HandshakeRate: math.NaN()},
		{Sockets: 1, HandshakeRate: math.Inf(1)},
		{Sockets: 1, HandshakeRate: 1e-4},
		{Sockets: 1, HandshakeRate: 2e9},
		{Sockets: 1, HandshakeRate: 1, HandshakeBurst: -1},
		{Sockets: 1, HandshakeRate: 1, HandshakeBurst: 2e9},
		{Sockets: 1, HandshakeRate: 1, HandshakeSources: -1},
		{Sockets: 1, HandshakeRate: 1, HandshakeSources: 1<<24 + 1},
		{Sockets: 1, HandshakeRate: 0.001, HandshakeBurst: 1e9}, // 1e21 ns of tokens
	} {
		if c, err := Load(cfg); err == nil {
			c.Close()
			t.Errorf("Load(%+v) succeeded", cfg)
		} else if !strings.Contains(err.Error(), "Handshake") {
			t.Errorf("Load(%+v): %v does not name the field", cfg, err)
		}
	}
	c := loadForTest(t, Config{Sockets: 3, HandshakeSocket: true, HandshakeRate: DefaultHandshakeRate})
	if c.cfg.HandshakeBurst != DefaultHandshakeBurst || c.cfg.HandshakeSources != DefaultHandshakeSources {
		t.Errorf("defaults not applied: %+v", c.cfg)
	}
	info, err := c.sources.Info()
	if err != nil {
		t.Fatal(err)
	}
	if info.MaxEntries != DefaultHandshakeSources || info.KeySize != sourceKeyLen || info.Type != ebpf.LRUHash {
		t.Errorf("source map %+v", info)
	}
	if m, ok := info.Memlock(); ok {
		t.Logf("source map of %d entries: %d bytes of kernel memory, %.0f per source", info.MaxEntries, m, float64(m)/float64(info.MaxEntries))
	}
	if (Config{Sockets: 3}).GroupSize() != 3 || (Config{Sockets: 3, HandshakeSocket: true}).GroupSize() != 4 {
		t.Error("GroupSize")
	}
}
