package netcfg

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	mnl "github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

func guardTableName(dev string) string { return "salvo_guard_" + dev }

// guardBridgeSuffix names the table that guards while the guard is replaced (createGuard).
const guardBridgeSuffix = "_swap"

const guardChain = "output"

// guardPriority makes the guard the last output chain to see a packet. A
// chain of type route (mangle) that changes a packet's mark or a NAT chain
// that changes its destination makes the kernel route it again, so only a
// chain after all of them sees the device and mark the packet really leaves
// with. The order against other filter chains does not matter: their accept
// only ends their own chain, and a drop anywhere is final.
const guardPriority = math.MaxInt32

// ErrNoLeakGuard is wrapped by LeakGuardDrops when no guard of that name is
// installed.
var ErrNoLeakGuard = errors.New("no leak guard installed")

// ApplyLeakGuard installs the leak guard g describes: table inet
// "salvo_guard_<Dev>" with one chain on the output hook (policy accept,
// after every other output chain: see guardPriority) whose rules, in order,
// accept
//
//	oifname "lo"                       local traffic
//	oifname Dev                        the tunnel
//	meta mark FwMark                   the client's own encrypted UDP
//	udp sport 68 dport 67 (IPv4)       DHCP client to server
//	udp sport 546 dport 547 (IPv6)     DHCPv6 client to server
//	icmpv6 type 133, 135, 136, 143     router solicitation, neighbor
//	                                   solicitation and advertisement, MLDv2
//	                                   reports: what keeps the link up
//	ip/ip6 daddr AllowLAN              what the user allowed on the LAN,
//	                                   except DNS (tcp/udp dport 53, 853)
//	                                   unless LANDNS
//
// and then count and refuse everything else, so that applications fail
// fast instead of timing out: TCP with a reset handed back to the socket
// (connect fails with ECONNREFUSED; a dropped SYN would only be retried for
// minutes), the rest with a drop, which makes sendmsg fail with EPERM.
// Connections already open over the LAN when the guard goes up are cut the
// same way at their next packet (there is deliberately no "ct state
// established accept").
//
// The guard covers traffic this host originates. Forwarded traffic
// (containers, VMs or a hotspot behind this host) passes the forward hook,
// not the output hook, and is not filtered: the client protects its host,
// and no forward chain is needed for that. ARP is not IP and is not
// filtered either; packet sockets (AF_PACKET, used by DHCP clients for their
// first messages) bypass netfilter altogether.
//
// The table is owned (NFT_TABLE_F_OWNER) by a netlink socket that stays open
// until undo: while the client runs, nobody else can change or delete the
// guard, and `nft flush ruleset` (a firewall reload) leaves it in place.
// Without Persist the kernel deletes it when the process dies. With Persist
// it also carries NFT_TABLE_F_PERSIST (Linux 6.9): when the process dies the
// kernel keeps the table and only drops the ownership, so non-tunnel traffic
// stays blocked until a restarted client takes the guard over or
// RemoveLeakGuard lifts it. On older kernels a persistent guard is a plain
// table, which survives the process too but not a flush of the ruleset.
//
// An existing guard of that name is replaced in one nftables transaction,
// with a bridge table holding the new rules in force around it (no moment
// without a guard; see createGuard): one left by a crashed client (persistent or
// plain), or one this process installed earlier (re-applying, e.g. with new
// AllowLAN, is how the guard is changed; the earlier undo then does
// nothing). One owned by another live process is not touched: the error is
// a *TableOwnedError.
//
// Undo deletes the table over the owning socket and closes it; calling it
// again is a no-op.
func ApplyLeakGuard(g LeakGuard) (undo func() error, err error) {
	if err := g.validate(); err != nil {
		return nil, err
	}
	id, err := netnsID()
	if err != nil {
		return nil, err
	}
	key := guardKey{netns: id, table: guardTableName(g.Dev)}
	liveGuards.mu.Lock()
	defer liveGuards.mu.Unlock()
	var held *heldTable
	if prev := liveGuards.m[key]; prev != nil {
		held, err = replaceGuard(prev, g)
	} else {
		held, err = installGuard(g)
	}
	if err != nil {
		return nil, err
	}
	liveGuards.m[key] = held
	return func() error { return releaseGuard(key, held) }, nil
}

func (g LeakGuard) validate() error {
	if g.Dev == "" || len(g.Dev) >= ifNameSize {
		return fmt.Errorf("netcfg: leak guard: invalid tunnel device name %q", g.Dev)
	}
	if g.FwMark == 0 {
		return fmt.Errorf("netcfg: leak guard for %s: fwmark must be non-zero (mark 0 is every unmarked packet)", g.Dev)
	}
	for _, p := range g.AllowLAN {
		if !p.IsValid() {
			return fmt.Errorf("netcfg: leak guard for %s: invalid AllowLAN prefix %v", g.Dev, p)
		}
		if normPrefix(p).Bits() == 0 {
			return fmt.Errorf("netcfg: leak guard for %s: AllowLAN prefix %v allows every %s destination, "+
				"which switches the guard off", g.Dev, p, famName(family(normPrefix(p))))
		}
	}
	return nil
}

// guardKey names a guard this process holds: the network namespace (its
// inode; it cannot be reused while the guard's socket keeps the namespace
// alive) and the table.
type guardKey struct {
	netns uint64
	table string
}

// liveGuards are the guards this process holds, so that re-applying one
// goes over the socket that owns it: the kernel lets no other socket, even
// one of the same process, replace an owned table.
var liveGuards = struct {
	mu sync.Mutex
	m  map[guardKey]*heldTable
}{m: make(map[guardKey]*heldTable)}

// persistUnsupported is set once the kernel refused NFT_TABLE_F_PERSIST, so
// that later guards go straight to a plain table.
var persistUnsupported atomic.Bool

// installGuard creates the guard over a new socket.
func installGuard(g LeakGuard) (*heldTable, error) {
	c, err := netfilterHere()
	if err != nil {
		return nil, err
	}
	t := guardTable(g)
	if err := createGuard(c, t); err != nil {
		_ = c.Close()
		return nil, err
	}
	return newHeldTable(t, c), nil
}

// replaceGuard replaces a guard this process holds over its socket, which
// then passes to the new guard. If that fails, prev stays in force.
func replaceGuard(prev *heldTable, g LeakGuard) (*heldTable, error) {
	prev.mu.Lock()
	defer prev.mu.Unlock()
	if prev.conn == nil { // a failed undo closed it; the table went with it
		return installGuard(g)
	}
	t := guardTable(g)
	if err := createGuard(prev.conn, t); err != nil {
		return nil, err
	}
	held := newHeldTable(t, prev.conn)
	prev.conn = nil
	return held, nil
}

// createGuard creates t over c, replacing a guard of the same name unless
// another socket owns it. A kernel without persistent owned tables gets a
// plain one instead.
//
// A replacement deletes the old table and creates the new one in one
// transaction, and yet a packet sent in the middle of it can leave
// (TestLeakGuardReapplyNoWindow: about one replacement in 30 let one
// datagram of a flood out on Linux 6.18, while the old base chain's hook
// goes and the new one's comes). So a bridge table with the new rules is
// put in force first, in a transaction of its own, and deleted once the
// replacement is in: at every moment one of them drops. The bridge is owned
// by c and not persistent, so a crash in between takes it away.
func createGuard(c *mnl.Conn, t *nftTable) error {
	replace, err := t.replaceable(c)
	if err != nil {
		return err
	}
	if replace {
		bridge := *t
		bridge.name, bridge.flags = t.name+guardBridgeSuffix, nftTableFlagOwner
		stale, err := bridge.replaceable(c)
		if err != nil {
			return err
		}
		if err := bridge.create(c, stale); err != nil {
			return fmt.Errorf("netcfg: install leak guard bridge table %s: %w", bridge.label(), err)
		}
		defer func() {
			b := &nftBatch{family: bridge.family}
			b.delTable(bridge.name)
			_ = b.send(c) // if this fails, the bridge goes with c's socket
		}()
	}
	err = t.create(c, replace)
	if errors.Is(err, unix.EOPNOTSUPP) && t.flags&nftTableFlagPersist != 0 {
		persistUnsupported.Store(true)
		t.flags = 0
		err = t.create(c, replace)
	}
	if err != nil {
		if errors.Is(err, unix.EOPNOTSUPP) {
			err = fmt.Errorf("%w (owned tables need Linux 5.12 or later)", err)
		}
		return fmt.Errorf("netcfg: install leak guard table %s: %w", t.label(), err)
	}
	return nil
}

// releaseGuard is the undo of a guard: a no-op once it was released or
// replaced.
func releaseGuard(key guardKey, held *heldTable) error {
	liveGuards.mu.Lock()
	defer liveGuards.mu.Unlock()
	err := held.release()
	if held.released() && liveGuards.m[key] == held {
		delete(liveGuards.m, key)
	}
	return err
}

// guardTable describes the guard's table: see ApplyLeakGuard.
func guardTable(g LeakGuard) *nftTable {
	flags := uint32(nftTableFlagOwner)
	if g.Persist {
		flags |= nftTableFlagPersist
		if persistUnsupported.Load() {
			flags = 0
		}
	}
	return &nftTable{
		family: byte(nftables.TableFamilyINet),
		name:   guardTableName(g.Dev),
		flags:  flags,
		chains: []nftChain{{
			name:  guardChain,
			typ:   string(nftables.ChainTypeFilter),
			hook:  uint32(*nftables.ChainHookOutput),
			prio:  guardPriority,
			rules: guardRules(g),
		}},
		role: roleClient,
	}
}

// ICMPv6 types a host must send to keep its link up (RFC 4861, RFC 3810).
const (
	icmp6RouterSolicit   = 133
	icmp6NeighborSolicit = 135
	icmp6NeighborAdvert  = 136
	icmp6MLDv2Report     = 143
)

func guardRules(g LeakGuard) [][]expr.Any {
	// Every locally sent packet runs this chain, so the tunnel's own packets (into the TUN, then its
	// marked UDP) are accepted first, at one comparison each; loopback comes after them.
	rules := [][]expr.Any{
		oifAccept(g.Dev),
		markAccept(g.FwMark),
		oifAccept("lo"),
		// DHCP renewals go over UDP sockets, unicast to the server; without
		// them the lease runs out and the link goes down.
		udpPortsAccept(unix.NFPROTO_IPV4, 68, 67),
		udpPortsAccept(unix.NFPROTO_IPV6, 546, 547),
	}
	for _, typ := range []byte{icmp6RouterSolicit, icmp6NeighborSolicit, icmp6NeighborAdvert, icmp6MLDv2Report} {
		rules = append(rules, icmpv6TypeAccept(typ))
	}
	if len(g.AllowLAN) > 0 && !g.LANDNS {
		for _, port := range []uint16{53, 853} {
			rules = append(rules,
				append(dportMatch(unix.IPPROTO_TCP, port), refuse(unix.IPPROTO_TCP)...),
				append(dportMatch(unix.IPPROTO_UDP, port), refuse(unix.IPPROTO_UDP)...))
		}
	}
	for _, p := range g.AllowLAN {
		rules = append(rules, append(prefixMatch(normPrefix(p), true), accept()))
	}
	tcp := append([]expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
	}, refuse(unix.IPPROTO_TCP)...)
	return append(rules, tcp, refuse(0))
}

// refuse counts a packet and refuses it. A dropped SYN does not fail
// connect(): TCP ignores the error and retransmits until it gives up,
// minutes later, so TCP (proto) gets a reset handed back to the socket,
// which fails it at once. Anything else is dropped, which fails sendmsg with
// EPERM.
func refuse(proto byte) []expr.Any {
	if proto == unix.IPPROTO_TCP {
		return []expr.Any{&expr.Counter{}, &expr.Reject{Type: unix.NFT_REJECT_TCP_RST}}
	}
	return []expr.Any{&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop}}
}

// dportMatch builds: meta l4proto <proto> th dport <port>.
func dportMatch(proto byte, port uint16) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.BigEndian.AppendUint16(nil, port)},
	}
}

func accept() expr.Any { return &expr.Verdict{Kind: expr.VerdictAccept} }

// oifAccept builds: oifname <name> accept.
func oifAccept(name string) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(name)},
		accept(),
	}
}

// markAccept builds: meta mark <mark> accept. The kernel keeps the mark in
// host byte order.
func markAccept(mark uint32) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.NativeEndian.AppendUint32(nil, mark)},
		accept(),
	}
}

// l4Match builds: meta nfproto <nfproto> meta l4proto <proto>. l4proto is
// the protocol after any extension headers (MLD reports carry a hop-by-hop
// header), and makes the transport header offset valid.
func l4Match(nfproto, proto byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{nfproto}},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
	}
}

// udpPortsAccept builds: meta nfproto <fam> udp sport <sport> udp dport
// <dport> accept.
func udpPortsAccept(nfproto byte, sport, dport uint16) []expr.Any {
	return append(l4Match(nfproto, unix.IPPROTO_UDP),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.BigEndian.AppendUint16(nil, sport)},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.BigEndian.AppendUint16(nil, dport)},
		accept(),
	)
}

// icmpv6TypeAccept builds: icmpv6 type <typ> accept.
func icmpv6TypeAccept(typ byte) []expr.Any {
	return append(l4Match(unix.NFPROTO_IPV6, unix.IPPROTO_ICMPV6),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{typ}},
		accept(),
	)
}

// RemoveLeakGuard lifts the guard a client with tunnel device dev left
// behind (`salvo client --down` after a crash, with Persist). A missing
// guard is not an error. A guard still owned by a live process is not
// touched: the error is a *TableOwnedError saying that a client is running.
func RemoveLeakGuard(dev string) error {
	c, t, err := openGuard(dev)
	if err != nil {
		return err
	}
	defer c.Close()
	exists, err := t.replaceable(c)
	if err != nil || !exists {
		return err
	}
	b := &nftBatch{family: t.family}
	b.delTable(t.name)
	err = b.send(c)
	switch {
	case err == nil, errors.Is(err, unix.ENOENT):
		return nil
	case errors.Is(err, unix.EPERM):
		// A client took the guard over between the look-up and the delete.
		if _, oerr := t.replaceable(c); oerr != nil {
			return oerr
		}
	}
	return fmt.Errorf("netcfg: remove leak guard table %s: %w", t.label(), err)
}

// LeakGuardInstalled reports whether a guard for tunnel device dev exists,
// owned or not.
func LeakGuardInstalled(dev string) (bool, error) {
	c, t, err := openGuard(dev)
	if err != nil {
		return false, err
	}
	defer c.Close()
	st, err := queryTable(c, t.family, t.name)
	if err != nil {
		return false, fmt.Errorf("netcfg: look up nftables table %s: %w", t.label(), err)
	}
	return st.exists, nil
}

// LeakGuardDrops reads the guard's counters: how many packets it stopped
// from leaving outside the tunnel (dropped, or TCP refused) since it was
// last applied. Without
// a guard the error wraps ErrNoLeakGuard.
func LeakGuardDrops(dev string) (packets uint64, err error) {
	c, t, err := openGuard(dev)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	st, err := queryTable(c, t.family, t.name)
	if err != nil {
		return 0, fmt.Errorf("netcfg: look up nftables table %s: %w", t.label(), err)
	}
	if !st.exists {
		return 0, fmt.Errorf("netcfg: leak guard for %s: %w", dev, ErrNoLeakGuard)
	}
	packets, err = chainPackets(c, t.family, t.name, guardChain)
	if err != nil {
		return 0, fmt.Errorf("netcfg: read counters of nftables table %s chain %s: %w", t.label(), guardChain, err)
	}
	return packets, nil
}

// openGuard opens a netfilter socket in the current namespace and names the
// guard table of dev, for the functions that only look at it or remove it.
func openGuard(dev string) (*mnl.Conn, *nftTable, error) {
	if dev == "" || len(dev) >= ifNameSize {
		return nil, nil, fmt.Errorf("netcfg: leak guard: invalid tunnel device name %q", dev)
	}
	c, err := netfilterHere()
	if err != nil {
		return nil, nil, err
	}
	return c, &nftTable{family: byte(nftables.TableFamilyINet), name: guardTableName(dev), role: roleClient}, nil
}

// chainPackets sums the packet counts of the counter expressions in the
// rules of one chain.
func chainPackets(c *mnl.Conn, family byte, table, chain string) (uint64, error) {
	ae := mnl.NewAttributeEncoder()
	ae.String(unix.NFTA_RULE_TABLE, table)
	ae.String(unix.NFTA_RULE_CHAIN, chain)
	attrs, err := ae.Encode()
	if err != nil {
		return 0, err
	}
	replies, err := c.Execute(mnl.Message{
		Header: mnl.Header{Type: nftMsgType(unix.NFT_MSG_GETRULE), Flags: mnl.Request | mnl.Dump},
		Data:   append(nfgenHeader(family, 0), attrs...),
	})
	if err != nil {
		return 0, err
	}
	var total uint64
	for _, m := range replies {
		if m.Header.Type != nftMsgType(unix.NFT_MSG_NEWRULE) || len(m.Data) < 4 {
			continue
		}
		n, err := rulePackets(m.Data[4:])
		if err != nil {
			return 0, err
		}
		total += n
	}
	return total, nil
}

// rulePackets decodes a rule's NFTA_RULE_EXPRESSIONS and sums the
// NFTA_COUNTER_PACKETS of its counters.
func rulePackets(attrs []byte) (uint64, error) {
	ad, err := mnl.NewAttributeDecoder(attrs)
	if err != nil {
		return 0, err
	}
	ad.ByteOrder = binary.BigEndian
	var total uint64
	for ad.Next() {
		if ad.Type() != unix.NFTA_RULE_EXPRESSIONS {
			continue
		}
		ad.Nested(func(list *mnl.AttributeDecoder) error {
			for list.Next() {
				list.Nested(func(e *mnl.AttributeDecoder) error {
					n, err := counterPackets(e)
					total += n
					return err
				})
			}
			return nil
		})
	}
	return total, ad.Err()
}

// counterPackets reads one expression: its packet count if it is a counter,
// else 0. The kernel sends the name before the data, and only a counter's
// data is decoded (other expressions use the same attribute numbers for
// values of other sizes).
func counterPackets(e *mnl.AttributeDecoder) (uint64, error) {
	var name string
	var packets uint64
	for e.Next() {
		switch e.Type() {
		case unix.NFTA_EXPR_NAME:
			name = e.String()
		case unix.NFTA_EXPR_DATA:
			if name != "counter" {
				continue
			}
			e.Nested(func(d *mnl.AttributeDecoder) error {
				for d.Next() {
					if d.Type() == unix.NFTA_COUNTER_PACKETS {
						packets = d.Uint64()
					}
				}
				return nil
			})
		}
	}
	return packets, e.Err()
}
