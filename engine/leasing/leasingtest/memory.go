// Package leasingtest has an in-memory leasing.Store for tests of the gateway and the tests that every
// leasing.Store must pass (Run), so that the in-memory store and the PostgreSQL one behave alike.
package leasingtest

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/salvovpn/salvo/engine/leasing"
)

// ErrDown is what a Memory store returns while it is down.
var ErrDown = errors.New("lease store down")

type key struct {
	login    string
	instance uint64
}

type row struct {
	lease   leasing.Lease
	gateway string
	expires time.Time
}

// Memory is a lease store in memory, shared by the gateways of one test. It is the view of a gateway named
// ""; Gateway gives the others theirs.
type Memory struct {
	*memory
	gateway string
}

type memory struct {
	mu     sync.Mutex
	rows   map[key]*row
	down   bool
	renews int
}

var _ leasing.Store = (*Memory)(nil)

// NewMemory returns an empty store.
func NewMemory() *Memory { return &Memory{memory: &memory{rows: map[key]*row{}}} }

// Gateway returns the view of the gateway called name, on the same leases.
func (m *Memory) Gateway(name string) *Memory { return &Memory{memory: m.memory, gateway: name} }

// SetDown makes every call fail with ErrDown (true) or work again (false).
func (m *Memory) SetDown(down bool) {
	m.mu.Lock()
	m.down = down
	m.mu.Unlock()
}

// Renews counts the calls of Renew.
func (m *Memory) Renews() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.renews
}

// HeldBy returns the lease that holds a now, if any.
func (m *Memory) HeldBy(a netip.Addr) (leasing.Lease, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range m.rows {
		if (r.lease.IPv4 == a || r.lease.IPv6 == a) && time.Now().Before(r.expires) {
			return r.lease, true
		}
	}
	return leasing.Lease{}, false
}

func (m *memory) check(ctx context.Context) error {
	if m.down {
		return ErrDown
	}
	return ctx.Err()
}

// Lookup implements leasing.Store.
func (m *Memory) Lookup(ctx context.Context, login string, instance uint64) (leasing.Lease, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(ctx); err != nil {
		return leasing.Lease{}, false, err
	}
	r := m.rows[key{login, instance}]
	if r == nil {
		return leasing.Lease{}, false, nil
	}
	l := r.lease
	l.Held = time.Now().Before(r.expires)
	return l, true, nil
}

// Claim implements leasing.Store.
func (m *Memory) Claim(ctx context.Context, l leasing.Lease, hold time.Duration) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(ctx); err != nil {
		return err
	}
	now, k := time.Now(), key{l.Login, l.Instance}
	var gone []key
	for _, f := range []struct {
		a     netip.Addr
		fixed bool
	}{{l.IPv4, l.FixedIPv4}, {l.IPv6, l.FixedIPv6}} {
		if !f.a.IsValid() {
			continue
		}
		for rk, r := range m.rows {
			if rk == k || (r.lease.IPv4 != f.a && r.lease.IPv6 != f.a) {
				continue
			}
			if !f.fixed && now.Before(r.expires) {
				return fmt.Errorf("%v: %w (%s)", f.a, leasing.ErrTaken, rk.login)
			}
			gone = append(gone, rk)
		}
	}
	for _, rk := range gone {
		delete(m.rows, rk)
	}
	l.FixedIPv4, l.FixedIPv6, l.Held = false, false, false
	m.rows[k] = &row{lease: l, gateway: m.gateway, expires: now.Add(hold)}
	return nil
}

// Renew implements leasing.Store.
func (m *Memory) Renew(ctx context.Context, leases []leasing.Lease, hold time.Duration) ([]leasing.Lease, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(ctx); err != nil {
		return nil, err
	}
	m.renews++
	var lost []leasing.Lease
	for _, l := range leases {
		if r := m.mine(l); r != nil {
			r.expires = time.Now().Add(hold)
		} else {
			lost = append(lost, l)
		}
	}
	return lost, nil
}

// mine is l's row if this gateway claimed it last with l's addresses.
func (m *Memory) mine(l leasing.Lease) *row {
	r := m.rows[key{l.Login, l.Instance}]
	if r == nil || r.gateway != m.gateway || r.lease.IPv4 != l.IPv4 || r.lease.IPv6 != l.IPv6 {
		return nil
	}
	return r
}

// Release implements leasing.Store.
func (m *Memory) Release(ctx context.Context, leases []leasing.Lease) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(ctx); err != nil {
		return err
	}
	for _, l := range leases {
		if r := m.mine(l); r != nil {
			r.expires = time.Now()
		}
	}
	return nil
}

// Held implements leasing.Store.
func (m *Memory) Held(ctx context.Context) ([]netip.Addr, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(ctx); err != nil {
		return nil, err
	}
	var out []netip.Addr
	now := time.Now()
	for _, r := range m.rows {
		if now.Before(r.expires) {
			for _, a := range []netip.Addr{r.lease.IPv4, r.lease.IPv6} {
				if a.IsValid() {
					out = append(out, a)
				}
			}
		}
	}
	return out, nil
}
