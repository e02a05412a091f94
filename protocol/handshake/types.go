package handshake

import (
	"errors"
	"strconv"
)

// Result is the first byte of a serverAuthResponse body. Every result, including failures, travels inside a
// complete Noise message 2, so the client knows the gateway itself said it.
type Result uint8

const (
	ResultOK              Result = 0
	ResultBadCredentials  Result = 1
	ResultRateLimited     Result = 2
	ResultNoAddress       Result = 3
	ResultVersionMismatch Result = 4
	ResultServerError     Result = 5
	ResultUnknownSession  Result = 6 // resume refused: the client must log in again
	ResultBusy            Result = 7 // the gateway's password-hashing budget is spent: retry with backoff
	ResultUnavailable     Result = 8 // the gateway cannot check passwords now (its user store is down): retry
)

func (r Result) String() string {
	switch r {
	case ResultOK:
		return "ok"
	case ResultBadCredentials:
		return "bad credentials"
	case ResultRateLimited:
		return "rate limited"
	case ResultNoAddress:
		return "no address left"
	case ResultVersionMismatch:
		return "version mismatch"
	case ResultServerError:
		return "server error"
	case ResultUnknownSession:
		return "unknown session"
	case ResultBusy:
		return "busy"
	case ResultUnavailable:
		return "store unavailable"
	}
	return "result(" + strconv.Itoa(int(r)) + ")"
}

// Valid reports whether r is a result code of this protocol version.
func (r Result) Valid() bool { return r <= ResultUnavailable }

// NoticeReason is byte 1 of a notice datagram.
type NoticeReason uint8

const (
	NoticeKeyMismatch    NoticeReason = 1 // mac1 did not verify: the client pinned another gateway key
	NoticeUnknownSession NoticeReason = 2 // data for a receiver index the gateway does not know
)

func (r NoticeReason) String() string {
	switch r {
	case NoticeKeyMismatch:
		return "key mismatch"
	case NoticeUnknownSession:
		return "unknown session"
	}
	return "reason(" + strconv.Itoa(int(r)) + ")"
}

// Kind is the kind of a clientAuthRequest.
type Kind uint8

const (
	KindLogin  Kind = 1 // login and password
	KindResume Kind = 2 // password-less rekey of a live session, proven with its resume key
	KindTicket Kind = 3 // password-less new session, proven with a session ticket's secret
)

func (k Kind) String() string {
	switch k {
	case KindLogin:
		return "login"
	case KindResume:
		return "resume"
	case KindTicket:
		return "ticket"
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Errors. Short datagrams and wrong codes are reported with protocol.ErrNotEnoughData and
// protocol.ErrInvalidPacketCode, nonzero reserved bytes and oversized datagrams with protocol.ErrMalformed.
// None of these errors ever carries key material, passwords or other secrets.
var (
	ErrVersion           = errors.New("handshake: unsupported protocol version")
	ErrMac1              = errors.New("handshake: mac1 does not verify (client pinned another gateway key?)")
	ErrCookieRequired    = errors.New("handshake: gateway under load, valid mac2 cookie required")
	ErrDecrypt           = errors.New("handshake: Noise message does not decrypt")
	ErrMalformedBody     = errors.New("handshake: malformed message body")
	ErrTimestampExpired  = errors.New("handshake: timestamp outside the accepted window")
	ErrReplay            = errors.New("handshake: timestamp not newer than the last accepted one (replay)")
	ErrNoCommonSuite     = errors.New("handshake: no cipher suite in common")
	ErrResponseMismatch  = errors.New("handshake: message is not for this handshake (index mismatch)")
	ErrInvalidKey        = errors.New("handshake: invalid key")
	ErrInvalidConfig     = errors.New("handshake: invalid configuration")
	ErrInvalidSettings   = errors.New("handshake: invalid tunnel settings")
	ErrInvalidResult     = errors.New("handshake: invalid result for this operation")
	ErrHandshakeDone     = errors.New("handshake: handshake already completed")
	ErrResumeNotVerified = errors.New("handshake: resume or ticket request accepted without a verified proof")
	ErrInvalidTicket     = errors.New("handshake: invalid session ticket")
	ErrRandom            = errors.New("handshake: random source failed")
)
