package netcfg

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	mnl "github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

const ifNameSize = unix.IFNAMSIZ

func natTableName(dev string) string { return "salvo_" + dev }

// EnableNAT installs an nftables table "salvo_<TunDev>" (family inet, so one
// table covers IPv4 and IPv6) with a postrouting NAT chain that masquerades
// packets from Sources unless they leave through TunDev (client-to-client
// traffic keeps its addresses) and, when OutInterface is set, only when they
// leave through it.
//
// The table is owned by this process (NFT_TABLE_F_OWNER, Linux 5.12): it is
// created over a netlink socket that stays open until undo, only that socket
// may change or delete it, and the kernel deletes it when the socket closes,
// so a gateway killed with SIGKILL leaves no NAT behind and a second gateway
// started with the same TunDev cannot take over or delete the first one's
// table. If the table exists and is owned, EnableNAT fails and changes
// nothing; an existing table without the owner flag (left by an older Salvo
// that crashed) is replaced in the same transaction that creates the new one,
// so there is no window without NAT. Undo deletes the table and closes the
// socket.
//
// Forwarding must be enabled separately (EnableForwarding); a host firewall
// with a dropping forward policy also has to allow the traffic.
func EnableNAT(n NAT) (undo func() error, err error) {
	if err := n.validate(); err != nil {
		return nil, err
	}
	c, err := netfilterHere()
	if err != nil {
		return nil, err
	}
	t := natTable(n)
	if err := createNATTable(c, t, n); err != nil {
		_ = c.Close()
		return nil, err
	}
	held := newHeldTable(t, c)
	u := &undoStack{}
	u.push(held.release)
	return u.run, nil
}

func (n NAT) validate() error {
	if n.TunDev == "" || len(n.TunDev) >= ifNameSize {
		return fmt.Errorf("netcfg: NAT: invalid tunnel device name %q", n.TunDev)
	}
	if len(n.OutInterface) >= ifNameSize {
		return fmt.Errorf("netcfg: NAT for %s: invalid out interface name %q", n.TunDev, n.OutInterface)
	}
	if len(n.Sources) == 0 {
		return fmt.Errorf("netcfg: NAT for %s: no source prefixes", n.TunDev)
	}
	for _, p := range n.Sources {
		if !p.IsValid() {
			return fmt.Errorf("netcfg: NAT for %s: invalid source prefix %v", n.TunDev, p)
		}
	}
	return nil
}

// natTable describes the owned table: one postrouting NAT chain with a
// masquerade rule per source prefix.
func natTable(n NAT) *nftTable {
	ch := nftChain{
		name: "postrouting",
		typ:  string(nftables.ChainTypeNAT),
		hook: uint32(*nftables.ChainHookPostrouting),
		prio: int32(*nftables.ChainPriorityNATSource),
	}
	for _, p := range n.Sources {
		ch.rules = append(ch.rules, masqExprs(normPrefix(p), n.TunDev, n.OutInterface))
	}
	return &nftTable{
		family: byte(nftables.TableFamilyINet),
		name:   natTableName(n.TunDev),
		flags:  nftTableFlagOwner,
		chains: []nftChain{ch},
		role:   roleGateway,
	}
}

// createNATTable creates t over c, replacing a table of that name without
// the owner flag (left by a Salvo without owned tables that crashed) in the
// same batch.
func createNATTable(c *mnl.Conn, t *nftTable, n NAT) error {
	replace, err := t.replaceable(c)
	if err != nil {
		return err
	}
	if err := t.create(c, replace); err != nil {
		if errors.Is(err, unix.EOPNOTSUPP) {
			err = fmt.Errorf("%w (owned tables need Linux 5.12 or later)", err)
		}
		return fmt.Errorf("netcfg: create owned nftables table %s (sources %v): %w", t.label(), n.Sources, err)
	}
	return nil
}

// masqExprs builds: meta nfproto <fam> <fam> saddr <p> oifname != tun
// [oifname == out] counter masquerade.
func masqExprs(p netip.Prefix, tun, out string) []expr.Any {
	e := prefixMatch(p, false)
	e = append(e,
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifname(tun)},
	)
	if out != "" {
		e = append(e,
			&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(out)},
		)
	}
	return append(e, &expr.Counter{}, &expr.Masq{})
}

// prefixMatch builds: meta nfproto <fam> <fam> saddr|daddr <p>, for a
// masked, unmapped prefix.
func prefixMatch(p netip.Prefix, dst bool) []expr.Any {
	nfproto, off, alen := byte(unix.NFPROTO_IPV4), uint32(12), uint32(4) // IPv4 saddr
	if p.Addr().Is6() {
		nfproto, off, alen = unix.NFPROTO_IPV6, 8, 16 // IPv6 saddr
	}
	if dst {
		off += alen // daddr follows saddr in both headers
	}
	e := []expr.Any{
		// inet tables see both families: check it before reading the header.
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{nfproto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: alen},
	}
	if p.Bits() < p.Addr().BitLen() {
		mask := netipMask(p)
		e = append(e, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: alen, Mask: mask, Xor: make([]byte, alen)})
	}
	return append(e, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Addr().AsSlice()})
}

func netipMask(p netip.Prefix) []byte {
	m := make([]byte, p.Addr().BitLen()/8)
	for i := 0; i < p.Bits(); i++ {
		m[i/8] |= 0x80 >> (i % 8)
	}
	return m
}

// ifname pads an interface name to IFNAMSIZ as the kernel compares oifname.
func ifname(s string) []byte {
	b := make([]byte, ifNameSize)
	copy(b, s)
	return b
}
