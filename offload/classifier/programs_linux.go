package classifier

import (
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/salvovpn/salvo/protocol"
)

// The programs are socket-filter type (BPF_PROG_TYPE_SOCKET_FILTER): that type has no direct packet
// access, so bytes are copied to the stack with bpf_skb_load_bytes, which fails cleanly (instead of ending
// the program like LD_ABS does) when the packet is shorter than asked for.

// offLen is the offset of __sk_buff.len, the only context field the programs read.
const offLen = 0

// License of the programs as the kernel sees it (the source is MIT, see LICENSE); none of the helpers used
// is GPL-only.
const progLicense = "Dual MIT/GPL"

// passAll is the socket-filter verdict "keep the whole datagram": sk_filter_trim_cap trims to the return
// value, and anything >= the datagram length keeps it untouched. It is also the reuseport selector's
// "no choice" value (see reuseportInsns).
const passAll = -1 // as a 32-bit move: 0xffffffff

// reuseportInsns returns the reuseport selector. It is a socket-filter program attached with
// SO_ATTACH_REUSEPORT_EBPF rather than an SK_REUSEPORT program with a REUSEPORT_SOCKARRAY, because:
//   - its return value can only ever select a socket: the kernel (net/core/sock_reuseport.c run_bpf_filter)
//     treats an index >= the group's socket count as "no choice" and falls back to the 4-tuple hash, so
//     this program cannot cause a drop (an SK_REUSEPORT program returning SK_DROP makes UDP answer ICMP
//     port unreachable);
//   - one program serves every reuseport group (IPv4 and IPv6 listen addresses) with no socket-fd map to
//     keep in sync with the workers' sockets.
//
// The price is that indexes are positions in bind order; closing one socket of a group reorders the rest,
// which only matters if the gateway closes sockets one by one while running (it does not).
//
// The hook pulls the UDP header before running the program, so the payload starts at offset 0 and
// __sk_buff.len is the payload length.
//
// Verdicts: data/disconnect (8 bytes or more) -> receiver index % sockets; with handshake, any datagram
// whose first byte is clientAuthRequest -> sockets, the handshake socket, which is the last of the group;
// everything else -> passAll, the kernel's hash over the whole group.
func reuseportInsns(sockets int, handshake bool) asm.Instructions {
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R7, asm.R6, offLen, asm.Word),
		asm.JEq.Imm(asm.R7, 0, "hash"),
		// Copy min(len, 8) bytes to fp-8 (zeroed first): a 1-byte datagram still has a code.
		asm.Mov.Imm(asm.R4, 0),
		asm.StoreMem(asm.RFP, -8, asm.R4, asm.DWord),
		asm.Mov.Reg(asm.R4, asm.R7),
		asm.JLE.Imm(asm.R4, 8, "load"),
		asm.Mov.Imm(asm.R4, 8),
		asm.Mov.Reg(asm.R1, asm.R6).WithSymbol("load"),
		asm.Mov.Imm(asm.R2, 0),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, -8),
		asm.FnSkbLoadBytes.Call(),
		asm.JNE.Imm(asm.R0, 0, "hash"),
		asm.LoadMem(asm.R1, asm.RFP, -8, asm.Byte),
	}
	if handshake {
		insns = append(insns, asm.JEq.Imm(asm.R1, int32(protocol.CodeClientAuthRequest), "handshake"))
	}
	insns = append(insns,
		// data/disconnect need 8 bytes (code, reserved, receiver index); shorter is for the kernel's hash.
		asm.JLT.Imm(asm.R7, 8, "hash"),
		asm.JEq.Imm(asm.R1, int32(protocol.CodeData), "select"),
		asm.JEq.Imm(asm.R1, int32(protocol.CodeDisconnect), "select"),
		// Other handshake codes and junk: an out-of-range index means "use the hash". Handshakes must
		// still reach a socket, and junk is the early-drop filter's business, not a reason to drop here.
		asm.Mov.Imm32(asm.R0, passAll).WithSymbol("hash"),
		asm.Return(),
		// The receiver index is little endian on the wire; HostTo(LE) makes it a host integer on either
		// byte order (a no-op on little-endian machines).
		asm.LoadMem(asm.R0, asm.RFP, -4, asm.Word).WithSymbol("select"),
		asm.HostTo(asm.LE, asm.R0, asm.Word),
		asm.Mod.Imm32(asm.R0, int32(sockets)),
		asm.Return(),
	)
	if handshake {
		insns = append(insns,
			asm.Mov.Imm32(asm.R0, int32(sockets)).WithSymbol("handshake"),
			asm.Return(),
		)
	}
	return insns
}

// limit is the per-source login limit compiled into the early-drop filter, as a GCRA (the "virtual
// scheduling" form of a token bucket): each source's map value is its theoretical arrival time tat, in
// bpf_ktime_get_ns nanoseconds. A request costing n tokens at time now is admitted iff
//
//	max(tat, now) + n*interval - now <= burst*interval,
//
// and then tat = max(tat, now) + n*interval; a refused request changes nothing. That is exactly a bucket of
// burst tokens refilled every interval ns, with one u64 per source and no division in the program.
type limit struct {
	interval uint64 // ns per token: 1e9 / rate
	burst    uint64 // tokens, <= 1e9
	burstNs  uint64 // burst * interval, <= 2^62
}

// Source map key: {u32 family (familyV4/familyV6, host order); u8 addr[8]}. IPv4 puts its address in the
// last four bytes after four zeros, IPv6 its /64 prefix in all eight; the family keeps them apart.
const sourceKeyLen = 4 + 8

// offGsoSize is the offset of __sk_buff.gso_size: for a UDP GRO train the payload size of its datagrams
// (the last may be shorter), which is what user space splits it by (the UDP_GRO control message); 0 for
// a single datagram. The train's datagram count is not taken from gso_segs, which the kernel leaves 0 on
// GSO packets from untrusted sources (SKB_GSO_DODGY: tun, virtio) until something recomputes it.
const offGsoSize = 176

// bpfHdrStartNet is BPF_HDR_START_NET for bpf_skb_load_bytes_relative: offsets count from the network
// (IP) header.
const bpfHdrStartNet = 1

// earlyDropInsns returns the early-drop socket filter (SO_ATTACH_BPF on every socket of a group). The
// kernel runs it on the chosen socket with skb->data at the UDP header, so the payload starts at
// udpHeaderLen and __sk_buff.len includes the 8 header bytes. It returns 0 (drop, counted by the kernel in
// Udp InErrors and the socket's drop counter, no ICMP) or passAll.
//
// Check order follows PROTOCOL.md and protocol.ParseCode: empty, code, minimum length, then for
// data/disconnect the reserved bytes and the live-session map, and for clientAuthRequest (with limits,
// the source map) the source's token bucket.
//
// The source address is in the IP header, in front of skb->data, where bpf_skb_load_bytes cannot reach
// (it takes offsets from skb->data and refuses negative ones). bpf_skb_load_bytes_relative with
// BPF_HDR_START_NET, which socket filters may call, reads from skb's network header instead: one call
// copies the first 16 bytes of the IP header, which hold the version nibble (byte 0), the IPv4 source
// (bytes 12..15) and the first half of the IPv6 source (bytes 8..15). The source is at a fixed offset
// whatever the IPv4 options or IPv6 extension headers. The version nibble, not the socket's family,
// decides: a dual-stack IPv6 socket receives IPv4 packets with IPv4 headers. A packet with no readable
// IP header, or neither version 4 nor 6 (which UDP never delivers), is not limited.
//
// Two kernel side effects worth knowing: with any filter attached, UDP completes a checksum that the NIC
// did not verify before running it (udp_lib_checksum_complete), and with UDP_GRO a coalesced train is
// judged, and dropped or kept, as a whole by its first datagram's header. For the login limit a train
// costs one token per datagram (payload / gso_size, rounded up), so coalescing cannot multiply a
// source's rate.
func earlyDropInsns(sessions, counters, sources *ebpf.Map, sample time.Duration, lim limit) asm.Instructions {
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R7, asm.R6, offLen, asm.Word),
		asm.JLE.Imm(asm.R7, udpHeaderLen, "short"), // empty datagram
		asm.Sub.Imm(asm.R7, udpHeaderLen),          // r7 = payload length, >= 1
		// Copy min(payload, 8) bytes to fp-8 so that short packets can still be classified by code;
		// zero the slot first so bytes beyond a short payload read as 0.
		asm.Mov.Imm(asm.R4, 0),
		asm.StoreMem(asm.RFP, -8, asm.R4, asm.DWord),
		asm.Mov.Reg(asm.R4, asm.R7),
		asm.JLE.Imm(asm.R4, 8, "load"),
		asm.Mov.Imm(asm.R4, 8),
		asm.Mov.Reg(asm.R1, asm.R6).WithSymbol("load"),
		asm.Mov.Imm(asm.R2, udpHeaderLen),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, -8),
		asm.FnSkbLoadBytes.Call(),
		asm.JNE.Imm(asm.R0, 0, "short"),
		asm.LoadMem(asm.R1, asm.RFP, -8, asm.Byte),
		asm.JEq.Imm(asm.R1, int32(protocol.CodeData), "data"),
		asm.JEq.Imm(asm.R1, int32(protocol.CodeDisconnect), "data"),
	}
	// The other valid codes only have a minimum length; a code matching none of them is bad. A login
	// request of the right length goes on to the source limit, when there is one.
	codes := []protocol.Code{
		protocol.CodeClientAuthRequest, protocol.CodeServerAuthResponse,
		protocol.CodeCookieReply, protocol.CodeNotice,
	}
	for i, c := range codes {
		next := "badcode"
		if i+1 < len(codes) {
			next = "code-" + codes[i+1].String()
		}
		ok := "pass"
		if c == protocol.CodeClientAuthRequest && sources != nil {
			ok = "login"
		}
		insns = append(insns,
			asm.JNE.Imm(asm.R1, int32(c), next).WithSymbol("code-"+c.String()),
			asm.JLT.Imm(asm.R7, int32(minLen[c]), "short"),
			asm.Ja.Label(ok),
		)
	}
	insns = append(insns,
		// data/disconnect: length, reserved bytes 1..3 (read byte by byte: endian-neutral), session.
		asm.JLT.Imm(asm.R7, int32(protocol.MinDataLen), "short").WithSymbol("data"),
		asm.LoadMem(asm.R1, asm.RFP, -7, asm.Byte),
		asm.LoadMem(asm.R2, asm.RFP, -6, asm.Byte),
		asm.Or.Reg(asm.R1, asm.R2),
		asm.LoadMem(asm.R2, asm.RFP, -5, asm.Byte),
		asm.Or.Reg(asm.R1, asm.R2),
		asm.JNE.Imm(asm.R1, 0, "badcode"),
		// The map key is the 4 index bytes exactly as on the wire (AddSession stores them little endian).
		asm.LoadMapPtr(asm.R1, 0).WithReference("sessions"),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "unknown"),

		asm.Mov.Imm32(asm.R0, passAll).WithSymbol("pass"),
		asm.Return(),

		asm.Mov.Imm(asm.R8, reasonBadCode).WithSymbol("badcode"),
		asm.Ja.Label("count"),
		asm.Mov.Imm(asm.R8, reasonShort).WithSymbol("short"),
		asm.Ja.Label("count"),
	)
	if sources != nil {
		insns = append(insns, loginLimitInsns(lim)...)
	}
	if sample > 0 {
		// Sampling gate for unknown sessions (see Config.UnknownSample): if this CPU let none through in
		// the last interval, record now and pass this one.
		insns = append(insns,
			asm.Mov.Imm(asm.R1, gateSlot).WithSymbol("unknown"),
			asm.StoreMem(asm.RFP, -12, asm.R1, asm.Word),
			asm.LoadMapPtr(asm.R1, 0).WithReference("counters"),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, -12),
			asm.FnMapLookupElem.Call(),
			asm.JEq.Imm(asm.R0, 0, "unknown-drop"),
			asm.Mov.Reg(asm.R9, asm.R0), // helpers clobber r0..r5; r9 survives
			asm.FnKtimeGetNs.Call(),
			asm.LoadMem(asm.R1, asm.R9, 0, asm.DWord),
			asm.Mov.Reg(asm.R2, asm.R0),
			asm.Sub.Reg(asm.R2, asm.R1),
			asm.JLT.Imm(asm.R2, int32(sample.Nanoseconds()), "unknown-drop"),
			asm.StoreMem(asm.R9, 0, asm.R0, asm.DWord),
			asm.Mov.Imm32(asm.R0, passAll),
			asm.Return(),
			asm.Mov.Imm(asm.R8, reasonUnknownSession).WithSymbol("unknown-drop"),
		)
	} else {
		insns = append(insns, asm.Mov.Imm(asm.R8, reasonUnknownSession).WithSymbol("unknown"))
	}
	insns = append(insns,

		// counters[r8]++ in this CPU's slot. The filter runs with bottom halves disabled and does not
		// nest on one CPU, so a plain read-modify-write of a per-CPU value needs no atomic.
		asm.StoreMem(asm.RFP, -12, asm.R8, asm.Word).WithSymbol("count"),
		asm.LoadMapPtr(asm.R1, 0).WithReference("counters"),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -12),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "drop"),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
		asm.Add.Imm(asm.R1, 1),
		asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("drop"),
		asm.Return(),
	)
	mustAssociate(insns, "sessions", sessions)
	mustAssociate(insns, "counters", counters)
	if sources != nil {
		mustAssociate(insns, "sources", sources)
	}
	return insns
}

// loginLimitInsns is the "login" block of the early-drop filter (see limit): entered with r6 = ctx and a
// login request of valid length, it ends at "pass" or, with r8 = reasonRateLimited, at "count".
//
// The shared source map is read and written without a lock or atomics: two CPUs judging one source at
// once may both admit on the same token, and the later store wins. Either way tat only ever lags behind,
// so a race over-admits slightly and never refuses a request the bucket would have allowed.
func loginLimitInsns(lim limit) asm.Instructions {
	return asm.Instructions{
		// r8 = datagrams: 1, or for a GRO train ceil(payload / gso_size) (r7 is the payload length).
		asm.Mov.Imm(asm.R8, 1).WithSymbol("login"),
		asm.LoadMem(asm.R1, asm.R6, offGsoSize, asm.Word),
		asm.JEq.Imm(asm.R1, 0, "login-cost"),
		asm.Mov.Reg(asm.R8, asm.R7),
		asm.Add.Reg(asm.R8, asm.R1),
		asm.Sub.Imm(asm.R8, 1),
		asm.Div.Reg(asm.R8, asm.R1),
		// A train bigger than the whole bucket never fits; checking the count first also keeps the
		// cost below burstNs <= 2^62, far from overflowing.
		asm.JGT.Imm(asm.R8, int32(lim.burst), "ratelimited").WithSymbol("login-cost"),
		// r8 = cost in ns.
		asm.LoadImm(asm.R1, int64(lim.interval), asm.DWord),
		asm.Mul.Reg(asm.R8, asm.R1),

		// IP header bytes 0..15 to fp-16..fp-1 (see earlyDropInsns). The key is built in place at
		// fp-12: family at fp-12 (over header bytes 4..7), address at fp-8 (header bytes 8..15: the
		// IPv6 /64 as it is; for IPv4 ttl, protocol and checksum zeroed, leaving the source at fp-4).
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Imm(asm.R2, 0),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, -16),
		asm.Mov.Imm(asm.R4, 16),
		asm.Mov.Imm(asm.R5, bpfHdrStartNet),
		asm.FnSkbLoadBytesRelative.Call(),
		asm.JNE.Imm(asm.R0, 0, "pass"),
		asm.LoadMem(asm.R1, asm.RFP, -16, asm.Byte),
		asm.RSh.Imm(asm.R1, 4),
		asm.JEq.Imm(asm.R1, 4, "login-v4"),
		asm.JNE.Imm(asm.R1, 6, "pass"),
		asm.StoreImm(asm.RFP, -12, familyV6, asm.Word),
		asm.Ja.Label("login-lookup"),
		asm.StoreImm(asm.RFP, -12, familyV4, asm.Word).WithSymbol("login-v4"),
		asm.StoreImm(asm.RFP, -8, 0, asm.Word),

		asm.LoadMapPtr(asm.R1, 0).WithReference("sources").WithSymbol("login-lookup"),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -12),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "login-new"),
		asm.Mov.Reg(asm.R9, asm.R0),
		asm.FnKtimeGetNs.Call(),
		// r1 = max(tat, now) + cost; admit iff r1 - now <= burstNs.
		asm.LoadMem(asm.R1, asm.R9, 0, asm.DWord),
		asm.JGE.Reg(asm.R1, asm.R0, "login-tat"),
		asm.Mov.Reg(asm.R1, asm.R0),
		asm.Add.Reg(asm.R1, asm.R8).WithSymbol("login-tat"),
		asm.Mov.Reg(asm.R2, asm.R1),
		asm.Sub.Reg(asm.R2, asm.R0),
		asm.LoadImm(asm.R3, int64(lim.burstNs), asm.DWord),
		asm.JGT.Reg(asm.R2, asm.R3, "ratelimited"),
		asm.StoreMem(asm.R9, 0, asm.R1, asm.DWord),
		asm.Ja.Label("pass"),

		// A source not in the map (new, or evicted) starts with a full bucket: tat = now + cost. When the
		// map is full the LRU evicts; if the update fails anyway, the request passes unlimited.
		asm.FnKtimeGetNs.Call().WithSymbol("login-new"),
		asm.Add.Reg(asm.R0, asm.R8),
		asm.StoreMem(asm.RFP, -24, asm.R0, asm.DWord),
		asm.LoadMapPtr(asm.R1, 0).WithReference("sources"),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -12),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, -24),
		asm.Mov.Imm(asm.R4, 0), // BPF_ANY: another CPU may have created it meanwhile
		asm.FnMapUpdateElem.Call(),
		asm.Ja.Label("pass"),

		asm.Mov.Imm(asm.R8, reasonRateLimited).WithSymbol("ratelimited"),
		asm.Ja.Label("count"),
	}
}

// Route map key: {u32 prefix length; u8 family; u8 address[16]}. The family byte keeps IPv4 and IPv6
// routes apart in one trie (an IPv6 ::/0 must not match IPv4 packets); the prefix length counts it, so a
// route of b bits is stored with 8+b.
const (
	routeKeyLen = 4 + 1 + 16
	familyV4    = 4
	familyV6    = 6
)

// tunSteeringInsns returns the TUN steering program (ioctl TUNSETSTEERINGEBPF). The kernel runs it in
// ndo_select_queue on the packet being sent out of the TUN device, with skb->data at the IP header (a TUN
// device has no link-layer header, and the virtio-net header of IFF_VNET_HDR is only prepended when user
// space reads, so it is never in front here). It returns the queue for the destination address from the
// route trie, 0 when nothing matches; the kernel takes the value % the number of queues.
func tunSteeringInsns(routes *ebpf.Map) asm.Instructions {
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		// Key at fp-24: prefix length (fp-24), family (fp-20), address (fp-19..fp-4). Zero it whole:
		// the verifier wants every key byte initialised, and IPv4 leaves 12 address bytes unused.
		// (asm has no 64-bit store-immediate, hence the zero register.)
		asm.Mov.Imm(asm.R1, 0),
		asm.StoreMem(asm.RFP, -24, asm.R1, asm.DWord),
		asm.StoreMem(asm.RFP, -16, asm.R1, asm.DWord),
		asm.StoreMem(asm.RFP, -8, asm.R1, asm.DWord),
		// IP version nibble.
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Imm(asm.R2, 0),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, -32),
		asm.Mov.Imm(asm.R4, 1),
		asm.FnSkbLoadBytes.Call(),
		asm.JNE.Imm(asm.R0, 0, "miss"),
		asm.LoadMem(asm.R1, asm.RFP, -32, asm.Byte),
		asm.RSh.Imm(asm.R1, 4),
		asm.JEq.Imm(asm.R1, 4, "v4"),
		asm.JEq.Imm(asm.R1, 6, "v6"),
		asm.Ja.Label("miss"),

		// IPv4 destination: bytes 16..19.
		asm.StoreImm(asm.RFP, -24, 8+32, asm.Word).WithSymbol("v4"),
		asm.StoreImm(asm.RFP, -20, familyV4, asm.Byte),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Imm(asm.R2, 16),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, -19),
		asm.Mov.Imm(asm.R4, 4),
		asm.FnSkbLoadBytes.Call(),
		asm.JNE.Imm(asm.R0, 0, "miss"),
		asm.Ja.Label("lookup"),

		// IPv6 destination: bytes 24..39.
		asm.StoreImm(asm.RFP, -24, 8+128, asm.Word).WithSymbol("v6"),
		asm.StoreImm(asm.RFP, -20, familyV6, asm.Byte),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Imm(asm.R2, 24),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, -19),
		asm.Mov.Imm(asm.R4, 16),
		asm.FnSkbLoadBytes.Call(),
		asm.JNE.Imm(asm.R0, 0, "miss"),

		asm.LoadMapPtr(asm.R1, 0).WithReference("routes").WithSymbol("lookup"),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -24),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "miss"),
		asm.LoadMem(asm.R0, asm.R0, 0, asm.Word),
		asm.Return(),

		// Unrouted traffic (no session owns the address, or not IP at all) goes to queue 0; the worker
		// drops what it cannot deliver.
		asm.Mov.Imm(asm.R0, 0).WithSymbol("miss"),
		asm.Return(),
	}
	mustAssociate(insns, "routes", routes)
	return insns
}

// mustAssociate binds the map loads named ref to m. It only fails for a reference the program does not
// contain, which is a programming error in this file.
func mustAssociate(insns asm.Instructions, ref string, m *ebpf.Map) {
	if err := insns.AssociateMap(ref, m); err != nil {
		panic("classifier: " + err.Error())
	}
}
