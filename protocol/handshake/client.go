package handshake

import (
	"bytes"
	crand "crypto/rand"
	"encoding/binary"
	"io"
	"strconv"
	"sync"
	"time"

	"github.com/flynn/noise"
	"golang.org/x/crypto/curve25519"
	"golang.org/x/sys/cpu"

	"github.com/salvovpn/salvo/protocol"
)

var (
	cipherSuite = noise.NewCipherSuite(noise.DH25519, noise.CipherChaChaPoly, noise.HashBLAKE2s)
	// prologue binds every handshake to the protocol version: a request of another version fails Noise.
	prologue = []byte("salvo v" + strconv.Itoa(protocol.Version))
)

// SessionKeys is what a completed handshake yields to the data plane.
type SessionKeys struct {
	Suite       protocol.Suite
	Send, Recv  [32]byte // Noise Split(): client->gateway is the first key
	LocalIndex  uint32   // index the peer puts in packets sent to us
	RemoteIndex uint32   // index we put in packets sent to the peer
	ResumeKey   [32]byte
	// Ticket is the session ticket the gateway handed out with this session (client side; zero when the
	// gateway gave none).
	Ticket Ticket
}

// ClientConfig is what a client needs to log in.
type ClientConfig struct {
	ServerPublic    Key // pinned gateway static key
	Login, Password string
	InstanceID      uint64
	Suites          []protocol.Suite // preference order; empty = DefaultSuites()
	Rand            io.Reader        // nil = crypto/rand
}

// String omits the password so that logging a config by accident does not leak it.
func (c ClientConfig) String() string {
	return "ClientConfig{ServerPublic:" + c.ServerPublic.String() + " Login:" + strconv.Quote(c.Login) +
		" Password:<redacted> InstanceID:" + strconv.FormatUint(c.InstanceID, 16) + "}"
}

// GoString keeps %#v from printing the password.
func (c ClientConfig) GoString() string { return c.String() }

// DefaultSuites prefers AES-256-GCM where the CPU accelerates it (AES-NI with carry-less multiply, or the
// ARMv8 AES instructions) and ChaCha20-Poly1305 elsewhere, where it is both faster and constant time.
func DefaultSuites() []protocol.Suite {
	if (cpu.X86.HasAES && cpu.X86.HasPCLMULQDQ) || cpu.ARM64.HasAES {
		return []protocol.Suite{protocol.SuiteAES256GCM, protocol.SuiteChaCha20Poly1305}
	}
	return []protocol.Suite{protocol.SuiteChaCha20Poly1305, protocol.SuiteAES256GCM}
}

// ClientHandshake is one pending client handshake (one request sent, waiting for the answer). It is safe for
// concurrent use.
type ClientHandshake struct {
	mu         sync.Mutex
	hs         *noise.HandshakeState // nil once a response was authenticated
	localIndex uint32
	suites     []protocol.Suite
	mac1       [macLen]byte // of our request: the AD a genuine cookieReply is bound to
	cookieAEAD cookieSealer
}

// NewLogin builds a login request (kind 1). localIndex is the sender index. cookie may be nil.
func NewLogin(cfg *ClientConfig, localIndex uint32, now time.Time, cookie *Cookie) (*ClientHandshake, []byte, error) {
	return newRequest(cfg, KindLogin, localIndex, requestProof{}, now, cookie)
}

// NewResume builds a resume request (kind 2) for an existing session (sessionIndex = gateway's index,
// resumeKey from the old SessionKeys). cfg.Password is not used.
func NewResume(cfg *ClientConfig, localIndex, sessionIndex uint32, resumeKey [32]byte, now time.Time, cookie *Cookie) (*ClientHandshake, []byte, error) {
	return newRequest(cfg, KindResume, localIndex, requestProof{sessionIndex: sessionIndex, resumeKey: &resumeKey}, now, cookie)
}

// requestProof is what a password-less request proves itself with: a resume's session and resume key, or
// a ticket.
type requestProof struct {
	sessionIndex uint32
	resumeKey    *[32]byte
	ticket       *Ticket
}

func newRequest(cfg *ClientConfig, kind Kind, localIndex uint32, p requestProof, now time.Time, cookie *Cookie) (*ClientHandshake, []byte, error) {
	if cfg == nil || cfg.ServerPublic.IsZero() || !validLogin(cfg.Login) {
		return nil, nil, ErrInvalidConfig
	}
	if kind == KindLogin && len(cfg.Password) > maxPasswd {
		return nil, nil, ErrInvalidConfig
	}
	suites := cfg.Suites
	if len(suites) == 0 {
		suites = DefaultSuites()
	}
	if len(suites) > maxSuites {
		return nil, nil, ErrInvalidConfig
	}
	for _, s := range suites {
		if !s.Valid() {
			return nil, nil, ErrInvalidConfig
		}
	}
	rnd := cfg.Rand
	if rnd == nil {
		rnd = crand.Reader
	}

	// The resume proof covers e, which flynn/noise only creates inside WriteMessage, after the payload is
	// fixed. So we draw the ephemeral private key ourselves and hand exactly those bytes to noise as its
	// random source; GenerateKeypair reads 32 bytes and derives the same public key (checked below). This
	// costs one extra base-point multiplication per request, a price paid for not depending on internals.
	var ePriv [32]byte
	defer clear(ePriv[:])
	if _, err := io.ReadFull(rnd, ePriv[:]); err != nil {
		return nil, nil, ErrRandom
	}
	ePub, err := curve25519.X25519(ePriv[:], curve25519.Basepoint)
	if err != nil {
		return nil, nil, ErrRandom
	}
	hs, err := noise.NewHandshakeState(noise.Config{
		CipherSuite: cipherSuite,
		Random:      bytes.NewReader(ePriv[:]),
		Pattern:     noise.HandshakeNK,
		Initiator:   true,
		Prologue:    prologue,
		PeerStatic:  append([]byte(nil), cfg.ServerPublic[:]...),
	})
	if err != nil {
		return nil, nil, ErrInvalidConfig
	}

	rb := requestBody{instanceID: cfg.InstanceID, kind: kind, suites: suites, login: cfg.Login}
	putTAI64N(rb.ts[:], now)
	var pw []byte
	switch kind {
	case KindLogin:
		pw = []byte(cfg.Password)
		rb.password = pw
	case KindResume:
		rb.sessionIndex = p.sessionIndex
		rb.proof = resumeProof(*p.resumeKey, ePub, rb.ts[:], cfg.InstanceID, p.sessionIndex, cfg.Login)
	case KindTicket:
		rb.ticket = p.ticket.Blob
		rb.proof = ticketProof(p.ticket.Secret, ePub, rb.ts[:], cfg.InstanceID, cfg.Login, p.ticket.Blob)
	}
	var bodyBuf [maxReqBody]byte
	body, err := appendRequestBody(bodyBuf[:0], &rb)
	clear(pw)
	if err != nil {
		clear(bodyBuf[:])
		return nil, nil, err
	}

	msg := make([]byte, 0, protocol.MaxRequestLen)
	msg = appendHeader(msg, protocol.CodeClientAuthRequest, protocol.Version, localIndex)
	msg, _, _, err = hs.WriteMessage(msg, body)
	clear(bodyBuf[:]) // the plaintext held the password or the proof
	if err != nil {
		return nil, nil, ErrRandom
	}
	if !bytes.Equal(hs.LocalEphemeral().Public, ePub) || !bytes.Equal(msg[headerLen:headerLen+keyLen], ePub) {
		return nil, nil, ErrRandom // flynn/noise did not use our ephemeral; never send an unprovable request
	}

	h := &ClientHandshake{hs: hs, localIndex: localIndex, suites: append([]protocol.Suite(nil), suites...)}
	mk := labelHash("mac1----", cfg.ServerPublic)
	h.mac1 = mac(mk[:], msg)
	msg = append(msg, h.mac1[:]...)
	var mac2 [macLen]byte
	if cookie.Valid(now) {
		mac2 = mac(cookie.value[:], msg)
	}
	msg = append(msg, mac2[:]...)
	h.cookieAEAD = newCookieAEAD(cfg.ServerPublic)
	return h, msg, nil
}

// LocalIndex is the sender index of the request: the index the gateway puts in messages sent to us.
func (h *ClientHandshake) LocalIndex() uint32 { return h.localIndex }

// ConsumeResponse parses and decrypts a serverAuthResponse. On OK it returns keys and settings. On a non-OK
// (authenticated) result it returns the Result with a nil error (e.g. BadCredentials). Malformed/forged ->
// error. A forged or corrupted response leaves the handshake pending, so the genuine one still succeeds;
// once a response authenticated, later calls return ErrHandshakeDone.
func (h *ClientHandshake) ConsumeResponse(datagram []byte) (Result, SessionKeys, Settings, error) {
	d := datagram
	if err := checkHeader(d, protocol.CodeServerAuthResponse, minResponseLen, 1<<16); err != nil {
		return 0, SessionKeys{}, Settings{}, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.hs == nil {
		return 0, SessionKeys{}, Settings{}, ErrHandshakeDone
	}
	if binary.LittleEndian.Uint32(d[4:8]) != h.localIndex {
		return 0, SessionKeys{}, Settings{}, ErrResponseMismatch
	}
	if isLowOrder(d[headerLen : headerLen+keyLen]) {
		return 0, SessionKeys{}, Settings{}, ErrDecrypt
	}
	body, cs1, cs2, err := h.hs.ReadMessage(nil, d[headerLen:])
	if err != nil || cs1 == nil || cs2 == nil {
		return 0, SessionKeys{}, Settings{}, ErrDecrypt
	}
	// Authentic from here on: whatever the body says, this handshake is over.
	rk := deriveResumeKey(cs1.UnsafeKey(), cs2.UnsafeKey())
	h.hs = nil
	if len(body) < 1 || !Result(body[0]).Valid() {
		return 0, SessionKeys{}, Settings{}, ErrMalformedBody
	}
	res := Result(body[0])
	if res != ResultOK {
		if len(body) != 1 {
			return 0, SessionKeys{}, Settings{}, ErrMalformedBody
		}
		return res, SessionKeys{}, Settings{}, nil
	}
	if len(body) < 6 {
		return 0, SessionKeys{}, Settings{}, ErrMalformedBody
	}
	suite := protocol.Suite(body[5])
	offered := false
	for _, s := range h.suites {
		offered = offered || s == suite
	}
	if !offered {
		return 0, SessionKeys{}, Settings{}, ErrMalformedBody
	}
	r := reader{b: body[6:]}
	ticket, ok := parseTicket(&r)
	if !ok {
		return 0, SessionKeys{}, Settings{}, ErrMalformedBody
	}
	st, err := decodeSettings(r.b)
	if err != nil {
		return 0, SessionKeys{}, Settings{}, err
	}
	keys := SessionKeys{
		Suite:       suite,
		Send:        cs1.UnsafeKey(),
		Recv:        cs2.UnsafeKey(),
		LocalIndex:  h.localIndex,
		RemoteIndex: binary.LittleEndian.Uint32(body[1:5]),
		ResumeKey:   rk,
		Ticket:      ticket,
	}
	return ResultOK, keys, st, nil
}

// ConsumeCookieReply opens a cookieReply for our request and returns a Cookie valid for CookieLifetime from
// now. The caller keeps it and passes it to the next request. The pending handshake is not affected.
func (h *ClientHandshake) ConsumeCookieReply(datagram []byte, now time.Time) (*Cookie, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	c, err := openCookieReply(h.cookieAEAD, datagram, h.localIndex, h.mac1[:])
	if err != nil {
		return nil, err
	}
	return &Cookie{value: c, receivedAt: now}, nil
}
