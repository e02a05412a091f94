package engine

import (
	"net/netip"
	"sync"
)

// PacketConn is the batched UDP socket the engine runs on (batch.Conn in production). ReadBatch is called by
// exactly one goroutine; writes go through a sender so the data path and the handshake goroutines can share
// the socket.
type PacketConn interface {
	ReadBatch(bufs [][]byte, sizes []int, addrs []netip.AddrPort) (int, error)
	WriteBatch(bufs [][]byte, addrs []netip.AddrPort) (int, error)
	LocalAddr() netip.AddrPort
	Close() error
}

// sender serialises WriteBatch calls on one socket. The lock is taken once per vector, not per packet.
type sender struct {
	mu   sync.Mutex
	conn PacketConn
}

func (s *sender) write(bufs [][]byte, addrs []netip.AddrPort) (int, error) {
	s.mu.Lock()
	n, err := s.conn.WriteBatch(bufs, addrs)
	s.mu.Unlock()
	return n, err
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
