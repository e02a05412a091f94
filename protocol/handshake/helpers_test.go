package handshake

import (
	mrand "math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/salvovpn/salvo/protocol"
)

var (
	t0      = time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)
	srcA    = netip.MustParseAddrPort("198.51.100.7:40000")
	srcB    = netip.MustParseAddrPort("[2001:db8::9]:40000")
	aesPref = []protocol.Suite{protocol.SuiteAES256GCM, protocol.SuiteChaCha20Poly1305}
	chaOnly = []protocol.Suite{protocol.SuiteChaCha20Poly1305}
)

// detRand is a deterministic random source, so fuzz seeds and tests are reproducible.
func detRand(seed uint64) *mrand.ChaCha8 {
	var s [32]byte
	for i := range 8 {
		s[i] = byte(seed >> (8 * i))
	}
	return mrand.NewChaCha8(s)
}

func mustKeypair(t testing.TB, seed uint64) StaticKeypair {
	t.Helper()
	kp, err := GenerateKeypair(detRand(seed))
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

func newTestServer(t testing.TB, suites ...protocol.Suite) (*Server, StaticKeypair) {
	t.Helper()
	kp := mustKeypair(t, 1)
	return NewServer(kp, suites, detRand(2)), kp
}

func clientCfg(pub Key, suites []protocol.Suite) *ClientConfig {
	return &ClientConfig{
		ServerPublic: pub,
		Login:        "alice@example.org",
		Password:     "correct horse battery staple",
		InstanceID:   0x1122334455667788,
		Suites:       suites,
		Rand:         detRand(3),
	}
}

func fullSettings() Settings {
	return Settings{
		IPv4:           netip.MustParsePrefix("10.8.0.2/24"),
		IPv6:           netip.MustParsePrefix("fd00:8::2/64"),
		Routes:         []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0"), netip.MustParsePrefix("192.168.0.0/16")},
		ExcludedRoutes: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("2001:db8:1::/48")},
		DNS:            []netip.Addr{netip.MustParseAddr("10.8.0.1"), netip.MustParseAddr("fd00:8::1")},
		SearchDomains:  []string{"corp.example.org", "example.org"},
		MTU:            1420,
		Keepalive:      25 * time.Second,
	}
}

// login runs a complete successful login and returns both sides' keys.
func login(t testing.TB, srv *Server, cfg *ClientConfig, idx uint32, now time.Time) (client, server SessionKeys) {
	t.Helper()
	h, msg, err := NewLogin(cfg, idx, now, nil)
	if err != nil {
		t.Fatal(err)
	}
	req, _, err := srv.ConsumeRequest(msg, srcA, now, false)
	if err != nil {
		t.Fatalf("ConsumeRequest: %v", err)
	}
	return complete(t, srv, h, req, idx+1000, nil, now)
}

// complete accepts a verified req (handing out ticket) and has h consume the response; it returns both
// sides' keys, checked to match crosswise.
func complete(t testing.TB, srv *Server, h *ClientHandshake, req *Request, idx uint32, ticket *Ticket, now time.Time) (client, server SessionKeys) {
	t.Helper()
	resp, sk, err := srv.Accept(req, idx, fullSettings(), ticket, now)
	if err != nil {
		t.Fatalf("Accept: %v", err)
	}
	res, ck, _, err := h.ConsumeResponse(resp)
	if err != nil || res != ResultOK {
		t.Fatalf("ConsumeResponse: %v %v", res, err)
	}
	checkCrosswise(t, ck, sk)
	return ck, sk
}

func netipAddrPortWithPort(ap netip.AddrPort, port uint16) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr(), port)
}
