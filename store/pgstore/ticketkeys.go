package pgstore

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/salvovpn/salvo/engine/tickets"
)

// TicketKeys is the ticket keys in the store (a tickets.KeyStore): gateways on one database open each
// other's tickets, so a client whose gateway died starts its session on another without a password.
type TicketKeys struct{ s *Store }

var _ tickets.KeyStore = TicketKeys{}

// Remote makes a Ring ask the database in the background, never on the handshake path.
func (TicketKeys) Remote() bool { return true }

// TicketKeys returns the store's ticket keys.
func (s *Store) TicketKeys() TicketKeys { return TicketKeys{s} }

// Version is the number of keys and the newest one's creation: it changes with every rotation and every
// key an operator deletes.
func (t TicketKeys) Version(ctx context.Context) (string, error) {
	var n int
	var newest *time.Time
	if err := t.s.pool.QueryRow(ctx, `SELECT count(*), max(created) FROM salvo_ticket_keys`).Scan(&n, &newest); err != nil {
		return "", unavailable(err)
	}
	if newest == nil {
		return fmt.Sprint(n), nil
	}
	return fmt.Sprint(n, newest.UnixNano()), nil
}

// Keys returns the stored keys.
func (t TicketKeys) Keys(ctx context.Context) ([]tickets.StoredKey, error) {
	return keys(ctx, t.s.pool)
}

type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

func keys(ctx context.Context, q querier) ([]tickets.StoredKey, error) {
	rows, err := q.Query(ctx, `SELECT raw, created FROM salvo_ticket_keys ORDER BY created DESC`)
	if err != nil {
		return nil, unavailable(err)
	}
	defer rows.Close()
	var out []tickets.StoredKey
	for rows.Next() {
		var raw []byte
		var k tickets.StoredKey
		if err := rows.Scan(&raw, &k.Created); err != nil {
			return nil, err
		}
		copy(k.Raw[:], raw)
		out = append(out, k)
	}
	return out, unavailable(rows.Err())
}

// Rotate adds candidate unless another gateway added a fresh key first, under a transaction-scoped
// advisory lock, so gateways that rotate at the same moment agree on one key.
func (t TicketKeys) Rotate(ctx context.Context, candidate tickets.StoredKey, freshAfter, notAfter, dropBefore time.Time) ([]tickets.StoredKey, error) {
	var out []tickets.StoredKey
	err := pgx.BeginFunc(ctx, t.s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('salvo_ticket_keys'))`); err != nil {
			return err
		}
		var fresh bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM salvo_ticket_keys WHERE created >= $1 AND created <= $2)`,
			freshAfter, notAfter).Scan(&fresh); err != nil {
			return err
		}
		if !fresh {
			if _, err := tx.Exec(ctx, `INSERT INTO salvo_ticket_keys (raw, created) VALUES ($1, $2)`, candidate.Raw[:], candidate.Created); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `DELETE FROM salvo_ticket_keys WHERE created < $1`, dropBefore); err != nil {
				return err
			}
		}
		var err error
		out, err = keys(ctx, tx)
		return err
	})
	return out, unavailable(err)
}
