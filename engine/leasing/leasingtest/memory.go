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
	expires time.Time
}

// Memory is a leasing.Store in memory, shared by the gateways of one test.
type Memory struct {
	mu     sync.Mutex
	rows   map[key]*row
	down   bool
	renews int
}

var _ leasing.Store = (*Memory)(nil)

// NewMemory returns an empty store.
func NewMemory() *Memory { return &Memory{rows: map[key]*row{}} }

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

func (m *Memory) check(ctx context.Context) error {
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
	return r.lease, true, nil
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
	l.FixedIPv4, l.FixedIPv6 = false, false
	m.rows[k] = &row{lease: l, expires: now.Add(hold)}
	return nil
}

// Renew implements leasing.Store.
func (m *Memory) Renew(ctx context.Context, leases []leasing.Lease, hold time.Duration) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(ctx); err != nil {
		return err
	}
	m.renews++
	for _, l := range leases {
		if r := m.rows[key{l.Login, l.Instance}]; r != nil && r.lease.IPv4 == l.IPv4 && r.lease.IPv6 == l.IPv6 {
			r.expires = time.Now().Add(hold)
		}
	}
	return nil
}

// Release implements leasing.Store.
func (m *Memory) Release(ctx context.Context, leases []leasing.Lease) error {
	return m.Renew(ctx, leases, 0)
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
