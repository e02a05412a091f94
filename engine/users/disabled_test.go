package users

import (
	"crypto/rand"
	"errors"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"
)

func TestDisabledUser(t *testing.T) {
	ha, hb := hash(t, "a"), hash(t, "b")
	path := writeFile(t, "alice "+ha+"\nbob\t"+hb+" disabled  ipv4=10.77.0.2\n")
	s, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if b, ok := s.Lookup("bob"); !ok || !b.Disabled || b.FixedIPv4 != netip.MustParseAddr("10.77.0.2") {
		t.Fatalf("Lookup(bob) = %+v, %v", b, ok)
	}
	if a, _ := s.Lookup("alice"); a.Disabled {
		t.Fatal("alice parsed as disabled")
	}
	if u, err := s.Authenticate("bob", []byte("b")); !errors.Is(err, ErrDisabled) || u != (User{}) {
		t.Fatalf("disabled user, right password: %+v, %v", u, err)
	}
	if _, err := s.Authenticate("bob", []byte("a")); !errors.Is(err, ErrBadPassword) {
		t.Fatalf("disabled user, wrong password: %v", err)
	}

	if err := s.SetDisabled("alice", true); err != nil {
		t.Fatal(err)
	}
	if err := s.SetDisabled("bob", false); err != nil {
		t.Fatal(err)
	}
	if err := s.SetDisabled("nobody", true); !errors.Is(err, ErrUnknownUser) || !strings.Contains(err.Error(), `"nobody"`) {
		t.Fatalf("SetDisabled(nobody): %v", err)
	}
	if _, err := s.Authenticate("alice", []byte("a")); !errors.Is(err, ErrDisabled) {
		t.Fatalf("alice after SetDisabled(true): %v", err)
	}
	if u, err := s.Authenticate("bob", []byte("b")); err != nil || u.Login != "bob" || u.Disabled {
		t.Fatalf("bob after SetDisabled(false): %+v, %v", u, err)
	}

	if err := s.Save(path); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	want := "alice " + ha + " disabled\nbob " + hb + " ipv4=10.77.0.2\n"
	if string(data) != want {
		t.Fatalf("saved file:\n%s\nwant:\n%s", data, want)
	}
	s2, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if us := s2.Users(); len(us) != 2 || !us[0].Disabled || us[1].Disabled {
		t.Fatalf("after round trip: %+v", us)
	}
	// Disabling keeps the fixed address taken.
	s2.SetDisabled("bob", true)
	if err := s2.Add(User{Login: "carol", Hash: hash(t, "c"), FixedIPv4: netip.MustParseAddr("10.77.0.2")}); err == nil {
		t.Fatal("a disabled user's fixed address was given to another user")
	}
	// Add keeps the flag of the User it is given.
	if err := s2.Add(User{Login: "dave", Hash: hash(t, "d"), Disabled: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := s2.Authenticate("dave", []byte("d")); !errors.Is(err, ErrDisabled) {
		t.Fatalf("dave added disabled: %v", err)
	}
}

// A disabled user must cost the same argon2 work as any other: rejecting
// them without hashing would make "disabled" visible in the reply time. The
// parameters are expensive enough that skipping the hash could not hide in
// the noise, and only a lower bound is checked, so a slow machine cannot make
// this fail.
func TestDisabledUserStillHashes(t *testing.T) {
	p := Params{Memory: 16 * 1024, Time: 2, Threads: 1}
	h, err := HashPassword([]byte("pw"), p, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s := New()
	if err := s.Add(User{Login: "off", Hash: h, Disabled: true}); err != nil {
		t.Fatal(err)
	}
	floor := MeasureCost(p)
	for range 2 {
		floor = min(floor, MeasureCost(p))
	}
	for _, pw := range []string{"pw", "wrong"} {
		start := time.Now()
		_, err := s.Authenticate("off", []byte(pw))
		took := time.Since(start)
		if err == nil {
			t.Fatal("disabled user authenticated")
		}
		if took < floor/4 {
			t.Errorf("Authenticate(disabled, %q) took %v; one hash takes about %v", pw, took, floor)
		}
	}
}

func TestCost(t *testing.T) {
	for _, tc := range []struct {
		p    Params
		want uint64
	}{
		{DefaultParams, 64 * 1024 * 2},
		{Params{Memory: 64, Time: 1, Threads: 1}, 64},
		{Params{Memory: 1024, Time: 3, Threads: 4}, 3072}, // lanes do not count
		{Params{Memory: maxMemory, Time: maxTime, Threads: 255}, uint64(maxMemory) * maxTime},
		{Params{Memory: 1<<32 - 1, Time: 1<<32 - 1}, (1<<32 - 1) * (1<<32 - 1)}, // no overflow
	} {
		if got := tc.p.Cost(); got != tc.want {
			t.Errorf("%+v.Cost() = %d, want %d", tc.p, got, tc.want)
		}
	}
}

func TestParamsForAndMaxParams(t *testing.T) {
	mid := Params{Memory: 2048, Time: 1, Threads: 1}
	big := Params{Memory: 1024, Time: 3, Threads: 1} // less memory, more cost
	hashWith := func(p Params) string {
		h, err := HashPassword([]byte("pw"), p, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	path := writeFile(t, "a "+hash(t, "pw")+"\nb "+hash(t, "pw")+"\nc "+hashWith(mid)+"\nd "+hashWith(big)+" disabled\n")
	s, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	for login, want := range map[string]Params{"a": cheap, "c": mid, "d": big, "nobody": cheap} {
		if got := s.ParamsFor(login); got != want {
			t.Errorf("ParamsFor(%q) = %+v, want %+v", login, got, want)
		}
	}
	// The disabled user's parameters count: their failures are padded too.
	if got := s.MaxParams(); got != big {
		t.Errorf("MaxParams() = %+v, want %+v", got, big)
	}
	s.Delete("d")
	if got := s.MaxParams(); got != mid {
		t.Errorf("MaxParams() after deleting d = %+v, want %+v", got, mid)
	}
	s.SetPassword("c", hash(t, "pw"))
	if got := s.MaxParams(); got != cheap {
		t.Errorf("MaxParams() with only cheap users = %+v, want %+v", got, cheap)
	}
	// An empty store hashes unknown logins with the defaults.
	e := New()
	if got := e.ParamsFor("x"); got != DefaultParams {
		t.Errorf("empty store: ParamsFor = %+v", got)
	}
	if got := e.MaxParams(); got != DefaultParams {
		t.Errorf("empty store: MaxParams = %+v", got)
	}
}

func TestMoreExpensiveTieBreaks(t *testing.T) {
	for _, tc := range []struct{ a, b Params }{
		{Params{Memory: 1024, Time: 3, Threads: 1}, Params{Memory: 2048, Time: 1, Threads: 1}}, // cost first
		{Params{Memory: 2048, Time: 1, Threads: 1}, Params{Memory: 1024, Time: 2, Threads: 1}}, // then memory
		{Params{Memory: 1024, Time: 2, Threads: 1}, Params{Memory: 1024, Time: 2, Threads: 2}}, // then fewer lanes
	} {
		if !moreExpensive(tc.a, tc.b) || moreExpensive(tc.b, tc.a) {
			t.Errorf("want %+v more expensive than %+v", tc.a, tc.b)
		}
	}
	if p := cheap; moreExpensive(p, p) {
		t.Error("a parameter set is more expensive than itself")
	}
}

func TestMeasureCost(t *testing.T) {
	small := Params{Memory: 64, Time: 1, Threads: 1}
	large := Params{Memory: 32 * 1024, Time: 2, Threads: 1} // 1024 times the work
	ds, dl := MeasureCost(small), MeasureCost(large)
	if ds <= 0 || dl <= 0 {
		t.Fatalf("MeasureCost returned %v and %v", ds, dl)
	}
	if ds >= dl {
		t.Fatalf("m=64 KiB t=1 took %v, not less than m=32 MiB t=2 at %v", ds, dl)
	}
	t.Logf("m=64 KiB t=1: %v; m=32 MiB t=2: %v", ds, dl)
	defer func() {
		if recover() == nil {
			t.Error("MeasureCost accepted invalid parameters")
		}
	}()
	MeasureCost(Params{Memory: 64, Time: 0, Threads: 1})
}
