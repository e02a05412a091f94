package faultrelay

import (
	"net/netip"
	"sync"
	"time"
)

// maxDelayed bounds a direction's delay queue. At 1 Gbit/s of 1400-byte datagrams with every one delayed
// by 5 ms about 450 are held; the bound only matters if the delay goroutine cannot keep up, and then
// datagrams are dropped (DirStats.DelayOverflow) rather than memory grown without limit.
const maxDelayed = 1 << 16

// delayed is a datagram held back until `at` (relay clock).
type delayed struct {
	at     int64
	seq    uint64 // ties on at keep push order (a duplicate right after its original)
	buf    []byte
	to     netip.AddrPort
	copies int
}

// delayQueue is a min-heap of delayed datagrams ordered by release time, filled by forwardLoop and served
// by delayLoop. Buffers are recycled through free, so a steady stream of delays allocates nothing once
// the queue has reached its working size.
type delayQueue struct {
	mu   sync.Mutex
	heap []delayed
	free [][]byte
	seq  uint64
	wake chan struct{} // capacity 1: "the earliest release may have moved"
}

func (q *delayQueue) init() { q.wake = make(chan struct{}, 1) }

// push copies b into the queue; false when the queue is full.
func (q *delayQueue) push(at int64, b []byte, to netip.AddrPort, copies int) bool {
	q.mu.Lock()
	if len(q.heap) >= maxDelayed {
		q.mu.Unlock()
		return false
	}
	var buf []byte
	if n := len(q.free); n > 0 {
		buf, q.free = q.free[n-1], q.free[:n-1]
	}
	buf = append(buf[:0], b...)
	q.seq++
	q.heap = append(q.heap, delayed{at: at, seq: q.seq, buf: buf, to: to, copies: copies})
	q.up(len(q.heap) - 1)
	first := q.heap[0].seq == q.seq
	q.mu.Unlock()
	if first {
		select {
		case q.wake <- struct{}{}:
		default:
		}
	}
	return true
}

// len is the number of datagrams held.
func (q *delayQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.heap)
}

func (q *delayQueue) less(i, j int) bool {
	a, b := &q.heap[i], &q.heap[j]
	return a.at < b.at || a.at == b.at && a.seq < b.seq
}

func (q *delayQueue) up(i int) {
	for i > 0 {
		parent := (i - 1) / 2
		if !q.less(i, parent) {
			return
		}
		q.heap[i], q.heap[parent] = q.heap[parent], q.heap[i]
		i = parent
	}
}

func (q *delayQueue) down(i int) {
	n := len(q.heap)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		m := l
		if r := l + 1; r < n && q.less(r, l) {
			m = r
		}
		if !q.less(m, i) {
			return
		}
		q.heap[i], q.heap[m] = q.heap[m], q.heap[i]
		i = m
	}
}

// pop removes the earliest entry if it is due at now; ok is false otherwise, with wait the time until it
// is due (or -1 when the queue is empty). The caller gives the buffer back with recycle.
func (q *delayQueue) pop(now int64) (d delayed, ok bool, wait time.Duration) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.heap) == 0 {
		return delayed{}, false, -1
	}
	if top := q.heap[0].at; top > now {
		return delayed{}, false, time.Duration(top - now)
	}
	d = q.heap[0]
	last := len(q.heap) - 1
	q.heap[0] = q.heap[last]
	q.heap[last] = delayed{}
	q.heap = q.heap[:last]
	q.down(0)
	return d, true, 0
}

func (q *delayQueue) recycle(buf []byte) {
	q.mu.Lock()
	if len(q.free) < maxDelayed {
		q.free = append(q.free, buf)
	}
	q.mu.Unlock()
}

// delayLoop sends delayed datagrams when they are due, until the relay closes (what is still held then is
// dropped). One timer serves the whole queue: it is set for the earliest release and moved when push
// puts an earlier one in front.
func (p *path) delayLoop() {
	defer p.r.wg.Done()
	q := &p.delay
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		d, ok, wait := q.pop(p.r.mono())
		if ok {
			for range d.copies {
				p.send(d.buf, d.to)
			}
			q.recycle(d.buf)
			continue
		}
		if wait < 0 {
			wait = time.Hour
		}
		timer.Reset(wait)
		select {
		case <-p.r.done:
			return
		case <-q.wake:
		case <-timer.C:
		}
	}
}
