package batch

import (
	"bytes"
	"net/netip"
	"testing"
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
				in[i] = make([]byte, BufSize)
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
