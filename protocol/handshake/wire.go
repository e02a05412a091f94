package handshake

import (
	"encoding/binary"
	"time"

	"github.com/salvovpn/salvo/protocol"
)

// The message sizes are protocol's (protocol/sizes.go); these are their short names in this package.
const (
	headerLen      = protocol.HandshakeHeaderLen
	keyLen         = protocol.KeyLen
	macLen         = protocol.MacLen
	tagLen         = protocol.TagLen
	tai64nLen      = protocol.TAI64NLen
	proofLen       = protocol.ProofLen
	maxTicketLen   = protocol.MaxTicketLen
	secretLen      = protocol.TicketSecretLen
	maxSuites      = protocol.MaxSuites
	maxLogin       = protocol.MaxLoginLen
	maxPasswd      = protocol.MaxPasswordLen
	cookieLen      = protocol.CookieLen
	nonceLenX      = protocol.CookieNonceLen
	noticeLen      = protocol.NoticeLen
	minResponseLen = protocol.MinResponseLen
	maxReqBody     = protocol.MaxRequestBodyLen
)

// reader is a bounds-checked cursor over hostile bytes: every read past the end sets bad and yields zeros,
// so decoders check once at the end instead of before every field and can never index out of range.
type reader struct {
	b   []byte
	bad bool
}

func (r *reader) take(n int) []byte {
	if r.bad || n < 0 || len(r.b) < n {
		r.bad = true
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) u8() byte {
	if v := r.take(1); v != nil {
		return v[0]
	}
	return 0
}

func (r *reader) u16() uint16 {
	if v := r.take(2); v != nil {
		return binary.LittleEndian.Uint16(v)
	}
	return 0
}

func (r *reader) u32() uint32 {
	if v := r.take(4); v != nil {
		return binary.LittleEndian.Uint32(v)
	}
	return 0
}

func (r *reader) u64() uint64 {
	if v := r.take(8); v != nil {
		return binary.LittleEndian.Uint64(v)
	}
	return 0
}

// done reports whether everything parsed and nothing is left over; trailing bytes are refused so that one
// message has exactly one encoding.
func (r *reader) done() bool { return !r.bad && len(r.b) == 0 }

// putTAI64N writes the 12-byte TAI64N label of t. Big endian on purpose (the TAI64N convention), which also
// makes bytes.Compare order timestamps correctly.
func putTAI64N(dst []byte, t time.Time) {
	binary.BigEndian.PutUint64(dst[0:8], uint64(t.Unix())+1<<62)
	binary.BigEndian.PutUint32(dst[8:12], uint32(t.Nanosecond()))
}

// parseTAI64N decodes a TAI64N label; labels outside the representable range (before 1970 is fine in TAI64
// but never sent by a sane client) or with nanoseconds >= 1e9 are malformed.
func parseTAI64N(b []byte) (time.Time, bool) {
	if len(b) != tai64nLen {
		return time.Time{}, false
	}
	sec := binary.BigEndian.Uint64(b[0:8])
	ns := binary.BigEndian.Uint32(b[8:12])
	if sec < 1<<62 || sec >= 1<<63 || ns >= 1e9 {
		return time.Time{}, false
	}
	return time.Unix(int64(sec-1<<62), int64(ns)), true
}

// putHeader writes code, version, reserved zeros and an index: the common 8-byte header of messages 0x01,
// 0x02 and (without version) 0x04.
func appendHeader(b []byte, code protocol.Code, version byte, index uint32) []byte {
	b = append(b, byte(code), version, 0, 0)
	return binary.LittleEndian.AppendUint32(b, index)
}

// checkHeader does the cheap common checks in PROTOCOL.md order: empty, code, version, then the length bounds,
// then reserved bytes.
func checkHeader(d []byte, code protocol.Code, minLen, maxLen int) error {
	if len(d) == 0 {
		return protocol.ErrNotEnoughData
	}
	if protocol.Code(d[0]) != code {
		return protocol.ErrInvalidPacketCode
	}
	if len(d) >= 2 && d[1] != protocol.Version {
		return ErrVersion
	}
	if len(d) < minLen {
		return protocol.ErrNotEnoughData
	}
	if len(d) > maxLen {
		return protocol.ErrMalformed
	}
	if d[2]|d[3] != 0 {
		return protocol.ErrMalformed
	}
	return nil
}

// validLogin accepts 1..64 bytes of UTF-8 without control characters. Stricter than "UTF-8 bytes" in
// PROTOCOL.md on purpose: logins end up in gateway logs and user stores, where control bytes (newlines,
// escapes) only serve log injection.
func validLogin(s string) bool {
	if len(s) < 1 || len(s) > maxLogin {
		return false
	}
	for _, r := range s {
		if r == 0xfffd || r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			// 0xfffd is also what range yields for invalid UTF-8; a literal U+FFFD in a login is not useful.
			return false
		}
	}
	return true
}

// requestBody is the plaintext of a clientAuthRequest's Noise payload.
type requestBody struct {
	ts           [tai64nLen]byte
	instanceID   uint64
	kind         Kind
	suites       []protocol.Suite
	login        string
	password     []byte // KindLogin
	sessionIndex uint32 // KindResume
	ticket       []byte // KindTicket
	proof        [proofLen]byte
}

func appendRequestBody(b []byte, rb *requestBody) ([]byte, error) {
	if len(rb.suites) < 1 || len(rb.suites) > maxSuites || !validLogin(rb.login) {
		return nil, ErrInvalidConfig
	}
	b = append(b, rb.ts[:]...)
	b = binary.LittleEndian.AppendUint64(b, rb.instanceID)
	b = append(b, byte(rb.kind), byte(len(rb.suites)))
	for _, s := range rb.suites {
		b = append(b, byte(s))
	}
	b = append(b, byte(len(rb.login)))
	b = append(b, rb.login...)
	switch rb.kind {
	case KindLogin:
		if len(rb.password) > maxPasswd {
			return nil, ErrInvalidConfig
		}
		b = append(b, byte(len(rb.password)))
		b = append(b, rb.password...)
	case KindResume:
		b = binary.LittleEndian.AppendUint32(b, rb.sessionIndex)
		b = append(b, rb.proof[:]...)
	case KindTicket:
		if len(rb.ticket) < 1 || len(rb.ticket) > maxTicketLen {
			return nil, ErrInvalidConfig
		}
		b = append(b, byte(len(rb.ticket)))
		b = append(b, rb.ticket...)
		b = append(b, rb.proof[:]...)
	default:
		return nil, ErrInvalidConfig
	}
	return b, nil
}

// parseRequestBody decodes a request body. The password is copied out of b so the caller can wipe b. Suite
// bytes this implementation does not know are kept: they are simply never chosen (room for future suites).
func parseRequestBody(b []byte) (requestBody, error) {
	var rb requestBody
	r := reader{b: b}
	copy(rb.ts[:], r.take(tai64nLen))
	rb.instanceID = r.u64()
	rb.kind = Kind(r.u8())
	n := int(r.u8())
	if r.bad || n < 1 || n > maxSuites || (rb.kind != KindLogin && rb.kind != KindResume && rb.kind != KindTicket) {
		return requestBody{}, ErrMalformedBody
	}
	sb := r.take(n)
	ll := int(r.u8())
	if r.bad || ll < 1 || ll > maxLogin {
		return requestBody{}, ErrMalformedBody
	}
	login := r.take(ll)
	if r.bad || !validLogin(string(login)) {
		return requestBody{}, ErrMalformedBody
	}
	switch rb.kind {
	case KindLogin:
		pl := int(r.u8())
		if pl > maxPasswd {
			return requestBody{}, ErrMalformedBody
		}
		pw := r.take(pl)
		if !r.done() {
			return requestBody{}, ErrMalformedBody
		}
		rb.password = append(make([]byte, 0, pl), pw...)
	case KindResume:
		rb.sessionIndex = r.u32()
		copy(rb.proof[:], r.take(proofLen))
		if !r.done() {
			return requestBody{}, ErrMalformedBody
		}
	case KindTicket:
		tl := int(r.u8())
		t := r.take(tl)
		copy(rb.proof[:], r.take(proofLen))
		if tl < 1 || !r.done() {
			return requestBody{}, ErrMalformedBody
		}
		rb.ticket = append(make([]byte, 0, tl), t...)
	}
	rb.suites = make([]protocol.Suite, n)
	for i, s := range sb {
		rb.suites[i] = protocol.Suite(s)
	}
	rb.login = string(login)
	return rb, nil
}

// NewNotice returns a notice datagram.
func NewNotice(reason NoticeReason, index uint32) []byte {
	return AppendNotice(make([]byte, 0, noticeLen), reason, index)
}

// AppendNotice appends a notice datagram to dst.
func AppendNotice(dst []byte, reason NoticeReason, index uint32) []byte {
	dst = append(dst, byte(protocol.CodeNotice), byte(reason), 0, 0)
	return binary.LittleEndian.AppendUint32(dst, index)
}

// ParseNotice decodes a notice. Notices are unauthenticated: use them only to fail or re-login sooner, never
// to tear down a working session.
func ParseNotice(datagram []byte) (reason NoticeReason, index uint32, err error) {
	d := datagram
	if len(d) == 0 {
		return 0, 0, protocol.ErrNotEnoughData
	}
	if protocol.Code(d[0]) != protocol.CodeNotice {
		return 0, 0, protocol.ErrInvalidPacketCode
	}
	if len(d) < noticeLen {
		return 0, 0, protocol.ErrNotEnoughData
	}
	if len(d) > noticeLen || d[2]|d[3] != 0 {
		return 0, 0, protocol.ErrMalformed
	}
	reason = NoticeReason(d[1])
	if reason != NoticeKeyMismatch && reason != NoticeUnknownSession {
		return 0, 0, protocol.ErrMalformed
	}
	return reason, binary.LittleEndian.Uint32(d[4:8]), nil
}
