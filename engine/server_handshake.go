package engine

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"runtime/debug"
	"sync/atomic"
	"time"

	"golang.org/x/sync/semaphore"

	"github.com/salvovpn/salvo/engine/ratelimit"
	"github.com/salvovpn/salvo/engine/users"
	"github.com/salvovpn/salvo/internal/loginlimits"
	"github.com/salvovpn/salvo/protocol"
	"github.com/salvovpn/salvo/protocol/handshake"
	"github.com/salvovpn/salvo/protocol/transport"
)

// loginGuard decides which logins may cost a password hash. Everything that reaches it has passed mac1 and
// Noise decryption, which anyone holding the gateway's public key can produce, so it treats every request
// as possibly an attacker's.
//
//   - failedBySrc: failed logins per source prefix (/32, or /64 for IPv6: one host usually holds a whole
//     /64). A source over it is refused before any hash.
//   - forgedResumes: resumes per source prefix that name a live session but do not prove it (a takeover
//     attempt). A source over it gets no resumes. forgedTickets: the same for tickets that do not open or
//     prove, kept apart so that failed tickets never stop a source's rekeys. Either is charged only to a
//     source that proved its address (a cookie): any user can make a failing ticket from their own, and
//     charging a spoofed source would lock the real one out.
//   - failedByLogin: failed logins per login, from any source. It never refuses anybody (that would let
//     anyone lock a user out by spraying wrong passwords from spoofed sources); it only makes that login
//     demand a cookie, i.e. proof that the sender receives packets at its source address.
//   - budget: argon2id cost (KiB x passes) per second for all logins together; unproven: a fifth of it, the
//     most that senders who have not proven their address can spend. Spoofed floods can therefore cause at
//     most that many hashes a second, after which unproven requests get a cookie instead of a hash, and
//     genuine clients (who answer the cookie at once) hash from the rest of the budget.
type loginGuard struct {
	// limits are the limiters above; a reload that changes the limits replaces them whole.
	limits atomic.Pointer[loginLimits]
	// memory bounds the argon2id memory of the hashes running at once to that of the users file's costliest
	// parameters: with two handshake workers, two 64 MiB hashes side by side would double the gateway's
	// peak RSS under a login flood; cheaper hashes still run side by side.
	memory *semaphore.Weighted
	// failurePad is how long a failed login's answer waits after its hash began: the measured time of the
	// most expensive parameters in the users file, with margin, raised whenever a hash took longer (a
	// loaded machine). Unknown, disabled and wrong-password logins thus answer after the same time whatever
	// their parameters, so timing tells nobody which users exist.
	failurePad atomic.Int64
	hashes     atomic.Uint64 // password hashes computed, for tests and status
	stats      loginCounters
	// pressureUntil (unix ns) keeps cookies demanded for a while after the budgets were last under pressure.
	pressureUntil atomic.Int64
}

// loginCounters count what happened to handshakes, for the status (and the flood and storm tests).
type loginCounters struct {
	ok, failed, rateLimited, busy, resumed, cookies, handled atomic.Uint64
	ticketLogins, ticketsRefused, unavailable                atomic.Uint64
	rejected                                                 [numRejectReasons]atomic.Uint64 // before login or resume
}

// LoginStats is the JSON form of the gateway's handshake counters.
type LoginStats struct {
	PasswordHashes uint64 `json:"password_hashes"`
	LoginsOK       uint64 `json:"logins_ok"`
	LoginsFailed   uint64 `json:"logins_failed"` // bad credentials (unknown, wrong, disabled)
	RateLimited    uint64 `json:"rate_limited"`
	Busy           uint64 `json:"busy"`              // refused: hashing budget spent, or the lease store busy with another login
	Unavailable    uint64 `json:"store_unavailable"` // refused: the user store could not check the password, or the lease store could not be asked
	Resumes        uint64 `json:"resumes"`
	TicketLogins   uint64 `json:"ticket_logins"`   // new sessions from a session ticket: no password hash
	TicketsRefused uint64 `json:"tickets_refused"` // the client was sent to its password instead
	CookiesSent    uint64 `json:"cookies_sent"`    // proof of address demanded
	Handshakes     uint64 `json:"handshakes"`      // requests taken from the queue and processed
	// Rejected counts requests refused before any login or resume logic, by reason (wrong_key: the client
	// pinned another gateway key; stale, replay: timestamps; decrypt, malformed, version, no_suite).
	Rejected map[string]uint64 `json:"rejected"`
}

func (g *loginGuard) snapshot() LoginStats {
	c := &g.stats
	st := LoginStats{PasswordHashes: g.hashes.Load(), LoginsOK: c.ok.Load(), LoginsFailed: c.failed.Load(),
		RateLimited: c.rateLimited.Load(), Busy: c.busy.Load(), Resumes: c.resumed.Load(), CookiesSent: c.cookies.Load(),
		TicketLogins: c.ticketLogins.Load(), TicketsRefused: c.ticketsRefused.Load(), Unavailable: c.unavailable.Load(),
		Handshakes: c.handled.Load(), Rejected: map[string]uint64{}}
	for i := range c.rejected {
		st.Rejected[rejectNames[i]] = c.rejected[i].Load()
	}
	return st
}

// HashMemoryCap is the argon2id memory, in KiB, that concurrent hashes may use together: one hash at the
// default 64 MiB, or the most expensive one in the users file if that is larger (a hash is never refused
// for its size: it takes the whole cap and runs alone).
const HashMemoryCap = 64 * 1024

// pressureHold is how long the gateway keeps demanding cookies after its budgets were last under pressure.
const pressureHold = 10 * time.Second

// bigHashMemory is the argon2id memory (KiB) from which a hash's memory is collected at once (see login).
const bigHashMemory = 8 * 1024

// budgetPressure is the fill level of the hashing budget below which every request must prove its source
// address (mac2) before the gateway does any Curve25519 or argon2 work for it.
const budgetPressure = 0.5

// loginLimits are loginGuard's limiters, built from LoginLimits.
type loginLimits struct {
	LoginLimits
	failedBySrc   *ratelimit.Limiter[netip.Prefix]
	failedByLogin *ratelimit.Limiter[string]
	forgedResumes *ratelimit.Limiter[netip.Prefix] // resumes of a live index without its proof
	forgedTickets *ratelimit.Limiter[netip.Prefix] // tickets that do not open, or without their proof
	budget        *ratelimit.Budget
	unproven      *ratelimit.Budget
}

// LoginLimits are the gateway's login rate limits (ServerConfig.Limits; Server.Reload changes them).
type LoginLimits struct {
	// HashBudget bounds password hashing: argon2id cost (memory in KiB x passes) per second, shared by
	// all logins. 0 means DefaultHashBudget.
	HashBudget uint64
	// FailureBurst failed logins per source (and per login), or forged resumes per source, are allowed
	// at once; then one per FailureInterval. 0 means loginlimits' defaults (10 and 2 s).
	FailureBurst    int
	FailureInterval time.Duration
}

func (l LoginLimits) withDefaults() LoginLimits {
	if l.HashBudget == 0 {
		l.HashBudget = DefaultHashBudget
	}
	if l.FailureBurst == 0 {
		l.FailureBurst = loginlimits.FailureBurst
	}
	if l.FailureInterval == 0 {
		l.FailureInterval = loginlimits.FailureInterval
	}
	return l
}

func (g *loginGuard) init(limits LoginLimits, store users.Authenticator) error {
	g.memory = semaphore.NewWeighted(HashMemoryCap)
	if err := g.setLimits(limits, store); err != nil {
		return err
	}
	g.measure(store)
	return nil
}

// setLimits builds limiters for limits and puts them in place. Changed limits start afresh: the counts of
// failures so far are forgotten (a reload is an administrator's act; an attacker cannot cause one).
func (g *loginGuard) setLimits(limits LoginLimits, store users.Authenticator) error {
	limits = limits.withDefaults()
	if cur := g.limits.Load(); cur != nil && cur.LoginLimits == limits {
		return nil
	}
	budget := float64(limits.HashBudget)
	if max := store.MaxParams().Cost(); float64(max) > 2*budget/5 {
		return fmt.Errorf("hash budget %d KiB-passes/s is too small for the most expensive hash in the users file (%d KiB-passes): raise hash_budget", limits.HashBudget, max)
	}
	l := &loginLimits{LoginLimits: limits}
	var err error
	if l.failedBySrc, err = ratelimit.New[netip.Prefix](limits.FailureInterval, limits.FailureBurst, 1<<16); err != nil {
		return err
	}
	if l.failedByLogin, err = ratelimit.New[string](limits.FailureInterval, limits.FailureBurst, 1<<16); err != nil {
		return err
	}
	if l.forgedResumes, err = ratelimit.New[netip.Prefix](limits.FailureInterval, limits.FailureBurst, 1<<16); err != nil {
		return err
	}
	if l.forgedTickets, err = ratelimit.New[netip.Prefix](limits.FailureInterval, limits.FailureBurst, 1<<16); err != nil {
		return err
	}
	// Bursts of two seconds' worth: a handful of simultaneous logins never waits.
	if l.budget, err = ratelimit.NewBudget(budget, 2*budget); err != nil {
		return err
	}
	if l.unproven, err = ratelimit.NewBudget(budget/5, 2*budget/5); err != nil {
		return err
	}
	g.limits.Store(l)
	return nil
}

// measure sets failurePad from the users file's most expensive parameters (called at start and reload).
// The trial hash's memory (64 MiB by default) is handed back to the OS at once: otherwise the next login's
// hash would allocate its own before the collector reclaims this one, and the gateway's peak RSS would
// carry both (measured: 168 MiB instead of 98 in make bench).
func (g *loginGuard) measure(store users.Authenticator) {
	d := users.MeasureCost(store.MaxParams())
	debug.FreeOSMemory()
	g.failurePad.Store(int64(d + d/2 + 5*time.Millisecond))
}

// observe raises failurePad when a hash took longer than the padding covers.
func (g *loginGuard) observe(took time.Duration) {
	want := int64(took + took/4)
	for {
		cur := g.failurePad.Load()
		if want <= cur || g.failurePad.CompareAndSwap(cur, want) {
			return
		}
	}
}

// underPressure reports whether requests must prove their source before any work is done for them: while
// either budget is under half full, and for pressureHold after (otherwise a flood would be let back in to
// spend the unproven budget each time it refilled past half).
func (g *loginGuard) underPressure(now time.Time) bool {
	if l := g.limits.Load(); l.budget.Level(now) < budgetPressure || l.unproven.Level(now) < budgetPressure {
		g.pressureUntil.Store(now.Add(pressureHold).UnixNano())
		return true
	}
	return now.UnixNano() < g.pressureUntil.Load()
}

// noticeGuard bounds the unauthenticated answers the gateway sends to senders it cannot verify (notices,
// cookie replies): a few per second per source prefix, and a global cap, so a flood from spoofed random
// sources cannot turn the gateway into a reflector or make it spend its time in sendmsg.
type noticeGuard struct {
	perSource  *ratelimit.Limiter[netip.Prefix] // notices
	total      *ratelimit.Budget                // notices
	cookies    *ratelimit.Budget                // cookie replies
	cookiesSrc *ratelimit.Limiter[netip.Prefix] // cookie replies: a client needs one cookie per 2 minutes
}

// Global caps per second; bursts of one second's worth.
const (
	maxNoticesPerSecond       = 200
	maxCookieRepliesPerSecond = 20000
)

func (n *noticeGuard) init() error {
	var err error
	if n.perSource, err = ratelimit.New[netip.Prefix](500*time.Millisecond, 4, 1<<16); err != nil {
		return err
	}
	if n.total, err = ratelimit.NewBudget(maxNoticesPerSecond, maxNoticesPerSecond); err != nil {
		return err
	}
	if n.cookies, err = ratelimit.NewBudget(maxCookieRepliesPerSecond, maxCookieRepliesPerSecond); err != nil {
		return err
	}
	// A genuine client answers its first cookie at once and keeps it for 2 minutes, so a source needs few;
	// but many clients may share one NAT address, so the limit is the same order as the kernel's per-source
	// limit on login requests (20 a second, bursts of 40), and the global cap above is what bounds a flood.
	n.cookiesSrc, err = ratelimit.New[netip.Prefix](50*time.Millisecond, 40, 1<<16)
	return err
}

// allow reports whether a notice may go to src now.
func (n *noticeGuard) allow(src netip.Addr, now time.Time) bool {
	return n.total.Level(now) > 0 && n.perSource.Allow(ratelimit.SourcePrefix(src), now) && n.total.Take(1, now)
}

// intakeHandshake is the receive loop's part of a login or resume request: the length and mac1 checks
// (no allocation; BenchmarkCheckMac1 and BenchmarkRejectMac1 in protocol/handshake), then a copy into the
// handshake queue. A wrong mac1 means the sender pinned another gateway key: it may get a keyMismatch
// notice, rate-limited.
func (s *Server) intakeHandshake(b []byte, src netip.AddrPort, from intakeSocket, now time.Time) {
	if err := s.hs.CheckMac1(b); err != nil {
		s.logins.stats.rejected[rejectReasonOf(err)].Add(1)
		if errors.Is(err, handshake.ErrMac1) && s.notices.allow(src.Addr(), now) {
			_ = from.via.writeOne(handshake.NewNotice(handshake.NoticeKeyMismatch, binary.LittleEndian.Uint32(b[4:8])), src)
		}
		return
	}
	if s.underLoad(now) && handshake.Mac2Missing(b) && !s.notices.cookiesSrc.Check(ratelimit.SourcePrefix(src.Addr()), now) {
		// Under load such a request can only be answered with a cookie, and this source has had its share of
		// cookies for now: drop it here rather than spend a queue slot and a worker on it. This is most of a
		// login flood from a few hundred sources.
		s.global.drop(DropHandshakeQueue)
		return
	}
	if dropped, _ := s.hsq.push(b, src, from, now); dropped {
		s.global.drop(DropHandshakeQueue)
		if s.drops.due() {
			s.drops.logf(DropHandshakeQueue, "from", src)
		}
	}
}

// intakeLoop reads a group's handshake socket, to which the classifier steers login requests; anything
// else that lands there (the kernel's hash may put a stray datagram on it) is junk to it. Its vector is
// small: requests are small, and what matters under a flood is that the workers' sockets stay clear.
func (s *Server) intakeLoop(group int) error {
	via := s.hsConns[group]
	from := intakeSocket{via: via, group: group, worker: -1}
	const n = 32
	bufs, sizes, addrs := make([][]byte, n), make([]int, n), make([]netip.AddrPort, n)
	for i := range bufs {
		bufs[i] = make([]byte, protocol.MaxRequestLen+1) // one more: an oversized datagram still fails the length check
	}
	for {
		k, err := via.conn.ReadBatch(bufs, sizes, addrs)
		if err != nil {
			return err
		}
		now := time.Now()
		for i := range k {
			b := bufs[i][:sizes[i]]
			if code, err := protocol.ParseCode(b); err != nil || code != protocol.CodeClientAuthRequest {
				s.global.drop(DropMalformed)
				continue
			}
			s.intakeHandshake(b, addrs[i], from, now)
		}
	}
}

func (s *Server) handshakeWorker(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.hsq.wake:
		}
		for ctx.Err() == nil {
			job, expired, ok := s.hsq.pop(time.Now())
			if expired > 0 {
				s.global.Drops[DropHandshakeQueue].Add(uint64(expired))
			}
			if !ok {
				break
			}
			s.handleHandshake(job)
			s.hsq.done(job)
		}
	}
}

// underLoad reports whether requests must carry a valid mac2 before the gateway decrypts them.
func (s *Server) underLoad(now time.Time) bool {
	return s.hsq.len() > handshakeQueueLen/8 || s.logins.underPressure(now)
}

func (s *Server) handleHandshake(job handshakeJob) {
	s.logins.stats.handled.Add(1)
	now := time.Now()
	req, reply, err := s.hs.ConsumeRequest(job.buf, job.src, now, s.underLoad(now))
	if err != nil {
		if errors.Is(err, handshake.ErrCookieRequired) {
			s.sendCookie(reply, job, now)
			return
		}
		reason := rejectReasonOf(err)
		s.logins.stats.rejected[reason].Add(1)
		s.log.Debug("handshake rejected", "from", job.src, "reason", rejectNames[reason], "err", err)
		return
	}
	defer req.Wipe()
	var out []byte
	switch req.Kind {
	case handshake.KindLogin:
		out = s.login(req, job, now)
	case handshake.KindResume:
		out = s.resume(req, job, now)
	case handshake.KindTicket:
		out = s.ticketLogin(req, job, now)
	}
	if out == nil {
		return // answered later (a padded failure), or not at all
	}
	if err := job.from.via.writeOne(out, job.src); err != nil {
		s.log.Warn("sending handshake response", "to", job.src, "err", err)
	}
}

// reject answers req with an authenticated failure result.
func (s *Server) reject(req *handshake.Request, job handshakeJob, result handshake.Result) []byte {
	out, err := s.hs.Reject(req, result)
	if err != nil {
		s.log.Warn("handshake reject failed", "from", job.src, "err", err)
		return nil
	}
	return out
}

// demandCookie answers req with a cookie instead of a result: its sender must prove its source address.
func (s *Server) demandCookie(req *handshake.Request, job handshakeJob, now time.Time) []byte {
	out, err := s.hs.CookieReply(req, now)
	if err != nil {
		return nil
	}
	s.sendCookie(out, job, now)
	return nil
}

// sendCookie sends a cookie reply within the global cap (a flood of valid-mac1 requests from spoofed
// sources would otherwise have the gateway send as many replies as it receives).
func (s *Server) sendCookie(reply []byte, job handshakeJob, now time.Time) {
	if reply != nil && s.notices.cookiesSrc.Allow(ratelimit.SourcePrefix(job.src.Addr()), now) && s.notices.cookies.Take(1, now) {
		s.logins.stats.cookies.Add(1)
		_ = job.from.via.writeOne(reply, job.src)
	}
}

// login checks a password and creates a pending session for this client instance (see serverSession).
// It returns the datagram to send now, or nil.
func (s *Server) login(req *handshake.Request, job handshakeJob, now time.Time) []byte {
	g := &s.logins
	lim := g.limits.Load()
	src := ratelimit.SourcePrefix(job.src.Addr())
	if !lim.failedBySrc.Check(src, now) {
		g.stats.rateLimited.Add(1)
		s.log.Warn("login rate limited", "user", req.Login, "from", job.src, "reason", "failed attempts from this source")
		return s.reject(req, job, handshake.ResultRateLimited)
	}
	cost := float64(s.cfg.Users.ParamsFor(req.Login).Cost())
	if !req.SourceProven {
		// A login that others are failing at, or any login once the budget runs low, is hashed only for
		// senders that proved their address; and unproven senders share a small part of the budget.
		if !lim.failedByLogin.Check(req.Login, now) || g.underPressure(now) || !lim.unproven.Take(cost, now) {
			return s.demandCookie(req, job, now)
		}
	}
	if !lim.budget.Take(cost, now) {
		g.stats.busy.Add(1)
		s.log.Warn("login refused: password-hashing budget spent", "user", req.Login, "from", job.src)
		return s.reject(req, job, handshake.ResultBusy)
	}
	mem := min(int64(s.cfg.Users.ParamsFor(req.Login).Memory), HashMemoryCap)
	_ = g.memory.Acquire(context.Background(), mem) // cannot fail: no cancellation, mem <= the cap
	started := time.Now()
	user, err := s.cfg.Users.Authenticate(req.Login, req.Password)
	if mem >= bigHashMemory {
		// argon2id's memory is garbage once it returns. Hand it back to the OS now, before the next hash may
		// start: left to the collector, a login flood's few hashes pile up (measured: 259 MiB peak RSS after
		// a 3 s flood, against 79 MiB before it), and even a collection right after each hash leaves the
		// next one in fresh pages often enough to reach twice the memory. A collection and scavenge of this
		// small heap costs a few milliseconds, at most ten times a second, and the next hash faults its
		// pages in again (a few percent of a 100 ms hash).
		debug.FreeOSMemory()
	}
	g.memory.Release(mem)
	if errors.Is(err, users.ErrUnavailable) {
		// Nothing was checked, so nobody is charged a failure, and the answer need not be padded: it says
		// nothing about the login.
		g.stats.unavailable.Add(1)
		s.log.Warn("login refused: the user store is unavailable", "user", req.Login, "from", job.src)
		return s.reject(req, job, handshake.ResultUnavailable)
	}
	g.hashes.Add(1)
	g.observe(time.Since(started))
	if err != nil { // unknown user, wrong password or disabled: one answer, after one time
		g.stats.failed.Add(1)
		lim.failedBySrc.Allow(src, now)
		lim.failedByLogin.Allow(req.Login, now)
		s.log.Warn("login failed", "user", req.Login, "from", job.src, "reason", "bad credentials")
		out := s.reject(req, job, handshake.ResultBadCredentials)
		s.sendAt(started.Add(time.Duration(g.failurePad.Load())), out, job)
		return nil
	}
	out, ok := s.startSession(req, user, job, pendingLogin{authAt: now}, "login", now)
	if ok {
		g.stats.ok.Add(1)
	}
	return out
}

// startSession creates the pending session of a verified login (what: "login" or "ticket") and returns
// the datagram to send: the response, or the reason it failed; ok reports a session.
func (s *Server) startSession(req *handshake.Request, user users.User, job handshakeJob, pl pendingLogin, what string, now time.Time) (_ []byte, ok bool) {
	out, kp, err := s.addPending(req, user, job, pl, now)
	if err != nil {
		var r resultError
		if errors.As(err, &r) {
			return s.reject(req, job, r.result), false
		}
		s.log.Warn(what+" accepted but session not created", "user", req.Login, "err", err)
		return s.reject(req, job, handshake.ResultServerError), false
	}
	s.log.Debug(what+" accepted; waiting for the client's first packet", "user", user.Login, "endpoint", job.src,
		"index", kp.LocalIndex())
	return out, true
}

// sendAt sends out at t (at once if t has passed), without holding a handshake worker while waiting.
func (s *Server) sendAt(t time.Time, out []byte, job handshakeJob) {
	if out == nil {
		return
	}
	send := func() { _ = job.from.via.writeOne(out, job.src) }
	if d := time.Until(t); d > 0 {
		time.AfterFunc(d, send)
		return
	}
	send()
}

// resultError carries a handshake result out of the session code.
type resultError struct{ result handshake.Result }

func (r resultError) Error() string { return r.result.String() }

// pendingLogin is how a verified login came about: when its password was checked (now, or for a ticket
// when the ticket's first session logged in) and, for a ticket, the addresses it had.
type pendingLogin struct {
	authAt       time.Time
	want4, want6 netip.Addr
}

// addPending accepts a verified login: it leases the instance's addresses (asking the shared lease store,
// if there is one, before it takes the gateway's lock) and installs the new key as the pending session of
// this instance, replacing an older pending one. Nothing that routes traffic changes
// until the client uses the key (promoteLocked).
func (s *Server) addPending(req *handshake.Request, user users.User, job handshakeJob, pl pendingLogin, now time.Time) ([]byte, *transport.Keypair, error) {
	l, err := s.leaseFor(user, req.InstanceID, pl)
	if err != nil {
		s.log.Warn("no tunnel address for login", "user", user.Login, "err", err)
		r := leaseResult(err)
		switch r {
		case handshake.ResultUnavailable:
			s.logins.stats.unavailable.Add(1)
		case handshake.ResultBusy:
			s.logins.stats.busy.Add(1)
		}
		return nil, nil, resultError{r}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	key := instanceKey{user.Login, req.InstanceID}
	sess := &serverSession{user: user.Login, instance: req.InstanceID, hash: user.Hash, lease: l,
		addr4: l.addr4, addr6: l.addr6, created: now, authAt: pl.authAt}
	// A session belongs to the worker whose socket received its login (the kernel's reuseport hash put its
	// 4-tuple there, so without a classifier its data arrives there too); a login that came in on a
	// handshake socket (the classifier steers data by index anyway) goes to the workers in turn.
	sess.worker = job.from.worker
	if sess.worker < 0 {
		sess.worker = int(s.nextWorker.Add(1) % uint32(s.workers))
	}
	socket := s.layout.socket(job.from.group, sess.worker)
	idx := s.newIndex(sess.worker)
	out, keys, err := s.hs.Accept(req, idx, s.settingsFor(sess), s.issueTicket(sess, user, now), now)
	if err == nil {
		var kp *transport.Keypair
		kp, err = transport.NewKeypair(keys.Suite, keys.Send, keys.Recv, keys.LocalIndex, keys.RemoteIndex, false, now)
		if err == nil {
			if old := s.pending[key]; old != nil {
				s.removeLocked(old, "")
			}
			sess.next.Store(kp)
			sess.endpoint.Store(&endpoint{addr: job.src, socket: socket})
			sess.lastRecv.Store(now.UnixNano())
			sess.lastHandshake.Store(now.UnixNano())
			s.pending[key] = sess
			s.addIndex(idx, keyEntry{kp: kp, sess: sess, resumeKey: keys.ResumeKey})
			return out, kp, nil
		}
	}
	s.queueReleaseLocked(l) // claimed in the shared store for nothing
	s.leases.release(l)
	if errors.Is(err, handshake.ErrNoCommonSuite) {
		return nil, nil, resultError{handshake.ResultVersionMismatch}
	}
	return nil, nil, err
}

// resume rekeys a session without a password: the proof is a MAC under the resume key of the keypair whose
// index the request names. It returns the datagram to send.
func (s *Server) resume(req *handshake.Request, job handshakeJob, now time.Time) []byte {
	over, chargeForgery := s.overForgeryLimit(s.logins.limits.Load().forgedResumes, job, now)
	if over {
		return s.reject(req, job, handshake.ResultRateLimited)
	}
	result, out, kp, forged := s.resumeSession(req, now)
	switch {
	case result == handshake.ResultOK:
		s.logins.stats.resumed.Add(1)
		s.log.Debug("resume accepted", "user", req.Login, "endpoint", job.src, "index", kp.LocalIndex())
		return out
	case forged:
		// A live session's index with the wrong login, instance or proof: what an attacker trying to take a
		// session over produces. Limited per source like failed logins. A resume of an index the gateway
		// does not know is not charged: that is every client after a gateway restart, and charging it
		// would lock out everybody behind one NAT address once ten of them had tried. Nor is a source
		// that has not proven its address: it is asked to first.
		if !req.SourceProven {
			return s.demandCookie(req, job, now)
		}
		chargeForgery()
	}
	return s.reject(req, job, result)
}

// overForgeryLimit reports whether job's source has failed too many resume or ticket proofs lately (the
// request is then answered "rate limited"), and returns what charges the source one more failure.
func (s *Server) overForgeryLimit(lim *ratelimit.Limiter[netip.Prefix], job handshakeJob, now time.Time) (over bool, charge func()) {
	src := ratelimit.SourcePrefix(job.src.Addr())
	if !lim.Check(src, now) {
		s.logins.stats.rateLimited.Add(1)
		return true, nil
	}
	return false, func() { lim.Allow(src, now) }
}

// resumeSession installs the new key of a verified resume as the session's pending key and returns the
// response to send. forged reports a resume that names a live index but does not prove it.
func (s *Server) resumeSession(req *handshake.Request, now time.Time) (_ handshake.Result, _ []byte, _ *transport.Keypair, forged bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.table.index(req.SessionIndex)
	if !ok {
		return handshake.ResultUnknownSession, nil, nil, false
	}
	if e.sess.user != req.Login || e.sess.instance != req.InstanceID || !req.VerifyResume(e.resumeKey) {
		return handshake.ResultUnknownSession, nil, nil, true
	}
	sess := e.sess
	if !s.userValid(sess) {
		s.endSessionLocked(sess, protocol.DisconnectRevoked, now)
		return handshake.ResultUnknownSession, nil, nil, false
	}
	if age := s.cfg.MaxSessionAge; age > 0 && now.Sub(sess.authAt) > age {
		s.log.Info("session reached max_session_age; the client must log in again", "user", sess.user,
			"age", now.Sub(sess.authAt).Round(time.Second))
		return handshake.ResultUnknownSession, nil, nil, false
	}
	idx := s.newIndex(sess.worker)           // a rekey keeps the session on its worker
	user, _ := s.cfg.Users.Lookup(sess.user) // userValid just found it
	out, keys, err := s.hs.Accept(req, idx, s.settingsFor(sess), s.issueTicket(sess, user, now), now)
	if err != nil {
		return handshake.ResultServerError, nil, nil, false
	}
	kp, err := transport.NewKeypair(keys.Suite, keys.Send, keys.Recv, keys.LocalIndex, keys.RemoteIndex, false, now)
	if err != nil {
		return handshake.ResultServerError, nil, nil, false
	}
	// Only one pending key: a newer resume replaces an unconfirmed one. The endpoint does not move: only
	// an authenticated data packet moves it, so a raced copy of a resume request cannot redirect traffic.
	if old := sess.next.Swap(kp); old != nil {
		s.delIndex(old.LocalIndex())
	}
	s.addIndex(idx, keyEntry{kp: kp, sess: sess, resumeKey: keys.ResumeKey})
	sess.lastHandshake.Store(now.UnixNano())
	return handshake.ResultOK, out, kp, false
}
