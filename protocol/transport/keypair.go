package transport

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/salvovpn/salvo/protocol"
	"github.com/salvovpn/salvo/protocol/replay"
)

// MaxPlaintextLen is the largest payload one datagram can carry: 16 header bytes, the payload and
// the 16-byte tag must fit the 16-bit UDP length.
const MaxPlaintextLen = 65535 - protocol.DataOverhead

// Errors returned by NewKeypair and the seal functions. They are plain values so hot paths can
// compare them without allocating.
var (
	ErrKeyExpired     = errors.New("transport: key expired (age or message limit)")
	ErrBufferTooSmall = errors.New("transport: buffer too small for header, payload and tag")
	ErrPacketTooLarge = errors.New("transport: payload exceeds MaxPlaintextLen")
	ErrBatchMismatch  = errors.New("transport: bufs and sizes differ in length")
	ErrInvalidSuite   = errors.New("transport: unknown cipher suite")
	ErrInvalidCode    = errors.New("transport: only data and disconnect packets are sealed")
	ErrIdenticalKeys  = errors.New("transport: send and receive keys are identical")
)

// fastPathLimit is where counter reservation switches from an unconditional atomic add to a
// compare-and-swap loop that cannot overshoot RejectAfterMessages (see doc.go).
const fastPathLimit = uint64(1) << 62

// Keypair holds one session's two directional AEADs, its indexes, its send counter and its replay
// window. All methods are safe for concurrent use.
type Keypair struct {
	// sendCounter is the next counter to use (= number of nonces consumed). It is written by every
	// sealing goroutine, so it sits on its own cache line away from the read-only fields.
	sendCounter atomic.Uint64
	_           [56]byte
	received    atomic.Uint64 // packets opened OK
	_           [56]byte

	// Read-only after NewKeypair.
	send        cipher.AEAD
	recv        cipher.AEAD
	created     time.Time
	localIndex  uint32
	remoteIndex uint32
	suite       protocol.Suite
	initiator   bool
	_           [64]byte

	window replay.Window // written by the receive path only
}

// NewKeypair builds a keypair from the two directional keys of a handshake. send protects what this
// side sends (the first Split key for the initiator), recv what it receives. localIndex is the index
// the peer puts in packets sent to us; remoteIndex is the one we put in packets to the peer.
func NewKeypair(suite protocol.Suite, send, recv [32]byte, localIndex, remoteIndex uint32, initiator bool, created time.Time) (*Keypair, error) {
	if send == recv {
		// Noise Split never yields equal keys; equal keys would let an attacker reflect our own
		// packets back at us when the indexes also match.
		return nil, ErrIdenticalKeys
	}
	s, err := newAEAD(suite, send[:])
	if err != nil {
		return nil, err
	}
	r, err := newAEAD(suite, recv[:])
	if err != nil {
		return nil, err
	}
	return &Keypair{
		send:        s,
		recv:        r,
		created:     created,
		localIndex:  localIndex,
		remoteIndex: remoteIndex,
		suite:       suite,
		initiator:   initiator,
	}, nil
}

func newAEAD(suite protocol.Suite, key []byte) (cipher.AEAD, error) {
	switch suite {
	case protocol.SuiteAES256GCM:
		block, err := aes.NewCipher(key)
		if err != nil {
			return nil, err
		}
		return cipher.NewGCM(block)
	case protocol.SuiteChaCha20Poly1305:
		return chacha20poly1305.New(key)
	}
	return nil, ErrInvalidSuite
}

// LocalIndex is the receiver index peers put in packets for this keypair.
func (kp *Keypair) LocalIndex() uint32 { return kp.localIndex }

// RemoteIndex is the receiver index this keypair writes into the packets it seals.
func (kp *Keypair) RemoteIndex() uint32 { return kp.remoteIndex }

// Suite is the negotiated AEAD.
func (kp *Keypair) Suite() protocol.Suite { return kp.suite }

// Created is when the handshake that produced the keys completed.
func (kp *Keypair) Created() time.Time { return kp.created }

// Expired reports whether the key is too old to send or accept anything.
func (kp *Keypair) Expired(now time.Time) bool {
	return now.Sub(kp.created) >= protocol.RejectAfterTime
}

// NeedsRekey reports whether the initiator should start a new handshake: the key is RekeyAfterTime
// old or RekeyAfterMessages packets were sent. The responder never initiates, so it always gets false.
func (kp *Keypair) NeedsRekey(now time.Time) bool {
	if !kp.initiator {
		return false
	}
	sent, _ := kp.Stats()
	return now.Sub(kp.created) >= protocol.RekeyAfterTime || sent >= protocol.RekeyAfterMessages
}

// Stats returns the number of counters consumed by sealing (at most RejectAfterMessages) and the
// number of packets opened successfully.
func (kp *Keypair) Stats() (sent, received uint64) {
	sent = kp.sendCounter.Load()
	if sent > protocol.RejectAfterMessages {
		sent = protocol.RejectAfterMessages
	}
	return sent, kp.received.Load()
}

// noncePool recycles nonce buffers. A stack array would be better, but passing it to an interface
// method (cipher.AEAD) makes it escape, i.e. one heap allocation per packet; a pooled buffer costs a
// few ns per call (per batch for the batch functions) and no allocation in steady state. Bytes 0..3
// stay zero forever: only bytes 4..11 are ever written.
var noncePool = sync.Pool{New: func() any { return new([chacha20poly1305.NonceSize]byte) }}

// reserve takes n consecutive send counters and returns the first, or false if they would reach
// RejectAfterMessages. See doc.go for why the counter can never wrap.
func (kp *Keypair) reserve(n uint64) (uint64, bool) {
	const limit = protocol.RejectAfterMessages
	if kp.sendCounter.Load() < fastPathLimit {
		next := kp.sendCounter.Add(n)
		first := next - n
		// Concurrent adds may carry the counter a little past fastPathLimit, never near limit, so
		// this only fails for an absurd n; the check keeps the property local and obvious.
		if next >= first && next <= limit {
			return first, true
		}
		return 0, false
	}
	for {
		old := kp.sendCounter.Load()
		if old > limit || limit-old < n {
			return 0, false
		}
		if kp.sendCounter.CompareAndSwap(old, old+n) {
			return old, true
		}
	}
}

// checkBuf validates one plaintext size against its buffer.
func checkBuf(b []byte, n int) error {
	if n > MaxPlaintextLen {
		return ErrPacketTooLarge
	}
	if n < 0 || cap(b) < n+protocol.DataOverhead {
		return ErrBufferTooSmall
	}
	return nil
}

// sealOne writes the header and seals b[16:16+n] in place; the buffer was validated.
func (kp *Keypair) sealOne(nonce *[chacha20poly1305.NonceSize]byte, code protocol.Code, b []byte, n int, ctr uint64) int {
	m := n + protocol.DataOverhead
	b = b[:m]
	protocol.PutDataHeader(b, code, kp.remoteIndex, ctr)
	binary.LittleEndian.PutUint64(nonce[4:], ctr)
	h := protocol.DataHeaderLen
	// dst b[16:16] aliases the plaintext exactly (allowed by cipher.AEAD) and has room for the tag,
	// so Seal neither copies nor allocates.
	kp.send.Seal(b[h:h], nonce[:], b[h:h+n], b[:h])
	return m
}

// SealBatch seals a vector of data packets. bufs[i] holds the plaintext at bufs[i][16:16+sizes[i]]
// with cap(bufs[i]) >= sizes[i]+32; on success sizes[i] becomes the datagram length and the datagram
// is bufs[i][:sizes[i]]. The counters of the whole batch are reserved with one atomic operation.
// On any error nothing is sealed and no buffer is modified.
func (kp *Keypair) SealBatch(bufs [][]byte, sizes []int, now time.Time) error {
	if len(bufs) != len(sizes) {
		return ErrBatchMismatch
	}
	if len(bufs) == 0 {
		return nil
	}
	for i, b := range bufs {
		if err := checkBuf(b, sizes[i]); err != nil {
			return err
		}
	}
	if kp.Expired(now) {
		return ErrKeyExpired
	}
	first, ok := kp.reserve(uint64(len(bufs)))
	if !ok {
		return ErrKeyExpired
	}
	nonce := noncePool.Get().(*[chacha20poly1305.NonceSize]byte)
	for i, b := range bufs {
		sizes[i] = kp.sealOne(nonce, protocol.CodeData, b, sizes[i], first+uint64(i))
	}
	noncePool.Put(nonce)
	return nil
}

// Seal seals one packet of the given code (CodeData, or CodeDisconnect with its reason byte; n=0
// data is a keepalive) laid out as for SealBatch, and returns the datagram length.
func (kp *Keypair) Seal(code protocol.Code, b []byte, n int, now time.Time) (int, error) {
	if code != protocol.CodeData && code != protocol.CodeDisconnect {
		return 0, ErrInvalidCode
	}
	if err := checkBuf(b, n); err != nil {
		return 0, err
	}
	if kp.Expired(now) {
		return 0, ErrKeyExpired
	}
	ctr, ok := kp.reserve(1)
	if !ok {
		return 0, ErrKeyExpired
	}
	nonce := noncePool.Get().(*[chacha20poly1305.NonceSize]byte)
	m := kp.sealOne(nonce, code, b, n, ctr)
	noncePool.Put(nonce)
	return m, nil
}

// Verdict says what happened to a received datagram.
type Verdict uint8

const (
	// Unset is the zero value: a verdict slot the batch did not process. It is deliberately not OK.
	Unset     Verdict = iota
	OK                // authentic and fresh; the plaintext is ready
	BadHeader         // too short, not data/disconnect, reserved bytes not zero, bad size
	WrongKey          // receiver index is not this keypair's LocalIndex
	BadMAC            // authentication failed (forged, corrupted, or another key)
	Replay            // authentic, but already received or older than the replay window
	Expired           // key older than RejectAfterTime, or counter >= RejectAfterMessages
)

func (v Verdict) String() string {
	switch v {
	case Unset:
		return "unset"
	case OK:
		return "ok"
	case BadHeader:
		return "badHeader"
	case WrongKey:
		return "wrongKey"
	case BadMAC:
		return "badMAC"
	case Replay:
		return "replay"
	case Expired:
		return "expired"
	}
	return "invalid"
}

// Open parses the data header of the datagram b and opens b in place (see OpenHeader); code is returned
// whenever the header parsed, even if v is not OK.
func (kp *Keypair) Open(b []byte, now time.Time) (code protocol.Code, plaintextLen int, v Verdict) {
	hdr, err := protocol.ParseDataHeader(b)
	if err != nil {
		return 0, 0, BadHeader
	}
	plaintextLen, v = kp.OpenHeader(hdr, b, now)
	return hdr.Code, plaintextLen, v
}

// OpenHeader opens the datagram b in place, whose data header the caller has parsed into hdr (a receive
// loop parses it once, to find the keypair by hdr.Receiver), and returns the plaintext length (plaintext
// at b[16:16+plaintextLen]). The checks after the header, in PROTOCOL.md's order: receiver index, key age
// and counter limit (before any cryptography: a dead key spends no AEAD work), tag, replay window.
func (kp *Keypair) OpenHeader(hdr protocol.DataHeader, b []byte, now time.Time) (plaintextLen int, v Verdict) {
	switch {
	case hdr.Receiver != kp.localIndex:
		return 0, WrongKey
	case kp.Expired(now) || hdr.Counter >= protocol.RejectAfterMessages:
		// No honest sender uses such a counter; refuse before spending an AEAD on it.
		return 0, Expired
	}
	nonce := noncePool.Get().(*[chacha20poly1305.NonceSize]byte)
	binary.LittleEndian.PutUint64(nonce[4:], hdr.Counter)
	h := protocol.DataHeaderLen
	_, err := kp.recv.Open(b[h:h], nonce[:], b[h:], b[:h])
	noncePool.Put(nonce)
	if err != nil {
		return 0, BadMAC
	}
	// Only now, with the tag verified, may the counter move the window.
	if !kp.window.Check(hdr.Counter, protocol.RejectAfterMessages) {
		return 0, Replay
	}
	kp.received.Add(1)
	return len(b) - protocol.DataOverhead, OK
}
