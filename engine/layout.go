package engine

import "github.com/salvovpn/salvo/protocol"

// socketLayout is how a gateway's sockets and TUN queues are arranged. Each listen address is one
// SO_REUSEPORT group with one socket per worker, and the sockets are kept group-major: socket
// group*workers + worker is that worker's on that listen address. Worker w also reads TUN queue w (with
// fewer queues than workers, queue q serves worker q mod workers). A session belongs to one worker, which
// its receiver index names (protocol.IndexOwner), and is answered through that worker's socket of the
// listen address its client uses. This is the only place that does arithmetic on socket numbers.
type socketLayout struct{ workers int }

// socket is worker's socket on listen address group.
func (l socketLayout) socket(group, worker int) int { return group*l.workers + worker }

// group is the listen address of socket socket.
func (l socketLayout) group(socket int) int { return socket / l.workers }

// worker is the worker of socket socket.
func (l socketLayout) worker(socket int) int { return socket % l.workers }

// queueWorker is the worker that TUN queue q serves.
func (l socketLayout) queueWorker(q int) int { return q % l.workers }

// owner is the worker that owns receiver index idx.
func (l socketLayout) owner(idx uint32) int { return protocol.IndexOwner(idx, l.workers) }

// sibling is the socket of worker on the listen address of socket socket: where a session whose endpoint
// came in on socket is answered from by worker.
func (l socketLayout) sibling(socket, worker int) int { return l.socket(l.group(socket), worker) }
