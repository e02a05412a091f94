package classifier

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/salvovpn/salvo/internal/netns"
	"github.com/salvovpn/salvo/protocol"
)

// Namespace tests of the handshake socket and the per-source login limit on real reuseport groups: they
// prove that the kernel steers by the selector's verdict, that the filter finds the source address in
// front of the UDP header (IPv4, IPv6, and IPv4 on a dual-stack IPv6 socket), and how it charges GRO
// trains.

func loginPacket() []byte { return packet(protocol.CodeClientAuthRequest, 99, protocol.MinRequestLen) }

func TestHandshakeSocketNamespace(t *testing.T) {
	for _, fam := range []struct{ network, addr string }{{"udp4", "127.0.0.1"}, {"udp6", "::1"}} {
		for _, workers := range []int{1, 2} {
			t.Run(fmt.Sprintf("%s/%d-workers", fam.network, workers), func(t *testing.T) {
				testHandshakeSocket(t, fam.network, fam.addr, workers)
			})
		}
	}
}

func testHandshakeSocket(t *testing.T, network, addr string, workers int) {
	c := loadForTest(t, Config{Sockets: workers, HandshakeSocket: true, MaxSessions: 64})
	ns := netns.ForTest(t, "salvo-bpf-")
	conns := reuseGroup(t, ns, network, addr, workers+1)
	hs := workers // the handshake socket: bound last
	const nIdx = 64
	for i := range uint32(nIdx) {
		if err := c.AddSession(i); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.AttachGroup(rawConns(t, conns[:workers])); err == nil {
		t.Fatal("AttachGroup without the handshake socket succeeded")
	}
	if err := c.AttachGroup(rawConns(t, conns)); err != nil {
		t.Fatalf("AttachGroup: %v", err)
	}

	// Login requests from many source ports all land on the handshake socket.
	const nSrc = 32
	for range nSrc {
		send(t, sender(t, ns, network, addr), conns[0], loginPacket())
	}
	got := collect(t, conns, nSrc)
	for s, g := range got {
		if want := map[bool]int{true: nSrc, false: 0}[s == hs]; len(g) != want {
			t.Errorf("logins from %d ports: socket %d got %d, want %d (per-socket %v)", nSrc, s, len(g), want, counts(got))
		}
	}

	// Data for index i lands on worker i % workers, never on the handshake socket, from any source.
	for _, label := range []string{"one source", "rebound source port"} {
		send(t, sender(t, ns, network, addr), conns[0], dataPackets(0, nIdx)...)
		got := collect(t, conns, nIdx)
		if len(got[hs]) != 0 {
			t.Errorf("%s: %d data packets on the handshake socket (%v)", label, len(got[hs]), indexes(got[hs]))
		}
		for s, g := range got[:workers] {
			idx := indexes(g)
			if len(idx) != nIdx/workers {
				t.Errorf("%s: worker %d got %d packets, want %d", label, s, len(idx), nIdx/workers)
			}
			for _, i := range idx {
				if int(i)%workers != s {
					t.Errorf("%s: index %d on worker %d, want %d", label, i, s, int(i)%workers)
				}
			}
		}
		t.Logf("%s: data per socket %v (the last is the handshake socket)", label, counts(got))
	}

	// The other handshake-side codes keep the kernel's hash over the whole group: each delivered once.
	for range nSrc {
		send(t, sender(t, ns, network, addr), conns[0], packet(protocol.CodeCookieReply, 1, protocol.CookieReplyLen))
	}
	got = collect(t, conns, nSrc)
	if n := sum(counts(got)); n != nSrc {
		t.Errorf("cookie replies: %d delivered (%v), want %d", n, counts(got), nSrc)
	}
	t.Logf("cookie replies from %d ports (kernel hash): per socket %v", nSrc, counts(got))

	ids := progIDs(t, c)
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	waitProgsGone(t, ids)
}

func sum(xs []int) int {
	n := 0
	for _, x := range xs {
		n += x
	}
	return n
}

// TestHandshakeFloodIsolation is the case the handshake socket exists for: a flood of valid-looking login
// requests from 200 source ports while the handshake socket's reader is stuck. Its queue overflows, and
// every data packet still reaches its worker.
func TestHandshakeFloodIsolation(t *testing.T) {
	const workers = 2
	c := loadForTest(t, Config{Sockets: workers, HandshakeSocket: true, MaxSessions: 16})
	ns := netns.ForTest(t, "salvo-bpf-")
	conns := reuseGroup(t, ns, "udp4", "127.0.0.1", workers+1)
	for i := range uint32(workers) {
		if err := c.AddSession(i); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.AttachGroup(rawConns(t, conns)); err != nil {
		t.Fatal(err)
	}
	hsConn := conns[workers]
	if err := hsConn.SetReadBuffer(64 << 10); err != nil {
		t.Fatal(err)
	}

	// The workers read all the time, as a gateway's do.
	var (
		mu         sync.Mutex
		data       = make([][]uint32, workers)
		logins     int
		stop       = make(chan struct{})
		readersWG  sync.WaitGroup
		dataPerIdx = 100
	)
	for w, conn := range conns[:workers] {
		readersWG.Add(1)
		go func() {
			defer readersWG.Done()
			buf := make([]byte, 2048)
			for {
				select {
				case <-stop:
					return
				default:
				}
				conn.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
				n, _, err := conn.ReadFromUDP(buf)
				if err != nil {
					continue
				}
				mu.Lock()
				if buf[0] == byte(protocol.CodeClientAuthRequest) {
					logins++
				} else {
					data[w] = append(data[w], indexes([][]byte{buf[:n]})...)
				}
				mu.Unlock()
			}
		}()
	}

	before := snmp(t, ns)
	var flooders []*net.UDPConn
	for range 200 {
		flooders = append(flooders, sender(t, ns, "udp4", "127.0.0.1"))
	}
	victim := sender(t, ns, "udp4", "127.0.0.1")
	const nLogins = 20000
	login := loginPacket()
	sent := 0
	for i := range nLogins {
		send(t, flooders[i%len(flooders)], conns[0], login)
		if i%(nLogins/(workers*dataPerIdx)) == 0 {
			send(t, victim, conns[0], packet(protocol.CodeData, uint32(sent%workers), 200))
			sent++
		}
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		mu.Lock()
		n := len(data[0]) + len(data[1])
		mu.Unlock()
		if n >= workers*dataPerIdx || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // anything stray
	close(stop)
	readersWG.Wait()
	queued := len(collect(t, conns[workers:], 0)[0])
	after := snmp(t, ns)

	for w, idx := range data {
		if len(idx) != dataPerIdx {
			t.Errorf("worker %d got %d data packets, want %d", w, len(idx), dataPerIdx)
		}
		for _, i := range idx {
			if int(i) != w {
				t.Errorf("index %d on worker %d", i, w)
			}
		}
	}
	if logins != 0 {
		t.Errorf("%d login requests reached the workers", logins)
	}
	overflow := after["Udp.RcvbufErrors"] - before["Udp.RcvbufErrors"]
	if queued >= nLogins || overflow != uint64(nLogins-queued) {
		t.Errorf("handshake socket: %d of %d logins queued, RcvbufErrors +%d, want the rest overflowed", queued, nLogins, overflow)
	}
	t.Logf("%d logins from %d ports, handshake socket not read: %d queued, %d overflowed; data per worker %d, %d",
		nLogins, len(flooders), queued, overflow, len(data[0]), len(data[1]))
}

// sendTo sends payloads from one socket to dst.
func sendTo(t *testing.T, from *net.UDPConn, dst netip.AddrPort, payloads ...[]byte) {
	t.Helper()
	for _, p := range payloads {
		if _, err := from.WriteToUDPAddrPort(p, dst); err != nil {
			t.Fatalf("send to %s: %v", dst, err)
		}
	}
}

// TestHandshakeRateLimitNamespace: one source (one bucket) sends 100 login requests a second for 2.5 s,
// 50 others one a second each. The flooder gets at most burst + rate*t through, every other source all.
// The flooder's bucket is shared by two of its sockets: two ports of one IPv4 address, or two hosts of
// one IPv6 /64. "dual-stack" is an IPv6 socket bound to [::] receiving IPv4 clients.
func TestHandshakeRateLimitNamespace(t *testing.T) {
	type family struct {
		name, network, listen, dst string
		flood                      [2]string
		other                      func(i int) string
	}
	v4other := func(i int) string { return fmt.Sprintf("127.0.1.%d", i+1) }
	for _, f := range []family{
		{"udp4", "udp4", "127.0.0.1", "127.0.0.1", [2]string{"127.0.0.2", "127.0.0.2"}, v4other},
		{"dual-stack", "udp", "::", "127.0.0.1", [2]string{"127.0.0.2", "127.0.0.2"}, v4other},
		{"udp6", "udp6", "::1", "::1", [2]string{"fd00:0:0:1::1", "fd00:0:0:1::2"},
			func(i int) string { return fmt.Sprintf("fd00:0:0:%x::1", 0x100+i) }},
	} {
		t.Run(f.name, func(t *testing.T) {
			t.Parallel()
			testRateLimit(t, f.network, f.listen, f.dst, f.flood, f.other)
		})
	}
}

func testRateLimit(t *testing.T, network, listen, dstAddr string, floodAddrs [2]string, otherAddr func(int) string) {
	const (
		rate, burst = DefaultHandshakeRate, DefaultHandshakeBurst
		nOthers     = 50
		tick        = 10 * time.Millisecond // the flooder's 100 a second
		ticks       = 250                   // 2.5 s
		otherEvery  = 100                   // ticks: the others' one a second
	)
	c := loadForTest(t, Config{Sockets: 2, HandshakeSocket: true, HandshakeRate: rate, HandshakeBurst: burst})
	ns := netns.ForTest(t, "salvo-bpf-")
	sendNet := "udp4"
	if netip.MustParseAddr(dstAddr).Is6() {
		sendNet = "udp6"
		addrs := floodAddrs[:]
		for i := range nOthers {
			addrs = append(addrs, otherAddr(i))
		}
		for _, a := range addrs {
			if err := ns.AddAddr("lo", a+"/128"); err != nil {
				t.Fatal(err)
			}
		}
	}
	conns := reuseGroup(t, ns, network, listen, 3)
	if err := c.AttachGroup(rawConns(t, conns)); err != nil {
		t.Fatal(err)
	}
	dst := netip.AddrPortFrom(netip.MustParseAddr(dstAddr), uint16(conns[0].LocalAddr().(*net.UDPAddr).Port))

	var (
		mu      sync.Mutex
		bySrc   = map[netip.Addr]int{}
		misrout int
		stop    = make(chan struct{})
		wg      sync.WaitGroup
	)
	for s, conn := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 2048)
			for {
				select {
				case <-stop:
					return
				default:
				}
				conn.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
				_, from, err := conn.ReadFromUDPAddrPort(buf)
				if err != nil {
					continue
				}
				mu.Lock()
				bySrc[from.Addr().Unmap()]++
				if s != 2 {
					misrout++
				}
				mu.Unlock()
			}
		}()
	}

	flood := [2]*net.UDPConn{sender(t, ns, sendNet, floodAddrs[0]), sender(t, ns, sendNet, floodAddrs[1])}
	var others []*net.UDPConn
	for i := range nOthers {
		others = append(others, sender(t, ns, sendNet, otherAddr(i)))
	}
	login := loginPacket()
	start := time.Now()
	for i := range ticks {
		time.Sleep(time.Until(start.Add(time.Duration(i) * tick)))
		sendTo(t, flood[i%2], dst, login)
		if i%otherEvery == 0 {
			for _, o := range others {
				sendTo(t, o, dst, login)
			}
		}
	}
	elapsed := time.Since(start)
	othersSent := nOthers * ((ticks + otherEvery - 1) / otherEvery)
	deadline := time.Now().Add(3 * time.Second)
	for {
		mu.Lock()
		n := 0
		for i := range nOthers {
			n += bySrc[netip.MustParseAddr(otherAddr(i))]
		}
		mu.Unlock()
		if n >= othersSent || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	close(stop)
	wg.Wait()

	floodPassed := bySrc[netip.MustParseAddr(floodAddrs[0])]
	if floodAddrs[1] != floodAddrs[0] {
		floodPassed += bySrc[netip.MustParseAddr(floodAddrs[1])]
	}
	limit := burst + rate*elapsed.Seconds()
	if float64(floodPassed) > limit+1 || float64(floodPassed) < burst+rate*elapsed.Seconds()/2 {
		t.Errorf("flooder: %d of %d passed in %v, want at most burst + rate*t = %.1f (and the refill: at least %.1f)",
			floodPassed, ticks, elapsed.Round(time.Millisecond), limit, burst+rate*elapsed.Seconds()/2)
	}
	for i := range nOthers {
		if n, want := bySrc[netip.MustParseAddr(otherAddr(i))], othersSent/nOthers; n != want {
			t.Errorf("source %s: %d of %d passed", otherAddr(i), n, want)
		}
	}
	if misrout != 0 {
		t.Errorf("%d login requests reached a worker socket", misrout)
	}
	st := stats(t, c)
	if st.DroppedRateLimited != uint64(ticks-floodPassed) {
		t.Errorf("DroppedRateLimited %d, want %d (the flooder's drops)", st.DroppedRateLimited, ticks-floodPassed)
	}
	t.Logf("flooder %v: %d of %d passed in %v (burst + rate*t = %.1f); %d others: all %d passed; stats %+v",
		floodAddrs, floodPassed, ticks, elapsed.Round(time.Millisecond), limit, nOthers, othersSent, st)
}

// TestHandshakeLimitGROTrain sends trains of login requests with UDP_SEGMENT over loopback. A UDP_GRO
// socket receives a train as one message and the filter judges it once: it costs one token per datagram
// and passes whole or not at all. A socket without UDP_GRO gets the train segmented before the filter,
// which then judges and charges each datagram alone.
func TestHandshakeLimitGROTrain(t *testing.T) {
	const burst = 40
	for _, tc := range []struct {
		gro   bool
		steps [][2]int // datagrams sent in one train, datagrams that must arrive
	}{
		{true, [][2]int{{burst + 1, 0}, {30, 30}, {11, 0}, {10, 10}, {1, 0}}},
		{false, [][2]int{{30, 30}, {11, 10}, {1, 0}}},
	} {
		t.Run(fmt.Sprintf("UDP_GRO=%v", tc.gro), func(t *testing.T) {
			c := loadForTest(t, Config{Sockets: 1, HandshakeRate: 0.01, HandshakeBurst: burst})
			ns := netns.ForTest(t, "salvo-bpf-")
			rcv := reuseGroup(t, ns, "udp4", "127.0.0.1", 1)[0]
			rc := rawConns(t, []*net.UDPConn{rcv})
			if tc.gro {
				var serr error
				if err := rc[0].Control(func(fd uintptr) {
					serr = unix.SetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_GRO, 1)
				}); err != nil || serr != nil {
					t.Fatal(errors.Join(err, serr))
				}
			}
			if err := c.AttachGroup(rc); err != nil {
				t.Fatal(err)
			}
			src := sender(t, ns, "udp4", "127.0.0.1")
			dst := rcv.LocalAddr().(*net.UDPAddr)
			seg := protocol.MinRequestLen
			var wantDropped uint64
			for _, step := range tc.steps {
				n, want := step[0], step[1]
				var train []byte
				for range n {
					train = append(train, loginPacket()...)
				}
				var oob []byte
				if n > 1 {
					oob = udpSegmentCmsg(seg)
				}
				if _, _, err := src.WriteMsgUDP(train, oob, dst); err != nil {
					t.Fatalf("train of %d: %v", n, err)
				}
				msgs, got := recvDatagrams(t, rcv)
				if got != want {
					t.Errorf("train of %d: %d datagrams arrived in %d messages, want %d", n, got, msgs, want)
				}
				if tc.gro && want > 1 && msgs != 1 {
					t.Errorf("train of %d arrived as %d messages: not coalesced, the test proves nothing", n, msgs)
				}
				if got < n {
					wantDropped++ // a train judged whole counts once; a segmented one once per datagram
					if !tc.gro {
						wantDropped += uint64(n - got - 1)
					}
				}
				t.Logf("train of %d: %d datagrams arrived in %d messages", n, got, msgs)
			}
			if st := stats(t, c); st.DroppedRateLimited != wantDropped {
				t.Errorf("DroppedRateLimited %d, want %d", st.DroppedRateLimited, wantDropped)
			}
		})
	}
}

// udpSegmentCmsg is the UDP_SEGMENT control message that makes one send a GSO train of size-byte datagrams.
func udpSegmentCmsg(size int) []byte {
	oob := make([]byte, unix.CmsgSpace(2))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	h.Level, h.Type = unix.SOL_UDP, unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	*(*uint16)(unsafe.Pointer(&oob[unix.CmsgLen(0)])) = uint16(size)
	return oob
}

// recvDatagrams reads until 100 ms pass without a message and returns the messages and the datagrams in
// them (a UDP_GRO message carries its segment size in a UDP_GRO control message).
func recvDatagrams(t *testing.T, c *net.UDPConn) (msgs, datagrams int) {
	t.Helper()
	buf := make([]byte, 1<<16)
	oob := make([]byte, 64)
	for {
		c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		n, oobn, _, _, err := c.ReadMsgUDP(buf, oob)
		if err != nil {
			return
		}
		msgs++
		segs := 1
		cms, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			t.Fatal(err)
		}
		for _, cm := range cms {
			if cm.Header.Level == unix.SOL_UDP && cm.Header.Type == unix.UDP_GRO && len(cm.Data) >= 4 {
				size := int(*(*int32)(unsafe.Pointer(&cm.Data[0])))
				segs = (n + size - 1) / size
			}
		}
		datagrams += segs
	}
}
