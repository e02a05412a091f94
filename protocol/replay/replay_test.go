package replay

import (
	"encoding/binary"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
)

// limit is the protocol's RejectAfterMessages, repeated here so the tests do not depend on the
// protocol package.
const limit = ^uint64(0) - (1 << 13)

// model is the obviously correct reference: a set of accepted counters plus the highest one.
type model struct {
	seen map[uint64]bool
	last uint64
}

func newModel() *model { return &model{seen: make(map[uint64]bool)} }

func (m *model) check(c, lim uint64) bool {
	if c >= lim {
		return false
	}
	if c <= m.last && m.last-c >= WindowSize {
		return false
	}
	if m.seen[c] {
		return false
	}
	m.seen[c] = true
	if c > m.last {
		m.last = c
	}
	return true
}

// prune drops counters that left the window so the map stays small over millions of operations.
func (m *model) prune() {
	for c := range m.seen {
		if m.last-c >= WindowSize {
			delete(m.seen, c)
		}
	}
}

func mustCheck(t *testing.T, w *Window, c uint64, want bool) {
	t.Helper()
	if got := w.Check(c, limit); got != want {
		t.Fatalf("Check(%d) = %v, want %v (last %d)", c, got, want, w.last)
	}
}

func TestInOrderFromZero(t *testing.T) {
	var w Window
	for c := uint64(0); c < 3*ringBits; c++ {
		mustCheck(t, &w, c, true)
		mustCheck(t, &w, c, false)
	}
}

func TestOutOfOrderWithinWindow(t *testing.T) {
	var w Window
	mustCheck(t, &w, 10000, true)
	// Every counter in the window below T, in descending order, is fresh once.
	for c := uint64(10000 - 1); c > 10000-WindowSize; c-- {
		mustCheck(t, &w, c, true)
	}
	for c := uint64(10000 - WindowSize + 1); c <= 10000; c++ {
		mustCheck(t, &w, c, false)
	}
}

func TestTooOld(t *testing.T) {
	var w Window
	const top = 100000
	mustCheck(t, &w, top, true)
	mustCheck(t, &w, top-WindowSize+1, true) // oldest counter in the window
	mustCheck(t, &w, top-WindowSize, false)  // exactly WindowSize behind: outside (RFC 4303 A2.1)
	mustCheck(t, &w, top-WindowSize-1, false)
	mustCheck(t, &w, 0, false)
	// Moving the top by one pushes the previously oldest counter out.
	mustCheck(t, &w, top+1, true)
	mustCheck(t, &w, top-WindowSize+2, true)
	mustCheck(t, &w, top-WindowSize+1, false)
}

func TestZeroCounter(t *testing.T) {
	var w Window
	mustCheck(t, &w, 0, true)
	mustCheck(t, &w, 0, false)
	var w2 Window
	mustCheck(t, &w2, 5, true)
	mustCheck(t, &w2, 0, true) // late counter 0 is still in the window
	mustCheck(t, &w2, 0, false)
}

func TestBigJumps(t *testing.T) {
	var w Window
	for c := uint64(0); c < ringBits; c++ {
		w.Check(c, limit) // fill every word with ones
	}
	// A jump of exactly one ring, of many rings and a huge one: all old bits must be gone.
	for _, top := range []uint64{2 * ringBits, 4*ringBits + 1, 1 << 20, 1<<40 + 12345, limit - 1} {
		mustCheck(t, &w, top, true)
		for d := uint64(1); d < WindowSize; d += 61 {
			mustCheck(t, &w, top-d, true)
			mustCheck(t, &w, top-d, false)
		}
		mustCheck(t, &w, top-WindowSize, false)
	}
}

func TestJumpByLessThanRing(t *testing.T) {
	var w Window
	for c := uint64(0); c < 20000; c++ {
		w.Check(c, limit)
	}
	for _, step := range []uint64{63, 64, 65, 4000, 8127, 8128, 8191, 8192, 8193} {
		top := w.last + step
		mustCheck(t, &w, top, true)
		for c := top - WindowSize + 1; c < top; c++ {
			want := c <= top-step // counters at or below the old top were all accepted before
			mustCheck(t, &w, c, !want)
		}
	}
}

func TestLimit(t *testing.T) {
	var w Window
	mustCheck(t, &w, limit, false)
	mustCheck(t, &w, ^uint64(0), false)
	mustCheck(t, &w, limit-1, true)
	mustCheck(t, &w, limit-1, false)
	mustCheck(t, &w, limit-2, true)
	if w.Check(10, 10) || !w.Check(limit-3, limit) {
		t.Fatal("limit is exclusive")
	}
	if w.Check(7, 0) {
		t.Fatal("limit 0 accepts nothing")
	}
}

func TestRandomAgainstModel(t *testing.T) {
	ops := 3_000_000
	if raceEnabled || testing.Short() {
		ops = 200_000
	}
	for seed := uint64(1); seed <= 3; seed++ {
		r := rand.New(rand.NewPCG(seed, 42))
		var w Window
		m := newModel()
		next := uint64(0)
		if seed == 3 {
			next = limit - uint64(ops) // the last run ends at the limit
		}
		for i := 0; i < ops; i++ {
			var c uint64
			switch k := r.IntN(100); {
			case k < 50: // mostly in order
				c = next
				next++
			case k < 80: // reordered within (and slightly beyond) the window
				c = m.last - r.Uint64N(WindowSize+200)
				if c > m.last {
					c = 0
				}
			case k < 90: // duplicate of something recent
				c = m.last - r.Uint64N(64)
				if c > m.last {
					c = 0
				}
			case k < 99: // jump ahead by up to two rings
				c = m.last + r.Uint64N(2*ringBits)
			default: // far jump, or a counter at/over the limit
				if r.IntN(2) == 0 {
					c = m.last + r.Uint64N(1<<20)
				} else {
					c = limit - 2 + r.Uint64N(4)
				}
			}
			if c >= next && c < limit {
				next = c + 1
			}
			want := m.check(c, limit)
			if got := w.Check(c, limit); got != want {
				t.Fatalf("seed %d op %d: Check(%d) = %v, model %v (last %d)", seed, i, c, got, want, m.last)
			}
			if i%100_000 == 0 {
				m.prune()
			}
		}
	}
}

func TestConcurrent(t *testing.T) {
	// Several goroutines offer the same counters; each counter must be accepted exactly once.
	var w Window
	const n = 20000
	var accepted [n]atomic.Int32
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := uint64(0); c < n; c++ {
				if w.Check(c, limit) {
					accepted[c].Add(1)
				}
			}
		}()
	}
	wg.Wait()
	for c := range accepted {
		if accepted[c].Load() != 1 {
			t.Fatalf("counter %d accepted %d times", c, accepted[c].Load())
		}
	}
}

func TestCheckAllocs(t *testing.T) {
	var w Window
	c := uint64(0)
	if a := testing.AllocsPerRun(1000, func() { w.Check(c, limit); c += 3 }); a != 0 {
		t.Fatalf("Check allocates %v", a)
	}
}

// FuzzCheck drives a Window and the reference model with the same operations. Each 9-byte chunk
// is an operation: one selector byte and a 64-bit little-endian operand.
func FuzzCheck(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{0, 5, 0, 0, 0, 0, 0, 0, 0, 1, 3, 0, 0, 0, 0, 0, 0, 0, 1, 3, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{0, 0xc0, 0x1f, 0, 0, 0, 0, 0, 0, 1, 0xc0, 0x1f, 0, 0, 0, 0, 0, 0, 2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{3, 0xfe, 0xdf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 1, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		var w Window
		m := newModel()
		for len(data) >= 9 {
			v := binary.LittleEndian.Uint64(data[1:9])
			var c uint64
			switch data[0] % 4 {
			case 0: // ahead of the top
				c = m.last + v%(4*ringBits)
			case 1: // behind the top
				c = m.last - v%(WindowSize+256)
			case 2: // absolute
				c = v
			case 3: // near the limit
				c = limit - 1 - v%(2*ringBits) + 2
			}
			lim := uint64(limit)
			if data[0]&0x80 != 0 {
				lim = c + uint64(data[0]&1) // exercise counter == limit and limit-1
			}
			data = data[9:]
			if want, got := m.check(c, lim), w.Check(c, lim); got != want {
				t.Fatalf("Check(%d, %d) = %v, model %v (last %d)", c, lim, got, want, m.last)
			}
		}
	})
}

func BenchmarkCheckInOrder(b *testing.B) {
	var w Window
	b.ReportAllocs()
	c := uint64(0)
	for b.Loop() {
		w.Check(c, limit)
		c++
	}
}

// BenchmarkCheckNoLock is the same without the mutex, to show what the lock costs.
func BenchmarkCheckNoLock(b *testing.B) {
	var w Window
	b.ReportAllocs()
	c := uint64(0)
	for b.Loop() {
		w.check(c)
		c++
	}
}

func BenchmarkCheckOutOfOrder(b *testing.B) {
	var w Window
	// A fixed pseudo-random permutation within 4096-counter groups: reordering inside the window.
	perm := rand.New(rand.NewPCG(1, 2)).Perm(4096)
	b.ReportAllocs()
	i := uint64(0)
	for b.Loop() {
		c := i&^4095 | uint64(perm[i&4095])
		w.Check(c, limit)
		i++
	}
}

func BenchmarkCheckParallel(b *testing.B) {
	var w Window
	var ctr atomic.Uint64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			w.Check(ctr.Add(1), limit)
		}
	})
}
