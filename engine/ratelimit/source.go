package ratelimit

import "net/netip"

// SourcePrefix returns the prefix that limits keyed by source should use for
// the address a: the /32 of an IPv4 address (IPv4-mapped IPv6 addresses are
// unmapped first, so both spellings of one host are one source), and the
// /64 of an IPv6 address, without its zone. One host usually controls a
// whole /64 and could otherwise spread its attempts over 2^64 keys. The
// zero Addr gives the zero (invalid) Prefix.
func SourcePrefix(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	switch {
	case a.Is4():
		return netip.PrefixFrom(a, 32)
	case a.Is6():
		p, _ := a.WithZone("").Prefix(64) // cannot fail for an IPv6 address and 64 bits
		return p
	}
	return netip.Prefix{}
}
