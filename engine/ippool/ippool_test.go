package ippool

import (
	"errors"
	"net/netip"
	"sync"
	"testing"
)

func mustNew(t *testing.T, prefix string, reserved ...string) *Pool {
	t.Helper()
	var res []netip.Addr
	for _, r := range reserved {
		res = append(res, netip.MustParseAddr(r))
	}
	p, err := New(netip.MustParsePrefix(prefix), res...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// drain allocates until the pool is exhausted and returns what it got.
func drain(t *testing.T, p *Pool) []netip.Addr {
	t.Helper()
	var got []netip.Addr
	for range 1 << 16 {
		a, err := p.Allocate()
		if errors.Is(err, ErrExhausted) {
			return got
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, a)
	}
	t.Fatal("pool never reported exhaustion")
	return nil
}

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func equal(a, b []netip.Addr) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestExhaustion(t *testing.T) {
	for _, tc := range []struct {
		prefix   string
		gateway  string
		reserved []string
		want     []netip.Addr
	}{
		{"10.0.0.0/30", "10.0.0.1", nil, addrs("10.0.0.2")},
		{"10.0.0.0/29", "10.0.0.1", nil, addrs("10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6")},
		{"10.0.0.8/29", "10.0.0.9", []string{"10.0.0.12"}, addrs("10.0.0.10", "10.0.0.11", "10.0.0.13", "10.0.0.14")},
		{"fd00::/126", "fd00::1", nil, addrs("fd00::2", "fd00::3")},
		{"fd00::1234/126", "fd00::1235", nil, addrs("fd00::1236", "fd00::1237")}, // host bits ignored
	} {
		p := mustNew(t, tc.prefix, tc.reserved...)
		if p.Gateway() != netip.MustParseAddr(tc.gateway) {
			t.Errorf("%s: Gateway() = %v, want %s", tc.prefix, p.Gateway(), tc.gateway)
		}
		got := drain(t, p)
		if !equal(got, tc.want) {
			t.Errorf("%s: allocated %v, want %v", tc.prefix, got, tc.want)
		}
		if p.InUse() != len(tc.want) {
			t.Errorf("%s: InUse() = %d, want %d", tc.prefix, p.InUse(), len(tc.want))
		}
		_, err := p.Allocate()
		if !errors.Is(err, ErrExhausted) || err.Error() == ErrExhausted.Error() {
			t.Errorf("%s: error %v should wrap ErrExhausted and name the pool", tc.prefix, err)
		}
	}
}

func TestReleaseAndReuse(t *testing.T) {
	p := mustNew(t, "10.0.0.0/29")
	got := drain(t, p)
	p.Release(got[2])
	p.Release(got[2]) // double release is harmless
	p.Release(netip.MustParseAddr("192.0.2.1"))
	if p.InUse() != len(got)-1 {
		t.Fatalf("InUse() = %d after one release, want %d", p.InUse(), len(got)-1)
	}
	a, err := p.Allocate()
	if err != nil || a != got[2] {
		t.Fatalf("Allocate() = %v, %v; want the released %v", a, err, got[2])
	}
	// The cursor moves on: with free addresses both before and after it,
	// the one after the last allocation is preferred.
	p2 := mustNew(t, "10.0.0.0/29")
	a1, _ := p2.Allocate() // .2
	a2, _ := p2.Allocate() // .3
	p2.Release(a1)
	if a3, _ := p2.Allocate(); a3 == a1 || a3 == a2 {
		t.Fatalf("Allocate() reused %v immediately", a3)
	}
}

func TestClaim(t *testing.T) {
	p := mustNew(t, "10.0.0.0/29", "10.0.0.5")
	fixed := netip.MustParseAddr("10.0.0.5")
	if err := p.Claim(fixed); err != nil {
		t.Fatalf("claiming a reserved address: %v", err)
	}
	if err := p.Claim(fixed); !errors.Is(err, ErrInUse) {
		t.Fatalf("second claim: %v, want ErrInUse", err)
	}
	for _, s := range []string{"10.0.0.0", "10.0.0.1", "10.0.0.7", "10.0.0.8", "192.0.2.1", "::ffff:10.0.0.3", "fd00::3"} {
		if err := p.Claim(netip.MustParseAddr(s)); !errors.Is(err, ErrOutside) {
			t.Errorf("Claim(%s) = %v, want ErrOutside", s, err)
		}
	}
	// Allocate skips both the claimed and the reserved address.
	got := drain(t, p)
	if !equal(got, addrs("10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.6")) {
		t.Fatalf("allocated %v", got)
	}
	// A dynamically leased address cannot be claimed.
	if err := p.Claim(got[0]); !errors.Is(err, ErrInUse) {
		t.Fatalf("claiming a leased address: %v, want ErrInUse", err)
	}
	if !p.Leased(got[0]) || p.Leased(netip.MustParseAddr("10.0.0.1")) {
		t.Fatal("Leased() wrong")
	}
}

func TestSetReserved(t *testing.T) {
	p := mustNew(t, "10.0.0.0/29")
	if err := p.SetReserved(addrs("10.0.0.2", "10.0.0.3")...); err != nil {
		t.Fatal(err)
	}
	if a, _ := p.Allocate(); a != netip.MustParseAddr("10.0.0.4") {
		t.Fatalf("Allocate() = %v, want 10.0.0.4", a)
	}
	if err := p.SetReserved(netip.MustParseAddr("10.0.1.1")); !errors.Is(err, ErrOutside) {
		t.Fatalf("reserving an outside address: %v", err)
	}
	if _, err := New(netip.MustParsePrefix("10.0.0.0/29"), netip.MustParseAddr("10.9.9.9")); err == nil {
		t.Fatal("New accepted a reserved address outside the prefix")
	}
}

// Addresses held elsewhere are skipped by Allocate, may still be claimed (the shared store decides), and
// come back when the set is replaced.
func TestSetElsewhere(t *testing.T) {
	p := mustNew(t, "10.0.0.0/29")
	p.SetElsewhere(addrs("10.0.0.2", "10.0.0.3", "192.0.2.1"))
	if a, _ := p.Allocate(); a != netip.MustParseAddr("10.0.0.4") {
		t.Fatalf("Allocate() = %v, want 10.0.0.4", a)
	}
	if err := p.Claim(netip.MustParseAddr("10.0.0.3")); err != nil {
		t.Fatalf("claiming an address held elsewhere: %v", err)
	}
	p.SetElsewhere(nil)
	for _, want := range []string{"10.0.0.5", "10.0.0.6", "10.0.0.2"} {
		if a, err := p.Allocate(); err != nil || a != netip.MustParseAddr(want) {
			t.Fatalf("Allocate() = %v, %v; want %s", a, err, want)
		}
	}
}

func TestIPv6Huge(t *testing.T) {
	p := mustNew(t, "fd77::/64", "fd77::3")
	if p.Gateway() != netip.MustParseAddr("fd77::1") {
		t.Fatalf("Gateway() = %v", p.Gateway())
	}
	want := addrs("fd77::2", "fd77::4", "fd77::5")
	for _, w := range want {
		a, err := p.Allocate()
		if err != nil || a != w {
			t.Fatalf("Allocate() = %v, %v; want %v", a, err, w)
		}
	}
	if err := p.Claim(netip.MustParseAddr("fd77::ffff:ffff:ffff:ffff")); err != nil {
		t.Fatalf("claiming the last address of a /64: %v", err)
	}
	if err := p.Claim(netip.MustParseAddr("fd77:0:0:1::1")); !errors.Is(err, ErrOutside) {
		t.Fatalf("claim outside the /64: %v", err)
	}
	if !p.Contains(netip.MustParseAddr("fd77::abcd")) || p.Contains(netip.MustParseAddr("10.0.0.1")) {
		t.Fatal("Contains wrong")
	}
	if p.Prefix() != netip.MustParsePrefix("fd77::/64") {
		t.Fatalf("Prefix() = %v", p.Prefix())
	}
}

func TestMaxLeases(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates a million leases")
	}
	p := mustNew(t, "10.0.0.0/8")
	for range MaxLeases {
		if _, err := p.Allocate(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := p.Allocate(); !errors.Is(err, ErrExhausted) {
		t.Fatalf("Allocate past MaxLeases: %v", err)
	}
	if err := p.Claim(netip.MustParseAddr("10.200.0.1")); !errors.Is(err, ErrExhausted) {
		t.Fatalf("Claim past MaxLeases: %v", err)
	}
}

func TestNewRejects(t *testing.T) {
	for _, s := range []string{"10.0.0.0/31", "10.0.0.1/32", "fd00::/127", "fd00::/128", "::ffff:10.0.0.0/120"} {
		if _, err := New(netip.MustParsePrefix(s)); err == nil {
			t.Errorf("New(%s) accepted", s)
		}
	}
	if _, err := New(netip.Prefix{}); err == nil {
		t.Error("New accepted the zero prefix")
	}
}

func TestConcurrentAllocateUnique(t *testing.T) {
	for _, prefix := range []string{"10.0.0.0/22", "fd00::/64"} {
		p := mustNew(t, prefix)
		const workers, each = 8, 100
		results := make(chan netip.Addr, workers*each)
		var wg sync.WaitGroup
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range each {
					a, err := p.Allocate()
					if err != nil {
						t.Error(err)
						return
					}
					if i%3 == 0 {
						p.Release(a)
						continue
					}
					results <- a
				}
			}()
		}
		wg.Wait()
		close(results)
		// Every address still held must be distinct and leased.
		held := map[netip.Addr]bool{}
		for a := range results {
			if held[a] {
				t.Fatalf("%s: %v handed out twice", prefix, a)
			}
			if !p.Leased(a) {
				t.Fatalf("%s: held address %v is not leased", prefix, a)
			}
			held[a] = true
		}
		if want := workers * (each - 34); len(held) != want || p.InUse() != want {
			t.Fatalf("%s: %d held, InUse() = %d, want %d", prefix, len(held), p.InUse(), want)
		}
	}
}
