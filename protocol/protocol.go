// Package protocol holds the wire vocabulary shared by every part of Salvo: packet codes, the data header
// layout, cipher suite identifiers, key lifetime limits and the typed parse errors. PROTOCOL.md at the
// repository root is the normative description; this package is its executable form.
package protocol

import (
	"encoding/binary"
	"errors"
	"math"
	"strconv"
	"time"
)

// Code is byte 0 of every Salvo datagram.
type Code uint8

const (
	CodeClientAuthRequest  Code = 0x01 // Noise NK message 1 + encrypted login request
	CodeServerAuthResponse Code = 0x02 // Noise NK message 2 + encrypted result and tunnel settings
	CodeData               Code = 0x03 // encrypted IP packet; an empty payload is a keepalive
	CodeCookieReply        Code = 0x04 // DoS cookie for a handshake sent while the gateway is under load
	CodeDisconnect         Code = 0x05 // authenticated end of session (sealed like data)
	CodeNotice             Code = 0x06 // unauthenticated hint (wrong server key, unknown session)
)

func (c Code) String() string {
	switch c {
	case CodeClientAuthRequest:
		return "clientAuthRequest"
	case CodeServerAuthResponse:
		return "serverAuthResponse"
	case CodeData:
		return "data"
	case CodeCookieReply:
		return "cookieReply"
	case CodeDisconnect:
		return "disconnect"
	case CodeNotice:
		return "notice"
	}
	return "invalid"
}

// Parse errors. They are values (not wrapped) on the hot path so callers can compare them without
// allocation; use errors.Is when they may have been wrapped.
var (
	ErrNotEnoughData     = errors.New("protocol: notEnoughData")
	ErrInvalidPacketCode = errors.New("protocol: invalidPacketCode")
	ErrMalformed         = errors.New("protocol: malformed packet")
)

// ParseCode returns the packet code of a datagram or a typed error; it never panics.
func ParseCode(b []byte) (Code, error) {
	if len(b) == 0 {
		return 0, ErrNotEnoughData
	}
	c := Code(b[0])
	if c < CodeClientAuthRequest || c > CodeNotice {
		return c, ErrInvalidPacketCode
	}
	return c, nil
}

// Data packet layout (also used by CodeDisconnect):
//
//	0      code
//	1..3   reserved, zero
//	4..7   receiver session index, little endian
//	8..15  counter, little endian
//	16..   ciphertext || 16-byte tag
//
// The 16-byte header is the AEAD associated data and makes the payload start 16-byte aligned inside a
// buffer that begins at the header, so sealing and opening run in place.
const (
	DataHeaderLen = 16
	TagLen        = 16
	// Headroom is the space a packet buffer keeps in front of an IP packet so the data header can be
	// written without moving the payload.
	Headroom = DataHeaderLen
	// DataOverhead is what one data packet adds to an inner IP packet.
	DataOverhead = DataHeaderLen + TagLen
	// DefaultMTU is the tunnel MTU a gateway pushes unless configured: the largest inner packet whose
	// datagram fits a 1500-byte outer path over IPv6 (40-byte header, 8-byte UDP header, DataOverhead).
	DefaultMTU = 1500 - 40 - 8 - DataOverhead
	// MinDataLen is the shortest valid data datagram (a keepalive).
	MinDataLen = DataOverhead
)

// DataHeader is the cleartext part of a data or disconnect packet.
type DataHeader struct {
	Code     Code
	Receiver uint32
	Counter  uint64
}

// ParseDataHeader decodes and validates the header of a data or disconnect datagram (including the tag
// length it must be followed by).
func ParseDataHeader(b []byte) (DataHeader, error) {
	if len(b) < MinDataLen {
		return DataHeader{}, ErrNotEnoughData
	}
	c := Code(b[0])
	if c != CodeData && c != CodeDisconnect {
		return DataHeader{}, ErrInvalidPacketCode
	}
	if b[1]|b[2]|b[3] != 0 {
		return DataHeader{}, ErrMalformed
	}
	return DataHeader{
		Code:     c,
		Receiver: binary.LittleEndian.Uint32(b[4:8]),
		Counter:  binary.LittleEndian.Uint64(b[8:16]),
	}, nil
}

// PutDataHeader writes a header into b[:DataHeaderLen].
func PutDataHeader(b []byte, code Code, receiver uint32, counter uint64) {
	_ = b[DataHeaderLen-1]
	b[0] = byte(code)
	b[1], b[2], b[3] = 0, 0, 0
	binary.LittleEndian.PutUint32(b[4:8], receiver)
	binary.LittleEndian.PutUint64(b[8:16], counter)
}

// Suite identifies the AEAD that protects data packets; it is negotiated in the handshake.
type Suite uint8

const (
	SuiteChaCha20Poly1305 Suite = 1
	SuiteAES256GCM        Suite = 2
)

func (s Suite) String() string {
	switch s {
	case SuiteChaCha20Poly1305:
		return "chacha20-poly1305"
	case SuiteAES256GCM:
		return "aes-256-gcm"
	}
	return "unknown"
}

// Valid reports whether s is a suite this implementation knows.
func (s Suite) Valid() bool { return s == SuiteChaCha20Poly1305 || s == SuiteAES256GCM }

// Key lifetime limits, WireGuard's values: the initiator (client) starts a new handshake after RekeyAfter*;
// nobody sends or accepts with a key past RejectAfter*.
const (
	RekeyAfterTime      = 120 * time.Second
	RejectAfterTime     = 180 * time.Second
	RekeyAfterMessages  = uint64(1) << 60
	RejectAfterMessages = ^uint64(0) - (1 << 13) // leaves the replay window room below 2^64
	RekeyTimeout        = 5 * time.Second        // retransmit a rekey handshake after this
	// KeepaliveDefault is pushed when the gateway config sets none.
	KeepaliveDefault = 25 * time.Second
	// HandshakeTimeout is how long a client tries to log in before it gives up with a reason.
	HandshakeTimeout = 10 * time.Second
)

// Version is the protocol version carried in handshake messages. Version 2 derives the resume key from the
// handshake's secret output (version 1 derived it from the public handshake hash) and binds resumes to the
// client instance; see PROTOCOL.md. Nothing else speaks version 1, so there is no negotiation.
const Version = 2

// DisconnectReason is the one plaintext byte of an authenticated disconnect: why the sender ended the
// session, and so what the receiver should do next.
type DisconnectReason uint8

const (
	// DisconnectShutdown: the sender is stopping (client exit, gateway shutdown). A client that receives it
	// reconnects with backoff.
	DisconnectShutdown DisconnectReason = 0
	// DisconnectRevoked: the user was removed or disabled, or their password changed. The client stops.
	DisconnectRevoked DisconnectReason = 1
	// DisconnectReplaced: a newer login of the same user took this session's place (max_sessions_per_user).
	// The client stops, so two devices can never evict each other in turn.
	DisconnectReplaced DisconnectReason = 2
	// DisconnectKicked: an administrator ended the session (salvo kick). The client stops.
	DisconnectKicked DisconnectReason = 3
)

func (r DisconnectReason) String() string {
	switch r {
	case DisconnectShutdown:
		return "shutting down"
	case DisconnectRevoked:
		return "revoked"
	case DisconnectReplaced:
		return "replaced"
	case DisconnectKicked:
		return "kicked"
	}
	return "reason(" + strconv.Itoa(int(r)) + ")"
}

// Final reports whether a client that receives r must stop rather than reconnect. Unknown reasons are
// treated as a shutdown: reconnecting is the safe default for a reason this version does not know.
func (r DisconnectReason) Final() bool {
	return r == DisconnectRevoked || r == DisconnectReplaced || r == DisconnectKicked
}

// IndexOwner is which of n gateway workers owns receiver index idx: idx mod n. A gateway picks each
// session's index so that it names the worker whose socket received the login (IndexFor), and the eBPF
// classifier computes the same in the kernel to steer a session's data to that worker's socket without a
// lookup (offload/classifier checks its program against this function).
func IndexOwner(idx uint32, n int) int { return int(idx % uint32(n)) }

// IndexFor returns an index owned by worker w of n (w < n) made from the random value r: r with its
// remainder mod n replaced by w. At the top of the range, where r's block of n is cut short by 2^32, the
// block below is used: adding w would wrap around to an index another worker owns.
func IndexFor(r uint32, w, n int) uint32 {
	base := r - r%uint32(n)
	if base > math.MaxUint32-uint32(w) {
		base -= uint32(n)
	}
	return base + uint32(w)
}
