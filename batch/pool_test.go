package batch

import (
	"sync"
	"testing"
)

func TestBufSize(t *testing.T) {
	if BufSize < 16+65535+16 || BufSize%pageSize != 0 {
		t.Fatalf("BufSize = %d", BufSize)
	}
}

func TestPoolAccounting(t *testing.T) {
	p := NewPool(3)
	a, b, c := p.Get(), p.Get(), p.Get()
	if a == nil || b == nil || c == nil {
		t.Fatal("Get returned nil below the bound")
	}
	if len(a) != BufSize || cap(a) != BufSize {
		t.Fatalf("len/cap = %d/%d", len(a), cap(a))
	}
	if p.Allocated() != 3 || p.Outstanding() != 3 {
		t.Fatalf("Allocated/Outstanding = %d/%d, want 3/3", p.Allocated(), p.Outstanding())
	}
	if d := p.Get(); d != nil {
		t.Fatal("Get beyond the bound returned a buffer")
	}
	if p.Misses() != 1 {
		t.Fatalf("Misses = %d", p.Misses())
	}
	p.Put(b[:10]) // a resliced buffer comes back whole
	if p.Outstanding() != 2 || p.Allocated() != 3 {
		t.Fatalf("after Put: Allocated/Outstanding = %d/%d", p.Allocated(), p.Outstanding())
	}
	if d := p.Get(); &d[0] != &b[0] || len(d) != BufSize {
		t.Fatal("Get did not reuse the returned buffer at full length")
	}
	p.Put(a)
	p.Put(b)
	p.Put(c)
	if p.Outstanding() != 0 || p.Allocated() != 3 {
		t.Fatalf("end: Allocated/Outstanding = %d/%d", p.Allocated(), p.Outstanding())
	}
}

func TestPoolPanics(t *testing.T) {
	mustPanic := func(name string, f func()) {
		t.Helper()
		defer func() {
			if recover() == nil {
				t.Errorf("%s did not panic", name)
			}
		}()
		f()
	}
	p := NewPool(2)
	mustPanic("foreign buffer", func() { p.Put(make([]byte, 1500)) })
	b := p.Get()
	p.Put(b)
	mustPanic("double Put", func() { p.Put(b) })
	mustPanic("PutBatch too many", func() { p.PutBatch([][]byte{b}) })
}

func TestPoolBatch(t *testing.T) {
	p := NewPool(10)
	dst := make([][]byte, 6)
	if n := p.GetBatch(dst); n != 6 {
		t.Fatalf("GetBatch = %d", n)
	}
	more := make([][]byte, 6)
	if n := p.GetBatch(more); n != 4 || more[4] != nil || more[5] != nil || p.Misses() != 1 {
		t.Fatalf("GetBatch at bound = %d, misses %d", n, p.Misses())
	}
	p.PutBatch(dst)
	if dst[0] != nil || p.Outstanding() != 4 {
		t.Fatalf("PutBatch: slot not cleared or Outstanding = %d", p.Outstanding())
	}
	v := NewVector(8, p) // 6 free buffers: two slots stay empty
	if v.Fill(p) {
		t.Fatal("Fill reported full with an exhausted pool")
	}
	p.PutBatch(more)
	if !v.Fill(p) || p.Outstanding() != 8 {
		t.Fatalf("Fill after PutBatch: Outstanding = %d", p.Outstanding())
	}
	v.Release(p)
	if p.Outstanding() != 0 || p.Allocated() != 10 {
		t.Fatalf("Release: Allocated/Outstanding = %d/%d", p.Allocated(), p.Outstanding())
	}
	if w := NewVector(2, nil); len(w.Bufs[1]) != BufSize {
		t.Fatal("private Vector buffers have the wrong size")
	}
}

// TestPoolConcurrent hammers the pool from several goroutines (run with -race): the bound holds at every
// moment and every buffer is accounted for at the end.
func TestPoolConcurrent(t *testing.T) {
	const max = 16
	p := NewPool(max)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			held := make([][]byte, 0, 4)
			vec := make([][]byte, 3)
			for i := 0; i < 2000; i++ {
				if b := p.Get(); b != nil {
					b[0] = byte(g) // the race detector flags two owners of one buffer
					held = append(held, b)
				}
				if n := p.GetBatch(vec); n > 0 {
					vec[0][1] = byte(g)
					p.PutBatch(vec)
				}
				if o := p.Outstanding(); o > max {
					t.Errorf("Outstanding %d > bound", o)
					return
				}
				if len(held) == cap(held) || i%3 == 0 {
					for _, b := range held {
						p.Put(b)
					}
					held = held[:0]
				}
			}
			for _, b := range held {
				p.Put(b)
			}
		}(g)
	}
	wg.Wait()
	if p.Outstanding() != 0 || p.Allocated() > max {
		t.Fatalf("Allocated/Outstanding = %d/%d", p.Allocated(), p.Outstanding())
	}
}

func TestPoolAllocs(t *testing.T) {
	p := NewPool(4)
	p.Put(p.Get()) // warm: the one allocation of the buffer itself
	vec := make([][]byte, 4)
	if a := testing.AllocsPerRun(1000, func() {
		p.Put(p.Get())
		p.GetBatch(vec)
		p.PutBatch(vec)
	}); a != 0 {
		t.Fatalf("%v allocations per warm Get/Put cycle", a)
	}
}

// chanPool is the channel-based alternative, kept here only so the benchmarks measure the choice.
type chanPool struct{ ch chan []byte }

func (c *chanPool) Get() []byte {
	select {
	case b := <-c.ch:
		return b
	default:
		return nil
	}
}

func (c *chanPool) Put(b []byte) { c.ch <- b }

func BenchmarkPoolMutex(b *testing.B) {
	p := NewPool(64)
	p.Put(p.Get())
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if buf := p.Get(); buf != nil {
				p.Put(buf)
			}
		}
	})
}

func BenchmarkPoolMutexBatch64(b *testing.B) {
	p := NewPool(256)
	b.RunParallel(func(pb *testing.PB) {
		vec := make([][]byte, 64)
		for pb.Next() {
			p.GetBatch(vec)
			p.PutBatch(vec)
		}
	})
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/64, "ns/buf")
}

func BenchmarkPoolChannel(b *testing.B) {
	c := &chanPool{ch: make(chan []byte, 64)}
	for i := 0; i < 64; i++ {
		c.ch <- make([]byte, 1)
	}
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if buf := c.Get(); buf != nil {
				c.Put(buf)
			}
		}
	})
}
