package enginetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
)

var (
	gwAddr     = netip.MustParseAddrPort("192.0.2.1:51820")
	clientAddr = netip.MustParseAddrPort("198.51.100.7:40000")
	otherAddr  = netip.MustParseAddrPort("203.0.113.9:4444")
)

func newNet(t *testing.T) *Network {
	t.Helper()
	n := NewNetwork()
	t.Cleanup(n.Close)
	return n
}

func mustListen(t *testing.T, n *Network, addr netip.AddrPort) *Conn {
	t.Helper()
	c, err := n.Listen(addr)
	if err != nil {
		t.Fatalf("Listen(%v): %v", addr, err)
	}
	return c
}

func send(t *testing.T, c *Conn, to netip.AddrPort, msgs ...string) {
	t.Helper()
	bufs := make([][]byte, len(msgs))
	addrs := make([]netip.AddrPort, len(msgs))
	for i, m := range msgs {
		bufs[i], addrs[i] = []byte(m), to
	}
	if n, err := c.WriteBatch(bufs, addrs); n != len(msgs) || err != nil {
		t.Fatalf("WriteBatch = %d, %v; want %d, nil", n, err, len(msgs))
	}
}

// received is one datagram as ReadBatch returned it.
type received struct {
	from netip.AddrPort
	data string
}

// readBatch calls ReadBatch with bufs buffers of bufLen bytes. Tests call it only when a datagram is
// queued (delivery is synchronous), so it does not block.
func readBatch(t *testing.T, c *Conn, bufs, bufLen int) []received {
	t.Helper()
	if c.Queued() == 0 {
		t.Fatal("readBatch: nothing queued; ReadBatch would block")
	}
	b := make([][]byte, bufs)
	for i := range b {
		b[i] = make([]byte, bufLen)
	}
	sizes := make([]int, bufs)
	addrs := make([]netip.AddrPort, bufs)
	k, err := c.ReadBatch(b, sizes, addrs)
	if err != nil {
		t.Fatalf("ReadBatch: %v", err)
	}
	out := make([]received, k)
	for i := range out {
		out[i] = received{addrs[i], string(b[i][:sizes[i]])}
	}
	return out
}

func wantStats(t *testing.T, n *Network, want NetStats) {
	t.Helper()
	if got := n.Stats(); got != want {
		t.Fatalf("Stats = %+v\nwant    %+v", got, want)
	}
}

func TestListenPortsAndDuplicates(t *testing.T) {
	n := newNet(t)
	mustListen(t, n, gwAddr)
	if _, err := n.Listen(gwAddr); !errors.Is(err, ErrAddrInUse) {
		t.Fatalf("second Listen(%v) = %v, want ErrAddrInUse", gwAddr, err)
	}
	// The same port on another address is a different binding.
	mustListen(t, n, netip.AddrPortFrom(clientAddr.Addr(), gwAddr.Port()))

	a := mustListen(t, n, netip.AddrPortFrom(clientAddr.Addr(), 0))
	b := mustListen(t, n, netip.AddrPortFrom(clientAddr.Addr(), 0))
	pa, pb := a.LocalAddr().Port(), b.LocalAddr().Port()
	if pa < firstEphemeralPort || pb < firstEphemeralPort || pa == pb {
		t.Fatalf("port 0 gave ports %d and %d, want two distinct ephemeral ports", pa, pb)
	}
	if a.LocalAddr().Addr() != clientAddr.Addr() {
		t.Fatalf("LocalAddr = %v, want address %v", a.LocalAddr(), clientAddr.Addr())
	}

	for _, bad := range []string{"0.0.0.0:1", "[::]:1"} {
		if _, err := n.Listen(netip.MustParseAddrPort(bad)); err == nil {
			t.Errorf("Listen(%s) succeeded, want an error (no routing to pick a source)", bad)
		}
	}
	if _, err := n.Listen(netip.AddrPort{}); err == nil {
		t.Error("Listen(invalid) succeeded")
	}
}

func TestEphemeralPortsRunOut(t *testing.T) {
	n := newNet(t)
	n.SetQueueLen(1) // sixteen thousand default queues would take most of a gigabyte
	addr := netip.AddrPortFrom(clientAddr.Addr(), 0)
	for range lastEphemeralPort - firstEphemeralPort + 1 {
		mustListen(t, n, addr)
	}
	if _, err := n.Listen(addr); !errors.Is(err, ErrAddrInUse) {
		t.Fatalf("Listen with every ephemeral port taken = %v, want ErrAddrInUse", err)
	}
}

func TestDeliveryCopiesAndReportsSource(t *testing.T) {
	n := newNet(t)
	gw := mustListen(t, n, gwAddr)
	cl := mustListen(t, n, clientAddr)

	buf := []byte("hello")
	if _, err := cl.WriteBatch([][]byte{buf}, []netip.AddrPort{gwAddr}); err != nil {
		t.Fatal(err)
	}
	copy(buf, "XXXXX") // the engine reuses its buffers as soon as WriteBatch returns
	got := readBatch(t, gw, 4, 1500)
	if want := []received{{clientAddr, "hello"}}; !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	// And back the other way.
	send(t, gw, clientAddr, "reply")
	if got := readBatch(t, cl, 1, 1500); !slices.Equal(got, []received{{gwAddr, "reply"}}) {
		t.Fatalf("client got %v", got)
	}
	wantStats(t, n, NetStats{Sent: 2, Delivered: 2})
	if s := gw.Stats(); s != (ConnStats{Sent: 1, Delivered: 1, Read: 1}) {
		t.Fatalf("gateway ConnStats = %+v", s)
	}
}

func TestReadBatchTakesWhatIsQueued(t *testing.T) {
	n := newNet(t)
	gw := mustListen(t, n, gwAddr)
	cl := mustListen(t, n, clientAddr)

	send(t, cl, gwAddr, "1", "2", "3", "4", "5")
	// More buffers than datagrams: all five at once, without waiting to fill the rest.
	got := readBatch(t, gw, 8, 64)
	if len(got) != 5 {
		t.Fatalf("ReadBatch with 8 buffers and 5 queued returned %d", len(got))
	}
	for i, r := range got {
		if r.data != fmt.Sprint(i+1) {
			t.Fatalf("datagram %d = %q, want them in order", i, r.data)
		}
	}
	// Fewer buffers than datagrams: a full batch, then the rest.
	send(t, cl, gwAddr, "6", "7", "8", "9", "10")
	if got := readBatch(t, gw, 3, 64); len(got) != 3 || got[0].data != "6" {
		t.Fatalf("first batch = %v", got)
	}
	if got := readBatch(t, gw, 3, 64); len(got) != 2 || got[1].data != "10" {
		t.Fatalf("second batch = %v", got)
	}
	// No buffers: nothing to do, and no blocking.
	if k, err := gw.ReadBatch(nil, nil, nil); k != 0 || err != nil {
		t.Fatalf("ReadBatch(nil) = %d, %v", k, err)
	}
}

func TestReadBatchTruncatesLongDatagrams(t *testing.T) {
	n := newNet(t)
	gw := mustListen(t, n, gwAddr)
	cl := mustListen(t, n, clientAddr)
	send(t, cl, gwAddr, "0123456789", "ok")
	got := readBatch(t, gw, 2, 4)
	if want := []received{{clientAddr, "0123"}, {clientAddr, "ok"}}; !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	if s := n.Stats(); s.Truncated != 1 {
		t.Fatalf("Truncated = %d, want 1", s.Truncated)
	}
}

func TestBlockedReadWakesOnDatagram(t *testing.T) {
	n := newNet(t)
	gw := mustListen(t, n, gwAddr)
	cl := mustListen(t, n, clientAddr)
	done := make(chan string)
	go func() {
		b, sizes, addrs := [][]byte{make([]byte, 64)}, make([]int, 1), make([]netip.AddrPort, 1)
		k, err := gw.ReadBatch(b, sizes, addrs)
		if err != nil || k != 1 {
			done <- fmt.Sprintf("ReadBatch = %d, %v", k, err)
			return
		}
		done <- string(b[0][:sizes[0]])
	}()
	send(t, cl, gwAddr, "wake")
	if got := <-done; got != "wake" {
		t.Fatal(got)
	}
}

func TestCloseUnblocksReadAndFreesAddress(t *testing.T) {
	n := newNet(t)
	gw := mustListen(t, n, gwAddr)
	cl := mustListen(t, n, clientAddr)
	errc := make(chan error)
	go func() {
		_, err := gw.ReadBatch([][]byte{make([]byte, 64)}, make([]int, 1), make([]netip.AddrPort, 1))
		errc <- err
	}()
	if err := gw.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := <-errc; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("blocked ReadBatch after Close = %v, want net.ErrClosed", err)
	}
	if err := gw.Close(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("second Close = %v, want net.ErrClosed (like a socket)", err)
	}
	if _, err := gw.WriteBatch([][]byte{{1}}, []netip.AddrPort{clientAddr}); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("WriteBatch after Close = %v, want net.ErrClosed", err)
	}
	if _, err := gw.ReadBatch([][]byte{make([]byte, 1)}, make([]int, 1), make([]netip.AddrPort, 1)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("ReadBatch after Close = %v, want net.ErrClosed", err)
	}

	// Nobody listens at the address now, and it can be bound again.
	send(t, cl, gwAddr, "lost")
	wantStats(t, n, NetStats{Sent: 1, DroppedNoListener: 1})
	gw2 := mustListen(t, n, gwAddr)
	send(t, cl, gwAddr, "found")
	if got := readBatch(t, gw2, 1, 64); got[0].data != "found" {
		t.Fatalf("new Conn got %v", got)
	}
}

func TestCloseDiscardsQueued(t *testing.T) {
	n := newNet(t)
	gw := mustListen(t, n, gwAddr)
	cl := mustListen(t, n, clientAddr)
	send(t, cl, gwAddr, "queued")
	if err := gw.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := gw.ReadBatch([][]byte{make([]byte, 64)}, make([]int, 1), make([]netip.AddrPort, 1)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("ReadBatch after Close with a datagram queued = %v, want net.ErrClosed", err)
	}
}

func TestNetworkCloseClosesEveryConn(t *testing.T) {
	n := NewNetwork()
	a := mustListen(t, n, gwAddr)
	b := mustListen(t, n, clientAddr)
	n.Close()
	for _, c := range []*Conn{a, b} {
		if err := c.Close(); !errors.Is(err, net.ErrClosed) {
			t.Errorf("%v: Close after Network.Close = %v, want net.ErrClosed", c, err)
		}
	}
}

func TestWriteToNobodyIsCountedNotAnError(t *testing.T) {
	n := newNet(t)
	cl := mustListen(t, n, clientAddr)
	send(t, cl, otherAddr, "a", "b")
	wantStats(t, n, NetStats{Sent: 2, DroppedNoListener: 2})
}

func TestWriteAddressFamily(t *testing.T) {
	n := newNet(t)
	cl := mustListen(t, n, clientAddr)
	gw6 := mustListen(t, n, netip.MustParseAddrPort("[2001:db8::1]:51820"))
	bufs := [][]byte{{1}, {2}, {3}}
	addrs := []netip.AddrPort{otherAddr, gw6.LocalAddr(), otherAddr}
	k, err := cl.WriteBatch(bufs, addrs)
	if k != 1 || !errors.Is(err, ErrAddressFamily) {
		t.Fatalf("WriteBatch with an IPv6 destination from IPv4 = %d, %v; want 1, ErrAddressFamily", k, err)
	}
	if _, err := cl.WriteBatch(bufs[:1], []netip.AddrPort{{}}); !errors.Is(err, ErrAddressFamily) {
		t.Fatalf("WriteBatch to the zero AddrPort = %v, want ErrAddressFamily", err)
	}
}

func TestMappedAddressesAreUnmapped(t *testing.T) {
	n := newNet(t)
	mapped := netip.AddrPortFrom(netip.AddrFrom16(gwAddr.Addr().As16()), gwAddr.Port())
	gw := mustListen(t, n, mapped)
	if gw.LocalAddr() != gwAddr {
		t.Fatalf("LocalAddr = %v, want %v", gw.LocalAddr(), gwAddr)
	}
	cl := mustListen(t, n, clientAddr)
	send(t, cl, mapped, "via mapped")
	if got := readBatch(t, gw, 1, 64); got[0].from != clientAddr {
		t.Fatalf("source = %v, want unmapped %v", got[0].from, clientAddr)
	}
}

func TestTapSeesEverythingSent(t *testing.T) {
	n := newNet(t)
	gw := mustListen(t, n, gwAddr)
	cl := mustListen(t, n, clientAddr)
	rec := NewRecorder()
	n.SetTap(rec.Tap)
	n.SetFilter(func(_, _ netip.AddrPort, b []byte) Verdict {
		if string(b) == "dropped" {
			return Drop
		}
		return Deliver
	})

	send(t, cl, gwAddr, "secret", "dropped")
	send(t, cl, otherAddr, "to nobody")
	n.Inject(otherAddr, gwAddr, []byte("injected"))
	send(t, gw, clientAddr, "reply")

	want := []Datagram{
		{clientAddr, gwAddr, []byte("secret")},
		{clientAddr, gwAddr, []byte("dropped")},
		{clientAddr, otherAddr, []byte("to nobody")},
		{gwAddr, clientAddr, []byte("reply")},
	}
	got := rec.Datagrams()
	if len(got) != len(want) {
		t.Fatalf("tap saw %d datagrams, want %d (injected ones bypass it): %v", len(got), len(want), got)
	}
	for i := range want {
		if got[i].From != want[i].From || got[i].To != want[i].To || !bytes.Equal(got[i].Data, want[i].Data) {
			t.Errorf("datagram %d = %v, want %v", i, got[i], want[i])
		}
	}

	// Removing the tap stops recording.
	n.SetTap(nil)
	send(t, cl, gwAddr, "unseen")
	if rec.Len() != len(want) {
		t.Fatalf("tap removed but recorder grew to %d", rec.Len())
	}
}

func TestTapCopyIsIndependent(t *testing.T) {
	n := newNet(t)
	gw := mustListen(t, n, gwAddr)
	cl := mustListen(t, n, clientAddr)
	n.SetTap(func(_, _ netip.AddrPort, b []byte) { copy(b, "XX") })
	send(t, cl, gwAddr, "intact")
	if got := readBatch(t, gw, 1, 64); got[0].data != "intact" {
		t.Fatalf("tap's changes reached the receiver: %q", got[0].data)
	}
}

func TestFilterDropsAndCorrupts(t *testing.T) {
	n := newNet(t)
	gw := mustListen(t, n, gwAddr)
	cl := mustListen(t, n, clientAddr)

	// A blackout towards the gateway only.
	n.SetFilter(func(_, to netip.AddrPort, _ []byte) Verdict {
		if to == gwAddr {
			return Drop
		}
		return Deliver
	})
	send(t, cl, gwAddr, "a", "b", "c")
	send(t, gw, clientAddr, "back")
	if gw.Queued() != 0 || cl.Queued() != 1 {
		t.Fatalf("queued: gateway %d, client %d; want 0 and 1", gw.Queued(), cl.Queued())
	}
	wantStats(t, n, NetStats{Sent: 4, Delivered: 1, DroppedFilter: 3})

	// A filter may corrupt what it delivers (a bit flip on the path).
	n.SetFilter(func(_, _ netip.AddrPort, b []byte) Verdict {
		b[0] ^= 0x20
		return Deliver
	})
	send(t, cl, gwAddr, "flip")
	if got := readBatch(t, gw, 1, 64); got[0].data != "Flip" {
		t.Fatalf("corrupting filter delivered %q", got[0].data)
	}

	n.SetFilter(nil)
	send(t, cl, gwAddr, "clear")
	if got := readBatch(t, gw, 1, 64); got[0].data != "clear" {
		t.Fatalf("after SetFilter(nil) got %q", got[0].data)
	}
}

func TestInjectSpoofedSource(t *testing.T) {
	n := newNet(t)
	gw := mustListen(t, n, gwAddr)
	mustListen(t, n, clientAddr)
	n.SetFilter(func(_, _ netip.AddrPort, _ []byte) Verdict { return Drop }) // injection bypasses it

	forged := []byte("forged")
	// Claim to be the client, which is bound; and some address nobody holds.
	if !n.Inject(clientAddr, gwAddr, forged) || !n.Inject(otherAddr, gwAddr, forged) {
		t.Fatal("Inject to a listening Conn reported not delivered")
	}
	copy(forged, "XXXXXX")
	got := readBatch(t, gw, 4, 64)
	if want := []received{{clientAddr, "forged"}, {otherAddr, "forged"}}; !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	if n.Inject(gwAddr, otherAddr, []byte("x")) {
		t.Fatal("Inject to nobody reported delivered")
	}
	// A mapped source is reported unmapped, as batch.Conn does.
	n.Inject(netip.AddrPortFrom(netip.AddrFrom16(otherAddr.Addr().As16()), otherAddr.Port()), gwAddr, []byte("m"))
	if got := readBatch(t, gw, 1, 64); got[0].from != otherAddr {
		t.Fatalf("mapped source arrived as %v", got[0].from)
	}
	wantStats(t, n, NetStats{Injected: 4, Delivered: 3, DroppedNoListener: 1})
}

func TestRebindMovesConnInPlace(t *testing.T) {
	n := newNet(t)
	gw := mustListen(t, n, gwAddr)
	cl := mustListen(t, n, clientAddr)

	send(t, gw, clientAddr, "before")
	newAddr, err := n.Rebind(cl, netip.MustParseAddrPort("198.51.100.99:0"))
	if err != nil {
		t.Fatal(err)
	}
	if cl.LocalAddr() != newAddr || newAddr.Addr() != netip.MustParseAddr("198.51.100.99") || newAddr.Port() == 0 {
		t.Fatalf("after Rebind: LocalAddr %v, returned %v", cl.LocalAddr(), newAddr)
	}
	// Queued datagrams survive, the client's traffic now comes from the new address, and the old
	// address is gone.
	if got := readBatch(t, cl, 1, 64); got[0].data != "before" {
		t.Fatalf("queued datagram lost on Rebind: %v", got)
	}
	send(t, cl, gwAddr, "roamed")
	if got := readBatch(t, gw, 1, 64); got[0].from != newAddr {
		t.Fatalf("gateway saw source %v, want %v", got[0].from, newAddr)
	}
	send(t, gw, clientAddr, "to old")
	send(t, gw, newAddr, "to new")
	if got := readBatch(t, cl, 4, 64); !slices.Equal(got, []received{{gwAddr, "to new"}}) {
		t.Fatalf("client got %v", got)
	}
	if s := n.Stats(); s.DroppedNoListener != 1 {
		t.Fatalf("DroppedNoListener = %d, want 1 (the datagram to the old address)", s.DroppedNoListener)
	}
	// The old address is free again.
	mustListen(t, n, clientAddr)

	if _, err := n.Rebind(cl, gwAddr); !errors.Is(err, ErrAddrInUse) {
		t.Fatalf("Rebind onto a bound address = %v, want ErrAddrInUse", err)
	}
	if a, err := n.Rebind(cl, newAddr); a != newAddr || err != nil {
		t.Fatalf("Rebind to its own address = %v, %v", a, err)
	}
	if _, err := NewNetwork().Rebind(cl, otherAddr); err == nil {
		t.Fatal("Rebind through another Network succeeded")
	}
	_ = cl.Close()
	if _, err := n.Rebind(cl, otherAddr); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Rebind of a closed Conn = %v, want net.ErrClosed", err)
	}
}

func TestQueueOverflowIsCounted(t *testing.T) {
	n := newNet(t)
	n.SetQueueLen(4)
	gw := mustListen(t, n, gwAddr)
	cl := mustListen(t, n, clientAddr)
	msgs := make([]string, 10)
	for i := range msgs {
		msgs[i] = fmt.Sprint(i)
	}
	send(t, cl, gwAddr, msgs...)
	wantStats(t, n, NetStats{Sent: 10, Delivered: 4, DroppedQueueFull: 6})
	if s := gw.Stats(); s.Delivered != 4 || s.DroppedQueueFull != 6 {
		t.Fatalf("ConnStats = %+v", s)
	}
	// Like a socket buffer, the queue keeps the oldest and drops what comes after.
	got := readBatch(t, gw, 16, 64)
	if len(got) != 4 || got[0].data != "0" || got[3].data != "3" {
		t.Fatalf("queue held %v, want 0..3", got)
	}
	if cap(mustListen(t, NewNetwork(), gwAddr).queue) != DefaultQueueLen {
		t.Fatal("a new Network does not use DefaultQueueLen")
	}
}

// TestConcurrentUse runs several writers (as the engine's handshake and data goroutines share a socket),
// one reader and changes of the tap and filter at once; -race checks the locking, the counts check that
// every datagram is accounted for and that each sender's datagrams stay in order.
func TestConcurrentUse(t *testing.T) {
	const writers, perWriter, batch = 4, 300, 10
	n := newNet(t)
	n.SetQueueLen(writers * perWriter) // nothing may be dropped for the order check
	gw := mustListen(t, n, gwAddr)
	var wg sync.WaitGroup
	for w := range writers {
		c := mustListen(t, n, netip.AddrPortFrom(clientAddr.Addr(), 0))
		wg.Go(func() {
			for i := 0; i < perWriter; i += batch {
				bufs := make([][]byte, batch)
				addrs := make([]netip.AddrPort, batch)
				for j := range bufs {
					bufs[j], addrs[j] = fmt.Appendf(nil, "%d/%d", w, i+j), gwAddr
				}
				if _, err := c.WriteBatch(bufs, addrs); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Go(func() {
		for i := range 100 {
			n.SetTap(func(_, _ netip.AddrPort, _ []byte) {})
			n.SetFilter(func(_, _ netip.AddrPort, _ []byte) Verdict { return Deliver })
			if i%2 == 0 {
				n.SetTap(nil)
				n.SetFilter(nil)
			}
			_ = n.Stats()
		}
	})

	next := make(map[netip.AddrPort]int) // per sender, the sequence number expected next
	bufs := make([][]byte, 32)
	for i := range bufs {
		bufs[i] = make([]byte, 64)
	}
	sizes, addrs := make([]int, len(bufs)), make([]netip.AddrPort, len(bufs))
	for total := 0; total < writers*perWriter; {
		k, err := gw.ReadBatch(bufs, sizes, addrs)
		if err != nil {
			t.Fatal(err)
		}
		for i := range k {
			var w, seq int
			if _, err := fmt.Sscanf(string(bufs[i][:sizes[i]]), "%d/%d", &w, &seq); err != nil {
				t.Fatal(err)
			}
			if seq != next[addrs[i]] {
				t.Fatalf("from %v: got %d, want %d (reordered)", addrs[i], seq, next[addrs[i]])
			}
			next[addrs[i]]++
		}
		total += k
	}
	wg.Wait()
	wantStats(t, n, NetStats{Sent: writers * perWriter, Delivered: writers * perWriter})
}

func TestRecorderWait(t *testing.T) {
	n := newNet(t)
	mustListen(t, n, gwAddr)
	cl := mustListen(t, n, clientAddr)
	rec := NewRecorder()
	n.SetTap(rec.Tap)
	ctx := context.Background()

	send(t, cl, gwAddr, "first")
	i, d, err := rec.Wait(ctx, 0, nil)
	if err != nil || i != 0 || string(d.Data) != "first" {
		t.Fatalf("Wait for a recorded datagram = %d, %v, %v", i, d, err)
	}

	// Wait for one not yet sent.
	type result struct {
		i   int
		d   Datagram
		err error
	}
	resc := make(chan result)
	go func() {
		i, d, err := rec.Wait(ctx, i+1, func(d Datagram) bool { return string(d.Data) == "third" })
		resc <- result{i, d, err}
	}()
	send(t, cl, gwAddr, "second", "third")
	if r := <-resc; r.err != nil || r.i != 2 || r.d.From != clientAddr || r.d.To != gwAddr {
		t.Fatalf("Wait for a future datagram = %+v", r)
	}

	// Returned data is the caller's to alter.
	_, d, _ = rec.Wait(ctx, 0, nil)
	d.Data[0] = 'X'
	if string(rec.Datagrams()[0].Data) != "first" {
		t.Fatal("altering a returned datagram changed the record")
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, _, err := rec.Wait(cctx, 3, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait with a cancelled context = %v", err)
	}
}

func TestVerdictString(t *testing.T) {
	if Deliver.String() != "deliver" || Drop.String() != "drop" || Verdict(7).String() != "Verdict(7)" {
		t.Fatal(Deliver, Drop, Verdict(7))
	}
}
