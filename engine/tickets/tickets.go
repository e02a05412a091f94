// Package tickets seals and opens the gateway's session tickets (PROTOCOL.md, "Session tickets") under a
// rotated ticket key.
//
// A ticket is what lets a client start a new session without its password: after a gateway restart, or on
// another gateway that holds the same ticket key. The client cannot read it; the gateway finds in it who
// the client is (login, instance, the user record it logged in with), its addresses, when its password
// was last checked, when the ticket expires, and the secret the client proves it holds.
//
// The ticket key is as secret as the gateway's private key: whoever holds it can forge a ticket for any
// user, and can open recorded tickets (their secrets included). It lives in the state directory, 0600.
package tickets

import (
	"bytes"
	"crypto/cipher"
	crand "crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/blake2s"
	"golang.org/x/crypto/chacha20poly1305"

	"github.com/salvovpn/salvo/internal/atomicfile"
	"github.com/salvovpn/salvo/internal/secretfile"
	"github.com/salvovpn/salvo/protocol"
)

// FileName is the ticket key file in the state directory.
const FileName = "ticket-keys"

const (
	// Lifetime is how long a ticket is valid after it was issued. Every handshake hands out a fresh one,
	// so a client that rekeys every two minutes always holds one that is nearly new.
	Lifetime = 24 * time.Hour
	// RotateEvery is how old the newest key gets before a new one replaces it for sealing. A replaced
	// key still opens tickets until they have all expired, and is then forgotten: a ticket key that
	// leaks later opens no ticket older than RotateEvery + Lifetime.
	RotateEvery = 24 * time.Hour
)

// Contents is what a ticket says.
type Contents struct {
	Login    string
	Instance uint64
	// User fingerprints the user record the client logged in with (see Fingerprint): a ticket dies when
	// the user is removed, or their password or record changes.
	User         [16]byte
	Addr4, Addr6 netip.Addr // the session's lease
	// AuthAt is when the password was last checked: sessions started from the ticket keep it as their
	// start, so max_session_age still forces a password login.
	AuthAt  time.Time
	Expires time.Time
	Secret  [protocol.TicketSecretLen]byte
}

// Errors from Open. None carries anything from the ticket.
var (
	ErrUnknownKey = errors.New("tickets: sealed under a key this gateway does not hold (rotated away, or another gateway's)")
	ErrInvalid    = errors.New("tickets: does not open under its key")
	ErrExpired    = errors.New("tickets: expired")
)

// Fingerprint identifies the user record a ticket was issued for: a hash of the stored password hash (a
// PHC string with its own salt, so a password change changes it) and of the record's other fields.
func Fingerprint(login, passwordHash string, fixed ...netip.Addr) [16]byte {
	h, _ := blake2s.New256(nil)
	h.Write([]byte("salvo ticket user\x00" + login + "\x00" + passwordHash))
	for _, a := range fixed {
		h.Write([]byte("\x00" + a.String()))
	}
	var fp [16]byte
	copy(fp[:], h.Sum(nil))
	return fp
}

// idLen is the key ID in front of every ticket: it picks the key without trying each one.
const idLen = 4

type key struct {
	id      [idLen]byte
	created time.Time
	raw     [chacha20poly1305.KeySize]byte
	aead    cipher.AEAD
}

// Ring holds the ticket keys, newest first, and persists them. Safe for concurrent use.
//
// Gateways that share one key file (on shared storage) share their tickets: a ring reads the file again
// before it rotates (and takes a key another gateway made instead of making its own) and when a ticket
// names a key it does not hold (at most every reloadEvery), and merges what it finds with what it has.
type Ring struct {
	path string // "" keeps the keys in memory only
	rand io.Reader

	mu         sync.Mutex
	keys       []*key
	lastReload time.Time
}

// reloadEvery bounds how often tickets under unknown keys make a ring read its file again.
const reloadEvery = 10 * time.Second

// maxKeys bounds the key file: with RotateEvery >= Lifetime at most two keys are ever live.
const maxKeys = 4

// Load reads the ring from path, or starts an empty one when the file does not exist. An empty path keeps
// the keys in memory (tickets then do not survive a restart). rand nil is crypto/rand.
func Load(path string, rand io.Reader) (*Ring, error) {
	if rand == nil {
		rand = crand.Reader
	}
	r := &Ring{path: path, rand: rand}
	keys, err := readKeys(path)
	if err != nil {
		return nil, err
	}
	r.keys = keys
	return r, nil
}

// readKeys reads a key file: nil for an empty path or a missing file.
func readKeys(path string) ([]*key, error) {
	if path == "" {
		return nil, nil
	}
	b, err := secretfile.Read(path, "ticket key file", 4096)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var keys []*key
	for n, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, err := parseKey(line)
		if err != nil {
			return nil, fmt.Errorf("ticket key file %s, line %d: %w (delete the file to start over: clients then log in with their passwords once)", path, n+1, err)
		}
		if len(keys) == maxKeys {
			return nil, fmt.Errorf("ticket key file %s: more than %d keys", path, maxKeys)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// merge returns the union of two key lists, newest first, without keys whose tickets have all expired
// by now, at most maxKeys.
func merge(a, b []*key, now time.Time) []*key {
	var out []*key
	seen := map[[idLen]byte]bool{}
	for _, k := range append(append([]*key(nil), a...), b...) {
		if !seen[k.id] && now.Sub(k.created) < RotateEvery+Lifetime {
			seen[k.id] = true
			out = append(out, k)
		}
	}
	slices.SortStableFunc(out, func(x, y *key) int { return y.created.Compare(x.created) })
	return out[:min(len(out), maxKeys)]
}

// reloadLocked merges the key file into the ring (called with r.mu held). A file that cannot be read
// leaves the ring as it is.
func (r *Ring) reloadLocked(now time.Time) error {
	r.lastReload = now
	keys, err := readKeys(r.path)
	if err != nil {
		return err
	}
	r.keys = merge(r.keys, keys, now)
	return nil
}

func parseKey(line string) (*key, error) {
	f := strings.Fields(line)
	if len(f) != 2 {
		return nil, errors.New(`want "<unix seconds> <base64 key>"`)
	}
	secs, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil || secs <= 0 {
		return nil, errors.New("bad creation time")
	}
	raw, err := base64.StdEncoding.DecodeString(f[1])
	if err != nil || len(raw) != chacha20poly1305.KeySize {
		return nil, errors.New("bad key: want 32 bytes of base64")
	}
	return newKey([32]byte(raw), time.Unix(secs, 0))
}

func newKey(raw [32]byte, created time.Time) (*key, error) {
	aead, err := chacha20poly1305.NewX(raw[:])
	if err != nil {
		return nil, err
	}
	k := &key{created: created, raw: raw, aead: aead}
	sum := blake2s.Sum256(append([]byte("salvo ticket key id\x00"), raw[:]...))
	copy(k.id[:], sum[:])
	return k, nil
}

// ErrNotSaved wraps a failure to save a new key: it seals tickets all the same, but they will not open
// after a restart.
var ErrNotSaved = errors.New("tickets: new ticket key not saved; tickets will not survive a restart")

// Prepare makes sure a current key exists (creating and saving one if needed), so that a gateway finds a
// state directory it cannot write at start rather than at its first login.
func (r *Ring) Prepare(now time.Time) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, err := r.currentLocked(now)
	return err
}

// currentLocked returns the sealing key, rotating (and saving) when the newest is RotateEvery old, and
// forgets keys whose tickets have all expired. Called with r.mu held. A key that cannot be saved is used
// anyway, with an error wrapping ErrNotSaved.
func (r *Ring) currentLocked(now time.Time) (*key, error) {
	fresh := func() bool {
		return len(r.keys) > 0 && now.Sub(r.keys[0].created) < RotateEvery && !r.keys[0].created.After(now.Add(time.Minute))
	}
	if fresh() {
		return r.keys[0], nil
	}
	// Another gateway sharing the file may have rotated already: take its key rather than make one.
	if err := r.reloadLocked(now); err == nil && fresh() {
		return r.keys[0], nil
	}
	var raw [32]byte
	if _, err := io.ReadFull(r.rand, raw[:]); err != nil {
		return nil, err
	}
	k, err := newKey(raw, now)
	if err != nil {
		return nil, err
	}
	// A key stops sealing when it is replaced (at most RotateEvery old, or now when its creation time is in
	// the future: a clock that went back), so its last tickets expire Lifetime later; merge forgets it then.
	// A key from the future sorts first, so it is dropped here rather than kept sealing.
	var keys []*key
	for _, old := range r.keys {
		if !old.created.After(now) {
			keys = append(keys, old)
		}
	}
	r.keys = merge([]*key{k}, keys, now)
	if err := r.persist(r.keys); err != nil {
		return k, fmt.Errorf("%w: %w", ErrNotSaved, err)
	}
	return k, nil
}

func (r *Ring) persist(keys []*key) error {
	if r.path == "" {
		return nil
	}
	var b bytes.Buffer
	b.WriteString("# Salvo session ticket keys, newest first. As secret as the gateway's private key: whoever\n" +
		"# reads this file can forge a session for any user. Deleting it only makes clients log in again.\n")
	for _, k := range keys {
		fmt.Fprintf(&b, "%d %s\n", k.created.Unix(), base64.StdEncoding.EncodeToString(k.raw[:]))
	}
	if err := atomicfile.Write(r.path, b.Bytes(), 0o600); err != nil {
		return fmt.Errorf("saving ticket keys: %w", err)
	}
	return nil
}

// ticket plaintext layout (little endian): version, instance, auth time, expiry (unix seconds), user
// fingerprint, secret, IPv4 (4 bytes, zero when none), IPv6 (16 bytes, zero when none), login length,
// login.
const (
	plainVersion = 1
	plainFixed   = 1 + 8 + 8 + 8 + 16 + protocol.TicketSecretLen + 4 + 16 + 1
	// sealedOverhead is the key ID, the XChaCha20 nonce and the Poly1305 tag around the plaintext.
	sealedOverhead = idLen + chacha20poly1305.NonceSizeX + chacha20poly1305.Overhead
)

// The largest ticket (a 64-byte login) fits the wire's ticket field; a negative constant does not convert
// to uint, so this fails to compile otherwise.
const _ = uint(protocol.MaxTicketLen - (sealedOverhead + plainFixed + protocol.MaxLoginLen))

// Seal returns the ticket for c, under the current key (rotating it when due). With an error wrapping
// ErrNotSaved the ticket is still good.
func (r *Ring) Seal(c *Contents, now time.Time) ([]byte, error) {
	if len(c.Login) < 1 || len(c.Login) > protocol.MaxLoginLen {
		return nil, errors.New("tickets: login length")
	}
	r.mu.Lock()
	k, kerr := r.currentLocked(now)
	r.mu.Unlock()
	if k == nil {
		return nil, kerr
	}
	plain := make([]byte, 0, plainFixed+len(c.Login))
	plain = append(plain, plainVersion)
	plain = binary.LittleEndian.AppendUint64(plain, c.Instance)
	plain = binary.LittleEndian.AppendUint64(plain, uint64(c.AuthAt.Unix()))
	plain = binary.LittleEndian.AppendUint64(plain, uint64(c.Expires.Unix()))
	plain = append(plain, c.User[:]...)
	plain = append(plain, c.Secret[:]...)
	var a4 [4]byte
	var a6 [16]byte
	if c.Addr4.Is4() {
		a4 = c.Addr4.As4()
	}
	if c.Addr6.Is6() {
		a6 = c.Addr6.As16()
	}
	plain = append(plain, a4[:]...)
	plain = append(plain, a6[:]...)
	plain = append(plain, byte(len(c.Login)))
	plain = append(plain, c.Login...)
	defer clear(plain) // held the secret

	out := make([]byte, idLen+chacha20poly1305.NonceSizeX, sealedOverhead+len(plain))
	copy(out, k.id[:])
	if _, err := io.ReadFull(r.rand, out[idLen:]); err != nil {
		return nil, err
	}
	return k.aead.Seal(out, out[idLen:], plain, out[:idLen]), kerr
}

// Open checks and decodes a ticket from the network (hostile bytes). It returns ErrUnknownKey for a key
// this ring does not hold, ErrInvalid for anything that does not authenticate or decode, ErrExpired for a
// ticket past its expiry.
func (r *Ring) Open(blob []byte, now time.Time) (Contents, error) {
	if len(blob) < sealedOverhead+plainFixed+1 || len(blob) > protocol.MaxTicketLen {
		return Contents{}, ErrInvalid
	}
	r.mu.Lock()
	k := r.findLocked(blob[:idLen])
	if k == nil && r.path != "" && now.Sub(r.lastReload) >= reloadEvery {
		// Perhaps a key another gateway sharing the file made since we last looked.
		if r.reloadLocked(now) == nil {
			k = r.findLocked(blob[:idLen])
		}
	}
	r.mu.Unlock()
	if k == nil {
		return Contents{}, ErrUnknownKey
	}
	nonce := blob[idLen : idLen+chacha20poly1305.NonceSizeX]
	plain, err := k.aead.Open(nil, nonce, blob[idLen+chacha20poly1305.NonceSizeX:], blob[:idLen])
	if err != nil {
		return Contents{}, ErrInvalid
	}
	defer clear(plain)
	c, ok := decode(plain)
	if !ok {
		return Contents{}, ErrInvalid
	}
	if !now.Before(c.Expires) {
		return Contents{}, ErrExpired
	}
	return c, nil
}

func (r *Ring) findLocked(id []byte) *key {
	for _, k := range r.keys {
		if bytes.Equal(k.id[:], id) {
			return k
		}
	}
	return nil
}

// decode parses a plaintext that authenticated under our key. It is still checked field by field: a bug
// in an older version that sealed something odd must not become a crash.
func decode(p []byte) (Contents, bool) {
	if len(p) < plainFixed+1 || p[0] != plainVersion || int(p[plainFixed-1]) != len(p)-plainFixed {
		return Contents{}, false
	}
	var c Contents
	c.Instance = binary.LittleEndian.Uint64(p[1:9])
	c.AuthAt = time.Unix(int64(binary.LittleEndian.Uint64(p[9:17])), 0).UTC()
	c.Expires = time.Unix(int64(binary.LittleEndian.Uint64(p[17:25])), 0).UTC()
	copy(c.User[:], p[25:41])
	copy(c.Secret[:], p[41:73])
	if a4 := [4]byte(p[73:77]); a4 != [4]byte{} {
		c.Addr4 = netip.AddrFrom4(a4)
	}
	if a6 := [16]byte(p[77:93]); a6 != [16]byte{} {
		c.Addr6 = netip.AddrFrom16(a6)
	}
	c.Login = string(p[plainFixed:])
	return c, c.Login != ""
}
