package ratelimit

import (
	"fmt"
	"math"
	"sync"
	"time"
)

// Budget is a single token bucket for work of varying cost, such as the
// gateway's password hashing, whose cost is argon2's memory times passes
// (KiB-passes). It holds up to burst units and regains ratePerSecond units
// per second. The zero value is not usable; call NewBudget. A Budget is safe
// for concurrent use.
//
// Like Limiter it stores only the instant at which it would be full again,
// so a long run accumulates no floating-point error: each Take converts its
// cost to a whole number of nanoseconds of refill time, rounded up, and adds
// it to that instant. The rounding overcharges by under a nanosecond per
// Take (noticeable only for costs that refill in a few nanoseconds) and
// never undercharges.
type Budget struct {
	nsPerUnit float64       // refill time of one unit, in nanoseconds
	burst     float64       // the largest cost that can ever be taken
	tolerance time.Duration // refill time of a whole burst

	mu  sync.Mutex
	tat time.Time // when the budget is full again; zero means full
}

// maxTolerance keeps every instant the budget computes far from
// time.Duration's range.
const maxTolerance = time.Duration(1 << 62)

// NewBudget returns a full budget of burst units that regains ratePerSecond
// units per second. Both must be positive and finite, and refilling the
// whole burst must take less than about a century.
func NewBudget(ratePerSecond, burst float64) (*Budget, error) {
	if !(ratePerSecond > 0) || math.IsInf(ratePerSecond, 0) {
		return nil, fmt.Errorf("ratelimit: budget rate %v per second must be positive and finite", ratePerSecond)
	}
	if !(burst > 0) || math.IsInf(burst, 0) {
		return nil, fmt.Errorf("ratelimit: budget burst %v must be positive and finite", burst)
	}
	b := &Budget{nsPerUnit: 1e9 / ratePerSecond, burst: burst}
	full := math.Ceil(burst * b.nsPerUnit)
	if !(full < float64(maxTolerance)) {
		return nil, fmt.Errorf("ratelimit: budget burst %v at %v per second takes too long to refill", burst, ratePerSecond)
	}
	b.tolerance = time.Duration(full)
	return b, nil
}

// refill returns how long regaining cost units takes, rounded up to a
// nanosecond. cost must be in [0, burst].
func (b *Budget) refill(cost float64) time.Duration {
	if cost == b.burst {
		return b.tolerance
	}
	return min(time.Duration(math.Ceil(cost*b.nsPerUnit)), b.tolerance)
}

// Take reports whether cost units are available at now and, if so, takes
// them. A cost larger than the burst could never be paid for, however long
// the caller waited, so Take refuses it at once (returns false) rather than
// letting it through a full budget; size the burst to at least the most
// expensive item. A negative or NaN cost is refused too; a zero cost always
// succeeds and takes nothing.
//
// If the clock steps backwards, the budget regains nothing until it catches
// up, as with Limiter.
func (b *Budget) Take(cost float64, now time.Time) bool {
	if !(cost >= 0) || cost > b.burst {
		return false
	}
	if cost == 0 {
		return true
	}
	inc := b.refill(cost)
	b.mu.Lock()
	defer b.mu.Unlock()
	tat := b.tat
	if tat.Before(now) {
		tat = now
	}
	// Compare durations rather than instants: tolerance-inc cannot overflow,
	// and tat.Sub(now) is at most about tolerance plus any backwards step.
	if tat.Sub(now) > b.tolerance-inc {
		return false
	}
	b.tat = tat.Add(inc)
	return true
}

// Level returns the fraction of the burst available at now, from 0 (empty)
// to 1 (full). The gateway treats a level under one half as being under
// pressure and then asks new sources to prove their address first.
func (b *Budget) Level(now time.Time) float64 {
	b.mu.Lock()
	tat := b.tat
	b.mu.Unlock()
	if !tat.After(now) {
		return 1
	}
	used := tat.Sub(now)
	if used >= b.tolerance {
		return 0
	}
	return float64(b.tolerance-used) / float64(b.tolerance)
}
