package handshake

import (
	"bytes"
	crand "crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"io"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/flynn/noise"

	"github.com/salvovpn/salvo/protocol"
)

// TimestampWindow is how far a request's timestamp may be from the gateway's clock, either way.
const TimestampWindow = 3 * time.Minute

// minPruneAt is the replay map size at which the first prune runs; later prunes run when the map has doubled
// since the previous one, which keeps pruning amortised O(1) per Accept.
const minPruneAt = 1024

// Server answers handshakes for one gateway static key. It is safe for concurrent use by many goroutines.
type Server struct {
	static     StaticKeypair
	suites     []protocol.Suite
	rand       io.Reader
	mac1       *macPool
	cookieAEAD cookieSealer
	cookies    cookieJar

	mu      sync.Mutex
	replay  map[replayKey][tai64nLen]byte // last accepted timestamp per (login, instance)
	floor   [tai64nLen]byte               // newest timestamp ever pruned: nothing at or below it is accepted
	pruneAt int
}

type replayKey struct {
	login    string
	instance uint64
}

// lockedReader serialises a caller-supplied random source, which need not be safe for concurrent use.
type lockedReader struct {
	mu sync.Mutex
	r  io.Reader
}

func (l *lockedReader) Read(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.r.Read(p)
}

// NewServer creates a server for static. suites lists what the gateway supports (empty = both known
// suites; unknown values are ignored). rand nil = crypto/rand. If static.Public is zero it is derived.
func NewServer(static StaticKeypair, suites []protocol.Suite, rand io.Reader) *Server {
	if static.Public.IsZero() {
		static.Public, _ = PublicFromPrivate(static.Private) // a zero private key leaves a server that answers nothing
	}
	var sup []protocol.Suite
	for _, s := range suites {
		if s.Valid() {
			sup = append(sup, s)
		}
	}
	if len(sup) == 0 {
		sup = []protocol.Suite{protocol.SuiteChaCha20Poly1305, protocol.SuiteAES256GCM}
	}
	if rand == nil {
		rand = crand.Reader
	} else {
		rand = &lockedReader{r: rand}
	}
	return &Server{
		static:     static,
		suites:     sup,
		rand:       rand,
		mac1:       newMacPool(labelHash("mac1----", static.Public)),
		cookieAEAD: newCookieAEAD(static.Public),
		replay:     make(map[replayKey][tai64nLen]byte),
		pruneAt:    minPruneAt,
	}
}

// Request is a decrypted, fresh, not-yet-authenticated request. It is meant for one goroutine: the engine
// checks the credentials (or VerifyResume) and then calls Accept or Reject exactly once.
type Request struct {
	Kind         Kind
	Login        string
	Password     []byte // KindLogin only; call Wipe when done (Accept and Reject also wipe it)
	InstanceID   uint64
	Timestamp    time.Time
	Suites       []protocol.Suite // the client's preference order, unknown values included
	SenderIndex  uint32
	SessionIndex uint32 // KindResume: the gateway index of the session to resume
	Ticket       []byte // KindTicket: the ticket blob, to be opened by the engine
	// SourceProven is set when the request carried a valid mac2: a cookie the gateway sent to this source
	// address and port within the last 2 to 4 minutes. Only a sender that receives packets at that address
	// can have it, so a spoofed source never has it.
	SourceProven bool

	hs       *noise.HandshakeState // nil once answered
	ts       [tai64nLen]byte
	e        [keyLen]byte
	proof    [proofLen]byte
	mac1     [macLen]byte
	src      netip.AddrPort
	verified bool
}

// String omits the password so that logging a request by accident does not leak it.
func (req *Request) String() string {
	if req == nil {
		return "<nil>"
	}
	return "Request{Kind:" + req.Kind.String() + " Login:" + strconv.Quote(req.Login) +
		" InstanceID:" + strconv.FormatUint(req.InstanceID, 16) + " SenderIndex:" +
		strconv.FormatUint(uint64(req.SenderIndex), 10) + "}"
}

// GoString keeps %#v from printing the password.
func (req *Request) GoString() string { return req.String() }

// Wipe zeroes the password.
func (req *Request) Wipe() {
	if req != nil {
		clear(req.Password)
		req.Password = nil
	}
}

// VerifyResume checks the resume proof of a KindResume request against the session's resume key (constant
// time). The proof covers Login, InstanceID and SessionIndex, so a proof made for one session and client
// instance never verifies for another; the engine still compares them with the session it resumes, so that
// a mismatch is refused before the MAC is even computed.
func (req *Request) VerifyResume(resumeKey [32]byte) bool {
	if req == nil || req.Kind != KindResume {
		return false
	}
	want := resumeProof(resumeKey, req.e[:], req.ts[:], req.InstanceID, req.SessionIndex, req.Login)
	ok := subtle.ConstantTimeCompare(want[:], req.proof[:]) == 1
	req.verified = ok
	return ok
}

// ConsumeRequest runs every cheap check of PROTOCOL.md, in order: length/code/version, mac1 (failure ->
// ErrMac1 plus a keyMismatch notice the caller may send, rate-limited), mac2 against the cookie for src when
// present (and, when underLoad, required: missing/invalid -> a cookieReply datagram and ErrCookieRequired;
// otherwise its validity is reported in Request.SourceProven), Noise decryption, body
// parse, timestamp within ±TimestampWindow (ErrTimestampExpired) and strictly newer than the last accepted
// one for (login, instance) (ErrReplay). No password hashing happens here.
func (s *Server) ConsumeRequest(datagram []byte, src netip.AddrPort, now time.Time, underLoad bool) (req *Request, reply []byte, err error) {
	d := datagram
	if err := s.CheckMac1(d); err != nil {
		if errors.Is(err, ErrMac1) {
			return nil, NewNotice(NoticeKeyMismatch, binary.LittleEndian.Uint32(d[4:8])), err
		}
		return nil, nil, err
	}
	sender := binary.LittleEndian.Uint32(d[4:8])
	n := len(d) - 2*macLen // end of the Noise message; mac1 covers d[:n]
	// mac2 is checked whenever the client sent one (two BLAKE2s, cheap): a request that proves its source
	// address can then pass checks that the engine applies later, per login (see SourceProven).
	var mac1 [macLen]byte
	copy(mac1[:], d[n:n+macLen])
	proven := false
	if underLoad || !allZero(d[n+macLen:]) {
		cur, prev, hasPrev, err := s.cookies.secrets(now, s.rand)
		if err != nil {
			return nil, nil, err
		}
		proven = checkMac2(d, src, cur, prev, hasPrev)
		if underLoad && !proven {
			reply, err := makeCookieReply(s.cookieAEAD, s.rand, sender, cookieFor(cur, src), mac1[:])
			if err != nil {
				return nil, nil, err
			}
			return nil, reply, ErrCookieRequired
		}
	}

	hs, err := noise.NewHandshakeState(noise.Config{
		CipherSuite:   cipherSuite,
		Random:        s.rand,
		Pattern:       noise.HandshakeNK,
		Initiator:     false,
		Prologue:      prologue,
		StaticKeypair: noise.DHKey{Private: s.static.Private[:], Public: s.static.Public[:]},
	})
	if err != nil {
		return nil, nil, ErrDecrypt
	}
	var bodyBuf [maxReqBody]byte
	body, _, _, err := hs.ReadMessage(bodyBuf[:0], d[headerLen:n])
	if err != nil {
		return nil, nil, ErrDecrypt
	}
	rb, err := parseRequestBody(body)
	clear(bodyBuf[:]) // held the password
	if err != nil {
		return nil, nil, err
	}
	ts, ok := parseTAI64N(rb.ts[:])
	if !ok {
		clear(rb.password)
		return nil, nil, ErrMalformedBody
	}
	if ts.Before(now.Add(-TimestampWindow)) || ts.After(now.Add(TimestampWindow)) {
		clear(rb.password)
		return nil, nil, ErrTimestampExpired
	}
	if !s.fresh(replayKey{rb.login, rb.instanceID}, rb.ts) {
		clear(rb.password)
		return nil, nil, ErrReplay
	}
	req = &Request{
		Kind:         rb.kind,
		Login:        rb.login,
		InstanceID:   rb.instanceID,
		Timestamp:    ts,
		Suites:       rb.suites,
		SenderIndex:  sender,
		SessionIndex: rb.sessionIndex,
		Ticket:       rb.ticket,
		SourceProven: proven,
		hs:           hs,
		ts:           rb.ts,
		proof:        rb.proof,
		mac1:         mac1,
		src:          src,
	}
	if rb.kind == KindLogin {
		req.Password = rb.password
	}
	copy(req.e[:], d[headerLen:headerLen+keyLen])
	return req, nil, nil
}

// CookieReply answers req with a cookieReply instead of a response, for a caller that decided, after
// decryption, that this request must prove its source address first (for example because its login is under
// attack from many sources). The request is finished: the client retries with mac2 and a new timestamp.
func (s *Server) CookieReply(req *Request, now time.Time) ([]byte, error) {
	if req == nil || req.hs == nil {
		return nil, ErrHandshakeDone
	}
	req.Wipe()
	req.hs = nil
	cur, _, _, err := s.cookies.secrets(now, s.rand)
	if err != nil {
		return nil, err
	}
	return makeCookieReply(s.cookieAEAD, s.rand, req.SenderIndex, cookieFor(cur, req.src), req.mac1[:])
}

func allZero(b []byte) bool {
	var acc byte
	for _, x := range b {
		acc |= x
	}
	return acc == 0
}

// CheckMac1 runs the first, cheapest checks of a clientAuthRequest (header, length bounds, reserved bytes,
// mac1: one BLAKE2s over the datagram, no allocation), so a receive loop can throw junk away before it
// copies or queues anything. ConsumeRequest runs them again.
func (s *Server) CheckMac1(datagram []byte) error {
	d := datagram
	if err := checkHeader(d, protocol.CodeClientAuthRequest, protocol.MinRequestLen, protocol.MaxRequestLen); err != nil {
		return err
	}
	n := len(d) - 2*macLen
	if !s.mac1.verify(d[:n], d[n:n+macLen]) {
		return ErrMac1
	}
	return nil
}

// Mac2Missing reports whether a request that passed CheckMac1 carries no mac2 (all zeros: its sender holds
// no cookie).
func Mac2Missing(datagram []byte) bool {
	return len(datagram) >= protocol.MinRequestLen && allZero(datagram[len(datagram)-macLen:])
}

// fresh reports whether ts is strictly newer than everything accepted for k (read only).
func (s *Server) fresh(k replayKey, ts [tai64nLen]byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.freshLocked(k, ts)
}

func (s *Server) freshLocked(k replayKey, ts [tai64nLen]byte) bool {
	if bytes.Compare(ts[:], s.floor[:]) <= 0 {
		return false
	}
	last, ok := s.replay[k]
	return !ok || bytes.Compare(ts[:], last[:]) > 0
}

// record stores ts as the last accepted timestamp for k, atomically with a final freshness check so that two
// copies of one request racing through credential checks cannot both be accepted.
func (s *Server) record(k replayKey, ts [tai64nLen]byte, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.freshLocked(k, ts) {
		return false
	}
	s.replay[k] = ts
	if len(s.replay) >= s.pruneAt {
		// Entries older than the window can go: their replays fail the window check. The floor remembers
		// the newest pruned one, so even a gateway clock that jumps back cannot reopen them.
		var limit [tai64nLen]byte
		putTAI64N(limit[:], now.Add(-TimestampWindow))
		for key, v := range s.replay {
			if bytes.Compare(v[:], limit[:]) < 0 {
				if bytes.Compare(v[:], s.floor[:]) > 0 {
					s.floor = v
				}
				delete(s.replay, key)
			}
		}
		s.pruneAt = max(minPruneAt, 2*len(s.replay))
	}
	return true
}

// replaySize is the number of tracked (login, instance) pairs; for tests.
func (s *Server) replaySize() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.replay)
}

func (s *Server) chooseSuite(client []protocol.Suite) (protocol.Suite, bool) {
	for _, c := range client {
		for _, m := range s.suites {
			if c == m {
				return c, true
			}
		}
	}
	return 0, false
}

// Accept completes the handshake with result OK: it chooses the suite (the first of the client's list the
// server supports, else ErrNoCommonSuite so the caller can Reject with ResultVersionMismatch), records the
// timestamp for replay protection, and returns the response datagram and keys. localIndex is the gateway's
// new session index; ticket, unless zero, is handed to the client for its next session. A KindResume
// request must have passed VerifyResume first, a KindTicket one VerifyTicket.
func (s *Server) Accept(req *Request, localIndex uint32, settings Settings, ticket *Ticket, now time.Time) (reply []byte, keys SessionKeys, err error) {
	if req == nil || req.hs == nil {
		return nil, SessionKeys{}, ErrHandshakeDone
	}
	if (req.Kind == KindResume || req.Kind == KindTicket) && !req.verified {
		return nil, SessionKeys{}, ErrResumeNotVerified
	}
	suite, ok := s.chooseSuite(req.Suites)
	if !ok {
		return nil, SessionKeys{}, ErrNoCommonSuite
	}
	body := make([]byte, 0, 64)
	body = append(body, byte(ResultOK))
	body = binary.LittleEndian.AppendUint32(body, localIndex)
	body = append(body, byte(suite))
	body, err = appendTicket(body, ticket)
	if err != nil {
		return nil, SessionKeys{}, err
	}
	body, err = appendSettings(body, &settings)
	if err != nil {
		return nil, SessionKeys{}, err
	}
	if !s.record(replayKey{req.Login, req.InstanceID}, req.ts, now) {
		return nil, SessionKeys{}, ErrReplay
	}
	reply, cs1, cs2, err := s.finish(req, body)
	if err != nil {
		return nil, SessionKeys{}, err
	}
	keys = SessionKeys{
		Suite:       suite,
		Send:        cs2.UnsafeKey(), // gateway -> client is the second Split key
		Recv:        cs1.UnsafeKey(),
		LocalIndex:  localIndex,
		RemoteIndex: req.SenderIndex,
		ResumeKey:   deriveResumeKey(cs1.UnsafeKey(), cs2.UnsafeKey()),
	}
	req.hs = nil
	return reply, keys, nil
}

// Reject completes the Noise handshake with a failure result, so the client can trust it came from the
// gateway. It records nothing: the client may retry with the same instance.
func (s *Server) Reject(req *Request, result Result) (reply []byte, err error) {
	if req == nil || req.hs == nil {
		return nil, ErrHandshakeDone
	}
	if result == ResultOK || !result.Valid() {
		return nil, ErrInvalidResult
	}
	reply, _, _, err = s.finish(req, []byte{byte(result)})
	req.hs = nil
	return reply, err
}

// finish writes Noise message 2 around body and wipes the request's password.
func (s *Server) finish(req *Request, body []byte) ([]byte, *noise.CipherState, *noise.CipherState, error) {
	req.Wipe()
	out := make([]byte, 0, headerLen+keyLen+len(body)+tagLen)
	out = appendHeader(out, protocol.CodeServerAuthResponse, protocol.Version, req.SenderIndex)
	out, cs1, cs2, err := req.hs.WriteMessage(out, body)
	if err != nil || cs1 == nil || cs2 == nil {
		return nil, nil, nil, ErrRandom
	}
	return out, cs1, cs2, nil
}
