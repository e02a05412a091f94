package e2e

import (
	"crypto/rand"
	"net/netip"
	"testing"
	"time"

	"github.com/salvovpn/salvo/engine"
)

// TestHostilePackets: a spoofed inner source, a replayed data packet, datagrams of random bytes and
// truncated packets are dropped and counted, and the session keeps working.
// withKernelDrops returns the gateway's global drops with the eBPF classifier's kernel-side drops added
// (bad code and too short count as malformed).
func withKernelDrops(st engine.Status) map[string]uint64 {
	out := map[string]uint64{}
	for k, v := range st.Global.Drops {
		out[k] = v
	}
	if k, ok := st.Classifier.(map[string]any); ok {
		num := func(name string) uint64 {
			f, _ := k[name].(float64)
			return uint64(f)
		}
		out["malformed"] += num("DroppedBadCode") + num("DroppedShort")
		out["unknown_session"] += num("DroppedUnknownSession")
	}
	return out
}

func TestHostilePackets(t *testing.T) {
	w := newWorld(t)
	w.startServer("")
	c := w.addClient()
	r := newRelay(t, w, netip.MustParseAddrPort(c.gwV4+":51821"), netip.MustParseAddrPort(c.gwV4+":51820"))
	w.connect(c, "alice", c.gwV4+":51821", "")
	host := netip.MustParseAddr(hostV4)
	must(t, c.ns.Ping(host, 5*time.Second))
	rec := r.recorded()
	if len(rec) == 0 {
		t.Fatal("relay saw no data packet")
	}
	before := w.serverStatus()

	// Replay of a packet the gateway already accepted.
	r.inject(t, rec)
	// Random junk: unknown codes, a data code with an unknown index, a bare code byte, an empty datagram.
	for i := range 20 {
		junk := make([]byte, 40+i*13)
		_, _ = rand.Read(junk)
		r.inject(t, junk)
	}
	fake := make([]byte, 100)
	_, _ = rand.Read(fake)
	fake[0], fake[1], fake[2], fake[3] = 0x03, 0, 0, 0
	r.inject(t, fake)
	r.inject(t, []byte{0x03})
	r.inject(t, []byte{})
	// Truncated: shorter than a header, and a real packet missing the end of its tag.
	r.inject(t, rec[:20])
	r.inject(t, rec[:len(rec)-5])
	// Spoofed inner source: an address the gateway did not give this client.
	_, err := c.ns.Run("ip", "addr", "add", "10.77.0.200/32", "dev", clientTun)
	must(t, err)
	_, _ = c.ns.Run("ping", "-c", "2", "-i", "0.2", "-W", "1", "-I", "10.77.0.200", hostV4)

	waitFor(t, 5*time.Second, "drop counters", func() error {
		after := w.serverStatus()
		s0, s1 := before.Sessions[0].Counters.Drops, after.Sessions[0].Counters.Drops
		// Junk is dropped in user space, or in the kernel when the eBPF classifier is attached: count both.
		g0, g1 := withKernelDrops(before), withKernelDrops(after)
		switch {
		case s1["replay"] <= s0["replay"]:
			return errorf("replay not counted: %v", s1)
		case s1["bad_mac"] <= s0["bad_mac"]:
			return errorf("truncated tag not counted as bad_mac: %v", s1)
		case s1["spoofed"] < s0["spoofed"]+2:
			return errorf("spoofed source not counted: %v", s1)
		case g1["malformed"] < g0["malformed"]+3:
			return errorf("junk not counted as malformed: %v", g1)
		case g1["unknown_session"] <= g0["unknown_session"]:
			return errorf("unknown session not counted: %v", g1)
		}
		return nil
	})
	// The session still works.
	must(t, c.ns.Ping(host, 5*time.Second))
	if got := len(w.serverStatus().Sessions); got != 1 {
		t.Fatalf("session count %d after the attack", got)
	}
}
