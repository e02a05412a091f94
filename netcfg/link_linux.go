package netcfg

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

const netlinkRoute = unix.NETLINK_ROUTE

// minIPv6MTU is the IPv6 minimum link MTU (RFC 8200). Below it the kernel
// disables IPv6 on the link and adding an IPv6 address fails obscurely.
const minIPv6MTU = 1280

// ConfigureLink sets the MTU of name (if mtu > 0), sets its addresses to
// exactly addrs and sets the link up. Addresses on the link that are not in
// addrs are removed first (IPv6 link-local ones excepted), so that after a
// reconnect with newly pushed addresses the old ones do not linger and keep
// being chosen as source; then the missing ones are added. IPv6 addresses
// get IFA_F_NODAD so they are usable at once (DAD on a point-to-point tunnel
// is pointless and would delay the first packets). Reconfiguring with the
// same addresses changes nothing. Deleting the link (closing the TUN) is the
// undo.
func ConfigureLink(name string, mtu int, addrs []netip.Prefix) error {
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

	link, err := h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("netcfg: find link %s: %w", name, err)
	}
	if mtu < 0 || mtu > 65535 {
		return fmt.Errorf("netcfg: link %s: invalid MTU %d", name, mtu)
	}
	for _, p := range addrs {
		if !p.IsValid() {
			return fmt.Errorf("netcfg: link %s: invalid address prefix %v", name, p)
		}
		if p.Addr().Is6() && !p.Addr().Is4In6() && mtu > 0 && mtu < minIPv6MTU {
			return fmt.Errorf("netcfg: link %s: MTU %d is below the IPv6 minimum %d, cannot add %s", name, mtu, minIPv6MTU, p)
		}
	}
	if mtu > 0 && link.Attrs().MTU != mtu {
		if err := h.LinkSetMTU(link, mtu); err != nil {
			return fmt.Errorf("netcfg: set MTU %d on %s: %w", mtu, name, err)
		}
	}
	if err := removeOtherAddrs(h, link, addrs); err != nil {
		return err
	}
	// Every address is added, not just those found missing above: removing
	// an IPv4 primary address also removes its secondaries, which may have
	// been among the wanted ones.
	for _, p := range addrs {
		a := &netlink.Addr{IPNet: prefixToIPNet(p)}
		if p.Addr().Is6() && !p.Addr().Is4In6() {
			a.Flags = unix.IFA_F_NODAD
		}
		if err := h.AddrAdd(link, a); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("netcfg: add address %s to %s: %w", p, name, err)
		}
	}
	// A tunnel needs no IPv6 link-local address: without it the kernel does not send router solicitations
	// and MLD reports into the tunnel, which the peer could only drop. Set before the link goes up, when the
	// address would be generated; a kernel without IPv6 refuses, which is harmless.
	if link.Attrs().Flags&net.FlagUp == 0 {
		_ = h.LinkSetIP6AddrGenMode(link, addrGenModeNone)
	}
	if err := h.LinkSetUp(link); err != nil {
		return fmt.Errorf("netcfg: set %s up: %w", name, err)
	}
	return nil
}

// removeOtherAddrs deletes the addresses of link that are not in keep,
// except IPv6 link-local ones (the kernel's business, and harmless).
func removeOtherAddrs(h *netlink.Handle, link netlink.Link, keep []netip.Prefix) error {
	name := link.Attrs().Name
	have, err := h.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("netcfg: list addresses of %s: %w", name, err)
	}
	want := make(map[netip.Prefix]bool, len(keep))
	for _, p := range keep {
		want[linkAddr(p)] = true
	}
	for _, a := range have {
		p, ok := ipNetToPrefix(a.IPNet)
		if !ok || want[p] || (p.Addr().Is6() && p.Addr().IsLinkLocalUnicast()) {
			continue
		}
		if err := h.AddrDel(link, &a); err != nil && !gone(err) && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return fmt.Errorf("netcfg: remove old address %s from %s: %w", p, name, err)
		}
	}
	return nil
}

// linkAddr is p as the kernel reports it back: an IPv4-mapped prefix
// becomes plain IPv4, host bits stay.
func linkAddr(p netip.Prefix) netip.Prefix {
	if p.Addr().Is4In6() {
		return netip.PrefixFrom(p.Addr().Unmap(), max(p.Bits()-96, 0))
	}
	return p
}

// addrGenModeNone is IN6_ADDR_GEN_MODE_NONE from linux/if_link.h.
const addrGenModeNone = 1

// LinkInfo reports the MTU, state and global/host addresses of a link in
// the current namespace (IPv6 link-local addresses are left out).
func LinkInfo(name string) (Link, error) {
	ref, err := currentNS()
	if err != nil {
		return Link{}, err
	}
	defer ref.close()
	h, err := ref.netlink()
	if err != nil {
		return Link{}, err
	}
	defer h.Close()
	link, err := h.LinkByName(name)
	if err != nil {
		return Link{}, fmt.Errorf("netcfg: find link %s: %w", name, err)
	}
	addrs, err := h.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return Link{}, fmt.Errorf("netcfg: list addresses of %s: %w", name, err)
	}
	out := Link{Name: name, MTU: link.Attrs().MTU, Up: link.Attrs().Flags&net.FlagUp != 0}
	for _, a := range addrs {
		p, ok := ipNetToPrefix(a.IPNet)
		if !ok || p.Addr().IsLinkLocalUnicast() {
			continue
		}
		out.Addrs = append(out.Addrs, p)
	}
	return out, nil
}

// prefixToIPNet converts keeping the host bits (an interface address is
// 10.8.0.2/24, not 10.8.0.0/24).
func prefixToIPNet(p netip.Prefix) *net.IPNet {
	a := p.Addr().Unmap()
	bits := p.Bits()
	if p.Addr().Is4In6() {
		bits -= 96
		if bits < 0 {
			bits = 0
		}
	}
	return &net.IPNet{IP: net.IP(a.AsSlice()), Mask: net.CIDRMask(bits, a.BitLen())}
}

func ipNetToPrefix(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	a = a.Unmap()
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a, ones), true
}
