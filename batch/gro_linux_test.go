package batch

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// rawSender is a plain socket that sends UDP_SEGMENT messages with any number of segments, as any local
// process can: the kernel here accepts up to 128 (Conn.WriteBatch itself never sends more than
// udpMaxSegments), and over loopback such a send reaches a UDP_GRO socket as one message.
type rawSender struct {
	fd  int
	dst unix.Sockaddr
}

func newRawSender(t *testing.T, dst netip.AddrPort) *rawSender {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return &rawSender{fd: fd, dst: &unix.SockaddrInet4{Port: int(dst.Port()), Addr: dst.Addr().As4()}}
}

// local is the address the kernel bound the socket to on its first send.
func (s *rawSender) local(t *testing.T) netip.AddrPort {
	t.Helper()
	sa, err := unix.Getsockname(s.fd)
	if err != nil {
		t.Fatal(err)
	}
	sa4 := sa.(*unix.SockaddrInet4)
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(sa4.Port)) // wildcard-bound, sent via lo
}

// send sends the datagrams as one message: with a UDP_SEGMENT of len(dgrams[0]) when there are several.
func (s *rawSender) send(t *testing.T, dgrams [][]byte) {
	t.Helper()
	var oob []byte
	if len(dgrams) > 1 {
		oob = make([]byte, ctrlSlot)
		putSegmentCmsg(oob, len(dgrams[0]))
	}
	if _, err := unix.SendmsgN(s.fd, bytes.Join(dgrams, nil), oob, s.dst, 0); err != nil {
		t.Fatalf("GSO send of %d datagrams of %d bytes: %v", len(dgrams), len(dgrams[0]), err)
	}
}

// groRun builds count datagrams of seg bytes (the last one last bytes long when last > 0), each with
// content unique to its position in the whole test (next counts them), so reordering, loss or duplication
// shows as a content mismatch.
func groRun(next *int, count, seg, last int) [][]byte {
	out := make([][]byte, count)
	for i := range out {
		size := seg
		if i == count-1 && last > 0 {
			size = last
		}
		b := make([]byte, size)
		for k := range b {
			b[k] = byte(*next*13 + k)
		}
		var id [4]byte
		binary.LittleEndian.PutUint32(id[:], uint32(*next))
		copy(b, id[:]) // the position itself, as far as it fits
		out[i] = b
		*next++
	}
	return out
}

// readVec reads want datagrams with vectors of vec buffers, failing after a timeout (Close unblocks the
// read) instead of hanging.
func readVec(t *testing.T, c *Conn, vec, want int) ([][]byte, []netip.AddrPort) {
	t.Helper()
	bufs := make([][]byte, vec)
	for i := range bufs {
		bufs[i] = make([]byte, MaxPacket)
	}
	sizes := make([]int, vec)
	addrs := make([]netip.AddrPort, vec)
	timer := time.AfterFunc(5*time.Second, func() { c.Close() })
	defer timer.Stop()
	var got [][]byte
	var from []netip.AddrPort
	for len(got) < want {
		n, err := c.ReadBatch(bufs, sizes, addrs)
		if err != nil {
			t.Fatalf("ReadBatch(%d buffers) after %d/%d datagrams: %v", vec, len(got), want, err)
		}
		if n < 1 || n > vec {
			t.Fatalf("ReadBatch(%d buffers) = %d", vec, n)
		}
		for i := range n {
			got = append(got, append([]byte(nil), bufs[i][:sizes[i]]...))
			from = append(from, addrs[i])
		}
	}
	return got, from
}

func compareDatagrams(t *testing.T, got [][]byte, from []netip.AddrPort, want [][]byte, wantFrom netip.AddrPort) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d datagrams, want %d", len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("datagram %d: %d bytes %x..., want %d bytes %x...", i, len(got[i]), got[i][:min(8, len(got[i]))],
				len(want[i]), want[i][:min(8, len(want[i]))])
		}
		if from[i] != wantFrom {
			t.Fatalf("datagram %d from %v, want %v", i, from[i], wantFrom)
		}
	}
}

// TestGROMoreThan64Segments is the regression test for a local process crashing the daemon: GSO sends of
// 100 and 128 segments reach a GRO socket as single messages. The old split assumed at most 64 segments
// per message and wrote past sizes (index out of range [128] when a 128-segment message was followed by an
// empty datagram in one receive) or over a later message it had not split yet. Every datagram must come
// out, in order, with its size, whatever the vector length (the old code refused fewer than 64 buffers).
func TestGROMoreThan64Segments(t *testing.T) {
	sequences := []struct {
		name string
		runs [][3]int // count, segment size, size of a shorter last segment (0: none)
	}{
		{"128-then-empty", [][3]int{{128, 20, 0}, {1, 0, 0}}},
		{"100-128-empty", [][3]int{{100, 20, 0}, {128, 20, 0}, {1, 0, 0}}},
		{"mixed", [][3]int{{128, 20, 0}, {1, 0, 0}, {100, 20, 0}, {1, 0, 0}, {70, 20, 7}, {1, 33, 0},
			{128, 1, 0}, {65, 1000, 999}}},
	}
	for _, seq := range sequences {
		for _, vec := range []int{128, 16, 1} {
			t.Run(fmt.Sprintf("%s/vec%d", seq.name, vec), func(t *testing.T) {
				srv := listen(t, "udp4", "127.0.0.1:0", Options{EnableGRO: true})
				if !srv.GRO() {
					t.Skip("kernel without UDP GRO")
				}
				snd := newRawSender(t, srv.LocalAddr())
				var want [][]byte
				next := 0
				for _, r := range seq.runs {
					run := groRun(&next, r[0], r[1], r[2])
					snd.send(t, run) // queued at the receiver before the first read: one receive sees several
					want = append(want, run...)
				}
				got, from := readVec(t, srv, vec, len(want))
				compareDatagrams(t, got, from, want, snd.local(t))
			})
		}
	}
}

// TestGROKeepsSegmentsPastVector: two 100-segment messages read with 128 buffers used to return 128
// datagrams and silently drop the other 72. The first read must fill the vector, and the second must
// return the 72 kept in the Conn without waiting for the (by then empty) socket.
func TestGROKeepsSegmentsPastVector(t *testing.T) {
	srv := listen(t, "udp4", "127.0.0.1:0", Options{EnableGRO: true})
	if !srv.GRO() {
		t.Skip("kernel without UDP GRO")
	}
	snd := newRawSender(t, srv.LocalAddr())
	next := 0
	a, b := groRun(&next, 100, 20, 0), groRun(&next, 100, 20, 0)
	snd.send(t, a)
	snd.send(t, b)
	want := append(a, b...)
	bufs := make([][]byte, 128)
	for i := range bufs {
		bufs[i] = make([]byte, MaxPacket)
	}
	sizes := make([]int, 128)
	addrs := make([]netip.AddrPort, 128)
	timer := time.AfterFunc(5*time.Second, func() { srv.Close() })
	defer timer.Stop()
	var got [][]byte
	var from []netip.AddrPort
	for call, wantN := range []int{128, 72} {
		n, err := srv.ReadBatch(bufs, sizes, addrs)
		if err != nil || n != wantN {
			t.Fatalf("ReadBatch call %d = %d, %v; want %d, nil", call, n, err, wantN)
		}
		for i := range n {
			got = append(got, append([]byte(nil), bufs[i][:sizes[i]]...))
			from = append(from, addrs[i])
		}
	}
	compareDatagrams(t, got, from, want, snd.local(t))
	if s := srv.Stats(); s.GROTruncated != 0 {
		t.Fatalf("Stats = %+v, want nothing truncated", s)
	}
}

// TestGROAllocs: reading coalesced messages into a vector smaller than a message (so part of it stays
// pending in the Conn) allocates nothing.
func TestGROAllocs(t *testing.T) {
	srv := listen(t, "udp4", "127.0.0.1:0", Options{EnableGRO: true})
	if !srv.GRO() {
		t.Skip("kernel without UDP GRO")
	}
	cli := listen(t, "udp4", "127.0.0.1:0", Options{})
	const k = 40
	out := make([][]byte, k)
	dst := make([]netip.AddrPort, k)
	for i := range out {
		out[i] = make([]byte, 1420)
		dst[i] = srv.LocalAddr()
	}
	in := make([][]byte, 16)
	for i := range in {
		in[i] = make([]byte, MaxPacket)
	}
	sizes := make([]int, len(in))
	from := make([]netip.AddrPort, len(in))
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
		t.Errorf("%v allocations per GSO WriteBatch + GRO ReadBatch cycle, want 0", allocs)
	}
}

// fuzzVecMax bounds the random vector length FuzzSplitGRO uses; its buffers are allocated once.
const fuzzVecMax = 150

// FuzzSplitGRO feeds splitGRO arbitrary received messages (length up to 65535, any int32 segment size as
// the cmsg could carry) and drains them with vectors of random length, as successive ReadBatch calls do.
// Oracle: the datagrams, concatenated, are exactly the input bytes in order; each message yields datagrams
// of its effective segment size (the whole message when the size is not in 1..len) with only the last one
// shorter; an empty message yields one empty datagram; every datagram carries its message's sender; no
// slot past the vector is touched; and every call makes progress while anything is pending.
func FuzzSplitGRO(f *testing.F) {
	spec := func(msgs ...[2]int64) []byte {
		var b []byte
		for _, m := range msgs {
			b = binary.LittleEndian.AppendUint16(b, uint16(m[0]))
			b = binary.LittleEndian.AppendUint32(b, uint32(int32(m[1])))
		}
		return b
	}
	f.Add(spec([2]int64{128 * 20, 20}, [2]int64{0, 0}), uint64(128))
	f.Add(spec([2]int64{100 * 20, 20}, [2]int64{100 * 20, 20}), uint64(128))
	f.Add(spec([2]int64{128 * 20, 20}, [2]int64{0, 0}, [2]int64{100*20 + 7, 20}), uint64(16))
	f.Add(spec([2]int64{65535, 1}), uint64(3))
	f.Add(spec([2]int64{65535, 1452}, [2]int64{1452, 1452}), uint64(1))
	f.Add(spec([2]int64{300, 0}, [2]int64{300, -1}, [2]int64{300, 301}, [2]int64{300, -2147483648}), uint64(7))
	f.Add(spec([2]int64{0, 20}, [2]int64{0, -5}, [2]int64{1, 1}), uint64(0))
	f.Add([]byte{}, uint64(5))

	bufs := make([][]byte, fuzzVecMax)
	for i := range bufs {
		bufs[i] = make([]byte, MaxPacket) // at least any segment: nothing may be truncated here
	}
	sizes := make([]int, fuzzVecMax+1) // one sentinel slot past the largest vector
	addrs := make([]netip.AddrPort, fuzzVecMax+1)
	f.Fuzz(func(t *testing.T, spec []byte, seed uint64) {
		var msgs []groMsg
		var stream []byte
		type want struct{ size, msg int }
		var wants []want
		rnd := seed | 1
		for len(spec) >= 6 && len(msgs) < 8 {
			n := int(binary.LittleEndian.Uint16(spec))
			seg := int32(binary.LittleEndian.Uint32(spec[2:]))
			spec = spec[6:]
			b := make([]byte, n)
			for k := range b {
				rnd ^= rnd << 13
				rnd ^= rnd >> 7
				rnd ^= rnd << 17
				b[k] = byte(rnd)
			}
			m := len(msgs)
			msgs = append(msgs, groMsg{b: b, seg: seg, from: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(m)}), uint16(m))})
			stream = append(stream, b...)
			eff := int(seg)
			if eff <= 0 || eff > n {
				eff = n
			}
			if n == 0 {
				wants = append(wants, want{0, m})
			}
			for off := 0; off < n; off += eff {
				wants = append(wants, want{min(eff, n-off), m})
			}
		}
		var cur groCursor
		var out []byte
		got := 0
		for calls := 0; cur.msg < len(msgs); calls++ {
			if calls > len(wants) {
				t.Fatalf("no progress: %d calls for %d datagrams", calls, len(wants))
			}
			rnd ^= rnd << 13
			rnd ^= rnd >> 7
			rnd ^= rnd << 17
			vec := 1 + int(rnd%fuzzVecMax)
			sizes[vec], addrs[vec] = -1, netip.AddrPort{}
			n := splitGRO(msgs, &cur, bufs[:vec], sizes, addrs)
			if n < 1 || n > vec {
				t.Fatalf("splitGRO with %d buffers = %d, pending %+v", vec, n, cur)
			}
			if sizes[vec] != -1 || addrs[vec].IsValid() {
				t.Fatalf("splitGRO with %d buffers wrote slot %d", vec, vec)
			}
			for i := range n {
				if got+i >= len(wants) {
					t.Fatalf("more than the %d datagrams expected", len(wants))
				}
				w := wants[got+i]
				if sizes[i] != w.size || addrs[i] != msgs[w.msg].from {
					t.Fatalf("datagram %d: %d bytes from %v, want %d from %v", got+i, sizes[i], addrs[i], w.size, msgs[w.msg].from)
				}
				out = append(out, bufs[i][:sizes[i]]...)
			}
			got += n
		}
		if got != len(wants) || !bytes.Equal(out, stream) {
			t.Fatalf("%d datagrams (%d bytes), want %d (%d bytes) equal to the input", got, len(out), len(wants), len(stream))
		}
		if n := splitGRO(msgs, &cur, bufs[:1], sizes, addrs); n != 0 {
			t.Fatalf("splitGRO after everything was consumed = %d", n)
		}
	})
}

// lastGROMessages is what c's last recvmmsg received: tests use it to prove the kernel coalesced.
func lastGROMessages(c *Conn) []groMsg {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	return c.grs.msgs
}
