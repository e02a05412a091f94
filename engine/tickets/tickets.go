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
	"encoding/binary"
	"errors"
	"io"
	"net/netip"
	"time"

	"golang.org/x/crypto/blake2s"
	"golang.org/x/crypto/chacha20poly1305"

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
	r.syncLocked(now)
	k := r.findLocked(blob[:idLen])
	if k == nil {
		// Perhaps a key another gateway made a moment ago, which a remote store's background check has
		// not brought yet: ask now (at most once a second, and not for a while after the store failed).
		r.askNowLocked(now)
		k = r.findLocked(blob[:idLen])
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
	// Sealed by a gateway whose clock ran ahead: believing it would stretch the ticket's lifetime, and
	// max_session_age (which counts from AuthAt).
	if c.AuthAt.After(now.Add(clockSlack)) || c.Expires.After(now.Add(Lifetime+clockSlack)) {
		return Contents{}, ErrInvalid
	}
	return c, nil
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
