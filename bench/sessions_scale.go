package bench

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/salvovpn/salvo/batch"
	"github.com/salvovpn/salvo/engine"
	"github.com/salvovpn/salvo/engine/users"
	"github.com/salvovpn/salvo/protocol"
	"github.com/salvovpn/salvo/protocol/handshake"
	"github.com/salvovpn/salvo/protocol/transport"
)

// The many-session benchmark's clients are bare handshakes over batch sockets, not client engines: ten
// thousand engines would measure the benchmark's own machine share, not the gateway.

// sessionsPerUser is how many of the benchmark's sessions share a user: max_sessions_per_user is at most
// 1024, and the gateway replaces a user's oldest session beyond it.
const sessionsPerUser = 1000

func sessionUsers(sessions int) int { return (sessions + sessionsPerUser - 1) / sessionsPerUser }

// benchSession is one logged-in session: its keys, its resume key (to rekey without a password), and the
// inner packet it sends.
type benchSession struct {
	conn      *sessionConn
	hc        handshake.ClientConfig
	kp        *transport.Keypair
	resumeKey [32]byte
	ticket    handshake.Ticket // the newest the gateway handed out
	addr      netip.Addr
	pkt       []byte
}

// sessionConn is a client socket with a reader, so handshakes can wait for an answer with a timeout (a
// batch.Conn read has no deadline). One handshake at a time per socket: an answer that does not open
// under it belongs to an earlier attempt and is skipped.
type sessionConn struct {
	c  *batch.Conn
	in chan []byte
	mu sync.Mutex // one write at a time: a return's keepalives run beside its handshakes
}

func (sc *sessionConn) write(b []byte, to netip.AddrPort) error {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	_, err := sc.c.WriteBatch([][]byte{b}, []netip.AddrPort{to})
	return err
}

func newSessionConn(c *batch.Conn) *sessionConn {
	sc := &sessionConn{c: c, in: make(chan []byte, 16)}
	go func() {
		bufs := [][]byte{make([]byte, batch.MaxPacket)}
		sizes, addrs := make([]int, 1), make([]netip.AddrPort, 1)
		for {
			n, err := c.ReadBatch(bufs, sizes, addrs)
			if err != nil {
				close(sc.in)
				return
			}
			if n == 0 || sizes[0] == 0 {
				continue
			}
			switch protocol.Code(bufs[0][0]) {
			case protocol.CodeServerAuthResponse, protocol.CodeCookieReply:
				select {
				case sc.in <- append([]byte(nil), bufs[0][:sizes[0]]...):
				default: // nobody waiting for this many: a stale answer
				}
			}
		}
	}()
	return sc
}

// handshakeRetry is how long a handshake waits before sending its request again: the kernel classifier
// drops login requests over its per-source rate (the benchmark's sessions share one source address), and
// the next attempt goes out when the bucket may have refilled.
const handshakeRetry = 250 * time.Millisecond

// handshake runs one login or resume that build makes, answering cookie demands, and returns the keys.
func (sc *sessionConn) handshake(ctx context.Context, server netip.AddrPort, build func(*handshake.Cookie) (*handshake.ClientHandshake, []byte, error)) (handshake.SessionKeys, handshake.Settings, error) {
	var cookie *handshake.Cookie
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		h, msg, err := build(cookie)
		if err != nil {
			return handshake.SessionKeys{}, handshake.Settings{}, err
		}
		if err := sc.write(msg, server); err != nil {
			return handshake.SessionKeys{}, handshake.Settings{}, err
		}
		retry := time.NewTimer(handshakeRetry)
	wait:
		for {
			select {
			case b, ok := <-sc.in:
				if !ok {
					retry.Stop()
					return handshake.SessionKeys{}, handshake.Settings{}, errors.New("socket closed")
				}
				if protocol.Code(b[0]) == protocol.CodeCookieReply {
					if ck, err := h.ConsumeCookieReply(b, time.Now()); err == nil {
						cookie = ck
						break wait // ask again at once, with the cookie
					}
					continue
				}
				result, keys, st, err := h.ConsumeResponse(b)
				if err != nil {
					continue // an answer to an earlier attempt
				}
				retry.Stop()
				if result != handshake.ResultOK {
					return keys, st, fmt.Errorf("gateway answered %v", result)
				}
				return keys, st, nil
			case <-retry.C:
				break wait
			}
		}
		retry.Stop()
	}
	return handshake.SessionKeys{}, handshake.Settings{}, errors.New("no answer within 30s")
}

func randomIndex() uint32 {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return binary.LittleEndian.Uint32(b[:]) | 1
}

// login logs s in (a full login: Noise and argon2id at the gateway) and confirms the session with a
// keepalive, as a client's first packet does.
func (s *benchSession) login(ctx context.Context, server netip.AddrPort) error {
	idx := randomIndex()
	keys, st, err := s.conn.handshake(ctx, server, func(ck *handshake.Cookie) (*handshake.ClientHandshake, []byte, error) {
		return handshake.NewLogin(&s.hc, idx, time.Now(), ck)
	})
	if err != nil {
		return err
	}
	s.addr = st.IPv4.Addr()
	return s.install(keys, server)
}

// rekey resumes s without a password, as a client does every RekeyAfterTime, and confirms the new keys.
func (s *benchSession) rekey(ctx context.Context, server netip.AddrPort) error {
	idx := randomIndex()
	keys, _, err := s.conn.handshake(ctx, server, func(ck *handshake.Cookie) (*handshake.ClientHandshake, []byte, error) {
		return handshake.NewResume(&s.hc, idx, s.kp.RemoteIndex(), s.resumeKey, time.Now(), ck)
	})
	if err != nil {
		return err
	}
	return s.install(keys, server)
}

func (s *benchSession) install(keys handshake.SessionKeys, server netip.AddrPort) error {
	kp, err := transport.NewKeypair(keys.Suite, keys.Send, keys.Recv, keys.LocalIndex, keys.RemoteIndex, true, time.Now())
	if err != nil {
		return err
	}
	s.kp, s.resumeKey = kp, keys.ResumeKey
	if !keys.Ticket.IsZero() {
		s.ticket = keys.Ticket
	}
	return s.keepalive(server)
}

// keepalive sends an empty data packet: it confirms fresh keys and keeps the gateway from expiring the
// session while the benchmark does something else.
func (s *benchSession) keepalive(server netip.AddrPort) error {
	b := make([]byte, protocol.DataOverhead)
	n, err := s.kp.Seal(protocol.CodeData, b, 0, time.Now())
	if err != nil {
		return err
	}
	return s.conn.write(b[:n], server)
}

// loginAll logs every session in, inFlight at a time (sessions that share a socket must go one at a
// time), and returns how long that took.
func loginAll(ctx context.Context, sessions []*benchSession, server netip.AddrPort, inFlight int) (time.Duration, error) {
	return forEach(sessions, inFlight, func(s *benchSession) error { return s.login(ctx, server) })
}

// rekeyAtCadence rekeys sessions, in order, at the rate at which all of them would rekey at the protocol's
// cadence (one each RekeyAfterTime), for window, and returns how many it rekeyed.
func rekeyAtCadence(ctx context.Context, sessions []*benchSession, server netip.AddrPort, window time.Duration) (int, error) {
	interval := protocol.RekeyAfterTime / time.Duration(len(sessions))
	start := time.Now()
	n := 0
	for n < len(sessions) && time.Since(start) < window && ctx.Err() == nil {
		if err := sessions[n].rekey(ctx, server); err != nil {
			return n, fmt.Errorf("rekey %d: %w", n, err)
		}
		n++
		time.Sleep(time.Until(start.Add(time.Duration(n) * interval)))
	}
	return n, ctx.Err()
}

// touchAll sends a keepalive on every session.
func touchAll(sessions []*benchSession, server netip.AddrPort) error {
	for i, s := range sessions {
		if err := s.keepalive(server); err != nil {
			return fmt.Errorf("keepalive %d: %w", i, err)
		}
	}
	return nil
}

// gatewayCPU returns the gateway's CPU seconds while busy runs, and how long it ran.
func gatewayCPU(pid int, busy func() error) (float64, time.Duration, error) {
	cpu0, err := cpuSeconds(pid)
	if err != nil {
		return 0, 0, err
	}
	start := time.Now()
	if err := busy(); err != nil {
		return 0, 0, err
	}
	took := time.Since(start)
	cpu1, err := cpuSeconds(pid)
	return cpu1 - cpu0, took, err
}

// measureSessionCosts logs every session in and measures what that cost the gateway: login time, memory
// per session, and the CPU of rekeying at the normal cadence over the idle CPU of as many sessions.
func measureSessionCosts(ctx context.Context, res *SessionsResult, cfg SessionsConfig, gw *daemon, sock string,
	sessions []*benchSession, server netip.AddrPort, inFlight int) error {
	pid := gw.pid()
	rss0, err := procKiB(pid, "status", "VmRSS")
	if err != nil {
		return err
	}
	took, err := loginAll(ctx, sessions, server, inFlight)
	if err != nil {
		return err
	}
	n := float64(len(sessions))
	res.LoginSeconds, res.LoginsPerSec, res.LoginsInFlight = took.Seconds(), n/took.Seconds(), inFlight
	if res.RSSAfterKiB, err = procKiB(pid, "status", "VmRSS"); err != nil {
		return err
	}
	res.RSSBeforeKiB = rss0
	res.RSSPerSessionKiB = (float64(res.RSSAfterKiB) - float64(rss0)) / n
	st, err := queryStatus(sock)
	if err != nil {
		return err
	}
	res.UnconfirmedAfterLogin = len(sessions) - len(st.Sessions)
	if st.Logins != nil {
		res.LoginsAccepted = st.Logins.LoginsOK
	}
	res.LoginDrops = map[string]uint64{}
	for reason, n := range st.Global.Drops {
		if n > 0 {
			res.LoginDrops[reason] = n
		}
	}
	if st.Panics > 0 {
		res.LoginDrops["vectors_lost_to_panics"] = st.Panics
	}
	for _, s := range st.Sessions {
		for reason, n := range s.Counters.Drops {
			if n > 0 {
				res.LoginDrops[reason] += n
			}
		}
	}
	if err := touchAll(sessions, server); err != nil { // the first logins may have been silent for a while
		return err
	}
	if err := allLive(ctx, gw, sock, sessions); err != nil {
		return err
	}
	idle, idleTook, err := gatewayCPU(pid, func() error { time.Sleep(cfg.RekeyWindow); return nil })
	if err != nil {
		return err
	}
	busy, busyTook, err := gatewayCPU(pid, func() error {
		res.Rekeys, err = rekeyAtCadence(ctx, sessions, server, cfg.RekeyWindow)
		return err
	})
	if err != nil {
		return err
	}
	res.IdleCPUPerSec = idle / idleTook.Seconds()
	res.RekeysPerSec = float64(res.Rekeys) / busyTook.Seconds()
	res.RekeyCPUPerSec = busy/busyTook.Seconds() - res.IdleCPUPerSec
	if res.Rekeys > 0 {
		res.RekeyCPUMillisEach = 1000 * res.RekeyCPUPerSec * busyTook.Seconds() / float64(res.Rekeys)
	}
	return touchAll(sessions, server)
}

// allLive checks that the gateway has every session live, giving the keepalives just sent a moment to
// confirm a login whose first packet was lost.
func allLive(ctx context.Context, gw *daemon, sock string, sessions []*benchSession) error {
	var st engine.Status
	err := waitFor(ctx, 3*time.Second, "every session live", []*daemon{gw}, func() (bool, error) {
		var err error
		st, err = queryStatus(sock)
		return err == nil && len(st.Sessions) == len(sessions), nil
	})
	if err == nil {
		return nil
	}
	live := map[string]bool{}
	for _, s := range st.Sessions {
		for _, a := range s.Addresses {
			live[a] = true
		}
	}
	var missing, lines []string
	log, _ := os.ReadFile(gw.logPath)
	for _, s := range sessions {
		if a := s.addr.String(); !live[a] && len(missing) < 3 {
			missing = append(missing, fmt.Sprintf("%s instance %d at %s", s.hc.Login, s.hc.InstanceID, a))
			for _, l := range strings.Split(string(log), "\n") {
				if strings.Contains(l, a+"]") || strings.Contains(l, a+" ") {
					lines = append(lines, l)
				}
			}
		}
	}
	return fmt.Errorf("%d sessions logged in, but the gateway has %d live (not: %v): %w; the gateway's log of them: %s",
		len(sessions), len(st.Sessions), missing, err, strings.Join(lines, " | "))
}

// writeBenchUsers writes a users file in dir with n users, prefix0 to prefix(n-1), who share a random
// password hashed with p, and returns the password and the file.
func writeBenchUsers(dir, prefix string, n int, p users.Params) (password, file string, err error) {
	var rnd [16]byte
	_, _ = rand.Read(rnd[:])
	password = hex.EncodeToString(rnd[:])
	store := users.New()
	for u := range n {
		h, err := users.HashPassword([]byte(password), p, rand.Reader)
		if err != nil {
			return "", "", err
		}
		if err := store.Add(users.User{Login: fmt.Sprintf("%s%d", prefix, u), Hash: h}); err != nil {
			return "", "", err
		}
	}
	file = filepath.Join(dir, "users")
	return password, file, store.Save(file)
}

// ParamsLabel names argon2id parameters as the benchmarks print them.
func ParamsLabel(p users.Params) string {
	return fmt.Sprintf("m=%d,t=%d,p=%d", p.Memory, p.Time, p.Threads)
}

// sendingSessions counts the sessions that received data packets between two status snapshots.
func sendingSessions(st0, st1 engine.Status) int {
	before := map[uint32]uint64{}
	for _, s := range st0.Sessions {
		before[s.SessionIndex] = s.Counters.RxPackets
	}
	n := 0
	for _, s := range st1.Sessions {
		if s.Counters.RxPackets > before[s.SessionIndex] {
			n++
		}
	}
	return n
}
