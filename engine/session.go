package engine

import (
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/puzpuzpuz/xsync/v4"

	"github.com/salvovpn/salvo/protocol"
	"github.com/salvovpn/salvo/protocol/transport"
)

// endpoint is where a session's client was last seen, and on which of the gateway's sockets.
type endpoint struct {
	addr   netip.AddrPort
	socket int
}

// serverSession is one client instance's session. A login creates it pending: its key waits in `next`,
// and nothing of the client's older state changes until the client proves it holds the new keys by sending
// an authenticated packet under them (see Server.promoteLocked). So a replayed or raced login request, which
// yields keys nobody can use, never replaces, evicts or re-routes anything. Its key slots then follow
// WireGuard's rotation: a resume installs `next`, which becomes `current` when the first packet arrives
// under it; the replaced key stays as `previous` so packets in flight still open.
type serverSession struct {
	user     string
	instance uint64
	// hash is the user's password hash when the session logged in: when the users file no longer has that
	// user with that hash (removed, disabled, password changed), the session is revoked.
	hash    string
	worker  int // owner: every receiver index of the session is worker mod the worker count
	lease   *lease
	addr4   netip.Addr // the lease's addresses, copied so the data path needs no lock
	addr6   netip.Addr
	created time.Time // when this session was set up (resumes keep it): its duration counts from here
	// authAt is when the password behind the session was checked: at its login, or for a session a ticket
	// started, at the login the ticket descends from. max_session_age counts from here.
	authAt time.Time

	live bool // guarded by Server.mu: the client has used the login's keys, so the session routes traffic
	// accounted is set (under Server.mu) once the session's end is accounted: a gateway that stops
	// accounts its live sessions while they still exist, and a goodbye arriving after must not count twice.
	accounted bool

	current, previous, next atomic.Pointer[transport.Keypair]
	endpoint                atomic.Pointer[endpoint]
	lastRecv                atomic.Int64 // unix nanoseconds of the last authenticated packet
	lastHandshake           atomic.Int64
	counters                Counters

	// Guarded by Server.sweepMu (the janitor's): when it last saw the transmit counter move, to send
	// keepalives, and the sweep that last looked at the session.
	txSeen      uint64
	txIdleSince time.Time
	swept       uint64
}

func (s *serverSession) owns(a netip.Addr) bool {
	return a == s.addr4 || a == s.addr6
}

func (s *serverSession) addrs() []netip.Addr {
	var out []netip.Addr
	if s.addr4.IsValid() {
		out = append(out, s.addr4)
	}
	if s.addr6.IsValid() {
		out = append(out, s.addr6)
	}
	return out
}

// keys lists the session's key slots that are set.
func (s *serverSession) keys() []*transport.Keypair {
	var out []*transport.Keypair
	for _, kp := range [...]*transport.Keypair{s.current.Load(), s.previous.Load(), s.next.Load()} {
		if kp != nil {
			out = append(out, kp)
		}
	}
	return out
}

func (s *serverSession) status(now time.Time) SessionStatus {
	st := SessionStatus{User: s.user, Counters: s.counters.Snapshot(),
		LastHandshake: time.Unix(0, s.lastHandshake.Load()), LastReceive: time.Unix(0, s.lastRecv.Load())}
	for _, a := range s.addrs() {
		st.Addresses = append(st.Addresses, a.String())
	}
	if ep := s.endpoint.Load(); ep != nil {
		st.Endpoint = ep.addr.String()
	}
	if kp := s.current.Load(); kp != nil {
		st.SessionIndex = kp.LocalIndex()
		st.Suite = kp.Suite().String()
	}
	return st
}

// sealControl seals a keepalive (code data, no payload) or a disconnect with its reason under the session's
// current key (a pending session's next one), into a fresh buffer. ok is false when the session has no usable
// key.
func (s *serverSession) sealControl(code protocol.Code, reason protocol.DisconnectReason, now time.Time) ([]byte, bool) {
	kp := s.current.Load()
	if kp == nil {
		kp = s.next.Load() // a pending session: the client already uses these keys
	}
	if kp == nil {
		return nil, false
	}
	n := 0
	b := make([]byte, protocol.DataOverhead+1)
	if code == protocol.CodeDisconnect {
		b[protocol.Headroom] = byte(reason)
		n = 1
	}
	m, err := kp.Seal(code, b, n, now)
	if err != nil {
		return nil, false
	}
	return b[:m], true
}

// keyEntry maps a receiver index to its keypair and session, with the resume key that handshake produced:
// a resume names the index of the keypair whose handshake it continues and proves that handshake's key, so
// a client whose last resume response was lost can still resume from the keys it has.
type keyEntry struct {
	kp        *transport.Keypair
	sess      *serverSession
	resumeKey [32]byte
}

// sessionTable is the data path's lookup state: the receive loops look sessions up by receiver index, the
// TUN loops by tunnel address, for every packet and without a lock. Both maps are concurrent hash tables
// (xsync.Map): a lookup takes no lock and allocates nothing, and a change locks one bucket, so a handshake
// costs the same with 10 sessions or 10,000 (a copy-on-write table cloned per change made a login storm
// quadratic). Changes are made under Server.mu, which keeps a look-then-change sequence (newIndex,
// removeLocked) atomic among writers.
//
// Readers see every change at once rather than a handshake's changes together, so the writers order them:
// an entry is stored only once what it points to is complete (a session's keys and endpoint before its
// index, its key slots before its addresses), and an address handed to a newer session is overwritten, not
// deleted and added again, so it never routes nowhere in between.
type sessionTable struct {
	byIndex *xsync.Map[uint32, keyEntry]
	byAddr  *xsync.Map[netip.Addr, *serverSession] // live sessions only
}

func newSessionTable() sessionTable {
	return sessionTable{byIndex: xsync.NewMap[uint32, keyEntry](), byAddr: xsync.NewMap[netip.Addr, *serverSession]()}
}

// index returns the key entry of receiver index idx.
func (t *sessionTable) index(idx uint32) (keyEntry, bool) { return t.byIndex.Load(idx) }

// session returns the live session that owns tunnel address a, or nil.
func (t *sessionTable) session(a netip.Addr) *serverSession {
	sess, _ := t.byAddr.Load(a)
	return sess
}
