package handshake

import (
	"crypto/subtle"
	"encoding/binary"
	"strconv"
	"time"
)

// Ticket is a session ticket (PROTOCOL.md, "Session tickets"): what lets a client start a new session
// without its password, after the gateway lost the old one (a restart) or on another gateway that shares
// the ticket key. The gateway hands one out in every successful response.
//
// Blob is opaque to the client: the gateway sealed what it needs (user, instance, lease, expiry, and
// Secret) under its ticket key. Secret travels only inside the encrypted response, never in a request: a
// ticket request carries a proof under it instead, so a copy of the blob alone (lifted from a request by
// whoever later steals the gateway's static key) starts nothing.
type Ticket struct {
	Blob     []byte
	Secret   [secretLen]byte
	Lifetime time.Duration // from its receipt; whole seconds on the wire
}

// IsZero reports whether t holds no ticket.
func (t *Ticket) IsZero() bool { return t == nil || len(t.Blob) == 0 }

// String omits the secret.
func (t Ticket) String() string {
	return "Ticket{Blob:" + strconv.Itoa(len(t.Blob)) + " bytes Secret:<redacted> Lifetime:" + t.Lifetime.String() + "}"
}

// GoString keeps %#v from printing the secret.
func (t Ticket) GoString() string { return t.String() }

// maxTicketLifetime bounds what a response may promise (the gateway's own bound is much shorter).
const maxTicketLifetime = 30 * 24 * time.Hour

// appendTicket writes the ticket part of an OK response body: a 1-byte blob length, 0 for no ticket, else
// the blob, the secret and the lifetime in seconds (4 bytes).
func appendTicket(b []byte, t *Ticket) ([]byte, error) {
	if t.IsZero() {
		return append(b, 0), nil
	}
	secs := t.Lifetime / time.Second
	if len(t.Blob) > maxTicketLen || secs < 1 || t.Lifetime > maxTicketLifetime {
		return nil, ErrInvalidTicket
	}
	b = append(b, byte(len(t.Blob)))
	b = append(b, t.Blob...)
	b = append(b, t.Secret[:]...)
	return binary.LittleEndian.AppendUint32(b, uint32(secs)), nil
}

// parseTicket reads the ticket part of an OK response body from r.
func parseTicket(r *reader) (Ticket, bool) {
	n := int(r.u8())
	if n == 0 {
		return Ticket{}, !r.bad
	}
	var t Ticket
	t.Blob = append([]byte(nil), r.take(n)...)
	copy(t.Secret[:], r.take(secretLen))
	secs := time.Duration(r.u32())
	t.Lifetime = secs * time.Second
	if r.bad || secs < 1 || t.Lifetime > maxTicketLifetime {
		return Ticket{}, false
	}
	return t, true
}

// ticketProofLabel keeps a ticket proof from ever verifying as a resume proof and back.
const ticketProofLabel = "salvo v2 ticket proof"

// ticketProof is HMAC-BLAKE2s(ticket secret, label || e || timestamp || instance || login || blob): like a
// resume proof it is bound to this handshake's ephemeral key and timestamp, the client instance and the
// login, and also to the one ticket it proves.
func ticketProof(secret [secretLen]byte, e, ts []byte, instance uint64, login string, blob []byte) [32]byte {
	var id [8]byte
	binary.LittleEndian.PutUint64(id[:], instance)
	return hmacBlake2s(secret[:], []byte(ticketProofLabel), e, ts, id[:], []byte(login), blob)
}

// NewTicketRequest builds a ticket request (kind 3): a new session for cfg's login and instance, proven
// with t instead of the password. cfg.Password is not used.
func NewTicketRequest(cfg *ClientConfig, localIndex uint32, t Ticket, now time.Time, cookie *Cookie) (*ClientHandshake, []byte, error) {
	if t.IsZero() || len(t.Blob) > maxTicketLen {
		return nil, nil, ErrInvalidTicket
	}
	return newRequest(cfg, KindTicket, localIndex, requestProof{ticket: &t}, now, cookie)
}

// VerifyTicket checks the proof of a KindTicket request against the secret the gateway found in its
// ticket (constant time). The engine opens the ticket first and checks that it names this request's login
// and instance.
func (req *Request) VerifyTicket(secret [secretLen]byte) bool {
	if req == nil || req.Kind != KindTicket {
		return false
	}
	want := ticketProof(secret, req.e[:], req.ts[:], req.InstanceID, req.Login, req.Ticket)
	ok := subtle.ConstantTimeCompare(want[:], req.proof[:]) == 1
	req.verified = ok
	return ok
}
