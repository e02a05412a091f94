// Package replay implements the receive-side anti-replay window of Salvo data packets: the bitmap of
// RFC 6479 ("IPsec Anti-Replay Algorithm without Bit Shifting") with 8192 bits kept as a ring of 128
// 64-bit words.
//
// Why a ring of words instead of a shifted bitmap: a counter's bit lives at a fixed position (word
// counter/64 mod 128, bit counter mod 64), so accepting a newer counter never shifts 1 KiB of state; it
// only zeroes the words of the blocks that enter the window. One of the 128 words is always the
// partially filled "current" block, which is why the usable window is 8192-64 = 8128 counters
// (WindowSize): the oldest word still held may be only partly inside the window.
//
// Window semantics (RFC 4303 A2.1 / RFC 6479): with T the highest counter accepted so far, the window
// holds the WindowSize counters T-WindowSize+1 .. T. A counter exactly WindowSize behind T (T-WindowSize)
// is outside the window and rejected as too old. (WireGuard accepts that one extra counter; we keep to the
// RFC definition, the bitmap could hold either.)
package replay

import "sync"

const (
	wordBits  = 64
	ringBits  = 8192
	ringWords = ringBits / wordBits // 128, a power of two so "mod" is a mask
	// WindowSize is how far behind the highest accepted counter a packet may arrive and still be
	// accepted (exclusive): counters T-WindowSize+1 .. T are in the window.
	WindowSize = ringBits - wordBits // 8128
)

// Window is an anti-replay window. The zero value is ready: nothing has been seen and counter 0 is
// accepted once.
//
// Window is safe for concurrent use. It uses a plain mutex rather than a lock-free design: Check
// reads and writes the ring word and the highest counter together, which a mutex keeps simple and
// obviously correct, and an uncontended Lock/Unlock pair is orders of magnitude cheaper than the AEAD
// open that precedes every Check (BenchmarkCheckInOrder against BenchmarkCheckNoLock measures it).
// Receive paths normally have one goroutine per keypair, so the lock is rarely contended.
type Window struct {
	mu   sync.Mutex
	last uint64 // highest counter accepted so far; 0 (with an empty ring) before the first
	ring [ringWords]uint64
}

// Check reports whether counter is fresh and, if so, marks it as seen. It returns false for a
// counter that was already accepted, one that is WindowSize or more behind the highest accepted
// counter, and any counter >= limit (pass protocol.RejectAfterMessages). Call it only after the
// packet's authentication tag verified, so forged packets cannot move the window.
func (w *Window) Check(counter, limit uint64) bool {
	if counter >= limit {
		return false
	}
	w.mu.Lock()
	ok := w.check(counter)
	w.mu.Unlock()
	return ok
}

// check is Check without the lock and the limit; the caller holds w.mu.
func (w *Window) check(counter uint64) bool {
	block := counter / wordBits
	if counter > w.last {
		cur := w.last / wordBits
		// block >= cur because counter > last. Zero the words of the blocks that enter the window:
		// they still hold bits of counters 8192 or more below and would fake duplicates.
		if d := block - cur; d >= ringWords {
			// A jump past the whole ring: one bulk clear (memclr) instead of a loop.
			w.ring = [ringWords]uint64{}
		} else {
			for i := cur + 1; i <= block; i++ {
				w.ring[i&(ringWords-1)] = 0
			}
		}
		w.last = counter
	} else if w.last-counter >= WindowSize {
		return false // too old: no longer tracked
	}
	word := &w.ring[block&(ringWords-1)]
	bit := uint64(1) << (counter & (wordBits - 1))
	if *word&bit != 0 {
		return false // duplicate
	}
	*word |= bit
	return true
}
