// Package tunnelpolicy decides what of a gateway's pushed settings a client applies. The gateway is
// authenticated, but it is still another party: a compromised or misconfigured gateway must not be able to
// route the client's traffic around the tunnel, onto its own LAN, or through a path too narrow for the
// tunnel's packets. The checks are pure (no system calls), so they are tested exhaustively.
package tunnelpolicy

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/salvovpn/salvo/protocol/handshake"
)

// Policy is what the client knows and allows.
type Policy struct {
	// LAN is the prefixes of the client's own non-tunnel interfaces.
	LAN []netip.Prefix
	// Gateway is the gateway's outer address.
	Gateway netip.Addr
	// AcceptLANRoutes applies pushed routes over the client's LAN or the gateway's address anyway.
	AcceptLANRoutes bool
	// AcceptCoveringExcludes applies excluded routes that take whole pushed routes back out of the
	// tunnel anyway.
	AcceptCoveringExcludes bool
	// PathMTU is the MTU towards the gateway (0: unknown, no upper clamp).
	PathMTU int
}

// Finding is one thing Vet changed, for the log.
type Finding struct {
	What   string // "route", "excluded route", "mtu"
	Prefix netip.Prefix
	Why    string
}

func (f Finding) String() string {
	if f.Prefix.IsValid() {
		return fmt.Sprintf("%s %s not applied: %s", f.What, f.Prefix, f.Why)
	}
	return fmt.Sprintf("%s: %s", f.What, f.Why)
}

// Overhead is what the tunnel adds to an inner packet on the wire: Salvo's 16-byte header and 16-byte
// tag, UDP's 8 bytes and the outer IP header (20 for IPv4, 40 for IPv6).
func Overhead(gateway netip.Addr) int {
	if gateway.Unmap().Is4() {
		return 32 + 8 + 20
	}
	return 32 + 8 + 40
}

// MinMTU is the smallest inner MTU a client uses: IPv6 needs 1280, and smaller only fragments more.
const MinMTU = 1280

// Vet returns the settings to apply and what it changed:
//
//   - a pushed route (other than a default route, /0, or a half, /1) that contains the gateway's outer
//     address, or overlaps a LAN prefix and is at least as specific as it, is dropped: it would send the
//     client's own LAN (or other traffic to the gateway's address) to the gateway. Wider routes are safe:
//     the LAN's more specific route wins over them (the client's suppress_prefixlength rule);
//   - an excluded route that, alone or with the other excluded routes, covers a whole pushed route is
//     dropped: a gateway that pushes 0.0.0.0/0 and excludes 0.0.0.0/1 and 128.0.0.0/1 would take
//     everything back out of the tunnel while the client reports it "connected";
//   - the MTU is clamped to MinMTU .. PathMTU - Overhead (a pushed 9000 over a 1500-byte path would only
//     fragment every packet).
//
// The Accept* switches of p turn the route checks off. Settings is not modified.
func Vet(st handshake.Settings, p Policy) (handshake.Settings, []Finding) {
	var found []Finding
	out := st
	out.Routes = nil
	for _, r := range st.Routes {
		if why := unsafeRoute(r, p); why != "" && !p.AcceptLANRoutes {
			found = append(found, Finding{What: "route", Prefix: r, Why: why + " (accept_lan_routes = true applies it)"})
			continue
		}
		out.Routes = append(out.Routes, r)
	}
	out.ExcludedRoutes = nil
	covering := coveringExcludes(out.Routes, st.ExcludedRoutes)
	for _, e := range st.ExcludedRoutes {
		if covering[e] && !p.AcceptCoveringExcludes {
			found = append(found, Finding{What: "excluded route", Prefix: e,
				Why: "with the other excluded routes it takes a whole pushed route back out of the tunnel (accept_covering_excludes = true applies it)"})
			continue
		}
		out.ExcludedRoutes = append(out.ExcludedRoutes, e)
	}
	if mtu, why := clampMTU(int(st.MTU), p); why != "" {
		found = append(found, Finding{What: "mtu", Why: why})
		out.MTU = uint16(mtu)
	}
	return out, found
}

func unsafeRoute(r netip.Prefix, p Policy) string {
	if r.Bits() <= 1 {
		return ""
	}
	if p.Gateway.IsValid() && r.Contains(p.Gateway.Unmap()) {
		return "it contains the gateway's own address " + p.Gateway.String()
	}
	for _, lan := range p.LAN {
		if r.Overlaps(lan) && r.Bits() >= lan.Bits() {
			return "it is inside the client's own LAN " + lan.String()
		}
	}
	return ""
}

// coveringExcludes reports which excluded routes take part in covering some pushed route entirely: the
// union of the excluded routes overlapping that route contains all of it.
func coveringExcludes(routes, excluded []netip.Prefix) map[netip.Prefix]bool {
	out := map[netip.Prefix]bool{}
	for _, r := range routes {
		var in []netip.Prefix
		for _, e := range excluded {
			if e.Overlaps(r) {
				in = append(in, e)
			}
		}
		if len(in) > 0 && covers(in, r) {
			for _, e := range in {
				out[e] = true
			}
		}
	}
	return out
}

// covers reports whether the union of ps contains all of target, by splitting target in halves until
// each half is contained in one p or overlaps none (a prefix is never split below the longest p).
func covers(ps []netip.Prefix, target netip.Prefix) bool {
	for _, p := range ps {
		if p.Bits() <= target.Bits() && p.Contains(target.Addr()) {
			return true
		}
	}
	if !slices.ContainsFunc(ps, func(p netip.Prefix) bool { return p.Overlaps(target) }) || target.Bits() == target.Addr().BitLen() {
		return false
	}
	lo, hi := halves(target)
	return covers(ps, lo) && covers(ps, hi)
}

// halves splits a prefix into its two halves.
func halves(p netip.Prefix) (netip.Prefix, netip.Prefix) {
	bits := p.Bits() + 1
	lo := netip.PrefixFrom(p.Addr(), bits).Masked()
	b := lo.Addr().AsSlice()
	i := (bits - 1) / 8
	b[i] |= 0x80 >> ((bits - 1) % 8)
	a, _ := netip.AddrFromSlice(b)
	return lo, netip.PrefixFrom(a, bits)
}

func clampMTU(mtu int, p Policy) (int, string) {
	top := 0
	if p.PathMTU > 0 && p.Gateway.IsValid() {
		top = max(p.PathMTU-Overhead(p.Gateway), MinMTU)
	}
	switch {
	case mtu < MinMTU:
		return MinMTU, fmt.Sprintf("pushed %d raised to %d", mtu, MinMTU)
	case top > 0 && mtu > top:
		return top, fmt.Sprintf("pushed %d lowered to %d: the path to the gateway carries %d bytes, and the tunnel adds %d",
			mtu, top, p.PathMTU, Overhead(p.Gateway))
	}
	return mtu, ""
}

// FullTunnel reports whether routes together cover all of IPv4 (v4) and all of IPv6 (v6).
func FullTunnel(routes []netip.Prefix) (v4, v6 bool) {
	return covers(routes, netip.MustParsePrefix("0.0.0.0/0")), covers(routes, netip.MustParsePrefix("::/0"))
}
