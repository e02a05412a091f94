// Package netcfg configures the operating system for Salvo's gateway and
// client: the tunnel link, policy routing for split and full tunnels, the
// client's leak guard, NAT, IP forwarding and DNS.
//
// Every function acts on the network namespace of the calling OS thread at
// the time of the call, and the undo function it returns acts on that same
// namespace even when it is called later from another thread (it keeps a
// handle on the namespace). Undo functions remove exactly what was added, are
// safe to call more than once, and may be retried after a partial failure.
package netcfg

import "net/netip"

// Link describes a configured network interface, as returned by LinkInfo.
type Link struct {
	Name  string
	MTU   int
	Up    bool
	Addrs []netip.Prefix
}

// RouteSetup describes the routes of a tunnel device and the policy rules
// that steer traffic into them.
//
// The routes live in their own table. Two rules per address family that has
// Routes select it:
//
//	prio RulePriority:   not fwmark FwMark lookup main suppress_prefixlength L
//	prio RulePriority+1: not fwmark FwMark lookup Table
//
// The first lets main win when it has a route more specific than the pushed
// ones (the LAN, a host route), L being the shortest pushed prefix length of
// that family: with a full tunnel L is 0, so only main's default route is
// ignored; with a split tunnel a wider main route (say 10.0.0.0/8 around a
// pushed 10.8.0.0/16) does not shadow the pushed prefix either. The second
// rule sends everything else to Table unless it carries FwMark: the tunnel's
// own UDP socket sets SO_MARK=FwMark (see SetMark) so its packets use main and
// never loop into the tunnel.
//
// The "not fwmark FwMark" on the first rule changes nothing for routing:
// marked packets skip both rules and reach main through the kernel's own
// "lookup main" rule anyway, unsuppressed, which is what they need. It is
// there so that every rule names its instance: several clients (each with
// its own Dev, Table and FwMark) may share RulePriority, and CleanupStale
// tells their rules apart by FwMark, never by priority.
type RouteSetup struct {
	Dev          string // tunnel device, must exist
	Table        int    // routing table for Routes, e.g. 51820; not 0, 253, 254, 255
	FwMark       uint32 // mark of the tunnel's own packets, e.g. 0x5a17; non-zero
	RulePriority int    // priority of the first rule; RulePriority+1 must be < 32766 (main)
	Routes       []netip.Prefix
	// Excluded become "throw" routes in Table: the lookup falls through to
	// the following rules (main), e.g. for a LAN inside a pushed prefix.
	Excluded []netip.Prefix
}

// NAT describes source NAT for the gateway: packets from Sources leaving
// through any interface other than TunDev (and, if set, only through
// OutInterface) are masqueraded.
type NAT struct {
	Sources      []netip.Prefix
	OutInterface string // optional
	TunDev       string
}

// DNS methods reported by ApplyDNS.
const (
	DNSResolved   = "systemd-resolved"
	DNSResolvconf = "resolvconf"
	DNSNone       = "none"
)

// LeakGuard describes the client's leak guard: an nftables filter that
// lets the host's own traffic leave only through the tunnel, so that a LAN
// that injects routes (TunnelVision, CVE-2024-3661) or claims address space
// (TunnelCrack LocalNet) cannot pull it out of the tunnel. Routing decides
// where a packet goes; the guard decides whether it may go there.
type LeakGuard struct {
	Dev string // tunnel device; need not exist yet (matched by name)
	// FwMark is the SO_MARK of the client's own encrypted UDP (see SetMark),
	// the only traffic allowed onto the LAN besides what keeps the link up.
	// Non-zero: "mark 0" would let every unmarked packet through.
	FwMark uint32
	// AllowLAN are destinations reachable outside the tunnel (a printer, a
	// NAS). What the LAN says it is can be chosen by an attacker (see
	// LANPrefixes), so only what the user asked for belongs here. A /0 is
	// refused: it would switch the guard off.
	AllowLAN []netip.Prefix
	// LANDNS lets DNS (TCP and UDP port 53, DNS over TLS on 853) to AllowLAN
	// through too. Without it the guard refuses DNS to the LAN even where
	// AllowLAN allows everything else: a resolver on the LAN would otherwise
	// see every name the host looks up, which is what a full tunnel is for
	// hiding.
	LANDNS bool
	// Persist keeps the guard after the process dies, however it dies (the
	// kill switch): non-tunnel traffic stays blocked until the client is back
	// or RemoveLeakGuard lifts it. Without Persist the guard dies with the
	// process.
	Persist bool
}
