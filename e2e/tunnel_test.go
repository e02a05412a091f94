package e2e

import (
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestTunnelThroughNAT: client -> gateway -> host behind the gateway with NAT, ping and a checksummed TCP
// transfer over IPv4 and IPv6 inside the tunnel, with the gateway reached over IPv4 and over IPv6 outside.
func TestTunnelThroughNAT(t *testing.T) {
	for _, outer := range []string{"ipv4", "ipv6"} {
		t.Run("outer-"+outer, func(t *testing.T) {
			w := newWorld(t)
			w.startServer("")
			c := w.addClient()
			server := c.gwV4 + ":51820"
			if outer == "ipv6" {
				server = "[" + c.gwV6 + "]:51820"
			}
			w.connect(c, "alice", server, "")
			for _, dst := range []string{hostV4, hostV6} {
				must(t, c.ns.Ping(netip.MustParseAddr(dst), 5*time.Second))
			}
			size := int64(100 << 20)
			if testing.Short() {
				size = 8 << 20
			}
			transfer(t, c.ns, w.host, netip.MustParseAddr(hostV4), size)
			transfer(t, c.ns, w.host, netip.MustParseAddr(hostV6), size)
			st := w.serverStatus()
			if len(st.Sessions) != 1 || st.Sessions[0].Counters.RxBytes < uint64(2*size) {
				t.Fatalf("gateway counters do not show the transfer: %+v", st.Sessions)
			}
			// SIGTERM: the client removes what it added and exits 0.
			if err := c.proc.stop(t); err != nil {
				t.Fatalf("client exit: %v\n%s", err, c.proc.output())
			}
			assertClean(t, c)
		})
	}
}

// assertClean checks that a stopped client left no device and no policy rules behind.
func assertClean(t *testing.T, c *client) {
	t.Helper()
	if out, err := c.ns.Run("ip", "link", "show", clientTun); err == nil {
		t.Fatalf("tunnel device left behind: %s", out)
	}
	for _, fam := range []string{"-4", "-6"} {
		out, err := c.ns.Run("ip", fam, "rule", "show")
		must(t, err)
		if strings.Contains(out, "fwmark") || strings.Contains(out, "suppress_prefixlength") {
			t.Fatalf("policy rules left behind (%s):\n%s", fam, out)
		}
	}
	if guardInstalled(c) {
		t.Fatal("leak guard left behind")
	}
}

// TestWrongPassword: the client exits non-zero with a clear message and leaves nothing behind.
func TestWrongPassword(t *testing.T) {
	w := newWorld(t)
	w.startServer("")
	c := w.addClient()
	path := w.clientConfig(c, "alice", "not the password", c.gwV4+":51820", "")
	start := time.Now()
	cmd := c.ns.Exec(t.Context(), salvoBin, "client", "--config", path)
	out, err := cmd.CombinedOutput()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 3 {
		t.Fatalf("want exit code 3, got %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "wrong username or password") {
		t.Fatalf("message does not say why:\n%s", out)
	}
	if time.Since(start) > 10*time.Second {
		t.Fatalf("a definite answer took %s", time.Since(start))
	}
	assertClean(t, c)
	// An unknown user gets the same answer (the gateway does not reveal which logins exist).
	path = w.clientConfig(c, "mallory", password, c.gwV4+":51820", "")
	out, err = c.ns.Exec(t.Context(), salvoBin, "client", "--config", path).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 3 || !strings.Contains(string(out), "wrong username or password") {
		t.Fatalf("unknown user: %v\n%s", err, out)
	}
}

// TestLoginFailureReasons: unreachable server and wrong server key are told apart.
func TestLoginFailureReasons(t *testing.T) {
	w := newWorld(t)
	w.startServer("")
	c := w.addClient()

	path := w.clientConfig(c, "alice", password, c.gwV4+":51999", "")
	out, err := c.ns.Exec(t.Context(), salvoBin, "client", "--config", path).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 3 || !strings.Contains(string(out), "unreachable") {
		t.Fatalf("unreachable: %v\n%s", err, out)
	}
	assertClean(t, c)

	other, err := exec.Command(salvoBin, "keygen").Output()
	must(t, err)
	pubkey := exec.Command(salvoBin, "pubkey")
	pubkey.Stdin = strings.NewReader(string(other))
	pub, err := pubkey.Output()
	must(t, err)
	w.pubKey = strings.TrimSpace(string(pub))
	path = w.clientConfig(c, "alice", password, c.gwV4+":51820", "")
	out, err = c.ns.Exec(t.Context(), salvoBin, "client", "--config", path).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 3 || !strings.Contains(string(out), "wrong server public key") {
		t.Fatalf("wrong key: %v\n%s", err, out)
	}
	assertClean(t, c)
}
