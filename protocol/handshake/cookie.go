package handshake

import (
	"crypto/subtle"
	"encoding/binary"
	"io"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/salvovpn/salvo/protocol"
)

const (
	// CookieLifetime is how long a client uses a cookie, and how often the gateway rotates its cookie secret
	// (the previous secret stays valid for one more period, so a cookie is honoured for 2 to 4 minutes).
	CookieLifetime = 2 * time.Minute
)

// Cookie is a mac2 key received in a cookieReply. The caller keeps it and passes it to the next NewLogin or
// NewResume; it is used only while younger than CookieLifetime.
type Cookie struct {
	value      [cookieLen]byte
	receivedAt time.Time
}

// ReceivedAt is when the cookie reply was consumed.
func (c *Cookie) ReceivedAt() time.Time { return c.receivedAt }

// Valid reports whether the cookie may still be used at now. A clock that went backwards invalidates it
// rather than extending its life.
func (c *Cookie) Valid(now time.Time) bool {
	if c == nil || c.receivedAt.IsZero() {
		return false
	}
	age := now.Sub(c.receivedAt)
	return age >= 0 && age < CookieLifetime
}

// cookieJar holds the gateway's rotating cookie secret R and its predecessor.
type cookieJar struct {
	mu      sync.Mutex
	cur     [32]byte
	prev    [32]byte
	curAt   time.Time
	hasCur  bool
	hasPrev bool
}

// secrets returns the current and (if still valid) previous secret, rotating first when the current one is
// CookieLifetime old. Rotation depends only on the now values passed in, so the server stays clock-free.
func (j *cookieJar) secrets(now time.Time, rand io.Reader) (cur, prev [32]byte, hasPrev bool, err error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if !j.hasCur || now.Sub(j.curAt) >= CookieLifetime {
		var fresh [32]byte
		if _, err := io.ReadFull(rand, fresh[:]); err != nil {
			return cur, prev, false, ErrRandom
		}
		// The old secret stays usable as "previous" only if it was current during the last period; after a
		// long idle gap both are replaced.
		j.hasPrev = j.hasCur && now.Sub(j.curAt) < 2*CookieLifetime
		j.prev = j.cur
		j.cur, j.curAt, j.hasCur = fresh, now, true
	}
	return j.cur, j.prev, j.hasPrev, nil
}

// cookieFor is MAC(R, source IP || source port). IPv4-mapped IPv6 sources are unmapped so a dual-stack
// socket and an IPv4 socket derive the same cookie; the port is little endian like every protocol integer.
func cookieFor(secret [32]byte, src netip.AddrPort) [cookieLen]byte {
	var buf [18]byte
	a := src.Addr().Unmap()
	n := 0
	if a.Is4() {
		v := a.As4()
		n = copy(buf[:], v[:])
	} else {
		v := a.As16()
		n = copy(buf[:], v[:])
	}
	binary.LittleEndian.PutUint16(buf[n:], src.Port())
	return mac(secret[:], buf[:n+2])
}

// checkMac2 verifies mac2 (the last 16 bytes of d) against the cookies for src under the current and the
// previous secret.
func checkMac2(d []byte, src netip.AddrPort, cur, prev [32]byte, hasPrev bool) bool {
	n := len(d) - macLen
	c := cookieFor(cur, src)
	want := mac(c[:], d[:n])
	ok := subtle.ConstantTimeCompare(want[:], d[n:]) == 1
	if hasPrev {
		c = cookieFor(prev, src)
		want = mac(c[:], d[:n])
		ok = ok || subtle.ConstantTimeCompare(want[:], d[n:]) == 1
	}
	return ok
}

// makeCookieReply seals the cookie for src to the client, bound to the mac1 of the request it answers so an
// off-path attacker who did not see the request cannot plant cookies.
func makeCookieReply(aead cookieSealer, rand io.Reader, index uint32, cookie [cookieLen]byte, mac1 []byte) ([]byte, error) {
	out := make([]byte, 0, protocol.CookieReplyLen)
	out = append(out, byte(protocol.CodeCookieReply), 0, 0, 0)
	out = binary.LittleEndian.AppendUint32(out, index)
	nonce := out[headerLen : headerLen+nonceLenX]
	if _, err := io.ReadFull(rand, nonce); err != nil {
		return nil, ErrRandom
	}
	out = out[:headerLen+nonceLenX]
	return aead.Seal(out, nonce, cookie[:], mac1), nil
}

type cookieSealer interface {
	Seal(dst, nonce, plaintext, additionalData []byte) []byte
	Open(dst, nonce, ciphertext, additionalData []byte) ([]byte, error)
}

func newCookieAEAD(serverPublic Key) cookieSealer {
	k := labelHash("cookie--", serverPublic)
	a, err := chacha20poly1305.NewX(k[:])
	if err != nil {
		return nil // unreachable: the key is always 32 bytes
	}
	return a
}

// openCookieReply checks and decrypts a cookieReply addressed to index, bound to mac1.
func openCookieReply(aead cookieSealer, d []byte, index uint32, mac1 []byte) ([cookieLen]byte, error) {
	var c [cookieLen]byte
	if len(d) == 0 {
		return c, protocol.ErrNotEnoughData
	}
	if protocol.Code(d[0]) != protocol.CodeCookieReply {
		return c, protocol.ErrInvalidPacketCode
	}
	if len(d) < protocol.CookieReplyLen {
		return c, protocol.ErrNotEnoughData
	}
	if len(d) > protocol.CookieReplyLen || d[1]|d[2]|d[3] != 0 {
		return c, protocol.ErrMalformed
	}
	if binary.LittleEndian.Uint32(d[4:8]) != index {
		return c, ErrResponseMismatch
	}
	if aead == nil {
		return c, ErrDecrypt
	}
	pt, err := aead.Open(c[:0], d[headerLen:headerLen+nonceLenX], d[headerLen+nonceLenX:], mac1)
	if err != nil || len(pt) != cookieLen {
		return [cookieLen]byte{}, ErrDecrypt
	}
	return c, nil
}
