// Package users reads, checks and edits the gateway's users file and
// verifies passwords against the argon2id hashes it holds.
//
// The file is text, one user per line:
//
//	# comment
//	alice $argon2id$v=19$m=65536,t=2,p=1$<salt>$<hash>
//	bob   $argon2id$v=19$m=65536,t=2,p=1$<salt>$<hash> ipv4=10.77.0.10 ipv6=fd77::10
//	carol $argon2id$v=19$m=65536,t=2,p=1$<salt>$<hash> disabled
//
// Fields are separated by spaces or tabs: the login, the hash, then options
// in any order. Logins are 1..64 characters of [A-Za-z0-9._@-]. Hashes are
// PHC strings with unpadded standard base64. The optional ipv4= and ipv6=
// give the user a fixed tunnel address; no two users may share one. The bare
// word disabled keeps the user (and their fixed addresses) but refuses their
// logins. Blank lines and lines starting with # are kept when the file is
// rewritten by Save, which writes options as ipv4=, ipv6=, disabled.
//
// The file holds password hashes: keep it mode 0600 (Save writes it so).
//
// # Timing and cost of failed logins
//
// A failed login must not tell an observer whether the login exists, is
// disabled, or merely had the wrong password. Authenticate always runs one
// argon2id hash: with the user's own parameters for a known login (disabled
// or not), and with a dummy hash for an unknown one. That alone is not
// enough when users have different parameters, since an unknown login then
// takes the dummy's time and a known one its own. So the caller pads every
// failure: it measures the slowest parameter set in the file with
// MeasureCost(store.MaxParams()) at load and reload, and delays each
// failure reply until at least that long after the attempt began. The reply
// time is then the same for unknown, disabled and wrong-password logins,
// whatever their parameters. Successes are not padded: they reveal the login
// exists to someone who already knows its password.
//
// The caller also bounds the total argon2 work with a budget in KiB-passes
// (Params.Cost), charged before hashing with ParamsFor(login), so cheap test
// hashes and 64 MiB hashes are each charged what they cost.
package users

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"sync"

	"github.com/salvovpn/salvo/internal/atomicfile"
	"github.com/salvovpn/salvo/protocol"
)

var (
	// ErrUnknownUser: no such login. Never tell a client apart from
	// ErrBadPassword; both are "bad credentials" on the wire.
	ErrUnknownUser = errors.New("unknown user")
	// ErrBadPassword: the password does not match.
	ErrBadPassword = errors.New("wrong password")
	// ErrDisabled: the password is right but the user is disabled. Never
	// tell a client apart from ErrBadPassword either.
	ErrDisabled = errors.New("user is disabled")
	// ErrExists: Add was given a login that already exists.
	ErrExists = errors.New("user already exists")
	// ErrUnavailable: the backend cannot check credentials now (its database is unreachable). Not a
	// failed login: the client is told to retry, and nobody is charged for it.
	ErrUnavailable = errors.New("user store unavailable")
)

const (
	maxLineLen  = 4096
	maxFileSize = 64 << 20 // refuse absurd files instead of reading them whole
)

const fileHeader = "# Salvo users file: login argon2id-hash [ipv4=addr] [ipv6=addr] [disabled]\n" +
	"# Managed with `salvo user add|del|passwd|disable|enable|list`. Keep it mode 0600.\n"

// User is one line of the users file.
type User struct {
	Login     string
	Hash      string     // PHC string
	FixedIPv4 netip.Addr // zero if none
	FixedIPv6 netip.Addr // zero if none
	// Disabled users stay in the file, keeping their fixed addresses, but
	// cannot log in: Authenticate returns ErrDisabled for the right password.
	Disabled bool
}

type record struct {
	User
	phc phc
}

// line is one line of the file: either a user (login set) or a comment or
// blank line kept verbatim so Save does not destroy an admin's notes.
type line struct {
	login string
	raw   string
}

type state struct {
	lines []line
	users map[string]*record
	dummy phc // used to spend the same time on unknown logins
}

// Store holds the users. It is safe for concurrent use.
type Store struct {
	mu sync.RWMutex
	st state
}

// CheckLogin returns an error if login is not 1..64 characters of
// [A-Za-z0-9._@-].
func CheckLogin(login string) error {
	if login == "" {
		return errors.New("login is empty")
	}
	if len(login) > protocol.MaxLoginLen {
		return fmt.Errorf("login %q... is %d characters, at most %d allowed", login[:16], len(login), protocol.MaxLoginLen)
	}
	for i := 0; i < len(login); i++ {
		c := login[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '@' || c == '-') {
			return fmt.Errorf("login %q contains %q; only A-Z a-z 0-9 . _ @ - are allowed", login, login[i:i+1])
		}
	}
	return nil
}

// New returns an empty store, for creating a users file from scratch.
func New() *Store {
	s := &Store{st: state{users: map[string]*record{}}}
	for _, l := range strings.SplitAfter(strings.TrimSuffix(fileHeader, "\n"), "\n") {
		s.st.lines = append(s.st.lines, line{raw: strings.TrimSuffix(l, "\n")})
	}
	s.st.dummy = dummyFor(s.st.users)
	return s
}

// Load reads and checks a users file. Errors name the file and line.
func Load(path string) (*Store, error) {
	st, err := readFile(path)
	if err != nil {
		return nil, err
	}
	return &Store{st: st}, nil
}

// Reload replaces the store's contents with the file at path (on SIGHUP).
// If the file has an error, the store is left unchanged.
func (s *Store) Reload(path string) error {
	st, err := readFile(path)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.st = st
	s.mu.Unlock()
	return nil
}

func readFile(path string) (state, error) {
	f, err := os.Open(path)
	if err != nil {
		return state{}, fmt.Errorf("users file: %w", err)
	}
	defer f.Close()
	return parse(io.LimitReader(f, maxFileSize+1), path)
}

// parse reads a users file. It does no hashing, so it is cheap and safe to
// fuzz; every hash is only parsed and bounds-checked.
func parse(r io.Reader, name string) (state, error) {
	st := state{users: map[string]*record{}}
	lineOf := map[string]int{}           // login -> line number, for duplicate errors
	addrOwner := map[netip.Addr]string{} // fixed address -> login
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 512), maxLineLen)
	n, size := 0, 0
	for sc.Scan() {
		n++
		size += len(sc.Bytes()) + 1
		if size > maxFileSize {
			return state{}, fmt.Errorf("%s: file is larger than %d bytes", name, maxFileSize)
		}
		text := strings.TrimSuffix(sc.Text(), "\r")
		trimmed := strings.TrimSpace(text)
		if trimmed == "" || trimmed[0] == '#' {
			st.lines = append(st.lines, line{raw: text})
			continue
		}
		u, h, err := parseUser(trimmed)
		if err != nil {
			return state{}, fmt.Errorf("%s:%d: %w", name, n, err)
		}
		if prev, dup := lineOf[u.Login]; dup {
			return state{}, fmt.Errorf("%s:%d: login %q is already defined on line %d", name, n, u.Login, prev)
		}
		for _, a := range []netip.Addr{u.FixedIPv4, u.FixedIPv6} {
			if !a.IsValid() {
				continue
			}
			if other, taken := addrOwner[a]; taken {
				return state{}, fmt.Errorf("%s:%d: user %q: fixed address %v is already given to %q on line %d", name, n, u.Login, a, other, lineOf[other])
			}
			addrOwner[a] = u.Login
		}
		lineOf[u.Login] = n
		st.users[u.Login] = &record{User: u, phc: h}
		st.lines = append(st.lines, line{login: u.Login})
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return state{}, fmt.Errorf("%s:%d: line is longer than %d bytes", name, n+1, maxLineLen)
		}
		return state{}, fmt.Errorf("%s:%d: %w", name, n+1, err)
	}
	st.dummy = dummyFor(st.users)
	return st, nil
}

// parseUser parses `login hash [ipv4=a] [ipv6=a] [disabled]`.
func parseUser(text string) (User, phc, error) {
	f := strings.Fields(text)
	u := User{Login: f[0]}
	if err := CheckLogin(u.Login); err != nil {
		return u, phc{}, err
	}
	if len(f) < 2 {
		return u, phc{}, fmt.Errorf("user %q: missing password hash after the login", u.Login)
	}
	u.Hash = f[1]
	h, err := parsePHC(u.Hash)
	if err != nil {
		return u, phc{}, fmt.Errorf("user %q: %w", u.Login, err)
	}
	for _, opt := range f[2:] {
		if opt == "disabled" {
			if u.Disabled {
				return u, phc{}, fmt.Errorf("user %q: disabled given twice", u.Login)
			}
			u.Disabled = true
			continue
		}
		key, val, _ := strings.Cut(opt, "=")
		var dst *netip.Addr
		switch key {
		case "ipv4":
			dst = &u.FixedIPv4
		case "ipv6":
			dst = &u.FixedIPv6
		default:
			return u, phc{}, fmt.Errorf("user %q: unknown option %q (want ipv4=<addr>, ipv6=<addr> or disabled)", u.Login, truncate(opt))
		}
		if dst.IsValid() {
			return u, phc{}, fmt.Errorf("user %q: %s= given twice", u.Login, key)
		}
		a, err := netip.ParseAddr(val)
		if err != nil {
			return u, phc{}, fmt.Errorf("user %q: %s=%q is not an IP address", u.Login, key, truncate(val))
		}
		*dst = a
	}
	if err := checkFixed(u); err != nil {
		return u, phc{}, err
	}
	return u, h, nil
}

func checkFixed(u User) error {
	if a := u.FixedIPv4; a.IsValid() && (!a.Is4() || a.IsUnspecified()) {
		return fmt.Errorf("user %q: ipv4=%v is not a usable IPv4 address", u.Login, a)
	}
	if a := u.FixedIPv6; a.IsValid() && (!a.Is6() || a.Is4In6() || a.Zone() != "" || a.IsUnspecified()) {
		return fmt.Errorf("user %q: ipv6=%v is not a usable IPv6 address (no zone, not IPv4-mapped)", u.Login, a)
	}
	return nil
}

// dummyFor returns a hash that matches no password, with the parameters most
// users have, so that rejecting an unknown login costs the same argon2 work
// as rejecting a typical user's wrong password. Users with other parameters
// still take a different time; the caller's padding (see the package
// documentation) hides that difference.
func dummyFor(users map[string]*record) phc {
	count := map[Params]int{}
	best, bestN := DefaultParams, 0
	for _, r := range users {
		count[r.phc.params]++
		if n := count[r.phc.params]; n > bestN || n == bestN && lessParams(r.phc.params, best) {
			best, bestN = r.phc.params, n
		}
	}
	// An all-zero key: finding a password that hashes to it would mean
	// breaking argon2id.
	return phc{params: best, salt: make([]byte, saltLen), key: make([]byte, keyLen)}
}

// lessParams gives map iteration a deterministic tie-break.
func lessParams(a, b Params) bool {
	if a.Memory != b.Memory {
		return a.Memory < b.Memory
	}
	if a.Time != b.Time {
		return a.Time < b.Time
	}
	return a.Threads < b.Threads
}

// Lookup returns the user with that login.
func (s *Store) Lookup(login string) (User, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	r, ok := s.st.users[login]
	if !ok {
		return User{}, false
	}
	return r.User, true
}

// Authenticate checks login and password. On failure it returns
// ErrUnknownUser, ErrBadPassword or (for the right password of a disabled
// user) ErrDisabled, always after one argon2id hash: with the user's
// parameters for a known login, with ParamsFor(login) for an unknown one.
// The returned User is zero on every error. Callers must report all three
// failures alike ("bad credentials") and pad their reply time as the
// package documentation describes, since parameters differ between users.
//
// Each call costs the hash's memory (64 MiB by default) for its duration:
// callers must rate-limit and bound concurrent calls.
func (s *Store) Authenticate(login string, password []byte) (User, error) {
	s.mu.RLock()
	r, ok := s.st.users[login]
	dummy := s.st.dummy
	s.mu.RUnlock()
	if !ok {
		dummy.verify(password)
		return User{}, ErrUnknownUser
	}
	// The hash runs before the disabled check, so a disabled user costs the
	// same work as an enabled one.
	if !r.phc.verify(password) {
		return User{}, ErrBadPassword
	}
	if r.Disabled {
		return User{}, ErrDisabled
	}
	return r.User, nil
}

// ParamsFor returns the parameters Authenticate(login, ...) would hash with
// right now: the user's, or the dummy hash's for an unknown login. The
// gateway charges ParamsFor(login).Cost() to its hashing budget before
// calling Authenticate. A concurrent edit or Reload may change the answer
// between the two calls; the difference is one hash's worth of budget.
func (s *Store) ParamsFor(login string) Params {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if r, ok := s.st.users[login]; ok {
		return r.phc.params
	}
	return s.st.dummy.params
}

// MaxParams returns the most expensive parameter set present in the store,
// among every user's (disabled ones too) and the dummy hash's: the one with
// the largest Cost, ties broken towards more memory, more passes, then fewer
// lanes (which run in parallel, so fewer take longer). It sizes the hashing
// budget (whose burst must be at least MaxParams().Cost()) and is what
// MeasureCost times to pad failed logins.
func (s *Store) MaxParams() Params {
	s.mu.RLock()
	defer s.mu.RUnlock()
	best := s.st.dummy.params
	for _, r := range s.st.users {
		if moreExpensive(r.phc.params, best) {
			best = r.phc.params
		}
	}
	return best
}

func moreExpensive(a, b Params) bool {
	if a.Cost() != b.Cost() {
		return a.Cost() > b.Cost()
	}
	if a.Memory != b.Memory {
		return a.Memory > b.Memory
	}
	if a.Time != b.Time {
		return a.Time > b.Time
	}
	return a.Threads < b.Threads
}

// Users returns every user in file order.
func (s *Store) Users() []User {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]User, 0, len(s.st.users))
	for _, l := range s.st.lines {
		if l.login != "" {
			out = append(out, s.st.users[l.login].User)
		}
	}
	return out
}

// Add adds a new user at the end of the file (in memory; call Save).
func (s *Store) Add(u User) error {
	if err := CheckLogin(u.Login); err != nil {
		return err
	}
	h, err := parsePHC(u.Hash)
	if err != nil {
		return fmt.Errorf("user %q: %w", u.Login, err)
	}
	if err := checkFixed(u); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.st.users[u.Login]; ok {
		return fmt.Errorf("user %q: %w", u.Login, ErrExists)
	}
	for _, r := range s.st.users {
		for _, a := range []netip.Addr{u.FixedIPv4, u.FixedIPv6} {
			if a.IsValid() && (a == r.FixedIPv4 || a == r.FixedIPv6) {
				return fmt.Errorf("user %q: fixed address %v is already given to %q", u.Login, a, r.Login)
			}
		}
	}
	s.st.users[u.Login] = &record{User: u, phc: h}
	s.st.lines = append(s.st.lines, line{login: u.Login})
	s.st.dummy = dummyFor(s.st.users)
	return nil
}

// Delete removes a user (in memory; call Save).
func (s *Store) Delete(login string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.st.users[login]; !ok {
		return fmt.Errorf("user %q: %w", login, ErrUnknownUser)
	}
	delete(s.st.users, login)
	lines := s.st.lines[:0:0]
	for _, l := range s.st.lines {
		if l.login != login {
			lines = append(lines, l)
		}
	}
	s.st.lines = lines
	s.st.dummy = dummyFor(s.st.users)
	return nil
}

// SetPassword replaces a user's hash (from HashPassword) in memory; call Save.
func (s *Store) SetPassword(login string, hash string) error {
	h, err := parsePHC(hash)
	if err != nil {
		return fmt.Errorf("user %q: %w", login, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.st.users[login]
	if !ok {
		return fmt.Errorf("user %q: %w", login, ErrUnknownUser)
	}
	// Replace rather than mutate the record: Authenticate may hold it.
	nr := *r
	nr.Hash, nr.phc = hash, h
	s.st.users[login] = &nr
	s.st.dummy = dummyFor(s.st.users)
	return nil
}

// SetDisabled disables or re-enables a user (in memory; call Save). A
// disabled user keeps their hash and fixed addresses. Sessions that are
// already up are the gateway's business: it must consult the store on rekey.
func (s *Store) SetDisabled(login string, disabled bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.st.users[login]
	if !ok {
		return fmt.Errorf("user %q: %w", login, ErrUnknownUser)
	}
	// Replace rather than mutate the record: Authenticate may hold it.
	nr := *r
	nr.Disabled = disabled
	s.st.users[login] = &nr
	return nil
}

// Save writes the users file atomically with mode 0600 (atomicfile.Write),
// so a crash leaves either the old or the new file, never half. If path
// exists, the new file keeps its owner and group (so `sudo salvo user ...`
// does not take the file away from a gateway running as another user); Save
// fails if it cannot.
func (s *Store) Save(path string) error {
	var buf bytes.Buffer
	s.mu.RLock()
	for _, l := range s.st.lines {
		if l.login == "" {
			buf.WriteString(l.raw)
		} else {
			u := s.st.users[l.login]
			buf.WriteString(u.Login + " " + u.Hash)
			if u.FixedIPv4.IsValid() {
				buf.WriteString(" ipv4=" + u.FixedIPv4.String())
			}
			if u.FixedIPv6.IsValid() {
				buf.WriteString(" ipv6=" + u.FixedIPv6.String())
			}
			if u.Disabled {
				buf.WriteString(" disabled")
			}
		}
		buf.WriteByte('\n')
	}
	s.mu.RUnlock()
	if err := atomicfile.Write(path, buf.Bytes(), 0o600); err != nil {
		return fmt.Errorf("saving users file: %w", err)
	}
	return nil
}
