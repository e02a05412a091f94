package e2e

import (
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestTwoClientsAndClientToClient: two clients get different addresses; traffic between them passes only
// when the gateway allows it.
func TestTwoClientsAndClientToClient(t *testing.T) {
	for _, allow := range []bool{false, true} {
		name := "c2c-denied"
		if allow {
			name = "c2c-allowed"
		}
		t.Run(name, func(t *testing.T) {
			w := newWorld(t)
			extra := ""
			if allow {
				extra = "client_to_client = true"
			}
			w.startServer(extra)
			a, b := w.addClient(), w.addClient()
			w.connect(a, "alice", a.gwV4+":51820", "")
			w.connect(b, "bob", b.gwV4+":51820", "")
			a4, a6 := a.tunnelAddrs(t)
			b4, b6 := b.tunnelAddrs(t)
			if a4 == b4 || a6 == b6 || !a4.IsValid() || !b6.IsValid() {
				t.Fatalf("addresses not unique: %v %v / %v %v", a4, a6, b4, b6)
			}
			if got := len(w.serverStatus().Sessions); got != 2 {
				t.Fatalf("gateway has %d sessions, want 2", got)
			}
			// Both reach the host behind the gateway either way.
			must(t, a.ns.Ping(netip.MustParseAddr(hostV4), 5*time.Second))
			must(t, b.ns.Ping(netip.MustParseAddr(hostV4), 5*time.Second))
			err4 := a.ns.Ping(b4, 2*time.Second)
			err6 := a.ns.Ping(b6, 2*time.Second)
			if allow {
				must(t, err4)
				must(t, err6)
				return
			}
			if err4 == nil || err6 == nil {
				t.Fatalf("client-to-client traffic passed although the config forbids it (%v, %v)", err4, err6)
			}
			if policyDrops(w) == 0 {
				t.Fatalf("client-to-client drops not counted: %+v", w.serverStatus())
			}
		})
	}
}

func policyDrops(w *world) uint64 {
	var n uint64
	for _, s := range w.serverStatus().Sessions {
		n += s.Counters.Drops["policy"]
	}
	return n
}

// TestGatewayRestart: the gateway is killed and started again; the client comes back by itself with its
// session ticket (no password hash), on the same address, and traffic resumes within 15 s.
func TestGatewayRestart(t *testing.T) {
	w := newWorld(t)
	srv := w.startServer("")
	c := w.addClient()
	w.connect(c, "alice", c.gwV4+":51820", "")
	host := netip.MustParseAddr(hostV4)
	must(t, c.ns.Ping(host, 5*time.Second))
	addr := c.tunnelAddr4(t)
	waitFor(t, 5*time.Second, "the lease saved", func() error {
		b, err := os.ReadFile(filepath.Join(w.dir, "state", "leases.json"))
		if err != nil || !strings.Contains(string(b), addr.String()) {
			return errorf("not yet: %v", err)
		}
		return nil
	})

	srv.kill() // SIGKILL: no cleanup, no goodbye, all sessions lost
	// The killed gateway's TUN device disappears with the process; start the new one at once.
	w.startServer("")
	restarted := time.Now()
	waitFor(t, 15*time.Second, "traffic through the restarted gateway", func() error {
		return c.ns.Ping(host, 500*time.Millisecond)
	})
	t.Logf("traffic resumed %s after the gateway restarted", time.Since(restarted).Round(time.Millisecond))
	if st := w.serverStatus(); len(st.Sessions) != 1 {
		t.Fatalf("restarted gateway has %d sessions", len(st.Sessions))
	}
	// The lease came back from the state directory: same address, so the client's routes still match.
	waitFor(t, 5*time.Second, "the client back on its address", func() error {
		if st, err := c.status(); err != nil || st.State != "connected" {
			return errorf("client state: %v", err)
		}
		if got := c.tunnelAddr4(t); got != addr {
			return errStop(errorf("address %v after the restart, was %v", got, addr))
		}
		return nil
	})
	st := w.serverStatus()
	if st.Sessions[0].Addresses[0] != addr.String() {
		t.Fatalf("gateway gave %v, was %v", st.Sessions[0].Addresses, addr)
	}
	// The client came back with its session ticket: the restarted gateway hashed no password.
	if st.Logins.PasswordHashes != 0 || st.Logins.TicketLogins != 1 {
		t.Fatalf("restarted gateway: %d password hashes, %d ticket logins; want 0 and 1", st.Logins.PasswordHashes, st.Logins.TicketLogins)
	}
	if fi, err := os.Stat(filepath.Join(w.dir, "state", "ticket-keys")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("ticket key file: %v %v", fi, err)
	}
	if !strings.Contains(c.proc.output(), "logging in again") && !strings.Contains(c.proc.output(), "reconnecting") {
		t.Fatalf("client log does not show the reconnect:\n%s", c.proc.output())
	}
}

// TestUsersReload: a user added while the gateway runs can log in after SIGHUP, and gets the fixed address
// the users file gives them.
func TestUsersReload(t *testing.T) {
	w := newWorld(t)
	srv := w.startServer("")
	w.addUser("carol", "--ipv4 10.77.0.50")
	must(t, srv.cmd.Process.Signal(syscall.SIGHUP))
	waitFor(t, 5*time.Second, "users file reloaded", func() error {
		if !strings.Contains(srv.output(), "users file reloaded") {
			return errorf("not yet")
		}
		return nil
	})
	c := w.addClient()
	w.connect(c, "carol", c.gwV4+":51820", "")
	if v4 := c.tunnelAddr4(t); v4 != netip.MustParseAddr("10.77.0.50") {
		t.Fatalf("carol got %v, want her fixed 10.77.0.50", v4)
	}
	must(t, c.ns.Ping(netip.MustParseAddr(hostV4), 5*time.Second))
}

// TestAuthCommand: a gateway with auth = "command" and no users file lets in whom its program accepts, and
// traffic flows; a wrong password gets "wrong username or password", and the gateway's log shows what the
// program wrote with the password masked; a reload to another program applies it to the next login,
// while the live session carries on.
func TestAuthCommand(t *testing.T) {
	w := newWorld(t)
	prog := func(name, body string) string {
		p := filepath.Join(w.dir, name)
		must(t, os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o700))
		return p
	}
	accept := prog("auth", `read -r pw
echo "checking $1 with $pw" >&2
[ "$1" = alice ] && [ "$pw" = "`+password+`" ]
`)
	refuse := prog("refuse", "exit 1\n")
	conf := func(cmd string) string {
		return "auth = \"command\"\nauth_command = \"" + cmd + "\"\nauth_timeout = \"2s\"\nmax_session_age = \"10m\"\nusers_file ="
	}
	srv := w.startServer(conf(accept))
	c := w.addClient()
	w.connect(c, "alice", c.gwV4+":51820", "")
	must(t, c.ns.Ping(netip.MustParseAddr(hostV4), 5*time.Second))

	other := w.addClient()
	login := func(pw string) (int, string) {
		path := w.clientConfig(other, "alice", pw, other.gwV4+":51820", "")
		out, err := other.ns.Exec(t.Context(), salvoBin, "client", "--config", path).CombinedOutput()
		ee, _ := err.(*exec.ExitError)
		if ee == nil {
			t.Fatalf("client with password %q: %v\n%s", pw, err, out)
		}
		return ee.ExitCode(), string(out)
	}
	if code, out := login("not the password"); code != 3 || !strings.Contains(out, "wrong username or password") {
		t.Fatalf("wrong password: exit %d\n%s", code, out)
	}
	log := srv.output()
	if strings.Contains(log, "not the password") || strings.Contains(log, password) {
		t.Fatalf("a password reached the gateway's log:\n%s", log)
	}
	if !strings.Contains(log, "checking alice with [password]") {
		t.Fatalf("the program's output is not in the gateway's log:\n%s", log)
	}

	must(t, os.WriteFile(filepath.Join(w.dir, "server.toml"), []byte(w.serverConfig(conf(refuse))), 0o600))
	must(t, srv.cmd.Process.Signal(syscall.SIGHUP))
	waitFor(t, 5*time.Second, "auth command reloaded", func() error {
		if !strings.Contains(srv.output(), "auth command reloaded") {
			return errorf("not yet")
		}
		return nil
	})
	if code, out := login(password); code != 3 || !strings.Contains(out, "wrong username or password") {
		t.Fatalf("right password after the reload to a program that refuses everybody: exit %d\n%s", code, out)
	}
	must(t, c.ns.Ping(netip.MustParseAddr(hostV4), 5*time.Second))
}
