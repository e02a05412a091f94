package e2e

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

// TestRekeyUnderLoad: with the rekey interval shortened to 1 s the client rekeys several times during a
// checksummed transfer, the transfer completes intact, and nothing is dropped for want of a key.
func TestRekeyUnderLoad(t *testing.T) {
	w := newWorld(t)
	w.startServer("")
	c := w.addClient()
	path := w.clientConfig(c, "alice", password, c.gwV4+":51820", "")
	c.proc = startEnv(t, c.ns, []string{"SALVO_REKEY_AFTER=1s"}, "client", salvoBin, "client", "--config", path)
	w.waitConnected(c, 15*time.Second)
	idx0 := w.serverStatus().Sessions[0].SessionIndex
	deadline := time.Now().Add(4 * time.Second)
	for time.Now().Before(deadline) {
		transfer(t, c.ns, w.host, netip.MustParseAddr(hostV4), 32<<20)
	}
	if n := strings.Count(c.proc.output(), "resumed: new session keys"); n < 2 {
		t.Fatalf("client resumed (new keys) %d times in 4 s with a 1 s interval:\n%s", n, c.proc.output())
	}
	st := w.serverStatus()
	if st.Sessions[0].SessionIndex == idx0 {
		t.Fatalf("gateway still uses the first key")
	}
	for _, k := range []string{"no_key", "bad_mac", "expired"} {
		if n := st.Sessions[0].Counters.Drops[k]; n != 0 {
			t.Fatalf("gateway dropped %d packets as %s during rekeys", n, k)
		}
	}
	cs, err := c.status()
	must(t, err)
	for _, k := range []string{"no_key", "bad_mac", "expired", "unknown_session"} {
		if n := cs.Sessions[0].Counters.Drops[k] + cs.Global.Drops[k]; n != 0 {
			t.Fatalf("client dropped %d packets as %s during rekeys", n, k)
		}
	}
	if n := st.Global.Drops["unknown_session"]; n != 0 {
		t.Fatalf("gateway saw %d packets for unknown sessions during rekeys", n)
	}
}

// TestRoaming: the client's own address changes; the gateway follows it from the first authenticated
// packet and traffic continues without a new login.
func TestRoaming(t *testing.T) {
	w := newWorld(t)
	w.startServer("")
	c := w.addClient()
	w.connect(c, "alice", c.gwV4+":51820", "")
	host := netip.MustParseAddr(hostV4)
	must(t, c.ns.Ping(host, 5*time.Second))
	idx := w.serverStatus().Sessions[0].SessionIndex
	// Deleting the only address also deletes the routes through it; add the new one and the route back.
	_, err := c.ns.Run("ip", "addr", "del", "10.200.1.2/24", "dev", "tog")
	must(t, err)
	_, err = c.ns.Run("ip", "addr", "add", "10.200.1.77/24", "dev", "tog")
	must(t, err)
	must(t, c.ns.AddRoute("default", c.gwV4))
	waitFor(t, 10*time.Second, "traffic from the new address", func() error { return c.ns.Ping(host, 500*time.Millisecond) })
	st := w.serverStatus()
	if !strings.HasPrefix(st.Sessions[0].Endpoint, "10.200.1.77:") {
		t.Fatalf("gateway did not follow the client: endpoint %s", st.Sessions[0].Endpoint)
	}
	if st.Sessions[0].SessionIndex != idx {
		t.Fatalf("roaming caused a new login (index %d -> %d)", idx, st.Sessions[0].SessionIndex)
	}
}
