// Package leasing is the contract between a gateway and a store that keeps tunnel addresses unique across
// all the gateways sharing it (store/pgstore keeps them in PostgreSQL). The store has the last word: a
// gateway proposes addresses from its own pools and the store refuses any that a client of another
// gateway holds, so two clients never hold one address, wherever they connect.
package leasing

import (
	"context"
	"errors"
	"net/netip"
	"time"
)

// ErrTaken is wrapped by a Claim that the store refused because another lease holds one of its addresses.
var ErrTaken = errors.New("address held by another client")

// Lease is one client instance's addresses.
type Lease struct {
	Login string
	// Instance is the client instance; 0 for a user with fixed addresses, who has one lease for all
	// their instances.
	Instance   uint64
	IPv4, IPv6 netip.Addr // either may be unset
	// FixedIPv4 and FixedIPv6 say that IPv4 or IPv6 is the user's fixed address: it is theirs whoever
	// holds it, so the store takes it from any other lease.
	FixedIPv4, FixedIPv6 bool
	// Held, in a lease Lookup returns, says that its hold runs now (on whichever gateway); the other
	// calls ignore it.
	Held bool
}

// Store keeps leases unique across gateways. Every lease has a hold: until it runs out no other lease may
// take the lease's addresses. A lease whose hold ran out is still its client's, who gets its addresses back
// on any gateway, until another lease needs one of them.
//
// A Store is one gateway's view: a lease belongs to the gateway that claimed it last (its client may have
// moved there from another), and only that gateway renews or releases it.
type Store interface {
	// Lookup returns the addresses the store has for login's instance, held or not (Held says which); ok
	// is false when it has none.
	Lookup(ctx context.Context, login string, instance uint64) (l Lease, ok bool, err error)
	// Claim makes l's addresses l's own, held for hold from now, and the lease this gateway's. It fails
	// with ErrTaken when another lease holds one of them (the user's fixed addresses excepted).
	Claim(ctx context.Context, l Lease, hold time.Duration) error
	// Renew holds this gateway's leases still in use for hold from now, and returns those it could not:
	// their client moved to another gateway, or they were taken away (their hold ran out while this
	// gateway could not renew it, or a fixed address claimed them).
	Renew(ctx context.Context, leases []Lease, hold time.Duration) (lost []Lease, err error)
	// Release ends the hold of this gateway's leases whose clients left for good (said goodbye, or were
	// kicked or revoked), so their addresses need not wait for the hold to run out.
	Release(ctx context.Context, leases []Lease) error
	// Held returns the addresses that some lease holds now.
	Held(ctx context.Context) ([]netip.Addr, error)
}
