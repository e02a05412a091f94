package engine

import (
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/salvovpn/salvo/engine/tickets"
	"github.com/salvovpn/salvo/engine/users"
	"github.com/salvovpn/salvo/protocol/handshake"
)

// openTickets returns the ticket key ring: the configured one, else the state directory's (so tickets
// survive a restart), else one in memory.
func openTickets(cfg *ServerConfig) (*tickets.Ring, error) {
	if cfg.Tickets != nil {
		return cfg.Tickets, nil
	}
	path := ""
	if cfg.StateDir != "" {
		path = filepath.Join(cfg.StateDir, tickets.FileName)
	}
	return tickets.Load(path, nil)
}

// userFingerprint is what a ticket remembers of the user record it was issued for.
func userFingerprint(u users.User) [16]byte {
	return tickets.Fingerprint(u.Login, u.Hash, u.FixedIPv4, u.FixedIPv6)
}

// issueTicket seals a ticket for sess, handed out with the response that is about to be sent: it lets
// the client start a new session without its password (after a restart, say) until it expires, which is
// at most tickets.Lifetime from now and never after the session reaches max_session_age. nil when no
// ticket can be made (the client then simply logs in with its password next time).
func (s *Server) issueTicket(sess *serverSession, user users.User, now time.Time) *handshake.Ticket {
	expires := now.Add(tickets.Lifetime)
	if age := s.cfg.MaxSessionAge; age > 0 && sess.authAt.Add(age).Before(expires) {
		expires = sess.authAt.Add(age)
	}
	lifetime := expires.Sub(now).Truncate(time.Second)
	if lifetime < time.Second {
		return nil
	}
	c := tickets.Contents{Login: sess.user, Instance: sess.instance, User: userFingerprint(user),
		Addr4: sess.addr4, Addr6: sess.addr6, AuthAt: sess.authAt, Expires: now.Add(lifetime)}
	if _, err := rand.Read(c.Secret[:]); err != nil {
		return nil
	}
	t := &handshake.Ticket{Secret: c.Secret, Lifetime: lifetime}
	blob, err := s.tickets.Seal(&c, now)
	clear(c.Secret[:])
	if err != nil {
		// A key that could not be saved seals all the same (tickets then only help until a restart);
		// that is said once per new key.
		s.log.Warn("session tickets", "err", err)
	}
	if blob == nil {
		return nil
	}
	t.Blob = blob
	return t
}

// ticketLogin starts a new session from a ticket: no password hash, only the ticket's authentication, its
// proof, and the same checks against the user store that every rekey makes. A ticket the gateway cannot
// open (rotated away, expired, another gateway's), whose user changed, or past max_session_age is answered
// "unknown session", which sends the client to its password. One that does not open, names another login
// or instance, or whose proof fails is what a forger produces: charged to its source on a limit of its own,
// once the source has proven its address.
func (s *Server) ticketLogin(req *handshake.Request, job handshakeJob, now time.Time) []byte {
	g := &s.logins
	over, chargeForgery := s.overForgeryLimit(g.limits.Load().forgedTickets, job, now)
	if over {
		return s.reject(req, job, handshake.ResultRateLimited)
	}
	// refuse answers "unknown session". A refusal anyone can cause (a made-up ticket, from any source) is
	// logged at debug level, so that a flood of them is not a flood of log lines; one of a genuine, proven
	// ticket at info level.
	refuse := func(why string, forged bool, level slog.Level) []byte {
		if forged && !req.SourceProven {
			// Any user can make a failing ticket from their own; charged to a spoofed source it would
			// lock the real one out. So the sender proves its address first (a cookie), and is charged
			// when it comes back with the same.
			return s.demandCookie(req, job, now)
		}
		g.stats.ticketsRefused.Add(1)
		if forged {
			chargeForgery()
		}
		s.log.Log(context.Background(), level, "session ticket refused; the client must log in with its password",
			"user", req.Login, "from", job.src, "reason", why)
		return s.reject(req, job, handshake.ResultUnknownSession)
	}
	c, err := s.tickets.Open(req.Ticket, now)
	defer clear(c.Secret[:])
	switch {
	case errors.Is(err, tickets.ErrUnknownKey):
		return refuse("unknown ticket key", false, slog.LevelDebug)
	case errors.Is(err, tickets.ErrExpired):
		return refuse("expired", false, slog.LevelDebug)
	case err != nil:
		return refuse("does not authenticate", true, slog.LevelDebug)
	case c.Login != req.Login || c.Instance != req.InstanceID:
		return refuse("issued to another login or client instance", true, slog.LevelDebug)
	case !req.VerifyTicket(c.Secret):
		return refuse("wrong proof", true, slog.LevelDebug)
	}
	// From here the ticket is genuine and proven: a real client sent it, as often as it reconnects.
	user, ok := s.cfg.Users.Lookup(c.Login)
	switch {
	case !ok || user.Disabled:
		return refuse("user removed or disabled", false, slog.LevelInfo)
	case userFingerprint(user) != c.User:
		return refuse("user changed since the ticket was issued", false, slog.LevelInfo)
	case s.cfg.MaxSessionAge > 0 && now.Sub(c.AuthAt) > s.cfg.MaxSessionAge:
		return refuse("max_session_age reached", false, slog.LevelInfo)
	}
	out, ok := s.startSession(req, user, job, pendingLogin{authAt: c.AuthAt, want4: c.Addr4, want6: c.Addr6}, "ticket", now)
	if ok {
		g.stats.ticketLogins.Add(1)
	}
	return out
}
