package e2e

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/salvovpn/salvo/internal/netns"
)

// gsoSend sends segs datagrams of size bytes each as one UDP_SEGMENT send, then an empty datagram: what
// any unprivileged local process can do.
func gsoSend(t *testing.T, to netip.AddrPort, segs, size int) {
	t.Helper()
	c, err := net.ListenUDP("udp4", nil)
	must(t, err)
	defer c.Close()
	rc, err := c.SyscallConn()
	must(t, err)
	payload := make([]byte, segs*size)
	oob := make([]byte, unix.CmsgSpace(2))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	h.Level, h.Type = unix.SOL_UDP, unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	*(*uint16)(unsafe.Pointer(&oob[unix.CmsgLen(0)])) = uint16(size)
	sa := &unix.SockaddrInet4{Port: int(to.Port()), Addr: to.Addr().As4()}
	var serr error
	must(t, rc.Write(func(fd uintptr) bool {
		serr = unix.Sendmsg(int(fd), payload, oob, sa, 0)
		return true
	}))
	must(t, serr)
	_, err = c.WriteToUDPAddrPort(nil, to)
	must(t, err)
}

// TestLocalGSOSendCannotCrashGateway: a local process sends the gateway one UDP_SEGMENT train of 128 and
// one of 100 datagrams (this kernel accepts more than 64) and an empty datagram, which made the GRO split
// index past its arrays and kill the daemon. The gateway drops it all as junk and keeps serving.
func TestLocalGSOSendCannotCrashGateway(t *testing.T) {
	w := newWorld(t)
	srv := w.startServer("")
	c := w.addClient()
	w.connect(c, "alice", c.gwV4+":51820", "")
	must(t, w.gw.Do(func() error {
		gsoSend(t, netip.MustParseAddrPort(c.gwV4+":51820"), 128, 20)
		gsoSend(t, netip.MustParseAddrPort(c.gwV4+":51820"), 100, 20)
		return nil
	}))
	must(t, c.ns.Ping(netip.MustParseAddr(hostV4), 5*time.Second))
	if srv.exited() {
		t.Fatalf("the gateway died:\n%s", srv.output())
	}
	if st := w.serverStatus(); st.Panics != 0 {
		t.Fatalf("%d panics (recovered, but a bug)", st.Panics)
	}
}

// TestNarrowOuterPath: with the path between client and gateway narrowed to 1280, 1400 and 1492 bytes (a
// tunnel inside a tunnel, mobile paths), bulk TCP through the tunnel works both ways with GSO on. The
// client lowers the pushed tunnel MTU (1420) to what the path carries (path - 60 over IPv4), so TCP's
// segments fit and nothing is refused; where that would go below IPv6's 1280 (the 1280-byte path) the
// tunnel stays at 1280, some outer datagrams do not fit, and a GSO send of them is refused by the kernel
// and resent one by one, fragmented.
func TestNarrowOuterPath(t *testing.T) {
	for _, mtu := range []int{1280, 1400, 1492} {
		t.Run(fmt.Sprint(mtu), func(t *testing.T) {
			w := newWorld(t)
			w.startServer("")
			c := w.addClient()
			for _, side := range []struct {
				run func(...string) (string, error)
				dev string
			}{{w.gw.Run, fmt.Sprintf("toc%d", c.n)}, {c.ns.Run, "tog"}} {
				_, err := side.run("ip", "link", "set", side.dev, "mtu", fmt.Sprint(mtu))
				must(t, err)
			}
			w.connect(c, "alice", c.gwV4+":51820", "")
			tunMTU := min(1420, max(mtu-60, 1280)) // the pushed 1420, lowered to fit the path
			link, err := c.ns.Run("ip", "link", "show", clientTun)
			must(t, err)
			if !strings.Contains(link, fmt.Sprintf("mtu %d ", tunMTU)) {
				t.Fatalf("path %d: want tunnel MTU %d: %s", mtu, tunMTU, link)
			}
			host := netip.MustParseAddr(hostV4)
			transfer(t, c.ns, w.host, host, 16<<20) // up: the client's GSO sends
			download(t, c.ns, w.host, host, 16<<20) // down: the gateway's
			st := w.serverStatus()
			t.Logf("MTU %d: gateway GSO sends refused and resent: %d", mtu, st.Sockets.GSORefused)
			if tunMTU+60 > mtu && st.Sockets.GSORefused == 0 {
				t.Fatalf("path %d < %d: the gateway's GSO segments should have been refused at least once", mtu, tunMTU+60)
			}
		})
	}
}

// download is transfer the other way round: the client in from dials a listener in to at addr, which sends
// n pseudo-random bytes back (the NAT lets only client-initiated connections through); the SHA-256 of what
// arrived is checked.
func download(t *testing.T, from, to *netns.NS, addr netip.Addr, n int64) {
	t.Helper()
	var ln net.Listener
	must(t, to.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
		return err
	}))
	defer ln.Close()
	sent := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			sent <- nil
			return
		}
		defer c.Close()
		h := sha256.New()
		_, _ = io.Copy(io.MultiWriter(c, h), io.LimitReader(&prng{r: rand.NewPCG(uint64(n), 9)}, n))
		sent <- h.Sum(nil)
	}()
	var conn net.Conn
	must(t, from.Do(func() error {
		var err error
		conn, err = net.DialTimeout("tcp", ln.Addr().String(), 10*time.Second)
		return err
	}))
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Minute))
	start := time.Now()
	h := sha256.New()
	got, err := io.Copy(h, conn)
	must(t, err)
	if want := <-sent; got != n || !bytes.Equal(h.Sum(nil), want) {
		t.Fatalf("download from %s: %d of %d bytes, checksum match %v", addr, got, n, bytes.Equal(h.Sum(nil), want))
	}
	t.Logf("TCP %d MB from %s in %s", got>>20, addr, time.Since(start).Round(time.Millisecond))
}
