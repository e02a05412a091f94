// Package classifier is Salvo's optional eBPF fast path in front of the gateway's UDP sockets and TUN queues.
//
// It loads three small programs, written with cilium/ebpf's asm package (no C toolchain):
//
//   - a reuseport selector (SO_ATTACH_REUSEPORT_EBPF) that sends every data and disconnect packet to the
//     socket of worker (receiver index % Sockets), so one session always lands on one worker whatever the
//     client's outer address, while handshakes and everything else keep the kernel's 4-tuple hash;
//   - an early-drop socket filter (SO_ATTACH_BPF) on every socket that silently drops datagrams that cannot
//     be Salvo packets or name a session the gateway does not have, before they are queued and copied to
//     user space;
//   - optionally a TUN steering program (TUNSETSTEERINGEBPF) that puts packets for a client's tunnel address
//     on the TUN queue of the worker that owns the client's session.
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
	"github.com/salvovpn/salvo/protocol/handshake"
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

// Config describes what Load builds.
type Config struct {
	// Sockets is the number of sockets in each reuseport group (one per gateway worker), >= 1.
	Sockets int
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
}

// Stats counts datagrams dropped by the early-drop filter, summed over all CPUs and all sockets.
type Stats struct {
	// DroppedBadCode: code not 1..6, or non-zero reserved bytes 1..3 in a data/disconnect header (the
	// header itself is invalid either way).
	DroppedBadCode uint64
	// DroppedShort: empty, or shorter than the minimum length of its code.
	DroppedShort uint64
	// DroppedUnknownSession: data/disconnect whose receiver index is not in the live-session map.
	DroppedUnknownSession uint64
}

// Drop reasons: the keys of the per-CPU counter array.
const (
	reasonBadCode = iota
	reasonShort
	reasonUnknownSession
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

// serverAuthResponseMinLen mirrors handshake's unexported minResponseLen: header, Noise e, a 1-byte failure
// body and its tag.
const serverAuthResponseMinLen = 8 + 32 + 1 + protocol.TagLen

// minLen is the shortest valid datagram of each code (PROTOCOL.md). Only minimums are enforced: with UDP
// GRO a socket filter sees a whole coalesced super-packet, so exact or maximum sizes would drop valid
// trains of cookieReply/notice datagrams; user space checks exact sizes anyway.
var minLen = [...]int{
	protocol.CodeClientAuthRequest:  handshake.MinRequestLen,
	protocol.CodeServerAuthResponse: serverAuthResponseMinLen,
	protocol.CodeData:               protocol.MinDataLen,
	protocol.CodeCookieReply:        handshake.CookieReplyLen,
	protocol.CodeDisconnect:         protocol.MinDataLen,
	protocol.CodeNotice:             handshake.NoticeLen,
}
