package leasingtest

import (
	"errors"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/salvovpn/salvo/engine/leasing"
)

// Run checks the contract of leasing.Store on s and other, two gateways' views of one store that holds no
// lease yet.
func Run(t *testing.T, s, other leasing.Store) {
	ctx := t.Context()
	a := netip.MustParseAddr
	lease := func(login string, instance uint64, v4, v6 string) leasing.Lease {
		l := leasing.Lease{Login: login, Instance: instance}
		if v4 != "" {
			l.IPv4 = a(v4)
		}
		if v6 != "" {
			l.IPv6 = a(v6)
		}
		return l
	}
	claim := func(l leasing.Lease, hold time.Duration) {
		t.Helper()
		if err := s.Claim(ctx, l, hold); err != nil {
			t.Fatalf("Claim(%+v): %v", l, err)
		}
	}
	refused := func(l leasing.Lease) {
		t.Helper()
		if err := s.Claim(ctx, l, time.Minute); !errors.Is(err, leasing.ErrTaken) {
			t.Fatalf("Claim(%+v) = %v, want ErrTaken", l, err)
		}
	}
	lookup := func(login string, instance uint64) (leasing.Lease, bool) {
		t.Helper()
		l, ok, err := s.Lookup(ctx, login, instance)
		if err != nil {
			t.Fatalf("Lookup(%s, %d): %v", login, instance, err)
		}
		return l, ok
	}
	held := func(addr string) bool {
		t.Helper()
		list, err := s.Held(ctx)
		if err != nil {
			t.Fatalf("Held: %v", err)
		}
		return slices.Contains(list, a(addr))
	}

	if _, ok := lookup("alice", 1); ok {
		t.Fatal("Lookup found a lease in an empty store")
	}
	big := uint64(1)<<63 + 5 // every bit of an instance survives
	alice := lease("alice", big, "10.99.0.2", "fd99::2")
	claim(alice, time.Minute)
	if got, ok := lookup("alice", big); !ok || !got.Held || got.IPv4 != alice.IPv4 || got.IPv6 != alice.IPv6 || got.Login != alice.Login || got.Instance != big {
		t.Fatalf("Lookup = %+v, %v; want %+v, held", got, ok, alice)
	}
	if _, ok := lookup("alice", 5); ok {
		t.Fatal("Lookup found another instance's lease")
	}
	t.Run("one address, one lease", func(t *testing.T) {
		refused(lease("bob", 1, "10.99.0.2", ""))
		refused(lease("bob", 1, "10.99.0.3", "fd99::2"))
		if _, ok := lookup("bob", 1); ok {
			t.Fatal("a refused claim left a lease")
		}
		claim(lease("bob", 1, "10.99.0.3", "fd99::3"), time.Minute)
		if !held("10.99.0.2") || !held("fd99::3") {
			t.Fatal("Held misses a lease")
		}
	})
	t.Run("a lease may change its addresses", func(t *testing.T) {
		moved := lease("alice", big, "10.99.0.4", "fd99::2")
		claim(moved, time.Minute)
		if got, _ := lookup("alice", big); got.IPv4 != moved.IPv4 || got.IPv6 != moved.IPv6 {
			t.Fatalf("Lookup = %+v, want %+v", got, moved)
		}
		if held("10.99.0.2") {
			t.Fatal("the old address is still held")
		}
		claim(lease("carol", 1, "10.99.0.2", ""), time.Minute)
	})
	t.Run("an expired hold gives way", func(t *testing.T) {
		claim(lease("dave", 1, "10.99.0.5", ""), -time.Second)
		if held("10.99.0.5") {
			t.Fatal("an expired lease is held")
		}
		if l, ok := lookup("dave", 1); !ok || l.Held {
			t.Fatalf("an expired lease: %+v %v, want its client's and not held", l, ok)
		}
		claim(lease("dave", 1, "10.99.0.5", ""), time.Minute) // its own client takes it back
		claim(lease("dave", 1, "10.99.0.5", ""), -time.Second)
		claim(lease("erin", 1, "10.99.0.5", ""), time.Minute) // someone else takes it
		if _, ok := lookup("dave", 1); ok {
			t.Fatal("the lease that gave way is still there")
		}
	})
	t.Run("a fixed address is its owner's", func(t *testing.T) {
		claim(lease("frank", 1, "10.99.0.6", "fd99::6"), time.Minute)
		fixed := lease("grace", 0, "10.99.0.6", "fd99::7")
		fixed.FixedIPv4 = true
		claim(fixed, time.Minute)
		if _, ok := lookup("frank", 1); ok {
			t.Fatal("the lease on a fixed address is still there")
		}
		notFixed := lease("heidi", 0, "10.99.0.8", "fd99::7")
		notFixed.FixedIPv4 = true // only the IPv4 address is fixed
		refused(notFixed)
	})
	renew := func(on leasing.Store, ls ...leasing.Lease) []leasing.Lease {
		t.Helper()
		lost, err := on.Renew(ctx, ls, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		return lost
	}
	t.Run("renew", func(t *testing.T) {
		ivan := lease("ivan", 1, "10.99.0.9", "")
		claim(ivan, -time.Second)
		stale := lease("ivan", 1, "10.99.0.10", "")
		if lost := renew(s, stale); len(lost) != 1 || lost[0] != stale {
			t.Fatalf("Renew of other addresses: lost %+v, want the lease", lost)
		}
		if held("10.99.0.9") {
			t.Fatal("Renew of other addresses renewed the lease")
		}
		nobody := lease("nobody", 1, "10.99.0.11", "")
		if lost := renew(s, ivan, nobody); len(lost) != 1 || lost[0] != nobody {
			t.Fatalf("Renew: lost %+v, want only the lease that does not exist", lost)
		}
		if !held("10.99.0.9") {
			t.Fatal("Renew did not hold the lease")
		}
		if held("10.99.0.11") {
			t.Fatal("Renew made a lease")
		}
		if lost := renew(s); len(lost) != 0 {
			t.Fatalf("Renew of nothing lost %+v", lost)
		}
	})
	t.Run("release", func(t *testing.T) {
		judy := lease("judy", 9, "10.99.0.12", "")
		claim(judy, time.Minute)
		if err := s.Release(ctx, []leasing.Lease{lease("judy", 9, "10.99.0.13", "")}); err != nil {
			t.Fatal(err)
		}
		if !held("10.99.0.12") {
			t.Fatal("Release of other addresses ended the hold")
		}
		if err := s.Release(ctx, []leasing.Lease{judy}); err != nil {
			t.Fatal(err)
		}
		if held("10.99.0.12") {
			t.Fatal("Release did not end the hold")
		}
		if l, ok := lookup("judy", 9); !ok || l.Held {
			t.Fatalf("a released lease: %+v %v, want its client's and not held", l, ok)
		}
	})
	t.Run("a lease moves with its client", func(t *testing.T) {
		// The client moves from s's gateway to other's with its addresses; s's gateway still has the old
		// session for a while, and ends it.
		kim := lease("kim", 3, "10.99.0.14", "fd99::14")
		claim(kim, time.Minute)
		if err := other.Claim(ctx, kim, time.Minute); err != nil {
			t.Fatalf("the client's own lease claimed on another gateway: %v", err)
		}
		if err := s.Release(ctx, []leasing.Lease{kim}); err != nil {
			t.Fatal(err)
		}
		if !held("10.99.0.14") {
			t.Fatal("the gateway the client left released the hold of the one it is on")
		}
		if lost := renew(s, kim); len(lost) != 1 {
			t.Fatalf("the gateway the client left renewed its lease (lost %+v)", lost)
		}
		if lost := renew(other, kim); len(lost) != 0 {
			t.Fatalf("the gateway the client is on lost its lease: %+v", lost)
		}
	})
	t.Run("a lease taken away is lost", func(t *testing.T) {
		// The hold ran out while its gateway could not renew it, and another client took an address.
		leo := lease("leo", 1, "10.99.0.15", "")
		claim(leo, -time.Second)
		if err := other.Claim(ctx, lease("nina", 1, "10.99.0.15", ""), time.Minute); err != nil {
			t.Fatal(err)
		}
		if lost := renew(s, leo); len(lost) != 1 || lost[0] != leo {
			t.Fatalf("Renew of a lease taken away: lost %+v", lost)
		}
	})
	t.Run("one family only", func(t *testing.T) {
		claim(lease("judy", 1, "", "fd99::20"), time.Minute)
		claim(lease("judy", 2, "", "fd99::21"), time.Minute)
		claim(lease("mallory", 1, "10.99.0.20", ""), time.Minute)
		claim(lease("mallory", 2, "10.99.0.21", ""), time.Minute)
	})
	t.Run("concurrent claims of one address", func(t *testing.T) {
		var wg sync.WaitGroup
		var mu sync.Mutex
		won := 0
		for i := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := s.Claim(ctx, lease("racer", uint64(i), "10.99.0.30", ""), time.Minute)
				if err != nil && !errors.Is(err, leasing.ErrTaken) {
					t.Error(err)
				}
				if err == nil {
					mu.Lock()
					won++
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if won != 1 {
			t.Fatalf("%d of 8 concurrent claims of one address won", won)
		}
	})
}
