package netcfg

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

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

// nftTableState is what the kernel reports about an existing table.
type nftTableState struct {
	exists    bool
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
			st.owned = ad.Uint32()&nftTableFlagOwner != 0
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
// is the cause and the others are consequences. send stops reading there:
// after a failure the caller must close the socket rather than reuse it, so
// that unread acknowledgements cannot be taken for answers to a later request.
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

func batchMarker(typ int) mnl.Message {
	return mnl.Message{
		Header: mnl.Header{Type: mnl.HeaderType(typ), Flags: mnl.Request},
		Data:   nfgenHeader(unix.AF_UNSPEC, unix.NFNL_SUBSYS_NFTABLES),
	}
}

// ownedTable is a table created with NFT_TABLE_F_OWNER over conn. It exists
// exactly as long as conn is open: nobody else can change or delete it, and
// when the process dies, however it dies, the kernel deletes it.
type ownedTable struct {
	family byte
	name   string
	label  string // for errors, e.g. "inet salvo_salvo0"

	mu   sync.Mutex
	conn *mnl.Conn // nil once released
}

// release deletes the table over the owning socket, then closes the socket.
// Closing alone would make the kernel delete the table too; the explicit
// delete is there so that a failure is seen and reported. Calling release
// again is a no-op.
func (t *ownedTable) release() error {
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
