package engine

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/salvovpn/salvo/engine/enginetest"
	"github.com/salvovpn/salvo/engine/users"
	"github.com/salvovpn/salvo/protocol"
	"github.com/salvovpn/salvo/protocol/handshake"
)

func wantEnded(t *testing.T, c *tclient, reason protocol.DisconnectReason) {
	t.Helper()
	err := c.exit(5 * time.Second)
	var se *SessionEndedError
	if !errors.As(err, &se) || se.Reason != reason {
		t.Fatalf("client ended with %v, want the gateway's %q", err, reason)
	}
}

func sessions(w *world) int { return len(w.srv.Status().Sessions) }

// TestRevocation: removing a user, disabling them or changing their password and reloading the users file
// ends their session at once; the client is told "revoked", says so and stops. Other users keep theirs.
func TestRevocation(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		change func(w *world)
	}{
		{"deleted", func(w *world) { must(w.t, w.store.Delete("alice")) }},
		{"disabled", func(w *world) { must(w.t, w.store.SetDisabled("alice", true)) }},
		{"password changed", func(w *world) {
			h, err := users.HashPassword([]byte("new password"), cheapParams, rand.Reader)
			must(w.t, err)
			must(w.t, w.store.SetPassword("alice", h))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t, nil)
			w.startServer()
			alice := w.connect(clientOpts{})
			bob := w.connect(clientOpts{user: "bob"})
			tc.change(w)
			if n := w.reloadUsers(); n != 1 {
				t.Fatalf("reload ended %d sessions, want 1", n)
			}
			wantEnded(t, alice, protocol.DisconnectRevoked)
			if sessions(w) != 1 {
				t.Fatalf("%d sessions left", sessions(w))
			}
			must(t, bob.sendUp(hostV4, "bob stays"))
		})
	}
}

// TestResumeConsultsUsers: even without the revocation pass of a reload, the next rekey of a session whose
// user changed is refused and the session ends: every path that extends a session reads the users file.
func TestResumeConsultsUsers(t *testing.T) {
	t.Parallel()
	w := newWorld(t, nil)
	w.startServer()
	alice := w.connect(clientOpts{rekeyAfter: 300 * time.Millisecond})
	h, err := users.HashPassword([]byte("new password"), cheapParams, rand.Reader)
	must(t, err)
	must(t, w.store.SetPassword("alice", h)) // changed in the store, no UsersChanged
	wantEnded(t, alice, protocol.DisconnectRevoked)
	if sessions(w) != 0 {
		t.Fatal("the session survived its rekey")
	}
}

// TestKick: POST /sessions/alice/disconnect ends alice's sessions (she is told "kicked" and stops) and
// nobody else's; kicking a user without sessions is a 404 with a message.
func TestKick(t *testing.T) {
	t.Parallel()
	w := newWorld(t, nil)
	w.startServer()
	alice := w.connect(clientOpts{})
	bob := w.connect(clientOpts{user: "bob"})
	api := httptest.NewServer(w.srv.API())
	defer api.Close()
	resp, err := http.Post(api.URL+"/sessions/alice/disconnect", "", nil)
	must(t, err)
	var kr KickResult
	must(t, json.NewDecoder(resp.Body).Decode(&kr))
	resp.Body.Close()
	if resp.StatusCode != 200 || kr.Ended != 1 {
		t.Fatalf("kick: %d %+v", resp.StatusCode, kr)
	}
	wantEnded(t, alice, protocol.DisconnectKicked)
	must(t, bob.sendUp(hostV4, "bob stays"))
	resp, err = http.Post(api.URL+"/sessions/carol/disconnect", "", nil)
	must(t, err)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("kick of a user without sessions: %d", resp.StatusCode)
	}
}

// TestMaxSessionAge: once a session is older than max_session_age its rekey is refused and the client
// logs in with its password again: a new hash, the same addresses, traffic flowing after.
func TestMaxSessionAge(t *testing.T) {
	t.Parallel()
	w := newWorld(t, func(c *ServerConfig) { c.MaxSessionAge = time.Second })
	w.startServer()
	c := w.connect(clientOpts{rekeyAfter: 300 * time.Millisecond})
	v4, _ := c.addrs()
	hashes := w.srv.logins.hashes.Load()
	waitUntil(t, 10*time.Second, "a full login after max_session_age", func() bool { return w.srv.logins.hashes.Load() > hashes })
	c.waitState("connected", 5*time.Second)
	if now, _ := c.addrs(); now != v4 {
		t.Fatalf("address changed from %v to %v", v4, now)
	}
	waitUntil(t, 5*time.Second, "traffic after the login", func() bool { return c.sendUp(hostV4, "after") == nil })
	must(t, c.sendDown(hostV4, "after down"))
}

// TestGatewayCrashKeepsLeases: a gateway that dies without a word and comes back finds its leases in the
// state directory. The client, which keeps sending, is back within 15 s with the same addresses (so its
// applied settings do not change) and traffic flows both ways.
func TestGatewayCrashKeepsLeases(t *testing.T) {
	t.Parallel()
	w := newWorld(t, nil)
	w.startServer()
	c := w.connect(clientOpts{})
	v4, v6 := c.addrs()
	w.waitLeaseSaved("alice")
	w.crashServer()
	w.startServer()
	restarted := time.Now()
	waitUntil(t, 15*time.Second, "traffic through the restarted gateway", func() bool { return c.sendUp(hostV4, "back") == nil })
	t.Logf("traffic resumed %s after the restart", time.Since(restarted).Round(time.Millisecond))
	if a4, a6 := c.addrs(); a4 != v4 || a6 != v6 {
		t.Fatalf("addresses changed across the restart: %v %v -> %v %v", v4, v6, a4, a6)
	}
	must(t, c.sendDown(hostV6, "down after restart"))
	if h := c.setup.history(); len(h) != 1 {
		t.Fatalf("settings applied %d times; the same lease means the same settings", len(h))
	}
}

// TestGatewayStopTellsClients: a gateway that stops cleanly says "shutting down"; the client reconnects
// with backoff and is back, with its addresses, when the gateway returns.
func TestGatewayStopTellsClients(t *testing.T) {
	t.Parallel()
	w := newWorld(t, nil)
	w.startServer()
	c := w.connect(clientOpts{})
	v4, _ := c.addrs()
	w.waitLeaseSaved("alice")
	w.stopServer()
	c.waitState("reconnecting", 5*time.Second)
	w.startServer()
	c.waitState("connected", 15*time.Second)
	if a4, _ := c.addrs(); a4 != v4 {
		t.Fatalf("address %v after the restart, was %v", a4, v4)
	}
	waitUntil(t, 5*time.Second, "traffic", func() bool { return c.sendUp(hostV4, "back") == nil })
}

// TestPendingSessionsAreTold: a session whose login the gateway accepted but whose first packet has not
// arrived yet (the client thinks it is connected) is told too when the gateway stops or kicks its user:
// it must not be left to a dead-peer timeout, nor carry on as if nothing happened.
func TestPendingSessionsAreTold(t *testing.T) {
	t.Parallel()
	w := newWorld(t, nil)
	w.startServer()
	// The client's data never arrives, so its session stays pending at the gateway.
	w.net.SetFilter(func(_, to netip.AddrPort, b []byte) enginetest.Verdict {
		if to == gatewayAddr && len(b) > 0 && protocol.Code(b[0]) == protocol.CodeData {
			return enginetest.Drop
		}
		return enginetest.Deliver
	})
	c := w.startClient(clientOpts{})
	c.waitState("connected", 10*time.Second)
	if n := len(w.srv.Status().Sessions); n != 0 {
		t.Fatalf("%d live sessions; the test needs the session pending", n)
	}
	w.stopServer()
	c.waitState("reconnecting", 5*time.Second)

	w.startServer()
	c.waitState("connected", 15*time.Second)
	if n := w.srv.Kick("alice"); n != 1 {
		t.Fatalf("kick ended %d sessions, want the pending one", n)
	}
	wantEnded(t, c, protocol.DisconnectKicked)
}

// TestReconnectFollowsMovedGateway: before each reconnect the client looks the gateway's name up again, so
// a gateway that comes back at another address (its DNS name now points there) gets its clients back; a
// failed look-up keeps the address the client had.
func TestReconnectFollowsMovedGateway(t *testing.T) {
	t.Parallel()
	w := newWorld(t, nil)
	w.startServer()
	moved := netip.MustParseAddrPort("192.0.2.77:51820")
	var answer atomic.Pointer[netip.AddrPort]
	answer.Store(&gatewayAddr)
	var lookups atomic.Int32
	c := w.connect(clientOpts{resolve: func(context.Context) (netip.AddrPort, error) {
		lookups.Add(1)
		if a := answer.Load(); a != nil {
			return *a, nil
		}
		return netip.AddrPort{}, errors.New("SERVFAIL")
	}})
	v4, _ := c.addrs()
	w.waitLeaseSaved("alice")

	// A failing resolver during a reconnect keeps the old address: the gateway comes back there.
	answer.Store(nil)
	w.stopServer()
	c.waitState("reconnecting", 5*time.Second)
	w.startServer()
	c.waitState("connected", 15*time.Second)
	if lookups.Load() == 0 {
		t.Fatal("the client did not look the gateway up again before reconnecting")
	}
	if ep := c.cl.Status().Sessions[0].Endpoint; ep != gatewayAddr.String() {
		t.Fatalf("endpoint %s after a failed look-up, want %s", ep, gatewayAddr)
	}

	answer.Store(&moved)
	w.stopServer()
	c.waitState("reconnecting", 5*time.Second)
	w.addr4 = moved
	w.startServer()
	c.waitState("connected", 15*time.Second)
	if ep := c.cl.Status().Sessions[0].Endpoint; ep != moved.String() {
		t.Fatalf("endpoint %s, want the moved gateway %s", ep, moved)
	}
	if a4, _ := c.addrs(); a4 != v4 {
		t.Fatalf("address %v after the move, was %v", a4, v4)
	}
	waitUntil(t, 5*time.Second, "traffic through the moved gateway", func() bool { return c.sendUp(hostV4, "moved") == nil })
}

// TestSettingsReplaced: when the gateway pushes other settings (here: its leases were lost and its pool
// changed), the client replaces the applied ones; it never stacks them (recordingSetup refuses an Apply
// before the previous undo), and the new address carries traffic.
func TestSettingsReplaced(t *testing.T) {
	t.Parallel()
	w := newWorld(t, nil)
	w.startServer()
	c := w.connect(clientOpts{})
	old4, _ := c.addrs()
	w.waitLeaseSaved("alice")
	w.crashServer()
	must(t, os.Remove(filepath.Join(w.stateDir, leaseFileName)))
	w.addUser("carol", cheapParams) // reorders nothing, but a fresh pool hands out .2 again: take it first
	w.startServer()
	w.srv.mu.Lock()
	_, err := w.srv.leases.acquire(users.User{Login: "placeholder"}, 1)
	w.srv.mu.Unlock()
	must(t, err)
	// The client notices the lost session from the notices its traffic draws.
	waitUntil(t, 20*time.Second, "a new address", func() bool {
		c.poke()
		a, _ := c.addrs()
		return a.IsValid() && a != old4
	})
	c.waitState("connected", 5*time.Second)
	h := c.setup.history()
	if len(h) != 2 || h[1].IPv4 == h[0].IPv4 {
		t.Fatalf("applied settings: %+v", h)
	}
	waitUntil(t, 5*time.Second, "traffic from the new address", func() bool { return c.sendUp(hostV4, "new address") == nil })
}

// TestIdleSessionStaysUp: with a 1 s keepalive, an idle client would reconnect after 2 keepalives plus
// 5 s of silence unless the gateway sends it keepalives too. Over 9 idle seconds it sends no handshake
// and stays connected.
func TestIdleSessionStaysUp(t *testing.T) {
	t.Parallel()
	w := newWorld(t, func(c *ServerConfig) { c.Settings.Keepalive = time.Second })
	w.startServer()
	c := w.connect(clientOpts{})
	handshakes := countCode(w.rec, byte(protocol.CodeClientAuthRequest), gatewayAddr)
	time.Sleep(9 * time.Second) // the idle period itself is what is tested
	if n := countCode(w.rec, byte(protocol.CodeClientAuthRequest), gatewayAddr) - handshakes; n != 0 {
		t.Fatalf("the idle client sent %d handshakes", n)
	}
	if st := c.cl.Status().State; st != "connected" {
		t.Fatalf("state %q", st)
	}
	must(t, c.sendUp(hostV4, "still up"))
}

// TestMaxSessionsPerUser: with max_sessions_per_user = 2, a third device of the same user replaces the
// oldest session, which is told "replaced" and stops instead of logging in again: three logins in all,
// two sessions, no flapping.
func TestMaxSessionsPerUser(t *testing.T) {
	t.Parallel()
	w := newWorld(t, func(c *ServerConfig) { c.MaxSessionsPerUser = 2 })
	w.startServer()
	first := w.connect(clientOpts{})
	second := w.connect(clientOpts{})
	third := w.connect(clientOpts{})
	wantEnded(t, first, protocol.DisconnectReplaced)
	hashes := w.srv.logins.hashes.Load()
	time.Sleep(3 * time.Second) // time in which a flapping pair would have logged in again
	if n := sessions(w); n != 2 {
		t.Fatalf("%d sessions, want 2", n)
	}
	if h := w.srv.logins.hashes.Load(); h != hashes || h != 3 {
		t.Fatalf("%d logins, want 3 and no more", h)
	}
	must(t, second.sendUp(hostV4, "second"))
	must(t, third.sendUp(hostV4, "third"))
}

// TestUnconfirmedLoginLeavesNothing: a login that the gateway accepts but whose keys nobody uses (a
// client killed half-way, or a copy of the victim's request raced from another address) changes nothing
// about the live session of that client instance and is gone after pendingTimeout, lease included.
func TestUnconfirmedLoginLeavesNothing(t *testing.T) {
	t.Parallel()
	w := newWorld(t, func(c *ServerConfig) { c.pendingTimeout = time.Second })
	w.startServer()
	victim := w.connect(clientOpts{})
	before := snapshot(t, w.srv)
	// What an on-path attacker who delays the victim's next login would hold: a valid request with the
	// victim's credentials and instance, sent from the attacker's address first.
	cfg := victim.cl.cfg.Handshake
	attacker := w.rawPeer(attackerAddr)
	res, err := attacker.handshake(func(ck *handshake.Cookie) (*handshake.ClientHandshake, []byte, error) {
		return handshake.NewLogin(&cfg, 42, time.Now(), ck)
	})
	must(t, err)
	if res != handshake.ResultOK {
		t.Fatalf("the raced login: %v", res)
	}
	if after := snapshot(t, w.srv); after != before {
		t.Fatalf("an unconfirmed login changed the live session:\n%+v\n%+v", before, after)
	}
	must(t, victim.sendDown(hostV4, "still the victim's"))
	// A second instance nobody confirms holds a lease only until the timeout.
	cfg.InstanceID++
	res, err = attacker.handshake(func(ck *handshake.Cookie) (*handshake.ClientHandshake, []byte, error) {
		return handshake.NewLogin(&cfg, 43, time.Now(), ck)
	})
	must(t, err)
	if res != handshake.ResultOK {
		t.Fatal(res)
	}
	waitUntil(t, 5*time.Second, "the unconfirmed logins dropped", func() bool {
		w.srv.mu.Lock()
		defer w.srv.mu.Unlock()
		return len(w.srv.pending) == 0 && len(w.srv.leases.byKey) == 1
	})
	if after := snapshot(t, w.srv); after != before {
		t.Fatalf("the live session changed: %+v", after)
	}
}
