package engine

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/salvovpn/salvo/engine/users"
	"github.com/salvovpn/salvo/protocol/handshake"
)

// commandWorld is a gateway whose logins an auth command checks: it accepts alice with testPassword, and
// nobody once a file named deny exists beside it.
func commandWorld(t *testing.T, mod func(*ServerConfig)) (*world, *users.Command, string) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "auth")
	body := "#!/bin/sh\nread -r pw\n[ ! -e \"$(dirname \"$0\")/deny\" ] && [ \"$1\" = alice ] && [ \"$pw\" = \"" + testPassword + "\" ]\n"
	must(t, os.WriteFile(path, []byte(body), 0o700))
	cmd, err := users.NewCommand(users.CommandConfig{Path: path}, testLogger(t, "auth command"))
	must(t, err)
	w := newWorld(t, func(c *ServerConfig) {
		c.Users = cmd
		if mod != nil {
			mod(c)
		}
	})
	return w, cmd, filepath.Join(dir, "deny")
}

// TestCommandLogin: a client logs in through the auth command and its traffic flows; a wrong password is
// one run and a "bad credentials" login, counted as such.
func TestCommandLogin(t *testing.T) {
	t.Parallel()
	w, cmd, _ := commandWorld(t, nil)
	w.startServer()
	c := w.connect(clientOpts{})
	must(t, c.sendUp(hostV4, "through the command"))
	if cmd.Runs() == 0 {
		t.Fatal("logged in without running the command")
	}
	runs, failed := cmd.Runs(), w.srv.Logins().LoginsFailed
	if res := w.rawPeer(netip.MustParseAddrPort("198.18.5.1:1000")).login(t, "alice", "wrong"); res != handshake.ResultBadCredentials {
		t.Fatalf("wrong password: %v", res)
	}
	if cmd.Runs() != runs+1 || w.srv.Logins().LoginsFailed != failed+1 {
		t.Fatalf("a wrong password: %d runs, %d failures counted; want 1 and 1", cmd.Runs()-runs, w.srv.Logins().LoginsFailed-failed)
	}
}

// TestCommandFailuresRateLimited: the failure limit per source holds for a command as for the users file:
// after failed_login_burst rejections a source is refused before the command runs, even with the right
// password, while another source gets in.
func TestCommandFailuresRateLimited(t *testing.T) {
	t.Parallel()
	w, cmd, _ := commandWorld(t, func(c *ServerConfig) { c.Limits.FailureBurst, c.Limits.FailureInterval = 3, time.Hour })
	w.startServer()
	attacker := func(i int) *rawPeer {
		return w.rawPeer(netip.AddrPortFrom(netip.MustParseAddr("198.18.6.1"), uint16(1000+i)))
	}
	for i := range 3 {
		if res := attacker(i).login(t, "alice", "guess"); res != handshake.ResultBadCredentials {
			t.Fatalf("failure %d: %v", i, res)
		}
	}
	runs := cmd.Runs()
	if res := attacker(3).login(t, "alice", testPassword); res != handshake.ResultRateLimited {
		t.Fatalf("right password from the failing source: %v, want rate limited", res)
	}
	if cmd.Runs() != runs {
		t.Fatal("the command ran for a source over its failure limit")
	}
	if res := w.rawPeer(netip.MustParseAddrPort("198.18.7.1:1000")).login(t, "alice", testPassword); res != handshake.ResultOK {
		t.Fatalf("right password from another source: %v", res)
	}
}

// TestCommandChargesTheBudget: each run costs users.CommandParams of the hashing budget. With a budget of
// five runs a second (bursts of ten), 30 logins at once are partly refused as busy, and the command does
// not run for those.
func TestCommandChargesTheBudget(t *testing.T) {
	t.Parallel()
	w, cmd, _ := commandWorld(t, func(c *ServerConfig) { c.Limits.HashBudget = 5 * users.CommandParams.Cost() })
	w.startServer()
	ok, busy := loginsAtOnce(t, 30, func(i int) handshake.Result {
		return w.tryLogin(netip.AddrPortFrom(netip.MustParseAddr("198.18.8.1"), uint16(1000+i)), "alice", i)
	})
	t.Logf("30 command logins at once: %d ok, %d busy, %d runs", ok, busy, cmd.Runs())
	if busy == 0 || ok == 0 || cmd.Runs() != uint64(ok) {
		t.Fatalf("%d ok, %d busy, %d runs: want some of each, and one run per login let through", ok, busy, cmd.Runs())
	}
}

// TestCommandRecheckAtMaxSessionAge: rekeys do not run the command; the login that max_session_age forces
// does, and once the command rejects the user, that login fails and the client stops with "bad
// credentials", as a client whose user was removed stops.
func TestCommandRecheckAtMaxSessionAge(t *testing.T) {
	t.Parallel()
	w, cmd, deny := commandWorld(t, func(c *ServerConfig) { c.MaxSessionAge = 2 * time.Second })
	w.startServer()
	c := w.connect(clientOpts{rekeyAfter: 300 * time.Millisecond})
	runs := cmd.Runs()
	resumed := w.srv.Logins().Resumes
	waitUntil(t, 5*time.Second, "two rekeys", func() bool { return w.srv.Logins().Resumes >= resumed+2 })
	if w.srv.logins.stats.ok.Load() == 1 && cmd.Runs() != runs {
		t.Fatalf("rekeys ran the command (%d runs)", cmd.Runs()-runs)
	}
	waitUntil(t, 10*time.Second, "the login max_session_age forces", func() bool { return cmd.Runs() > runs })
	must(t, os.WriteFile(deny, nil, 0o600))
	err := c.exit(10 * time.Second)
	var le *LoginError
	if !errors.As(err, &le) || le.Reason != "bad_credentials" {
		t.Fatalf("client ended with %v, want bad_credentials", err)
	}
}
