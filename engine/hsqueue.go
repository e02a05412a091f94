package engine

import (
	"net/netip"
	"sync"
	"time"

	"github.com/salvovpn/salvo/protocol"
)

// handshakeQueue holds login and resume requests between the receive loops and the handshake workers.
// Serving a request can cost a password hash (~100 ms), so under a storm the queue decides who gets the
// gateway's hashing time; it is built so that time goes to clients that are still waiting:
//
//   - newest first: a client retransmits after 1-4 s with a new request (a new sender index), and only
//     the answer to its newest one is of use to it, so the newest requests are served first and, when the
//     queue is full, the oldest is dropped;
//   - one per source: a request from an address and port that already has one queued replaces it (the
//     older is that client's stale retransmission), so a retrying client never costs several hashes;
//   - a maximum age: a request older than maxHandshakeAge is dropped unserved;
//   - bounded and allocation-free: requests are copied into buffers allocated once, and only after the
//     receive loop's length and mac1 check, so junk costs nothing beyond that check. Every operation is
//     O(1): the jobs form a doubly linked list in arrival order, indexed by source.
type handshakeQueue struct {
	mu    sync.Mutex
	nodes []hsNode // all of them, allocated once
	free  *hsNode  // unused nodes (singly linked through next)
	head  *hsNode  // oldest queued
	tail  *hsNode  // newest queued
	n     int
	bySrc map[netip.AddrPort]*hsNode
	wake  chan struct{} // one token when the queue is not empty
}

// maxHandshakeAge: a request waiting longer than this is stale. Clients retransmit after 1 s, then 2 and
// 4 s; a request two seconds old has been superseded by its client's next one, or its client gave up.
const maxHandshakeAge = 2 * time.Second

type handshakeJob struct {
	buf  []byte // the request, in a buffer of the queue
	src  netip.AddrPort
	from intakeSocket
	at   time.Time // when the receive loop read it
	node *hsNode
}

// intakeSocket is the socket a request arrived on: the one its answer goes out of, and where a session it
// creates lives.
type intakeSocket struct {
	via   *sender // answers are sent through it (same address and port as the request's destination)
	group int     // the listen address (reuseport group) it belongs to
	// worker is the worker whose socket it is, or -1 for a group's handshake socket: the session then goes
	// to a worker chosen in turn.
	worker int
}

type hsNode struct {
	job        handshakeJob
	store      []byte // MaxRequestLen bytes
	prev, next *hsNode
}

func newHandshakeQueue(n int) *handshakeQueue {
	q := &handshakeQueue{nodes: make([]hsNode, n), bySrc: make(map[netip.AddrPort]*hsNode, n), wake: make(chan struct{}, 1)}
	for i := range q.nodes {
		q.nodes[i].store = make([]byte, protocol.MaxRequestLen)
		q.nodes[i].next = q.free
		q.free = &q.nodes[i]
	}
	return q
}

// push queues a copy of b (at most MaxRequestLen bytes: the caller checked the length). It reports what
// had to go: dropped is a full queue's oldest request, replaced a stale request of the same source.
func (q *handshakeQueue) push(b []byte, src netip.AddrPort, from intakeSocket, now time.Time) (dropped, replaced bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if old := q.bySrc[src]; old != nil {
		q.unlink(old)
		q.put(old)
		replaced = true
	}
	if q.free == nil {
		oldest := q.head
		q.unlink(oldest)
		q.put(oldest)
		dropped = true
	}
	nd := q.free
	q.free = nd.next
	nd.job = handshakeJob{buf: nd.store[:copy(nd.store, b)], src: src, from: from, at: now, node: nd}
	nd.prev, nd.next = q.tail, nil
	if q.tail != nil {
		q.tail.next = nd
	} else {
		q.head = nd
	}
	q.tail = nd
	q.n++
	q.bySrc[src] = nd
	select {
	case q.wake <- struct{}{}:
	default:
	}
	return dropped, replaced
}

// pop takes the newest request not older than maxHandshakeAge, dropping the stale ones (counted in
// expired). ok is false when the queue is empty. The caller gives the job back with done.
func (q *handshakeQueue) pop(now time.Time) (job handshakeJob, expired int, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for q.head != nil && now.Sub(q.head.job.at) > maxHandshakeAge { // the oldest are at the head
		old := q.head
		q.unlink(old)
		q.put(old)
		expired++
	}
	if q.tail == nil {
		return handshakeJob{}, expired, false
	}
	nd := q.tail
	q.unlink(nd)
	if q.n > 0 {
		select { // more work for another worker
		case q.wake <- struct{}{}:
		default:
		}
	}
	return nd.job, expired, true
}

// done gives a popped job's buffer back to the queue.
func (q *handshakeQueue) done(job handshakeJob) {
	q.mu.Lock()
	q.put(job.node)
	q.mu.Unlock()
}

func (q *handshakeQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.n
}

// unlink takes nd out of the queued list (and the source index).
func (q *handshakeQueue) unlink(nd *hsNode) {
	if nd.prev != nil {
		nd.prev.next = nd.next
	} else {
		q.head = nd.next
	}
	if nd.next != nil {
		nd.next.prev = nd.prev
	} else {
		q.tail = nd.prev
	}
	nd.prev, nd.next = nil, nil
	q.n--
	if q.bySrc[nd.job.src] == nd {
		delete(q.bySrc, nd.job.src)
	}
}

// put returns an unlinked node to the free list.
func (q *handshakeQueue) put(nd *hsNode) {
	nd.job = handshakeJob{}
	nd.next = q.free
	q.free = nd
}
