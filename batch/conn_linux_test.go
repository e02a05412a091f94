package batch

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func listen(t testing.TB, network, address string, opt Options) *Conn {
	t.Helper()
	c, err := Listen(network, address, opt)
	if err != nil {
		t.Fatalf("Listen(%s, %s): %v", network, address, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// sizeFor cycles through edge sizes: empty datagrams, tiny, typical tunnel MTUs, jumbo and the IPv4 maximum.
func sizeFor(i int) int {
	sizes := [...]int{0, 1, 64, 1420, 1500, 9000, 17, 0, 1280, 65507}
	return sizes[i%len(sizes)]
}

func fillPattern(b []byte, seed int) {
	for j := range b {
		b[j] = byte(seed*31 + j*7)
	}
}

// readN reads exactly want datagrams (several ReadBatch calls may be needed) or fails after a timeout.
func readN(t *testing.T, c *Conn, want int) ([][]byte, []netip.AddrPort) {
	t.Helper()
	// More slots than BatchSize: ReadBatch must clamp to its preallocated arrays.
	bufs := make([][]byte, c.BatchSize()+72)
	for i := range bufs {
		bufs[i] = make([]byte, MaxPacket)
	}
	sizes := make([]int, len(bufs))
	addrs := make([]netip.AddrPort, len(bufs))
	var got [][]byte
	var from []netip.AddrPort
	timer := time.AfterFunc(5*time.Second, func() { c.Close() })
	defer timer.Stop()
	for len(got) < want {
		n, err := c.ReadBatch(bufs, sizes, addrs)
		if err != nil {
			t.Fatalf("ReadBatch after %d/%d datagrams: %v", len(got), want, err)
		}
		if n < 1 || n > c.BatchSize() {
			t.Fatalf("ReadBatch returned %d datagrams (BatchSize %d)", n, c.BatchSize())
		}
		for i := 0; i < n; i++ {
			got = append(got, append([]byte(nil), bufs[i][:sizes[i]]...))
			from = append(from, addrs[i])
		}
	}
	return got, from
}

func checkBatch(t *testing.T, got [][]byte, from []netip.AddrPort, wantFrom netip.AddrPort, want int) {
	t.Helper()
	if len(got) != want {
		t.Fatalf("got %d datagrams, want %d", len(got), want)
	}
	for i := range got {
		exp := make([]byte, sizeFor(i))
		fillPattern(exp, i)
		// Loopback keeps the order of one socket's datagrams, so position identifies the datagram.
		if !bytes.Equal(got[i], exp) {
			t.Fatalf("datagram %d: %d bytes, want %d with pattern", i, len(got[i]), len(exp))
		}
		if from[i] != wantFrom {
			t.Fatalf("datagram %d from %v, want %v", i, from[i], wantFrom)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	cases := []struct {
		name                string
		srvNet, srvAddr     string
		cliNet, cliAddr     string
		dstIP, cliIP, srvIP netip.Addr // what the client dials; what each side must see as the peer
	}{
		{"ipv4", "udp4", "127.0.0.1:0", "udp4", "127.0.0.1:0",
			netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.1")},
		{"ipv6", "udp6", "[::1]:0", "udp6", "[::1]:0",
			netip.MustParseAddr("::1"), netip.MustParseAddr("::1"), netip.MustParseAddr("::1")},
		// An IPv4 client talking to a dual-stack "[::]" listener: the server sees 127.0.0.1 (unmapped) and
		// answers an IPv4 destination on its IPv6 socket.
		{"dualstack", "udp", "[::]:0", "udp4", "127.0.0.1:0",
			netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.1")},
		// The same listener reached over IPv6.
		{"dualstack-v6client", "udp", "[::]:0", "udp6", "[::1]:0",
			netip.MustParseAddr("::1"), netip.MustParseAddr("::1"), netip.MustParseAddr("::1")},
	}
	for _, tc := range cases {
		for _, count := range []int{1, 64, 128, 200} {
			t.Run(tc.name+"/"+strconv.Itoa(count), func(t *testing.T) {
				srv := listen(t, tc.srvNet, tc.srvAddr, Options{})
				cli := listen(t, tc.cliNet, tc.cliAddr, Options{})
				dst := netip.AddrPortFrom(tc.dstIP, srv.LocalAddr().Port())
				bufs := make([][]byte, count)
				addrs := make([]netip.AddrPort, count)
				for i := range bufs {
					bufs[i] = make([]byte, sizeFor(i))
					fillPattern(bufs[i], i)
					addrs[i] = dst
				}
				n, err := cli.WriteBatch(bufs, addrs)
				if n != count || err != nil {
					t.Fatalf("WriteBatch = %d, %v; want %d, nil", n, err, count)
				}
				got, from := readN(t, srv, count)
				checkBatch(t, got, from, netip.AddrPortFrom(tc.cliIP, cli.LocalAddr().Port()), count)

				// Echo back to the reported addresses: proves they are usable as destinations.
				n, err = srv.WriteBatch(got, from)
				if n != count || err != nil {
					t.Fatalf("echo WriteBatch = %d, %v; want %d, nil", n, err, count)
				}
				got, from = readN(t, cli, count)
				checkBatch(t, got, from, netip.AddrPortFrom(tc.srvIP, srv.LocalAddr().Port()), count)
			})
		}
	}
}

func TestCloseUnblocksRead(t *testing.T) {
	c := listen(t, "udp", "[::1]:0", Options{})
	done := make(chan error, 1)
	go func() {
		bufs := [][]byte{make([]byte, 100)}
		_, err := c.ReadBatch(bufs, make([]int, 1), make([]netip.AddrPort, 1))
		done <- err
	}()
	time.Sleep(50 * time.Millisecond) // let the reader park in the netpoller
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != net.ErrClosed {
			t.Fatalf("ReadBatch after Close = %v, want net.ErrClosed", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Close did not unblock ReadBatch")
	}
	if _, err := c.WriteBatch([][]byte{{1}}, []netip.AddrPort{c.LocalAddr()}); err != net.ErrClosed {
		t.Fatalf("WriteBatch after Close = %v, want net.ErrClosed", err)
	}
}

func TestWriteErrors(t *testing.T) {
	c := listen(t, "udp4", "127.0.0.1:0", Options{})
	peer := listen(t, "udp4", "127.0.0.1:0", Options{})
	ok := peer.LocalAddr()
	v6 := netip.MustParseAddrPort("[2001:db8::1]:9")
	b := [][]byte{{1}, {2}, {3}}

	// An IPv6 destination on an IPv4 socket: the datagram before it is sent, the error names index 1.
	n, err := c.WriteBatch(b, []netip.AddrPort{ok, v6, ok})
	if n != 1 || err != ErrAddressFamily {
		t.Fatalf("WriteBatch = %d, %v; want 1, ErrAddressFamily", n, err)
	}
	if n, err = c.WriteBatch(b[:1], []netip.AddrPort{{}}); n != 0 || err != ErrAddressFamily {
		t.Fatalf("zero address: %d, %v", n, err)
	}
	// A datagram larger than UDP allows fails in the kernel; the partial-send loop reports its index.
	big := make([]byte, 70000)
	n, err = c.WriteBatch([][]byte{{1}, {2}, big, {4}}, []netip.AddrPort{ok, ok, ok, ok})
	if n != 2 || !errors.Is(err, unix.EMSGSIZE) {
		t.Fatalf("oversized: %d, %v; want 2, EMSGSIZE", n, err)
	}
	if n, err = c.WriteBatch(nil, nil); n != 0 || err != nil {
		t.Fatalf("empty batch: %d, %v", n, err)
	}
}

func TestOptions(t *testing.T) {
	c := listen(t, "udp4", "127.0.0.1:0", Options{Mark: 0x5a1, ReusePort: true, BatchSize: 7})
	if c.BatchSize() != 7 {
		t.Fatalf("BatchSize = %d", c.BatchSize())
	}
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var mark, rcv, snd int
	var e1, e2, e3 error
	rc.Control(func(fd uintptr) {
		mark, e1 = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK)
		rcv, e2 = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
		snd, e3 = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF)
	})
	if err := errors.Join(e1, e2, e3); err != nil {
		t.Fatal(err)
	}
	if mark != 0x5a1 {
		t.Errorf("SO_MARK = %#x", mark)
	}
	// The kernel doubles the requested value for bookkeeping; FORCE needs CAP_NET_ADMIN (we run as root).
	if rcv < DefaultSocketBuffer || snd < DefaultSocketBuffer {
		t.Errorf("SO_RCVBUF/SO_SNDBUF = %d/%d, want >= %d", rcv, snd, DefaultSocketBuffer)
	}
	// A second socket may share the port only because of SO_REUSEPORT.
	listen(t, "udp4", c.LocalAddr().String(), Options{ReusePort: true})
	if _, err := Listen("udp4", c.LocalAddr().String(), Options{}); err == nil {
		t.Error("bind without SO_REUSEPORT succeeded")
	}
	if _, err := Listen("tcp", ":0", Options{}); err == nil {
		t.Error("tcp accepted")
	}
}

// TestAllocs proves a WriteBatch+ReadBatch cycle allocates nothing.
func TestAllocs(t *testing.T) {
	for _, network := range []string{"udp4", "udp6", "udp"} {
		addr := "127.0.0.1:0"
		if network != "udp4" {
			addr = "[::1]:0"
		}
		srv := listen(t, network, addr, Options{})
		cli := listen(t, network, addr, Options{})
		const k = 32
		out := make([][]byte, k)
		dst := make([]netip.AddrPort, k)
		for i := range out {
			out[i] = make([]byte, 1420)
			dst[i] = srv.LocalAddr()
		}
		in := make([][]byte, k)
		for i := range in {
			in[i] = make([]byte, MaxPacket)
		}
		sizes := make([]int, k)
		from := make([]netip.AddrPort, k)
		allocs := testing.AllocsPerRun(200, func() {
			if n, err := cli.WriteBatch(out, dst); n != k || err != nil {
				t.Fatalf("WriteBatch = %d, %v", n, err)
			}
			for got := 0; got < k; {
				n, err := srv.ReadBatch(in, sizes, from)
				if err != nil {
					t.Fatal(err)
				}
				got += n
			}
		})
		if allocs != 0 {
			t.Errorf("%s: %v allocations per WriteBatch+ReadBatch cycle, want 0", network, allocs)
		}
	}
}

// TestConcurrentReadWrite uses one Conn from a reader and a writer goroutine at once (the supported
// concurrency; run with -race): it sends to itself.
func TestConcurrentReadWrite(t *testing.T) {
	c := listen(t, "udp", "[::]:0", Options{BatchSize: 16})
	self := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), c.LocalAddr().Port())
	const total = 2000
	done := make(chan error, 1)
	go func() {
		bufs := make([][]byte, 16)
		dst := make([]netip.AddrPort, 16)
		for i := range bufs {
			bufs[i] = make([]byte, 100)
			dst[i] = self
		}
		for sent := 0; sent < total; {
			k := min(16, total-sent)
			for i := 0; i < k; i++ {
				bufs[i][0] = byte(sent + i)
			}
			n, err := c.WriteBatch(bufs[:k], dst[:k])
			if err != nil {
				done <- err
				return
			}
			sent += n
			if sent%256 == 0 {
				time.Sleep(time.Millisecond) // do not outrun the reader's socket buffer
			}
		}
		done <- nil
	}()
	got, from := readN(t, c, total)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for i := range got {
		if len(got[i]) != 100 || got[i][0] != byte(i) || from[i] != self {
			t.Fatalf("datagram %d: len %d first byte %d from %v", i, len(got[i]), got[i][0], from[i])
		}
	}
}
