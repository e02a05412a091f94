// Package ratelimit is a small keyed token-bucket limiter with bounded
// memory (Limiter), a single bucket for work of varying cost (Budget), and
// SourcePrefix, which maps a source address to the prefix one sender
// controls.
//
// The gateway uses Limiter to throttle failed logins per source and per
// login, and the unauthenticated notices it sends; it uses Budget to bound
// the password-hashing work it does per second. Time is passed in by the
// caller so that tests (and callers holding a coarse clock) need no real
// sleeps.
//
// Each bucket is stored as a single "theoretical arrival time" (the generic
// cell rate algorithm): the instant at which the bucket would be full again.
// That is equivalent to a token bucket holding up to burst tokens and gaining
// one token every interval, but needs no floating point and one word per key.
package ratelimit

import (
	"fmt"
	"sync"
	"time"
)

// Limiter limits events per key. The zero value is not usable; call New.
// A Limiter is safe for concurrent use.
//
// Memory is bounded by maxEntries. When a new key arrives and the table is
// full, entries whose bucket has refilled completely are dropped first:
// forgetting a full bucket loses nothing, since a new key starts full. If
// every entry is still partly drained, the new key is DENIED. Failing closed
// is deliberate: an attacker spraying more distinct keys than maxEntries must
// not be able to push its own throttled keys out of the table and start over.
// Keys that are already tracked keep working normally in that situation.
type Limiter[K comparable] struct {
	interval   time.Duration // one token is regained per interval
	tolerance  time.Duration // (burst-1)*interval: how far ahead tat may run
	maxEntries int

	mu      sync.Mutex
	tat     map[K]time.Time // when each key's bucket is full again
	nextGC  time.Time       // no entry can be full before this instant
	haveGC  bool
	denials uint64
}

// New returns a limiter that allows bursts of up to burst events per key and
// regains one event every interval, tracking at most maxEntries keys.
func New[K comparable](interval time.Duration, burst, maxEntries int) (*Limiter[K], error) {
	if interval <= 0 {
		return nil, fmt.Errorf("ratelimit: interval %v must be positive", interval)
	}
	if burst < 1 {
		return nil, fmt.Errorf("ratelimit: burst %d must be at least 1", burst)
	}
	if maxEntries < 1 {
		return nil, fmt.Errorf("ratelimit: maxEntries %d must be at least 1", maxEntries)
	}
	// Guard the multiplication below against overflowing time.Duration.
	if int64(burst-1) > int64(1<<62)/int64(interval) {
		return nil, fmt.Errorf("ratelimit: burst %d times interval %v overflows", burst, interval)
	}
	return &Limiter[K]{
		interval:   interval,
		tolerance:  time.Duration(burst-1) * interval,
		maxEntries: maxEntries,
		tat:        make(map[K]time.Time),
	}, nil
}

// Allow reports whether an event for key may happen at now, and if so takes
// one token from the key's bucket.
func (l *Limiter[K]) Allow(key K, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	tat, ok := l.tat[key]
	if !ok {
		if len(l.tat) >= l.maxEntries && !l.evictLocked(now) {
			l.denials++
			return false
		}
		tat = now
	}
	if tat.Before(now) {
		tat = now
	}
	if tat.Sub(now) > l.tolerance {
		l.denials++
		return false
	}
	tat = tat.Add(l.interval)
	l.tat[key] = tat
	// Keep nextGC a lower bound on every entry's refill time, or a sweep
	// could be skipped while a full entry exists.
	if l.haveGC && tat.Before(l.nextGC) {
		l.nextGC = tat
	}
	return true
}

// Check reports whether Allow(key, now) would succeed, without taking a
// token or creating an entry. It lets a caller refuse early (for example
// before an expensive password hash) and only charge the bucket on failure.
func (l *Limiter[K]) Check(key K, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	tat, ok := l.tat[key]
	if !ok {
		// A new key needs room; mirror Allow without evicting anything.
		return len(l.tat) < l.maxEntries || l.fullEntryExistsLocked(now)
	}
	return tat.Sub(now) <= l.tolerance
}

// Reset forgets key, giving it a full bucket again (for example after a
// successful login from that address).
func (l *Limiter[K]) Reset(key K) {
	l.mu.Lock()
	delete(l.tat, key)
	l.mu.Unlock()
}

// Len returns the number of keys currently tracked.
func (l *Limiter[K]) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.tat)
}

// Denials returns how many events have been denied since New, for metrics.
func (l *Limiter[K]) Denials() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.denials
}

// evictLocked drops every entry whose bucket is full at now and reports
// whether that made room. To keep a flood of new keys from costing a full
// scan each, it remembers the earliest instant any remaining entry becomes
// full and does not scan again before then.
func (l *Limiter[K]) evictLocked(now time.Time) bool {
	if l.haveGC && now.Before(l.nextGC) {
		return false
	}
	var earliest time.Time
	l.haveGC = false
	for k, tat := range l.tat {
		if !tat.After(now) {
			delete(l.tat, k)
			continue
		}
		if !l.haveGC || tat.Before(earliest) {
			earliest, l.haveGC = tat, true
		}
	}
	l.nextGC = earliest
	return len(l.tat) < l.maxEntries
}

func (l *Limiter[K]) fullEntryExistsLocked(now time.Time) bool {
	if l.haveGC && now.Before(l.nextGC) {
		return false
	}
	for _, tat := range l.tat {
		if !tat.After(now) {
			return true
		}
	}
	return false
}
