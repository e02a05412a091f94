package batch

import (
	"bytes"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
)

// TestGSORuns sends runs that GSO must split correctly: same-size runs longer than the segment limit, a
// shorter datagram ending a run, destinations alternating, and a run larger than 64 KiB in total. Every
// datagram must arrive separately, intact and in order (loopback delivers GSO sends as single datagrams).
func TestGSORuns(t *testing.T) {
	for _, disable := range []bool{false, true} {
		srvA := listen(t, "udp4", "127.0.0.1:0", Options{})
		srvB := listen(t, "udp4", "127.0.0.1:0", Options{})
		cli := listen(t, "udp4", "127.0.0.1:0", Options{DisableGSO: disable})
		if cli.GSO() == disable {
			t.Fatalf("GSO()=%v with DisableGSO=%v", cli.GSO(), disable)
		}
		var bufs [][]byte
		var dsts []netip.AddrPort
		add := func(n, size int, dst netip.AddrPort) {
			for range n {
				b := make([]byte, size)
				for k := range b {
					b[k] = byte(len(bufs) + k)
				}
				bufs = append(bufs, b)
				dsts = append(dsts, dst)
			}
		}
		a, bb := srvA.LocalAddr(), srvB.LocalAddr()
		add(70, 1000, a) // longer than udpMaxSegments
		add(1, 300, a)   // shorter one ends the run
		add(3, 300, a)   // a new run of the shorter size
		add(2, 1452, bb) // another destination
		add(1, 1452, a)  // back again
		add(50, 1452, a) // 50*1452 > gsoMaxBytes: must be cut
		n, err := cli.WriteBatch(bufs, dsts)
		if err != nil || n != len(bufs) {
			t.Fatalf("WriteBatch = %d, %v", n, err)
		}
		check := func(srv *Conn, dst netip.AddrPort) {
			var want [][]byte
			for i := range bufs {
				if dsts[i] == dst {
					want = append(want, bufs[i])
				}
			}
			in := make([][]byte, len(want))
			for i := range in {
				in[i] = make([]byte, MaxPacket)
			}
			sizes := make([]int, len(want))
			from := make([]netip.AddrPort, len(want))
			for got := 0; got < len(want); {
				n, err := srv.ReadBatch(in[got:], sizes[got:], from[got:])
				if err != nil {
					t.Fatal(err)
				}
				got += n
			}
			for i := range want {
				if !bytes.Equal(in[i][:sizes[i]], want[i]) {
					t.Fatalf("gso=%v: datagram %d to %v: got %d bytes, want %d", !disable, i, dst, sizes[i], len(want[i]))
				}
			}
		}
		check(srvA, a)
		check(srvB, bb)
	}
}

// TestGRORoundTrip: a GSO sender and a GRO receiver. The kernel delivers each GSO send to the GRO socket as
// one coalesced datagram; ReadBatch must split it back into the original datagrams, in order, with the
// right sender, including runs that end in a shorter datagram and interleaved single datagrams.
func TestGRORoundTrip(t *testing.T) {
	srv := listen(t, "udp4", "127.0.0.1:0", Options{EnableGRO: true})
	if !srv.GRO() {
		t.Skip("kernel without UDP GRO") // 6.x kernels here and in CI have it; older ones fall back
	}
	cli := listen(t, "udp4", "127.0.0.1:0", Options{})
	var bufs [][]byte
	var dsts []netip.AddrPort
	for i := range 150 {
		size := 1452
		switch {
		case i == 63 || i == 149:
			size = 700 // ends a run
		case i == 100:
			size = 40 // a lone small one
		}
		b := make([]byte, size)
		for k := range b {
			b[k] = byte(i*7 + k)
		}
		bufs = append(bufs, b)
		dsts = append(dsts, srv.LocalAddr())
	}
	if n, err := cli.WriteBatch(bufs, dsts); err != nil || n != len(bufs) {
		t.Fatalf("WriteBatch = %d, %v", n, err)
	}
	in := make([][]byte, 128)
	for i := range in {
		in[i] = make([]byte, MaxPacket)
	}
	sizes := make([]int, 128)
	from := make([]netip.AddrPort, 128)
	got, calls := 0, 0
	for got < len(bufs) {
		calls++
		n, err := srv.ReadBatch(in, sizes, from)
		if err != nil {
			t.Fatal(err)
		}
		for i := range n {
			if from[i] != cli.LocalAddr() {
				t.Fatalf("datagram %d from %v", got+i, from[i])
			}
			if !bytes.Equal(in[i][:sizes[i]], bufs[got+i]) {
				t.Fatalf("datagram %d: got %d bytes, want %d (or content differs)", got+i, sizes[i], len(bufs[got+i]))
			}
		}
		got += n
	}
	// Three GSO sends of 64, 37 and 49 segments; a read receives up to two messages. Without coalescing
	// this would take 75 calls.
	if calls > 3 {
		t.Fatalf("%d ReadBatch calls for 150 datagrams: the kernel did not coalesce", calls)
	}
}

func TestIncomingCPUOption(t *testing.T) {
	c := listen(t, "udp4", "127.0.0.1:0", Options{ReusePort: true, SetIncomingCPU: true, IncomingCPU: 0})
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var got int
	var gerr error
	_ = rc.Control(func(fd uintptr) { got, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_INCOMING_CPU) })
	if gerr != nil || got != 0 {
		t.Fatalf("SO_INCOMING_CPU = %d, %v", got, gerr)
	}
}
