package engine

import (
	"errors"
	"fmt"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/salvovpn/salvo/protocol/handshake"
)

// VectorStats count the data path's read calls ("vectors") and the packets they returned, so the mean
// vector length (packets / vectors) can be derived: near 1 means a syscall per packet, near the batch size
// means the batching pays.
type VectorStats struct {
	UDPVectors uint64 `json:"udp_vectors"`
	UDPPackets uint64 `json:"udp_packets"`
	TUNVectors uint64 `json:"tun_vectors"`
	TUNPackets uint64 `json:"tun_packets"`
}

// vectorCounters are one worker's (or the client's) VectorStats: one atomic add per vector, never per
// packet, and each worker has its own, so workers share no cache line on the hot path.
type vectorCounters struct {
	udpVectors, udpPackets, tunVectors, tunPackets atomic.Uint64
}

func (v *vectorCounters) udp(n int) { v.udpVectors.Add(1); v.udpPackets.Add(uint64(n)) }
func (v *vectorCounters) tun(n int) { v.tunVectors.Add(1); v.tunPackets.Add(uint64(n)) }

func (v *vectorCounters) addTo(s *VectorStats) {
	s.UDPVectors += v.udpVectors.Load()
	s.UDPPackets += v.udpPackets.Load()
	s.TUNVectors += v.tunVectors.Load()
	s.TUNPackets += v.tunPackets.Load()
}

// Totals are the gateway's counters since it started, ended sessions included: what a metrics scrape reads.
// Every field only grows, except Sessions.
type Totals struct {
	Sessions        int               `json:"sessions"`         // live now
	SessionsStarted uint64            `json:"sessions_started"` // went live
	SessionsEnded   map[string]uint64 `json:"sessions_ended"`   // by reason
	Traffic         Traffic           `json:"traffic"`
	Drops           map[string]uint64 `json:"drops"` // by reason, with and without a session
	// Users is the traffic per user, live and ended sessions together.
	Users   map[string]Traffic `json:"users,omitempty"`
	Vectors VectorStats        `json:"vectors"`
}

// Session end reasons that are not a disconnect the gateway sends.
const (
	endExpired  = "expired"          // silent for longer than the idle timeout
	endClosed   = "closed_by_client" // the client said goodbye
	endRelogin  = "logged_in_again"  // the same client instance logged in again
	endShutdown = "shutdown"         // the gateway stopped
)

// sessionLedger keeps what ended sessions counted, so totals never go back when a session goes away.
// Guarded by Server.mu.
type sessionLedger struct {
	started uint64
	ended   map[string]uint64
	traffic Traffic // ended sessions' traffic
	drops   [numDropReasons]uint64
	users   map[string]Traffic
}

// accountLocked closes the books of a live session that ends now: one log line with what it did (the
// accounting record), and its counters folded into the ledger.
func (s *Server) accountLocked(sess *serverSession, reason string, now time.Time) {
	if sess.accounted {
		return
	}
	sess.accounted = true
	l := &s.ledger
	if l.ended == nil {
		l.ended, l.users = map[string]uint64{}, map[string]Traffic{}
	}
	l.ended[reason]++
	t := sess.counters.traffic()
	l.users[sess.user] = l.users[sess.user].Plus(t)
	l.traffic = l.traffic.Plus(t)
	for i := range sess.counters.Drops {
		l.drops[i] += sess.counters.Drops[i].Load()
	}
	endpoint := ""
	if ep := sess.endpoint.Load(); ep != nil {
		endpoint = ep.addr.String()
	}
	s.log.Info("session ended", "user", sess.user, "reason", reason, "addresses", fmt.Sprint(sess.addrs()),
		"endpoint", endpoint, "duration", now.Sub(sess.created).Round(time.Millisecond),
		"rx_bytes", t.RxBytes, "tx_bytes", t.TxBytes, "rx_packets", t.RxPackets, "tx_packets", t.TxPackets)
	if s.cfg.OnSessionEnded != nil {
		s.cfg.OnSessionEnded(SessionEnded{User: sess.user, Reason: reason, Addresses: sess.addrs(), Endpoint: endpoint,
			Started: sess.created, Ended: now, Traffic: t})
	}
}

// SessionEnded is the accounting record of one session, for ServerConfig.OnSessionEnded.
type SessionEnded struct {
	User, Reason   string
	Addresses      []netip.Addr
	Endpoint       string // where the client was last seen
	Started, Ended time.Time
	Traffic        Traffic
}

// Totals returns the gateway's counters since it started (see Totals). perUser adds the traffic per user.
func (s *Server) Totals(perUser bool) Totals {
	t := Totals{SessionsEnded: map[string]uint64{}, Drops: map[string]uint64{}}
	for _, w := range s.workerSet {
		w.vectors.addTo(&t.Vectors)
	}
	if perUser {
		t.Users = map[string]Traffic{}
	}
	s.mu.Lock()
	l := &s.ledger
	drops := l.drops
	addDrops := func(c *Counters) {
		for i := range c.Drops {
			drops[i] += c.Drops[i].Load()
		}
	}
	addDrops(&s.global)
	t.SessionsStarted = l.started
	for r, n := range l.ended {
		t.SessionsEnded[r] = n
	}
	t.Traffic = l.traffic
	if perUser {
		for u, tr := range l.users {
			t.Users[u] = tr
		}
	}
	t.Sessions = len(s.live)
	for _, sess := range s.live {
		if sess.accounted {
			continue // in the ledger already (the gateway is stopping)
		}
		tr := sess.counters.traffic()
		t.Traffic = t.Traffic.Plus(tr)
		addDrops(&sess.counters)
		if perUser {
			t.Users[sess.user] = t.Users[sess.user].Plus(tr)
		}
	}
	s.mu.Unlock()
	for i, n := range drops {
		t.Drops[DropReason(i).String()] = n
	}
	return t
}

// forgetUsersLocked drops the ledger's per-user traffic of users no longer in the users file, so the
// per-user label set stays bounded by the file.
func (s *Server) forgetUsersLocked() {
	for u := range s.ledger.users {
		if _, ok := s.cfg.Users.Lookup(u); !ok {
			delete(s.ledger.users, u)
		}
	}
}

// rejectReason says why a handshake request was refused before it reached the login or resume logic.
type rejectReason uint8

const (
	rejectMalformed rejectReason = iota // not a well-formed request
	rejectVersion                       // a protocol version this gateway does not speak
	rejectWrongKey                      // mac1 does not verify: the client pinned another gateway key
	rejectDecrypt                       // the Noise message does not decrypt
	rejectStale                         // timestamp outside the accepted window
	rejectReplay                        // timestamp not newer than the last accepted one
	rejectNoSuite                       // no cipher suite in common
	numRejectReasons
)

var rejectNames = [numRejectReasons]string{"malformed", "version", "wrong_key", "decrypt", "stale", "replay", "no_suite"}

// rejectReasonOf classifies an error of handshake.Server.ConsumeRequest.
func rejectReasonOf(err error) rejectReason {
	for _, c := range [...]struct {
		err    error
		reason rejectReason
	}{{handshake.ErrVersion, rejectVersion}, {handshake.ErrMac1, rejectWrongKey}, {handshake.ErrDecrypt, rejectDecrypt},
		{handshake.ErrTimestampExpired, rejectStale}, {handshake.ErrReplay, rejectReplay}, {handshake.ErrNoCommonSuite, rejectNoSuite}} {
		if errors.Is(err, c.err) {
			return c.reason
		}
	}
	return rejectMalformed
}
