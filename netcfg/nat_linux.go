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
	ref, err := currentNS()
	if err != nil {
		return nil, err
	}
	// The socket belongs to the namespace it was opened in for its whole
	// life, so the namespace handle is not needed after this.
	c, err := ref.netfilter()
	ref.close()
	if err != nil {
		return nil, err
	}
	name := natTableName(n.TunDev)
	t := &ownedTable{family: byte(nftables.TableFamilyINet), name: name, label: "inet " + name, conn: c}
	if err := createNATTable(t, n); err != nil {
		_ = c.Close()
		return nil, err
	}
	u := &undoStack{}
	u.push(t.release)
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

// createNATTable sends table, chain and rules in one batch over t.conn.
func createNATTable(t *ownedTable, n NAT) error {
	st, err := queryTable(t.conn, t.family, t.name)
	if err != nil {
		return fmt.Errorf("netcfg: look up nftables table %s: %w", t.label, err)
	}
	if st.owned {
		return &TableOwnedError{Table: t.label, OwnerPort: st.ownerPort}
	}
	b := &nftBatch{family: t.family}
	if st.exists {
		// Left by a Salvo without owned tables that crashed. Deleting it in
		// the same batch keeps the replacement atomic; had another process
		// made it owned in the meantime, the delete fails with EPERM and the
		// whole batch with it.
		b.delTable(t.name)
	}
	b.newTable(t.name, nftTableFlagOwner)
	b.newBaseChain(t.name, "postrouting", string(nftables.ChainTypeNAT),
		uint32(*nftables.ChainHookPostrouting), uint32(*nftables.ChainPriorityNATSource))
	for _, p := range n.Sources {
		b.appendRule(t.name, "postrouting", masqExprs(normPrefix(p), n.TunDev, n.OutInterface))
	}
	if err := b.send(t.conn); err != nil {
		if errors.Is(err, unix.EOPNOTSUPP) {
			err = fmt.Errorf("%w (owned tables need Linux 5.12 or later)", err)
		}
		return fmt.Errorf("netcfg: create owned nftables table %s (sources %v): %w", t.label, n.Sources, err)
	}
	return nil
}

// TableOwnedError reports that an nftables table Salvo wants to create
// already exists and is owned by another live process: typically a second
// gateway was started with the tun_name of a running one.
type TableOwnedError struct {
	Table     string // family and name, e.g. "inet salvo_salvo0"
	OwnerPort uint32 // netlink port ID of the owning socket (often the owner's PID); 0 if not reported
}

func (e *TableOwnedError) Error() string {
	owner := ""
	if e.OwnerPort != 0 {
		owner = fmt.Sprintf(" (netlink port %d, often the owner's PID)", e.OwnerPort)
	}
	return fmt.Sprintf("netcfg: nftables table %s is owned by another running Salvo gateway or other process%s; "+
		"each gateway on a host needs its own tun_name", e.Table, owner)
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
