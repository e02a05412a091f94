package engine

import (
	"crypto/rand"
	"fmt"
	"log/slog"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/salvovpn/salvo/engine/enginetest"
	"github.com/salvovpn/salvo/engine/ippool"
	"github.com/salvovpn/salvo/engine/users"
	"github.com/salvovpn/salvo/protocol/handshake"
	"golang.zx2c4.com/wireguard/tun"
)

// tableGateway is a gateway that is never Run: the benchmarks and tests drive its handshake code directly,
// as a handshake worker and the receive loop would, so what they measure is the gateway's own cost of a
// login (Noise, a cheap argon2id hash, the session table) without a network or scheduler in between.
type tableGateway struct {
	tb     testing.TB
	net    *enginetest.Network
	srv    *Server
	static handshake.StaticKeypair
	from   intakeSocket
	users  int
}

// sessionsPerTableUser keeps every user under max_sessions_per_user's cap (1024), as a real gateway's are.
const sessionsPerTableUser = 1000

// newTableGateway makes a gateway with enough users and addresses for sessions sessions; mod, if set,
// changes its config.
func newTableGateway(tb testing.TB, sessions int, mod func(*ServerConfig)) *tableGateway {
	tb.Helper()
	static, err := handshake.GenerateKeypair(nil)
	must(tb, err)
	g := &tableGateway{tb: tb, static: static, users: sessions/sessionsPerTableUser + 1}
	store := users.New()
	for u := range g.users {
		h, err := users.HashPassword([]byte(testPassword), cheapParams, rand.Reader)
		must(tb, err)
		must(tb, store.Add(users.User{Login: fmt.Sprintf("u%d", u), Hash: h}))
	}
	p4, err := ippool.New(netip.MustParsePrefix("10.78.0.0/16"))
	must(tb, err)
	p6, err := ippool.New(netip.MustParsePrefix("fd78::/64"))
	must(tb, err)
	nw := enginetest.NewNetwork()
	tb.Cleanup(nw.Close)
	conn, err := nw.Listen(gatewayAddr)
	must(tb, err)
	cfg := ServerConfig{Static: static, Users: store, Pool4: p4, Pool6: p6,
		Settings: handshake.Settings{MTU: 1420}, MaxSessionsPerUser: sessionsPerTableUser,
		Limits: LoginLimits{HashBudget: 1 << 40}, // the benchmark measures the gateway, not its throttle
		Log:    slog.New(slog.DiscardHandler)}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := NewServer(cfg, []tun.Device{enginetest.NewTUN("salvo0", 1420)}, []PacketConn{conn})
	must(tb, err)
	g.srv, g.net = srv, nw
	g.from = intakeSocket{via: srv.sockets[0], worker: 0}
	return g
}

// login logs instance n in (instances are spread over the users) and confirms it as the client's first
// data packet would, and returns the live session. An instance that is already in logs in again and
// replaces its old session.
func (g *tableGateway) login(n int) *serverSession {
	g.tb.Helper()
	cfg := g.client(n)
	_, msg, err := handshake.NewLogin(&cfg, uint32(n)|1, time.Now(), nil)
	must(g.tb, err)
	g.handle(n, msg)
	key := instanceKey{cfg.Login, cfg.InstanceID}
	g.srv.mu.Lock()
	sess := g.srv.pending[key]
	g.srv.mu.Unlock()
	if sess == nil {
		g.tb.Fatalf("login of %s instance %d left no pending session", cfg.Login, cfg.InstanceID)
	}
	g.srv.confirm(sess, sess.next.Load(), time.Now())
	g.srv.mu.Lock()
	live := g.srv.live[key] == sess
	g.srv.mu.Unlock()
	if !live {
		g.tb.Fatalf("session of %s instance %d not live after its first packet", cfg.Login, cfg.InstanceID)
	}
	return sess
}

// client is instance n's client config.
func (g *tableGateway) client(n int) handshake.ClientConfig {
	return handshake.ClientConfig{ServerPublic: g.static.Public, Login: fmt.Sprintf("u%d", n%g.users), Password: testPassword,
		InstanceID: uint64(n + 1)}
}

// src is where instance n's requests come from.
func (g *tableGateway) src(n int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, byte(n >> 8), byte(n)}), uint16(1000+n%50000))
}

// handle processes instance n's handshake request as a handshake worker would.
func (g *tableGateway) handle(n int, msg []byte) {
	g.srv.handleHandshake(handshakeJob{buf: msg, src: g.src(n), from: g.from, at: time.Now()})
}

// BenchmarkLoginWithSessions measures logins (login request, cheap argon2id hash, pending session, first
// packet) on a gateway that already has N sessions. Each login is a client instance logging in again, so N
// stays N: a login whose cost grows with N makes a login storm quadratic.
func BenchmarkLoginWithSessions(b *testing.B) {
	for _, n := range []int{100, 5000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			g := newTableGateway(b, n, nil)
			for i := range n {
				g.login(i)
			}
			start := time.Now()
			i := 0
			for b.Loop() {
				g.login(i % n)
				i++
			}
			b.ReportMetric(float64(i)/time.Since(start).Seconds(), "logins/s")
		})
	}
}

// tableSessions is the gateway size the lookup benchmark and test fill the table to.
const tableSessions = 10000

// filledTable returns a gateway with tableSessions live sessions and, for each, its receiver index and
// IPv4 address (what the data path looks up).
func filledTable(tb testing.TB) (*tableGateway, []uint32, []netip.Addr) {
	g := newTableGateway(tb, tableSessions, nil)
	idx := make([]uint32, tableSessions)
	addrs := make([]netip.Addr, tableSessions)
	for i := range tableSessions {
		sess := g.login(i)
		idx[i], addrs[i] = sess.current.Load().LocalIndex(), sess.addr4
	}
	return g, idx, addrs
}

// BenchmarkSessionLookup measures the data path's two lookups in a table of 10,000 sessions: by receiver
// index (every UDP datagram) and by tunnel address (every TUN packet).
func BenchmarkSessionLookup(b *testing.B) {
	g, idx, addrs := filledTable(b)
	b.Run("index", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, ok := lookupIndex(g.srv, idx[i%len(idx)]); !ok {
				b.Fatal("index not found")
			}
			i++
		}
	})
	b.Run("addr", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if lookupAddr(g.srv, addrs[i%len(addrs)]) == nil {
				b.Fatal("address not found")
			}
			i++
		}
	})
}

func lookupIndex(s *Server, idx uint32) (keyEntry, bool) { return s.table.index(idx) }

func lookupAddr(s *Server, a netip.Addr) *serverSession { return s.table.session(a) }

// BenchmarkSweep measures one janitor pass over 10,000 sessions (none due), and how long something that
// takes s.mu meanwhile (a handshake, a confirm from the receive loop) waits for it, on average and at worst.
func BenchmarkSweep(b *testing.B) {
	g, _, _ := filledTable(b)
	stop := make(chan struct{})
	type waits struct {
		sum, worst time.Duration
		n          int
	}
	result := make(chan waits)
	go func() {
		var w waits
		for {
			select {
			case <-stop:
				result <- w
				return
			default:
			}
			t := time.Now()
			g.srv.mu.Lock()
			d := time.Since(t)
			g.srv.mu.Unlock()
			w.sum, w.worst, w.n = w.sum+d, max(w.worst, d), w.n+1
			runtime.Gosched()
		}
	}()
	for b.Loop() {
		g.srv.sweep(time.Now())
	}
	close(stop)
	w := <-result
	b.ReportMetric(float64(w.sum.Nanoseconds())/float64(w.n), "mean-lock-wait-ns")
	b.ReportMetric(float64(w.worst.Microseconds()), "max-lock-wait-us")
}
