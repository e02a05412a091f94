package engine

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

// TestTunnelBothWays: a client logs in and packets cross the tunnel in both directions, IPv4 and IPv6.
func TestTunnelBothWays(t *testing.T) {
	t.Parallel()
	w := newWorld(t, nil)
	w.startServer()
	c := w.connect(clientOpts{})
	for _, host := range []netip.Addr{hostV4, hostV6} {
		must(t, c.sendUp(host, "up "+host.String()))
		must(t, c.sendDown(host, "down "+host.String()))
	}
	if n := len(w.srv.Status().Sessions); n != 1 {
		t.Fatalf("%d sessions", n)
	}
	if h := c.setup.history(); len(h) != 1 || !h[0].IPv4.IsValid() || !h[0].IPv6.IsValid() {
		t.Fatalf("applied settings: %+v", h)
	}
}

// TestRekeyUnderTraffic: with a rekey every 200 ms, a stream of packets both ways crosses at least five
// rekeys without losing one.
func TestRekeyUnderTraffic(t *testing.T) {
	t.Parallel()
	w := newWorld(t, nil)
	w.startServer()
	c := w.connect(clientOpts{rekeyAfter: 200 * time.Millisecond})
	first := c.cl.current.Load()
	rekeys := 0
	last := first
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; rekeys < 5; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("only %d rekeys in 10 s", rekeys)
		}
		must(t, c.sendUp(hostV4, fmt.Sprintf("up %d", i)))
		must(t, c.sendDown(hostV6, fmt.Sprintf("down %d", i)))
		if kp := c.cl.current.Load(); kp != last {
			rekeys++
			last = kp
		}
	}
	if st := w.srv.Status().Sessions[0]; st.Counters.Drops["no_key"] != 0 || st.Counters.Drops["unknown_session"] != 0 {
		t.Fatalf("drops during rekeys: %v", st.Counters.Drops)
	}
}
