package faultrelay

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// groSink is a socket with UDP_GRO on that records every read: its size and GRO segment size.
type groSink struct {
	conn  *net.UDPConn
	reads chan [2]int
}

func newGROSink(t *testing.T) *groSink {
	t.Helper()
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(loopback))
	must(t, err)
	if !enableGRO(c) {
		t.Skip("UDP_GRO not available")
	}
	s := &groSink{conn: c, reads: make(chan [2]int, 1024)}
	go func() {
		buf, oob := make([]byte, maxGRORead), make([]byte, oobSize)
		for {
			n, oobn, _, _, err := c.ReadMsgUDPAddrPort(buf, oob)
			if err != nil {
				close(s.reads)
				return
			}
			gso, _, _ := parseControl(oob[:oobn])
			s.reads <- [2]int{n, gso}
		}
	}()
	t.Cleanup(func() { c.Close() })
	return s
}

func (s *groSink) next(t *testing.T) (n, gso int) {
	t.Helper()
	select {
	case r := <-s.reads:
		return r[0], r[1]
	case <-time.After(5 * time.Second):
		t.Fatal("nothing arrived")
	}
	return 0, 0
}

// sendGSO sends b as datagrams of seg bytes in one send.
func sendGSO(t *testing.T, c *net.UDPConn, dst netip.AddrPort, b []byte, seg int) {
	t.Helper()
	oob := make([]byte, unix.CmsgSpace(2))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	h.Level, h.Type = unix.SOL_UDP, unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(oob[unix.CmsgLen(0):], uint16(seg))
	if _, _, err := c.WriteMsgUDPAddrPort(b, oob, dst); err != nil {
		t.Fatal(err)
	}
}

// TestGSOThrough: a GSO send of 40 datagrams reaches the relay as one read, every datagram is judged on
// its own (counters per datagram), and the survivors leave as one GSO send again.
func TestGSOThrough(t *testing.T) {
	sink := newGROSink(t)
	r, err := New(Config{Listen: loopback, Gateway: sink.conn.LocalAddr().(*net.UDPAddr).AddrPort(), Seed: 3})
	must(t, err)
	defer r.Close()
	if !r.paths[0].gro || !r.paths[0].w.on {
		t.Skip("relay has no GRO/GSO here")
	}
	client, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(loopback))
	must(t, err)
	defer client.Close()

	const seg, segs = 1000, 40
	sendGSO(t, client, r.Addr(), make([]byte, seg*segs), seg)
	if n, gso := sink.next(t); n != seg*segs || gso != seg {
		t.Fatalf("sink read %d bytes in segments of %d; want %d in %d", n, gso, seg*segs, seg)
	}
	// The relay counts a send once it returned, which may be after the sink read it.
	waitStat(t, r, func(s Stats) bool { return s.ToGateway.Forwarded >= segs }, "the batch counted")
	if st := r.Stats().ToGateway; st.Received != segs || st.Forwarded != segs {
		t.Fatalf("relay counted %v; want %d datagrams each way", st, segs)
	}

	// A shorter last datagram ends the batch but travels in it; loss and duplication act per datagram.
	must(t, r.Set(ToGateway, Faults{Loss: 0.25, Duplicate: 0.25}))
	b := make([]byte, seg*segs+300)
	sendGSO(t, client, r.Addr(), b, seg)
	waitStat(t, r, func(s Stats) bool { return s.ToGateway.Received == 2*segs+1 && s.ToGateway.Balanced() == nil }, "the second batch")
	st := r.Stats().ToGateway
	if err := st.Balanced(); err != nil {
		t.Fatal(err)
	}
	if st.Lost == 0 || st.Duplicated == 0 {
		t.Fatalf("no loss or duplicate among %d datagrams at 25%%: %v", segs+1, st)
	}
	var got, reads int
	for got < int(st.BytesOut)-seg*segs {
		n, gso := sink.next(t)
		if gso != 0 && gso != seg {
			t.Fatalf("segment size %d, want %d", gso, seg)
		}
		got += n
		reads++
	}
	if reads > 4 {
		t.Errorf("the survivors took %d reads: not batched", reads)
	}
	t.Logf("second batch: %v, %d reads at the sink", st, reads)
}
