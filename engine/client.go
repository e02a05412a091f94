package engine

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/salvovpn/salvo/internal/batchsize"
	"github.com/salvovpn/salvo/internal/buildinfo"
	"github.com/salvovpn/salvo/protocol"
	"github.com/salvovpn/salvo/protocol/handshake"
	"github.com/salvovpn/salvo/protocol/transport"
	"golang.zx2c4.com/wireguard/tun"
)

// SessionEndedError is returned when the gateway ended the session for a reason that forbids reconnecting
// (revoked, replaced, kicked). The CLI prints it and exits non-zero.
type SessionEndedError struct {
	Reason protocol.DisconnectReason
}

func (e *SessionEndedError) Error() string {
	why := map[protocol.DisconnectReason]string{
		protocol.DisconnectRevoked:  "access revoked (the user was removed or disabled, or the password changed)",
		protocol.DisconnectReplaced: "replaced by a newer login of the same user (max_sessions_per_user on the gateway)",
		protocol.DisconnectKicked:   "ended by an administrator (salvo kick)",
	}[e.Reason]
	if why == "" {
		why = e.Reason.String()
	}
	return "the gateway ended the session: " + why + "; not reconnecting"
}

// LoginError is why the client could not log in; the CLI prints it and exits non-zero.
type LoginError struct {
	Reason string // machine-readable: unreachable, bad_credentials, wrong_server_key, rate_limited, busy, no_address, version_mismatch, server_error
	Msg    string
}

func (e *LoginError) Error() string { return e.Msg }

// TunnelSetup is what the client engine asks the OS layer to do once it knows the tunnel settings. Apply is
// called after every successful login whose settings differ from the applied ones; the returned undo is
// called before the next Apply and on exit.
type TunnelSetup interface {
	Apply(dev tun.Device, st handshake.Settings) (undo func(), err error)
}

// ClientConfig is what the client engine needs; the CLI builds it from config.Client.
type ClientConfig struct {
	Server     string // host:port, for messages
	ServerAddr netip.AddrPort
	// Resolve, if set, finds the gateway's address again before each reconnect (its name may point
	// elsewhere now); an error keeps the address it had.
	Resolve func(context.Context) (netip.AddrPort, error)
	// Fallbacks are further gateways, sharing the pinned key, that the client moves on to in turn when
	// the one it uses does not answer a login (Server is the first; after the last comes Server again).
	// A gateway that shares the ticket key takes the client's session ticket, so the move costs no
	// password hash, and gives the client its addresses back where its pools allow.
	Fallbacks []Gateway
	Handshake handshake.ClientConfig
	// LeakGuard, if set, reports the leak guard for Status (nil when none is up).
	LeakGuard func() *LeakGuardStatus
	// OpenTUN creates the device once the first login succeeded (so a failed login leaves nothing behind).
	OpenTUN func(mtu int) (tun.Device, error)
	Setup   TunnelSetup
	Log     *slog.Logger
	// LoginTimeout bounds the first login; later reconnects retry until the context ends.
	LoginTimeout time.Duration
	// RekeyAfter is how old a key gets before the client rekeys; 0 means protocol.RekeyAfterTime. Tests
	// shorten it to exercise rekeys under load in seconds.
	RekeyAfter time.Duration
	// BatchSize is the number of packets per vector; 0 means 128.
	BatchSize int
}

// Gateway is one gateway a client can use.
type Gateway struct {
	Name    string // host:port, for messages
	Addr    netip.AddrPort
	Resolve func(context.Context) (netip.AddrPort, error) // optional, as ClientConfig.Resolve
}

// failoverAfter is how long a reconnect tries one gateway before it moves on to the next, when there is
// one. A gateway that is up answers a resume or a ticket within a round trip, and says "busy" rather than
// nothing when it is loaded; this one has already been silent for two keepalives before the reconnect.
const failoverAfter = protocol.RekeyTimeout

// Client is one tunnel to a gateway.
type Client struct {
	cfg     ClientConfig
	conn    *sender
	log     *slog.Logger
	started time.Time
	// gateways are cfg's Server and then its Fallbacks; gw is the index of the one in use (changed only by
	// the goroutine that logs in). server is its address: the configured one, or what Resolve found at
	// the last reconnect. The data path loads it once per vector.
	gateways []Gateway
	gw       atomic.Int32
	server   atomic.Pointer[netip.AddrPort]

	// dev is written once, by Run, before devReady is closed; other goroutines read it only after devReady
	// (see device).
	dev      tun.Device
	devReady chan struct{}
	undo     func()
	applied  handshake.Settings

	current, previous atomic.Pointer[transport.Keypair]
	counters          Counters
	global            Counters
	lastRecv          atomic.Int64
	lastSend          atomic.Int64
	lastHandshake     atomic.Int64
	state             atomic.Value // string
	drops             dropLogger
	panics            panicGuard

	hsIn  chan []byte                    // handshake-phase datagrams from the receive loop
	ended chan protocol.DisconnectReason // authenticated disconnects from the gateway, from the receive loop

	mu        sync.Mutex
	resumeKey [32]byte
	settings  handshake.Settings
	// ticket is the newest session ticket from the gateway, good until ticketUntil: it starts a new session
	// without the password when the gateway no longer knows ours (a restart). Kept in memory only.
	ticket      handshake.Ticket
	ticketUntil time.Time
}

// NewClient prepares a client on an open UDP socket. Run logs in and moves packets.
func NewClient(cfg ClientConfig, conn PacketConn) *Client {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.LoginTimeout == 0 {
		cfg.LoginTimeout = protocol.HandshakeTimeout
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = batchsize.Default
	}
	if cfg.RekeyAfter <= 0 || cfg.RekeyAfter > protocol.RekeyAfterTime {
		cfg.RekeyAfter = protocol.RekeyAfterTime
	}
	if cfg.Handshake.InstanceID == 0 {
		var b [8]byte
		_, _ = rand.Read(b[:])
		cfg.Handshake.InstanceID = binary.LittleEndian.Uint64(b[:]) | 1
	}
	c := &Client{cfg: cfg, conn: &sender{conn: conn}, log: cfg.Log, started: time.Now(), devReady: make(chan struct{}), hsIn: make(chan []byte, 16),
		ended: make(chan protocol.DisconnectReason, 1)}
	c.drops.log = cfg.Log
	c.state.Store("connecting")
	c.gateways = append([]Gateway{{Name: cfg.Server, Addr: cfg.ServerAddr, Resolve: cfg.Resolve}}, cfg.Fallbacks...)
	addr := cfg.ServerAddr
	c.server.Store(&addr)
	return c
}

// gateway is the gateway in use.
func (c *Client) gateway() Gateway { return c.gateways[c.gw.Load()] }

// failover moves to the next gateway, at its configured address (reresolve looks its name up again), and
// reports whether there was another one to move to.
func (c *Client) failover() bool {
	if len(c.gateways) < 2 {
		return false
	}
	from := c.gateway()
	c.gw.Store(int32((int(c.gw.Load()) + 1) % len(c.gateways)))
	to := c.gateway()
	addr := to.Addr
	c.server.Store(&addr)
	c.log.Warn("gateway not answering; trying the next one", "from", from.Name, "to", to.Name)
	return true
}

// attemptTimeout is how long one login attempt may take on the gateway in use: the whole limit with only
// one gateway, else at most failoverAfter before the next one is tried.
func (c *Client) attemptTimeout(limit time.Duration) time.Duration {
	if len(c.gateways) > 1 {
		return min(limit, failoverAfter)
	}
	return limit
}

// unreachable reports whether err is a login that got no answer at all.
func unreachable(err error) bool {
	var le *LoginError
	return errors.As(err, &le) && le.Reason == "unreachable"
}

// ServerAddr is the gateway's current address (a reconnect may have looked its name up again).
func (c *Client) ServerAddr() netip.AddrPort { return *c.server.Load() }

// Run logs in (failing with a *LoginError after LoginTimeout), sets up the tunnel and runs until ctx ends.
// On return everything it added to the system is removed again and a disconnect has been sent.
func (c *Client) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 3)
	wg.Add(1)
	go func() { // long-lived: the inbound data path
		defer wg.Done()
		if err := c.receiveLoop(); ctx.Err() == nil {
			errc <- fmt.Errorf("udp receive: %w", err)
		}
		cancel()
	}()
	defer func() {
		c.conn.conn.Close()
		if c.dev != nil {
			c.dev.Close()
		}
		wg.Wait()
		if c.undo != nil {
			c.undo()
		}
	}()

	// The first login tries every gateway in turn, each for the whole LoginTimeout.
	var err error
	for i := range c.gateways {
		loginCtx, loginCancel := context.WithTimeout(ctx, c.cfg.LoginTimeout)
		err = c.login(loginCtx, false)
		loginCancel()
		if !unreachable(err) || ctx.Err() != nil || i == len(c.gateways)-1 {
			break
		}
		c.failover()
	}
	if err != nil {
		if ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil
		}
		return err
	}
	dev, err := c.cfg.OpenTUN(int(c.settings.MTU))
	if err != nil {
		return err
	}
	c.dev = dev
	if err := c.applySettings(); err != nil {
		c.sendDisconnect()
		return err
	}
	close(c.devReady)
	wg.Add(1)
	go func() { // long-lived: the outbound data path
		defer wg.Done()
		if err := c.tunLoop(ctx); err != nil && ctx.Err() == nil {
			errc <- fmt.Errorf("tun read: %w", err)
		}
		cancel()
	}()
	c.state.Store("connected")
	err = c.maintain(ctx)
	c.sendDisconnect()
	select {
	case e := <-errc:
		return e
	default:
	}
	return err
}

// device returns the TUN device once Run has opened it, else nil. Safe from any goroutine: the close of
// devReady orders Run's write of dev before every read that follows it.
func (c *Client) device() tun.Device {
	select {
	case <-c.devReady:
		return c.dev
	default:
		return nil
	}
}

func (c *Client) applySettings() error {
	c.mu.Lock()
	st := c.settings
	c.mu.Unlock()
	if settingsEqual(st, c.applied) && c.undo != nil {
		return nil
	}
	if c.undo != nil {
		c.undo()
		c.undo = nil
	}
	undo, err := c.cfg.Setup.Apply(c.dev, st)
	if err != nil {
		return fmt.Errorf("configure tunnel: %w", err)
	}
	c.undo, c.applied = undo, st
	return nil
}

func settingsEqual(a, b handshake.Settings) bool {
	return fmt.Sprint(a) == fmt.Sprint(b)
}

// login runs handshakes until one succeeds, the context ends, or the gateway gives a final answer.
// resume asks for a rekey of the live session first (no password hashing on the gateway).
func (c *Client) login(ctx context.Context, resume bool) error {
	var (
		cookie      *handshake.Cookie
		keyMismatch bool
		rateLimited bool
		busy        bool
		storeDown   bool
		attempt     int
		// The attempts still awaiting an answer, newest last: a gateway that takes longer than our
		// backoff to hash a password answers an attempt we have already retransmitted, and that answer
		// is as good as the next one, which would only cost the gateway another hash.
		attempts []pendingAttempt
		// A login that may not rekey (resume false, or its resume was refused) tries the held ticket, if
		// any, before the password: after a gateway restart that costs the gateway no password hash.
		useTicket = true
	)
	for {
		now := time.Now()
		idx := c.newIndex()
		var (
			h   *handshake.ClientHandshake
			msg []byte
			err error
		)
		if cookie != nil && now.Sub(cookie.ReceivedAt()) > 2*time.Minute {
			cookie = nil
		}
		cur := c.current.Load()
		kind := handshake.KindLogin
		c.mu.Lock()
		rk, tk := c.resumeKey, c.ticket
		if !now.Before(c.ticketUntil) {
			tk = handshake.Ticket{}
		}
		c.mu.Unlock()
		switch {
		case resume && cur != nil:
			kind = handshake.KindResume
			h, msg, err = handshake.NewResume(&c.cfg.Handshake, idx, cur.RemoteIndex(), rk, now, cookie)
		case useTicket && !tk.IsZero():
			kind = handshake.KindTicket
			h, msg, err = handshake.NewTicketRequest(&c.cfg.Handshake, idx, tk, now, cookie)
		default:
			h, msg, err = handshake.NewLogin(&c.cfg.Handshake, idx, now, cookie)
		}
		if err != nil {
			return err
		}
		attempts = append(attempts, pendingAttempt{h: h, kind: kind})
		if len(attempts) > maxPendingAttempts {
			attempts = attempts[1:]
		}
		if err := c.conn.writeOne(msg, c.ServerAddr()); err != nil {
			c.log.Debug("sending handshake", "err", err)
		}
		// Back off 1, 2, 4 s, at most 4 s, so a slow gateway can answer and a dead one is not flooded, with
		// ±25% jitter so clients that lost their gateway together do not come back in lockstep.
		wait := jitter(time.Second << min(attempt, 2))
		attempt++
		timer := time.NewTimer(wait)
	waitLoop:
		for {
			select {
			case <-ctx.Done():
				timer.Stop()
				switch {
				case keyMismatch:
					return &LoginError{"wrong_server_key", fmt.Sprintf("login to %s failed: the gateway rejected our handshake: wrong server public key in the client config", c.gateway().Name)}
				case rateLimited:
					return &LoginError{"rate_limited", fmt.Sprintf("login to %s failed: rate limited by the gateway after failed attempts; wait and retry", c.gateway().Name)}
				case storeDown:
					return &LoginError{"store_unavailable", fmt.Sprintf("login to %s failed: the gateway could not start our session within %s (its user store is unavailable, or its lease store); retry later", c.gateway().Name, c.cfg.LoginTimeout)}
				case busy:
					return &LoginError{"busy", fmt.Sprintf("login to %s failed: the gateway was too busy to check our password within %s (its password-hashing budget is spent); retry later", c.gateway().Name, c.cfg.LoginTimeout)}
				}
				return &LoginError{"unreachable", fmt.Sprintf("login to %s failed: server unreachable (no answer within %s)", c.gateway().Name, c.cfg.LoginTimeout)}
			case <-timer.C:
				break waitLoop
			case reason := <-c.ended:
				// The gateway ended the session while we rekey (it revoked the user, say): say that rather
				// than whatever the handshake would have ended with.
				if reason.Final() {
					timer.Stop()
					return &SessionEndedError{Reason: reason}
				}
			case b := <-c.hsIn:
				code, _ := protocol.ParseCode(b)
				switch code {
				case protocol.CodeCookieReply:
					if a := findAttempt(attempts, b); a != nil {
						if ck, err := a.h.ConsumeCookieReply(b, time.Now()); err == nil {
							cookie = ck
							timer.Stop()
							break waitLoop // retry at once with mac2
						}
					}
				case protocol.CodeNotice:
					if reason, index, err := handshake.ParseNotice(b); err == nil && index == h.LocalIndex() && reason == handshake.NoticeKeyMismatch {
						keyMismatch = true
					}
				case protocol.CodeServerAuthResponse:
					a := findAttempt(attempts, b)
					if a == nil {
						c.log.Debug("ignoring a handshake response for none of our attempts")
						continue
					}
					result, keys, st, err := a.h.ConsumeResponse(b)
					if err != nil {
						c.log.Debug("ignoring handshake response", "err", err)
						continue
					}
					switch result {
					case handshake.ResultBusy:
						// The gateway's hashing budget is spent for now: retry when the backoff timer fires.
						busy = true
						c.log.Debug("gateway busy; retrying", "server", c.gateway().Name)
						continue
					case handshake.ResultUnavailable:
						// The gateway cannot reach its user store: retry, like busy.
						storeDown = true
						c.log.Debug("gateway cannot check passwords now; retrying", "server", c.gateway().Name)
						continue
					case handshake.ResultRateLimited:
						if a.kind == handshake.KindTicket && useTicket {
							// Failed tickets from our address (a neighbour behind our NAT) are limited;
							// the password is not.
							useTicket = false
							timer.Stop()
							break waitLoop
						}
						// Too many failures from our address: trying again before this attempt times out
						// would only be refused again.
						timer.Stop()
						rateLimited = true
						continue
					}
					timer.Stop()
					switch result {
					case handshake.ResultOK:
						return c.install(keys, st, a.kind)
					case handshake.ResultUnknownSession:
						// The gateway lost our session: start a new one, with the ticket if it still
						// takes that, else with the password.
						if a.kind == handshake.KindTicket {
							useTicket = false
							c.dropTicket()
						}
						resume = false
						break waitLoop
					case handshake.ResultBadCredentials:
						return &LoginError{"bad_credentials", fmt.Sprintf("login to %s failed: wrong username or password", c.gateway().Name)}
					case handshake.ResultNoAddress:
						return &LoginError{"no_address", fmt.Sprintf("login to %s failed: the gateway has no tunnel address left", c.gateway().Name)}
					case handshake.ResultVersionMismatch:
						return &LoginError{"version_mismatch", fmt.Sprintf("login to %s failed: no protocol version or cipher suite in common with the gateway", c.gateway().Name)}
					default:
						return &LoginError{"server_error", fmt.Sprintf("login to %s failed: the gateway reported %v", c.gateway().Name, result)}
					}
				}
			}
		}
	}
}

// maxPendingAttempts is how many of a login's attempts may still be answered: with a backoff of 1, 2, 4 s,
// three cover a gateway that takes up to 7 s to hash.
const maxPendingAttempts = 3

// pendingAttempt is one handshake of a login call that may still be answered.
type pendingAttempt struct {
	h    *handshake.ClientHandshake
	kind handshake.Kind
}

// dropTicket forgets a ticket the gateway refused.
func (c *Client) dropTicket() {
	c.mu.Lock()
	c.ticket, c.ticketUntil = handshake.Ticket{}, time.Time{}
	c.mu.Unlock()
}

// findAttempt returns the attempt a serverAuthResponse or cookieReply (receiver index at bytes 4..7) is
// addressed to, or nil.
func findAttempt(attempts []pendingAttempt, b []byte) *pendingAttempt {
	if len(b) < 8 {
		return nil
	}
	idx := binary.LittleEndian.Uint32(b[4:8])
	for i := range attempts {
		if attempts[i].h.LocalIndex() == idx {
			return &attempts[i]
		}
	}
	return nil
}

// jitter returns d scaled by a random factor in [0.75, 1.25).
func jitter(d time.Duration) time.Duration {
	var b [2]byte
	_, _ = rand.Read(b[:])
	f := 0.75 + float64(binary.LittleEndian.Uint16(b[:]))/65536/2
	return time.Duration(float64(d) * f)
}

func (c *Client) newIndex() uint32 {
	var b [4]byte
	for {
		_, _ = rand.Read(b[:])
		if i := binary.LittleEndian.Uint32(b[:]); i != 0 {
			return i
		}
	}
}

// install makes a completed handshake's keys current; after a resume (a rekey) the old key stays for
// packets still in flight.
func (c *Client) install(keys handshake.SessionKeys, st handshake.Settings, kind handshake.Kind) error {
	now := time.Now()
	rekey := kind == handshake.KindResume
	kp, err := transport.NewKeypair(keys.Suite, keys.Send, keys.Recv, keys.LocalIndex, keys.RemoteIndex, true, now)
	if err != nil {
		return err
	}
	if rekey {
		c.previous.Store(c.current.Load())
	} else {
		c.previous.Store(nil)
	}
	c.current.Store(kp)
	c.mu.Lock()
	c.resumeKey = keys.ResumeKey
	c.settings = st
	if !keys.Ticket.IsZero() {
		c.ticket, c.ticketUntil = keys.Ticket, now.Add(keys.Ticket.Lifetime)
	}
	c.mu.Unlock()
	c.lastHandshake.Store(now.UnixNano())
	c.lastRecv.Store(now.UnixNano())
	// The gateway switches to the new keys (and a login goes live) when it receives a packet under them:
	// send one now rather than wait for traffic.
	c.sendKeepalive(kp, now)
	if !rekey {
		how := "password"
		if kind == handshake.KindTicket {
			how = "session ticket"
		}
		c.log.Info("logged in", "server", c.gateway().Name, "with", how, "ipv4", st.IPv4, "ipv6", st.IPv6, "suite", keys.Suite.String(),
			"mtu", st.MTU, "routes", fmt.Sprint(st.Routes))
	} else {
		c.log.Info("resumed: new session keys", "index", kp.LocalIndex())
	}
	return nil
}

// unknownSessionGrace is how long the gateway must have been silent before the client believes an
// unknownSession notice. Notices are unauthenticated, so anyone who can send UDP from the gateway's address
// can forge one; a gateway that still knows the session answers data or sends keepalives, so a notice
// received while it talks is a lie. A gateway that restarted has been silent since, and a client that is
// sending gets a notice for every burst, so it is back within this grace plus one login.
const unknownSessionGrace = 5 * time.Second

// maintain is the client's control loop: keepalives, rekeys, reconnects when the gateway went away, and the
// gateway's disconnects.
func (c *Client) maintain(ctx context.Context) error {
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case reason := <-c.ended:
			if reason.Final() {
				c.log.Error("the gateway ended the session", "reason", reason.String())
				c.current.Store(nil) // nothing more to say to the gateway: no disconnect on the way out
				return &SessionEndedError{Reason: reason}
			}
			c.log.Info("the gateway is shutting down; reconnecting", "reason", reason.String())
			if err := c.sleep(ctx, jitter(time.Second)); err != nil {
				return nil
			}
			if err := c.reconnect(ctx, false); err != nil {
				return err
			}
		case b := <-c.hsIn:
			// Outside a handshake only an unknownSession notice for our current key matters: the gateway may
			// have restarted. Believe it only after the gateway has been silent for a while, and try a
			// resume first, so a forged notice costs at most a rekey.
			reason, index, err := handshake.ParseNotice(b)
			kp := c.current.Load()
			if err != nil || reason != handshake.NoticeUnknownSession || kp == nil || kp.RemoteIndex() != index {
				continue
			}
			silent := time.Since(time.Unix(0, c.lastRecv.Load()))
			if silent < unknownSessionGrace {
				c.log.Debug("ignoring an unknown-session notice while the gateway talks", "silent_for", silent.Round(time.Millisecond))
				continue
			}
			c.log.Info("gateway does not know our session; resuming, else logging in again", "silent_for", silent.Round(time.Second))
			if err := c.reconnect(ctx, true); err != nil {
				return err
			}
		case now := <-tick.C:
			kp := c.current.Load()
			lastRecv := time.Unix(0, c.lastRecv.Load())
			keepalive := c.keepalive()
			switch {
			case kp == nil || kp.Expired(now) || now.Sub(lastRecv) > keepalive*2+protocol.RekeyTimeout:
				c.log.Info("no answer from the gateway; reconnecting", "silent_for", now.Sub(lastRecv).Round(time.Second))
				if err := c.reconnect(ctx, kp != nil && !kp.Expired(now)); err != nil {
					return err
				}
			case kp.NeedsRekey(now) || now.Sub(kp.Created()) >= c.cfg.RekeyAfter:
				rctx, cancel := context.WithTimeout(ctx, 3*protocol.RekeyTimeout)
				err := c.login(rctx, true)
				cancel()
				if err == nil {
					err = c.applySettings()
				}
				if stopsClient(err) {
					return err
				}
				if err != nil && ctx.Err() == nil {
					c.log.Debug("resume failed; will retry", "err", err)
				}
			case now.Sub(time.Unix(0, c.lastSend.Load())) >= keepalive:
				c.sendKeepalive(kp, now)
			}
		}
	}
}

// keepalive is the interval pushed by the gateway, or the default when it pushed 0 (the gateway uses the
// same rule for its own keepalives).
func (c *Client) keepalive() time.Duration {
	c.mu.Lock()
	k := c.settings.Keepalive
	c.mu.Unlock()
	if k <= 0 {
		return protocol.KeepaliveDefault
	}
	return k
}

func (c *Client) sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// reconnect logs in again until it works or ctx ends; the TUN device and routes stay, so traffic resumes
// as soon as the new session is up, and pushed settings that changed replace the applied ones. Bad
// credentials end the client.
func (c *Client) reconnect(ctx context.Context, tryResume bool) error {
	c.state.Store("reconnecting")
	for ctx.Err() == nil {
		c.reresolve(ctx)
		lctx, cancel := context.WithTimeout(ctx, c.attemptTimeout(c.cfg.LoginTimeout))
		err := c.login(lctx, tryResume)
		cancel()
		tryResume = false
		if unreachable(err) && ctx.Err() == nil && c.failover() {
			continue
		}
		if err == nil {
			if err := c.applySettings(); err != nil {
				return err
			}
			c.state.Store("connected")
			return nil
		}
		if stopsClient(err) {
			return err
		}
		if ctx.Err() == nil {
			c.log.Warn("reconnect failed; retrying", "err", err)
		}
	}
	return nil
}

// reresolve looks the gateway's name up again (Resolve), so a reconnect follows a gateway that moved.
func (c *Client) reresolve(ctx context.Context) {
	gw := c.gateway()
	if gw.Resolve == nil {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	addr, err := gw.Resolve(rctx)
	cancel()
	switch {
	case err != nil:
		c.log.Warn("resolving the gateway again failed; keeping its address", "server", gw.Name, "address", c.ServerAddr(), "err", err)
	case addr != c.ServerAddr():
		c.log.Info("the gateway's address changed", "server", gw.Name, "from", c.ServerAddr(), "to", addr)
		c.server.Store(&addr)
	}
}

// stopsClient reports whether err ends the client instead of another attempt: the gateway refused our
// credentials, or ended the session for good.
func stopsClient(err error) bool {
	var le *LoginError
	var se *SessionEndedError
	return errors.As(err, &le) && le.Reason == "bad_credentials" || errors.As(err, &se)
}

func (c *Client) sendKeepalive(kp *transport.Keypair, now time.Time) {
	var b [protocol.DataOverhead]byte
	m, err := kp.Seal(protocol.CodeData, b[:], 0, now)
	if err != nil {
		return
	}
	if c.conn.writeOne(b[:m], c.ServerAddr()) == nil {
		c.lastSend.Store(now.UnixNano())
	}
}

// sendDisconnect tells the gateway we are leaving so it frees the address at once.
func (c *Client) sendDisconnect() {
	kp := c.current.Load()
	if kp == nil {
		return
	}
	var b [protocol.DataOverhead + 1]byte
	b[protocol.Headroom] = byte(protocol.DisconnectShutdown)
	m, err := kp.Seal(protocol.CodeDisconnect, b[:], 1, time.Now())
	if err == nil {
		_ = c.conn.writeOne(b[:m], c.ServerAddr())
	}
}

// Status reports the tunnel for the control socket.
func (c *Client) Status() Status {
	st := Status{Role: "client", Version: buildinfo.Read().Version, Started: c.started, State: c.state.Load().(string),
		Global: c.global.Snapshot(), Runtime: readRuntimeStats(), Panics: c.panics.count.Load()}
	if dev := c.device(); dev != nil {
		if name, err := dev.Name(); err == nil {
			st.Device = name
		}
	}
	c.mu.Lock()
	settings := c.settings
	c.mu.Unlock()
	ss := SessionStatus{User: c.cfg.Handshake.Login, Endpoint: c.ServerAddr().String(), Counters: c.counters.Snapshot(),
		LastHandshake: time.Unix(0, c.lastHandshake.Load()), LastReceive: time.Unix(0, c.lastRecv.Load())}
	for _, p := range []netip.Prefix{settings.IPv4, settings.IPv6} {
		if p.IsValid() {
			ss.Addresses = append(ss.Addresses, p.String())
		}
	}
	if kp := c.current.Load(); kp != nil {
		ss.SessionIndex = kp.RemoteIndex()
		ss.Suite = kp.Suite().String()
	}
	st.Sessions = []SessionStatus{ss}
	if c.cfg.LeakGuard != nil {
		st.LeakGuard = c.cfg.LeakGuard()
	}
	return st
}
