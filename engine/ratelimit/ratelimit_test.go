package ratelimit

import (
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is advanced by hand so the tests never sleep.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newClock() *fakeClock { return &fakeClock{t: time.Unix(1_700_000_000, 0)} }

func mustNew[K comparable](t *testing.T, interval time.Duration, burst, max int) *Limiter[K] {
	t.Helper()
	l, err := New[K](interval, burst, max)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestBurstThenRefill(t *testing.T) {
	c := newClock()
	l := mustNew[string](t, time.Second, 3, 10)
	for i := range 3 {
		if !l.Allow("a", c.now()) {
			t.Fatalf("event %d of the burst denied", i)
		}
	}
	if l.Allow("a", c.now()) {
		t.Fatal("fourth event in the same instant allowed")
	}
	c.advance(999 * time.Millisecond)
	if l.Allow("a", c.now()) {
		t.Fatal("allowed before a token was regained")
	}
	c.advance(time.Millisecond)
	if !l.Allow("a", c.now()) {
		t.Fatal("denied after one interval")
	}
	if l.Allow("a", c.now()) {
		t.Fatal("only one token should have been regained")
	}
	// After a long pause the bucket holds burst tokens, never more.
	c.advance(time.Hour)
	for i := range 3 {
		if !l.Allow("a", c.now()) {
			t.Fatalf("event %d after refill denied", i)
		}
	}
	if l.Allow("a", c.now()) {
		t.Fatal("bucket overfilled past burst")
	}
	if got := l.Denials(); got != 4 {
		t.Fatalf("Denials() = %d, want 4", got)
	}
}

func TestKeysAreIndependent(t *testing.T) {
	c := newClock()
	l := mustNew[netip.Addr](t, time.Minute, 1, 10)
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")
	if !l.Allow(a, c.now()) || l.Allow(a, c.now()) {
		t.Fatal("key a: want allow then deny")
	}
	if !l.Allow(b, c.now()) {
		t.Fatal("key b throttled by key a")
	}
}

func TestCheckDoesNotConsume(t *testing.T) {
	c := newClock()
	l := mustNew[string](t, time.Second, 1, 1)
	for range 5 {
		if !l.Check("a", c.now()) {
			t.Fatal("Check denied an untouched key")
		}
	}
	if l.Len() != 0 {
		t.Fatal("Check created an entry")
	}
	l.Allow("a", c.now())
	if l.Check("a", c.now()) {
		t.Fatal("Check allowed a drained key")
	}
	if l.Check("b", c.now()) {
		t.Fatal("Check allowed a new key while the table is full of drained buckets")
	}
	c.advance(time.Second)
	if !l.Check("b", c.now()) {
		t.Fatal("Check denied a new key although a full bucket can be evicted")
	}
}

func TestReset(t *testing.T) {
	c := newClock()
	l := mustNew[string](t, time.Hour, 1, 10)
	l.Allow("a", c.now())
	if l.Allow("a", c.now()) {
		t.Fatal("want deny")
	}
	l.Reset("a")
	if !l.Allow("a", c.now()) {
		t.Fatal("Reset did not refill the bucket")
	}
}

func TestBoundedMemory(t *testing.T) {
	c := newClock()
	l := mustNew[int](t, time.Second, 2, 3)
	for k := range 3 {
		if !l.Allow(k, c.now()) {
			t.Fatalf("key %d denied while there was room", k)
		}
	}
	// Table full, every bucket partly drained: new keys are denied, known
	// keys still get their remaining token.
	if l.Allow(99, c.now()) {
		t.Fatal("new key admitted into a full table")
	}
	if !l.Allow(0, c.now()) {
		t.Fatal("known key denied because the table is full")
	}
	if l.Len() != 3 {
		t.Fatalf("Len() = %d, want 3", l.Len())
	}
	// After one interval keys 1 and 2 are full again (key 0 is not) and can
	// be evicted to make room.
	c.advance(time.Second)
	if !l.Allow(99, c.now()) {
		t.Fatal("new key denied although full buckets could be evicted")
	}
	if l.Len() > 3 {
		t.Fatalf("Len() = %d exceeds maxEntries", l.Len())
	}
	// Key 0 was still drained, so it must have been kept (no fresh burst).
	if !l.Allow(0, c.now()) || l.Allow(0, c.now()) {
		t.Fatal("drained key 0 was evicted and got a fresh burst")
	}
}

// A sweep that found nothing must not stop a later sweep from evicting an
// entry added after it with an earlier refill time.
func TestEvictionAfterSkippedSweep(t *testing.T) {
	c := newClock()
	l := mustNew[int](t, time.Second, 1, 2)
	l.Allow(1, c.now()) // full again at +1s
	c.advance(500 * time.Millisecond)
	l.Allow(2, c.now()) // full again at +1.5s
	if l.Allow(3, c.now()) {
		t.Fatal("new key admitted into a full, drained table")
	}
	c.advance(600 * time.Millisecond) // +1.1s: key 1 is full
	if !l.Allow(3, c.now()) {         // evicts 1; key 3 full again at +2.1s
		t.Fatal("key 3 denied although key 1 was full")
	}
	if l.Allow(4, c.now()) {
		t.Fatal("key 4 admitted; nothing is full at +1.1s")
	}
	c.advance(500 * time.Millisecond) // +1.6s: key 2 is full
	if !l.Allow(4, c.now()) {
		t.Fatal("key 4 denied although key 2 was full")
	}
}

func TestClockGoingBackwards(t *testing.T) {
	c := newClock()
	l := mustNew[string](t, time.Second, 1, 10)
	l.Allow("a", c.now())
	c.advance(-time.Hour)
	if l.Allow("a", c.now()) {
		t.Fatal("a clock step backwards refilled the bucket")
	}
}

func TestNewRejectsBadArguments(t *testing.T) {
	for _, tc := range []struct {
		interval   time.Duration
		burst, max int
		want       string
	}{
		{0, 1, 1, "interval"},
		{-time.Second, 1, 1, "interval"},
		{time.Second, 0, 1, "burst"},
		{time.Second, 1, 0, "maxEntries"},
		{time.Hour, 1 << 40, 1, "overflows"},
	} {
		_, err := New[string](tc.interval, tc.burst, tc.max)
		if err == nil || !contains(err.Error(), tc.want) {
			t.Errorf("New(%v, %d, %d) error = %v, want mention of %q", tc.interval, tc.burst, tc.max, err, tc.want)
		}
	}
}

func TestConcurrent(t *testing.T) {
	c := newClock()
	now := c.now()
	l := mustNew[string](t, time.Hour, 100, 1000)
	var mu sync.Mutex
	allowed := map[string]int{}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				k := fmt.Sprint((g + i) % 4)
				if l.Allow(k, now) {
					mu.Lock()
					allowed[k]++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	for k, n := range allowed {
		if n != 100 {
			t.Errorf("key %s: %d events allowed, want exactly the burst of 100", k, n)
		}
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
