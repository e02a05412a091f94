package engine

import (
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/tun"

	"github.com/salvovpn/salvo/engine/enginetest"
	"github.com/salvovpn/salvo/engine/ippool"
	"github.com/salvovpn/salvo/engine/users"
	"github.com/salvovpn/salvo/protocol/handshake"
)

// The in-process harness: a gateway and clients over enginetest's in-memory network and TUN devices, so
// whole-tunnel behaviour (logins, rekeys, restarts, attacks) runs under -race without root.

const testPassword = "correct horse battery staple"

var (
	gatewayAddr  = netip.MustParseAddrPort("192.0.2.1:51820")
	gatewayAddr6 = netip.MustParseAddrPort("[2001:db8::1]:51820")
	hostV4       = netip.MustParseAddr("10.201.0.2") // a host behind the gateway
	hostV6       = netip.MustParseAddr("fd00:201::2")
	// cheapParams keep argon2id fast in tests; the hashing budget counts their real cost.
	cheapParams = users.Params{Memory: 256, Time: 1, Threads: 1}
)

// world is one gateway with its users file, state directory and network, and the clients started on it.
type world struct {
	t         *testing.T
	net       *enginetest.Network
	rec       *enginetest.Recorder
	static    handshake.StaticKeypair
	usersPath string
	store     *users.Store
	stateDir  string
	// mod changes the gateway config before every start.
	mod func(*ServerConfig)
	// wrapTUN, if set, wraps the gateway's TUN device (fault injection).
	wrapTUN func(tun.Device) tun.Device
	// handshakeSockets gives each listen address a handshake socket, on the next port.
	handshakeSockets bool
	// addr4, if valid, is where the next startServer listens instead of gatewayAddr (a gateway that moved).
	addr4 netip.AddrPort

	srv     *Server
	srvTUN  *enginetest.TUN
	srvStop context.CancelFunc
	srvDone chan error
}

func newWorld(t *testing.T, mod func(*ServerConfig)) *world {
	t.Helper()
	w := &world{t: t, net: enginetest.NewNetwork(), rec: enginetest.NewRecorder(), stateDir: t.TempDir(), mod: mod}
	t.Cleanup(w.net.Close)
	w.net.SetTap(w.rec.Tap)
	var err error
	if w.static, err = handshake.GenerateKeypair(nil); err != nil {
		t.Fatal(err)
	}
	w.usersPath = filepath.Join(t.TempDir(), "users")
	w.store = users.New()
	w.addUser("alice", cheapParams)
	w.addUser("bob", cheapParams)
	return w
}

// addUser adds a user to the users file (saved, and reloaded into the gateway's store by the caller).
func (w *world) addUser(login string, p users.Params) {
	w.t.Helper()
	h, err := users.HashPassword([]byte(testPassword), p, rand.Reader)
	must(w.t, err)
	must(w.t, w.store.Add(users.User{Login: login, Hash: h}))
	must(w.t, w.store.Save(w.usersPath))
}

func (w *world) pool4() *ippool.Pool {
	p, err := ippool.New(netip.MustParsePrefix("10.77.0.0/24"))
	must(w.t, err)
	return p
}

func (w *world) pool6() *ippool.Pool {
	p, err := ippool.New(netip.MustParsePrefix("fd77::/64"))
	must(w.t, err)
	return p
}

// startServer starts a gateway on gatewayAddr with a fresh socket and TUN (a restart keeps the users
// store and the state directory, as a restarted process would find them).
func (w *world) startServer() *Server {
	w.t.Helper()
	addr4 := gatewayAddr
	if w.addr4.IsValid() {
		addr4 = w.addr4
	}
	conn, err := w.net.Listen(addr4)
	must(w.t, err)
	conn6, err := w.net.Listen(gatewayAddr6)
	must(w.t, err)
	w.srvTUN = enginetest.NewTUN("salvo0", 1420)
	cfg := ServerConfig{
		Static: w.static, Users: w.store, Pool4: w.pool4(), Pool6: w.pool6(), StateDir: w.stateDir,
		Settings: handshake.Settings{MTU: 1420, Keepalive: 25 * time.Second,
			Routes: []netip.Prefix{netip.MustParsePrefix("10.201.0.0/24"), netip.MustParsePrefix("fd00:201::/64")}},
		Log: testLogger(w.t, "gateway"),
	}
	if w.mod != nil {
		w.mod(&cfg)
	}
	if w.handshakeSockets {
		for _, a := range []netip.AddrPort{gatewayAddr, gatewayAddr6} {
			hc, err := w.net.Listen(netip.AddrPortFrom(a.Addr(), a.Port()+1))
			must(w.t, err)
			cfg.HandshakeConns = append(cfg.HandshakeConns, hc)
		}
	}
	var dev tun.Device = w.srvTUN
	if w.wrapTUN != nil {
		dev = w.wrapTUN(dev)
	}
	srv, err := NewServer(cfg, []tun.Device{dev}, []PacketConn{conn, conn6})
	must(w.t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	w.srv, w.srvStop, w.srvDone = srv, cancel, done
	w.t.Cleanup(func() { w.stopServer() })
	return srv
}

// stopServer stops the gateway the graceful way (it tells its clients it is shutting down).
func (w *world) stopServer() {
	if w.srvStop == nil {
		return
	}
	w.srvStop()
	if err := <-w.srvDone; err != nil {
		w.t.Errorf("gateway Run: %v", err)
	}
	w.srvStop = nil
}

// crashServer stops the gateway as SIGKILL would: nothing it sends on the way out reaches anybody. Leases
// are what the janitor saved before the crash.
func (w *world) crashServer() {
	w.net.SetFilter(func(from, to netip.AddrPort, b []byte) enginetest.Verdict {
		if from == gatewayAddr {
			return enginetest.Drop
		}
		return enginetest.Deliver
	})
	w.stopServer()
	w.net.SetFilter(nil)
}

// waitLeaseSaved waits until the gateway's lease file lists user's lease (the janitor saves every second).
func (w *world) waitLeaseSaved(user string) {
	w.t.Helper()
	waitUntil(w.t, 5*time.Second, "lease of "+user+" saved", func() bool {
		b, err := os.ReadFile(filepath.Join(w.stateDir, leaseFileName))
		return err == nil && strings.Contains(string(b), `"user": "`+user+`"`)
	})
}

// reloadUsers saves the users store, reloads it as SIGHUP does and lets the gateway re-check its sessions.
func (w *world) reloadUsers() int {
	w.t.Helper()
	must(w.t, w.store.Save(w.usersPath))
	must(w.t, w.store.Reload(w.usersPath))
	return w.srv.UsersChanged()
}

// tclient is a client engine with its own socket, TUN device and setup recorder.
type tclient struct {
	t     *testing.T
	w     *world
	cl    *Client
	conn  *enginetest.Conn
	tun   *enginetest.TUN
	setup *recordingSetup
	stop  context.CancelFunc
	done  chan error
}

// clientOpts adjust a client before it starts.
type clientOpts struct {
	user, password string
	addr           netip.AddrPort // "" picks 198.51.100.N:0
	rekeyAfter     time.Duration
	loginTimeout   time.Duration
	resolve        func(context.Context) (netip.AddrPort, error)
	fallbacks      []netip.AddrPort // further gateways
}

var clientSeq struct {
	sync.Mutex
	n int
}

func (w *world) startClient(o clientOpts) *tclient {
	w.t.Helper()
	if o.user == "" {
		o.user = "alice"
	}
	if o.password == "" {
		o.password = testPassword
	}
	if !o.addr.IsValid() {
		clientSeq.Lock()
		clientSeq.n++
		n := clientSeq.n
		clientSeq.Unlock()
		o.addr = netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, byte(100 + n/250), byte(1 + n%250)}), 0)
	}
	conn, err := w.net.Listen(o.addr)
	must(w.t, err)
	var fallbacks []Gateway
	for _, a := range o.fallbacks {
		fallbacks = append(fallbacks, Gateway{Name: a.String(), Addr: a})
	}
	c := &tclient{t: w.t, w: w, conn: conn, tun: enginetest.NewTUN("salvo1", 1420), setup: &recordingSetup{}}
	c.cl = NewClient(ClientConfig{
		Server: gatewayAddr.String(), ServerAddr: gatewayAddr, Resolve: o.resolve, Fallbacks: fallbacks,
		Handshake:    handshake.ClientConfig{ServerPublic: w.static.Public, Login: o.user, Password: o.password},
		OpenTUN:      func(int) (tun.Device, error) { return c.tun, nil },
		Setup:        c.setup,
		Log:          testLogger(w.t, "client "+o.user),
		RekeyAfter:   o.rekeyAfter,
		LoginTimeout: o.loginTimeout,
	}, conn)
	ctx, cancel := context.WithCancel(context.Background())
	c.stop, c.done = cancel, make(chan error, 1)
	go func() { c.done <- c.cl.Run(ctx) }()
	w.t.Cleanup(func() { cancel(); <-c.done })
	return c
}

// connect starts a client and waits until its tunnel is up.
func (w *world) connect(o clientOpts) *tclient {
	w.t.Helper()
	c := w.startClient(o)
	c.waitState("connected", 10*time.Second)
	// The gateway makes the session live when the client's first packet under the new keys arrives.
	waitUntil(w.t, 5*time.Second, "the session live at the gateway", func() bool {
		idx := c.cl.Status().Sessions[0].SessionIndex
		for _, s := range w.srv.Status().Sessions {
			if s.SessionIndex == idx {
				return true
			}
		}
		return false
	})
	return c
}

func (c *tclient) waitState(state string, d time.Duration) {
	c.t.Helper()
	waitUntil(c.t, d, "client "+state, func() bool {
		select {
		case err := <-c.done:
			c.done <- err // for the cleanup
			c.t.Fatalf("client stopped while waiting for %q: %v", state, err)
		default:
		}
		return c.cl.Status().State == state
	})
}

// exit waits for the client to stop on its own and returns why.
func (c *tclient) exit(d time.Duration) error {
	c.t.Helper()
	select {
	case err := <-c.done:
		c.done <- err // for the cleanup
		return err
	case <-time.After(d):
		c.t.Fatalf("client still running after %s", d)
		return nil
	}
}

// addrs are the client's tunnel addresses as pushed by the gateway.
func (c *tclient) addrs() (v4, v6 netip.Addr) {
	c.cl.mu.Lock()
	defer c.cl.mu.Unlock()
	return c.cl.settings.IPv4.Addr(), c.cl.settings.IPv6.Addr()
}

// sendUp sends one packet from the client's OS through the tunnel to the host behind the gateway and
// waits for it to come out of the gateway's TUN.
func (c *tclient) sendUp(dst netip.Addr, payload string) error {
	v4, v6 := c.addrs()
	src := v4
	if dst.Is6() {
		src = v6
	}
	c.tun.Inject(enginetest.UDPPacket(netip.AddrPortFrom(src, 4000), netip.AddrPortFrom(dst, 53), []byte(payload)))
	return c.w.expectAtGateway(payload, 2*time.Second)
}

// poke sends a packet into the tunnel without waiting for it: traffic, so that the client notices a lost
// session from the gateway's notices.
func (c *tclient) poke() {
	if v4, _ := c.addrs(); v4.IsValid() {
		c.tun.Inject(enginetest.UDPPacket(netip.AddrPortFrom(v4, 4000), netip.AddrPortFrom(hostV4, 9), []byte("poke")))
	}
}

// sendDown sends one packet from the host behind the gateway to the client and waits for it at the
// client's TUN.
func (c *tclient) sendDown(src netip.Addr, payload string) error {
	v4, v6 := c.addrs()
	dst := v4
	if src.Is6() {
		dst = v6
	}
	c.w.srvTUN.Inject(enginetest.UDPPacket(netip.AddrPortFrom(src, 53), netip.AddrPortFrom(dst, 4000), []byte(payload)))
	return expectAt(c.tun, payload, 2*time.Second)
}

func (w *world) expectAtGateway(payload string, d time.Duration) error {
	return expectAt(w.srvTUN, payload, d)
}

// expectAt waits for a packet carrying payload to be written to dev, skipping others.
func expectAt(dev *enginetest.TUN, payload string, d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for {
		pkt, err := dev.Receive(ctx)
		if err != nil {
			return errors.New("packet " + payload + " not delivered: " + err.Error())
		}
		if _, _, p, ok := enginetest.ParseIP(pkt); ok && string(p) == payload {
			return nil
		}
	}
}

// recordingSetup stands in for netcfg: it records what the client applies and checks that every Apply is
// preceded by the undo of the previous one (settings are replaced, never stacked).
type recordingSetup struct {
	mu      sync.Mutex
	applied []handshake.Settings
	active  int // applies not undone
}

func (r *recordingSetup) Apply(dev tun.Device, st handshake.Settings) (func(), error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.active != 0 {
		return nil, errors.New("Apply while earlier settings are still applied: settings would stack")
	}
	r.active++
	r.applied = append(r.applied, st)
	var once sync.Once
	return func() {
		once.Do(func() {
			r.mu.Lock()
			r.active--
			r.mu.Unlock()
		})
	}, nil
}

func (r *recordingSetup) history() []handshake.Settings {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]handshake.Settings(nil), r.applied...)
}

// testLogger logs to the test's output, which go test shows for a failed test (and with -v): a rare failure
// comes with the story of how it happened.
func testLogger(t *testing.T, who string) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})).With("who", who)
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(string(b))
	return len(b), nil
}

// waitUntil polls cond: the engines' state changes happen on their own goroutines, and the status they
// expose is what the tests observe.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: not within %s", what, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// rawPeer is a bare UDP endpoint on the test network, for an attacker or a hand-driven client: it sends
// what the test builds and hands over whatever arrives.
type rawPeer struct {
	w    *world
	conn *enginetest.Conn
	in   chan []byte
}

func (w *world) rawPeer(addr netip.AddrPort) *rawPeer {
	w.t.Helper()
	conn, err := w.net.Listen(addr)
	must(w.t, err)
	p := &rawPeer{w: w, conn: conn, in: make(chan []byte, 1024)}
	go func() {
		bufs, sizes, addrs := [][]byte{make([]byte, 65536)}, []int{0}, []netip.AddrPort{{}}
		for {
			n, err := conn.ReadBatch(bufs, sizes, addrs)
			if err != nil {
				close(p.in)
				return
			}
			for i := range n {
				p.in <- append([]byte(nil), bufs[i][:sizes[i]]...)
			}
		}
	}()
	w.t.Cleanup(func() { conn.Close() })
	return p
}

// gateway is the gateway's address of the peer's family.
func (p *rawPeer) gateway() netip.AddrPort {
	if p.conn.LocalAddr().Addr().Is6() {
		return gatewayAddr6
	}
	return gatewayAddr
}

func (p *rawPeer) send(to netip.AddrPort, b []byte) {
	_, _ = p.conn.WriteBatch([][]byte{b}, []netip.AddrPort{to})
}

// handshake sends a request made by h's constructor and returns the authenticated result, following one
// cookie demand (as a real client would, which proves this peer's source address).
// login sends a login for user with password (answering a cookie demand) and returns the gateway's answer.
func (p *rawPeer) login(t *testing.T, user, password string) handshake.Result {
	t.Helper()
	cfg := handshake.ClientConfig{ServerPublic: p.w.static.Public, Login: user, Password: password, InstanceID: 9}
	res, err := p.handshake(func(ck *handshake.Cookie) (*handshake.ClientHandshake, []byte, error) {
		return handshake.NewLogin(&cfg, 5, time.Now(), ck)
	})
	must(t, err)
	return res
}

func (p *rawPeer) handshake(build func(cookie *handshake.Cookie) (*handshake.ClientHandshake, []byte, error)) (handshake.Result, error) {
	var cookie *handshake.Cookie
	for range 2 {
		h, msg, err := build(cookie)
		if err != nil {
			return 0, err
		}
		p.send(p.gateway(), msg)
		deadline := time.After(3 * time.Second)
	wait:
		for {
			select {
			case b := <-p.in:
				switch {
				case len(b) > 0 && b[0] == 0x04:
					if cookie, err = h.ConsumeCookieReply(b, time.Now()); err == nil {
						break wait
					}
				case len(b) > 0 && b[0] == 0x02:
					res, _, _, err := h.ConsumeResponse(b)
					if err == nil {
						return res, nil
					}
				}
			case <-deadline:
				return 0, errors.New("no answer from the gateway")
			}
		}
	}
	return 0, errors.New("the gateway demanded a cookie twice")
}
