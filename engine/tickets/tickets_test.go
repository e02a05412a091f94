package tickets

import (
	"errors"
	mrand "math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/salvovpn/salvo/internal/secretfile"
)

var t0 = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

func detRand(seed byte) *mrand.ChaCha8 { return mrand.NewChaCha8([32]byte{seed}) }

func sample() Contents {
	c := Contents{Login: "alice@example.org", Instance: 0x1122334455667788, User: Fingerprint("alice@example.org", "$argon2id$v=19$m=8,t=1,p=1$c2FsdA$aGFzaA"),
		Addr4: netip.MustParseAddr("10.77.0.9"), Addr6: netip.MustParseAddr("fd77::9"), AuthAt: t0.Add(-time.Hour), Expires: t0.Add(Lifetime)}
	c.Secret[0], c.Secret[31] = 1, 2
	return c
}

func mustSeal(t testing.TB, r *Ring, c *Contents, now time.Time) []byte {
	t.Helper()
	b, err := r.Seal(c, now)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSealOpen(t *testing.T) {
	r, _ := Load("", detRand(1))
	for _, c := range []Contents{sample(), {Login: strings.Repeat("x", 64), Instance: 1, AuthAt: t0, Expires: t0.Add(time.Minute)}} {
		b := mustSeal(t, r, &c, t0)
		if len(b) > 255 {
			t.Fatalf("ticket of %d bytes does not fit the wire", len(b))
		}
		got, err := r.Open(b, t0.Add(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if got != c {
			t.Fatalf("opened %+v\nsealed %+v", got, c)
		}
	}
	c := sample()
	b := mustSeal(t, r, &c, t0)
	if _, err := r.Open(b, c.Expires); !errors.Is(err, ErrExpired) {
		t.Fatalf("at expiry: %v", err)
	}
	// Every single-byte change is refused: in the key ID as unknown, anywhere else as invalid.
	for i := range b {
		m := append([]byte(nil), b...)
		m[i] ^= 0x40
		_, err := r.Open(m, t0)
		if want := ErrInvalid; i < idLen && !errors.Is(err, ErrUnknownKey) || i >= idLen && !errors.Is(err, want) {
			t.Fatalf("byte %d changed: %v", i, err)
		}
	}
	for _, n := range []int{0, 1, idLen, len(b) - 1} {
		if _, err := r.Open(b[:n], t0); !errors.Is(err, ErrInvalid) {
			t.Fatalf("truncated to %d: %v", n, err)
		}
	}
	if other, _ := Load("", detRand(2)); other != nil {
		if _, err := other.Open(b, t0); !errors.Is(err, ErrUnknownKey) {
			t.Fatalf("another gateway's ticket: %v", err)
		}
	}
}

func TestRotation(t *testing.T) {
	r, _ := Load("", detRand(3))
	c := sample()
	// The last ticket the first key seals, just before it is replaced.
	lastCall := t0.Add(RotateEvery - time.Minute)
	mustSeal(t, r, &c, t0)
	c.Expires = lastCall.Add(Lifetime)
	first := mustSeal(t, r, &c, lastCall)
	later := t0.Add(RotateEvery + time.Minute)
	c.Expires = later.Add(Lifetime)
	second := mustSeal(t, r, &c, later)
	if string(first[:idLen]) == string(second[:idLen]) {
		t.Fatal("no new key after RotateEvery")
	}
	if _, err := r.Open(first, later); err != nil {
		t.Fatalf("a ticket under the replaced key, still valid: %v", err)
	}
	// Once every ticket of the old key has expired, the key is forgotten at the next rotation.
	muchLater := t0.Add(RotateEvery + Lifetime + time.Minute)
	c.Expires = muchLater.Add(Lifetime)
	mustSeal(t, r, &c, muchLater)
	if len(r.keys) != 2 {
		t.Fatalf("%d keys kept, want the new and the previous one", len(r.keys))
	}
	if _, err := r.Open(first, t0); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("the oldest key should be gone: %v", err)
	}
}

func TestPersist(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName)
	r, err := Load(path, detRand(4))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Prepare(t0); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi, err)
	}
	c := sample()
	b := mustSeal(t, r, &c, t0)
	// A restarted gateway opens what the old one sealed, and seals under the same key.
	r2, err := Load(path, detRand(5))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := r2.Open(b, t0); err != nil || got != c {
		t.Fatalf("after reload: %v", err)
	}
	if b2 := mustSeal(t, r2, &c, t0.Add(time.Second)); string(b2[:idLen]) != string(b[:idLen]) {
		t.Fatal("a restart rotated the key")
	}

	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path, nil); !errors.Is(err, secretfile.ErrInsecure) {
		t.Fatalf("world-readable key file: %v", err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("# ok\n123 notbase64\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path, nil); err == nil || !strings.Contains(err.Error(), "line 2") || !strings.Contains(err.Error(), path) {
		t.Fatalf("garbage key file: %v", err)
	}
}

func TestNotSaved(t *testing.T) {
	dir := t.TempDir()
	r, err := Load(filepath.Join(dir, "missing-dir", FileName), detRand(6))
	if err != nil {
		t.Fatal(err)
	}
	c := sample()
	b, err := r.Seal(&c, t0)
	if !errors.Is(err, ErrNotSaved) || b == nil {
		t.Fatalf("unsaved key: %v, ticket %d bytes", err, len(b))
	}
	if _, err := r.Open(b, t0); err != nil {
		t.Fatalf("a ticket under an unsaved key still opens in this process: %v", err)
	}
}

func TestFingerprint(t *testing.T) {
	a := Fingerprint("alice", "hash1")
	for name, b := range map[string][16]byte{
		"login":         Fingerprint("alicf", "hash1"),
		"password hash": Fingerprint("alice", "hash2"),
		"fixed address": Fingerprint("alice", "hash1", netip.MustParseAddr("10.0.0.5")),
		"ambiguity":     Fingerprint("alice\x00hash1", ""),
	} {
		if a == b {
			t.Errorf("the fingerprint does not change with the %s", name)
		}
	}
}

// FuzzOpen: a ticket comes from the network. Whatever the bytes, Open never panics, and what it accepts
// re-seals to the same contents.
func FuzzOpen(f *testing.F) {
	r, _ := Load("", detRand(7))
	c := sample()
	f.Add(mustSeal(f, r, &c, t0))
	f.Add([]byte{})
	f.Add(make([]byte, 255))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := r.Open(b, t0)
		if err != nil {
			return
		}
		if got.Login == "" || !got.Expires.After(t0) {
			t.Fatalf("accepted %+v", got)
		}
	})
}

// TestSharedFile: two gateways on one key file open each other's tickets, across rotations: the one that
// rotates second takes the key the first one made, and each picks up what the other wrote within
// checkEvery.
func TestSharedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName)
	a, _ := Load(path, detRand(8))
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(a.Prepare(t0))
	b, err := Load(path, detRand(9))
	must(err)
	c := sample()
	if _, err := b.Open(mustSeal(t, a, &c, t0), t0); err != nil {
		t.Fatalf("B opens A's ticket: %v", err)
	}
	// A rotates; B has not looked at the file since.
	later := t0.Add(RotateEvery + time.Hour)
	c.Expires = later.Add(Lifetime)
	fromA := mustSeal(t, a, &c, later)
	if _, err := b.Open(fromA, later); err != nil {
		t.Fatalf("B opens a ticket under A's new key: %v", err)
	}
	fromB := mustSeal(t, b, &c, later.Add(time.Minute))
	if string(fromB[:idLen]) != string(fromA[:idLen]) {
		t.Fatal("B made a key of its own instead of taking A's")
	}
}

// TestDeletingTheFileRevokes (found in review: the ring used to merge memory with the file, so a deleted
// key lived on and was written back): deleting the key file revokes every ticket within checkEvery, and
// the next key written is a new one.
func TestDeletingTheFileRevokes(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName)
	r, err := Load(path, detRand(9))
	if err != nil {
		t.Fatal(err)
	}
	c := sample()
	old := mustSeal(t, r, &c, t0)
	oldFile, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Open(old, t0.Add(checkEvery)); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("a ticket after its key file was deleted: %v", err)
	}
	fresh := mustSeal(t, r, &c, t0.Add(2*checkEvery))
	if string(fresh[:idLen]) == string(old[:idLen]) {
		t.Fatal("sealed under the deleted key")
	}
	b, _ := os.ReadFile(path)
	if keyLine := strings.Split(strings.TrimSpace(string(oldFile)), "\n")[2]; strings.Contains(string(b), keyLine) {
		t.Fatalf("the deleted key was written back:\n%s", b)
	}
}

// TestClockAhead: a ticket or a key dated in the future (a gateway whose clock ran ahead, sharing the file)
// stretches nothing: such tickets are refused, and such a key opens but does not seal here.
func TestClockAhead(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName)
	ahead, _ := Load(path, detRand(10))
	c := sample()
	c.AuthAt, c.Expires = t0.Add(48*time.Hour), t0.Add(72*time.Hour)
	fromTheFuture := mustSeal(t, ahead, &c, t0.Add(48*time.Hour))
	r, err := Load(path, detRand(11))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Open(fromTheFuture, t0); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a ticket from 48 h ahead: %v", err)
	}
	c = sample()
	here := mustSeal(t, r, &c, t0)
	if string(here[:idLen]) == string(fromTheFuture[:idLen]) {
		t.Fatal("sealed under a key dated 48 h ahead")
	}
	again := mustSeal(t, r, &c, t0.Add(time.Minute))
	if string(again[:idLen]) != string(here[:idLen]) {
		t.Fatal("a future-dated key made the ring rotate on every ticket")
	}
}
