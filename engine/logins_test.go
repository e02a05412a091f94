package engine

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/salvovpn/salvo/engine/users"
	"github.com/salvovpn/salvo/protocol/handshake"
)

// spoofed returns a random IPv4 source in 100.64.0.0/10, where nobody listens: answers sent there are lost,
// as a spoofer's are.
func spoofed() netip.AddrPort {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{100, 64 | b[0]&63, b[1], b[2]}), binary.LittleEndian.Uint16(b[4:])|1)
}

func loginRequest(t *testing.T, w *world, login, password string) []byte {
	t.Helper()
	cfg := handshake.ClientConfig{ServerPublic: w.static.Public, Login: login, Password: password, InstanceID: 1}
	_, msg, err := handshake.NewLogin(&cfg, 1, time.Now(), nil)
	must(t, err)
	return msg
}

// TestSpoofedLoginFloodHashesLittle: login requests with made-up logins from spoofed sources, each with a
// valid mac1 and decrypting fine, are sent as fast as the test can for two seconds. The gateway hashes only
// while the small budget of unproven senders lasts, then answers with cookies nobody receives; meanwhile a
// genuine client, which answers the cookie, logs in within 3 s.
func TestSpoofedLoginFloodHashesLittle(t *testing.T) {
	p := users.Params{Memory: 1024, Time: 1, Threads: 1}
	const perSecond = 10 // budget: ten of these hashes a second, two for unproven senders
	w := newWorld(t, func(c *ServerConfig) { c.Limits.HashBudget = perSecond * p.Cost() })
	w.store = users.New()
	w.addUser("alice", p)
	w.startServer()
	start := time.Now()
	stop := make(chan struct{})
	sent := make(chan int)
	go func() {
		n := 0
		for {
			select {
			case <-stop:
				sent <- n
				return
			default:
			}
			w.net.Inject(spoofed(), gatewayAddr, loginRequest(t, w, fmt.Sprintf("nobody%d", n), "guess"))
			n++
		}
	}()
	time.Sleep(500 * time.Millisecond) // the flood is under way; what is measured is the whole two seconds
	loginStart := time.Now()
	c := w.connect(clientOpts{})
	loginTook := time.Since(loginStart)
	time.Sleep(time.Until(start.Add(2 * time.Second)))
	close(stop)
	n := <-sent
	elapsed := time.Since(start)
	hashes := w.srv.logins.hashes.Load()
	t.Logf("%d spoofed requests in %s: %d password hashes (%.1f/s; the unproven budget allows %.0f/s after a burst of %.0f), genuine login in %s",
		n, elapsed.Round(time.Millisecond), hashes, float64(hashes)/elapsed.Seconds(), float64(perSecond)/5, 2*float64(perSecond)/5, loginTook.Round(time.Millisecond))
	// Burst of 4 unproven + 2/s for about 2.2 s + the genuine client's one.
	if max := uint64(4 + 2*elapsed.Seconds() + 2); hashes > max {
		t.Fatalf("%d hashes for a spoofed flood: more than %d", hashes, max)
	}
	if loginTook > 3*time.Second {
		t.Fatalf("a genuine login took %s during the flood", loginTook)
	}
	must(t, c.sendUp(hostV4, "through"))
}

// TestSpoofedFailuresDoNotLockOutUser: wrong passwords for alice from 60 spoofed sources empty alice's
// per-login bucket. That makes her login demand a cookie, but never refuses her: her correct password from
// a source without failures gets in.
func TestSpoofedFailuresDoNotLockOutUser(t *testing.T) {
	t.Parallel()
	w := newWorld(t, nil)
	w.startServer()
	before := w.srv.logins.hashes.Load()
	for range 60 {
		w.net.Inject(spoofed(), gatewayAddr, loginRequest(t, w, "alice", "wrong"))
	}
	waitUntil(t, 5*time.Second, "the spoofed attempts processed", func() bool {
		return w.srv.logins.hashes.Load()-before >= 10 && w.srv.hsq.len() == 0
	})
	if w.srv.logins.limits.Load().failedByLogin.Check("alice", time.Now()) {
		t.Fatal("the spoofed failures did not empty alice's bucket: the test proves nothing")
	}
	c := w.connect(clientOpts{})
	must(t, c.sendUp(hostV4, "alice is in"))
}

// TestFailuresPerSource: a source that keeps failing is refused before any hash, even with the right
// password; other sources are not affected. IPv6 sources count per /64.
func TestFailuresPerSource(t *testing.T) {
	t.Parallel()
	w := newWorld(t, nil)
	w.startServer()
	login := func(t *testing.T, p *rawPeer, password string) handshake.Result { return p.login(t, "bob", password) }
	for _, tc := range []struct {
		name          string
		attacker      func(i int) netip.AddrPort
		sameSource    netip.AddrPort
		unrelatedPeer netip.AddrPort
	}{
		{"ipv4", func(i int) netip.AddrPort {
			return netip.AddrPortFrom(netip.MustParseAddr("198.18.0.1"), uint16(1000+i))
		},
			netip.MustParseAddrPort("198.18.0.1:2000"), netip.MustParseAddrPort("198.18.0.2:1000")},
		// Every attempt from another address of one /64: one source.
		{"ipv6 /64", func(i int) netip.AddrPort {
			return netip.AddrPortFrom(netip.MustParseAddr(fmt.Sprintf("2001:db8:1::%x", i+1)), 1000)
		}, netip.MustParseAddrPort("[2001:db8:1::ffff]:1000"), netip.MustParseAddrPort("[2001:db8:2::1]:1000")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Ten failures empty the bucket; on a loaded machine the padded answers are slow enough for it to
			// regain a token or two meanwhile, so go on until the gateway says so.
			limited := false
			for i := 0; i < 30 && !limited; i++ {
				switch res := login(t, w.rawPeer(tc.attacker(i)), "wrong"); res {
				case handshake.ResultRateLimited:
					limited = i >= 10
					if !limited {
						t.Fatalf("rate limited after only %d failures", i)
					}
				case handshake.ResultBadCredentials:
				default:
					t.Fatalf("attempt %d: %v", i, res)
				}
			}
			if !limited {
				t.Fatal("30 failures from one source were never rate limited")
			}
			if res := login(t, w.rawPeer(tc.sameSource), testPassword); res != handshake.ResultRateLimited {
				t.Fatalf("right password from the failing source: %v, want rate limited", res)
			}
			if res := login(t, w.rawPeer(tc.unrelatedPeer), testPassword); res != handshake.ResultOK {
				t.Fatalf("right password from another source: %v", res)
			}
		})
	}
}

// TestFailedLoginsAnswerAfterTheSameTime: a wrong password for a user with cheap parameters, for one with
// expensive ones, for a disabled user and for an unknown login are all answered no sooner than the padding,
// which covers the most expensive hash: the answer's timing does not tell which logins exist.
func TestFailedLoginsAnswerAfterTheSameTime(t *testing.T) {
	w := newWorld(t, nil)
	w.addUser("big", users.Params{Memory: 16 * 1024, Time: 2, Threads: 1})
	w.addUser("off", cheapParams)
	must(t, w.store.SetDisabled("off", true))
	w.startServer()
	try := func(i int, login, password string) time.Duration {
		p := w.rawPeer(netip.AddrPortFrom(netip.MustParseAddr("198.18.1.1"), uint16(2000+i)))
		cfg := handshake.ClientConfig{ServerPublic: w.static.Public, Login: login, Password: password, InstanceID: 3}
		start := time.Now()
		res, err := p.handshake(func(ck *handshake.Cookie) (*handshake.ClientHandshake, []byte, error) {
			return handshake.NewLogin(&cfg, 5, time.Now(), ck)
		})
		if err != nil || res != handshake.ResultBadCredentials {
			t.Fatalf("%s: %v %v", login, res, err)
		}
		return time.Since(start)
	}
	bigHash := try(0, "big", "wrong") // also lets the padding adapt to how loaded the machine is now
	pad := time.Duration(w.srv.logins.failurePad.Load())
	took := map[string]time.Duration{"big": bigHash}
	for i, login := range []string{"alice", "off", "nobody"} {
		password := "wrong"
		if login == "off" {
			password = testPassword // right, but the user is disabled
		}
		took[login] = try(i+1, login, password)
		if took[login] < pad {
			t.Errorf("%s answered after %s, before the padding %s", login, took[login], pad)
		}
	}
	t.Logf("padding %s; answers after %v", pad, took)
}

// TestHashBudgetCountsCost: the budget is argon2 work, not a count of logins. With a budget of three
// expensive hashes a second, 40 logins of a cheap user one after the other all get in, while 30 logins of
// an expensive user sent at once are partly refused as busy once the budget is spent.
func TestHashBudgetCountsCost(t *testing.T) {
	big := users.Params{Memory: 8 * 1024, Time: 2, Threads: 1}
	w := newWorld(t, func(c *ServerConfig) { c.Limits.HashBudget = 3 * big.Cost() })
	w.addUser("big", big)
	w.startServer()
	try := func(login string, i int) handshake.Result {
		return w.tryLogin(netip.AddrPortFrom(netip.MustParseAddr("198.18.2.1"), uint16(3000+i+len(login)*100)), login, i)
	}
	for i := range 40 {
		if res := try("alice", i); res != handshake.ResultOK {
			t.Fatalf("cheap login %d: %v", i, res)
		}
	}
	ok, busy := loginsAtOnce(t, 30, func(i int) handshake.Result { return try("big", i) })
	t.Logf("30 expensive logins at once: %d ok, %d busy", ok, busy)
	if busy == 0 || ok < 3 {
		t.Fatalf("expensive logins: %d ok, %d busy; want some of each", ok, busy)
	}
}

// tryLogin logs in from a raw peer at src as login with testPassword and instance i+1, answering a cookie
// if asked, and returns the gateway's answer (255 if none came).
func (w *world) tryLogin(src netip.AddrPort, login string, i int) handshake.Result {
	cfg := handshake.ClientConfig{ServerPublic: w.static.Public, Login: login, Password: testPassword, InstanceID: uint64(i + 1)}
	res, err := w.rawPeer(src).handshake(func(ck *handshake.Cookie) (*handshake.ClientHandshake, []byte, error) {
		return handshake.NewLogin(&cfg, 5, time.Now(), ck)
	})
	if err != nil {
		return 255
	}
	return res
}

// loginsAtOnce runs try(0..n-1) at once and counts the logins accepted and refused as busy; any other
// answer fails the test.
func loginsAtOnce(t *testing.T, n int, try func(i int) handshake.Result) (ok, busy int) {
	t.Helper()
	results := make(chan handshake.Result, n)
	for i := range n {
		go func() { results <- try(i) }()
	}
	for range n {
		switch res := <-results; res {
		case handshake.ResultOK:
			ok++
		case handshake.ResultBusy:
			busy++
		default:
			t.Fatalf("login: %v", res)
		}
	}
	return ok, busy
}
