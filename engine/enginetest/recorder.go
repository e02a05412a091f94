package enginetest

import (
	"context"
	"net/netip"
	"sync"
)

// Datagram is one datagram seen on the wire.
type Datagram struct {
	From, To netip.AddrPort
	Data     []byte
}

// Recorder keeps every datagram its Tap method sees, so an attacker test can wait for a datagram, inspect
// it and replay or alter it. Install it with Network.SetTap(rec.Tap). It keeps everything until the test
// ends, so it suits tests that send a handful of datagrams, not bulk transfers.
type Recorder struct {
	mu   sync.Mutex
	seen []Datagram
	// grew is closed (and replaced) whenever a datagram is appended: it wakes every Wait at once without
	// a goroutine per waiter or a polling loop.
	grew chan struct{}
}

// NewRecorder returns an empty recorder.
func NewRecorder() *Recorder {
	return &Recorder{grew: make(chan struct{})}
}

// Tap records one datagram; it is a TapFunc. b must be the caller's to give away, which a Network's tap
// argument is.
func (r *Recorder) Tap(from, to netip.AddrPort, b []byte) {
	r.mu.Lock()
	r.seen = append(r.seen, Datagram{From: from, To: to, Data: b})
	close(r.grew)
	r.grew = make(chan struct{})
	r.mu.Unlock()
}

// Len is how many datagrams have been recorded.
func (r *Recorder) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.seen)
}

// Datagrams returns a copy of everything recorded so far, in the order the tap saw it. The Data slices
// are copies too, so a test may alter them for a forgery.
func (r *Recorder) Datagrams() []Datagram {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Datagram, len(r.seen))
	for i, d := range r.seen {
		out[i] = Datagram{From: d.From, To: d.To, Data: clone(d.Data)}
	}
	return out
}

// Wait returns the first recorded datagram at index start or later for which match is true (nil matches
// everything), waiting for it to be recorded if need be, and its index; pass index+1 to wait for the next
// one. It returns ctx.Err() if ctx ends first. match must not modify d.Data; the returned Data is a copy.
func (r *Recorder) Wait(ctx context.Context, start int, match func(Datagram) bool) (int, Datagram, error) {
	next := max(start, 0)
	for {
		r.mu.Lock()
		pending := r.seen[min(next, len(r.seen)):]
		grew := r.grew
		r.mu.Unlock()
		// The recorded entries never change, so they can be matched without the lock (match may be slow
		// or may itself call the recorder).
		for _, d := range pending {
			if match == nil || match(d) {
				return next, Datagram{From: d.From, To: d.To, Data: clone(d.Data)}, nil
			}
			next++
		}
		select {
		case <-grew:
		case <-ctx.Done():
			return -1, Datagram{}, ctx.Err()
		}
	}
}
