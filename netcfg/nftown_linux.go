package netcfg

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/google/nftables/expr"
	mnl "github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Values from linux/netfilter/nf_tables.h that golang.org/x/sys/unix lacks.
const (
	// nftTableFlagOwner is NFT_TABLE_F_OWNER (Linux 5.12): only the netlink
	// socket that created the table may change or delete it, and the kernel
	// deletes it when that socket is closed. (0x1 is NFT_TABLE_F_DORMANT, a
	// table that exists but does nothing.)
	nftTableFlagOwner = 0x2
	// nftTableFlagPersist is NFT_TABLE_F_PERSIST (Linux 6.9), a companion of
	// the owner flag: when the owning socket closes, the kernel keeps the
	// table and only clears NFT_TABLE_F_OWNER, so anyone may then replace or
	// delete it.
	nftTableFlagPersist = 0x4
	// nftaTableOwner is NFTA_TABLE_OWNER: the netlink port ID of the owning
	// socket, reported for owned tables.
	nftaTableOwner = 7
)

// netfilter opens a NETLINK_NETFILTER socket in the pinned namespace. Like
// netlink(), it enters the namespace only when the calling thread is not
// already in it (see inCurrent).
func (r *nsRef) netfilter() (*mnl.Conn, error) {
	cfg := &mnl.Config{}
	if !r.inCurrent() {
		cfg.NetNS = int(r.ns)
	}
	c, err := mnl.Dial(unix.NETLINK_NETFILTER, cfg)
	if err != nil {
		return nil, fmt.Errorf("netcfg: netfilter netlink socket: %w", err)
	}
	// Lets the kernel explain a refused message in words, where it can.
	_ = c.SetOption(mnl.ExtendedAcknowledge, true)
	return c, nil
}

// netfilterHere opens a NETLINK_NETFILTER socket in the calling thread's network namespace. The socket
// belongs to that namespace for its whole life, so the namespace handle is closed at once.
func netfilterHere() (*mnl.Conn, error) {
	ref, err := currentNS()
	if err != nil {
		return nil, err
	}
	defer ref.close()
	return ref.netfilter()
}

// nftTableState is what the kernel reports about an existing table.
type nftTableState struct {
	exists    bool
	flags     uint32 // NFT_TABLE_F_*
	owned     bool   // NFT_TABLE_F_OWNER set
	ownerPort uint32 // netlink port ID of the owner, often its PID
}

func nftMsgType(msg int) mnl.HeaderType {
	return mnl.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | msg)
}

// nfgenHeader is the struct nfgenmsg that starts every nfnetlink message.
func nfgenHeader(family byte, resID uint16) []byte {
	return binary.BigEndian.AppendUint16([]byte{family, unix.NFNETLINK_V0}, resID)
}

// queryTable asks for one table by name. Reading a table is allowed for
// everyone, owned or not, so this is how a second gateway learns that a
// table it wants belongs to a live process.
func queryTable(c *mnl.Conn, family byte, name string) (nftTableState, error) {
	ae := mnl.NewAttributeEncoder()
	ae.String(unix.NFTA_TABLE_NAME, name)
	attrs, err := ae.Encode()
	if err != nil {
		return nftTableState{}, err
	}
	replies, err := c.Execute(mnl.Message{
		Header: mnl.Header{Type: nftMsgType(unix.NFT_MSG_GETTABLE), Flags: mnl.Request},
		Data:   append(nfgenHeader(family, 0), attrs...),
	})
	if errors.Is(err, unix.ENOENT) {
		return nftTableState{}, nil
	}
	if err != nil {
		return nftTableState{}, err
	}
	for _, m := range replies {
		if m.Header.Type == nftMsgType(unix.NFT_MSG_NEWTABLE) && len(m.Data) >= 4 {
			return parseTableState(m.Data[4:])
		}
	}
	return nftTableState{}, errors.New("kernel reply carries no table")
}

func parseTableState(attrs []byte) (nftTableState, error) {
	ad, err := mnl.NewAttributeDecoder(attrs)
	if err != nil {
		return nftTableState{}, err
	}
	ad.ByteOrder = binary.BigEndian
	st := nftTableState{exists: true}
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_TABLE_FLAGS:
			st.flags = ad.Uint32()
			st.owned = st.flags&nftTableFlagOwner != 0
		case nftaTableOwner:
			st.ownerPort = ad.Uint32()
		}
	}
	return st, ad.Err()
}

// nftBatch collects nftables messages that the kernel applies as one
// transaction: all of them or none.
type nftBatch struct {
	family byte
	msgs   []mnl.Message
	err    error // first encoding error
}

func (b *nftBatch) add(msg int, flags mnl.HeaderFlags, fill func(ae *mnl.AttributeEncoder)) {
	ae := mnl.NewAttributeEncoder()
	ae.ByteOrder = binary.BigEndian // nftables attributes are big-endian
	fill(ae)
	attrs, err := ae.Encode()
	if err != nil {
		b.err = errors.Join(b.err, err)
		return
	}
	b.msgs = append(b.msgs, mnl.Message{
		Header: mnl.Header{Type: nftMsgType(msg), Flags: mnl.Request | mnl.Acknowledge | flags},
		Data:   append(nfgenHeader(b.family, 0), attrs...),
	})
}

// newTable creates table name with the given NFT_TABLE_F_* flags; it fails
// with EEXIST if the table already exists.
func (b *nftBatch) newTable(name string, flags uint32) {
	b.add(unix.NFT_MSG_NEWTABLE, mnl.Create|mnl.Excl, func(ae *mnl.AttributeEncoder) {
		ae.String(unix.NFTA_TABLE_NAME, name)
		ae.Uint32(unix.NFTA_TABLE_FLAGS, flags)
	})
}

func (b *nftBatch) delTable(name string) {
	b.add(unix.NFT_MSG_DELTABLE, 0, func(ae *mnl.AttributeEncoder) {
		ae.String(unix.NFTA_TABLE_NAME, name)
	})
}

// newBaseChain creates a chain attached to a netfilter hook.
func (b *nftBatch) newBaseChain(table, chain, typ string, hook, prio uint32) {
	b.add(unix.NFT_MSG_NEWCHAIN, mnl.Create|mnl.Excl, func(ae *mnl.AttributeEncoder) {
		ae.String(unix.NFTA_CHAIN_TABLE, table)
		ae.String(unix.NFTA_CHAIN_NAME, chain)
		ae.Nested(unix.NFTA_CHAIN_HOOK, func(nae *mnl.AttributeEncoder) error {
			nae.Uint32(unix.NFTA_HOOK_HOOKNUM, hook)
			nae.Uint32(unix.NFTA_HOOK_PRIORITY, prio)
			return nil
		})
		ae.String(unix.NFTA_CHAIN_TYPE, typ)
	})
}

// appendRule appends a rule to chain; the expressions are marshalled by
// google/nftables, so only the message around them is built here.
func (b *nftBatch) appendRule(table, chain string, exprs []expr.Any) {
	b.add(unix.NFT_MSG_NEWRULE, mnl.Create|mnl.Append, func(ae *mnl.AttributeEncoder) {
		ae.String(unix.NFTA_RULE_TABLE, table)
		ae.String(unix.NFTA_RULE_CHAIN, chain)
		ae.Nested(unix.NFTA_RULE_EXPRESSIONS, func(nae *mnl.AttributeEncoder) error {
			for _, e := range exprs {
				data, err := expr.Marshal(b.family, e)
				if err != nil {
					return fmt.Errorf("marshal %T: %w", e, err)
				}
				nae.Bytes(mnl.Nested|unix.NFTA_LIST_ELEM, data)
			}
			return nil
		})
	})
}

// send wraps the messages in NFNL_MSG_BATCH_BEGIN/END, as nft and
// google/nftables do, and checks the kernel's answer to every message.
//
// The kernel processes the whole batch before it answers, then sends one
// acknowledgement per message in order (a commit failure comes first,
// addressed to BATCH_BEGIN). The batch is all-or-nothing, so the first error
// is the cause and the others are consequences. After a failure send drains
// the acknowledgements still queued, so that they cannot be taken for
// answers to a later request: a socket that owns a table must stay usable
// when one change fails, because closing it would drop the table.
func (b *nftBatch) send(c *mnl.Conn) error {
	if b.err != nil {
		return fmt.Errorf("encode messages: %w", b.err)
	}
	msgs := make([]mnl.Message, 0, len(b.msgs)+2)
	msgs = append(msgs, batchMarker(unix.NFNL_MSG_BATCH_BEGIN))
	msgs = append(msgs, b.msgs...)
	msgs = append(msgs, batchMarker(unix.NFNL_MSG_BATCH_END))
	if _, err := c.SendMessages(msgs); err != nil {
		return err
	}
	for acked := 0; acked < len(b.msgs); {
		replies, err := c.Receive()
		if err != nil {
			drain(c)
			return err
		}
		for _, m := range replies {
			if m.Header.Type == mnl.Error {
				acked++
			}
		}
	}
	return nil
}

// drainWait bounds how long drain waits for a message. The kernel queues all
// answers to a batch before sendmsg returns, so anything still to come is
// already there; the wait only has to outlast a scheduling hiccup.
const drainWait = 20 * time.Millisecond

// drain reads and discards whatever is queued on c. Receive reports an
// error acknowledgement as an error, so only a timeout means the queue is
// empty; the bound is there for a socket that fails every read.
func drain(c *mnl.Conn) {
	for range 1 << 12 {
		if err := c.SetReadDeadline(time.Now().Add(drainWait)); err != nil {
			return
		}
		if _, err := c.Receive(); errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
	}
	_ = c.SetReadDeadline(time.Time{})
}

func batchMarker(typ int) mnl.Message {
	return mnl.Message{
		Header: mnl.Header{Type: mnl.HeaderType(typ), Flags: mnl.Request},
		Data:   nfgenHeader(unix.AF_UNSPEC, unix.NFNL_SUBSYS_NFTABLES),
	}
}

// nftTable describes a whole table that Salvo builds in one batch: the NAT
// table of the gateway and the leak guard of the client are both built
// through it. Chains are created in order, each with its rules in order.
type nftTable struct {
	family byte
	name   string
	flags  uint32 // NFT_TABLE_F_*: owner (and persist) or none for a plain table
	chains []nftChain
	role   string // who holds such a table, for TableOwnedError: roleGateway or roleClient
}

// nftChain is a base chain (attached to a hook, policy accept) and its rules.
type nftChain struct {
	name  string
	typ   string // nftables.ChainType*
	hook  uint32
	prio  int32
	rules [][]expr.Any
}

func (t *nftTable) label() string {
	fam := "inet"
	switch t.family {
	case unix.NFPROTO_IPV4:
		fam = "ip"
	case unix.NFPROTO_IPV6:
		fam = "ip6"
	}
	return fam + " " + t.name
}

// replaceable looks the table up over c and reports whether one of that name
// exists and must be deleted in the batch that creates t. A table owned by a
// socket other than c belongs to another live process (or another part of
// this one) and cannot be replaced: that is a *TableOwnedError. One owned by
// c itself may be.
func (t *nftTable) replaceable(c *mnl.Conn) (exists bool, err error) {
	st, err := queryTable(c, t.family, t.name)
	if err != nil {
		return false, fmt.Errorf("netcfg: look up nftables table %s: %w", t.label(), err)
	}
	if st.owned {
		if port, perr := connPort(c); perr != nil || port != st.ownerPort {
			return false, &TableOwnedError{Table: t.label(), OwnerPort: st.ownerPort, Role: t.role}
		}
	}
	return st.exists, nil
}

// create sends, in one batch over c: deletion of the existing table if
// replace is set, then the table, its chains and rules. The kernel applies
// all of it or nothing, and swaps the rule sets in one generation change, so
// at no moment is neither the old nor the new table in effect.
func (t *nftTable) create(c *mnl.Conn, replace bool) error {
	b := &nftBatch{family: t.family}
	if replace {
		// Deleting in the same batch keeps the replacement atomic; had
		// another process made the table owned in the meantime, the delete
		// fails with EPERM and the whole batch with it.
		b.delTable(t.name)
	}
	b.newTable(t.name, t.flags)
	for _, ch := range t.chains {
		b.newBaseChain(t.name, ch.name, ch.typ, ch.hook, uint32(ch.prio))
		for _, r := range ch.rules {
			b.appendRule(t.name, ch.name, r)
		}
	}
	return b.send(c)
}

// connPort returns the netlink port ID the kernel bound c to: the ID it
// records as the owner of the tables c creates with NFT_TABLE_F_OWNER.
func connPort(c *mnl.Conn) (uint32, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var sa unix.Sockaddr
	var serr error
	if err := raw.Control(func(fd uintptr) { sa, serr = unix.Getsockname(int(fd)) }); err != nil {
		return 0, err
	}
	if serr != nil {
		return 0, serr
	}
	nl, ok := sa.(*unix.SockaddrNetlink)
	if !ok {
		return 0, fmt.Errorf("socket address %T is not netlink", sa)
	}
	return nl.Pid, nil
}

// Roles of the Salvo process that holds a table, for TableOwnedError.
const (
	roleGateway = "gateway"
	roleClient  = "client"
)

// TableOwnedError reports that an nftables table Salvo wants to create or
// remove exists and is owned by another live process: typically a second
// gateway was started with the tun_name of a running one, or a client's
// leak guard is to be lifted while that client runs.
type TableOwnedError struct {
	Table     string // family and name, e.g. "inet salvo_salvo0"
	OwnerPort uint32 // netlink port ID of the owning socket (often the owner's PID); 0 if not reported
	Role      string // "gateway" (also when empty) or "client": which Salvo process holds such a table
}

func (e *TableOwnedError) Error() string {
	owner := ""
	if e.OwnerPort != 0 {
		owner = fmt.Sprintf(" (netlink port %d, often the owner's PID)", e.OwnerPort)
	}
	if e.Role == roleClient {
		return fmt.Sprintf("netcfg: nftables table %s is owned by a running Salvo client or other process%s; "+
			"only that client can lift its leak guard: stop it first", e.Table, owner)
	}
	return fmt.Sprintf("netcfg: nftables table %s is owned by another running Salvo gateway or other process%s; "+
		"each gateway on a host needs its own tun_name", e.Table, owner)
}

// heldTable is a table Salvo created over conn and keeps conn open for.
// With NFT_TABLE_F_OWNER the table exists exactly as long as conn is open
// (unless it also has NFT_TABLE_F_PERSIST): nobody else can change or delete
// it, and when the process dies, however it dies, the kernel deletes it.
// Without the owner flag conn is only what release deletes it over.
type heldTable struct {
	family byte
	name   string
	label  string // for errors, e.g. "inet salvo_salvo0"
	flags  uint32 // as created

	mu   sync.Mutex
	conn *mnl.Conn // nil once released or handed on to a replacement
}

func newHeldTable(t *nftTable, conn *mnl.Conn) *heldTable {
	return &heldTable{family: t.family, name: t.name, label: t.label(), flags: t.flags, conn: conn}
}

// closeDeletes reports whether closing the socket makes the kernel delete
// the table: owned and not persistent.
func (t *heldTable) closeDeletes() bool {
	return t.flags&nftTableFlagOwner != 0 && t.flags&nftTableFlagPersist == 0
}

// released reports whether release (or a successor, see replaceGuard)
// took the socket.
func (t *heldTable) released() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.conn == nil
}

// release deletes the table over its socket, then closes the socket.
// Closing alone would make the kernel delete an owned table too; the
// explicit delete is there so that a failure is seen and reported. If the
// delete fails and closing would not remove the table (plain or persistent),
// the socket is kept so that release can be retried. Calling release after
// it succeeded is a no-op.
func (t *heldTable) release() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.conn == nil {
		return nil
	}
	b := &nftBatch{family: t.family}
	b.delTable(t.name)
	derr := b.send(t.conn)
	if errors.Is(derr, unix.ENOENT) {
		derr = nil
	}
	if derr != nil && !t.closeDeletes() {
		return fmt.Errorf("netcfg: delete nftables table %s: %w", t.label, derr)
	}
	cerr := t.conn.Close()
	t.conn = nil
	if derr != nil {
		derr = fmt.Errorf("netcfg: delete nftables table %s over its owning socket (closing the socket drops it anyway): %w", t.label, derr)
	}
	if cerr != nil {
		cerr = fmt.Errorf("netcfg: close the netlink socket owning nftables table %s: %w", t.label, cerr)
	}
	return errors.Join(derr, cerr)
}
