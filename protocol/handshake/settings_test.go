package handshake

import (
	"bytes"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestSettingsRoundTrip(t *testing.T) {
	mapped := netip.PrefixFrom(netip.MustParseAddr("::ffff:10.0.0.0"), 104)
	for _, s := range []Settings{
		fullSettings(),
		{MTU: 576},
		{MTU: 65535, Keepalive: MaxKeepalive, IPv4: netip.MustParsePrefix("10.0.0.1/32")},
		{MTU: 1280, IPv6: netip.MustParsePrefix("fd00::1/128"), Routes: []netip.Prefix{mapped}, DNS: []netip.Addr{netip.MustParseAddr("::ffff:1.1.1.1")}},
		// Routing-only domains, and "~." (every query to the tunnel's servers).
		{MTU: 1400, DNS: []netip.Addr{netip.MustParseAddr("10.8.0.1")}, SearchDomains: []string{"corp.example", "~lab.example", "~."}},
		maxSettings(),
	} {
		b, err := appendSettings(nil, &s)
		if err != nil {
			t.Fatalf("encode %+v: %v", s, err)
		}
		got, err := decodeSettings(b)
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		if !reflect.DeepEqual(got, s) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", got, s)
		}
		for n := range len(b) {
			if _, err := decodeSettings(b[:n]); err == nil {
				t.Fatalf("truncated to %d accepted", n)
			}
		}
		if _, err := decodeSettings(append(b, 0)); err == nil {
			t.Fatal("trailing byte accepted")
		}
	}
}

func maxSettings() Settings {
	s := fullSettings()
	s.Routes, s.ExcludedRoutes, s.DNS, s.SearchDomains = nil, nil, nil, nil
	for i := range MaxRoutes {
		s.Routes = append(s.Routes, netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(i)}), 40))
		s.ExcludedRoutes = append(s.ExcludedRoutes, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i), 0, 0}), 16))
	}
	for i := range MaxDNS {
		s.DNS = append(s.DNS, netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)}))
	}
	for range MaxSearchDomains {
		s.SearchDomains = append(s.SearchDomains, strings.Repeat(strings.Repeat("a", 62)+".", 4)[:MaxDomainLen-1]+"z")
	}
	return s
}

func TestSettingsValidation(t *testing.T) {
	bad := map[string]func(s *Settings){
		"mtu":             func(s *Settings) { s.MTU = 575 },
		"keepalive frac":  func(s *Settings) { s.Keepalive = 1500 * time.Millisecond },
		"keepalive big":   func(s *Settings) { s.Keepalive = MaxKeepalive + time.Second },
		"keepalive neg":   func(s *Settings) { s.Keepalive = -time.Second },
		"ipv4 is v6":      func(s *Settings) { s.IPv4 = netip.MustParsePrefix("fd00::1/64") },
		"ipv4 /0":         func(s *Settings) { s.IPv4 = netip.MustParsePrefix("10.0.0.1/0") },
		"ipv6 is v4":      func(s *Settings) { s.IPv6 = netip.MustParsePrefix("10.0.0.1/24") },
		"unmasked route":  func(s *Settings) { s.Routes = []netip.Prefix{netip.MustParsePrefix("10.1.2.3/8")} },
		"invalid route":   func(s *Settings) { s.ExcludedRoutes = []netip.Prefix{{}} },
		"too many routes": func(s *Settings) { s.Routes = append(maxSettings().Routes, s.Routes[0]) },
		"too many excl":   func(s *Settings) { s.ExcludedRoutes = append(maxSettings().ExcludedRoutes, s.Routes[0]) },
		"too many dns":    func(s *Settings) { s.DNS = append(maxSettings().DNS, s.DNS[0]) },
		"zoned dns":       func(s *Settings) { s.DNS = []netip.Addr{netip.MustParseAddr("fe80::1%eth0")} },
		"invalid dns":     func(s *Settings) { s.DNS = []netip.Addr{{}} },
		"too many domain": func(s *Settings) { s.SearchDomains = append(maxSettings().SearchDomains, "x") },
		"empty domain":    func(s *Settings) { s.SearchDomains = []string{""} },
		"long domain":     func(s *Settings) { s.SearchDomains = []string{strings.Repeat("a.", 127)} },
		"long label":      func(s *Settings) { s.SearchDomains = []string{strings.Repeat("a", 64)} },
		"newline domain":  func(s *Settings) { s.SearchDomains = []string{"a\nnameserver 6.6.6.6"} },
		"empty label":     func(s *Settings) { s.SearchDomains = []string{"a..b"} },
		"trailing dot":    func(s *Settings) { s.SearchDomains = []string{"a.b."} },
		"lone tilde":      func(s *Settings) { s.SearchDomains = []string{"~"} },
		"double tilde":    func(s *Settings) { s.SearchDomains = []string{"~~a"} },
		"tilde dot dot":   func(s *Settings) { s.SearchDomains = []string{"~.."} },
		"option domain":   func(s *Settings) { s.SearchDomains = []string{"-x"} },
	}
	for name, m := range bad {
		s := fullSettings()
		m(&s)
		if _, err := appendSettings(nil, &s); !errors.Is(err, ErrInvalidSettings) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestSettingsDecodeRejects(t *testing.T) {
	s := Settings{MTU: 1400}
	base, _ := appendSettings(nil, &s)
	// base: mtu(2) keepalive(2) v4len v6len routes excl dns domains
	if !bytes.Equal(base, []byte{0x78, 0x05, 0, 0, 0, 0, 0, 0, 0, 0}) {
		t.Fatalf("encoding changed: %x", base)
	}
	for name, b := range map[string][]byte{
		"ipv4 /33":        {0x78, 5, 0, 0, 33, 1, 2, 3, 4, 0, 0, 0, 0, 0},
		"ipv6 /129":       append(append([]byte{0x78, 5, 0, 0, 0, 129}, make([]byte, 16)...), 0, 0, 0, 0),
		"route family 5":  {0x78, 5, 0, 0, 0, 0, 1, 5, 8, 10, 0, 0, 0, 0, 0, 0},
		"route unmasked":  {0x78, 5, 0, 0, 0, 0, 1, 4, 8, 10, 1, 0, 0, 0, 0, 0},
		"route /33":       {0x78, 5, 0, 0, 0, 0, 1, 4, 33, 10, 0, 0, 0, 0, 0, 0},
		"65 routes":       {0x78, 5, 0, 0, 0, 0, 65},
		"9 dns":           {0x78, 5, 0, 0, 0, 0, 0, 0, 9},
		"dns family 0":    {0x78, 5, 0, 0, 0, 0, 0, 0, 1, 0, 1, 1, 1, 1, 0},
		"9 domains":       {0x78, 5, 0, 0, 0, 0, 0, 0, 0, 9},
		"domain len 0":    {0x78, 5, 0, 0, 0, 0, 0, 0, 0, 1, 0},
		"domain bad char": {0x78, 5, 0, 0, 0, 0, 0, 0, 0, 1, 1, ' '},
		"mtu 575":         {0x3f, 2, 0, 0, 0, 0, 0, 0, 0, 0},
		"keepalive 3601":  {0x78, 5, 0x11, 0x0e, 0, 0, 0, 0, 0, 0},
	} {
		if _, err := decodeSettings(b); !errors.Is(err, ErrMalformedBody) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestRequestBodyRoundTrip(t *testing.T) {
	var rb requestBody
	putTAI64N(rb.ts[:], t0)
	rb.instanceID, rb.kind, rb.suites, rb.login, rb.password = 5, KindLogin, aesPref, "bob", []byte("pw")
	b, err := appendRequestBody(nil, &rb)
	if err != nil {
		t.Fatal(err)
	}
	got, err := parseRequestBody(b)
	if err != nil || !reflect.DeepEqual(got, rb) {
		t.Fatalf("%v\n%+v\n%+v", err, got, rb)
	}
	ts, ok := parseTAI64N(got.ts[:])
	if !ok || !ts.Equal(t0) {
		t.Fatal("timestamp", ts)
	}
	for n := range len(b) {
		if _, err := parseRequestBody(b[:n]); err == nil {
			t.Fatalf("truncated to %d accepted", n)
		}
	}
	for name, mod := range map[string]func([]byte){
		"kind 0":   func(b []byte) { b[20] = 0 },
		"kind 3":   func(b []byte) { b[20] = 3 },
		"0 suites": func(b []byte) { b[21] = 0 },
		"login 0":  func(b []byte) { b[24] = 0 },
		"login nl": func(b []byte) { b[25] = '\n' },
	} {
		c := append([]byte(nil), b...)
		mod(c)
		if _, err := parseRequestBody(c); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
	for _, bad := range [][]byte{
		{0x3f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0}, // before 2^62
		{0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},                      // 2^63
		{0x40, 0, 0, 0, 0, 0, 0, 0, 0x3b, 0x9a, 0xca, 0x00},          // 1e9 ns
	} {
		if _, ok := parseTAI64N(bad); ok {
			t.Errorf("TAI64N %x accepted", bad)
		}
	}
}
