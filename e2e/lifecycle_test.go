package e2e

import (
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestKilledClientExpires: a SIGKILLed client cannot say goodbye; the gateway frees its session and
// address after three keepalive intervals plus 5 s (11 s with keepalive = 2s), not after 180 s.
func TestKilledClientExpires(t *testing.T) {
	w := newWorld(t)
	w.startServer(`keepalive = "2s"`)
	c := w.addClient()
	w.connect(c, "alice", c.gwV4+":51820", "")
	c.proc.kill()
	killed := time.Now()
	waitFor(t, 20*time.Second, "the session freed", func() error {
		if n := len(w.serverStatus().Sessions); n != 0 {
			return errorf("%d sessions", n)
		}
		return nil
	})
	took := time.Since(killed)
	t.Logf("session of the SIGKILLed client freed after %s (keepalive 2s: at most 3 x 2s + 5s)", took.Round(100*time.Millisecond))
	if took < 8*time.Second {
		t.Fatalf("freed after %s: sooner than a live client could be declared dead", took)
	}
}

// TestGatewaySIGTERMTellsClients: a gateway stopped with SIGTERM tells its clients it is shutting down;
// they reconnect by themselves when it is back, on the same address, and traffic flows.
func TestGatewaySIGTERMTellsClients(t *testing.T) {
	w := newWorld(t)
	srv := w.startServer("")
	c := w.addClient()
	w.connect(c, "alice", c.gwV4+":51820", "")
	addr := c.tunnelAddr4(t)
	must(t, srv.cmd.Process.Signal(syscall.SIGTERM))
	waitFor(t, 10*time.Second, "the client told", func() error {
		if !strings.Contains(c.proc.output(), "the gateway is shutting down") {
			return errorf("not yet")
		}
		return nil
	})
	<-srv.done
	w.startServer("")
	w.waitConnected(c, 20*time.Second)
	if got := c.tunnelAddr4(t); got != addr {
		t.Fatalf("address %v after the restart, was %v", got, addr)
	}
	must(t, c.ns.Ping(netip.MustParseAddr(hostV4), 5*time.Second))
}

// TestSessionLimitNeverFlaps: with max_sessions_per_user = 1, a second device of the same user replaces
// the first, which says why and exits 4 instead of logging in again; ten seconds later the second is
// still the only session and has not logged in again.
func TestSessionLimitNeverFlaps(t *testing.T) {
	w := newWorld(t)
	w.startServer("max_sessions_per_user = 1")
	a, b := w.addClient(), w.addClient()
	w.connect(a, "alice", a.gwV4+":51820", "")
	w.connect(b, "alice", b.gwV4+":51820", "")
	if code := exitCode(t, a.proc, 10*time.Second); code != 4 {
		t.Fatalf("replaced client exited %d, want 4\n%s", code, a.proc.output())
	}
	if !strings.Contains(a.proc.output(), "replaced by a newer login") {
		t.Fatalf("the replaced client does not say why:\n%s", a.proc.output())
	}
	idx := w.serverStatus().Sessions[0].SessionIndex
	time.Sleep(10 * time.Second) // the interval in which two devices used to evict each other twice
	st := w.serverStatus()
	if len(st.Sessions) != 1 || st.Sessions[0].SessionIndex != idx {
		t.Fatalf("sessions changed: %+v", st.Sessions)
	}
	if n := strings.Count(w.server.output(), "session up"); n != 2 {
		t.Fatalf("%d logins, want 2", n)
	}
	must(t, b.ns.Ping(netip.MustParseAddr(hostV4), 5*time.Second))
}
