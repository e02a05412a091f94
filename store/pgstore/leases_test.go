package pgstore

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/salvovpn/salvo/engine/leasing"
	"github.com/salvovpn/salvo/engine/leasing/leasingtest"
	"github.com/salvovpn/salvo/internal/pgtest"
)

// TestLeases: the table keeps the contract every lease store keeps (the same tests as the in-memory store
// the engine's tests use), its unique constraints deciding the races.
func TestLeases(t *testing.T) {
	db := pgtest.Start(t)
	b, _ := startBackend(t, open(t, db), time.Hour)
	leasingtest.Run(t, b.Leases("gateway-a"))
}

// TestLeasesWhileDown: with the database away every call fails at once, as unavailable; what was claimed
// before is there when it is back.
func TestLeasesWhileDown(t *testing.T) {
	db := pgtest.Start(t)
	b, _ := startBackend(t, open(t, db), time.Hour)
	l := b.Leases("gateway-a")
	alice := leasing.Lease{Login: "alice", Instance: 7, IPv4: netip.MustParseAddr("10.77.0.2")}
	if err := l.Claim(ctx(t), alice, time.Minute); err != nil {
		t.Fatal(err)
	}
	db.Stop()
	waitUntil(t, 10*time.Second, "the backend noticing", func() bool { return !b.Connected() })
	start := time.Now()
	if _, _, err := l.Lookup(ctx(t), "alice", 7); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Lookup while down: %v", err)
	}
	if err := l.Claim(ctx(t), alice, time.Minute); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Claim while down: %v", err)
	}
	if err := l.Renew(ctx(t), []leasing.Lease{alice}, time.Minute); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Renew while down: %v", err)
	}
	if _, err := l.Held(ctx(t)); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Held while down: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("the calls took %s while the store was down", d)
	}
	db.Restart()
	waitUntil(t, 15*time.Second, "the backend back", b.Connected)
	if got, ok, err := l.Lookup(ctx(t), "alice", 7); err != nil || !ok || got.IPv4 != alice.IPv4 {
		t.Fatalf("after the restart: %+v %v %v", got, ok, err)
	}
}
