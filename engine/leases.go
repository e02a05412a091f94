package engine

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	"github.com/salvovpn/salvo/engine/ippool"
	"github.com/salvovpn/salvo/engine/users"
	"github.com/salvovpn/salvo/internal/atomicfile"
)

// leaseRestoreHold is how long a lease read back from the state file after a restart stays reserved for its
// client instance. Clients that were sending notice the restart within seconds and clients that were idle
// within two keepalive intervals; this covers both with room to spare, and counts from the gateway's start,
// so however long the gateway was down its clients find their addresses.
const leaseRestoreHold = 3 * time.Minute

// leaseFileName is the lease file inside the gateway's state directory.
const leaseFileName = "leases.json"

// leaseKey names whose a lease is. A user with a fixed address has one lease for all their client
// instances (instance 0): an address routes to one session only, so the newest login of that user takes the
// lease over. Everybody else has a lease per client instance, so reconnects of one instance, and a gateway
// restart, keep its addresses.
type leaseKey struct {
	user     string
	instance uint64
}

func leaseKeyFor(u users.User, instance uint64) leaseKey {
	if u.FixedIPv4.IsValid() || u.FixedIPv6.IsValid() {
		return leaseKey{user: u.Login}
	}
	return leaseKey{user: u.Login, instance: instance}
}

// lease is a pair of tunnel addresses held for one leaseKey. Sessions (pending or live) hold references;
// the addresses go back to the pools when the last one is gone.
type lease struct {
	key          leaseKey
	addr4, addr6 netip.Addr
	refs         int
	// restoredUntil is set for a lease read back from the state file and not yet claimed by its client: it
	// is released at that time.
	restoredUntil time.Time
	dropped       bool // its addresses went back to the pools
}

// leaseTable hands out and persists leases. It is guarded by Server.mu.
type leaseTable struct {
	pool4, pool6 *ippool.Pool
	byKey        map[leaseKey]*lease
	byAddr       map[netip.Addr]*lease
	path         string // state file; "" keeps leases in memory only
	dirty        bool   // changed since the last save
	// restoredUntil is the latest restoredUntil of a restored lease, zero once expire has swept past it:
	// until a restart's leases are due, and after they were dealt with, expire has nothing to look at.
	restoredUntil time.Time
}

func newLeaseTable(pool4, pool6 *ippool.Pool, stateDir string) *leaseTable {
	t := &leaseTable{pool4: pool4, pool6: pool6, byKey: map[leaseKey]*lease{}, byAddr: map[netip.Addr]*lease{}}
	if stateDir != "" {
		t.path = filepath.Join(stateDir, leaseFileName)
	}
	return t
}

// acquire returns the lease for u's instance, taking a reference: the existing one (a reconnect, or one
// restored after a restart), or a new one with u's fixed addresses or the pools' next free ones.
func (t *leaseTable) acquire(u users.User, instance uint64) (*lease, error) {
	return t.acquirePreferring(u, instance, netip.Addr{}, netip.Addr{})
}

// acquirePreferring is acquire for a client that held want4 and want6 before (a session ticket says so):
// a new lease takes them if they are free, so a gateway that lost its lease state (or another gateway)
// still gives the client its old addresses. Fixed addresses and an existing lease come first.
func (t *leaseTable) acquirePreferring(u users.User, instance uint64, want4, want6 netip.Addr) (*lease, error) {
	key := leaseKeyFor(u, instance)
	if l := t.byKey[key]; l != nil && t.matchesFixed(l, u) {
		l.refs++
		if !l.restoredUntil.IsZero() {
			l.restoredUntil = time.Time{}
			t.dirty = true
		}
		return l, nil
	} else if l != nil && l.refs == 0 {
		t.drop(l) // restored, but the user's fixed addresses changed since
	}
	l := &lease{key: key, refs: 1}
	var err error
	if l.addr4, err = t.take(t.pool4, u.FixedIPv4, want4); err != nil {
		return nil, err
	}
	if l.addr6, err = t.take(t.pool6, u.FixedIPv6, want6); err != nil {
		t.give(t.pool4, l.addr4)
		return nil, err
	}
	t.install(l)
	return l, nil
}

// matchesFixed reports whether l still has the addresses u's fixed ones demand.
func (t *leaseTable) matchesFixed(l *lease, u users.User) bool {
	return (!u.FixedIPv4.IsValid() || l.addr4 == u.FixedIPv4) && (!u.FixedIPv6.IsValid() || l.addr6 == u.FixedIPv6)
}

// take leases fixed from pool, or when fixed is unset want if it is free, else the next free address. A
// restored lease that sits on someone's fixed address (the users file changed while the gateway was down)
// gives way; one that sits on want does not.
func (t *leaseTable) take(pool *ippool.Pool, fixed, want netip.Addr) (netip.Addr, error) {
	if pool == nil {
		return netip.Addr{}, nil
	}
	if !fixed.IsValid() {
		// Not someone's fixed address (it may have become one since the ticket was issued).
		if want.IsValid() && pool.Contains(want) && t.byAddr[want] == nil && !pool.Reserved(want) && pool.Claim(want) == nil {
			return want, nil
		}
		return pool.Allocate()
	}
	if holder := t.byAddr[fixed]; holder != nil && holder.refs == 0 {
		t.drop(holder)
	}
	if err := pool.Claim(fixed); err != nil {
		return netip.Addr{}, err
	}
	return fixed, nil
}

func (t *leaseTable) give(pool *ippool.Pool, a netip.Addr) {
	if pool != nil && a.IsValid() {
		pool.Release(a)
	}
}

func (t *leaseTable) install(l *lease) {
	t.byKey[l.key] = l
	for _, a := range []netip.Addr{l.addr4, l.addr6} {
		if a.IsValid() {
			t.byAddr[a] = l
		}
	}
	t.dirty = true
}

// release drops a reference; the last one returns the addresses.
func (t *leaseTable) release(l *lease) {
	if l == nil || l.refs == 0 {
		return
	}
	if l.refs--; l.refs == 0 {
		t.drop(l)
	}
}

// drop returns l's addresses to the pools, once. l may no longer be the table's lease for its key: a user
// whose fixed addresses changed gets a new lease while sessions still hold the old one.
func (t *leaseTable) drop(l *lease) {
	if l.dropped {
		return
	}
	l.dropped = true
	if t.byKey[l.key] == l {
		delete(t.byKey, l.key)
	}
	for _, a := range []netip.Addr{l.addr4, l.addr6} {
		if a.IsValid() && t.byAddr[a] == l {
			delete(t.byAddr, a)
		}
	}
	t.give(t.pool4, l.addr4)
	t.give(t.pool6, l.addr6)
	t.dirty = true
}

// expire releases restored leases whose client did not come back in time.
// It runs every second under the server's lock, so it scans the leases only once they are due.
func (t *leaseTable) expire(now time.Time) {
	if t.restoredUntil.IsZero() || !now.After(t.restoredUntil) {
		return
	}
	for _, l := range t.byKey {
		if l.refs == 0 && !l.restoredUntil.IsZero() && now.After(l.restoredUntil) {
			t.drop(l)
		}
	}
	t.restoredUntil = time.Time{}
}

// leaseRecord is one lease in the state file.
type leaseRecord struct {
	User     string `json:"user"`
	Instance string `json:"instance"` // 16 hex digits; 0 for a user with fixed addresses
	IPv4     string `json:"ipv4,omitempty"`
	IPv6     string `json:"ipv6,omitempty"`
}

type leaseFile struct {
	Version int           `json:"version"`
	Leases  []leaseRecord `json:"leases"`
}

// snapshot copies the table for the state file and clears dirty; nil when nothing changed or the table is
// not persisted. It runs under the server's lock, so it only copies: the records are formatted, sorted and
// encoded by save, outside it (for 10,000 leases that is most of the work).
func (t *leaseTable) snapshot() []lease {
	if t.path == "" || !t.dirty {
		return nil
	}
	t.dirty = false
	out := make([]lease, 0, len(t.byKey))
	for _, l := range t.byKey {
		out = append(out, lease{key: l.key, addr4: l.addr4, addr6: l.addr6})
	}
	return out
}

// save writes a snapshot (taken under the lock) to the state file; done outside the lock, by one goroutine
// at a time (the janitor, then Run on the way out).
func (t *leaseTable) save(snap []lease) error {
	if snap == nil {
		return nil
	}
	f := leaseFile{Version: 1, Leases: make([]leaseRecord, 0, len(snap))}
	for _, l := range snap {
		r := leaseRecord{User: l.key.user, Instance: fmt.Sprintf("%016x", l.key.instance)}
		if l.addr4.IsValid() {
			r.IPv4 = l.addr4.String()
		}
		if l.addr6.IsValid() {
			r.IPv6 = l.addr6.String()
		}
		f.Leases = append(f.Leases, r)
	}
	sort.Slice(f.Leases, func(i, j int) bool {
		a, b := f.Leases[i], f.Leases[j]
		return a.User < b.User || a.User == b.User && a.Instance < b.Instance
	})
	b, _ := json.MarshalIndent(f, "", "  ") // cannot fail: plain strings
	return atomicfile.Write(t.path, append(b, '\n'), 0o600)
}

// restore reads the state file written by an earlier run and reserves its leases until now+hold. Leases
// that no longer fit the configuration (address outside a pool, taken by someone's fixed address, unknown
// user) are skipped and reported; a missing file is a first start. Call before any session exists.
func (t *leaseTable) restore(store users.Authenticator, now time.Time) (restored int, skipped []string, err error) {
	if t.path == "" {
		return 0, nil, nil
	}
	b, err := os.ReadFile(t.path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil, nil
	}
	if err != nil {
		return 0, nil, fmt.Errorf("lease file: %w", err)
	}
	var f leaseFile
	if err := json.Unmarshal(b, &f); err != nil || f.Version != 1 {
		return 0, nil, fmt.Errorf("lease file %s: not a version 1 lease file (%v); move it away to start without leases", t.path, err)
	}
	fixedOwner := map[netip.Addr]string{}
	for _, u := range store.Users() {
		for _, a := range []netip.Addr{u.FixedIPv4, u.FixedIPv6} {
			if a.IsValid() {
				fixedOwner[a] = u.Login
			}
		}
	}
	for _, r := range f.Leases {
		l, why := t.restoreOne(r, store, fixedOwner, now)
		if why != "" {
			skipped = append(skipped, fmt.Sprintf("%s/%s: %s", r.User, r.Instance, why))
			continue
		}
		t.install(l)
		restored++
	}
	t.dirty = len(skipped) > 0
	return restored, skipped, nil
}

func (t *leaseTable) restoreOne(r leaseRecord, store users.Authenticator, fixedOwner map[netip.Addr]string, now time.Time) (*lease, string) {
	u, ok := store.Lookup(r.User)
	if !ok {
		return nil, "user no longer exists"
	}
	inst, err := strconv.ParseUint(r.Instance, 16, 64)
	if err != nil {
		return nil, "bad instance"
	}
	key := leaseKey{user: r.User, instance: inst}
	if key != leaseKeyFor(u, inst) || t.byKey[key] != nil {
		return nil, "does not match the user's fixed addresses"
	}
	l := &lease{key: key, restoredUntil: now.Add(leaseRestoreHold)}
	if l.restoredUntil.After(t.restoredUntil) {
		t.restoredUntil = l.restoredUntil
	}
	for _, f := range []struct {
		text  string
		pool  *ippool.Pool
		fixed netip.Addr
		dst   *netip.Addr
	}{{r.IPv4, t.pool4, u.FixedIPv4, &l.addr4}, {r.IPv6, t.pool6, u.FixedIPv6, &l.addr6}} {
		if f.text == "" {
			if f.pool != nil {
				t.give(t.pool4, l.addr4)
				return nil, "no address of a family the gateway now has a pool for"
			}
			continue
		}
		a, err := netip.ParseAddr(f.text)
		if owner, ok := fixedOwner[a]; ok && owner != r.User {
			t.give(t.pool4, l.addr4)
			return nil, "address " + f.text + " is now " + owner + "'s fixed address"
		}
		if err != nil || f.pool == nil || (f.fixed.IsValid() && a != f.fixed) {
			t.give(t.pool4, l.addr4)
			return nil, "address " + f.text + " does not fit the current pools or fixed addresses"
		}
		if err := f.pool.Claim(a); err != nil {
			t.give(t.pool4, l.addr4)
			return nil, err.Error()
		}
		*f.dst = a
	}
	return l, ""
}
