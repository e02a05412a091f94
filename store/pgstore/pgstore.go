// Package pgstore keeps what several gateways share in PostgreSQL (github.com/jackc/pgx/v5): the users,
// the leases, the session ticket keys, one accounting row per ended session, and the notifications (users changed, a
// user kicked) that reach every gateway at once through LISTEN/NOTIFY.
//
// A gateway never waits for the database on the data path or for an established session: it keeps the
// users in memory (Backend), refreshed on every notification and re-read periodically so that a lost
// notification cannot keep a revoked session alive, and queues accounting rows while the database is away.
package pgstore

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/salvovpn/salvo/engine/leasing"
	"github.com/salvovpn/salvo/engine/users"
)

// channel is the NOTIFY channel; payloads are "users" or "kick:" + login.
const channel = "salvo"

// ErrUnavailable is wrapped by every error that comes from not reaching the database: the engine's
// users.ErrUnavailable, which a gateway answers "store unavailable" rather than "bad credentials".
var ErrUnavailable = users.ErrUnavailable

// schema creates what the store needs; every statement may run again on an existing database.
const schema = `
CREATE TABLE IF NOT EXISTS salvo_users (
	login      text PRIMARY KEY,
	hash       text NOT NULL,
	disabled   boolean NOT NULL DEFAULT false,
	fixed_ipv4 inet UNIQUE CHECK (family(fixed_ipv4) = 4),
	fixed_ipv6 inet UNIQUE CHECK (family(fixed_ipv6) = 6),
	changed    timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS salvo_ticket_keys (
	raw     bytea PRIMARY KEY CHECK (length(raw) = 32),
	created timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS salvo_leases (
	login    text NOT NULL,
	instance bigint NOT NULL,
	ipv4     inet UNIQUE CHECK (family(ipv4) = 4),
	ipv6     inet UNIQUE CHECK (family(ipv6) = 6),
	gateway  text NOT NULL,
	expires  timestamptz NOT NULL,
	PRIMARY KEY (login, instance)
);
CREATE TABLE IF NOT EXISTS salvo_sessions_ended (
	id         bigserial PRIMARY KEY,
	gateway    text NOT NULL,
	login      text NOT NULL,
	addresses  text NOT NULL,
	endpoint   text NOT NULL,
	started    timestamptz NOT NULL,
	ended      timestamptz NOT NULL,
	rx_bytes   bigint NOT NULL,
	tx_bytes   bigint NOT NULL,
	rx_packets bigint NOT NULL,
	tx_packets bigint NOT NULL,
	reason     text NOT NULL
);
`

// Store is a connection pool to the shared database.
type Store struct {
	pool *pgxpool.Pool
	dsn  string
}

// Open connects to dsn (a postgres:// URL or key=value string) and creates the tables if needed.
func Open(ctx context.Context, dsn string) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err) // pgx's message does not echo a password
	}
	cfg.MaxConns = 4
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, unavailable(err)
	}
	s := &Store{pool: pool, dsn: dsn}
	if _, err := pool.Exec(ctx, schema); err != nil {
		pool.Close()
		return nil, unavailable(err)
	}
	return s, nil
}

// Close closes the pool.
func (s *Store) Close() { s.pool.Close() }

// unavailable wraps errors of reaching the database (not of a refused statement) with ErrUnavailable.
func unavailable(err error) error {
	var pgErr *pgconn.PgError
	if err == nil || errors.As(err, &pgErr) || errors.Is(err, ErrUnavailable) || errors.Is(err, leasing.ErrTaken) ||
		errors.Is(err, users.ErrExists) || errors.Is(err, users.ErrUnknownUser) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}

func addr(a netip.Addr) any {
	if !a.IsValid() {
		return nil
	}
	return a
}

// Users returns every user.
func (s *Store) Users(ctx context.Context) ([]users.User, error) {
	return s.query(ctx, `SELECT login, hash, disabled, fixed_ipv4, fixed_ipv6 FROM salvo_users ORDER BY login`)
}

// User returns one user.
func (s *Store) User(ctx context.Context, login string) (users.User, bool, error) {
	list, err := s.query(ctx, `SELECT login, hash, disabled, fixed_ipv4, fixed_ipv6 FROM salvo_users WHERE login = $1`, login)
	if err != nil || len(list) == 0 {
		return users.User{}, false, err
	}
	return list[0], true, nil
}

func (s *Store) query(ctx context.Context, sql string, args ...any) ([]users.User, error) {
	rows, err := s.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, unavailable(err)
	}
	defer rows.Close()
	var out []users.User
	for rows.Next() {
		var u users.User
		var f4, f6 *netip.Prefix
		if err := rows.Scan(&u.Login, &u.Hash, &u.Disabled, &f4, &f6); err != nil {
			return nil, err
		}
		if f4 != nil {
			u.FixedIPv4 = f4.Addr()
		}
		if f6 != nil {
			u.FixedIPv6 = f6.Addr()
		}
		out = append(out, u)
	}
	return out, unavailable(rows.Err())
}

// change runs one statement that changes users and tells every gateway, in one transaction (a NOTIFY is
// delivered on commit). It returns users.ErrUnknownUser when the statement touched no row.
func (s *Store) change(ctx context.Context, login, sql string, args ...any) error {
	return unavailable(pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, sql, args...)
		if err != nil {
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && pgErr.Code == "23505" { // unique_violation
				return fmt.Errorf("user %q: %w (%s)", login, users.ErrExists, pgErr.ConstraintName)
			}
			return err
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("user %q: %w", login, users.ErrUnknownUser)
		}
		_, err = tx.Exec(ctx, `SELECT pg_notify($1, 'users')`, channel)
		return err
	}))
}

// validate checks a user as the users file does (login, PHC string, fixed addresses), without hashing.
func validate(u users.User) error { return users.New().Add(u) }

// AddUser adds u (its Hash a PHC string from users.HashPassword). The login and the fixed addresses must
// be free.
func (s *Store) AddUser(ctx context.Context, u users.User) error {
	if err := validate(u); err != nil {
		return err
	}
	return s.change(ctx, u.Login, `INSERT INTO salvo_users (login, hash, disabled, fixed_ipv4, fixed_ipv6) VALUES ($1, $2, $3, $4, $5)`,
		u.Login, u.Hash, u.Disabled, addr(u.FixedIPv4), addr(u.FixedIPv6))
}

// DeleteUser removes login.
func (s *Store) DeleteUser(ctx context.Context, login string) error {
	return s.change(ctx, login, `DELETE FROM salvo_users WHERE login = $1`, login)
}

// SetPassword replaces login's password hash.
func (s *Store) SetPassword(ctx context.Context, login, hash string) error {
	if err := validate(users.User{Login: login, Hash: hash}); err != nil {
		return err
	}
	return s.change(ctx, login, `UPDATE salvo_users SET hash = $2, changed = now() WHERE login = $1`, login, hash)
}

// SetDisabled disables or enables login.
func (s *Store) SetDisabled(ctx context.Context, login string, disabled bool) error {
	return s.change(ctx, login, `UPDATE salvo_users SET disabled = $2, changed = now() WHERE login = $1`, login, disabled)
}

// Kick tells every gateway to end login's sessions.
func (s *Store) Kick(ctx context.Context, login string) error {
	_, err := s.pool.Exec(ctx, `SELECT pg_notify($1, $2)`, channel, "kick:"+login)
	return unavailable(err)
}

// Ended is one ended session, for the accounting table.
type Ended struct {
	Gateway, Login, Addresses, Endpoint, Reason string
	Started, Ended                              time.Time
	RxBytes, TxBytes, RxPackets, TxPackets      uint64
}

// insertEnded writes rows in one transaction: all or none.
func (s *Store) insertEnded(ctx context.Context, rows []Ended) error {
	return unavailable(pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		for _, r := range rows {
			b.Queue(`INSERT INTO salvo_sessions_ended (gateway, login, addresses, endpoint, started, ended,
				rx_bytes, tx_bytes, rx_packets, tx_packets, reason) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)`,
				r.Gateway, r.Login, r.Addresses, r.Endpoint, r.Started, r.Ended,
				int64(r.RxBytes), int64(r.TxBytes), int64(r.RxPackets), int64(r.TxPackets), r.Reason)
		}
		return tx.SendBatch(ctx, b).Close()
	}))
}
