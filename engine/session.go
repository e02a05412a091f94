package engine

import (
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/salvovpn/salvo/protocol/transport"
)

// endpoint is where a session's client was last seen, and on which of the gateway's sockets.
type endpoint struct {
	addr netip.AddrPort
	conn int
}

// serverSession is one logged-in client instance. Its key slots follow WireGuard's rotation: a resume
// handshake installs `next`, which becomes `current` when the first packet arrives under it; the replaced
// key stays as `previous` so packets in flight still open.
type serverSession struct {
	user     string
	instance uint64
	worker   int // owner: every receiver index of the session is worker mod the worker count
	addr4    netip.Addr
	addr6    netip.Addr

	current, previous, next atomic.Pointer[transport.Keypair]
	endpoint                atomic.Pointer[endpoint]
	lastRecv                atomic.Int64 // unix nanoseconds of the last authenticated packet
	lastHandshake           atomic.Int64
	counters                Counters

	resumeKey [32]byte // guarded by Server.mu
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

// keyEntry maps a receiver index to its keypair and session.
type keyEntry struct {
	kp   *transport.Keypair
	sess *serverSession
}

// routes is the immutable lookup state of the data path. Handshakes (rare) build a new one and publish it
// with an atomic pointer store, so the per-packet lookups take no lock.
type routes struct {
	byIndex map[uint32]keyEntry
	byAddr  map[netip.Addr]*serverSession
}

func (r *routes) clone() *routes {
	n := &routes{byIndex: make(map[uint32]keyEntry, len(r.byIndex)+2), byAddr: make(map[netip.Addr]*serverSession, len(r.byAddr)+2)}
	for k, v := range r.byIndex {
		n.byIndex[k] = v
	}
	for k, v := range r.byAddr {
		n.byAddr[k] = v
	}
	return n
}
