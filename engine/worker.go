package engine

import (
	"context"
	"net/netip"

	"github.com/salvovpn/salvo/protocol"
	"golang.zx2c4.com/wireguard/tun"
)

// worker is one of the gateway's per-core workers. It owns its socket on every listen address (a receive
// loop each), the TUN queues it reads (a TUN loop each) and the queue its receive loops write to, and the
// vectors those loops allocate when they start. A session belongs to the worker its receiver index names
// (socketLayout.owner); the worker's socket answers it and the worker's queue carries its packets.
type worker struct {
	id  int
	srv *Server
	// sockets[g] is the worker's socket on listen address g (an index into Server.sockets).
	sockets []int
	// reads are the TUN queues this worker reads (queue q is read by worker q mod workers); with a
	// single-queue device only worker 0 reads it.
	reads []int
	// writeQueue is where the worker's receive loops write: the kernel then sends the replies of those
	// flows back on the same queue, to this worker.
	writeQueue tun.Device
	vectors    vectorCounters // read calls and packets of the worker's loops
}

// newWorkers lays out the workers of s over its sockets and queues (see socketLayout).
func newWorkers(s *Server) []*worker {
	ws := make([]*worker, s.workers)
	for id := range ws {
		w := &worker{id: id, srv: s, writeQueue: s.queues[id%len(s.queues)]}
		for g := range len(s.sockets) / s.workers {
			w.sockets = append(w.sockets, s.layout.socket(g, id))
		}
		for q := range s.queues {
			if s.layout.queueWorker(q) == id {
				w.reads = append(w.reads, q)
			}
		}
		ws[id] = w
	}
	return ws
}

// start starts the worker's long-lived goroutines through start (Server.Run's): "udp receive" per socket
// and "tun read" per queue it reads.
func (w *worker) start(ctx context.Context, start func(name string, f func() error)) {
	for _, socket := range w.sockets {
		start("udp receive", func() error { return w.receiveLoop(ctx, socket) })
	}
	for _, q := range w.reads {
		start("tun read", func() error { return w.tunLoop(ctx, q) })
	}
}

// receiveLoop is the gateway's hot inbound path for one of the worker's sockets: read a vector of
// datagrams, open the data packets in place, check that each inner packet comes from its session's
// address, and write the survivors to the worker's TUN queue in one call (Server.inbound). Handshake
// messages go to the handshake queue.
func (w *worker) receiveLoop(ctx context.Context, socket int) error {
	s := w.srv
	r := &inboundState{ctx: ctx, socket: socket, worker: w.id, dev: w.writeQueue,
		v:      newVector(s.cfg.BatchSize, bufSize),
		intake: intakeSocket{via: s.sockets[socket], group: s.layout.group(socket), worker: w.id}}
	c := s.sockets[socket].conn
	for {
		n, err := c.ReadBatch(r.v.bufs, r.v.sizes, r.v.addrs)
		if err != nil {
			return err
		}
		w.vectors.udp(n)
		s.inbound(r, n)
	}
}

// tunLoop is the gateway's hot outbound path for one TUN queue the worker reads: read a vector, find the
// session that owns each destination, seal in place and send with one sendmmsg per socket
// (Server.outbound), through the worker's socket of the listen address each client uses (same address and
// port: a reuseport group).
func (w *worker) tunLoop(ctx context.Context, q int) error {
	s := w.srv
	dev := s.queues[q]
	o := &outboundState{worker: w.id, v: newVector(s.cfg.BatchSize, bufSize),
		bufs: make([][][]byte, len(s.sockets)), addrs: make([][]netip.AddrPort, len(s.sockets))}
	for i := range s.sockets {
		o.bufs[i] = make([][]byte, 0, s.cfg.BatchSize)
		o.addrs[i] = make([]netip.AddrPort, 0, s.cfg.BatchSize)
	}
	for {
		n, err := dev.Read(o.v.bufs, o.v.sizes, protocol.Headroom)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		w.vectors.tun(n)
		s.outbound(o, n)
	}
}
