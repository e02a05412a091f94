package tunnelpolicy

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/salvovpn/salvo/protocol/handshake"
)

func pfx(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

var policy = Policy{LAN: pfx("192.168.1.0/24", "fd00:1::/64"), Gateway: netip.MustParseAddr("203.0.113.5"), PathMTU: 1500}

func TestVetRoutes(t *testing.T) {
	for _, tc := range []struct {
		routes, excluded   []netip.Prefix
		wantR, wantE       string
		accept, acceptExcl bool
	}{
		// A full tunnel and what is safe beside it stays.
		{routes: pfx("0.0.0.0/0", "::/0"), excluded: pfx("10.9.0.0/16"), wantR: "[0.0.0.0/0 ::/0]", wantE: "[10.9.0.0/16]"},
		{routes: pfx("0.0.0.0/1", "128.0.0.0/1"), wantR: "[0.0.0.0/1 128.0.0.0/1]", wantE: "[]"},
		// Routes over the client's own LAN, at least as specific, or over the gateway's address, go.
		{routes: pfx("0.0.0.0/0", "192.168.1.0/24", "192.168.1.128/25", "fd00:1::/64"), wantR: "[0.0.0.0/0]", wantE: "[]"},
		{routes: pfx("192.168.0.0/16"), wantR: "[192.168.0.0/16]", wantE: "[]"}, // wider: the LAN's /24 wins
		{routes: pfx("203.0.113.0/24", "10.0.0.0/8"), wantR: "[10.0.0.0/8]", wantE: "[]"},
		{routes: pfx("203.0.113.0/24"), wantR: "[203.0.113.0/24]", wantE: "[]", accept: true},
		// TunnelVision from the gateway: excludes that take the pushed routes back out go.
		{routes: pfx("0.0.0.0/0", "::/0"), excluded: pfx("0.0.0.0/1", "128.0.0.0/1", "::/1", "8000::/1"), wantR: "[0.0.0.0/0 ::/0]", wantE: "[]"},
		{routes: pfx("10.0.0.0/8"), excluded: pfx("10.0.0.0/8"), wantR: "[10.0.0.0/8]", wantE: "[]"},
		{routes: pfx("10.0.0.0/8"), excluded: pfx("10.0.0.0/9", "10.128.0.0/10", "10.192.0.0/10"), wantR: "[10.0.0.0/8]", wantE: "[]"},
		// A partial exclude stays (it is what excludes are for), and so do covering ones when accepted.
		{routes: pfx("10.0.0.0/8"), excluded: pfx("10.0.0.0/9", "10.128.0.0/10"), wantR: "[10.0.0.0/8]", wantE: "[10.0.0.0/9 10.128.0.0/10]"},
		{routes: pfx("0.0.0.0/0"), excluded: pfx("0.0.0.0/1", "128.0.0.0/1"), wantR: "[0.0.0.0/0]", wantE: "[0.0.0.0/1 128.0.0.0/1]", acceptExcl: true},
	} {
		p := policy
		p.AcceptLANRoutes, p.AcceptCoveringExcludes = tc.accept, tc.acceptExcl
		got, found := Vet(handshake.Settings{Routes: tc.routes, ExcludedRoutes: tc.excluded, MTU: 1420}, p)
		r, e := fmt.Sprint(got.Routes), fmt.Sprint(got.ExcludedRoutes)
		if r == "[]" && len(got.Routes) == 0 {
			r = "[]"
		}
		if r != tc.wantR || e != tc.wantE {
			t.Errorf("routes %v excluded %v: got %s / %s, want %s / %s (%v)", tc.routes, tc.excluded, r, e, tc.wantR, tc.wantE, found)
		}
		if n := len(tc.routes) + len(tc.excluded) - len(got.Routes) - len(got.ExcludedRoutes); n != len(found) {
			t.Errorf("%d prefixes dropped but %d findings: %v", n, len(found), found)
		}
	}
}

func TestVetMTU(t *testing.T) {
	for _, tc := range []struct {
		pushed, path int
		gw           string
		want         uint16
	}{
		{1420, 1500, "203.0.113.5", 1420},
		{9000, 1500, "203.0.113.5", 1440}, // 1500 - 60
		{9000, 1500, "2001:db8::5", 1420}, // 1500 - 80
		{1420, 1400, "203.0.113.5", 1340},
		{1420, 1280, "203.0.113.5", 1280}, // never below 1280: the kernel fragments instead
		{576, 1500, "203.0.113.5", 1280},
		{9000, 0, "203.0.113.5", 9000}, // path unknown: no upper clamp
	} {
		p := Policy{Gateway: netip.MustParseAddr(tc.gw), PathMTU: tc.path}
		got, _ := Vet(handshake.Settings{MTU: uint16(tc.pushed)}, p)
		if got.MTU != tc.want {
			t.Errorf("pushed %d over a %d path to %s: %d, want %d", tc.pushed, tc.path, tc.gw, got.MTU, tc.want)
		}
	}
}

func TestFullTunnel(t *testing.T) {
	for _, tc := range []struct {
		routes []netip.Prefix
		v4, v6 bool
	}{
		{pfx("0.0.0.0/0"), true, false},
		{pfx("::/0", "10.0.0.0/8"), false, true},
		{pfx("0.0.0.0/1", "128.0.0.0/1", "::/1", "8000::/1"), true, true},
		{pfx("0.0.0.0/1"), false, false},
		{nil, false, false},
	} {
		if v4, v6 := FullTunnel(tc.routes); v4 != tc.v4 || v6 != tc.v6 {
			t.Errorf("%v: %v %v, want %v %v", tc.routes, v4, v6, tc.v4, tc.v6)
		}
	}
}
