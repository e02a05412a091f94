// Package classifier is Salvo's optional eBPF fast path in front of the gateway's UDP sockets and TUN queues.
//
// It loads three small programs, written with cilium/ebpf's asm package (no C toolchain):
//
//   - a reuseport selector (SO_ATTACH_REUSEPORT_EBPF) that sends every data and disconnect packet to the
//     socket of worker (receiver index % Sockets), so one session always lands on one worker whatever the
//     client's outer address. With Config.HandshakeSocket every group has one more socket, its handshake
//     socket, and every datagram whose first byte is clientAuthRequest (0x01) goes there. Everything else
//     (the other handshake codes, junk) keeps the kernel's 4-tuple hash over all sockets of the group;
//   - an early-drop socket filter (SO_ATTACH_BPF) on every socket, the handshake socket included, that
//     silently drops datagrams that cannot be Salvo packets or name a session the gateway does not have
//     and, with Config.HandshakeRate, login requests from a source (IPv4 address or IPv6 /64) whose token
//     bucket is empty, before they are queued and copied to user space;
//   - optionally a TUN steering program (TUNSETSTEERINGEBPF) that puts packets for a client's tunnel address
//     on the TUN queue of the worker that owns the client's session.
//
// Why login requests get a socket and a limit of their own: junk and data for unknown sessions die in the
// filter, but a login request cannot be verified in the kernel (its mac1 is a keyed BLAKE2s) and anyone
// holding the gateway's public key can make valid-looking ones. Left to the 4-tuple hash, a flood of them
// shares a worker's receive queue with the data of every session steered there: measured, 400,000
// datagrams/s from 200 forged sources took a victim's TCP through the tunnel from 4.1 Gbit/s to 1 Mbit/s,
// because the queue overflowed and dropped data with the flood. On the handshake socket the flood can only
// overflow its own queue (user space then sheds logins, with its hash budget and cookies), and the
// per-source limit keeps one source, or a few, from taking the whole queue. The limit is no defence
// against a flood from many spoofed sources (see Config.HandshakeSources); the handshake socket is.
//
// Everything is an optimisation: user space still checks every packet, so a program that is missing, stale
// or detached only costs performance, never correctness. The one thing the programs must never do is make
// the kernel answer a legitimate packet with ICMP port unreachable, which is why the selector cannot drop
// (see programs_linux.go).
package classifier

import (
	"errors"
	"time"

	"github.com/salvovpn/salvo/protocol"
)

// Callers use these to decide between falling back ("auto") and failing loudly ("on").
var (
	// ErrUnsupported: this platform or kernel cannot run the classifier (not Linux, missing program or map
	// type, setsockopt/ioctl unknown).
	ErrUnsupported = errors.New("classifier: eBPF classifier not supported here")
	// ErrPermission: the kernel refused to load or attach the programs (needs CAP_BPF and CAP_NET_ADMIN, or
	// root; unprivileged BPF is usually disabled).
	ErrPermission = errors.New("classifier: not permitted to load eBPF programs")
	// ErrClosed is returned by methods called after Close.
	ErrClosed = errors.New("classifier: closed")
)

// DefaultMaxSessions is the live-session map capacity used when Config.MaxSessions is 0.
const DefaultMaxSessions = 65536

// Defaults for the per-source login limit. Load applies DefaultHandshakeBurst and DefaultHandshakeSources
// when their fields are 0; DefaultHandshakeRate is what a gateway should set (0 means no limit).
const (
	// DefaultHandshakeRate: a genuine client sends about one login request a second while it logs in
	// (its retransmissions back off from 1 s), plus one more after a cookie reply.
	DefaultHandshakeRate = 20
	// DefaultHandshakeBurst lets a source start with twice a second's worth.
	DefaultHandshakeBurst = 40
	// DefaultHandshakeSources bounds the source map to 5.5 MiB of kernel memory (measured: 88 bytes a
	// source).
	DefaultHandshakeSources = 65536
)

// Config describes what Load builds.
type Config struct {
	// Sockets is the number of worker sockets in each reuseport group (one per gateway worker), >= 1.
	Sockets int
	// HandshakeSocket adds one socket to every reuseport group, the handshake socket: a group is then
	// Sockets+1 sockets, the Sockets workers' sockets in worker order followed by the handshake socket
	// (reuseport index Sockets), bound in that order (see AttachGroup). The selector sends every datagram
	// whose first byte is clientAuthRequest (0x01) to the handshake socket, whatever its length; data and
	// disconnect keep going to worker index % Sockets and never to the handshake socket; everything else
	// keeps the kernel's 4-tuple hash over all Sockets+1 sockets, so the handshake socket's reader sees
	// other codes too and must handle them as every socket reader does (user space checks everything).
	//
	// Why: a flood of valid-looking login requests that shares a queue with data drops the data with it
	// (see the package documentation). On a queue of their own, a full queue costs only logins.
	HandshakeSocket bool
	// MaxSessions is the capacity of the live-session map (DefaultMaxSessions when 0). It must cover every
	// receiver index the gateway accepts at once, including the previous index kept during a rekey:
	// AddSession fails when the map is full, and data for an index missing from the map is dropped.
	MaxSessions int
	// TUNSteering also builds the TUN steering program and its route map (AttachTUN, SetRoute).
	TUNSteering bool
	// UnknownSample, when non-zero, lets one data packet for an unknown session through per interval and
	// CPU instead of dropping it. A gateway that restarted has an empty session map; the sample reaches
	// user space, which answers with a rate-limited unknownSession notice, so its clients log in again at
	// once instead of after their dead-peer timeout. 0 drops them all. At most 4.29 s.
	UnknownSample time.Duration

	// HandshakeRate limits login requests (code 0x01) per source in the early-drop filter, in requests per
	// second; 0 means no limit (and no source map). A source is an IPv4 address (/32) or an IPv6 /64 (an
	// IPv4 client of a dual-stack IPv6 socket counts by its IPv4 address). Each source has a token bucket
	// of HandshakeBurst tokens that refills at HandshakeRate; a login request that finds it empty is
	// dropped silently and counted in Stats.DroppedRateLimited. Login requests shorter than the minimum
	// are dropped as short first and cost nothing. A UDP GRO train (which the filter sees as one
	// packet) costs one token per datagram in it and is dropped whole if the bucket holds fewer. 0.001 ... 1e9; DefaultHandshakeRate is the
	// gateway's choice.
	//
	// Sources behind one NAT address share a bucket: more than HandshakeBurst clients logging in at once
	// from one address (a gateway restart with UnknownSample brings them all back together) get in at
	// HandshakeRate, the rest retry.
	//
	// The filter runs concurrently on every CPU with no lock: two CPUs that judge the same source at the
	// same moment can both admit on one token, so a source can get slightly more through than its bucket
	// allows (at most one extra datagram per other CPU per race), never less.
	HandshakeRate float64
	// HandshakeBurst is the bucket size: how many login requests a source that was quiet may send at
	// once. DefaultHandshakeBurst when 0; ignored without HandshakeRate. 1 ... 1e9.
	HandshakeBurst int
	// HandshakeSources is the capacity of the source map (DefaultHandshakeSources when 0), a kernel LRU
	// hash, preallocated: it bounds the limit's kernel memory (88 bytes a source). When it is full, a new
	// source evicts an old one and that source's bucket is forgotten. The kernel's LRU is approximate, on
	// two lists: a source seen once is evicted before one seen again while in the map, so a stream of
	// new addresses evicts other one-time sources but not a source that keeps sending (and per-CPU free
	// lists leave up to about 128 entries a CPU unused). What that means for a flood from many forged
	// sources (random spoofed addresses, or an attacker's own IPv6 /48 of 65,536 /64s): every new source
	// starts with a full bucket, so each forged address gets HandshakeBurst requests through, and one
	// that cycles through more addresses than the map holds is not limited at all. Against such a flood
	// this limit gives no protection; the handshake socket, user space's hash budget and cookies are
	// what defend against it. Eviction never harms a genuine client: it only ever gets a fresh, full
	// bucket back.
	HandshakeSources int
}

// GroupSize is the number of sockets AttachGroup expects in each reuseport group: Sockets, plus one
// with HandshakeSocket.
func (c Config) GroupSize() int {
	if c.HandshakeSocket {
		return c.Sockets + 1
	}
	return c.Sockets
}

// Stats counts what the early-drop filter dropped, summed over all CPUs and all sockets. A UDP GRO train
// is judged and counted once, as one datagram.
type Stats struct {
	// DroppedBadCode: code not 1..6, or non-zero reserved bytes 1..3 in a data/disconnect header (the
	// header itself is invalid either way).
	DroppedBadCode uint64
	// DroppedShort: empty, or shorter than the minimum length of its code.
	DroppedShort uint64
	// DroppedUnknownSession: data/disconnect whose receiver index is not in the live-session map.
	DroppedUnknownSession uint64
	// DroppedRateLimited: login requests (0x01, long enough) whose source's token bucket was empty (see
	// Config.HandshakeRate). Always 0 without a limit.
	DroppedRateLimited uint64
}

// Drop reasons: the keys of the per-CPU counter array.
const (
	reasonBadCode = iota
	reasonShort
	reasonUnknownSession
	reasonRateLimited
	numReasons
	// gateSlot is the per-CPU slot of the counter array that holds the time (bpf_ktime_get_ns) the last
	// unknown-session sample was let through.
	gateSlot = numReasons
)

// udpHeaderLen is where the Salvo payload starts for a socket filter on a UDP socket: the kernel runs
// sk_filter with skb->data at the UDP header (udp_queue_rcv_one_skb -> sk_filter_trim_cap(sk, skb,
// sizeof(struct udphdr))). The reuseport hook instead pulls the UDP header first and its program sees the
// payload at offset 0. The namespace tests prove both.
const udpHeaderLen = 8

// minLen is the shortest valid datagram of each code (PROTOCOL.md). Only minimums are enforced: with UDP
// GRO a socket filter sees a whole coalesced super-packet, so exact or maximum sizes would drop valid
// trains of cookieReply/notice datagrams; user space checks exact sizes anyway.
var minLen = [...]int{
	protocol.CodeClientAuthRequest:  protocol.MinRequestLen,
	protocol.CodeServerAuthResponse: protocol.MinResponseLen,
	protocol.CodeData:               protocol.MinDataLen,
	protocol.CodeCookieReply:        protocol.CookieReplyLen,
	protocol.CodeDisconnect:         protocol.MinDataLen,
	protocol.CodeNotice:             protocol.NoticeLen,
}
