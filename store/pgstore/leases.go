package pgstore

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/salvovpn/salvo/engine/leasing"
)

// Leases keeps the gateways' leases in the table salvo_leases (a leasing.Store), whose unique constraints
// on each address are what keep two clients from holding one address, whichever gateways they use.
type Leases struct {
	b       *Backend
	gateway string
}

var _ leasing.Store = (*Leases)(nil)

// Leases returns the store's leases as gateway sees them: a name unique among the gateways (each lease
// records the gateway that claimed it last, and only that one renews or releases it). While the Backend is not connected every call fails at once: a login then gets "store
// unavailable" without waiting, and the handshake workers stay free for the established sessions' rekeys.
func (b *Backend) Leases(gateway string) *Leases { return &Leases{b: b, gateway: gateway} }

func (l *Leases) up() error {
	if !l.b.connected.Load() {
		return fmt.Errorf("%w: the lease store is not reachable", ErrUnavailable)
	}
	return nil
}

// Lookup implements leasing.Store.
func (l *Leases) Lookup(ctx context.Context, login string, instance uint64) (leasing.Lease, bool, error) {
	if err := l.up(); err != nil {
		return leasing.Lease{}, false, err
	}
	x := leasing.Lease{Login: login, Instance: instance}
	var v4, v6 *netip.Prefix
	err := l.b.store.pool.QueryRow(ctx, `SELECT ipv4, ipv6, expires > now() FROM salvo_leases WHERE login = $1 AND instance = $2`,
		login, int64(instance)).Scan(&v4, &v6, &x.Held)
	if errors.Is(err, pgx.ErrNoRows) {
		return leasing.Lease{}, false, nil
	}
	if err != nil {
		return leasing.Lease{}, false, unavailable(err)
	}
	x.IPv4, x.IPv6 = prefixAddr(v4), prefixAddr(v6)
	return x, true, nil
}

func prefixAddr(p *netip.Prefix) netip.Addr {
	if p == nil {
		return netip.Addr{}
	}
	return p.Addr()
}

func millis(d time.Duration) int64 { return d.Milliseconds() }

// Claim implements leasing.Store: in one transaction it removes the leases that must give way (ones whose
// hold ran out, and any on a fixed address) and writes x; the unique constraints refuse the rest.
func (l *Leases) Claim(ctx context.Context, x leasing.Lease, hold time.Duration) error {
	if err := l.up(); err != nil {
		return err
	}
	var err error
	for range claimTries {
		if err = l.claim(ctx, x, hold); !isDeadlock(err) {
			break
		}
	}
	return unavailable(err)
}

// claimTries bounds the retries of a claim that PostgreSQL chose as a deadlock's victim: two claims whose
// addresses sit crosswise in rows that must give way lock those rows in opposite orders.
const claimTries = 3

func isDeadlock(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "40P01" // deadlock_detected
}

func (l *Leases) claim(ctx context.Context, x leasing.Lease, hold time.Duration) error {
	return pgx.BeginFunc(ctx, l.b.store.pool, func(tx pgx.Tx) error {
		for _, f := range []struct {
			a     netip.Addr
			fixed bool
		}{{x.IPv4, x.FixedIPv4}, {x.IPv6, x.FixedIPv6}} {
			if !f.a.IsValid() {
				continue
			}
			if _, err := tx.Exec(ctx, `DELETE FROM salvo_leases WHERE (ipv4 = $1 OR ipv6 = $1)
				AND NOT (login = $2 AND instance = $3) AND ($4 OR expires <= now())`,
				f.a, x.Login, int64(x.Instance), f.fixed); err != nil {
				return err
			}
		}
		_, err := tx.Exec(ctx, `INSERT INTO salvo_leases (login, instance, ipv4, ipv6, gateway, expires)
			VALUES ($1, $2, $3, $4, $5, now() + $6 * interval '1 millisecond')
			ON CONFLICT (login, instance) DO UPDATE SET ipv4 = EXCLUDED.ipv4, ipv6 = EXCLUDED.ipv6,
				gateway = EXCLUDED.gateway, expires = EXCLUDED.expires`,
			x.Login, int64(x.Instance), addr(x.IPv4), addr(x.IPv6), l.gateway, millis(hold))
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "23505" { // unique_violation: another lease holds one
			return fmt.Errorf("%s/%d: %w (%s)", x.Login, x.Instance, leasing.ErrTaken, pgErr.ConstraintName)
		}
		return err
	})
}

// Renew implements leasing.Store, in one statement however many leases there are.
func (l *Leases) Renew(ctx context.Context, leases []leasing.Lease, hold time.Duration) ([]leasing.Lease, error) {
	if err := l.up(); err != nil {
		return nil, err
	}
	if len(leases) == 0 {
		return nil, nil
	}
	renewed, err := l.hold(ctx, leases, hold)
	if err != nil {
		return nil, err
	}
	var lost []leasing.Lease
	for _, x := range leases {
		if !renewed[key{x.Login, int64(x.Instance)}] {
			lost = append(lost, x)
		}
	}
	return lost, nil
}

// Release implements leasing.Store: a hold that ends now.
func (l *Leases) Release(ctx context.Context, leases []leasing.Lease) error {
	if err := l.up(); err != nil {
		return err
	}
	if len(leases) == 0 {
		return nil
	}
	_, err := l.hold(ctx, leases, 0)
	return err
}

type key struct {
	login    string
	instance int64
}

// hold holds the rows of leases that are this gateway's with those addresses for d from now, and returns
// which it changed.
func (l *Leases) hold(ctx context.Context, leases []leasing.Lease, d time.Duration) (map[key]bool, error) {
	logins, instances := make([]string, len(leases)), make([]int64, len(leases))
	v4s, v6s := make([]string, len(leases)), make([]string, len(leases))
	for i, x := range leases {
		logins[i], instances[i] = x.Login, int64(x.Instance)
		if x.IPv4.IsValid() {
			v4s[i] = x.IPv4.String()
		}
		if x.IPv6.IsValid() {
			v6s[i] = x.IPv6.String()
		}
	}
	rows, err := l.b.store.pool.Query(ctx, `UPDATE salvo_leases AS l SET expires = now() + $1 * interval '1 millisecond'
		FROM unnest($3::text[], $4::bigint[], $5::text[], $6::text[]) AS k(login, instance, ipv4, ipv6)
		WHERE l.gateway = $2 AND l.login = k.login AND l.instance = k.instance
			AND l.ipv4 IS NOT DISTINCT FROM NULLIF(k.ipv4, '')::inet
			AND l.ipv6 IS NOT DISTINCT FROM NULLIF(k.ipv6, '')::inet
		RETURNING l.login, l.instance`,
		millis(d), l.gateway, logins, instances, v4s, v6s)
	if err != nil {
		return nil, unavailable(err)
	}
	defer rows.Close()
	done := map[key]bool{}
	for rows.Next() {
		var k key
		if err := rows.Scan(&k.login, &k.instance); err != nil {
			return nil, err
		}
		done[k] = true
	}
	return done, unavailable(rows.Err())
}

// Held implements leasing.Store.
func (l *Leases) Held(ctx context.Context) ([]netip.Addr, error) {
	if err := l.up(); err != nil {
		return nil, err
	}
	rows, err := l.b.store.pool.Query(ctx, `SELECT ipv4, ipv6 FROM salvo_leases WHERE expires > now()`)
	if err != nil {
		return nil, unavailable(err)
	}
	defer rows.Close()
	var out []netip.Addr
	for rows.Next() {
		var v4, v6 *netip.Prefix
		if err := rows.Scan(&v4, &v6); err != nil {
			return nil, err
		}
		for _, a := range []netip.Addr{prefixAddr(v4), prefixAddr(v6)} {
			if a.IsValid() {
				out = append(out, a)
			}
		}
	}
	return out, unavailable(rows.Err())
}
