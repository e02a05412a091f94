package users

import (
	"bytes"
	"crypto/rand"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// cheap keeps the tests fast; the format and code paths are the same.
var cheap = Params{Memory: 1024, Time: 1, Threads: 1}

func hash(t testing.TB, pw string) string {
	t.Helper()
	h, err := HashPassword([]byte(pw), cheap, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestHashVerify(t *testing.T) {
	h := hash(t, "correct horse")
	if !strings.HasPrefix(h, "$argon2id$v=19$m=1024,t=1,p=1$") {
		t.Fatalf("unexpected PHC string %q", h)
	}
	ok, err := VerifyPassword(h, []byte("correct horse"))
	if err != nil || !ok {
		t.Fatalf("VerifyPassword(right) = %v, %v", ok, err)
	}
	ok, err = VerifyPassword(h, []byte("correct horsf"))
	if err != nil || ok {
		t.Fatalf("VerifyPassword(wrong) = %v, %v", ok, err)
	}
	if h2 := hash(t, "correct horse"); h2 == h {
		t.Fatal("two hashes of the same password are equal: salt not random")
	}
}

func TestHashPasswordRejects(t *testing.T) {
	for _, tc := range []struct {
		pw   string
		p    Params
		want string
	}{
		{"", cheap, "empty"},
		{strings.Repeat("x", 129), cheap, "at most 128"},
		{"x", Params{Memory: 1024, Time: 0, Threads: 1}, "time"},
		{"x", Params{Memory: 1024, Time: 1, Threads: 0}, "threads"},
		{"x", Params{Memory: 4, Time: 1, Threads: 1}, "memory"},
		{"x", Params{Memory: 1<<20 + 1, Time: 1, Threads: 1}, "memory"},
	} {
		_, err := HashPassword([]byte(tc.pw), tc.p, rand.Reader)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("HashPassword(len %d, %+v) error = %v, want %q", len(tc.pw), tc.p, err, tc.want)
		}
	}
	if _, err := HashPassword([]byte("x"), cheap, bytes.NewReader(nil)); err == nil {
		t.Error("HashPassword ignored a failing random source")
	}
}

func TestMalformedPHC(t *testing.T) {
	good := hash(t, "pw")
	f := strings.Split(good, "$")
	salt, key := f[4], f[5]
	for _, tc := range []struct{ phc, want string }{
		{"", "want $argon2id"},
		{"plain", "want $argon2id"},
		{"$argon2i$v=19$m=1024,t=1,p=1$" + salt + "$" + key, "algorithm"},
		{"$argon2id$v=16$m=1024,t=1,p=1$" + salt + "$" + key, "version"},
		{"$argon2id$v=19$m=1024,t=1$" + salt + "$" + key, "m=N,t=N,p=N"},
		{"$argon2id$v=19$t=1,m=1024,p=1$" + salt + "$" + key, "must be m="},
		{"$argon2id$v=19$m=01024,t=1,p=1$" + salt + "$" + key, "not a decimal"},
		{"$argon2id$v=19$m=-1,t=1,p=1$" + salt + "$" + key, "not a decimal"},
		{"$argon2id$v=19$m=99999999999,t=1,p=1$" + salt + "$" + key, "out of range"},
		{"$argon2id$v=19$m=2097152,t=1,p=1$" + salt + "$" + key, "memory"},
		{"$argon2id$v=19$m=1024,t=101,p=1$" + salt + "$" + key, "time"},
		{"$argon2id$v=19$m=1024,t=1,p=0$" + salt + "$" + key, "threads"},
		{"$argon2id$v=19$m=1024,t=1,p=256$" + salt + "$" + key, "out of range"},
		{"$argon2id$v=19$m=1024,t=1,p=1$" + salt + "=$" + key, "salt is not"},
		{"$argon2id$v=19$m=1024,t=1,p=1$AAAA$" + key, "salt is 3 bytes"},
		{"$argon2id$v=19$m=1024,t=1,p=1$" + salt + "$" + key[:10], "hash is"},
		{"$argon2id$v=19$m=1024,t=1,p=1$" + salt + "$" + key + "$", "want $argon2id"},
	} {
		ok, err := VerifyPassword(tc.phc, []byte("pw"))
		if ok || !errors.Is(err, ErrMalformedHash) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("VerifyPassword(%q) = %v, %v; want error containing %q", tc.phc, ok, err, tc.want)
		}
	}
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "users")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadAuthenticate(t *testing.T) {
	ha, hb := hash(t, "alice-pw"), hash(t, "bob-pw")
	path := writeFile(t, "# users\n\nalice "+ha+"\r\n  bob\t"+hb+" ipv6=fd77::10 ipv4=10.77.0.10  \n")
	s, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	u, err := s.Authenticate("alice", []byte("alice-pw"))
	if err != nil || u.Login != "alice" || u.FixedIPv4.IsValid() {
		t.Fatalf("Authenticate(alice) = %+v, %v", u, err)
	}
	if _, err := s.Authenticate("alice", []byte("bob-pw")); !errors.Is(err, ErrBadPassword) {
		t.Fatalf("wrong password: %v", err)
	}
	if _, err := s.Authenticate("carol", []byte("x")); !errors.Is(err, ErrUnknownUser) {
		t.Fatalf("unknown user: %v", err)
	}
	b, ok := s.Lookup("bob")
	if !ok || b.FixedIPv4 != netip.MustParseAddr("10.77.0.10") || b.FixedIPv6 != netip.MustParseAddr("fd77::10") {
		t.Fatalf("Lookup(bob) = %+v, %v", b, ok)
	}
	if _, ok := s.Lookup("carol"); ok {
		t.Fatal("Lookup(carol) found someone")
	}
	if us := s.Users(); len(us) != 2 || us[0].Login != "alice" || us[1].Login != "bob" {
		t.Fatalf("Users() = %+v", us)
	}
	// The dummy hash for unknown users uses the parameters users have.
	if s.st.dummy.params != cheap {
		t.Fatalf("dummy params %+v, want %+v", s.st.dummy.params, cheap)
	}
}

func TestLoadErrors(t *testing.T) {
	h := hash(t, "pw")
	h2 := hash(t, "pw2")
	for _, tc := range []struct {
		content, want string
	}{
		{"# x\nbad/login " + h + "\n", ":2: login \"bad/login\" contains \"/\""},
		{strings.Repeat("a", 65) + " " + h + "\n", ":1: login"},
		{"alice\n", ":1: user \"alice\": missing password hash"},
		{"alice notahash\n", ":1: user \"alice\": malformed argon2id hash"},
		{"alice " + h + "\n\nalice " + h2 + "\n", ":3: login \"alice\" is already defined on line 1"},
		{"alice " + h + " ipv4=10.0.0.300\n", ":1: user \"alice\": ipv4=\"10.0.0.300\" is not an IP address"},
		{"alice " + h + " ipv4=fd00::1\n", ":1: user \"alice\": ipv4=fd00::1 is not a usable IPv4"},
		{"alice " + h + " ipv6=10.0.0.1\n", "ipv6=10.0.0.1 is not a usable IPv6"},
		{"alice " + h + " ipv6=fe80::1%eth0\n", "ipv6=fe80::1%eth0 is not a usable IPv6"},
		{"alice " + h + " ipv4=10.0.0.1 ipv4=10.0.0.2\n", "ipv4= given twice"},
		{"alice " + h + " mtu=1400\n", "unknown option \"mtu=1400\""},
		{"alice " + h + " disabled ipv4=10.0.0.1 disabled\n", ":1: user \"alice\": disabled given twice"},
		{"alice " + h + " disabled=yes\n", "unknown option \"disabled=yes\" (want ipv4=<addr>, ipv6=<addr> or disabled)"},
		{"alice " + h + " Disabled\n", "unknown option \"Disabled\""},
		{"alice " + h + " ipv4=10.0.0.5\nbob " + h2 + " ipv4=10.0.0.5\n", ":2: user \"bob\": fixed address 10.0.0.5 is already given to \"alice\" on line 1"},
		{"alice " + h + " " + strings.Repeat("x", 5000) + "\n", ":1: line is longer than"},
	} {
		path := writeFile(t, tc.content)
		_, err := Load(path)
		if err == nil || !strings.Contains(err.Error(), path+tc.want) && !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Load(%q) error = %v, want %q", tc.content, err, tc.want)
			continue
		}
		if !strings.HasPrefix(err.Error(), path+":") {
			t.Errorf("error %q does not start with the file name", err)
		}
		if strings.Contains(err.Error(), h[len(h)-20:]) || strings.Contains(err.Error(), h2[len(h2)-20:]) {
			t.Errorf("error %q quotes a hash", err)
		}
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing")); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("Load(missing) = %v", err)
	}
}

func TestEditSaveRoundTrip(t *testing.T) {
	ha, hb := hash(t, "a"), hash(t, "b")
	path := writeFile(t, "# keep me\nalice "+ha+"\n# and me\nbob "+hb+"\n")
	s, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	carol := User{Login: "carol@example.com", Hash: hash(t, "c"), FixedIPv4: netip.MustParseAddr("10.77.0.9")}
	if err := s.Add(carol); err != nil {
		t.Fatal(err)
	}
	if err := s.Add(User{Login: "alice", Hash: ha}); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate Add: %v", err)
	}
	if err := s.Add(User{Login: "dave", Hash: ha, FixedIPv4: carol.FixedIPv4}); err == nil || !strings.Contains(err.Error(), "carol") {
		t.Fatalf("Add with a taken address: %v", err)
	}
	if err := s.Add(User{Login: "bad login", Hash: ha}); err == nil {
		t.Fatal("Add accepted a bad login")
	}
	if err := s.Add(User{Login: "eve", Hash: "x"}); !errors.Is(err, ErrMalformedHash) {
		t.Fatalf("Add with a bad hash: %v", err)
	}
	if err := s.Delete("bob"); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete("bob"); !errors.Is(err, ErrUnknownUser) {
		t.Fatalf("second Delete: %v", err)
	}
	newHash := hash(t, "a2")
	if err := s.SetPassword("alice", newHash); err != nil {
		t.Fatal(err)
	}
	if err := s.SetPassword("nobody", newHash); !errors.Is(err, ErrUnknownUser) {
		t.Fatalf("SetPassword(nobody): %v", err)
	}
	if err := s.SetPassword("alice", "junk"); !errors.Is(err, ErrMalformedHash) {
		t.Fatalf("SetPassword(junk): %v", err)
	}
	if err := s.Save(path); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("saved file mode %v, %v; want 0600", fi.Mode(), err)
	}
	data, _ := os.ReadFile(path)
	want := "# keep me\nalice " + newHash + "\n# and me\ncarol@example.com " + carol.Hash + " ipv4=10.77.0.9\n"
	if string(data) != want {
		t.Fatalf("saved file:\n%s\nwant:\n%s", data, want)
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
		t.Fatalf("temporary files left behind: %v", entries)
	}
	s2, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s2.Authenticate("alice", []byte("a2")); err != nil {
		t.Fatalf("new password after round trip: %v", err)
	}
	if _, err := s2.Authenticate("alice", []byte("a")); !errors.Is(err, ErrBadPassword) {
		t.Fatalf("old password after round trip: %v", err)
	}
	if u, ok := s2.Lookup("carol@example.com"); !ok || u != carol {
		t.Fatalf("carol after round trip: %+v", u)
	}
}

func TestNewAndSave(t *testing.T) {
	s := New()
	if len(s.Users()) != 0 {
		t.Fatal("New store not empty")
	}
	if err := s.Add(User{Login: "a", Hash: hash(t, "pw")}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "users")
	if err := s.Save(path); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	if !strings.HasPrefix(string(data), "# Salvo users file") {
		t.Fatalf("new file lacks the header:\n%s", data)
	}
	if _, err := Load(path); err != nil {
		t.Fatal(err)
	}
	if err := s.Save(filepath.Join(t.TempDir(), "no", "such", "dir")); err == nil || !strings.Contains(err.Error(), "saving users file") {
		t.Fatalf("Save into a missing directory: %v", err)
	}
}

func TestReload(t *testing.T) {
	path := writeFile(t, "alice "+hash(t, "a")+"\n")
	s, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(path, []byte("bob "+hash(t, "b")+"\n"), 0o600)
	if err := s.Reload(path); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Lookup("alice"); ok {
		t.Fatal("alice still present after reload")
	}
	os.WriteFile(path, []byte("broken line here\n"), 0o600)
	if err := s.Reload(path); err == nil {
		t.Fatal("Reload accepted a broken file")
	}
	if _, ok := s.Lookup("bob"); !ok {
		t.Fatal("a failed Reload changed the store")
	}
}

func TestConcurrentUse(t *testing.T) {
	s := New()
	h := hash(t, "pw")
	// A resident user makes the unknown-user dummy hash cheap too.
	if err := s.Add(User{Login: "resident", Hash: h}); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 50 {
			s.Authenticate("u1", []byte("pw"))
			s.Users()
		}
	}()
	for range 50 {
		s.Add(User{Login: "u1", Hash: h})
		s.SetPassword("u1", h)
		s.SetDisabled("u1", true)
		s.ParamsFor("u1")
		s.MaxParams()
		s.Delete("u1")
	}
	<-done
}

func FuzzVerifyPassword(f *testing.F) {
	good := hash(f, "pw")
	f.Add(good, []byte("pw"))
	f.Add("$argon2id$v=19$m=8,t=1,p=1$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA", []byte(""))
	f.Add("$argon2id$v=19$m=1024,t=1,p=1$$", []byte("x"))
	f.Add("$$$$$", []byte{})
	f.Fuzz(func(t *testing.T, s string, pw []byte) {
		// Parameters inside the bounds can still be slow; keep fuzzing fast
		// by only hashing cheap ones. Parsing is exercised either way.
		if h, err := parsePHC(s); err == nil && (h.params.Memory > 4096 || h.params.Time > 2 || h.params.Threads > 4) {
			return
		}
		ok, err := VerifyPassword(s, pw)
		if ok && err != nil {
			t.Fatal("ok with an error")
		}
		if err == nil && s == good && ok != (string(pw) == "pw") {
			t.Fatal("wrong answer for the known hash")
		}
	})
}

func FuzzParseUsersFile(f *testing.F) {
	h := hash(f, "pw")
	f.Add([]byte("# c\n\nalice " + h + " ipv4=10.0.0.2 ipv6=fd00::2\n"))
	f.Add([]byte("alice " + h + "\nalice " + h + "\n"))
	f.Add([]byte("a b c d e\n"))
	f.Add([]byte("bob " + h + " disabled ipv6=fd00::3\ncarol " + h + " disabled disabled\n"))
	f.Add([]byte("\r\n\t#\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := parse(bytes.NewReader(data), "fuzz")
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz:") {
				t.Fatalf("error without file name: %v", err)
			}
			return
		}
		// Whatever parses must survive a Save/Load round trip unchanged.
		s := &Store{st: st}
		path := filepath.Join(t.TempDir(), "u")
		if err := s.Save(path); err != nil {
			t.Fatal(err)
		}
		s2, err := Load(path)
		if err != nil {
			t.Fatalf("reloading saved file: %v", err)
		}
		a, b := s.Users(), s2.Users()
		if len(a) != len(b) {
			t.Fatalf("round trip changed %d users into %d", len(a), len(b))
		}
		for i := range a {
			if a[i] != b[i] {
				t.Fatalf("round trip changed %+v into %+v", a[i], b[i])
			}
		}
	})
}

func BenchmarkVerifyPasswordDefault(b *testing.B) {
	h, err := HashPassword([]byte("benchmark password"), DefaultParams, rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	pw := []byte("benchmark password")
	b.ReportAllocs()
	for b.Loop() {
		if ok, _ := VerifyPassword(h, pw); !ok {
			b.Fatal("no match")
		}
	}
}
