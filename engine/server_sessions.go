package engine

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/salvovpn/salvo/protocol"
	"github.com/salvovpn/salvo/protocol/handshake"
	"github.com/salvovpn/salvo/protocol/transport"
)

// confirm is called by the data path when a packet authenticated under a session's pending key: the client
// holds the keys, so the gateway switches too. For a login this is when the session goes live.
func (s *Server) confirm(sess *serverSession, kp *transport.Keypair, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sess.next.Load() != kp {
		return
	}
	// The key slots move first: a login's addresses, published by promoteLocked, must find the key the
	// TUN loops seal with.
	retired := sess.previous.Load()
	sess.previous.Store(sess.current.Load())
	sess.current.Store(kp)
	sess.next.Store(nil)
	if !sess.live {
		s.promoteLocked(sess, now)
	} else if retired != nil {
		s.delIndex(retired.LocalIndex())
	}
}

// promoteLocked makes a pending login live. Only now does the login take effect on other sessions: it
// replaces the older session of the same client instance, takes over a fixed address from the user's other
// device, and makes room under max_sessions_per_user by replacing the user's oldest sessions. The replaced
// clients are told so (disconnect "replaced") and stop rather than log in again, so two devices never evict
// each other in turn.
func (s *Server) promoteLocked(sess *serverSession, now time.Time) {
	key := instanceKey{sess.user, sess.instance}
	delete(s.pending, key)
	// The addresses go to the new session before the sessions it replaces are removed: an address they
	// share (the same instance's lease, a fixed address) is overwritten, so it keeps routing, and
	// removeLocked leaves it (and its steering route) alone.
	for _, a := range sess.addrs() {
		s.table.byAddr.Store(a, sess)
		s.steerAddress(a, sess.worker)
	}
	if old := s.live[key]; old != nil {
		s.removeLocked(old, endRelogin) // the same client instance logged in again: nothing to tell it
	}
	for _, other := range append([]*serverSession(nil), s.perUser[sess.user]...) {
		if other.lease == sess.lease {
			s.log.Info("fixed address taken over by the user's newer login", "user", sess.user, "addresses", fmt.Sprint(sess.addrs()))
			s.endSessionLocked(other, protocol.DisconnectReplaced, now)
		}
	}
	for len(s.perUser[sess.user]) >= s.cfg.MaxSessionsPerUser {
		oldest := s.perUser[sess.user][0]
		s.log.Info("max_sessions_per_user reached: the oldest session is replaced by the new one", "user", sess.user,
			"limit", s.cfg.MaxSessionsPerUser, "replaced_endpoint", oldest.endpoint.Load().addr)
		s.endSessionLocked(oldest, protocol.DisconnectReplaced, now)
	}
	sess.live = true
	s.ledger.started++
	s.live[key] = sess
	s.perUser[sess.user] = append(s.perUser[sess.user], sess)
	kp := sess.current.Load()
	s.log.Info("session up", "user", sess.user, "endpoint", sess.endpoint.Load().addr, "addresses", fmt.Sprint(sess.addrs()),
		"index", kp.LocalIndex(), "suite", kp.Suite().String())
}

// endSessionLocked tells the client why its session ends (an authenticated disconnect under the current
// key) and removes the session.
func (s *Server) endSessionLocked(sess *serverSession, reason protocol.DisconnectReason, now time.Time) {
	s.sendControl(sess, protocol.CodeDisconnect, reason, now)
	s.removeLocked(sess, reason.String())
}

// sendControl sends a keepalive or disconnect to the session's endpoint through its worker's socket.
func (s *Server) sendControl(sess *serverSession, code protocol.Code, reason protocol.DisconnectReason, now time.Time) {
	b, ok := sess.sealControl(code, reason, now)
	ep := sess.endpoint.Load()
	if !ok || ep == nil {
		return
	}
	c := s.layout.sibling(ep.socket, sess.worker)
	if err := s.sockets[c].writeOne(b, ep.addr); err == nil {
		sess.counters.TxPackets.Add(1)
	}
}

// removeLocked forgets a session without telling its client (it is gone, or never was): it removes every
// trace of sess from the server and the session table, and releases its lease. A live session's end is
// accounted under reason (see accountLocked); a pending one never carried traffic.
func (s *Server) removeLocked(sess *serverSession, reason string) {
	if sess.live && sess.lease != nil {
		s.accountLocked(sess, reason, time.Now())
	}
	for _, kp := range sess.keys() {
		if e, ok := s.table.index(kp.LocalIndex()); ok && e.sess == sess {
			s.delIndex(kp.LocalIndex())
		}
	}
	for _, a := range sess.addrs() {
		// Only if it is still sess's: a newer session that took the address over keeps it.
		if s.table.session(a) == sess {
			s.table.byAddr.Delete(a)
			s.unsteerAddress(a)
		}
	}
	key := instanceKey{sess.user, sess.instance}
	if s.live[key] == sess {
		delete(s.live, key)
	}
	if s.pending[key] == sess {
		delete(s.pending, key)
	}
	list := s.perUser[sess.user]
	for i, x := range list {
		if x == sess {
			s.perUser[sess.user] = append(list[:i:i], list[i+1:]...)
			break
		}
	}
	if len(s.perUser[sess.user]) == 0 {
		delete(s.perUser, sess.user)
	}
	s.releaseSharedLocked(sess, reason)
	s.leases.release(sess.lease)
	sess.lease = nil
}

// removeSession handles an authenticated disconnect from the client.
func (s *Server) removeSession(sess *serverSession) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sess.lease != nil {
		s.removeLocked(sess, endClosed)
	}
}

func (s *Server) settingsFor(sess *serverSession) handshake.Settings {
	st := s.cfg.Settings
	if sess.addr4.IsValid() {
		st.IPv4 = netip.PrefixFrom(sess.addr4, s.cfg.Pool4.Prefix().Bits())
	}
	if sess.addr6.IsValid() {
		st.IPv6 = netip.PrefixFrom(sess.addr6, s.cfg.Pool6.Prefix().Bits())
	}
	return st
}

// keepaliveInterval is how long a session may go without the gateway sending it anything: the interval
// pushed to clients (the default when the config sets 0, as clients do).
func (s *Server) keepaliveInterval() time.Duration {
	if k := s.cfg.Settings.Keepalive; k > 0 {
		return k
	}
	return protocol.KeepaliveDefault
}

// sessionIdle is how long a session may stay silent before the gateway forgets it and frees its address.
// A live client sends at least a keepalive per interval, so three intervals without a packet (plus a rekey
// timeout of slack for loss) means it is gone: 80 s by default. Never longer than a key may live.
func (s *Server) sessionIdle() time.Duration {
	return min(3*s.keepaliveInterval()+protocol.RekeyTimeout, protocol.RejectAfterTime)
}

// janitor runs once a second: it expires silent sessions and unconfirmed logins, retires old keys, sends
// keepalives to sessions the gateway has sent nothing to for a keepalive interval (so an idle client sees
// its gateway alive and does not reconnect), releases restored leases nobody came back for, and saves the
// leases when they changed.
func (s *Server) janitor(ctx context.Context) {
	t := time.NewTicker(janitorTick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			s.sweep(now)
			if err := s.saveLeases(); err != nil {
				s.log.Error("saving leases", "err", err)
			}
		}
	}
}

// sweep does the janitor's work on the sessions. It looks at every session without s.mu, through the
// session table and the sessions' atomics, sends keepalives there too, and takes the lock only to act on the
// few sessions that are due (checking again under it: a session may have moved on meanwhile). So with
// 10,000 sessions the handshakes and the data path's confirms never wait for a pass over all of them.
func (s *Server) sweep(now time.Time) {
	s.sweepMu.Lock()
	defer s.sweepMu.Unlock()
	keepalive, idle := s.keepaliveInterval(), s.sessionIdle()
	s.sweeps++
	due := s.sweepDue[:0]
	s.table.byIndex.RangeRelaxed(func(_ uint32, e keyEntry) bool {
		sess := e.sess
		if sess.swept == s.sweeps {
			return true // seen under another of its indexes
		}
		sess.swept = s.sweeps
		if sess.current.Load() == nil { // a login the client has not confirmed yet
			if now.Sub(time.Unix(0, sess.lastHandshake.Load())) > s.cfg.pendingTimeout {
				due = append(due, sess)
			}
			return true
		}
		if now.Sub(time.Unix(0, sess.lastRecv.Load())) > idle {
			due = append(due, sess)
			return true
		}
		if prev, next := sess.previous.Load(), sess.next.Load(); prev != nil && prev.Expired(now) || next != nil && next.Expired(now) {
			due = append(due, sess)
		}
		// A session removed since the table was read may get one keepalive more under its old key; its
		// client ignores or has already dropped it.
		if tx := sess.counters.TxPackets.Load(); tx != sess.txSeen || sess.txIdleSince.IsZero() {
			sess.txSeen, sess.txIdleSince = tx, now
		} else if now.Sub(sess.txIdleSince) >= keepalive {
			s.sendControl(sess, protocol.CodeData, 0, now)
			sess.txSeen, sess.txIdleSince = sess.counters.TxPackets.Load(), now
		}
		return true
	})
	s.mu.Lock()
	for _, sess := range due {
		s.expireLocked(sess, now, idle)
	}
	s.leases.expire(now)
	s.mu.Unlock()
	clear(due) // keep no removed session reachable until the next sweep
	s.sweepDue = due[:0]
}

// expireLocked removes sess if it is an unconfirmed login past the pending timeout or a live session silent
// for idle, or else retires its expired keys. Conditions are checked again here, under s.mu.
func (s *Server) expireLocked(sess *serverSession, now time.Time, idle time.Duration) {
	key := instanceKey{sess.user, sess.instance}
	switch {
	case s.pending[key] == sess:
		if now.Sub(time.Unix(0, sess.lastHandshake.Load())) > s.cfg.pendingTimeout {
			s.log.Debug("login not confirmed by the client; dropped", "user", sess.user)
			s.removeLocked(sess, "")
		}
		return
	case s.live[key] != sess:
		return // removed or replaced since the sweep saw it
	case now.Sub(time.Unix(0, sess.lastRecv.Load())) > idle:
		s.removeLocked(sess, endExpired)
		return
	}
	if prev := sess.previous.Load(); prev != nil && prev.Expired(now) {
		s.delIndex(prev.LocalIndex())
		sess.previous.Store(nil)
	}
	if next := sess.next.Load(); next != nil && next.Expired(now) {
		s.delIndex(next.LocalIndex())
		sess.next.Store(nil)
	}
}

// saveLeases writes the lease file if leases changed since the last save. The snapshot is taken under the
// lock, the file written outside it; only the janitor and, after it stopped, Run call this.
func (s *Server) saveLeases() error {
	s.mu.Lock()
	b := s.leases.snapshot()
	s.mu.Unlock()
	return s.leases.save(b)
}

// shutdown tells every client the gateway is going away, so they reconnect (with backoff, to this gateway
// when it is back: their leases are kept) instead of waiting for a dead-peer timeout. Pending sessions are
// told too: their clients already count themselves connected.
func (s *Server) shutdown() {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range []map[instanceKey]*serverSession{s.live, s.pending} {
		for _, sess := range m {
			s.sendControl(sess, protocol.CodeDisconnect, protocol.DisconnectShutdown, now)
		}
	}
	for _, sess := range s.live {
		s.accountLocked(sess, endShutdown, now)
	}
}

// Kick ends every session of user (an administrator's request) and returns how many there were. The
// clients are told (disconnect "kicked") and stop. It does not stop the user from logging in again:
// remove or disable the user for that.
func (s *Server) Kick(user string) int {
	return s.endWhere(protocol.DisconnectKicked, func(sess *serverSession) bool { return sess.user == user })
}

// UsersChanged re-checks every session against the users file after it was reloaded: a session whose user
// was removed or disabled, or whose password changed, ends with disconnect "revoked". It also re-measures
// the failure padding, which depends on the parameters in the file.
func (s *Server) UsersChanged() int {
	s.logins.measure(s.cfg.Users)
	n := s.endWhere(protocol.DisconnectRevoked, func(sess *serverSession) bool { return !s.userValid(sess) })
	s.mu.Lock()
	s.forgetUsersLocked()
	s.mu.Unlock()
	return n
}

// userValid reports whether the users file still has sess's user, enabled and with the password hash it
// logged in with. Every path that extends a session asks.
func (s *Server) userValid(sess *serverSession) bool {
	u, ok := s.cfg.Users.Lookup(sess.user)
	return ok && !u.Disabled && u.Hash == sess.hash
}

// endWhere ends every session, live or pending, for which match holds, and returns how many.
func (s *Server) endWhere(reason protocol.DisconnectReason, match func(*serverSession) bool) int {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, m := range []map[instanceKey]*serverSession{s.live, s.pending} {
		for _, sess := range m {
			if match(sess) {
				s.endSessionLocked(sess, reason, now)
				n++
			}
		}
	}
	return n
}
