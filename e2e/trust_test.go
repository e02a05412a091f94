package e2e

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// exitCode waits for p to exit by itself and returns its exit code.
func exitCode(t *testing.T, p *proc, d time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(d):
		t.Fatalf("%s still running after %s", p.name, d)
	}
	var ee *exec.ExitError
	if p.err == nil {
		return 0
	}
	if ok := asExit(p.err, &ee); !ok {
		t.Fatalf("%s: %v", p.name, p.err)
	}
	return ee.ExitCode()
}

func asExit(err error, ee **exec.ExitError) bool {
	e, ok := err.(*exec.ExitError)
	*ee = e
	return ok
}

// TestKick: `salvo kick alice` on the gateway ends alice's session; her client says so, removes what it
// set up and exits 4 without reconnecting. Bob's session stays.
func TestKick(t *testing.T) {
	w := newWorld(t)
	w.startServer("")
	a, b := w.addClient(), w.addClient()
	w.connect(a, "alice", a.gwV4+":51820", "")
	w.connect(b, "bob", b.gwV4+":51820", "")
	out, err := w.gw.Run(salvoBin, "kick", "--socket", filepath.Join(w.dir, "server.sock"), "alice")
	if err != nil || !strings.Contains(out, "ended 1 session(s) of alice") {
		t.Fatalf("salvo kick: %v\n%s", err, out)
	}
	if code := exitCode(t, a.proc, 10*time.Second); code != 4 {
		t.Fatalf("kicked client exited %d, want 4\n%s", code, a.proc.output())
	}
	if !strings.Contains(a.proc.output(), "ended by an administrator") {
		t.Fatalf("the client does not say why it stopped:\n%s", a.proc.output())
	}
	assertClean(t, a)
	must(t, b.ns.Ping(netip.MustParseAddr(hostV4), 5*time.Second))
	if _, err := w.gw.Run(salvoBin, "kick", "--socket", filepath.Join(w.dir, "server.sock"), "alice"); err == nil {
		t.Fatal("kicking a user without sessions succeeded")
	}
}

// TestRevokedOnReload: `salvo user del bob` and SIGHUP end bob's session at once; his client exits 4 and
// says his access was revoked.
func TestRevokedOnReload(t *testing.T) {
	w := newWorld(t)
	srv := w.startServer("")
	c := w.addClient()
	w.connect(c, "bob", c.gwV4+":51820", "")
	if out, err := exec.Command(salvoBin, "user", "del", "--file", filepath.Join(w.dir, "users"), "bob").CombinedOutput(); err != nil {
		t.Fatalf("user del: %v\n%s", err, out)
	}
	must(t, srv.cmd.Process.Signal(syscall.SIGHUP))
	if code := exitCode(t, c.proc, 10*time.Second); code != 4 {
		t.Fatalf("revoked client exited %d, want 4\n%s", code, c.proc.output())
	}
	if !strings.Contains(c.proc.output(), "access revoked") {
		t.Fatalf("the client does not say why:\n%s", c.proc.output())
	}
	if n := len(w.serverStatus().Sessions); n != 0 {
		t.Fatalf("%d sessions after revocation", n)
	}
}

// TestSecondGatewayLeavesFirstAlone: a second gateway started with the running one's tun_name fails with
// a message that says why, and the first gateway's NAT table and traffic are untouched.
func TestSecondGatewayLeavesFirstAlone(t *testing.T) {
	w := newWorld(t)
	w.startServer("")
	c := w.addClient()
	w.connect(c, "alice", c.gwV4+":51820", "")
	path := filepath.Join(w.dir, "second.toml")
	must(t, os.WriteFile(path, []byte(w.serverConfig(`listen = ["0.0.0.0:51900"]`+"\n"+
		`control_socket = "`+filepath.Join(w.dir, "second.sock")+`"`)), 0o600))
	out, err := w.gw.Exec(t.Context(), salvoBin, "server", "--config", path).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "tun-"+serverTun+" is in use") {
		t.Fatalf("second gateway: %v\n%s", err, out)
	}
	tables, err := w.gw.Run("nft", "list", "tables")
	must(t, err)
	if !strings.Contains(tables, "salvo_"+serverTun) {
		t.Fatalf("the first gateway's NAT table is gone: %s", tables)
	}
	must(t, c.ns.Ping(netip.MustParseAddr(hostV4), 5*time.Second))
}

// TestSecondClientLeavesFirstAlone: a second client in the same namespace with the first one's device name
// fails before touching anything; one with its own device, table, fwmark and rule priority runs beside the
// first, and when it exits the first client's rules are all still there.
func TestSecondClientLeavesFirstAlone(t *testing.T) {
	w := newWorld(t)
	w.startServer("")
	c := w.addClient()
	w.connect(c, "alice", c.gwV4+":51820", "")
	rules := func() string {
		var b strings.Builder
		for _, fam := range []string{"-4", "-6"} {
			out, err := c.ns.Run("ip", fam, "rule", "show")
			must(t, err)
			b.WriteString(out)
		}
		return b.String()
	}
	before := rules()
	if !strings.Contains(before, "0x5a17") {
		t.Fatalf("the first client's rules are missing: %s", before)
	}
	dir := filepath.Join(w.dir, "second")
	must(t, os.MkdirAll(dir, 0o700))
	second := &client{ns: c.ns, n: 99, dir: dir, ctlSock: filepath.Join(dir, "client.sock")}

	// Same device name: refused at once, nothing touched.
	path := w.clientConfig(second, "bob", password, c.gwV4+":51820", "")
	out, err := c.ns.Exec(t.Context(), salvoBin, "client", "--config", path).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "tun-"+clientTun+" is in use") {
		t.Fatalf("second client with the same tun_name: %v\n%s", err, out)
	}
	if after := rules(); after != before {
		t.Fatalf("a refused client changed the rules:\n%s\n->\n%s", before, after)
	}

	// Its own names: it runs, and stopping it leaves the first client's rules in place.
	path = w.clientConfig(second, "bob", password, c.gwV4+":51820",
		"tun_name = \"salvo2\"\nroute_table = 51821\nfwmark = 0x5a18\nrule_priority = 10100")
	second.proc = startEnv(t, c.ns, nil, "client-second", salvoBin, "client", "--config", path)
	w.waitConnected(second, 15*time.Second)
	if !strings.Contains(rules(), "0x5a18") {
		t.Fatalf("the second client's rules are missing: %s", rules())
	}
	if err := second.proc.stop(t); err != nil {
		t.Fatalf("second client exit: %v", err)
	}
	if after := rules(); after != before {
		t.Fatalf("the second client's exit changed the first one's rules:\n%s\n->\n%s", before, after)
	}
	must(t, c.ns.Ping(netip.MustParseAddr(hostV4), 5*time.Second))
}

// TestSecretFilesMustBePrivate: a users file or private key that group or others can read is refused
// at start, with a message naming the file and its mode.
func TestSecretFilesMustBePrivate(t *testing.T) {
	for _, name := range []string{"users", "server.key"} {
		t.Run(name, func(t *testing.T) {
			w := newWorld(t)
			must(t, os.Chmod(filepath.Join(w.dir, name), 0o644))
			path := filepath.Join(w.dir, "server.toml")
			must(t, os.WriteFile(path, []byte(w.serverConfig("")), 0o600))
			out, err := w.gw.Exec(t.Context(), salvoBin, "server", "--config", path).CombinedOutput()
			want := fmt.Sprintf("%s is mode 0644", filepath.Join(w.dir, name))
			if err == nil || !strings.Contains(string(out), want) {
				t.Fatalf("gateway with a 0644 %s: %v\n%s", name, err, out)
			}
		})
	}
}
