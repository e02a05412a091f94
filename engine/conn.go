package engine

import (
	"net/netip"
)

// PacketConn is the batched UDP socket the engine runs on (batch.Conn in production, enginetest.Conn in
// tests). ReadBatch is called by exactly one goroutine. WriteBatch must be safe for concurrent use: the data
// path and the handshake goroutines share the socket (batch.Conn serialises each direction itself, so the
// engine adds no lock of its own).
type PacketConn interface {
	ReadBatch(bufs [][]byte, sizes []int, addrs []netip.AddrPort) (int, error)
	WriteBatch(bufs [][]byte, addrs []netip.AddrPort) (int, error)
	LocalAddr() netip.AddrPort
	Close() error
}

// sender is a socket the engine writes to, with the single-datagram helper the control plane uses.
type sender struct {
	conn PacketConn
}

func (s *sender) write(bufs [][]byte, addrs []netip.AddrPort) (int, error) {
	return s.conn.WriteBatch(bufs, addrs)
}

// writeOne sends a single control datagram (handshake reply, notice).
func (s *sender) writeOne(b []byte, to netip.AddrPort) error {
	bufs := [1][]byte{b}
	addrs := [1]netip.AddrPort{to}
	_, err := s.write(bufs[:], addrs[:])
	return err
}

// vector is a reusable set of packet buffers with the side arrays the batched calls need. It is owned by one
// goroutine; nothing in it is allocated after newVector.
type vector struct {
	bufs  [][]byte
	sizes []int
	addrs []netip.AddrPort
	// outBufs collects the packets that survive processing for the next write call.
	outBufs [][]byte
}

func newVector(n, bufSize int) *vector {
	v := &vector{bufs: make([][]byte, n), sizes: make([]int, n), addrs: make([]netip.AddrPort, n),
		outBufs: make([][]byte, 0, n)}
	for i := range v.bufs {
		v.bufs[i] = make([]byte, bufSize)
	}
	return v
}
