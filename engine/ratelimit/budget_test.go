package ratelimit

import (
	"math"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func mustBudget(t *testing.T, rate, burst float64) *Budget {
	t.Helper()
	b, err := NewBudget(rate, burst)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestBudgetBurstThenRefill(t *testing.T) {
	c := newClock()
	b := mustBudget(t, 100, 1000) // 100 units per second, 1000 at most
	if lv := b.Level(c.now()); lv != 1 {
		t.Fatalf("new budget level %v, want 1", lv)
	}
	if !b.Take(600, c.now()) || !b.Take(400, c.now()) {
		t.Fatal("a full budget refused its burst")
	}
	if b.Take(1, c.now()) {
		t.Fatal("an empty budget gave one more unit")
	}
	if lv := b.Level(c.now()); lv != 0 {
		t.Fatalf("empty budget level %v, want 0", lv)
	}
	c.advance(time.Second) // +100 units
	if lv := b.Level(c.now()); math.Abs(lv-0.1) > 1e-12 {
		t.Fatalf("level after 1s = %v, want 0.1", lv)
	}
	if b.Take(101, c.now()) {
		t.Fatal("took more than had been regained")
	}
	if !b.Take(100, c.now()) {
		t.Fatal("refused what had been regained")
	}
	// A long pause fills the budget, never past the burst.
	c.advance(24 * time.Hour)
	if lv := b.Level(c.now()); lv != 1 {
		t.Fatalf("level after a day = %v", lv)
	}
	if !b.Take(1000, c.now()) || b.Take(0.5, c.now()) {
		t.Fatal("budget overfilled past the burst")
	}
}

func TestBudgetLevelUnderPressure(t *testing.T) {
	c := newClock()
	b := mustBudget(t, 10, 100)
	b.Take(49, c.now())
	if lv := b.Level(c.now()); lv < 0.5 || math.Abs(lv-0.51) > 1e-9 {
		t.Fatalf("level %v, want 0.51", lv)
	}
	b.Take(2, c.now())
	if lv := b.Level(c.now()); lv >= 0.5 {
		t.Fatalf("level %v after taking 51 of 100, want under 0.5", lv)
	}
	c.advance(200 * time.Millisecond) // +2 units
	if lv := b.Level(c.now()); math.Abs(lv-0.51) > 1e-9 {
		t.Fatalf("level %v after refill, want 0.51", lv)
	}
}

func TestBudgetRefusesOversizedAndBadCosts(t *testing.T) {
	c := newClock()
	b := mustBudget(t, 1000, 131072)
	for _, cost := range []float64{131072.5, 1e300, math.Inf(1), -1, math.Inf(-1), math.NaN()} {
		if b.Take(cost, c.now()) {
			t.Errorf("Take(%v) succeeded", cost)
		}
	}
	if lv := b.Level(c.now()); lv != 1 {
		t.Fatalf("refused takes changed the level to %v", lv)
	}
	// A cost larger than the burst stays refused however long one waits.
	c.advance(time.Hour)
	if b.Take(131073, c.now()) {
		t.Fatal("cost over the burst passed after waiting")
	}
	if !b.Take(0, c.now()) {
		t.Fatal("a zero cost was refused")
	}
	if !b.Take(131072, c.now()) {
		t.Fatal("a cost equal to the burst was refused by a full budget")
	}
	if !b.Take(0, c.now()) {
		t.Fatal("a zero cost was refused by an empty budget")
	}
}

func TestBudgetClockGoingBackwards(t *testing.T) {
	c := newClock()
	b := mustBudget(t, 1, 10)
	b.Take(5, c.now())
	c.advance(-time.Hour)
	if b.Take(1, c.now()) {
		t.Fatal("a clock step backwards refilled the budget")
	}
	if lv := b.Level(c.now()); lv != 0 {
		t.Fatalf("level %v after a backwards step", lv)
	}
	c.advance(time.Hour + 5*time.Second) // back where it was, plus 5 units
	if lv := b.Level(c.now()); lv != 1 {
		t.Fatalf("level %v once the clock caught up", lv)
	}
}

// An hour of takes at an inexact rate (1/9 s of refill per take, which is no
// whole number of nanoseconds) must come out within one take of the exact
// arithmetic: rounding must not drift.
func TestBudgetNoDriftOverAnHour(t *testing.T) {
	c := newClock()
	const rate, burst, cost = 3.0, 4.0, 1.0 / 3
	b := mustBudget(t, rate, burst)
	passed := 0
	for step := 0; step < 360_000; step++ { // every 10 ms for an hour
		if b.Take(cost, c.now()) {
			passed++
		}
		c.advance(10 * time.Millisecond)
	}
	// Burst at the start, then rate*T/cost; the last step is 10 ms short.
	want := (burst + rate*(3600-0.01)) / cost
	t.Logf("%d takes passed, exact arithmetic gives %.3f", passed, want)
	if math.Abs(float64(passed)-want) > 1 {
		t.Fatalf("%d takes passed in a simulated hour, want %.1f", passed, want)
	}

	// At exactly the refill rate the level must stay where it started.
	c = newClock()
	b = mustBudget(t, 10*131072, 20*131072) // ten 64 MiB t=2 hashes per second
	for step := 0; step < 36_000; step++ {  // every 100 ms for an hour
		if !b.Take(131072, c.now()) {
			t.Fatalf("take %d at exactly the refill rate refused", step)
		}
		c.advance(100 * time.Millisecond)
	}
	if lv := b.Level(c.now()); math.Abs(lv-1) > 1e-9 {
		// One take is refilled exactly by the following 100 ms.
		t.Fatalf("level after an hour at the refill rate = %v, want 1", lv)
	}
}

// Rounding errs towards charging more: many tiny takes never get more than
// the rate allows.
func TestBudgetRoundsUp(t *testing.T) {
	c := newClock()
	b := mustBudget(t, 1e9, 1e6) // one unit per nanosecond
	n := 0
	for b.Take(0.3, c.now()) { // 0.3 ns each, charged as 1 ns
		n++
	}
	if n != 1e6 {
		t.Fatalf("%d tiny takes passed, want 1e6 (each charged one nanosecond)", n)
	}
}

func TestNewBudgetRejectsBadArguments(t *testing.T) {
	for _, tc := range []struct {
		rate, burst float64
		want        string
	}{
		{0, 1, "rate"},
		{-1, 1, "rate"},
		{math.NaN(), 1, "rate"},
		{math.Inf(1), 1, "rate"},
		{1, 0, "burst"},
		{1, -5, "burst"},
		{1, math.NaN(), "burst"},
		{1, math.Inf(1), "burst"},
		{1e-9, 1e6, "too long"},
	} {
		_, err := NewBudget(tc.rate, tc.burst)
		if err == nil || !contains(err.Error(), tc.want) {
			t.Errorf("NewBudget(%v, %v) error = %v, want mention of %q", tc.rate, tc.burst, err, tc.want)
		}
	}
}

func TestBudgetConcurrent(t *testing.T) {
	c := newClock()
	now := c.now()
	b := mustBudget(t, 1e-3, 100)
	var taken atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 200 {
				if b.Take(1, now) {
					taken.Add(1)
				}
				if lv := b.Level(now); lv < 0 || lv > 1 {
					t.Errorf("level %v out of range", lv)
				}
			}
		}()
	}
	wg.Wait()
	if got := taken.Load(); got != 100 {
		t.Fatalf("%d units taken concurrently, want exactly the burst of 100", got)
	}
}

func TestSourcePrefix(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.1":                "192.0.2.1/32",
		"::ffff:192.0.2.1":         "192.0.2.1/32",
		"2001:db8:1:2:3:4:5:6":     "2001:db8:1:2::/64",
		"2001:db8:1:2:ffff::1":     "2001:db8:1:2::/64",
		"fe80::1%eth0":             "fe80::/64",
		"::1":                      "::/64",
		"64:ff9b::c000:201":        "64:ff9b::/64",
		"2001:db8:1:3::1":          "2001:db8:1:3::/64",
		"::ffff:255.255.255.255":   "255.255.255.255/32",
		"2001:db8:ffff:ffff:1::ff": "2001:db8:ffff:ffff::/64",
	} {
		got := SourcePrefix(netip.MustParseAddr(in))
		if got.String() != want || !got.IsValid() {
			t.Errorf("SourcePrefix(%s) = %v, want %s", in, got, want)
		}
	}
	if p := SourcePrefix(netip.Addr{}); p.IsValid() {
		t.Errorf("SourcePrefix(zero) = %v, want the zero Prefix", p)
	}
	// Mapped and plain IPv4 are one key; two hosts of one /64 are one key.
	l := mustNew[netip.Prefix](t, time.Hour, 1, 10)
	now := newClock().now()
	if !l.Allow(SourcePrefix(netip.MustParseAddr("192.0.2.7")), now) ||
		l.Allow(SourcePrefix(netip.MustParseAddr("::ffff:192.0.2.7")), now) {
		t.Fatal("mapped and unmapped IPv4 counted as different sources")
	}
	if !l.Allow(SourcePrefix(netip.MustParseAddr("2001:db8::1")), now) ||
		l.Allow(SourcePrefix(netip.MustParseAddr("2001:db8::ffff:1234")), now) {
		t.Fatal("two addresses of one /64 counted as different sources")
	}
	if !l.Allow(SourcePrefix(netip.MustParseAddr("2001:db8:0:1::1")), now) {
		t.Fatal("the next /64 was throttled")
	}
}
