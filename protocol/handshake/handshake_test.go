package handshake

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/salvovpn/salvo/protocol"
)

func checkCrosswise(t testing.TB, c, s SessionKeys) {
	t.Helper()
	if c.Send != s.Recv || c.Recv != s.Send {
		t.Fatal("keys do not match crosswise")
	}
	if c.Send == c.Recv || c.Send == ([32]byte{}) || c.Recv == ([32]byte{}) {
		t.Fatal("degenerate keys")
	}
	if c.LocalIndex != s.RemoteIndex || c.RemoteIndex != s.LocalIndex {
		t.Fatalf("indexes: client %d/%d server %d/%d", c.LocalIndex, c.RemoteIndex, s.LocalIndex, s.RemoteIndex)
	}
	if c.ResumeKey != s.ResumeKey || c.ResumeKey == ([32]byte{}) {
		t.Fatal("resume keys differ")
	}
	if c.Suite != s.Suite {
		t.Fatalf("suite: client %v server %v", c.Suite, s.Suite)
	}
}

func TestLoginHandshake(t *testing.T) {
	cases := []struct {
		name   string
		server []protocol.Suite
		client []protocol.Suite
		want   protocol.Suite
	}{
		{"aes-first client, server both", nil, aesPref, protocol.SuiteAES256GCM},
		{"chacha-only client, server both", nil, chaOnly, protocol.SuiteChaCha20Poly1305},
		{"aes-first client, chacha-only server", chaOnly, aesPref, protocol.SuiteChaCha20Poly1305},
		{"chacha-first client, aes-only server", []protocol.Suite{protocol.SuiteAES256GCM}, []protocol.Suite{protocol.SuiteChaCha20Poly1305, protocol.SuiteAES256GCM}, protocol.SuiteAES256GCM},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv, kp := newTestServer(t, tc.server...)
			cfg := clientCfg(kp.Public, tc.client)
			h, msg, err := NewLogin(cfg, 42, t0, nil)
			if err != nil {
				t.Fatal(err)
			}
			if h.LocalIndex() != 42 {
				t.Fatal("LocalIndex")
			}
			req, reply, err := srv.ConsumeRequest(msg, srcA, t0.Add(time.Second), false)
			if err != nil || reply != nil {
				t.Fatalf("ConsumeRequest: %v", err)
			}
			if req.Kind != KindLogin || req.Login != cfg.Login || string(req.Password) != cfg.Password ||
				req.InstanceID != cfg.InstanceID || !req.Timestamp.Equal(t0) || req.SenderIndex != 42 ||
				!reflect.DeepEqual(req.Suites, tc.client) {
				t.Fatalf("request fields: %+v", req)
			}
			for _, f := range []string{"%v", "%+v", "%#v", "%s"} {
				if strings.Contains(fmt.Sprintf(f, req), cfg.Password) || strings.Contains(fmt.Sprintf(f, cfg), cfg.Password) ||
					strings.Contains(fmt.Sprintf(f, *cfg), cfg.Password) {
					t.Fatalf("formatting with %s leaks the password", f)
				}
			}
			pw := req.Password
			st := fullSettings()
			resp, sk, err := srv.Accept(req, 7, st, nil, t0.Add(time.Second))
			if err != nil {
				t.Fatal(err)
			}
			if len(pw) > 0 && pw[0] != 0 || req.Password != nil {
				t.Fatal("Accept did not wipe the password")
			}
			res, ck, got, err := h.ConsumeResponse(resp)
			if err != nil || res != ResultOK {
				t.Fatalf("ConsumeResponse: %v %v", res, err)
			}
			checkCrosswise(t, ck, sk)
			if ck.Suite != tc.want {
				t.Fatalf("suite %v, want %v", ck.Suite, tc.want)
			}
			if ck.LocalIndex != 42 || ck.RemoteIndex != 7 {
				t.Fatal("indexes")
			}
			if !reflect.DeepEqual(got, st) {
				t.Fatalf("settings round trip:\n got %+v\nwant %+v", got, st)
			}
			if _, _, _, err := h.ConsumeResponse(resp); !errors.Is(err, ErrHandshakeDone) {
				t.Fatalf("second ConsumeResponse: %v", err)
			}
		})
	}
}

func TestNoCommonSuite(t *testing.T) {
	srv, kp := newTestServer(t, protocol.SuiteAES256GCM)
	h, msg, err := NewLogin(clientCfg(kp.Public, chaOnly), 1, t0, nil)
	if err != nil {
		t.Fatal(err)
	}
	req, _, err := srv.ConsumeRequest(msg, srcA, t0, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := srv.Accept(req, 2, fullSettings(), nil, t0); !errors.Is(err, ErrNoCommonSuite) {
		t.Fatalf("Accept: %v", err)
	}
	resp, err := srv.Reject(req, ResultVersionMismatch)
	if err != nil {
		t.Fatal(err)
	}
	res, _, _, err := h.ConsumeResponse(resp)
	if err != nil || res != ResultVersionMismatch {
		t.Fatalf("got %v %v", res, err)
	}
}

// The engine's side of a failed login: the protocol view of "wrong password" and "unknown user" is the same
// authenticated Reject, and nothing is recorded, so the same instance can try again.
func TestRejectedLogin(t *testing.T) {
	users := map[string]string{"alice@example.org": "correct horse battery staple"}
	for _, tc := range []struct{ name, login, password string }{
		{"wrong password", "alice@example.org", "hunter2"},
		{"unknown user", "mallory", "whatever"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, kp := newTestServer(t)
			cfg := clientCfg(kp.Public, nil)
			cfg.Login, cfg.Password = tc.login, tc.password
			h, msg, err := NewLogin(cfg, 9, t0, nil)
			if err != nil {
				t.Fatal(err)
			}
			req, _, err := srv.ConsumeRequest(msg, srcA, t0, false)
			if err != nil {
				t.Fatal(err)
			}
			if want, ok := users[req.Login]; ok && want == string(req.Password) {
				t.Fatal("test credentials unexpectedly valid")
			}
			if _, err := srv.Reject(req, ResultOK); !errors.Is(err, ErrInvalidResult) {
				t.Fatalf("Reject(OK): %v", err)
			}
			resp, err := srv.Reject(req, ResultBadCredentials)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := srv.Reject(req, ResultBadCredentials); !errors.Is(err, ErrHandshakeDone) {
				t.Fatalf("second Reject: %v", err)
			}
			res, keys, st, err := h.ConsumeResponse(resp)
			if err != nil || res != ResultBadCredentials {
				t.Fatalf("got %v %v", res, err)
			}
			if !reflect.DeepEqual(keys, SessionKeys{}) || st.MTU != 0 {
				t.Fatal("failure result carried keys or settings")
			}
			if srv.replaySize() != 0 {
				t.Fatal("Reject recorded a timestamp")
			}
			// The same datagram again is not a replay from the protocol's view (nothing accepted): the
			// engine's rate limiter bounds guessing, not this package.
			if _, _, err := srv.ConsumeRequest(msg, srcA, t0, false); err != nil {
				t.Fatalf("retry after Reject: %v", err)
			}
		})
	}
}

func TestWrongServerKey(t *testing.T) {
	srv, kp := newTestServer(t)
	other := mustKeypair(t, 99)
	cfg := clientCfg(other.Public, nil)
	_, msg, err := NewLogin(cfg, 0xdeadbeef, t0, nil)
	if err != nil {
		t.Fatal(err)
	}
	req, reply, err := srv.ConsumeRequest(msg, srcA, t0, false)
	if !errors.Is(err, ErrMac1) || req != nil {
		t.Fatalf("ConsumeRequest: %v", err)
	}
	reason, idx, err := ParseNotice(reply)
	if err != nil || reason != NoticeKeyMismatch || idx != 0xdeadbeef {
		t.Fatalf("notice: %v %v %x", err, reason, idx)
	}
	if len(reply) >= len(msg) {
		t.Fatal("notice not smaller than the request")
	}

	// An attacker (or a confused client) that computes mac1 for the right key but encrypts to another one.
	n := len(msg) - 2*macLen
	mk := labelHash("mac1----", kp.Public)
	m1 := mac(mk[:], msg[:n])
	forged := append(append(append([]byte(nil), msg[:n]...), m1[:]...), make([]byte, macLen)...)
	if _, _, err := srv.ConsumeRequest(forged, srcA, t0, false); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("forged mac1: %v", err)
	}
}

func TestReplayAndTimestamps(t *testing.T) {
	srv, kp := newTestServer(t)
	cfg := clientCfg(kp.Public, nil)
	h, msg, err := NewLogin(cfg, 1, t0, nil)
	if err != nil {
		t.Fatal(err)
	}
	req, _, err := srv.ConsumeRequest(msg, srcA, t0, false)
	if err != nil {
		t.Fatal(err)
	}
	// A copy racing through credential checks passes ConsumeRequest but cannot be accepted twice.
	dup, _, err := srv.ConsumeRequest(msg, srcB, t0, false)
	if err != nil {
		t.Fatal(err)
	}
	resp, _, err := srv.Accept(req, 100, fullSettings(), nil, t0)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := srv.Accept(dup, 101, fullSettings(), nil, t0); !errors.Is(err, ErrReplay) {
		t.Fatalf("duplicate Accept: %v", err)
	}
	if res, _, _, err := h.ConsumeResponse(resp); err != nil || res != ResultOK {
		t.Fatal(res, err)
	}
	if r, reply, err := srv.ConsumeRequest(msg, srcA, t0.Add(time.Second), false); !errors.Is(err, ErrReplay) || r != nil || reply != nil {
		t.Fatalf("replay: %v", err)
	}

	// Older than the accepted one, same instance: replay even though it is inside the window.
	_, old, _ := NewLogin(cfg, 2, t0.Add(-time.Second), nil)
	if _, _, err := srv.ConsumeRequest(old, srcA, t0, false); !errors.Is(err, ErrReplay) {
		t.Fatalf("older: %v", err)
	}
	// A different instance of the same user has its own history.
	cfg2 := *cfg
	cfg2.InstanceID++
	_, other, _ := NewLogin(&cfg2, 3, t0.Add(-time.Second), nil)
	if _, _, err := srv.ConsumeRequest(other, srcA, t0, false); err != nil {
		t.Fatalf("other instance: %v", err)
	}

	// Window: ±3 minutes inclusive, 4 minutes off either way is refused.
	for _, d := range []time.Duration{-4 * time.Minute, 4 * time.Minute, TimestampWindow + time.Nanosecond} {
		_, m, _ := NewLogin(cfg, 4, t0.Add(time.Hour).Add(d), nil)
		if _, _, err := srv.ConsumeRequest(m, srcA, t0.Add(time.Hour), false); !errors.Is(err, ErrTimestampExpired) {
			t.Fatalf("offset %v: %v", d, err)
		}
	}
	for _, d := range []time.Duration{-TimestampWindow, TimestampWindow} {
		_, m, _ := NewLogin(cfg, 4, t0.Add(time.Hour).Add(d), nil)
		if _, _, err := srv.ConsumeRequest(m, srcA, t0.Add(time.Hour), false); err != nil {
			t.Fatalf("offset %v: %v", d, err)
		}
	}

	// A newer login from the same instance succeeds.
	later := t0.Add(30 * time.Second)
	c, s := login(t, srv, cfg, 5, later)
	checkCrosswise(t, c, s)
}

func TestReplayMapBounded(t *testing.T) {
	srv, kp := newTestServer(t)
	cfg := clientCfg(kp.Public, chaOnly)
	// The first accepted request, later replayed against a gateway clock that jumped back.
	_, first, _ := NewLogin(cfg, 1, t0, nil)
	req, _, err := srv.ConsumeRequest(first, srcA, t0, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := srv.Accept(req, 1, fullSettings(), nil, t0); err != nil {
		t.Fatal(err)
	}
	later := t0.Add(10 * time.Minute)
	for i := range minPruneAt + 10 {
		c := *cfg
		c.InstanceID = uint64(1000 + i)
		_, m, err := NewLogin(&c, uint32(i), later, nil)
		if err != nil {
			t.Fatal(err)
		}
		r, _, err := srv.ConsumeRequest(m, srcA, later, false)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := srv.Accept(r, uint32(i), fullSettings(), nil, later); err != nil {
			t.Fatal(err)
		}
	}
	if n := srv.replaySize(); n > minPruneAt+10 || n < 10 {
		t.Fatalf("replay map size %d", n)
	}
	if _, ok := srv.replay[replayKey{cfg.Login, cfg.InstanceID}]; ok {
		t.Fatal("stale entry not pruned")
	}
	if _, _, err := srv.ConsumeRequest(first, srcA, t0, false); !errors.Is(err, ErrReplay) {
		t.Fatalf("replay after prune with clock back: %v", err)
	}
}

func TestResume(t *testing.T) {
	srv, kp := newTestServer(t)
	cfg := clientCfg(kp.Public, nil)
	old, _ := login(t, srv, cfg, 11, t0)

	now := t0.Add(2 * time.Minute)
	h, msg, err := NewResume(cfg, 12, old.RemoteIndex, old.ResumeKey, now, nil)
	if err != nil {
		t.Fatal(err)
	}
	req, _, err := srv.ConsumeRequest(msg, srcA, now, false)
	if err != nil {
		t.Fatal(err)
	}
	if req.Kind != KindResume || req.SessionIndex != old.RemoteIndex || req.Password != nil || req.Login != cfg.Login {
		t.Fatalf("resume request: %+v", req)
	}
	wrong := old.ResumeKey
	wrong[0] ^= 1
	if req.VerifyResume(wrong) {
		t.Fatal("wrong resume key verified")
	}
	if _, _, err := srv.Accept(req, 13, fullSettings(), nil, now); !errors.Is(err, ErrResumeNotVerified) {
		t.Fatalf("Accept unverified: %v", err)
	}
	if !req.VerifyResume(old.ResumeKey) {
		t.Fatal("right resume key refused")
	}
	ck, _ := complete(t, srv, h, req, 13, nil, now)
	if ck.Send == old.Send || ck.ResumeKey == old.ResumeKey {
		t.Fatal("resume did not produce fresh keys")
	}

	// A gateway that lost the session answers UnknownSession, authenticated.
	h2, msg2, _ := NewResume(cfg, 14, 999, old.ResumeKey, now.Add(time.Second), nil)
	req2, _, err := srv.ConsumeRequest(msg2, srcA, now.Add(time.Second), false)
	if err != nil {
		t.Fatal(err)
	}
	resp2, err := srv.Reject(req2, ResultUnknownSession)
	if err != nil {
		t.Fatal(err)
	}
	if res, _, _, err := h2.ConsumeResponse(resp2); err != nil || res != ResultUnknownSession {
		t.Fatal(res, err)
	}
	if (&Request{Kind: KindLogin}).VerifyResume(old.ResumeKey) {
		t.Fatal("login request verified as resume")
	}
}

func TestCookie(t *testing.T) {
	srv, kp := newTestServer(t)
	cfg := clientCfg(kp.Public, nil)
	h, msg, _ := NewLogin(cfg, 77, t0, nil)
	req, reply, err := srv.ConsumeRequest(msg, srcA, t0, true)
	if !errors.Is(err, ErrCookieRequired) || req != nil || len(reply) != protocol.CookieReplyLen {
		t.Fatalf("under load without cookie: %v", err)
	}
	if len(reply) >= len(msg) {
		t.Fatal("cookie reply not smaller than the request")
	}
	// A reply bound to another request (other mac1) or another index is refused.
	h2, _, _ := NewLogin(cfg, 77, t0, nil)
	if _, err := h2.ConsumeCookieReply(reply, t0); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("cookie for another request: %v", err)
	}
	h3, _, _ := NewLogin(cfg, 78, t0, nil)
	if _, err := h3.ConsumeCookieReply(reply, t0); !errors.Is(err, ErrResponseMismatch) {
		t.Fatalf("cookie for another index: %v", err)
	}
	ck, err := h.ConsumeCookieReply(reply, t0)
	if err != nil {
		t.Fatal(err)
	}
	if !ck.Valid(t0.Add(CookieLifetime-1)) || ck.Valid(t0.Add(CookieLifetime)) || ck.Valid(t0.Add(-time.Second)) || !ck.ReceivedAt().Equal(t0) {
		t.Fatal("cookie lifetime")
	}

	now := t0.Add(time.Second)
	_, withCookie, _ := NewLogin(cfg, 79, now, ck)
	if _, _, err := srv.ConsumeRequest(withCookie, srcA, now, true); err != nil {
		t.Fatalf("with cookie: %v", err)
	}
	if _, _, err := srv.ConsumeRequest(withCookie, srcB, now, true); !errors.Is(err, ErrCookieRequired) {
		t.Fatalf("cookie from another source: %v", err)
	}
	other := srcA
	other = netipAddrPortWithPort(other, other.Port()+1)
	if _, _, err := srv.ConsumeRequest(withCookie, other, now, true); !errors.Is(err, ErrCookieRequired) {
		t.Fatalf("cookie from another port: %v", err)
	}
	// Not under load, a wrong mac2 is not required, but it is checked and reported: only the right source
	// counts as proven.
	if req, _, err := srv.ConsumeRequest(withCookie, srcB, now, false); err != nil || req.SourceProven {
		t.Fatalf("not under load, other source: %v (proven %v)", err, req != nil && req.SourceProven)
	}
	if req, _, err := srv.ConsumeRequest(withCookie, srcA, now, false); err != nil || !req.SourceProven {
		t.Fatalf("not under load, right source: %v (proven %v)", err, req != nil && req.SourceProven)
	}
	if req, _, err := srv.ConsumeRequest(msg, srcA, now, false); err != nil || req.SourceProven {
		t.Fatalf("no mac2 counted as proven: %v", err)
	}

	// A cookie demanded after decryption (CookieReply) works like one demanded under load.
	now = now.Add(time.Second)
	h4, m4, _ := NewLogin(cfg, 82, now, nil)
	req4, _, err := srv.ConsumeRequest(m4, srcB, now, false)
	if err != nil || req4.SourceProven {
		t.Fatal(err)
	}
	cr, err := srv.CookieReply(req4, now)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := srv.Accept(req4, 1, fullSettings(), nil, now); !errors.Is(err, ErrHandshakeDone) {
		t.Fatalf("a request answered with a cookie can still be accepted: %v", err)
	}
	ck4, err := h4.ConsumeCookieReply(cr, now)
	if err != nil {
		t.Fatal(err)
	}
	_, m5, _ := NewLogin(cfg, 83, now.Add(time.Millisecond), ck4)
	if req, _, err := srv.ConsumeRequest(m5, srcB, now.Add(time.Millisecond), false); err != nil || !req.SourceProven {
		t.Fatalf("retry with the demanded cookie: %v", err)
	}

	// Rotation: after one rotation the previous secret still verifies; after two it does not. The request
	// is built while the client still considers the cookie fresh.
	at := t0.Add(CookieLifetime - time.Second)
	_, m, _ := NewLogin(cfg, 80, at, ck)
	if _, _, err := srv.ConsumeRequest(m, srcA, at.Add(90*time.Second), true); err != nil {
		t.Fatalf("previous secret: %v", err)
	}
	if _, _, err := srv.ConsumeRequest(m, srcA, at.Add(2*CookieLifetime+time.Second), true); !errors.Is(err, ErrCookieRequired) {
		t.Fatalf("expired secret: %v", err)
	}
	// An expired cookie is not used by the client at all (mac2 zeros).
	_, m, _ = NewLogin(cfg, 81, t0.Add(CookieLifetime), ck)
	if !bytes.Equal(m[len(m)-macLen:], make([]byte, macLen)) {
		t.Fatal("expired cookie used")
	}
}

func TestForgedResponses(t *testing.T) {
	srv, kp := newTestServer(t)
	cfg := clientCfg(kp.Public, nil)
	h, msg, _ := NewLogin(cfg, 5, t0, nil)
	req, _, err := srv.ConsumeRequest(msg, srcA, t0, false)
	if err != nil {
		t.Fatal(err)
	}
	resp, _, err := srv.Accept(req, 6, fullSettings(), nil, t0)
	if err != nil {
		t.Fatal(err)
	}
	lowOrder := append([]byte(nil), resp...)
	clear(lowOrder[headerLen : headerLen+keyLen]) // u = 0 is a low-order point
	if _, _, _, err := h.ConsumeResponse(lowOrder); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("low-order e: %v", err)
	}
	wrongIdx := append([]byte(nil), resp...)
	wrongIdx[4]++
	if _, _, _, err := h.ConsumeResponse(wrongIdx); !errors.Is(err, ErrResponseMismatch) {
		t.Fatalf("index: %v", err)
	}
	// A response computed by another gateway key for the same index.
	other := NewServer(mustKeypair(t, 50), nil, detRand(51))
	_, msg2, _ := NewLogin(clientCfg(other.static.Public, nil), 5, t0, nil)
	r2, _, err := other.ConsumeRequest(msg2, srcA, t0, false)
	if err != nil {
		t.Fatal(err)
	}
	resp2, err := other.Reject(r2, ResultBadCredentials)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := h.ConsumeResponse(resp2); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("other gateway: %v", err)
	}
	// None of that disturbed the pending handshake.
	if res, _, _, err := h.ConsumeResponse(resp); err != nil || res != ResultOK {
		t.Fatalf("genuine after forgeries: %v %v", res, err)
	}
}

func TestConcurrentServer(t *testing.T) {
	srv, kp := newTestServer(t)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cfg := clientCfg(kp.Public, nil)
			cfg.InstanceID = uint64(g)
			cfg.Rand = detRand(uint64(100 + g))
			for i := range 10 {
				now := t0.Add(time.Duration(i) * time.Second)
				h, msg, err := NewLogin(cfg, uint32(g*100+i), now, nil)
				if err != nil {
					t.Error(err)
					return
				}
				req, _, err := srv.ConsumeRequest(msg, srcA, now, false)
				if err != nil {
					t.Error(err)
					return
				}
				resp, sk, err := srv.Accept(req, uint32(i), fullSettings(), nil, now)
				if err != nil {
					t.Error(err)
					return
				}
				_, ck, _, err := h.ConsumeResponse(resp)
				if err != nil || ck.Send != sk.Recv {
					t.Error("mismatch", err)
					return
				}
				// Cookie path concurrently, too.
				if _, reply, err := srv.ConsumeRequest(msg, srcB, now, true); !errors.Is(err, ErrCookieRequired) || reply == nil {
					t.Error("cookie path", err)
				}
			}
		}()
	}
	wg.Wait()
}

func TestNotice(t *testing.T) {
	n := NewNotice(NoticeUnknownSession, 0x01020304)
	if len(n) != protocol.NoticeLen {
		t.Fatal(len(n))
	}
	r, i, err := ParseNotice(n)
	if err != nil || r != NoticeUnknownSession || i != 0x01020304 {
		t.Fatal(r, i, err)
	}
	bad := [][]byte{nil, {6}, n[:7], append(append([]byte(nil), n...), 0), {6, 3, 0, 0, 1, 2, 3, 4}, {6, 0, 0, 0, 1, 2, 3, 4}, {6, 1, 1, 0, 1, 2, 3, 4}, {2, 1, 0, 0, 1, 2, 3, 4}}
	for _, b := range bad {
		if _, _, err := ParseNotice(b); err == nil {
			t.Fatalf("ParseNotice(%x) succeeded", b)
		}
	}
}

func TestKeys(t *testing.T) {
	kp := mustKeypair(t, 7)
	pub, err := PublicFromPrivate(kp.Private)
	if err != nil || pub != kp.Public {
		t.Fatal("PublicFromPrivate")
	}
	if _, err := PublicFromPrivate(Key{}); !errors.Is(err, ErrInvalidKey) {
		t.Fatal("zero private key accepted")
	}
	k, err := ParseKey(" " + kp.Public.String() + "\n")
	if err != nil || k != kp.Public {
		t.Fatal("ParseKey round trip")
	}
	for _, s := range []string{"", "abc", kp.Public.String()[:40], kp.Public.String() + "AAAA", "!!!!"} {
		if _, err := ParseKey(s); !errors.Is(err, ErrInvalidKey) {
			t.Fatalf("ParseKey(%q): %v", s, err)
		}
	}
	secret := kp.Private.String()
	for _, f := range []string{kp.String(), kp.GoString()} {
		if strings.Contains(f, secret) || !strings.Contains(f, kp.Public.String()) {
			t.Fatal("StaticKeypair formatting leaks or lacks keys")
		}
	}
	if _, err := ParseKey(secret[:43] + "?"); strings.Contains(err.Error(), secret[:20]) {
		t.Fatal("error echoes key material")
	}
	if _, err := GenerateKeypair(bytes.NewReader(nil)); !errors.Is(err, ErrRandom) {
		t.Fatal("empty random source accepted")
	}
}

func TestClientConfigValidation(t *testing.T) {
	kp := mustKeypair(t, 1)
	mod := []func(c *ClientConfig){
		func(c *ClientConfig) { c.ServerPublic = Key{} },
		func(c *ClientConfig) { c.Login = "" },
		func(c *ClientConfig) { c.Login = strings.Repeat("a", 65) },
		func(c *ClientConfig) { c.Login = "bad\nlogin" },
		func(c *ClientConfig) { c.Login = "\xff" },
		func(c *ClientConfig) { c.Password = strings.Repeat("p", 129) },
		func(c *ClientConfig) { c.Suites = []protocol.Suite{9} },
		func(c *ClientConfig) { c.Suites = make([]protocol.Suite, 9) },
		func(c *ClientConfig) { c.Rand = bytes.NewReader(nil) },
	}
	for i, m := range mod {
		c := clientCfg(kp.Public, nil)
		m(c)
		if _, _, err := NewLogin(c, 1, t0, nil); err == nil {
			t.Fatalf("case %d accepted", i)
		} else if strings.Contains(err.Error(), c.Password) {
			t.Fatal("error contains the password")
		}
	}
	if _, _, err := NewLogin(nil, 1, t0, nil); err == nil {
		t.Fatal("nil config accepted")
	}
	c := clientCfg(kp.Public, nil)
	c.Password = ""
	if _, _, err := NewLogin(c, 1, t0, nil); err != nil {
		t.Fatalf("empty password refused: %v", err)
	}
	if s := DefaultSuites(); len(s) != 2 || s[0] == s[1] {
		t.Fatal(s)
	}
}
