package offload

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
)

// readVia hands d one read() worth of bytes b (virtio header + packet) the way Device.readOne does, into
// the caller's bufs[0] (direct, which must be large enough) or into d.rbuf, then takes the leftovers the
// way the next Reads do, and returns copies of every packet that came out.
func readVia(d *Device, b []byte, direct bool, bufs [][]byte, sizes []int) ([][]byte, error) {
	src := d.rbuf
	if direct {
		src = bufs[0][testOff-VirtioHdrLen:]
	}
	n := copy(src[:readBufLen], b)
	cnt, err := d.handle(src[:n], direct, bufs, sizes, testOff)
	var out [][]byte
	for {
		if err != nil {
			return out, err
		}
		for i := range cnt {
			out = append(out, append([]byte(nil), bufs[i][testOff:testOff+sizes[i]]...))
		}
		if !d.hasPend {
			return out, nil
		}
		cnt, err = d.readOne(bufs, sizes, testOff, true)
	}
}

// deviceBufs returns n buffers of size bytes for readVia, the first one large enough for a direct read.
func deviceBufs(n, size int) [][]byte {
	bufs := makeBufs(n, size)
	bufs[0] = make([]byte, testOff-VirtioHdrLen+readBufLen)
	return bufs
}

// TestDeviceReadManySegments: a super-packet from the kernel may hold far more segments than the kernel
// lets a sender build (UDP_MAX_SEGMENTS is 64 or 128) or than a Read has buffers: a gso_size of 1 gives
// tens of thousands. Every segment must come out, in order, over as many Reads as it takes.
func TestDeviceReadManySegments(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, v6 := range []bool{false, true} {
		for _, udp := range []bool{false, true} {
			for _, c := range []struct{ gso, plen, nbufs int }{
				{1, 65535 - 60 - 40, 128}, {8, 1024, 128}, {8, 1032, 128}, {100, 20000, 7}, {1400, 1400 * 3, 1},
			} {
				for _, direct := range []bool{false, true} {
					name := fmt.Sprintf("v6=%v/udp=%v/gso=%d/len=%d/bufs=%d/direct=%v", v6, udp, c.gso, c.plen, c.nbufs, direct)
					t.Run(name, func(t *testing.T) {
						s := defaultSpec(v6, udp)
						s.flags = tcpACK | tcpPSH
						s.payload = randBytes(r, c.plen)
						h, pkt := superOf(s, c.gso)
						b := make([]byte, VirtioHdrLen+len(pkt))
						h.Encode(b)
						copy(b[VirtioHdrLen:], pkt)
						want := segmentsOf(s, c.gso)
						d := &Device{vnet: true, rbuf: make([]byte, readBufLen)}
						bufs, sizes := deviceBufs(c.nbufs, testOff+1500), make([]int, c.nbufs)
						got, err := readVia(d, b, direct, bufs, sizes)
						if err != nil {
							t.Fatal(err)
						}
						if len(got) != len(want) {
							t.Fatalf("%d segments came out, want %d", len(got), len(want))
						}
						for i := range want {
							if !bytes.Equal(got[i], want[i]) {
								t.Fatalf("segment %d differs:\n got %x\nwant %x", i, short(got[i]), short(want[i]))
							}
						}
					})
				}
			}
		}
	}
}

// FuzzSplit cuts arbitrary super-packets with Split and with Device.Read's path (readVia), which must agree
// and must hand over every segment however many there are. It lives here, not in split_test.go, because
// Device is Linux only.
func FuzzSplit(f *testing.F) {
	for _, v6 := range []bool{false, true} {
		for _, udp := range []bool{false, true} {
			// Three segments, then more segments than the fuzz's 8 buffers, than a 128-packet vector and
			// than UDP_MAX_SEGMENTS: 200 of 8 bytes, 129 of 100, 1000 of 1 (TestDeviceReadManySegments
			// takes the 65435 of a full super-packet with gso_size 1: too slow an input for fuzzing).
			for _, c := range []struct{ gso, plen int }{{1000, 3000}, {8, 1600}, {100, 12900}, {1, 1000}} {
				s := defaultSpec(v6, udp)
				s.payload = make([]byte, c.plen)
				h, p := superOf(s, c.gso)
				var hb [VirtioHdrLen]byte
				h.Encode(hb[:])
				f.Add(append(hb[:], p...))
			}
		}
	}
	// IPv4 with options: the L4 header is not at 20 (a CI fuzz run found the checksum check assuming it was).
	for _, udp := range []bool{false, true} {
		s := defaultSpec(false, udp)
		s.ipOpts, s.payload = ipv4RouterAlert, make([]byte, 3000)
		h, p := superOf(s, 1000)
		var hb [VirtioHdrLen]byte
		h.Encode(hb[:])
		f.Add(append(hb[:], p...))
	}
	bufs, sizes := makeBufs(8, testOff+1500), make([]int, 8)
	dbufs, dsizes := deviceBufs(8, testOff+1500), make([]int, 8)
	d := &Device{vnet: true, rbuf: make([]byte, readBufLen)}
	f.Fuzz(func(t *testing.T, b []byte) {
		var h VirtioHdr
		if h.Decode(b) != nil {
			return
		}
		n, err := Split(&h, b[VirtioHdrLen:], bufs, sizes, testOff)
		var want [][]byte
		if err == nil {
			for i := range n {
				seg := bufs[i][testOff : testOff+sizes[i]]
				if h.GSOType != GSONone && refL4Checksum(seg) != l4Csum(seg) {
					t.Fatalf("segment %d: bad checksum", i)
				}
				want = append(want, seg)
			}
		}
		// Device.Read's path: whatever the number of segments, all of them come out, over as many Reads as
		// it takes, or the super-packet is refused (and counted as dropped) as a whole.
		nseg := n
		if errors.Is(err, ErrTooManySegments) {
			sp, perr := parseSuper(&h, b[VirtioHdrLen:])
			if perr != nil {
				t.Fatalf("Split said too many segments, parseSuper: %v", perr)
			}
			nseg = sp.nseg
		}
		for _, direct := range []bool{false, true} {
			d.hasPend = false
			segs, derr := readVia(d, b, direct, dbufs, dsizes)
			if err != nil && !errors.Is(err, ErrTooManySegments) {
				if derr == nil && !errors.Is(err, errShortBuffer) {
					t.Fatalf("direct=%v: Split refused the packet (%v), the device path did not", direct, err)
				}
				continue
			}
			if derr != nil {
				if errors.Is(derr, errShortBuffer) {
					continue // a segment larger than the fuzz's buffers
				}
				t.Fatalf("direct=%v: %v", direct, derr)
			}
			if len(segs) != nseg {
				t.Fatalf("direct=%v: %d segments came out, want %d", direct, len(segs), nseg)
			}
			for i, seg := range segs {
				if h.GSOType != GSONone && refL4Checksum(seg) != l4Csum(seg) {
					t.Fatalf("direct=%v: segment %d: bad checksum", direct, i)
				}
				if err == nil && !bytes.Equal(seg, want[i]) {
					t.Fatalf("direct=%v: segment %d differs from Split's", direct, i)
				}
			}
		}
	})
}
