package pgstore

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/salvovpn/salvo/engine/users"
)

// RecheckEvery is how often a Backend reads every user again even without a notification: the bound on
// how long a lost notification can keep a revoked session alive (next to the gateway's own re-check on
// every rekey, which reads the Backend's memory).
const RecheckEvery = 30 * time.Second

// Backend is the store's users as one gateway sees them (a users.Authenticator): a users.Store in memory,
// rebuilt from the database whenever a notification says the users changed, every RecheckEvery, and after
// every reconnect. Lookups never wait for the database, so established sessions carry on while it is
// down; password logins do not: a login checked against a copy that may have missed a revocation would
// let a revoked user in, so Authenticate fails with ErrUnavailable until the Backend is connected again.
type Backend struct {
	store *Store
	log   *slog.Logger
	// OnUsers is called (from Run's goroutine) after the users changed, so the gateway can end the
	// sessions of users that were removed, disabled or given a new password.
	OnUsers func()
	// OnKick is called (from Run's goroutine) when some gateway was asked to end login's sessions.
	OnKick func(login string)

	cache     atomic.Pointer[users.Store]
	connected atomic.Bool // listening: every change reaches the cache
	recheck   time.Duration
}

var _ users.Authenticator = (*Backend)(nil)

// NewBackend reads the users once (an error if the database cannot be reached, so a gateway does not start
// without its users) and returns a Backend; Run keeps it current.
func NewBackend(ctx context.Context, s *Store, log *slog.Logger) (*Backend, error) {
	b := &Backend{store: s, log: log, recheck: RecheckEvery}
	b.cache.Store(users.New())
	if _, err := b.reload(ctx); err != nil {
		return nil, err
	}
	return b, nil
}

// reload rebuilds the cache from the database and reports whether anything changed.
func (b *Backend) reload(ctx context.Context) (bool, error) {
	list, err := b.store.Users(ctx)
	if err != nil {
		return false, err
	}
	st := users.New()
	for _, u := range list {
		if err := st.Add(u); err != nil {
			// The table's constraints keep logins and fixed addresses unique; a hash someone wrote by hand
			// may still be garbage. That user cannot log in; the others can.
			b.log.Warn("user in the store skipped", "user", u.Login, "err", err)
		}
	}
	changed := !slices.Equal(b.cache.Load().Users(), st.Users())
	b.cache.Store(st)
	return changed, nil
}

// Run is the goroutine "store listener": it listens for notifications on a connection of its own, applies
// them, re-reads the users every RecheckEvery, and reconnects (with backoff, reading everything again)
// when the connection is lost. It returns when ctx ends.
func (b *Backend) Run(ctx context.Context) {
	backoff := time.Second
	for ctx.Err() == nil {
		err := b.listen(ctx)
		b.connected.Store(false)
		if ctx.Err() != nil {
			return
		}
		b.log.Warn("user store connection lost; password logins fail until it is back", "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

// listen holds one LISTEN connection until it fails.
func (b *Backend) listen(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, b.store.dsn)
	if err != nil {
		return unavailable(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN "+channel); err != nil {
		return unavailable(err)
	}
	// Listening from here on: anything that changes now is notified. Read what changed before.
	if err := b.apply(ctx); err != nil {
		return err
	}
	b.connected.Store(true)
	b.log.Info("user store connected")
	for {
		wctx, cancel := context.WithTimeout(ctx, b.recheck)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil && wctx.Err() != nil: // RecheckEvery passed without a notification
			if err := b.apply(ctx); err != nil {
				return err
			}
		case err != nil:
			return unavailable(err)
		case strings.HasPrefix(n.Payload, "kick:"):
			if b.OnKick != nil {
				b.OnKick(strings.TrimPrefix(n.Payload, "kick:"))
			}
		default: // "users", or anything newer: read everything
			if err := b.apply(ctx); err != nil {
				return err
			}
		}
	}
}

// Timeout bounds what a gateway waits for the database at a time, one reading of the users included. A database that stops answering without closing the
// connection (a partition, a blackholed route) then fails the read and the listener reconnects, so
// Connected turns false instead of the copy going stale while password logins still trust it.
const Timeout = 10 * time.Second

// apply reloads and tells the gateway when the users changed.
func (b *Backend) apply(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	changed, err := b.reload(ctx)
	if err != nil {
		return err
	}
	if changed && b.OnUsers != nil {
		b.OnUsers()
	}
	return nil
}

// Connected reports whether the Backend follows the database now.
func (b *Backend) Connected() bool { return b.connected.Load() }

// Authenticate checks a password against the users in memory, while the Backend is connected.
func (b *Backend) Authenticate(login string, password []byte) (users.User, error) {
	if !b.connected.Load() {
		return users.User{}, fmt.Errorf("%w: the user store is not reachable", users.ErrUnavailable)
	}
	return b.cache.Load().Authenticate(login, password)
}

// Lookup answers from memory: sessions are re-checked against the last copy of the users.
func (b *Backend) Lookup(login string) (users.User, bool) { return b.cache.Load().Lookup(login) }

// ParamsFor answers from memory.
func (b *Backend) ParamsFor(login string) users.Params { return b.cache.Load().ParamsFor(login) }

// MaxParams answers from memory.
func (b *Backend) MaxParams() users.Params { return b.cache.Load().MaxParams() }

// Users answers from memory.
func (b *Backend) Users() []users.User { return b.cache.Load().Users() }
