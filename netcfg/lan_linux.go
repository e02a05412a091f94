package netcfg

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
)

// linkLocal6 stands for every IPv6 link-local address: they are all in
// fe80::/64 (RFC 4291 2.5.6), whatever prefix length the address carries.
var linkLocal6 = netip.MustParsePrefix("fe80::/64")

// LANPrefixes returns the networks of the addresses configured on the
// interfaces of the current namespace, except loopback and the interfaces
// named in exclude (the tunnel device): each address masked to its prefix
// (192.168.1.37/24 gives 192.168.1.0/24), IPv6 link-local addresses as
// fe80::/64 if there is any. Sorted (IPv4 first) and without duplicates.
//
// These are what the LAN says it is, and the LAN may lie: a DHCP server
// that hands out 192.168.1.37/1, or an address in the range of a popular
// service, makes that range "local" (TunnelCrack LocalNet). Passing the
// result to LeakGuard.AllowLAN unfiltered hands that choice to whoever runs
// the LAN: only do it when the user asked for LAN access, and prefer to keep
// what falls inside private ranges.
func LANPrefixes(exclude ...string) ([]netip.Prefix, error) {
	ref, err := currentNS()
	if err != nil {
		return nil, err
	}
	defer ref.close()
	h, err := ref.netlink()
	if err != nil {
		return nil, err
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("netcfg: list links: %w", err)
	}
	var out []netip.Prefix
	for _, l := range links {
		a := l.Attrs()
		if a.Flags&net.FlagLoopback != 0 || a.Name == "lo" || slices.Contains(exclude, a.Name) {
			continue
		}
		addrs, err := h.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			if gone(err) { // the link went away meanwhile
				continue
			}
			return nil, fmt.Errorf("netcfg: list addresses of %s: %w", a.Name, err)
		}
		for _, ad := range addrs {
			if p, ok := lanPrefix(ad.IPNet); ok && !slices.Contains(out, p) {
				out = append(out, p)
			}
		}
	}
	slices.SortFunc(out, comparePrefix)
	return out, nil
}

// lanPrefix is the network an interface address belongs to.
func lanPrefix(n *net.IPNet) (netip.Prefix, bool) {
	p, ok := ipNetToPrefix(n)
	if !ok {
		return netip.Prefix{}, false
	}
	if p.Addr().Is6() && p.Addr().IsLinkLocalUnicast() {
		return linkLocal6, true
	}
	return p.Masked(), true
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

// PathMTU returns the MTU the kernel would use for packets to dst carrying
// fwmark mark (0: unmarked): the MTU of the route the kernel picks for them,
// which covers a route's "mtu" metric and a path MTU it learned from an
// ICMP "packet too big", else the MTU of the device the route leaves
// through (for IPv6 the device's IPv6 MTU, which a router advertisement may
// have lowered). Only a route lookup is done; nothing is sent.
func PathMTU(dst netip.Addr, mark uint32) (int, error) {
	if !dst.IsValid() {
		return 0, errors.New("netcfg: path MTU: invalid destination address")
	}
	dst = dst.Unmap()
	ref, err := currentNS()
	if err != nil {
		return 0, err
	}
	defer ref.close()
	h, err := ref.netlink()
	if err != nil {
		return 0, err
	}
	defer h.Close()
	routes, err := h.RouteGetWithOptions(net.IP(dst.AsSlice()), &netlink.RouteGetOptions{Mark: mark})
	if err == nil && len(routes) == 0 {
		err = errors.New("kernel returned no route")
	}
	if err != nil {
		return 0, fmt.Errorf("netcfg: path MTU to %s (mark %#x): route lookup: %w", dst, mark, err)
	}
	r := routes[0]
	if r.MTU > 0 {
		return r.MTU, nil
	}
	link, err := h.LinkByIndex(r.LinkIndex)
	if err != nil {
		return 0, fmt.Errorf("netcfg: path MTU to %s (mark %#x): egress device %d: %w", dst, mark, r.LinkIndex, err)
	}
	if dst.Is6() {
		if mtu, ok := ipv6DevMTU(link.Attrs().Name); ok {
			return mtu, nil
		}
	}
	return link.Attrs().MTU, nil
}

// ipv6DevMTU reads a device's IPv6 MTU (net.ipv6.conf.<dev>.mtu), which
// the kernel keeps at or below the device MTU. /proc/sys/net shows the
// namespace of the thread that opens it, hence the locked thread: the
// caller's thread is in the namespace PathMTU works on.
func ipv6DevMTU(dev string) (int, bool) {
	if dev == "" || dev == "." || dev == ".." || strings.Contains(dev, "/") {
		return 0, false // the kernel allows none of these; no path games either
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	b, err := os.ReadFile("/proc/sys/net/ipv6/conf/" + dev + "/mtu")
	if err != nil {
		return 0, false // IPv6 disabled on the device, or no /proc
	}
	mtu, err := strconv.Atoi(strings.TrimSpace(string(b)))
	return mtu, err == nil && mtu > 0
}
