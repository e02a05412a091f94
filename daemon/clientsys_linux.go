package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"

	"github.com/salvovpn/salvo/config"
	"github.com/salvovpn/salvo/engine"
	"github.com/salvovpn/salvo/engine/tunnelpolicy"
	"github.com/salvovpn/salvo/netcfg"
	"github.com/salvovpn/salvo/protocol/handshake"
	"golang.zx2c4.com/wireguard/tun"
)

// privateRanges are the address ranges allow_lan may open: RFC 1918, IPv4 link-local, RFC 4193 unique
// local and IPv6 link-local. A LAN prefix outside them is public address space, which a hostile LAN can
// claim to pull traffic for real destinations out of the tunnel (TunnelCrack LocalNet).
var privateRanges = []netip.Prefix{
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("fc00::/7"),
	netip.MustParsePrefix("fe80::/10"),
}

// clientSystem applies pushed settings to the OS through netcfg, after checking them against the
// client's own policy (tunnelpolicy), and keeps the leak guard of a full tunnel.
//
// The guard lives apart from the settings' undo: when settings change, the old routes go before the new
// ones come, and the guard must stay up in between. It is removed by Close, on a clean exit only; after a
// crash the kill switch (a persistent guard) keeps blocking until a client is back or `salvo client
// --down` lifts it.
type clientSystem struct {
	cfg *config.Client
	log *slog.Logger
	// gateway is the gateway's current outer address.
	gateway func() netip.Addr

	mu         sync.Mutex
	guardUndo  func() error // the guard this process holds, nil if none
	staleGuard bool         // a guard an earlier run left is in place and not yet taken over
}

// Apply configures dev for st: vets st, raises the leak guard if wanted, then sets the link, routes and
// DNS. A full tunnel whose DNS cannot be applied fails unless dns_fail_open.
func (s *clientSystem) Apply(dev tun.Device, pushed handshake.Settings) (func(), error) {
	name, err := dev.Name()
	if err != nil {
		return nil, err
	}
	st := s.vet(name, pushed)
	routes := s.cfg.Routes != "none" && len(st.Routes) > 0
	var full4, full6 bool
	if routes {
		full4, full6 = tunnelpolicy.FullTunnel(st.Routes)
	}
	full := full4 || full6
	if err := s.setGuard(name, full); err != nil {
		return nil, err
	}

	var addrs []netip.Prefix
	for _, p := range []netip.Prefix{st.IPv4, st.IPv6} {
		if p.IsValid() {
			addrs = append(addrs, p)
		}
	}
	if err := netcfg.ConfigureLink(name, int(st.MTU), addrs); err != nil {
		return nil, err
	}
	var undos []func() error
	undo := func() {
		for i := len(undos) - 1; i >= 0; i-- {
			if err := undos[i](); err != nil {
				s.log.Warn("cleanup", "err", err)
			}
		}
	}
	if routes {
		excluded := append(slices.Clone(st.ExcludedRoutes), s.cfg.ExtraExcludedPrefixes...)
		rs := clientRouting(s.cfg)
		rs.Dev, rs.Routes, rs.Excluded = name, st.Routes, excluded
		u, err := netcfg.ApplyRoutes(rs)
		if err != nil {
			undo()
			return nil, err
		}
		undos = append(undos, u)
		s.log.Info("routes applied", "routes", fmt.Sprint(st.Routes), "excluded", fmt.Sprint(excluded),
			"full_tunnel_ipv4", full4, "full_tunnel_ipv6", full6)
		s.warnUnreachableExcludes(st.ExcludedRoutes)
	} else if len(st.Routes) > 0 {
		s.log.Info("routes not applied (routes = \"none\")", "pushed", fmt.Sprint(st.Routes))
	}
	u, err := s.applyDNS(name, st, full)
	if err != nil {
		undo()
		return nil, err
	}
	if u != nil {
		undos = append(undos, u)
	}
	return undo, nil
}

// vet checks the pushed settings against the client's policy and logs what it changed.
func (s *clientSystem) vet(dev string, st handshake.Settings) handshake.Settings {
	gw := s.gateway()
	pol := tunnelpolicy.Policy{Gateway: gw, AcceptLANRoutes: s.cfg.AcceptLANRoutes,
		AcceptCoveringExcludes: s.cfg.AcceptCoveringExcludes}
	lan, err := netcfg.LANPrefixes(dev)
	if err != nil {
		s.log.Warn("cannot list the LAN's prefixes; pushed routes are not checked against them", "err", err)
	}
	pol.LAN = lan
	if mtu, err := netcfg.PathMTU(gw, s.cfg.FwMark); err != nil {
		s.log.Warn("cannot find the path MTU to the gateway; the tunnel MTU is not clamped to it", "err", err)
	} else {
		pol.PathMTU = mtu
	}
	vetted, findings := tunnelpolicy.Vet(st, pol)
	for _, f := range findings {
		s.log.Warn("pushed settings changed by the client's policy", "change", f.String())
	}
	return vetted
}

// wantGuard reports whether the leak guard should be up for a tunnel that is full (or not).
func (s *clientSystem) wantGuard(full bool) bool {
	return s.cfg.LeakGuard == "on" || s.cfg.LeakGuard == "auto" && full
}

// setGuard raises, changes or lifts the leak guard for dev.
func (s *clientSystem) setGuard(dev string, full bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.wantGuard(full) {
		if s.guardUndo != nil {
			err := s.guardUndo()
			s.guardUndo = nil
			if err != nil {
				return fmt.Errorf("lifting the leak guard: %w", err)
			}
			s.log.Info("leak guard lifted: the tunnel is not a full tunnel any more")
		}
		if s.staleGuard {
			if err := netcfg.RemoveLeakGuard(dev); err != nil {
				return fmt.Errorf("lifting the leak guard an earlier run left: %w", err)
			}
			s.staleGuard = false
			s.log.Info("leak guard of an earlier run lifted: this tunnel is not a full tunnel")
		}
		return nil
	}
	g := netcfg.LeakGuard{Dev: dev, FwMark: s.cfg.FwMark, Persist: s.cfg.KillSwitch,
		AllowLAN: s.allowedOutside(dev), LANDNS: s.cfg.AllowLAN && s.cfg.DNSFailOpen}
	undo, err := netcfg.ApplyLeakGuard(g)
	if err != nil {
		return fmt.Errorf("leak guard: %w", err)
	}
	s.guardUndo, s.staleGuard = undo, false
	s.log.Info("leak guard up: nothing leaves outside the tunnel but its own UDP, DHCP and neighbor discovery, and what is allowed",
		"allowed", fmt.Sprint(g.AllowLAN), "lan_dns", g.LANDNS, "kill_switch", g.Persist)
	return nil
}

// allowedOutside is what the guard lets through besides the tunnel: the user's extra_excluded_routes and,
// with allow_lan, the private prefixes the LAN uses. Excluded routes the gateway pushed are not in it: a
// gateway must not be able to take traffic out of a full tunnel onto the LAN (see
// warnUnreachableExcludes).
func (s *clientSystem) allowedOutside(dev string) []netip.Prefix {
	allowed := slices.Clone(s.cfg.ExtraExcludedPrefixes)
	if !s.cfg.AllowLAN {
		return allowed
	}
	lan, err := netcfg.LANPrefixes(dev)
	if err != nil {
		s.log.Warn("allow_lan: cannot list the LAN's prefixes; the LAN stays blocked", "err", err)
		return allowed
	}
	private, public := splitPrivate(lan)
	for _, p := range public {
		s.log.Warn("allow_lan: the LAN claims public address space; it stays blocked (a hostile LAN could pull real destinations out of the tunnel this way)",
			"prefix", p)
	}
	return append(allowed, private...)
}

// splitPrivate sorts prefixes into those inside one of privateRanges and the others.
func splitPrivate(prefixes []netip.Prefix) (private, public []netip.Prefix) {
	for _, p := range prefixes {
		if slices.ContainsFunc(privateRanges, func(r netip.Prefix) bool { return r.Bits() <= p.Bits() && r.Contains(p.Addr()) }) {
			private = append(private, p)
		} else {
			public = append(public, p)
		}
	}
	return private, public
}

// warnUnreachableExcludes says which pushed excluded routes the guard blocks: their traffic goes neither
// into the tunnel nor out to the LAN.
func (s *clientSystem) warnUnreachableExcludes(excluded []netip.Prefix) {
	s.mu.Lock()
	guarded := s.guardUndo != nil
	s.mu.Unlock()
	if guarded && len(excluded) > 0 {
		s.log.Warn("the leak guard blocks the gateway's excluded routes: traffic to them is not sent at all (list them in extra_excluded_routes to let them out)",
			"excluded", fmt.Sprint(excluded))
	}
}

// applyDNS points the resolver at the tunnel's servers; in a full tunnel the tunnel becomes the default
// DNS route, and failing to apply DNS is an error unless dns_fail_open.
func (s *clientSystem) applyDNS(dev string, st handshake.Settings, full bool) (func() error, error) {
	switch {
	case !s.cfg.DNS:
		if full {
			s.log.Info("DNS not applied (dns = false): names resolve with the system's servers", "pushed", fmt.Sprint(st.DNS))
		}
		return nil, nil
	case len(st.DNS) == 0 && len(st.SearchDomains) == 0:
		if full {
			s.log.Warn("the gateway pushed no DNS servers for a full tunnel: names resolve with the system's servers, which the leak guard blocks outside the tunnel")
		}
		return nil, nil
	}
	var opts netcfg.DNSOptions
	opts.DefaultRoute = full && len(st.DNS) > 0
	u, method, err := netcfg.ApplyDNS(dev, st.DNS, st.SearchDomains, opts)
	if err == nil && method == netcfg.DNSNone {
		err = errors.New("neither systemd-resolved nor resolvconf is available")
	}
	if err == nil {
		s.log.Info("DNS applied", "method", method, "servers", fmt.Sprint(st.DNS), "domains", fmt.Sprint(st.SearchDomains),
			"default_route", opts.DefaultRoute)
		return u, nil
	}
	if full && !s.cfg.DNSFailOpen {
		return nil, fmt.Errorf("full tunnel refused: its DNS servers %v cannot be applied (%w), so queries would go to the system's servers outside the tunnel; "+
			"set dns_fail_open = true to run anyway", st.DNS, err)
	}
	s.log.Warn("DNS not applied: names resolve with the system's servers", "servers", fmt.Sprint(st.DNS), "err", err,
		"full_tunnel", full)
	return nil, nil
}

// GuardStatus reports the guard this process holds, nil if none.
func (s *clientSystem) GuardStatus() *engine.LeakGuardStatus {
	s.mu.Lock()
	up := s.guardUndo != nil
	s.mu.Unlock()
	if !up {
		return nil
	}
	st := &engine.LeakGuardStatus{KillSwitch: s.cfg.KillSwitch}
	n, err := netcfg.LeakGuardDrops(s.cfg.TunName)
	if err != nil {
		s.log.Debug("reading the leak guard's counters", "err", err)
	}
	st.Blocked = n
	return st
}

// Close lifts the guard on a clean exit.
func (s *clientSystem) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.guardUndo != nil {
		if err := s.guardUndo(); err != nil {
			s.log.Warn("cleanup: leak guard", "err", err)
		}
		s.guardUndo = nil
	}
	if s.staleGuard {
		s.log.Warn("a leak guard an earlier run left keeps blocking traffic outside the tunnel (kill switch); "+
			"`salvo client --down --config FILE` lifts it", "dev", s.cfg.TunName)
	}
}
