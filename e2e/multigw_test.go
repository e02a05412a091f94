package e2e

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/salvovpn/salvo/engine"
	"github.com/salvovpn/salvo/engine/control"
	"github.com/salvovpn/salvo/internal/netns"
	"github.com/salvovpn/salvo/internal/pgtest"
)

// TestTwoGatewaysOnOneStore: gateways A (the world's) and B (a namespace of its own, with its own links to
// the host and to the client) share the private key and a PostgreSQL store, nothing else. A client logs
// in on A; another logs in on B and is not given the first one's address (the database holds it); a kick
// made on B ends a session on A; A is killed and the client is back on B within 15 s, on the same address,
// with its ticket (B hashes no password for it); a user deleted in the store is revoked on B and can log in
// nowhere.
func TestTwoGatewaysOnOneStore(t *testing.T) {
	db := pgtest.Start(t)
	w := newWorld(t)
	for _, u := range []string{"alice", "bob", "carol"} {
		storeUserCmd(t, db, "add", "--password-stdin", u)
	}
	// A 1 s keepalive: the client calls a gateway dead after 2 x 1 s + 5 s of silence, then tries it 5 s
	// more before it moves on.
	common := "auth = \"postgres\"\nstore = \"" + db.DSN + "\"\nusers_file =\nkeepalive = \"1s\""
	w.startServer(common)

	// Gateway B: its own namespace, a link to the host (10.202.0.0/24) and one to the client (below).
	gb := netns.ForTest(t, "salvo-e2e-g")
	must(t, netns.Veth(gb, "toh", w.host, "tog2"))
	must(t, gb.AddAddr("toh", "10.202.0.1/24"))
	must(t, w.host.AddAddr("tog2", "10.202.0.2/24"))
	must(t, gb.LinkUp("toh"))
	must(t, w.host.LinkUp("tog2"))
	must(t, gb.AddRoute(hostV4+"/32", "10.202.0.2"))
	sockB := filepath.Join(w.dir, "server-b.sock")
	confB := filepath.Join(w.dir, "server-b.toml")
	must(t, os.WriteFile(confB, []byte(w.serverConfig(common+"\ncontrol_socket = \""+sockB+"\"\nstate_dir = \""+filepath.Join(w.dir, "state-b")+"\"")), 0o600))
	b := startEnv(t, gb, w.env, "gateway-b", w.bin, "server", "--config", confB)
	statusB := func() (engine.Status, error) {
		var st engine.Status
		err := control.Query(sockB, &st)
		return st, err
	}
	waitFor(t, 10*time.Second, "gateway B up", func() error {
		if b.exited() {
			return errStop(fmt.Errorf("gateway B exited: %s", b.output()))
		}
		_, err := statusB()
		return err
	})

	// linkToB gives client n a link of its own to B, 10.210.n.0/24, and returns B's address on it.
	linkToB := func(c *client, n int) string {
		dev, gwAddr := fmt.Sprintf("toc%d", n), fmt.Sprintf("10.210.%d.1", n)
		must(t, netns.Veth(gb, dev, c.ns, "tog2"))
		must(t, gb.AddAddr(dev, gwAddr+"/24"))
		must(t, c.ns.AddAddr("tog2", fmt.Sprintf("10.210.%d.2/24", n)))
		must(t, gb.LinkUp(dev))
		must(t, c.ns.LinkUp("tog2"))
		return gwAddr + ":51820"
	}

	c := w.addClient()
	viaB := linkToB(c, 1)
	w.connect(c, "alice", c.gwV4+":51820", "fallback_servers = [\""+viaB+"\"]")
	host := netip.MustParseAddr(hostV4)
	must(t, c.ns.Ping(host, 5*time.Second))
	addr := c.tunnelAddr4(t)

	// carol logs in on B, whose pools are as empty as they were at its start: the database refuses her
	// alice's address, which alice holds on A.
	carol := w.addClient()
	carol.proc = startEnv(t, carol.ns, w.env, "client-carol", w.bin, "client", "--config",
		w.clientConfig(carol, "carol", password, linkToB(carol, 2), ""))
	waitFor(t, 15*time.Second, "carol connected to B", func() error {
		if carol.proc.exited() {
			return errStop(fmt.Errorf("carol's client exited: %s", carol.proc.output()))
		}
		st, err := carol.status()
		if err == nil && st.State != "connected" {
			err = fmt.Errorf("state %q", st.State)
		}
		return err
	})
	if got := carol.tunnelAddr4(t); got == addr {
		t.Fatalf("carol on B got %v, which alice holds on A", got)
	}
	before, err := statusB()
	must(t, err)

	// A kick on B reaches bob's session on A.
	other := w.addClient()
	w.connect(other, "bob", other.gwV4+":51820", "")
	out, err := exec.Command(salvoBin, "kick", "--socket", sockB, "bob").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "other gateways") {
		t.Fatalf("kick on B: %v\n%s", err, out)
	}
	if code := exitCode(t, other.proc, 10*time.Second); code != 4 {
		t.Fatalf("bob, kicked on B while on A, exited %d\n%s", code, other.proc.output())
	}

	// A dies; the client moves to B.
	w.server.kill()
	killed := time.Now()
	waitFor(t, 15*time.Second, "traffic through gateway B", func() error { return c.ns.Ping(host, 300*time.Millisecond) })
	t.Logf("on gateway B %s after A was killed", time.Since(killed).Round(100*time.Millisecond))
	st, err := statusB()
	must(t, err)
	if hashed := st.Logins.PasswordHashes - before.Logins.PasswordHashes; len(st.Sessions) != 2 || hashed != 0 || st.Logins.TicketLogins != 1 {
		t.Fatalf("gateway B: %d sessions (carol's and alice's), %d password hashes since alice left A, %d ticket logins", len(st.Sessions), hashed, st.Logins.TicketLogins)
	}
	if got := c.tunnelAddr4(t); got != addr {
		t.Fatalf("address %v on B, was %v on A", got, addr)
	}

	// alice deleted in the store: revoked on B, and her password works nowhere.
	storeUserCmd(t, db, "del", "alice")
	if code := exitCode(t, c.proc, 10*time.Second); code != 4 {
		t.Fatalf("deleted user's client exited %d\n%s", code, c.proc.output())
	}
	path := w.clientConfig(c, "alice", password, viaB, "")
	out, err = c.ns.Exec(t.Context(), salvoBin, "client", "--config", path).CombinedOutput()
	if ee, _ := err.(*exec.ExitError); ee == nil || ee.ExitCode() != 3 || !strings.Contains(string(out), "wrong username or password") {
		t.Fatalf("login of a deleted user on B: %v\n%s", err, out)
	}
}
