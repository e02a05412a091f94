package netcfg

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

const ifNameSize = unix.IFNAMSIZ

func natTableName(dev string) string { return "salvo_" + dev }

// EnableNAT installs an nftables table "salvo_<TunDev>" (family inet, so one
// table covers IPv4 and IPv6) with a postrouting NAT chain that masquerades
// packets from Sources unless they leave through TunDev (client-to-client
// traffic keeps its addresses) and, when OutInterface is set, only when they
// leave through it. An existing table of that name (a crashed run) is
// replaced atomically in the same transaction. Undo deletes the table.
//
// Forwarding must be enabled separately (EnableForwarding); a host firewall
// with a dropping forward policy also has to allow the traffic.
func EnableNAT(n NAT) (undo func() error, err error) {
	if n.TunDev == "" || len(n.TunDev) >= ifNameSize {
		return nil, fmt.Errorf("netcfg: NAT: invalid tunnel device name %q", n.TunDev)
	}
	if len(n.OutInterface) >= ifNameSize {
		return nil, fmt.Errorf("netcfg: NAT for %s: invalid out interface name %q", n.TunDev, n.OutInterface)
	}
	if len(n.Sources) == 0 {
		return nil, fmt.Errorf("netcfg: NAT for %s: no source prefixes", n.TunDev)
	}
	for _, p := range n.Sources {
		if !p.IsValid() {
			return nil, fmt.Errorf("netcfg: NAT for %s: invalid source prefix %v", n.TunDev, p)
		}
	}
	ref, err := currentNS()
	if err != nil {
		return nil, err
	}
	name := natTableName(n.TunDev)
	c, err := ref.nftables()
	if err != nil {
		ref.close()
		return nil, fmt.Errorf("netcfg: nftables connection for table %s: %w", name, err)
	}
	// "add; delete; add" is the standard idempotent replace: the first add
	// makes sure the delete cannot fail with ENOENT, and the whole batch is
	// one atomic transaction, so there is no window without NAT.
	t := &nftables.Table{Name: name, Family: nftables.TableFamilyINet}
	c.AddTable(t)
	c.DelTable(t)
	t = c.AddTable(&nftables.Table{Name: name, Family: nftables.TableFamilyINet})
	ch := c.AddChain(&nftables.Chain{
		Name:     "postrouting",
		Table:    t,
		Type:     nftables.ChainTypeNAT,
		Hooknum:  nftables.ChainHookPostrouting,
		Priority: nftables.ChainPriorityNATSource,
	})
	for _, p := range n.Sources {
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: masqExprs(normPrefix(p), n.TunDev, n.OutInterface)})
	}
	if err := c.Flush(); err != nil {
		ref.close()
		return nil, fmt.Errorf("netcfg: create nftables table inet %s (sources %v): %w", name, n.Sources, err)
	}
	u := &undoStack{onEmpty: ref.close}
	u.push(func() error { return deleteNATTable(ref, name) })
	return u.run, nil
}

// masqExprs builds: meta nfproto <fam> <fam> saddr <p> oifname != tun
// [oifname == out] counter masquerade.
func masqExprs(p netip.Prefix, tun, out string) []expr.Any {
	nfproto, off, alen := byte(unix.NFPROTO_IPV4), uint32(12), uint32(4) // IPv4 saddr
	if p.Addr().Is6() {
		nfproto, off, alen = unix.NFPROTO_IPV6, 8, 16 // IPv6 saddr
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
	e = append(e,
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Addr().AsSlice()},
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

// deleteNATTable removes table inet name; a missing table counts as done.
func deleteNATTable(ref *nsRef, name string) error {
	c, err := ref.nftables()
	if err != nil {
		return fmt.Errorf("netcfg: nftables connection to delete table %s: %w", name, err)
	}
	c.DelTable(&nftables.Table{Name: name, Family: nftables.TableFamilyINet})
	if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("netcfg: delete nftables table inet %s: %w", name, err)
	}
	return nil
}
