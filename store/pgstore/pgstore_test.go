package pgstore

import (
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/salvovpn/salvo/engine"
	"github.com/salvovpn/salvo/engine/tickets"
	"github.com/salvovpn/salvo/engine/users"
	"github.com/salvovpn/salvo/internal/pgtest"
)

var cheap = users.Params{Memory: 64, Time: 1, Threads: 1}

func hash(t testing.TB, pw string) string {
	t.Helper()
	h, err := users.HashPassword([]byte(pw), cheap, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func open(t *testing.T, db *pgtest.Server) *Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := Open(ctx, db.DSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestUsers(t *testing.T) {
	db := pgtest.Start(t)
	s := open(t, db)
	c := ctx(t)
	alice := users.User{Login: "alice", Hash: hash(t, "pw"), FixedIPv4: netip.MustParseAddr("10.77.0.9")}
	if err := s.AddUser(c, alice); err != nil {
		t.Fatal(err)
	}
	if err := s.AddUser(c, alice); !errors.Is(err, users.ErrExists) {
		t.Fatalf("second alice: %v", err)
	}
	if err := s.AddUser(c, users.User{Login: "bob", Hash: hash(t, "pw"), FixedIPv4: alice.FixedIPv4}); !errors.Is(err, users.ErrExists) {
		t.Fatalf("bob on alice's fixed address: %v", err)
	}
	for _, bad := range []users.User{{Login: "bad login", Hash: alice.Hash}, {Login: "carol", Hash: "not a hash"}} {
		if err := s.AddUser(c, bad); err == nil {
			t.Fatalf("%q accepted", bad.Login)
		}
	}
	if err := s.SetDisabled(c, "alice", true); err != nil {
		t.Fatal(err)
	}
	if err := s.SetPassword(c, "nobody", alice.Hash); !errors.Is(err, users.ErrUnknownUser) {
		t.Fatalf("password of an unknown user: %v", err)
	}
	list, err := s.Users(c)
	if err != nil || len(list) != 1 || !list[0].Disabled || list[0].FixedIPv4 != alice.FixedIPv4 || list[0].Hash != alice.Hash {
		t.Fatalf("users: %+v %v", list, err)
	}
	if err := s.DeleteUser(c, "alice"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteUser(c, "alice"); !errors.Is(err, users.ErrUnknownUser) {
		t.Fatalf("deleting twice: %v", err)
	}
}

// events records a Backend's callbacks.
type events struct {
	mu    sync.Mutex
	users int
	kicks []string
}

func (e *events) attach(b *Backend) {
	b.OnUsers = func() { e.mu.Lock(); e.users++; e.mu.Unlock() }
	b.OnKick = func(l string) { e.mu.Lock(); e.kicks = append(e.kicks, l); e.mu.Unlock() }
}

func (e *events) snapshot() (int, []string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.users, append([]string(nil), e.kicks...)
}

func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// startBackend runs a Backend (one gateway's view) until the test ends.
func startBackend(t *testing.T, s *Store, recheck time.Duration) (*Backend, *events) {
	t.Helper()
	b, err := NewBackend(ctx(t), s, quiet())
	if err != nil {
		t.Fatal(err)
	}
	b.recheck = recheck
	e := &events{}
	e.attach(b)
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { b.Run(runCtx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	waitUntil(t, 10*time.Second, "the backend connected", b.Connected)
	return b, e
}

// TestChangesReachEveryGateway: two gateways' Backends on one database. A user added, disabled and
// removed through the store reaches both within a second, and so does a kick.
func TestChangesReachEveryGateway(t *testing.T) {
	db := pgtest.Start(t)
	s := open(t, db)
	a, ea := startBackend(t, s, time.Hour)
	b, eb := startBackend(t, s, time.Hour)
	c := ctx(t)
	if err := s.AddUser(c, users.User{Login: "alice", Hash: hash(t, "pw")}); err != nil {
		t.Fatal(err)
	}
	for _, g := range []*Backend{a, b} {
		waitUntil(t, time.Second, "alice everywhere", func() bool { _, ok := g.Lookup("alice"); return ok })
		if _, err := g.Authenticate("alice", []byte("pw")); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.SetDisabled(c, "alice", true); err != nil {
		t.Fatal(err)
	}
	for _, g := range []*Backend{a, b} {
		waitUntil(t, time.Second, "alice disabled everywhere", func() bool { u, _ := g.Lookup("alice"); return u.Disabled })
	}
	if err := s.Kick(c, "alice"); err != nil {
		t.Fatal(err)
	}
	for _, e := range []*events{ea, eb} {
		waitUntil(t, time.Second, "the kick everywhere", func() bool { _, k := e.snapshot(); return len(k) == 1 && k[0] == "alice" })
		if n, _ := e.snapshot(); n != 2 {
			t.Fatalf("%d users-changed callbacks, want 2 (added, disabled)", n)
		}
	}
}

// TestLostNotificationIsCaughtUp: a change that sends no notification (made by hand in SQL, or a
// notification lost with its connection) still reaches the gateway at the next periodic re-check.
func TestLostNotificationIsCaughtUp(t *testing.T) {
	db := pgtest.Start(t)
	s := open(t, db)
	if err := s.AddUser(ctx(t), users.User{Login: "alice", Hash: hash(t, "pw")}); err != nil {
		t.Fatal(err)
	}
	g, e := startBackend(t, s, 200*time.Millisecond)
	if _, err := s.pool.Exec(ctx(t), `DELETE FROM salvo_users WHERE login = 'alice'`); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 5*time.Second, "alice gone without a notification", func() bool { _, ok := g.Lookup("alice"); return !ok })
	if n, _ := e.snapshot(); n != 1 {
		t.Fatalf("%d users-changed callbacks, want 1", n)
	}
}

// TestDatabaseDown: while the database is away, what the gateway knows stays (sessions carry on), password
// logins fail with ErrUnavailable (not as bad credentials), and a change made while this gateway was cut
// off is applied once it is back.
func TestDatabaseDown(t *testing.T) {
	db := pgtest.Start(t)
	s := open(t, db)
	if err := s.AddUser(ctx(t), users.User{Login: "alice", Hash: hash(t, "pw")}); err != nil {
		t.Fatal(err)
	}
	g, _ := startBackend(t, s, time.Hour)
	db.Stop()
	waitUntil(t, 10*time.Second, "the backend noticing", func() bool { return !g.Connected() })
	if _, ok := g.Lookup("alice"); !ok {
		t.Fatal("the users were forgotten while the database is down")
	}
	if _, err := g.Authenticate("alice", []byte("pw")); !errors.Is(err, users.ErrUnavailable) {
		t.Fatalf("login while the store is down: %v", err)
	}
	if err := s.AddUser(ctx(t), users.User{Login: "bob", Hash: hash(t, "pw")}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("adding a user while the store is down: %v", err)
	}
	db.Restart()
	waitUntil(t, 15*time.Second, "the backend back", g.Connected)
	if _, err := g.Authenticate("alice", []byte("pw")); err != nil {
		t.Fatalf("login after the store came back: %v", err)
	}
	// A change made by another gateway's admin right after the restart is there too.
	if err := s.AddUser(ctx(t), users.User{Login: "bob", Hash: hash(t, "pw")}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, time.Second, "bob", func() bool { _, ok := g.Lookup("bob"); return ok })
}

// TestAccountingSurvivesOutage: rows of sessions that end while the database is down are written, once,
// when it is back.
func TestAccountingSurvivesOutage(t *testing.T) {
	db := pgtest.Start(t)
	s := open(t, db)
	a := NewAccounting(s, "gw-a", quiet())
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.Run(runCtx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	end := func(user string) {
		a.Add(engine.SessionEnded{User: user, Reason: "closed_by_client", Addresses: []netip.Addr{netip.MustParseAddr("10.77.0.2")},
			Endpoint: "198.51.100.2:4000", Started: time.Now().Add(-time.Minute), Ended: time.Now(),
			Traffic: engine.Traffic{RxBytes: 1000, TxBytes: 2000, RxPackets: 10, TxPackets: 20}})
	}
	count := func() (int, error) {
		var n int
		err := s.pool.QueryRow(ctx(t), `SELECT count(*) FROM salvo_sessions_ended`).Scan(&n)
		return n, err
	}
	end("alice")
	waitUntil(t, 5*time.Second, "the first row", func() bool { n, _ := count(); return n == 1 })
	db.Stop()
	end("bob")
	end("carol")
	waitUntil(t, 5*time.Second, "a failed write", func() bool { return a.Queued() == 2 })
	db.Restart()
	waitUntil(t, 40*time.Second, "the queued rows written", func() bool { n, _ := count(); return n == 3 && a.Queued() == 0 })
	var rx, tx int64
	var gw, reason string
	if err := s.pool.QueryRow(ctx(t), `SELECT gateway, reason, rx_bytes, tx_bytes FROM salvo_sessions_ended WHERE login = 'carol'`).Scan(&gw, &reason, &rx, &tx); err != nil {
		t.Fatal(err)
	}
	if gw != "gw-a" || reason != "closed_by_client" || rx != 1000 || tx != 2000 || a.Dropped() != 0 {
		t.Fatalf("row %q %q %d %d, dropped %d", gw, reason, rx, tx, a.Dropped())
	}
}

// TestTicketKeysShared: two gateways' rings on one database open each other's tickets across a rotation,
// agree on one key when both rotate, and a key deleted in the database stops opening within a second.
func TestTicketKeysShared(t *testing.T) {
	db := pgtest.Start(t)
	s := open(t, db)
	t0 := time.Now()
	a, err := tickets.NewRing(s.TicketKeys(), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := tickets.NewRing(s.TicketKeys(), nil)
	if err != nil {
		t.Fatal(err)
	}
	c := tickets.Contents{Login: "alice", Instance: 1, AuthAt: t0, Expires: t0.Add(time.Hour)}
	seal := func(r *tickets.Ring, now time.Time) []byte {
		t.Helper()
		blob, err := r.Seal(&c, now)
		if err != nil {
			t.Fatal(err)
		}
		return blob
	}
	fromA := seal(a, t0)
	if _, err := b.Open(fromA, t0.Add(2*time.Second)); err != nil {
		t.Fatalf("B opens A's ticket: %v", err)
	}
	if fromB := seal(b, t0.Add(3*time.Second)); string(fromB[:4]) != string(fromA[:4]) {
		t.Fatal("B sealed under a key of its own")
	}
	// Both due to rotate: they end up on one key.
	later := t0.Add(tickets.RotateEvery + time.Hour)
	c.AuthAt, c.Expires = later, later.Add(time.Hour)
	ra, rb := seal(a, later), seal(b, later.Add(time.Second))
	if string(ra[:4]) != string(rb[:4]) || string(ra[:4]) == string(fromA[:4]) {
		t.Fatal("the gateways rotated to different keys")
	}
	// An operator deletes every key: tickets stop opening.
	if _, err := s.pool.Exec(ctx(t), `DELETE FROM salvo_ticket_keys`); err != nil {
		t.Fatal(err)
	}
	// The ring asks the database in the background, once a second: within a few seconds the key is gone.
	at := later.Add(2 * time.Second)
	waitUntil(t, 5*time.Second, "the deleted key refused", func() bool {
		at = at.Add(time.Second)
		_, err := a.Open(ra, at)
		return errors.Is(err, tickets.ErrUnknownKey)
	})
}
