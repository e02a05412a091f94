package handshake

import (
	"crypto/hmac"
	crand "crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"hash"
	"io"
	"strings"
	"sync"

	"golang.org/x/crypto/blake2s"
	"golang.org/x/crypto/curve25519"
)

// Key is a Curve25519 key, public or private.
type Key [32]byte

// String returns the standard base64 encoding. Careful: for a private key this is the secret itself; a
// StaticKeypair redacts its private half when formatted.
func (k Key) String() string { return base64.StdEncoding.EncodeToString(k[:]) }

// IsZero reports whether k is all zeros (an unset key).
func (k Key) IsZero() bool { return k == Key{} }

// ParseKey decodes a standard base64 key of exactly 32 bytes. The error never repeats the input, which may
// be a private key.
func ParseKey(s string) (Key, error) {
	var k Key
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil || len(b) != len(k) {
		clear(b)
		return Key{}, ErrInvalidKey
	}
	copy(k[:], b)
	clear(b)
	return k, nil
}

// StaticKeypair is the gateway's long-term key pair.
type StaticKeypair struct{ Private, Public Key }

// String shows only the public half so that a stray %v in a log line cannot leak the private key.
func (kp StaticKeypair) String() string {
	return "StaticKeypair{Public:" + kp.Public.String() + " Private:<redacted>}"
}

// GoString keeps %#v from printing the private key as well.
func (kp StaticKeypair) GoString() string { return kp.String() }

// GenerateKeypair creates a clamped Curve25519 key pair from rand (crypto/rand when nil).
func GenerateKeypair(rand io.Reader) (StaticKeypair, error) {
	if rand == nil {
		rand = crand.Reader
	}
	var kp StaticKeypair
	if _, err := io.ReadFull(rand, kp.Private[:]); err != nil {
		return StaticKeypair{}, ErrRandom
	}
	clamp(&kp.Private)
	pub, err := PublicFromPrivate(kp.Private)
	if err != nil {
		return StaticKeypair{}, err
	}
	kp.Public = pub
	return kp, nil
}

// PublicFromPrivate derives the public key. An all-zero private key is refused as "not configured".
func PublicFromPrivate(priv Key) (Key, error) {
	if priv.IsZero() {
		return Key{}, ErrInvalidKey
	}
	out, err := curve25519.X25519(priv[:], curve25519.Basepoint)
	if err != nil || len(out) != 32 {
		return Key{}, ErrInvalidKey
	}
	var pub Key
	copy(pub[:], out)
	return pub, nil
}

func clamp(k *Key) {
	k[0] &= 248
	k[31] = (k[31] & 127) | 64
}

// lowOrderProbe is an arbitrary fixed clamped scalar. X25519 with any clamped scalar yields all zeros exactly
// when the peer point has no prime-order component, which is the condition under which flynn/noise's DH
// fails; see isLowOrder.
var lowOrderProbe = [32]byte{0x40, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 0x5f}

// isLowOrder reports whether a peer ephemeral would make the Noise DH fail. The client checks this before
// ReadMessage because flynn/noise returns a DH error without rolling its hash state back, so a single forged
// response with a low-order point would otherwise poison the pending handshake.
func isLowOrder(pub []byte) bool {
	_, err := curve25519.X25519(lowOrderProbe[:], pub)
	return err != nil
}

// labelHash returns HASH(label || pub); used for the mac1 key ("mac1----") and the cookie AEAD key ("cookie--").
func labelHash(label string, pub Key) [32]byte {
	h, _ := blake2s.New256(nil) // cannot fail without a key
	h.Write([]byte(label))
	h.Write(pub[:])
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// mac is keyed BLAKE2s-128 over the concatenation of parts. key must be 1..32 bytes (always true for the
// fixed-size keys used here); on an impossible error it returns zeros, which never match a real MAC.
func mac(key []byte, parts ...[]byte) [16]byte {
	var out [16]byte
	h, err := blake2s.New128(key)
	if err != nil {
		return out
	}
	for _, p := range parts {
		h.Write(p)
	}
	h.Sum(out[:0])
	return out
}

// macPool hands out keyed BLAKE2s-128 states for one fixed key, so the check a gateway runs on every login
// datagram before anything else (mac1) allocates nothing: a pooled state is reset to its keyed start and
// summed into its own buffer.
type macPool struct{ p sync.Pool }

type macState struct {
	h   hash.Hash
	out [macLen]byte
}

func newMacPool(key [32]byte) *macPool {
	mp := &macPool{}
	mp.p.New = func() any {
		h, _ := blake2s.New128(key[:]) // cannot fail: the key is 32 bytes
		return &macState{h: h}
	}
	return mp
}

// verify reports in constant time whether want is the MAC of msg.
func (mp *macPool) verify(msg, want []byte) bool {
	st := mp.p.Get().(*macState)
	st.h.Reset()
	st.h.Write(msg)
	ok := subtle.ConstantTimeCompare(st.h.Sum(st.out[:0]), want) == 1
	mp.p.Put(st)
	return ok
}

func newBlake2s256() hash.Hash {
	h, _ := blake2s.New256(nil)
	return h
}

// hmacBlake2s is HMAC (RFC 2104) instantiated with BLAKE2s-256, as PROTOCOL.md names it.
func hmacBlake2s(key []byte, parts ...[]byte) [32]byte {
	m := hmac.New(newBlake2s256, key)
	for _, p := range parts {
		m.Write(p)
	}
	var out [32]byte
	m.Sum(out[:0])
	return out
}

// Labels of the keys and proofs derived here. They carry the protocol version so that a key of one version
// can never verify as a key of another.
const (
	resumeKeyLabel   = "salvo v2 resume key"
	resumeProofLabel = "salvo v2 resume proof"
)

// deriveResumeKey is HMAC-BLAKE2s(key = k1 || k2, "salvo v2 resume key"), k1 and k2 being the two cipher keys
// that Noise's Split() returned for this handshake. They come from the chaining key after the ee DH, so only
// the two ends of the handshake know them. Version 1 keyed this HMAC with the handshake hash, which is built
// from public values only (PROTOCOL.md, "What an observer can compute"): anyone who saw the handshake could
// compute it. HMAC is a PRF, so the resume key reveals nothing about the traffic keys it came from.
func deriveResumeKey(k1, k2 [32]byte) [32]byte {
	var key [64]byte
	copy(key[:32], k1[:])
	copy(key[32:], k2[:])
	defer clear(key[:])
	return hmacBlake2s(key[:], []byte(resumeKeyLabel))
}

// resumeProof is HMAC-BLAKE2s(resume key, label || e || timestamp || instance || session index || login).
// The ephemeral key ties the proof to this handshake, so it cannot be lifted into another one; the timestamp
// is what replay protection checks; instance, session index and login bind it to the one session and client
// instance it may resume, so a proof can only ever rekey the session whose key it was made with.
func resumeProof(resumeKey [32]byte, e, ts []byte, instance uint64, sessionIndex uint32, login string) [32]byte {
	var ids [12]byte
	binary.LittleEndian.PutUint64(ids[0:8], instance)
	binary.LittleEndian.PutUint32(ids[8:12], sessionIndex)
	return hmacBlake2s(resumeKey[:], []byte(resumeProofLabel), e, ts, ids[:], []byte(login))
}
