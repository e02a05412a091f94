package engine

import (
	"crypto/hmac"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"hash"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/crypto/blake2s"

	"github.com/salvovpn/salvo/engine/enginetest"
	"github.com/salvovpn/salvo/protocol"
	"github.com/salvovpn/salvo/protocol/handshake"
	"github.com/salvovpn/salvo/protocol/handshake/handshaketest"
)

var attackerAddr = netip.MustParseAddrPort("203.0.113.66:4444")

// sessionSnapshot is what an attacker would want to change about the victim's session.
type sessionSnapshot struct {
	sessions int
	endpoint string
	index    uint32
	addrs    string
}

func snapshot(t *testing.T, srv *Server) sessionSnapshot {
	t.Helper()
	st := srv.Status()
	if len(st.Sessions) == 0 {
		return sessionSnapshot{}
	}
	s := st.Sessions[0]
	return sessionSnapshot{sessions: len(st.Sessions), endpoint: s.Endpoint, index: s.SessionIndex, addrs: s.Addresses[0]}
}

// TestObserverCannotTakeOverSession plays an attacker who holds every byte that crossed the wire (a login,
// several rekeys, data both ways), the gateway's public key and the victim's login name, and who can send
// from any address. It derives every resume key the public handshake values allow (what protocol v1 used),
// tries to resume the victim's session with each from its own address, then replays every recorded
// datagram, from its own address and spoofed from the victim's. The gateway accepts none of it: the
// victim's session keeps its endpoint and key, and traffic still flows.
func TestObserverCannotTakeOverSession(t *testing.T) {
	t.Parallel()
	w := newWorld(t, nil)
	w.startServer()
	// The victim rekeys every 300 ms, so the wire holds resume requests and responses, and rekeys go on
	// while the attack runs.
	victim := w.connect(clientOpts{rekeyAfter: 300 * time.Millisecond})
	must(t, victim.sendUp(hostV4, "before"))
	must(t, victim.sendDown(hostV4, "before down"))
	waitUntil(t, 10*time.Second, "five rekeys", func() bool { return countCode(w.rec, 0x01, gatewayAddr) >= 6 })
	before := snapshot(t, w.srv)
	hashes := w.srv.logins.hashes.Load()
	wire := w.rec.Datagrams()

	// Everything the observer can compute: session indexes from data headers, handshake hashes of every
	// request/response pair, and keys made from them.
	var indexes []uint32
	var keys [][32]byte
	pending := map[uint32][]byte{} // request sender index -> request
	for _, d := range wire {
		switch {
		case d.To == gatewayAddr && len(d.Data) >= 16 && d.Data[0] == byte(protocol.CodeData):
			indexes = append(indexes, binary.LittleEndian.Uint32(d.Data[4:8]))
		case d.To == gatewayAddr && d.Data[0] == byte(protocol.CodeClientAuthRequest):
			pending[binary.LittleEndian.Uint32(d.Data[4:8])] = d.Data
		case d.From == gatewayAddr && d.Data[0] == byte(protocol.CodeServerAuthResponse):
			req := pending[binary.LittleEndian.Uint32(d.Data[4:8])]
			if req == nil {
				continue
			}
			h := handshaketest.ObserverHash(w.static.Public, req, d.Data)
			keys = append(keys, h, hmacKey(h, "salvo resume v1"), hmacKey(h, "salvo v2 resume key"), blake2s.Sum256(h[:]))
		}
	}
	var random [32]byte
	_, _ = rand.Read(random[:])
	keys = append(keys, random)
	if len(keys) < 8 || len(indexes) == 0 {
		t.Fatalf("the recording holds %d derived keys and %d indexes: the attack has nothing to work with", len(keys), len(indexes))
	}

	attacker := w.rawPeer(attackerAddr)
	cfg := handshake.ClientConfig{ServerPublic: w.static.Public, Login: "alice"}
	tried, refused := 0, 0
	for _, idx := range uniq(indexes) {
		for _, k := range keys {
			// The attacker does not know the victim's instance ID (it travels encrypted): a guess.
			_, _ = rand.Read(random[:8])
			cfg.InstanceID = binary.LittleEndian.Uint64(random[:8])
			res, err := attacker.handshake(func(ck *handshake.Cookie) (*handshake.ClientHandshake, []byte, error) {
				return handshake.NewResume(&cfg, 77, idx, k, time.Now(), ck)
			})
			tried++
			if err != nil {
				continue // unanswered counts as refused
			}
			if res == handshake.ResultOK {
				t.Fatalf("the gateway accepted a resume of index %d made from public values", idx)
			}
			refused++
		}
	}
	// Now replay the whole recording at the gateway, from the attacker and spoofed from the victim.
	for _, d := range wire {
		if d.To != gatewayAddr {
			continue
		}
		w.net.Inject(attackerAddr, gatewayAddr, d.Data)
		w.net.Inject(victim.conn.LocalAddr(), gatewayAddr, d.Data)
	}
	must(t, victim.sendUp(hostV4, "after"))
	must(t, victim.sendDown(hostV4, "after down"))
	after := snapshot(t, w.srv)
	before.index, after.index = 0, 0 // the victim's own rekeys move it
	if after != before {
		t.Fatalf("the attack changed the victim's session:\nbefore %+v\nafter  %+v", before, after)
	}
	if h := w.srv.logins.hashes.Load(); h != hashes {
		t.Fatalf("replays made the gateway hash %d passwords", h-hashes)
	}
	t.Logf("%d forged resumes refused (%d answered), %d datagrams replayed twice; session unchanged", tried, refused, len(wire))
}

func hmacKey(key [32]byte, label string) [32]byte {
	m := hmac.New(func() hash.Hash { h, _ := blake2s.New256(nil); return h }, key[:])
	m.Write([]byte(label))
	var out [32]byte
	m.Sum(out[:0])
	return out
}

func uniq(xs []uint32) []uint32 {
	seen := map[uint32]bool{}
	var out []uint32
	for _, x := range xs {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}

// countCode counts recorded datagrams with the given code sent to to.
func countCode(rec *enginetest.Recorder, code byte, to netip.AddrPort) int {
	n := 0
	for _, d := range rec.Datagrams() {
		if d.To == to && len(d.Data) > 0 && d.Data[0] == code {
			n++
		}
	}
	return n
}

// TestForgedNoticeIsIgnored: an unknownSession notice is unauthenticated, 8 bytes anyone can spoof from the
// gateway's address once they have seen a data header. While the gateway talks, the client ignores it: no
// handshake, no password login. Once the gateway has been silent for the grace period a notice makes the
// client try a resume first, which the live gateway accepts: the forgery costs one rekey, not the session.
func TestForgedNoticeIsIgnored(t *testing.T) {
	t.Parallel()
	w := newWorld(t, nil)
	w.startServer()
	c := w.connect(clientOpts{})
	idx := c.cl.current.Load().RemoteIndex()
	notice := handshake.NewNotice(handshake.NoticeUnknownSession, idx)
	requests := countCode(w.rec, byte(protocol.CodeClientAuthRequest), gatewayAddr)
	hashes := w.srv.logins.hashes.Load()
	for i := range 20 {
		must(t, c.sendDown(hostV4, fmt.Sprintf("talking %d", i))) // the gateway is plainly alive
		w.net.Inject(gatewayAddr, c.conn.LocalAddr(), notice)
	}
	must(t, c.sendUp(hostV4, "still here"))
	if n := countCode(w.rec, byte(protocol.CodeClientAuthRequest), gatewayAddr) - requests; n != 0 {
		t.Fatalf("forged notices made the client send %d handshakes while the gateway talked", n)
	}
	// Silent gateway: the notice is believed, but a resume comes first and succeeds.
	waitUntil(t, 10*time.Second, "the grace period", func() bool {
		return time.Since(time.Unix(0, c.cl.lastRecv.Load())) > unknownSessionGrace
	})
	w.net.Inject(gatewayAddr, c.conn.LocalAddr(), notice)
	waitUntil(t, 5*time.Second, "the resume", func() bool { return c.cl.current.Load().RemoteIndex() != idx })
	c.waitState("connected", 5*time.Second)
	if h := w.srv.logins.hashes.Load(); h != hashes {
		t.Fatalf("a forged notice cost a password login (%d hashes)", h-hashes)
	}
	must(t, c.sendUp(hostV4, "after the resume"))
}

// TestClientCannotReachGatewayLocalDestinations: packets from a client to loopback, link-local, multicast,
// unspecified or broadcast destinations are dropped at the gateway and counted as bad_destination.
func TestClientCannotReachGatewayLocalDestinations(t *testing.T) {
	t.Parallel()
	w := newWorld(t, nil)
	w.startServer()
	c := w.connect(clientOpts{})
	v4, v6 := c.addrs()
	bad := []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("169.254.1.1"), netip.MustParseAddr("224.0.0.1"),
		netip.MustParseAddr("255.255.255.255"), netip.MustParseAddr("0.0.0.0"), netip.MustParseAddr("::1"),
		netip.MustParseAddr("fe80::1"), netip.MustParseAddr("ff02::1")}
	for _, dst := range bad {
		src := v4
		if dst.Is6() {
			src = v6
		}
		c.tun.Inject(enginetest.UDPPacket(netip.AddrPortFrom(src, 4000), netip.AddrPortFrom(dst, 53), []byte("bad "+dst.String())))
	}
	must(t, c.sendUp(hostV4, "good")) // arrives after the bad ones, if they had been let through
	waitUntil(t, 2*time.Second, "drops counted", func() bool {
		return w.srv.Status().Sessions[0].Counters.Drops["bad_destination"] == uint64(len(bad))
	})
	select {
	case pkt := <-w.srvTUN.Written():
		t.Fatalf("a packet reached the gateway's TUN: %x", pkt)
	default:
	}
}
