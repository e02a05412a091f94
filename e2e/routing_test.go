package e2e

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

// routeDev returns the device the client's kernel would use for dst.
func routeDev(t *testing.T, c *client, dst string, args ...string) string {
	t.Helper()
	out, err := c.ns.Run(append([]string{"ip", "route", "get", dst}, args...)...)
	must(t, err)
	f := strings.Fields(out)
	for i := range f {
		if f[i] == "dev" && i+1 < len(f) {
			return f[i+1]
		}
	}
	t.Fatalf("no dev in %q", out)
	return ""
}

// TestSplitTunnel: only the pushed routes go through the tunnel.
func TestSplitTunnel(t *testing.T) {
	w := newWorld(t)
	w.startServer("")
	c := w.addClient()
	// A network the gateway does not push, reachable directly over the client's LAN.
	_, err := w.gw.Run("ip", "addr", "add", "10.202.0.1/24", "dev", "lo")
	must(t, err)
	w.connect(c, "alice", c.gwV4+":51820", "")
	if d := routeDev(t, c, hostV4); d != clientTun {
		t.Fatalf("pushed route %s goes via %s", hostV4, d)
	}
	if d := routeDev(t, c, hostV6); d != clientTun {
		t.Fatalf("pushed route %s goes via %s", hostV6, d)
	}
	if d := routeDev(t, c, "10.202.0.1"); d == clientTun {
		t.Fatalf("unpushed 10.202.0.1 goes through the tunnel")
	}
	rx := w.serverStatus().Sessions[0].Counters.RxPackets
	must(t, c.ns.Ping(netip.MustParseAddr("10.202.0.1"), 5*time.Second))
	if got := w.serverStatus().Sessions[0].Counters.RxPackets; got != rx {
		t.Fatalf("traffic to an unpushed network entered the tunnel (%d -> %d packets)", rx, got)
	}
	must(t, c.ns.Ping(netip.MustParseAddr(hostV4), 5*time.Second))
	if got := w.serverStatus().Sessions[0].Counters.RxPackets; got <= rx {
		t.Fatalf("traffic to a pushed network did not enter the tunnel")
	}
}

// TestFullTunnel: with 0.0.0.0/0 and ::/0 pushed everything goes through the tunnel except the tunnel's
// own packets to the gateway (no routing loop), and excluded routes stay outside.
func TestFullTunnel(t *testing.T) {
	w := newWorld(t)
	w.startServer(`routes = ["0.0.0.0/0", "::/0"]` + "\n" + `excluded_routes = ["10.203.0.0/24"]`)
	c := w.addClient()
	w.connect(c, "alice", c.gwV4+":51820", "")
	for _, dst := range []string{hostV4, hostV6, "192.0.2.1", "2001:db8::1"} {
		if d := routeDev(t, c, dst); d != clientTun {
			t.Fatalf("full tunnel: %s goes via %s", dst, d)
		}
	}
	// The gateway's endpoint with the tunnel's mark goes over the LAN: no loop.
	if d := routeDev(t, c, c.gwV4, "mark", "0x5a17"); d == clientTun {
		t.Fatalf("tunnel packets to the gateway would loop into the tunnel")
	}
	if d := routeDev(t, c, "10.203.0.5"); d == clientTun {
		t.Fatalf("excluded route goes through the tunnel")
	}
	// Traffic really flows (through NAT) and the session stays up under it.
	must(t, c.ns.Ping(netip.MustParseAddr(hostV4), 5*time.Second))
	must(t, c.ns.Ping(netip.MustParseAddr(hostV6), 5*time.Second))
	transfer(t, c.ns, w.host, netip.MustParseAddr(hostV4), 16<<20)
	if err := c.proc.stop(t); err != nil {
		t.Fatalf("client exit: %v", err)
	}
	assertClean(t, c)
}
