// Package flood is the attacker of Salvo's flood tests and benchmarks: it sends UDP datagrams to a gateway
// from many forged source addresses through a raw IPv4 socket (IP_HDRINCL), as fast as it can or at a set
// rate. The datagrams are built once, before the clock starts, so what is measured is the gateway, not
// the generator.
package flood

import (
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/salvovpn/salvo/protocol"
	"github.com/salvovpn/salvo/protocol/handshake"
)

// Kind is what the flood sends.
type Kind string

const (
	// Junk is random bytes of random length (40..1400).
	Junk Kind = "junk"
	// JunkLogin is random bytes that start with the login request's code (0x01): what reached the
	// handshake queue before its length and mac1 checks.
	JunkLogin Kind = "junk-0x01"
	// UnknownIndex is well-formed data packets (code 0x03, zero reserved bytes) for random receiver
	// indexes: no session has them.
	UnknownIndex Kind = "unknown-index"
	// Login is real login requests (valid mac1, Noise message 1 that decrypts) with made-up logins.
	Login Kind = "login"
)

// Kinds lists every Kind.
var Kinds = []Kind{Junk, JunkLogin, UnknownIndex, Login}

// Config is one flood.
type Config struct {
	Kind    Kind
	Sources []netip.Addr // forged IPv4 source addresses, used in turn
	Target  netip.AddrPort
	// Rate is datagrams per second; 0 sends as fast as the socket takes them.
	Rate     int
	Duration time.Duration
	// GatewayKey is the gateway's public key (Login needs it for mac1 and Noise).
	GatewayKey handshake.Key
}

// Result is what a flood did.
type Result struct {
	Sent    uint64
	Elapsed time.Duration
}

// PPS is the achieved rate.
func (r Result) PPS() float64 { return float64(r.Sent) / r.Elapsed.Seconds() }

// poolSize distinct datagrams are built and sent in turn.
const poolSize = 4096

// Run floods until the duration ends or ctx is cancelled. It needs CAP_NET_RAW in the namespace it runs in
// (the calling thread's), and a route there to the target.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if !cfg.Target.Addr().Is4() || len(cfg.Sources) == 0 {
		return Result{}, errors.New("flood: an IPv4 target and at least one IPv4 source are needed")
	}
	pool, err := build(cfg)
	if err != nil {
		return Result{}, err
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW) // IPPROTO_RAW implies IP_HDRINCL
	if err != nil {
		return Result{}, fmt.Errorf("flood: raw socket: %w", err)
	}
	defer unix.Close(fd)
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 8<<20)
	var sa unix.RawSockaddrInet4
	sa.Family = unix.AF_INET
	sa.Addr = cfg.Target.Addr().As4()
	const batch = 64
	msgs := make([]unix.Mmsghdr, batch)
	iovs := make([]unix.Iovec, batch)
	for i := range msgs {
		msgs[i].Hdr.Name = (*byte)(unsafe.Pointer(&sa))
		msgs[i].Hdr.Namelen = unix.SizeofSockaddrInet4
		msgs[i].Hdr.Iov = &iovs[i]
		msgs[i].Hdr.SetIovlen(1)
	}
	var res Result
	start := time.Now()
	deadline := start.Add(cfg.Duration)
	next := 0
	for {
		now := time.Now()
		if now.After(deadline) || ctx.Err() != nil {
			break
		}
		n := batch
		if cfg.Rate > 0 {
			// Pace: send what the rate allows by now, in batches of at most 64, sleeping in between.
			due := uint64(now.Sub(start).Seconds()*float64(cfg.Rate)) - res.Sent
			if due == 0 {
				time.Sleep(time.Millisecond)
				continue
			}
			n = int(min(due, batch))
		}
		for i := range n {
			p := pool[next]
			next = (next + 1) % len(pool)
			iovs[i].Base = &p[0]
			iovs[i].SetLen(len(p))
		}
		sent, _, e := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&msgs[0])), uintptr(n), 0, 0, 0)
		switch e {
		case 0:
			res.Sent += uint64(sent)
		case unix.EINTR, unix.EAGAIN, unix.ENOBUFS:
			// The socket buffer is full: the flood is as fast as the kernel takes it.
		default:
			return res, fmt.Errorf("flood: sendmmsg: %w", e)
		}
	}
	res.Elapsed = time.Since(start)
	return res, nil
}

// build makes poolSize IPv4/UDP datagrams of cfg's kind, sources taken in turn.
func build(cfg Config) ([][]byte, error) {
	rng := rand.New(rand.NewPCG(1, 2))
	pool := make([][]byte, poolSize)
	for i := range pool {
		var payload []byte
		switch cfg.Kind {
		case Junk, JunkLogin:
			payload = make([]byte, 40+rng.IntN(1360))
			_, _ = crand.Read(payload)
			if cfg.Kind == JunkLogin {
				payload[0] = byte(protocol.CodeClientAuthRequest)
			} else if payload[0] >= 1 && payload[0] <= 6 {
				payload[0] += 0x10 // an unknown code: junk, not a message of ours
			}
		case UnknownIndex:
			payload = make([]byte, protocol.DataOverhead+rng.IntN(1400))
			_, _ = crand.Read(payload)
			protocol.PutDataHeader(payload, protocol.CodeData, rng.Uint32(), rng.Uint64())
		case Login:
			hc := handshake.ClientConfig{ServerPublic: cfg.GatewayKey, Login: fmt.Sprintf("flood%d", i),
				Password: "guess", InstanceID: rng.Uint64()}
			_, msg, err := handshake.NewLogin(&hc, rng.Uint32(), time.Now(), nil)
			if err != nil {
				return nil, fmt.Errorf("flood: login request: %w", err)
			}
			payload = msg
		default:
			return nil, fmt.Errorf("flood: unknown kind %q", cfg.Kind)
		}
		src := cfg.Sources[i%len(cfg.Sources)]
		pool[i] = ipv4UDP(src, uint16(1024+rng.IntN(60000)), cfg.Target, payload)
	}
	return pool, nil
}

// ipv4UDP wraps payload in IPv4 and UDP headers. The kernel fills in the IPv4 checksum and, since the ID is
// 0, the ID; a UDP checksum of 0 means "none" in IPv4.
func ipv4UDP(src netip.Addr, sport uint16, dst netip.AddrPort, payload []byte) []byte {
	b := make([]byte, 28+len(payload))
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:4], uint16(len(b)))
	b[8] = 64 // TTL
	b[9] = unix.IPPROTO_UDP
	s, d := src.As4(), dst.Addr().As4()
	copy(b[12:16], s[:])
	copy(b[16:20], d[:])
	binary.BigEndian.PutUint16(b[20:22], sport)
	binary.BigEndian.PutUint16(b[22:24], dst.Port())
	binary.BigEndian.PutUint16(b[24:26], uint16(8+len(payload)))
	copy(b[28:], payload)
	return b
}
