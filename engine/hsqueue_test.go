package engine

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

func hsSrc(i int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}), 4000)
}

// TestHandshakeQueue: newest first; a source's newer request replaces its queued one; a full queue drops
// its oldest; requests older than maxHandshakeAge are dropped unserved.
func TestHandshakeQueue(t *testing.T) {
	q := newHandshakeQueue(4)
	now := time.Now()
	for i := range 3 {
		q.push([]byte(fmt.Sprint("req", i)), hsSrc(i), intakeSocket{}, now)
	}
	if _, replaced := q.push([]byte("req0-retry"), hsSrc(0), intakeSocket{}, now); !replaced || q.len() != 3 {
		t.Fatalf("a retry from the same source did not replace its stale request (len %d)", q.len())
	}
	q.push([]byte("req3"), hsSrc(3), intakeSocket{}, now)
	if dropped, _ := q.push([]byte("req4"), hsSrc(4), intakeSocket{}, now); !dropped {
		t.Fatal("a full queue took a fifth request without dropping")
	}
	var order []string
	for {
		job, _, ok := q.pop(now)
		if !ok {
			break
		}
		order = append(order, string(job.buf))
		q.done(job)
	}
	if want := "[req4 req3 req0-retry req2]"; fmt.Sprint(order) != want {
		t.Fatalf("served %v, want %s (newest first; req1, the oldest, dropped)", order, want)
	}
	q.push([]byte("old"), hsSrc(9), intakeSocket{}, now)
	q.push([]byte("new"), hsSrc(10), intakeSocket{}, now.Add(maxHandshakeAge))
	job, expired, ok := q.pop(now.Add(maxHandshakeAge + time.Millisecond))
	if !ok || string(job.buf) != "new" || expired != 1 {
		t.Fatalf("pop after the age limit: %q, %d expired", job.buf, expired)
	}
	q.done(job)
	if q.len() != 0 {
		t.Fatalf("%d left", q.len())
	}
}

func TestHandshakeQueueAllocatesNothing(t *testing.T) {
	q := newHandshakeQueue(handshakeQueueLen)
	now := time.Now()
	req := make([]byte, 200)
	i := 0
	if a := testing.AllocsPerRun(1000, func() {
		i++
		q.push(req, hsSrc(i%300), intakeSocket{}, now) // wraps: replaces, fills and drops
		if i%3 == 0 {
			if job, _, ok := q.pop(now); ok {
				q.done(job)
			}
		}
	}); a != 0 {
		t.Fatalf("%v allocations per request", a)
	}
}

func BenchmarkHandshakeQueuePush(b *testing.B) {
	q := newHandshakeQueue(handshakeQueueLen)
	now := time.Now()
	req := make([]byte, 200)
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		i++
		q.push(req, hsSrc(i%1000), intakeSocket{}, now) // a flood from many sources keeps the queue full
	}
}
