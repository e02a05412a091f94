package handshake

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"

	"github.com/salvovpn/salvo/internal/dnsname"
)

// Limits on pushed tunnel settings. They keep a response bounded and refuse absurd configurations on both
// ends; PROTOCOL.md's 1-byte counts would allow more.
const (
	MaxRoutes        = 64 // each of Routes and ExcludedRoutes
	MaxDNS           = 8
	MaxSearchDomains = 8
	MaxDomainLen     = 253
	MinMTU           = 576
	MaxKeepalive     = 3600 * time.Second
)

// Settings are the tunnel parameters the gateway pushes in a successful serverAuthResponse.
type Settings struct {
	IPv4, IPv6             netip.Prefix // invalid/zero Prefix = absent; the Addr is the client's tunnel address
	Routes, ExcludedRoutes []netip.Prefix
	DNS                    []netip.Addr
	SearchDomains          []string
	MTU                    uint16
	Keepalive              time.Duration // whole seconds on the wire
}

func settingsErr(what string) error { return fmt.Errorf("%w: %s", ErrInvalidSettings, what) }

// Validate reports whether s can be encoded and would be accepted by a client.
func (s *Settings) Validate() error {
	if s.MTU < MinMTU {
		return settingsErr("MTU below 576")
	}
	if s.Keepalive < 0 || s.Keepalive > MaxKeepalive || s.Keepalive%time.Second != 0 {
		return settingsErr("keepalive must be whole seconds in 0..3600")
	}
	if s.IPv4.IsValid() && (!s.IPv4.Addr().Is4() || s.IPv4.Bits() < 1) {
		return settingsErr("IPv4 tunnel prefix must be an IPv4 address with length 1..32")
	}
	if s.IPv6.IsValid() && (!s.IPv6.Addr().Is6() || s.IPv6.Bits() < 1) {
		return settingsErr("IPv6 tunnel prefix must be an IPv6 address with length 1..128")
	}
	for _, rs := range [2][]netip.Prefix{s.Routes, s.ExcludedRoutes} {
		if len(rs) > MaxRoutes {
			return settingsErr("more than 64 routes")
		}
		for _, p := range rs {
			// Routes are networks: host bits set is almost certainly a configuration mistake, and refusing it
			// gives every route exactly one encoding.
			if !p.IsValid() || p != p.Masked() {
				return settingsErr("route is not a valid masked prefix")
			}
		}
	}
	if len(s.DNS) > MaxDNS {
		return settingsErr("more than 8 DNS servers")
	}
	for _, a := range s.DNS {
		if !a.IsValid() || a.Zone() != "" {
			return settingsErr("invalid DNS server address")
		}
	}
	if len(s.SearchDomains) > MaxSearchDomains {
		return settingsErr("more than 8 search domains")
	}
	for _, d := range s.SearchDomains {
		if dnsname.CheckDomain(d) != nil {
			return settingsErr("invalid search domain")
		}
	}
	return nil
}

func appendAddr(b []byte, a netip.Addr) []byte {
	if a.Is4() {
		v := a.As4()
		return append(b, v[:]...)
	}
	v := a.As16()
	return append(b, v[:]...)
}

func family(a netip.Addr) byte {
	if a.Is4() {
		return 4
	}
	return 6
}

// appendSettings encodes s from the MTU field on (response body offset 6). It refuses settings that do not
// validate.
func appendSettings(b []byte, s *Settings) ([]byte, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	b = binary.LittleEndian.AppendUint16(b, s.MTU)
	b = binary.LittleEndian.AppendUint16(b, uint16(s.Keepalive/time.Second))
	if s.IPv4.IsValid() {
		b = append(b, byte(s.IPv4.Bits()))
		b = appendAddr(b, s.IPv4.Addr())
	} else {
		b = append(b, 0)
	}
	if s.IPv6.IsValid() {
		b = append(b, byte(s.IPv6.Bits()))
		b = appendAddr(b, s.IPv6.Addr())
	} else {
		b = append(b, 0)
	}
	for _, rs := range [2][]netip.Prefix{s.Routes, s.ExcludedRoutes} {
		b = append(b, byte(len(rs)))
		for _, p := range rs {
			b = append(b, family(p.Addr()), byte(p.Bits()))
			b = appendAddr(b, p.Addr())
		}
	}
	b = append(b, byte(len(s.DNS)))
	for _, a := range s.DNS {
		b = append(b, family(a))
		b = appendAddr(b, a)
	}
	b = append(b, byte(len(s.SearchDomains)))
	for _, d := range s.SearchDomains {
		b = append(b, byte(len(d)))
		b = append(b, d...)
	}
	return b, nil
}

// readAddr reads the address bytes of a family (4 or 6).
func readAddr(r *reader, fam byte) (netip.Addr, bool) {
	switch fam {
	case 4:
		if v := r.take(4); v != nil {
			return netip.AddrFrom4([4]byte(v)), true
		}
	case 6:
		if v := r.take(16); v != nil {
			return netip.AddrFrom16([16]byte(v)), true
		}
	}
	return netip.Addr{}, false
}

// decodeSettings parses the settings part of an OK response body and validates the result with the same
// rules the encoder applies, so anything decoded here would also encode.
func decodeSettings(b []byte) (Settings, error) {
	var s Settings
	r := reader{b: b}
	s.MTU = r.u16()
	s.Keepalive = time.Duration(r.u16()) * time.Second
	for _, fam := range [2]byte{4, 6} {
		bits := int(r.u8())
		if bits == 0 {
			continue
		}
		a, ok := readAddr(&r, fam)
		if !ok || bits > a.BitLen() {
			return Settings{}, ErrMalformedBody
		}
		if fam == 4 {
			s.IPv4 = netip.PrefixFrom(a, bits)
		} else {
			s.IPv6 = netip.PrefixFrom(a, bits)
		}
	}
	for i := range 2 {
		n := int(r.u8())
		if r.bad || n > MaxRoutes {
			return Settings{}, ErrMalformedBody
		}
		var rs []netip.Prefix
		if n > 0 {
			rs = make([]netip.Prefix, 0, n)
		}
		for range n {
			fam := r.u8()
			bits := int(r.u8())
			a, ok := readAddr(&r, fam)
			if !ok || bits > a.BitLen() {
				return Settings{}, ErrMalformedBody
			}
			rs = append(rs, netip.PrefixFrom(a, bits))
		}
		if i == 0 {
			s.Routes = rs
		} else {
			s.ExcludedRoutes = rs
		}
	}
	n := int(r.u8())
	if r.bad || n > MaxDNS {
		return Settings{}, ErrMalformedBody
	}
	for range n {
		a, ok := readAddr(&r, r.u8())
		if !ok {
			return Settings{}, ErrMalformedBody
		}
		s.DNS = append(s.DNS, a)
	}
	n = int(r.u8())
	if r.bad || n > MaxSearchDomains {
		return Settings{}, ErrMalformedBody
	}
	for range n {
		l := int(r.u8())
		d := r.take(l)
		if r.bad {
			return Settings{}, ErrMalformedBody
		}
		s.SearchDomains = append(s.SearchDomains, string(d))
	}
	if !r.done() {
		return Settings{}, ErrMalformedBody
	}
	if err := s.Validate(); err != nil {
		return Settings{}, ErrMalformedBody
	}
	return s, nil
}
