package e2e

import (
	"net/netip"
	"testing"
	"time"
)

// TestOffloadsForcedOff runs traffic through the tunnel with each offload switched off in turn (gateway and
// client alike), so every fallback path of the batched data plane carries real traffic in CI.
func TestOffloadsForcedOff(t *testing.T) {
	for _, env := range []string{"SALVO_NO_TUN_OFFLOAD=1", "SALVO_NO_UDP_GSO=1", "SALVO_NO_UDP_GRO=1"} {
		t.Run(env, func(t *testing.T) {
			w := newWorld(t)
			w.env = []string{env}
			w.startServer("")
			c := w.addClient()
			w.connect(c, "alice", c.gwV4+":51820", "")
			must(t, c.ns.Ping(netip.MustParseAddr(hostV4), 5*time.Second))
			must(t, c.ns.Ping(netip.MustParseAddr(hostV6), 5*time.Second))
			transfer(t, c.ns, w.host, netip.MustParseAddr(hostV4), 32<<20)
			transfer(t, c.ns, w.host, netip.MustParseAddr(hostV6), 32<<20)
			// And the other direction (from the gateway itself: the host behind NAT cannot reach the pool),
			// so the gateway's send path carries bulk data too.
			transfer(t, w.gw, c.ns, c.tunnelAddr4(t), 32<<20)
		})
	}
}

// TestSmallBatch: a small router's setting (batch_size = 16, below what UDP GRO needs) still moves bulk
// traffic both ways.
func TestSmallBatch(t *testing.T) {
	w := newWorld(t)
	w.startServer("batch_size = 16")
	c := w.addClient()
	w.connect(c, "alice", c.gwV4+":51820", "batch_size = 16")
	transfer(t, c.ns, w.host, netip.MustParseAddr(hostV4), 32<<20)
	transfer(t, w.gw, c.ns, c.tunnelAddr4(t), 32<<20)
}
