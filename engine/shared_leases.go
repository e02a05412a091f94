package engine

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
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
	// sharedLeaseTimeout bounds what one login waits for the lease store; a handshake worker waits with it.
	sharedLeaseTimeout = 3 * time.Second
	// sharedLeaseTries is how many addresses a login proposes to the store before it gives up: after a
	// refusal the gateway reads what the store holds, so the second proposal fails only in a race with
	// another gateway's login.
	sharedLeaseTries = 4
)

// errLeaseStore is a lease store that cannot be reached: the login is answered "store unavailable".
var errLeaseStore = errors.New("lease store unavailable")

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
	ctx, cancel := context.WithTimeout(context.Background(), sharedLeaseTimeout)
	defer cancel()
	key := leaseKeyFor(user, instance)
	want4, want6 := pl.want4, pl.want6
	known, ok, err := store.Lookup(ctx, key.user, key.instance)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errLeaseStore, err)
	}
	if ok {
		want4, want6 = known.IPv4, known.IPv6
	}
	for range sharedLeaseTries {
		s.mu.Lock()
		l, err := s.leases.acquirePreferring(user, instance, want4, want6)
		s.mu.Unlock()
		if err != nil {
			return nil, err
		}
		claim := leasing.Lease{Login: key.user, Instance: key.instance, IPv4: l.addr4, IPv6: l.addr6,
			FixedIPv4: user.FixedIPv4.IsValid(), FixedIPv6: user.FixedIPv6.IsValid()}
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
	if errors.Is(err, errLeaseStore) {
		return handshake.ResultUnavailable
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

// releaseSharedLocked queues l for release in the shared store when the session ending for reason holds
// its last reference. Called with s.mu held.
func (s *Server) releaseSharedLocked(l *lease, reason string) {
	if s.cfg.SharedLeases == nil || l == nil || l.refs != 1 || !leftForGood(reason) {
		return
	}
	s.released = append(s.released, leasing.Lease{Login: l.key.user, Instance: l.key.instance, IPv4: l.addr4, IPv6: l.addr6})
	select {
	case s.releaseDue <- struct{}{}:
	default:
	}
}

// renewSharedLeases is the goroutine "shared lease renewal": every sharedLeaseRenewEvery it renews the
// leases this gateway's sessions hold and learns which addresses other gateways' clients hold, and in
// between it releases the leases of clients that left for good. A failure is logged and tried again at
// the next tick: a lease's hold outlasts several of them (a release that fails is dropped: the hold then
// runs out by itself).
func (s *Server) renewSharedLeases(ctx context.Context) {
	tick := time.NewTicker(s.cfg.sharedLeaseRenewEvery)
	defer tick.Stop()
	for {
		rctx, cancel := context.WithTimeout(ctx, sharedLeaseTimeout)
		err := s.cfg.SharedLeases.Renew(rctx, s.heldLeases(), sharedLeaseHold)
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
			case <-s.releaseDue:
				s.releaseShared(ctx)
				continue
			case <-tick.C:
			}
			break
		}
	}
}

// releaseShared releases the queued leases that no session here took again meanwhile.
func (s *Server) releaseShared(ctx context.Context) {
	s.mu.Lock()
	list := s.released[:0:0]
	for _, x := range s.released {
		if l := s.leases.byKey[leaseKey{x.Login, x.Instance}]; l == nil || l.refs == 0 {
			list = append(list, x)
		}
	}
	s.released = nil
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

// heldLeases lists the leases that sessions hold now.
func (s *Server) heldLeases() []leasing.Lease {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]leasing.Lease, 0, len(s.leases.byKey))
	for _, l := range s.leases.byKey {
		if l.refs > 0 {
			out = append(out, leasing.Lease{Login: l.key.user, Instance: l.key.instance, IPv4: l.addr4, IPv6: l.addr6})
		}
	}
	return out
}
