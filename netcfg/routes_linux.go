package netcfg

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// rtProtoSalvo tags Salvo's routes and rules (the "proto" column of `ip
// route`/`ip rule`), so that CleanupStale only ever removes Salvo's own
// entries. 90 is not assigned in iproute2's rt_protos.
const rtProtoSalvo = 90

const mainRulePriority = 32766 // priority of the kernel's "lookup main" rule

func (rs RouteSetup) validate() error {
	switch {
	case rs.Dev == "":
		return errors.New("netcfg: routes: empty device name")
	case rs.Table <= 0 || rs.Table == unix.RT_TABLE_DEFAULT || rs.Table == unix.RT_TABLE_MAIN ||
		rs.Table == unix.RT_TABLE_LOCAL || int64(rs.Table) > 0xffffffff:
		return fmt.Errorf("netcfg: routes for %s: table %d is reserved or invalid", rs.Dev, rs.Table)
	case rs.FwMark == 0:
		return fmt.Errorf("netcfg: routes for %s: fwmark must be non-zero", rs.Dev)
	case rs.RulePriority <= 0 || rs.RulePriority+1 >= mainRulePriority:
		return fmt.Errorf("netcfg: routes for %s: rule priority %d must be in 1..%d", rs.Dev, rs.RulePriority, mainRulePriority-2)
	}
	for _, p := range append(append([]netip.Prefix(nil), rs.Routes...), rs.Excluded...) {
		if !p.IsValid() {
			return fmt.Errorf("netcfg: routes for %s: invalid prefix %v", rs.Dev, p)
		}
	}
	return nil
}

// family returns the netlink family of a (masked, unmapped) prefix.
func family(p netip.Prefix) int {
	if p.Addr().Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

// normPrefix masks host bits and turns ::ffff:a.b.c.d/n into a.b.c.d/(n-96),
// so a prefix is routed in the family it really belongs to.
func normPrefix(p netip.Prefix) netip.Prefix {
	if p.Addr().Is4In6() {
		bits := max(p.Bits()-96, 0)
		p = netip.PrefixFrom(p.Addr().Unmap(), bits)
	}
	return p.Masked()
}

func famName(f int) string {
	if f == netlink.FAMILY_V4 {
		return "IPv4"
	}
	return "IPv6"
}

// ApplyRoutes installs rs (see RouteSetup for the layout) and returns an undo
// function that removes exactly the routes and rules it added. Routes are
// added before the rules that make them reachable, and removed after, so
// traffic never hits a half-populated table. If a route or rule already
// exists (typically a crashed run: see CleanupStale) ApplyRoutes fails and
// rolls back what it did.
func ApplyRoutes(rs RouteSetup) (undo func() error, err error) {
	if err := rs.validate(); err != nil {
		return nil, err
	}
	ref, err := currentNS()
	if err != nil {
		return nil, err
	}
	h, err := ref.netlink()
	if err != nil {
		ref.close()
		return nil, err
	}
	u := &undoStack{onEmpty: func() { h.Close(); ref.close() }}
	defer func() {
		if err != nil {
			if uerr := u.run(); uerr != nil {
				err = errors.Join(err, fmt.Errorf("netcfg: rollback: %w", uerr))
			}
			u.mu.Lock()
			if u.onEmpty != nil { // rollback left something: still release handles
				u.onEmpty()
				u.onEmpty = nil
			}
			u.mu.Unlock()
		}
	}()

	link, err := h.LinkByName(rs.Dev)
	if err != nil {
		return nil, fmt.Errorf("netcfg: find link %s: %w", rs.Dev, err)
	}
	// Shortest pushed prefix per family (-1: no routes in that family).
	minBits := map[int]int{netlink.FAMILY_V4: -1, netlink.FAMILY_V6: -1}
	for _, p := range rs.Routes {
		p = normPrefix(p)
		f := family(p)
		if minBits[f] < 0 || p.Bits() < minBits[f] {
			minBits[f] = p.Bits()
		}
		r := &netlink.Route{
			LinkIndex: link.Attrs().Index,
			Dst:       prefixToIPNet(p),
			Table:     rs.Table,
			Scope:     netlink.SCOPE_LINK,
			Protocol:  rtProtoSalvo,
		}
		if err := h.RouteAdd(r); err != nil {
			return nil, fmt.Errorf("netcfg: add route %s dev %s table %d: %w", p, rs.Dev, rs.Table, err)
		}
		u.push(func() error { return delRoute(h, r, fmt.Sprintf("%s dev %s table %d", p, rs.Dev, rs.Table)) })
	}
	for _, p := range rs.Excluded {
		p = normPrefix(p)
		r := &netlink.Route{
			Dst:      prefixToIPNet(p),
			Table:    rs.Table,
			Type:     unix.RTN_THROW,
			Protocol: rtProtoSalvo,
		}
		if err := h.RouteAdd(r); err != nil {
			return nil, fmt.Errorf("netcfg: add throw route %s table %d: %w", p, rs.Table, err)
		}
		u.push(func() error { return delRoute(h, r, fmt.Sprintf("throw %s table %d", p, rs.Table)) })
	}
	for _, f := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		if minBits[f] < 0 {
			continue
		}
		for _, r := range salvoRules(rs, f, minBits[f]) {
			if err := h.RuleAdd(r); err != nil {
				return nil, fmt.Errorf("netcfg: add %s rule %s: %w", famName(f), describeRule(r), err)
			}
			u.push(func() error {
				if err := h.RuleDel(r); err != nil && !gone(err) {
					return fmt.Errorf("netcfg: delete %s rule %s: %w", famName(f), describeRule(r), err)
				}
				return nil
			})
		}
	}
	return u.run, nil
}

// salvoRules builds the two rules of one family.
func salvoRules(rs RouteSetup, fam, suppress int) []*netlink.Rule {
	main := netlink.NewRule()
	main.Family = fam
	main.Priority = rs.RulePriority
	main.Table = unix.RT_TABLE_MAIN
	main.SuppressPrefixlen = suppress
	main.Mark = rs.FwMark // identifies the instance: see RouteSetup
	main.Invert = true
	main.Protocol = rtProtoSalvo

	tun := netlink.NewRule()
	tun.Family = fam
	tun.Priority = rs.RulePriority + 1
	tun.Table = rs.Table
	tun.Mark = rs.FwMark
	tun.Invert = true
	tun.Protocol = rtProtoSalvo
	return []*netlink.Rule{main, tun}
}

func describeRule(r *netlink.Rule) string {
	s := fmt.Sprintf("prio %d: ", r.Priority)
	if r.Invert {
		s += "not "
	}
	if r.Mark != 0 {
		s += fmt.Sprintf("fwmark %#x ", r.Mark)
	}
	s += fmt.Sprintf("lookup %d", r.Table)
	if r.SuppressPrefixlen >= 0 {
		s += fmt.Sprintf(" suppress_prefixlength %d", r.SuppressPrefixlen)
	}
	return s
}

func delRoute(h *netlink.Handle, r *netlink.Route, what string) error {
	if err := h.RouteDel(r); err != nil && !gone(err) {
		return fmt.Errorf("netcfg: delete route %s: %w", what, err)
	}
	return nil
}

// gone reports errors meaning "already not there": the entry was removed by
// someone else or vanished with its device (closing a TUN drops its routes).
func gone(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) || errors.Is(err, unix.ENODEV)
}

// CleanupStale removes what a previous, crashed run of the same client
// instance left behind: its policy rules and the routes in its Table. An
// instance is identified by its FwMark, not by priorities (several clients
// may share a priority; see RouteSetup), so a rule is removed only if it
// carries Salvo's protocol tag and "not fwmark FwMark" and is either the
// suppress rule on main or points at Table; a route only if it carries
// Salvo's tag and is in Table. The caller must make sure that FwMark and
// Table are not used by another running instance (see Claim). Fields left
// zero are skipped: with FwMark 0 no rule is touched, with Table 0 no route.
//
// NAT needs no cleanup: EnableNAT's table is owned by the gateway process and
// disappears with it. Neither does the leak guard: ApplyLeakGuard takes over
// the one a crashed client left, and RemoveLeakGuard lifts it.
//
// Call it at startup, before ApplyRoutes.
func CleanupStale(rs RouteSetup) error {
	if rs.Table == 0 && rs.FwMark == 0 {
		return nil
	}
	ref, err := currentNS()
	if err != nil {
		return err
	}
	defer ref.close()
	h, err := ref.netlink()
	if err != nil {
		return err
	}
	defer h.Close()
	var errs []error
	for _, f := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rules, err := h.RuleList(f)
		if err != nil {
			errs = append(errs, fmt.Errorf("netcfg: list %s rules: %w", famName(f), err))
			continue
		}
		for _, r := range rules {
			if !rs.ownsRule(r) {
				continue
			}
			r.Family = f
			if err := h.RuleDel(&r); err != nil && !gone(err) {
				errs = append(errs, fmt.Errorf("netcfg: delete stale %s rule %s: %w", famName(f), describeRule(&r), err))
			}
		}
		if rs.Table == 0 {
			continue
		}
		routes, err := h.RouteListFiltered(f, &netlink.Route{Table: rs.Table, Protocol: rtProtoSalvo},
			netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
		if err != nil {
			errs = append(errs, fmt.Errorf("netcfg: list %s routes of table %d: %w", famName(f), rs.Table, err))
			continue
		}
		for _, r := range routes {
			if err := h.RouteDel(&r); err != nil && !gone(err) {
				errs = append(errs, fmt.Errorf("netcfg: delete stale route %s table %d: %w", r.Dst, rs.Table, err))
			}
		}
	}
	return errors.Join(errs...)
}

// ownsRule reports whether r is one of the rules ApplyRoutes installs for
// rs, by what identifies an instance (see CleanupStale).
func (rs RouteSetup) ownsRule(r netlink.Rule) bool {
	if r.Protocol != rtProtoSalvo || rs.FwMark == 0 || !r.Invert || r.Mark != rs.FwMark {
		return false
	}
	suppress := r.Table == unix.RT_TABLE_MAIN && r.SuppressPrefixlen >= 0
	return suppress || (rs.Table != 0 && r.Table == rs.Table)
}
