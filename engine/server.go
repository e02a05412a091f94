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

	"github.com/salvovpn/salvo/engine/ippool"
	"github.com/salvovpn/salvo/engine/ratelimit"
	"github.com/salvovpn/salvo/engine/users"
	"github.com/salvovpn/salvo/protocol"
	"github.com/salvovpn/salvo/protocol/handshake"
	"github.com/salvovpn/salvo/protocol/transport"
	"golang.zx2c4.com/wireguard/tun"
)

// ServerConfig is everything the gateway engine needs; the CLI builds it from config.Server.
type ServerConfig struct {
	Static             handshake.StaticKeypair
	Suites             []protocol.Suite // empty: all
	Users              *users.Store
	Pool4, Pool6       *ippool.Pool // either may be nil
	Settings           handshake.Settings
	ClientToClient     bool
	MaxSessionsPerUser int
	// Workers is the number of per-core workers: each has one socket per listen address and, with a
	// multi-queue TUN, its own queue. 0 means 1.
	Workers int
	// Watcher, if set, is told every receiver index that becomes live or is retired.
	Watcher IndexWatcher
	// Routes, if set, is told which worker owns each tunnel address.
	Routes RouteWatcher
	// KernelStatus, if set, adds the kernel-side classifier's view to the status (e.g. its drop counters).
	KernelStatus func() any
	// BatchSize is the number of packets per vector (memory bound: one vector per socket and one for the
	// TUN device, each BatchSize x bufSize bytes). 0 means 128.
	BatchSize int
	Log       *slog.Logger
}

// Server is the gateway: it authenticates clients, hands out addresses and moves packets between the UDP
// sockets and the TUN device.
type Server struct {
	cfg ServerConfig
	hs  *handshake.Server
	// queues are the TUN device's queues (one per worker with a multi-queue device, else one).
	queues []tun.Device
	// conns are the UDP sockets, listen-address-major: socket L*workers+w is worker w's socket on listen
	// address L (one SO_REUSEPORT group per address).
	conns   []*sender
	workers int
	log     *slog.Logger
	drops   dropLogger
	global  Counters
	// crossWorker counts data packets processed by a worker that does not own their session (the
	// kernel's reuseport hash put them on another socket). They are processed where they land: replay
	// windows and counters are safe under concurrency, and handing them over costs more than it saves on
	// this kind of machine. Steering (offload/classifier) drives this to zero.
	crossWorker atomic.Uint64

	rt atomic.Pointer[routes] // published lookup state: read lock-free by the data path

	mu         sync.Mutex // guards everything below and the publication of rt
	byInstance map[instanceKey]*serverSession
	perUser    map[string][]*serverSession

	hsQueue       chan handshakeJob
	failedBySrc   *ratelimit.Limiter[netip.Addr]
	failedByLogin *ratelimit.Limiter[string]
	notices       *ratelimit.Limiter[netip.Addr]
}

type instanceKey struct {
	login    string
	instance uint64
}

type handshakeJob struct {
	buf  []byte
	src  netip.AddrPort
	conn int
}

const (
	handshakeQueueLen = 256
	handshakeWorkers  = 2
	sessionIdle       = protocol.RejectAfterTime // no authenticated packet for this long: session is gone
)

// NewServer prepares a gateway on open TUN queues and UDP sockets (cfg.Workers sockets per listen address,
// address-major). Run starts it.
func NewServer(cfg ServerConfig, queues []tun.Device, conns []PacketConn) (*Server, error) {
	if cfg.Workers <= 0 {
		cfg.Workers = 1
	}
	if len(queues) == 0 || len(conns) == 0 || len(conns)%cfg.Workers != 0 {
		return nil, fmt.Errorf("engine: %d TUN queues and %d sockets for %d workers", len(queues), len(conns), cfg.Workers)
	}
	if cfg.MaxSessionsPerUser <= 0 {
		cfg.MaxSessionsPerUser = 4
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = defaultVectorLen
	}
	s := &Server{cfg: cfg, queues: queues, workers: cfg.Workers, log: cfg.Log,
		hs:         handshake.NewServer(cfg.Static, cfg.Suites, rand.Reader),
		byInstance: map[instanceKey]*serverSession{},
		perUser:    map[string][]*serverSession{},
		hsQueue:    make(chan handshakeJob, handshakeQueueLen),
	}
	var err error
	// Failed logins: a burst of 10, then one every 2 s, per source address and per login.
	if s.failedBySrc, err = ratelimit.New[netip.Addr](2*time.Second, 10, 1<<16); err != nil {
		return nil, err
	}
	if s.failedByLogin, err = ratelimit.New[string](2*time.Second, 10, 1<<16); err != nil {
		return nil, err
	}
	// Notices are unauthenticated: a few per second per source at most.
	if s.notices, err = ratelimit.New[netip.Addr](500*time.Millisecond, 4, 1<<16); err != nil {
		return nil, err
	}
	s.drops.log = cfg.Log
	s.rt.Store(&routes{byIndex: map[uint32]keyEntry{}, byAddr: map[netip.Addr]*serverSession{}})
	for _, c := range conns {
		s.conns = append(s.conns, &sender{conn: c})
	}
	return s, nil
}

// Run moves packets until ctx is cancelled or a socket or the device fails. It closes nothing it was given;
// the caller owns the device and sockets and closes them after Run returns (closing them also stops Run).
func (s *Server) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, len(s.conns)+2)
	start := func(name string, f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil && ctx.Err() == nil {
				errc <- fmt.Errorf("%s: %w", name, err)
			}
			cancel()
		}()
	}
	// The long-lived goroutines of the gateway: one receive loop per socket, one TUN loop, the handshake
	// workers and the janitor.
	for i := range s.conns {
		start("udp receive", func() error { return s.receiveLoop(ctx, i) })
	}
	for q := range s.queues {
		start("tun read", func() error { return s.tunLoop(ctx, q) })
	}
	for range handshakeWorkers {
		start("handshake", func() error { s.handshakeWorker(ctx); return nil })
	}
	start("janitor", func() error { s.janitor(ctx); return nil })
	<-ctx.Done()
	// Unblock the loops stuck in read calls.
	for _, c := range s.conns {
		c.conn.Close()
	}
	for _, q := range s.queues {
		q.Close()
	}
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}

// newIndex picks a random unused receiver index owned by worker: index % workers == worker. The index is
// all a data packet carries, so encoding the owner in it lets the kernel-side classifier steer a session's
// packets to its worker's socket without any lookup. Called with s.mu held.
func (s *Server) newIndex(worker int) uint32 {
	rt := s.rt.Load()
	var b [4]byte
	for {
		_, _ = rand.Read(b[:])
		idx := binary.LittleEndian.Uint32(b[:])
		idx -= idx % uint32(s.workers)
		idx += uint32(worker)
		if _, used := rt.byIndex[idx]; idx != 0 && !used {
			return idx
		}
	}
}

// IndexWatcher learns which receiver indexes are live, e.g. to let a kernel-side filter drop data for
// unknown sessions before it reaches user space. Calls happen with the server's lock held; they must be
// quick and must not call back into the server.
type IndexWatcher interface {
	AddSession(index uint32) error
	RemoveSession(index uint32) error
}

// addIndex and delIndex change the (unpublished) lookup table rt and tell the watcher. Called with s.mu held.
func (s *Server) addIndex(rt *routes, idx uint32, e keyEntry) {
	rt.byIndex[idx] = e
	if s.cfg.Watcher != nil {
		if err := s.cfg.Watcher.AddSession(idx); err != nil {
			s.log.Warn("session classifier: cannot add session", "index", idx, "err", err)
		}
	}
}

func (s *Server) delIndex(rt *routes, idx uint32) {
	delete(rt.byIndex, idx)
	if s.cfg.Watcher != nil {
		if err := s.cfg.Watcher.RemoveSession(idx); err != nil {
			s.log.Warn("session classifier: cannot remove session", "index", idx, "err", err)
		}
	}
}

// RouteWatcher learns which worker owns each tunnel address, e.g. to steer the TUN device's packets for
// that address to the owner's queue. Same calling rules as IndexWatcher.
type RouteWatcher interface {
	SetRoute(prefix netip.Prefix, queue uint32) error
	DeleteRoute(prefix netip.Prefix) error
}

func (s *Server) routeAdded(a netip.Addr, worker int) {
	if s.cfg.Routes != nil {
		if err := s.cfg.Routes.SetRoute(netip.PrefixFrom(a, a.BitLen()), uint32(worker)); err != nil {
			s.log.Warn("TUN steering: cannot add route", "addr", a, "err", err)
		}
	}
}

func (s *Server) routeRemoved(a netip.Addr) {
	if s.cfg.Routes != nil {
		if err := s.cfg.Routes.DeleteRoute(netip.PrefixFrom(a, a.BitLen())); err != nil {
			s.log.Warn("TUN steering: cannot remove route", "addr", a, "err", err)
		}
	}
}

// ownerOf is the worker that owns a receiver index.
func (s *Server) ownerOf(idx uint32) int { return int(idx % uint32(s.workers)) }

func (s *Server) handshakeWorker(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case job := <-s.hsQueue:
			s.handleHandshake(job)
		}
	}
}

// enqueueHandshake copies a handshake datagram out of the receive vector (whose buffers are reused at once)
// and queues it; a full queue means the gateway is under load and the packet is dropped.
func (s *Server) enqueueHandshake(b []byte, src netip.AddrPort, conn int) {
	job := handshakeJob{buf: append([]byte(nil), b...), src: src, conn: conn}
	select {
	case s.hsQueue <- job:
	default:
		s.global.drop(DropHandshakeQueue)
		if s.drops.due() {
			s.drops.logf(DropHandshakeQueue, "from", src)
		}
	}
}

func (s *Server) underLoad() bool { return len(s.hsQueue) > handshakeQueueLen/8 }

func (s *Server) handleHandshake(job handshakeJob) {
	now := time.Now()
	req, reply, err := s.hs.ConsumeRequest(job.buf, job.src, now, s.underLoad())
	if err != nil {
		switch {
		case errors.Is(err, handshake.ErrMac1):
			if reply != nil && s.notices.Allow(job.src.Addr(), now) {
				_ = s.conns[job.conn].writeOne(reply, job.src)
			}
		case errors.Is(err, handshake.ErrCookieRequired):
			if reply != nil {
				_ = s.conns[job.conn].writeOne(reply, job.src)
			}
			return
		}
		s.global.drop(DropMalformed)
		s.log.Debug("handshake rejected", "from", job.src, "err", err)
		return
	}
	defer req.Wipe()
	var (
		result  handshake.Result
		sess    *serverSession
		kp      *transport.Keypair
		out     []byte
		settled bool
	)
	switch req.Kind {
	case handshake.KindLogin:
		result, sess, out, kp, settled = s.login(req, job, now)
	case handshake.KindResume:
		result, sess, out, kp, settled = s.resume(req, job, now)
	default:
		result = handshake.ResultServerError
	}
	if !settled {
		out, err = s.hs.Reject(req, result)
		if err != nil {
			s.log.Warn("handshake reject failed", "from", job.src, "err", err)
			return
		}
	}
	if err := s.conns[job.conn].writeOne(out, job.src); err != nil {
		s.log.Warn("sending handshake response", "to", job.src, "err", err)
	}
	if settled {
		s.log.Info("session up", "user", sess.user, "kind", kindName(req.Kind), "endpoint", job.src,
			"addresses", fmt.Sprint(sess.addrs()), "index", kp.LocalIndex(), "suite", kp.Suite().String())
	}
}

func kindName(k handshake.Kind) string {
	if k == handshake.KindResume {
		return "rekey"
	}
	return "login"
}

// login checks a password and creates (or replaces) the session of this client instance.
func (s *Server) login(req *handshake.Request, job handshakeJob, now time.Time) (handshake.Result, *serverSession, []byte, *transport.Keypair, bool) {
	src := job.src.Addr()
	// Attempts are limited per source and per login before the expensive hash, so guessing is slow and a
	// flood of logins cannot pin the CPU on argon2id.
	// Only failures are charged, so a user who types the password right is never locked out by their own
	// successful logins.
	if !s.failedBySrc.Check(src, now) || !s.failedByLogin.Check(req.Login, now) {
		s.log.Warn("login rate limited", "user", req.Login, "from", job.src)
		return handshake.ResultRateLimited, nil, nil, nil, false
	}
	user, err := s.cfg.Users.Authenticate(req.Login, req.Password)
	if err != nil {
		s.failedBySrc.Allow(src, now)
		s.failedByLogin.Allow(req.Login, now)
		s.log.Warn("login failed", "user", req.Login, "from", job.src, "reason", "bad credentials")
		return handshake.ResultBadCredentials, nil, nil, nil, false
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	key := instanceKey{req.Login, req.InstanceID}
	old := s.byInstance[key]
	sess := &serverSession{user: user.Login, instance: req.InstanceID}
	if old != nil {
		// A reconnect of the same client instance keeps its addresses.
		sess.addr4, sess.addr6 = old.addr4, old.addr6
	} else {
		if len(s.perUser[user.Login]) >= s.cfg.MaxSessionsPerUser {
			s.removeLocked(s.perUser[user.Login][0], false) // the oldest session of this user makes room
		}
		if r := s.assignLocked(sess, user); r != handshake.ResultOK {
			return r, nil, nil, nil, false
		}
	}
	// A new session belongs to the worker whose socket received its login (the kernel's reuseport hash put
	// its 4-tuple there, so without a classifier its data arrives there too).
	sess.worker = job.conn % s.workers
	idx := s.newIndex(sess.worker)
	out, keys, err := s.hs.Accept(req, idx, s.settingsFor(sess), now)
	if err != nil {
		if old == nil {
			s.releaseLocked(sess)
		}
		if errors.Is(err, handshake.ErrNoCommonSuite) {
			return handshake.ResultVersionMismatch, nil, nil, nil, false
		}
		s.log.Warn("accept failed", "user", req.Login, "err", err)
		return handshake.ResultServerError, nil, nil, nil, false
	}
	kp, err := transport.NewKeypair(keys.Suite, keys.Send, keys.Recv, keys.LocalIndex, keys.RemoteIndex, false, now)
	if err != nil {
		if old == nil {
			s.releaseLocked(sess)
		}
		return handshake.ResultServerError, nil, nil, nil, false
	}
	if old != nil {
		s.removeLocked(old, true)
	}
	sess.current.Store(kp)
	sess.resumeKey = keys.ResumeKey
	sess.endpoint.Store(&endpoint{addr: job.src, conn: job.conn})
	sess.lastRecv.Store(now.UnixNano())
	sess.lastHandshake.Store(now.UnixNano())
	s.byInstance[key] = sess
	s.perUser[user.Login] = append(s.perUser[user.Login], sess)
	rt := s.rt.Load().clone()
	s.addIndex(rt, idx, keyEntry{kp: kp, sess: sess})
	for _, a := range sess.addrs() {
		rt.byAddr[a] = sess
		s.routeAdded(a, sess.worker)
	}
	s.rt.Store(rt)
	return handshake.ResultOK, sess, out, kp, true
}

// resume rekeys a live session without a password: the proof is a MAC under the previous handshake's
// resume key.
func (s *Server) resume(req *handshake.Request, job handshakeJob, now time.Time) (handshake.Result, *serverSession, []byte, *transport.Keypair, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.rt.Load().byIndex[req.SessionIndex]
	if !ok || e.sess.user != req.Login || e.sess.instance != req.InstanceID || !req.VerifyResume(e.sess.resumeKey) {
		return handshake.ResultUnknownSession, nil, nil, nil, false
	}
	sess := e.sess
	idx := s.newIndex(sess.worker) // a rekey keeps the session on its worker
	out, keys, err := s.hs.Accept(req, idx, s.settingsFor(sess), now)
	if err != nil {
		return handshake.ResultServerError, nil, nil, nil, false
	}
	kp, err := transport.NewKeypair(keys.Suite, keys.Send, keys.Recv, keys.LocalIndex, keys.RemoteIndex, false, now)
	if err != nil {
		return handshake.ResultServerError, nil, nil, nil, false
	}
	rt := s.rt.Load().clone()
	// Only one pending key: a newer resume replaces an unconfirmed one.
	if old := sess.next.Swap(kp); old != nil {
		s.delIndex(rt, old.LocalIndex())
	}
	s.addIndex(rt, idx, keyEntry{kp: kp, sess: sess})
	s.rt.Store(rt)
	sess.resumeKey = keys.ResumeKey
	sess.endpoint.Store(&endpoint{addr: job.src, conn: job.conn})
	sess.lastHandshake.Store(now.UnixNano())
	return handshake.ResultOK, sess, out, kp, true
}

// confirm promotes a pending key once the client has used it: the client switched, so the gateway can too.
func (s *Server) confirm(sess *serverSession, kp *transport.Keypair) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sess.next.Load() != kp {
		return
	}
	rt := s.rt.Load().clone()
	if prev := sess.previous.Load(); prev != nil {
		s.delIndex(rt, prev.LocalIndex())
	}
	sess.previous.Store(sess.current.Load())
	sess.current.Store(kp)
	sess.next.Store(nil)
	s.rt.Store(rt)
}

// assignLocked gives a new session its tunnel addresses: the user's fixed ones or the next free ones.
func (s *Server) assignLocked(sess *serverSession, u users.User) handshake.Result {
	var ok bool
	if sess.addr4, ok = s.leaseLocked(s.cfg.Pool4, u.FixedIPv4, u.Login); !ok {
		return handshake.ResultNoAddress
	}
	if sess.addr6, ok = s.leaseLocked(s.cfg.Pool6, u.FixedIPv6, u.Login); !ok {
		s.releaseLocked(sess)
		return handshake.ResultNoAddress
	}
	return handshake.ResultOK
}

// leaseLocked takes an address from pool (nil: the family is not configured, no address and ok): the fixed
// one if the user has one, else the next free one.
func (s *Server) leaseLocked(pool *ippool.Pool, fixed netip.Addr, login string) (netip.Addr, bool) {
	if pool == nil {
		return netip.Addr{}, true
	}
	if !fixed.IsValid() {
		a, err := pool.Allocate()
		return a, err == nil
	}
	if holder := s.rt.Load().byAddr[fixed]; holder != nil {
		s.removeLocked(holder, false) // a fixed address belongs to its user: the newest login wins
	}
	if err := pool.Claim(fixed); err != nil {
		s.log.Warn("fixed address unusable", "user", login, "addr", fixed, "err", err)
		return netip.Addr{}, false
	}
	return fixed, true
}

func (s *Server) releaseLocked(sess *serverSession) {
	if sess.addr4.IsValid() && s.cfg.Pool4 != nil {
		s.cfg.Pool4.Release(sess.addr4)
	}
	if sess.addr6.IsValid() && s.cfg.Pool6 != nil {
		s.cfg.Pool6.Release(sess.addr6)
	}
}

// removeLocked forgets a session. keepAddrs is set when a reconnect of the same instance inherits them.
func (s *Server) removeLocked(sess *serverSession, keepAddrs bool) {
	rt := s.rt.Load().clone()
	for _, slot := range []*transport.Keypair{sess.current.Load(), sess.previous.Load(), sess.next.Load()} {
		if slot != nil {
			s.delIndex(rt, slot.LocalIndex())
		}
	}
	for _, a := range sess.addrs() {
		if rt.byAddr[a] == sess {
			delete(rt.byAddr, a)
			s.routeRemoved(a)
		}
	}
	s.rt.Store(rt)
	key := instanceKey{sess.user, sess.instance}
	if s.byInstance[key] == sess {
		delete(s.byInstance, key)
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
	if !keepAddrs {
		s.releaseLocked(sess)
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

// janitor removes sessions that have been silent longer than any key may live and retires old keys.
func (s *Server) janitor(ctx context.Context) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			s.mu.Lock()
			for _, sess := range s.byInstance {
				if now.Sub(time.Unix(0, sess.lastRecv.Load())) > sessionIdle {
					s.log.Info("session expired", "user", sess.user, "addresses", fmt.Sprint(sess.addrs()))
					s.removeLocked(sess, false)
					continue
				}
				if prev := sess.previous.Load(); prev != nil && prev.Expired(now) {
					rt := s.rt.Load().clone()
					s.delIndex(rt, prev.LocalIndex())
					sess.previous.Store(nil)
					s.rt.Store(rt)
				}
			}
			s.mu.Unlock()
		}
	}
}

// removeSession handles an authenticated disconnect.
func (s *Server) removeSession(sess *serverSession) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byInstance[instanceKey{sess.user, sess.instance}] == sess {
		s.log.Info("session closed by client", "user", sess.user)
		s.removeLocked(sess, false)
	}
}

// Status reports every session for the control socket.
func (s *Server) Status() Status {
	now := time.Now()
	st := Status{Role: "server", Global: s.global.Snapshot(), Sessions: []SessionStatus{}, Runtime: readRuntimeStats(),
		Workers: s.workers, CrossWorkerPackets: s.crossWorker.Load()}
	if s.cfg.KernelStatus != nil {
		st.Classifier = s.cfg.KernelStatus()
	}
	if name, err := s.queues[0].Name(); err == nil {
		st.Device = name
	}
	for i, c := range s.conns {
		if i%s.workers == 0 { // one entry per listen address, not per worker socket
			st.Listen = append(st.Listen, c.conn.LocalAddr().String())
		}
	}
	s.mu.Lock()
	for _, sess := range s.byInstance {
		st.Sessions = append(st.Sessions, sess.status(now))
	}
	s.mu.Unlock()
	return st
}
