package engine

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/salvovpn/salvo/engine/ippool"
	"github.com/salvovpn/salvo/engine/leasing"
	"github.com/salvovpn/salvo/engine/users"
	"github.com/salvovpn/salvo/protocol"
	"github.com/salvovpn/salvo/protocol/handshake"
)

const (
	// sharedLeaseHold is how long a lease in the shared store stays reserved for its client after its
	// gateway last renewed it: as long as a restarted gateway keeps its restored leases, which covers a
	// client's move to another gateway with room to spare.
	sharedLeaseHold = leaseRestoreHold
	// sharedLeaseRenewEvery is how often a gateway renews the leases its sessions hold, and learns which
	// addresses the other gateways' clients hold. Several renewals fit in one hold, so a slow database
	// or a lost statement does not release a lease in use.
	sharedLeaseRenewEvery = 30 * time.Second
	// sharedLeaseTimeout bounds what one login waits for the lease store, below maxHandshakeAge: a
	// handshake worker waits with it.
	sharedLeaseTimeout = time.Second
	// sharedLeaseBackoff is how long after a store call ran out of time logins are refused without asking
	// the store: a database that stops answering costs a handshake worker one timeout per backoff, not one
	// per login.
	sharedLeaseBackoff = 5 * time.Second
	// sharedLeaseSlotWait is how long a login waits for the one handshake worker that may talk to the
	// lease store; after that it is answered "busy" and the client retries. The other workers stay free
	// for rekeys, which never need the store, however slow it is.
	sharedLeaseSlotWait = 100 * time.Millisecond
	// sharedLeaseTries is how many addresses a login proposes to the store before it gives up: after a
	// refusal the gateway reads what the store holds, so the second proposal fails only in a race with
	// another gateway's login.
	sharedLeaseTries = 4
)

var (
	// errLeaseStore is a lease store that cannot be reached: the login is answered "store unavailable".
	errLeaseStore = errors.New("lease store unavailable")
	// errLeaseBusy is a login that found the lease store's worker slot taken: it is answered "busy".
	errLeaseBusy = errors.New("another login is waiting for the lease store")
)

// sharedLeases is a gateway's side of a shared lease store.
type sharedLeases struct {
	// slot is held by the handshake worker talking to the store for a login.
	slot chan struct{}
	// downUntil (unix ns) refuses logins without asking the store after a call to it ran out of time.
	downUntil atomic.Int64
	// claims is read-locked around a login's claim and locked around a release, so a release never
	// ends the hold of a claim made after its lease was found unused (a reconnect of the same client).
	claims sync.RWMutex
	// released are leases whose clients left for good, for the goroutine "shared lease renewal" to
	// release in the store (guarded by Server.mu); releaseDue wakes it.
	released   []leasing.Lease
	releaseDue chan struct{}
}

// leaseFor leases the addresses of a verified login (pl names those a ticket carried). With a shared lease
// store, the store decides outside the gateway's lock: the client's addresses there come first, and every
// proposal is claimed in the store before any session uses it.
func (s *Server) leaseFor(user users.User, instance uint64, pl pendingLogin) (*lease, error) {
	store := s.cfg.SharedLeases
	if store == nil {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.leases.acquirePreferring(user, instance, pl.want4, pl.want6)
	}
	sh := &s.shared
	if time.Now().UnixNano() < sh.downUntil.Load() {
		return nil, fmt.Errorf("%w: it did not answer in time a moment ago", errLeaseStore)
	}
	select {
	case sh.slot <- struct{}{}:
		defer func() { <-sh.slot }()
	case <-time.After(sharedLeaseSlotWait):
		return nil, errLeaseBusy
	}
	// Read-locked before the bound starts: a login waiting behind a release has not waited for the store.
	sh.claims.RLock()
	defer sh.claims.RUnlock()
	ctx, cancel := context.WithTimeout(context.Background(), sharedLeaseTimeout)
	defer cancel()
	l, err := s.claimShared(ctx, user, instance, pl)
	if errors.Is(err, context.DeadlineExceeded) {
		sh.downUntil.Store(time.Now().Add(sharedLeaseBackoff).UnixNano())
	}
	return l, err
}

func (s *Server) claimShared(ctx context.Context, user users.User, instance uint64, pl pendingLogin) (*lease, error) {
	store := s.cfg.SharedLeases
	key := leaseKeyFor(user, instance)
	want4, want6 := pl.want4, pl.want6
	known, ok, err := store.Lookup(ctx, key.user, key.instance)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errLeaseStore, err)
	}
	if ok && known.IPv4.IsValid() {
		want4 = known.IPv4
	}
	if ok && known.IPv6.IsValid() {
		want6 = known.IPv6
	}
	for range sharedLeaseTries {
		s.mu.Lock()
		l, err := s.leases.acquirePreferring(user, instance, want4, want6)
		s.mu.Unlock()
		if err != nil {
			return nil, err
		}
		claim := l.inStore()
		claim.FixedIPv4, claim.FixedIPv6 = user.FixedIPv4.IsValid(), user.FixedIPv6.IsValid()
		err = store.Claim(ctx, claim, sharedLeaseHold)
		if err == nil {
			return l, nil
		}
		s.mu.Lock()
		s.leases.release(l)
		s.mu.Unlock()
		if !errors.Is(err, leasing.ErrTaken) {
			return nil, fmt.Errorf("%w: %w", errLeaseStore, err)
		}
		// A client of another gateway holds one of them: learn what every gateway's clients hold, and
		// propose again from what is left.
		s.log.Debug("address held elsewhere; proposing another", "user", user.Login, "ipv4", l.addr4, "ipv6", l.addr6)
		if err := s.learnHeldElsewhere(ctx); err != nil {
			return nil, fmt.Errorf("%w: %w", errLeaseStore, err)
		}
		want4, want6 = netip.Addr{}, netip.Addr{}
	}
	return nil, fmt.Errorf("%d addresses in a row were held by other gateways' clients", sharedLeaseTries)
}

// inStore is l as the shared lease store knows it.
func (l *lease) inStore() leasing.Lease {
	return leasing.Lease{Login: l.key.user, Instance: l.key.instance, IPv4: l.addr4, IPv6: l.addr6}
}

// learnHeldElsewhere reads the addresses the store holds and keeps the pools from proposing them.
func (s *Server) learnHeldElsewhere(ctx context.Context) error {
	held, err := s.cfg.SharedLeases.Held(ctx)
	if err != nil {
		return err
	}
	for _, p := range []*ippool.Pool{s.leases.pool4, s.leases.pool6} {
		if p != nil {
			p.SetElsewhere(held)
		}
	}
	return nil
}

// leaseResult is the handshake result of a lease that could not be had.
func leaseResult(err error) handshake.Result {
	switch {
	case errors.Is(err, errLeaseStore):
		return handshake.ResultUnavailable
	case errors.Is(err, errLeaseBusy):
		return handshake.ResultBusy
	}
	return handshake.ResultNoAddress
}

// leftForGood reports whether a session that ended for reason lets its shared lease go at once: its client
// said goodbye or may not come back (kicked, revoked, replaced). A session that went silent or whose
// gateway stopped keeps the hold: its client may be on its way to another gateway.
func leftForGood(reason string) bool {
	switch reason {
	case endClosed, protocol.DisconnectKicked.String(), protocol.DisconnectRevoked.String(), protocol.DisconnectReplaced.String():
		return true
	}
	return false
}

// releaseSharedLocked queues sess's lease for release in the shared store when sess holds its last
// reference and its client left for good, or never confirmed its login. Called with s.mu held.
func (s *Server) releaseSharedLocked(sess *serverSession, reason string) {
	if sess.live && !leftForGood(reason) {
		return
	}
	s.queueReleaseLocked(sess.lease)
}

// queueReleaseLocked queues l for release in the shared store if its last reference is about to go.
// Called with s.mu held.
func (s *Server) queueReleaseLocked(l *lease) {
	if s.cfg.SharedLeases == nil || l == nil || l.refs != 1 {
		return
	}
	s.shared.released = append(s.shared.released, l.inStore())
	select {
	case s.shared.releaseDue <- struct{}{}:
	default:
	}
}

// renewSharedLeases is the goroutine "shared lease renewal": every sharedLeaseRenewEvery it renews the
// leases this gateway's sessions hold, deals with those it lost, and learns which addresses other
// gateways' clients hold; in between it releases the leases of clients that left. A failure is logged and
// tried again at the next tick: a lease's hold outlasts several of them (a release that fails is dropped:
// the hold then runs out by itself).
func (s *Server) renewSharedLeases(ctx context.Context) {
	tick := time.NewTicker(s.cfg.sharedLeaseRenewEvery)
	defer tick.Stop()
	for {
		rctx, cancel := context.WithTimeout(ctx, sharedLeaseTimeout)
		lost, err := s.cfg.SharedLeases.Renew(rctx, s.heldLeases(), sharedLeaseHold)
		if err == nil {
			err = s.reclaimLost(rctx, lost)
		}
		if err == nil {
			err = s.learnHeldElsewhere(rctx)
		}
		cancel()
		if err != nil && ctx.Err() == nil {
			s.log.Warn("renewing leases in the store", "err", err, "retry_in", s.cfg.sharedLeaseRenewEvery)
		}
		for {
			select {
			case <-ctx.Done():
				return
			case <-s.shared.releaseDue:
				s.releaseShared(ctx)
				continue
			case <-tick.C:
			}
			break
		}
	}
}

// reclaimLost deals with leases in use that the store no longer has as this gateway's with their
// addresses:
//   - another gateway holds it with the same addresses: its client moved there, and the silent session
//     here expires by itself;
//   - another gateway holds it with other addresses (a login there that is not confirmed yet, perhaps a
//     replayed request; or the user's fixed address changed and a newer session took the new one): the
//     addresses here are in no row, free for anyone, so the sessions on them end;
//   - nobody holds it (another gateway claimed it for a login never confirmed and let it go), or the store
//     has no row any more (its hold ran out while this gateway could not renew it): it is claimed again,
//     and if that is refused, because another client took an address, its sessions end.
//
// Sessions end as in a shutdown, so their clients log in again at once and get addresses the store
// agrees to: two clients must never keep one address.
func (s *Server) reclaimLost(ctx context.Context, lost []leasing.Lease) error {
	store := s.cfg.SharedLeases
	for _, x := range lost {
		now, ok, err := store.Lookup(ctx, x.Login, x.Instance)
		if err != nil {
			return err
		}
		why := "another gateway holds it with other addresses"
		switch {
		case ok && now.Held && now.IPv4 == x.IPv4 && now.IPv6 == x.IPv6:
			continue
		case !ok || !now.Held:
			if u, known := s.cfg.Users.Lookup(x.Login); known {
				x.FixedIPv4 = u.FixedIPv4.IsValid() && u.FixedIPv4 == x.IPv4
				x.FixedIPv6 = u.FixedIPv6.IsValid() && u.FixedIPv6 == x.IPv6
			}
			err := store.Claim(ctx, x, sharedLeaseHold)
			if !errors.Is(err, leasing.ErrTaken) {
				if err != nil {
					return err
				}
				continue
			}
			why = "another client took an address while this gateway could not renew it"
		}
		s.mu.Lock()
		n := 0
		for _, sess := range s.sessionsOnLeaseLocked(x) {
			s.endSessionLocked(sess, protocol.DisconnectShutdown, time.Now())
			n++
		}
		s.mu.Unlock()
		s.log.Warn("a lease in use is lost in the store; its sessions end and log in again", "user", x.Login,
			"ipv4", x.IPv4, "ipv6", x.IPv6, "why", why, "sessions", n)
	}
	return nil
}

// sessionsOnLeaseLocked lists the sessions, live or pending, on the lease x names: its key and its
// addresses (a user whose fixed address changed has two leases under one key while the old session lives).
func (s *Server) sessionsOnLeaseLocked(x leasing.Lease) []*serverSession {
	var out []*serverSession
	for _, m := range []map[instanceKey]*serverSession{s.live, s.pending} {
		for _, sess := range m {
			if l := sess.lease; l != nil && l.key == (leaseKey{x.Login, x.Instance}) && l.addr4 == x.IPv4 && l.addr6 == x.IPv6 {
				out = append(out, sess)
			}
		}
	}
	return out
}

// releaseShared releases the queued leases that no session here took again meanwhile.
func (s *Server) releaseShared(ctx context.Context) {
	s.shared.claims.Lock()
	defer s.shared.claims.Unlock()
	s.mu.Lock()
	list := s.shared.released[:0:0]
	for _, x := range s.shared.released {
		if l := s.leases.byKey[leaseKey{x.Login, x.Instance}]; l == nil || l.refs == 0 {
			list = append(list, x)
		}
	}
	s.shared.released = nil
	s.mu.Unlock()
	if len(list) == 0 {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, sharedLeaseTimeout)
	defer cancel()
	if err := s.cfg.SharedLeases.Release(rctx, list); err != nil && ctx.Err() == nil {
		s.log.Warn("releasing leases in the store; their hold runs out by itself", "err", err, "leases", len(list))
	}
}

// heldLeases lists the leases that sessions hold now (one a user's new fixed address displaced included,
// while its old session lives).
func (s *Server) heldLeases() []leasing.Lease {
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := map[*lease]bool{}
	out := make([]leasing.Lease, 0, len(s.live)+len(s.pending))
	for _, m := range []map[instanceKey]*serverSession{s.live, s.pending} {
		for _, sess := range m {
			if l := sess.lease; l != nil && !seen[l] {
				seen[l] = true
				out = append(out, l.inStore())
			}
		}
	}
	return out
}
