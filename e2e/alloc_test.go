package e2e

import (
	"net/netip"
	"testing"
	"time"

	"github.com/salvovpn/salvo/engine"
)

// TestSteadyStateAllocatesNothing: during a 200 MB transfer (about 150,000 packets each way through both
// processes) the gateway and the client allocate next to nothing and run no (or at most one background)
// GC cycle. A per-packet allocation of even 8 bytes would show up as >1 MB here.
func TestSteadyStateAllocatesNothing(t *testing.T) {
	w := newWorld(t)
	w.bin = salvoBinNoRace
	w.startServer("")
	c := w.addClient()
	w.connect(c, "alice", c.gwV4+":51820", "")
	host := netip.MustParseAddr(hostV4)
	transfer(t, c.ns, w.host, host, 16<<20) // warm up: buffers, GRO tables, TCP windows
	before := []engine.RuntimeStats{w.serverStatus().Runtime, clientRuntime(t, c)}
	start := time.Now()
	transfer(t, c.ns, w.host, host, 200<<20)
	elapsed := time.Since(start)
	after := []engine.RuntimeStats{w.serverStatus().Runtime, clientRuntime(t, c)}
	for i, who := range []string{"gateway", "client"} {
		b, a := before[i], after[i]
		allocBytes := a.HeapAllocBytes - b.HeapAllocBytes
		t.Logf("%s over %s: %d GC cycles, %d allocations, %d bytes allocated", who, elapsed.Round(time.Millisecond),
			a.GCCycles-b.GCCycles, a.HeapAllocs-b.HeapAllocs, allocBytes)
		if allocBytes > 1<<20 {
			t.Errorf("%s allocated %d bytes while moving 200 MB: the data path allocates per packet", who, allocBytes)
		}
		if a.GCCycles-b.GCCycles > 1 {
			t.Errorf("%s ran %d GC cycles during the transfer", who, a.GCCycles-b.GCCycles)
		}
	}
}

func clientRuntime(t *testing.T, c *client) engine.RuntimeStats {
	t.Helper()
	st, err := c.status()
	must(t, err)
	return st.Runtime
}
