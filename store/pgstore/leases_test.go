package pgstore

import (
	"errors"
	"net/netip"
	"sync"
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
	leasingtest.Run(t, b.Leases("gateway-a"), b.Leases("gateway-b"))
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
	if _, err := l.Renew(ctx(t), []leasing.Lease{alice}, time.Minute); !errors.Is(err, ErrUnavailable) {
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

// TestCrosswiseClaims (found in review): two claims whose addresses sit crosswise in two rows that must
// give way (expired) delete those rows in opposite orders, and PostgreSQL may pick one as a deadlock's
// victim. Both claims must still succeed: the victim is run again.
func TestCrosswiseClaims(t *testing.T) {
	db := pgtest.Start(t)
	b, _ := startBackend(t, open(t, db), time.Hour)
	ga, gb := b.Leases("gateway-a"), b.Leases("gateway-b")
	c := ctx(t)
	for i := range 40 {
		a, bb := netip.AddrFrom4([4]byte{10, 98, byte(i), 1}), netip.AddrFrom4([4]byte{10, 98, byte(i), 2})
		a6, b6 := netip.AddrFrom16([16]byte{0xfd, 0x98, 15: byte(i)}), netip.AddrFrom16([16]byte{0xfd, 0x98, 14: 1, 15: byte(i)})
		for _, old := range []leasing.Lease{{Login: "old1", Instance: uint64(i), IPv4: a, IPv6: b6}, {Login: "old2", Instance: uint64(i), IPv4: bb, IPv6: a6}} {
			if err := ga.Claim(c, old, -time.Second); err != nil {
				t.Fatal(err)
			}
		}
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for j, x := range []leasing.Lease{{Login: "new1", Instance: uint64(i), IPv4: a, IPv6: a6}, {Login: "new2", Instance: uint64(i), IPv4: bb, IPv6: b6}} {
			wg.Add(1)
			go func() { defer wg.Done(); errs[j] = gb.Claim(c, x, time.Minute) }()
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Fatalf("round %d: %v", i, err)
			}
		}
	}
}
