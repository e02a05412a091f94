package engine

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/salvovpn/salvo/engine/ippool"
	"github.com/salvovpn/salvo/engine/leasing"
	"github.com/salvovpn/salvo/engine/tickets"
	"github.com/salvovpn/salvo/engine/users"
	"github.com/salvovpn/salvo/internal/batchsize"
	"github.com/salvovpn/salvo/internal/buildinfo"
	"github.com/salvovpn/salvo/internal/loginlimits"
	"github.com/salvovpn/salvo/protocol"
	"github.com/salvovpn/salvo/protocol/handshake"
	"golang.zx2c4.com/wireguard/tun"
)

// ServerConfig is everything the gateway engine needs; the CLI builds it from config.Server.
type ServerConfig struct {
	Static             handshake.StaticKeypair
	Suites             []protocol.Suite    // empty: all
	Users              users.Authenticator // the users file (*users.Store), a command (*users.Command)
	Pool4, Pool6       *ippool.Pool        // either may be nil
	Settings           handshake.Settings
	ClientToClient     bool
	MaxSessionsPerUser int
	// MaxSessionAge, if set, is how long a session may be resumed (rekeyed without a password) after its
	// login; after that its next rekey is refused and the client logs in with its password again.
	MaxSessionAge time.Duration
	// Limits are the login rate limits (zero fields: the defaults).
	Limits LoginLimits
	// StateDir, if set, is where leases are kept across restarts (leases.json), so a client instance gets
	// the same addresses from a restarted gateway.
	StateDir string
	// SharedLeases, if set, keeps leases unique across the gateways sharing it: every login claims its
	// addresses there (and is refused "store unavailable" when it cannot), and a client gets the addresses
	// the store has for it wherever it connects.
	SharedLeases leasing.Store
	// ShareKick, if set, sends a kick made through the admin API to the other gateways sharing this one's
	// store; each ends the user's sessions it holds (with Kick).
	ShareKick func(user string) error
	// OnSessionEnded, if set, receives the accounting record of every session that ends (the "session
	// ended" log line). It is called with the gateway's lock held: it must not block or call back.
	OnSessionEnded func(SessionEnded)
	// Tickets, if set, seals and opens session tickets (gateways that share it accept each other's);
	// otherwise the ticket keys live in StateDir (or, without one, in memory).
	Tickets *tickets.Ring
	// Workers is the number of per-core workers: each has one socket per listen address and, with a
	// multi-queue TUN, its own queue. 0 means 1.
	Workers int
	// HandshakeConns, if set, are one more socket per listen address (in the order of the listen
	// addresses), in the address's reuseport group, to which the classifier steers login requests: a flood
	// of them then fills that socket's queue, not the one the workers' data arrives on.
	HandshakeConns []PacketConn
	// Watcher, if set, is told every receiver index that becomes live or is retired.
	Watcher IndexWatcher
	// Steering, if set, is told which worker owns each tunnel address (TUN queue steering).
	Steering QueueSteering
	// KernelStatus, if set, adds the kernel-side classifier's view to the status (e.g. its drop counters).
	KernelStatus func() any
	// SocketStats, if set, adds what the UDP sockets counted to the status.
	SocketStats func() SocketStats
	// BatchSize is the number of packets per vector (memory bound: one vector per socket and one for the
	// TUN device, each BatchSize x bufSize bytes). 0 means 128.
	BatchSize int
	Log       *slog.Logger

	// pendingTimeout and sharedLeaseRenewEvery override the constants of the same names (tests).
	pendingTimeout        time.Duration
	sharedLeaseRenewEvery time.Duration
}

// DefaultHashBudget is loginlimits.HashBudgetMiB in the engine's unit, argon2id KiB x passes per second.
const DefaultHashBudget = loginlimits.HashBudgetMiB * 1024

// Server is the gateway: it authenticates clients, hands out addresses and moves packets between the UDP
// sockets and the TUN device.
type Server struct {
	cfg ServerConfig
	hs  *handshake.Server
	// tickets seals the session tickets every successful handshake hands out, and opens them again.
	tickets *tickets.Ring
	// queues are the TUN device's queues (one per worker with a multi-queue device, else one).
	queues []tun.Device
	// sockets are the UDP sockets, arranged as layout says; hsConns are ServerConfig.HandshakeConns, one
	// per listen address.
	sockets []*sender
	hsConns []*sender
	layout  socketLayout
	workers int
	// workerSet are the per-core workers, which own the sockets and queues above (see worker).
	workerSet []*worker
	// nextWorker hands sessions that logged in on a handshake socket to the workers in turn.
	nextWorker atomic.Uint32
	log        *slog.Logger
	started    time.Time
	drops      dropLogger
	panics     panicGuard
	global     Counters
	// crossWorker counts data packets processed by a worker that does not own their session (the
	// kernel's reuseport hash put them on another socket). They are processed where they land: replay
	// windows and counters are safe under concurrency, and handing them over costs more than it saves on
	// this kind of machine. Steering (offload/classifier) drives this to zero.
	crossWorker atomic.Uint64

	table sessionTable // lookup state: read lock-free by the data path, changed under mu

	mu      sync.Mutex // guards everything below and the changes to table
	live    map[instanceKey]*serverSession
	pending map[instanceKey]*serverSession // logins waiting for the client's first packet
	perUser map[string][]*serverSession    // live sessions, oldest first
	leases  *leaseTable
	shared  sharedLeases // this gateway's side of ServerConfig.SharedLeases

	logins loginGuard
	ledger sessionLedger // what ended sessions counted (guarded by mu)

	hsq     *handshakeQueue
	notices noticeGuard

	// sweepMu serializes sweeps (the janitor's, and tests'); it guards sweeps, sweepDue and the sessions'
	// janitor fields.
	sweepMu  sync.Mutex
	sweeps   uint64
	sweepDue []*serverSession // reused between sweeps
}

type instanceKey struct {
	login    string
	instance uint64
}

const (
	handshakeQueueLen = 256
	handshakeWorkers  = 2
	// pendingTimeout is how long a login waits for the client's first packet under the new keys (the
	// client sends one at once). A login nobody confirms (a replayed request, a client killed mid-login)
	// then leaves nothing behind.
	pendingTimeout = 3 * protocol.RekeyTimeout
	// janitorTick is how often the janitor runs: keepalives, expiry and lease saving are this precise.
	janitorTick = time.Second
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
	if cfg.Users == nil {
		return nil, errors.New("engine: no user store")
	}
	if cfg.MaxSessionsPerUser <= 0 {
		cfg.MaxSessionsPerUser = 4
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = batchsize.Default
	}
	if cfg.sharedLeaseRenewEvery == 0 {
		cfg.sharedLeaseRenewEvery = sharedLeaseRenewEvery
	}
	if cfg.pendingTimeout == 0 {
		cfg.pendingTimeout = pendingTimeout
	}
	s := &Server{cfg: cfg, queues: queues, workers: cfg.Workers, layout: socketLayout{workers: cfg.Workers}, log: cfg.Log, started: time.Now(),
		hs:      handshake.NewServer(cfg.Static, cfg.Suites, rand.Reader),
		live:    map[instanceKey]*serverSession{},
		pending: map[instanceKey]*serverSession{},
		perUser: map[string][]*serverSession{},
		leases:  newLeaseTable(cfg.Pool4, cfg.Pool6, cfg.StateDir),
		shared:  sharedLeases{slot: make(chan struct{}, max(1, handshakeWorkers-1)), releaseDue: make(chan struct{}, 1)},
		hsq:     newHandshakeQueue(handshakeQueueLen),
	}
	if err := s.logins.init(cfg.Limits, cfg.Users); err != nil {
		return nil, err
	}
	var err error
	if s.tickets, err = openTickets(&cfg); err != nil {
		return nil, err
	}
	if err := s.tickets.Prepare(time.Now()); err != nil {
		s.log.Warn("session tickets", "err", err)
	}
	if err := s.notices.init(); err != nil {
		return nil, err
	}
	s.drops.log = cfg.Log
	s.table = newSessionTable()
	for _, c := range conns {
		s.sockets = append(s.sockets, &sender{conn: c})
	}
	if len(cfg.HandshakeConns) != 0 && len(cfg.HandshakeConns) != len(conns)/cfg.Workers {
		return nil, fmt.Errorf("engine: %d handshake sockets for %d listen addresses", len(cfg.HandshakeConns), len(conns)/cfg.Workers)
	}
	for _, c := range cfg.HandshakeConns {
		s.hsConns = append(s.hsConns, &sender{conn: c})
	}
	s.workerSet = newWorkers(s)
	restored, skipped, err := s.leases.restore(cfg.Users, time.Now())
	if err != nil {
		return nil, err
	}
	for _, why := range skipped {
		s.log.Warn("lease from the previous run not restored", "lease", why)
	}
	if restored > 0 {
		s.log.Info("leases restored from the previous run", "count", restored, "file", s.leases.path,
			"held_for", leaseRestoreHold)
	}
	return s, nil
}

// Logins returns what the gateway's handshakes did so far.
func (s *Server) Logins() LoginStats { return s.logins.snapshot() }

// Run moves packets until ctx is cancelled or a socket or the device fails. On the way out it tells every
// client the gateway is shutting down (so they reconnect with backoff rather than wait for a timeout),
// saves the leases, and closes the sockets and TUN queues it was given (closing is what unblocks the loops).
func (s *Server) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, len(s.sockets)+len(s.hsConns)+len(s.queues)+handshakeWorkers+2)
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
	// The long-lived goroutines of the gateway: each worker's receive and TUN loops (worker.start), the
	// handshake intake and workers, and the janitor.
	for _, w := range s.workerSet {
		w.start(ctx, start)
	}
	for g := range s.hsConns {
		start("handshake intake", func() error { return s.intakeLoop(g) })
	}
	for range handshakeWorkers {
		start("handshake", func() error { s.handshakeWorker(ctx); return nil })
	}
	start("janitor", func() error { s.janitor(ctx); return nil })
	if s.cfg.SharedLeases != nil {
		start("shared lease renewal", func() error { s.renewSharedLeases(ctx); return nil })
	}
	<-ctx.Done()
	s.shutdown()
	// Unblock the loops stuck in read calls.
	for _, c := range append(s.sockets, s.hsConns...) {
		c.conn.Close()
	}
	for _, q := range s.queues {
		q.Close()
	}
	wg.Wait()
	if err := s.saveLeases(); err != nil {
		s.log.Error("saving leases", "err", err)
	}
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
	var b [4]byte
	for {
		_, _ = rand.Read(b[:])
		idx := protocol.IndexFor(binary.LittleEndian.Uint32(b[:]), worker, s.workers)
		if _, used := s.table.index(idx); idx != 0 && !used {
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

// addIndex and delIndex change the session table and tell the watcher. Called with s.mu held.
func (s *Server) addIndex(idx uint32, e keyEntry) {
	s.table.byIndex.Store(idx, e)
	if s.cfg.Watcher != nil {
		if err := s.cfg.Watcher.AddSession(idx); err != nil {
			s.log.Warn("session classifier: cannot add session", "index", idx, "err", err)
		}
	}
}

func (s *Server) delIndex(idx uint32) {
	s.table.byIndex.Delete(idx)
	if s.cfg.Watcher != nil {
		if err := s.cfg.Watcher.RemoveSession(idx); err != nil {
			s.log.Warn("session classifier: cannot remove session", "index", idx, "err", err)
		}
	}
}

// QueueSteering learns which worker owns each tunnel address, to steer the TUN device's packets for
// that address to the owner's queue. Same calling rules as IndexWatcher.
type QueueSteering interface {
	SetRoute(prefix netip.Prefix, queue uint32) error
	DeleteRoute(prefix netip.Prefix) error
}

func (s *Server) steerAddress(a netip.Addr, worker int) {
	if s.cfg.Steering != nil {
		if err := s.cfg.Steering.SetRoute(netip.PrefixFrom(a, a.BitLen()), uint32(worker)); err != nil {
			s.log.Warn("TUN steering: cannot add route", "addr", a, "err", err)
		}
	}
}

func (s *Server) unsteerAddress(a netip.Addr) {
	if s.cfg.Steering != nil {
		if err := s.cfg.Steering.DeleteRoute(netip.PrefixFrom(a, a.BitLen())); err != nil {
			s.log.Warn("TUN steering: cannot remove route", "addr", a, "err", err)
		}
	}
}

// Status reports every session for the control socket.
func (s *Server) Status() Status {
	now := time.Now()
	totals := s.Totals(false)
	st := Status{Role: "server", Version: buildinfo.Read().Version, Started: s.started, Global: s.global.Snapshot(),
		Sessions: []SessionStatus{}, Runtime: readRuntimeStats(), Workers: s.workers, CrossWorkerPackets: s.crossWorker.Load(),
		Panics: s.panics.count.Load(), Totals: &totals}
	ls := s.Logins()
	st.Logins = &ls
	if s.cfg.KernelStatus != nil {
		st.Classifier = s.cfg.KernelStatus()
	}
	if s.cfg.SocketStats != nil {
		ss := s.cfg.SocketStats()
		st.Sockets = &ss
	}
	if name, err := s.queues[0].Name(); err == nil {
		st.Device = name
	}
	for i, c := range s.sockets {
		if s.layout.worker(i) == 0 { // one entry per listen address, not per worker socket
			st.Listen = append(st.Listen, c.conn.LocalAddr().String())
		}
	}
	s.mu.Lock()
	for _, sess := range s.live {
		st.Sessions = append(st.Sessions, sess.status(now))
	}
	s.mu.Unlock()
	sort.Slice(st.Sessions, func(i, j int) bool { return st.Sessions[i].User < st.Sessions[j].User })
	return st
}
