package e2e

import (
	"context"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/salvovpn/salvo/internal/pgtest"
)

// storeUserCmd runs salvo user ARGS --store (the world's password on its standard input).
func storeUserCmd(t *testing.T, db *pgtest.Server, args ...string) {
	t.Helper()
	cmd := exec.Command(salvoBin, append([]string{"user"}, append(args, "--store", db.DSN)...)...)
	cmd.Stdin = strings.NewReader(password + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("salvo user %v: %v\n%s", args, err, out)
	}
}

// TestPostgresStore: a gateway with auth = "postgres" on a real PostgreSQL server (internal/pgtest, on a
// unix socket). Users added with salvo user --store log in; a user disabled in the store is revoked at
// once, without a reload; while the database is down the established session carries on and a new login
// fails saying why; once it is back logins work again, and every ended session has its accounting row.
func TestPostgresStore(t *testing.T) {
	db := pgtest.Start(t)
	w := newWorld(t)
	storeUser := func(args ...string) { storeUserCmd(t, db, args...) }
	for _, u := range []string{"alice", "bob", "carol"} {
		storeUser("add", "--password-stdin", u)
	}
	srv := w.startServer("auth = \"postgres\"\nstore = \"" + db.DSN + "\"\nusers_file =")
	host := netip.MustParseAddr(hostV4)

	alice := w.addClient()
	w.connect(alice, "alice", alice.gwV4+":51820", "")
	must(t, alice.ns.Ping(host, 5*time.Second))
	bob := w.addClient()
	w.connect(bob, "bob", bob.gwV4+":51820", "")

	// Revocation through the store: no SIGHUP, no reload.
	storeUser("disable", "alice")
	if code := exitCode(t, alice.proc, 10*time.Second); code != 4 || !strings.Contains(alice.proc.output(), "access revoked") {
		t.Fatalf("revoked client exited %d, want 4\n%s", code, alice.proc.output())
	}

	// The database goes away: bob's session carries on, a new login is refused with the reason.
	db.Stop()
	waitFor(t, 10*time.Second, "the gateway noticing the store is gone", func() error {
		if !strings.Contains(srv.output(), "user store connection lost") {
			return errorf("not yet")
		}
		return nil
	})
	must(t, bob.ns.Ping(host, 5*time.Second))
	carol := w.addClient()
	path := w.clientConfig(carol, "carol", password, carol.gwV4+":51820", "")
	out, err := carol.ns.Exec(t.Context(), salvoBin, "client", "--config", path).CombinedOutput()
	if ee, _ := err.(*exec.ExitError); ee == nil || ee.ExitCode() != 3 || !strings.Contains(string(out), "user store is unavailable") {
		t.Fatalf("login with the store down: %v\n%s", err, out)
	}

	// Back: logins work again.
	db.Restart()
	waitFor(t, 20*time.Second, "the gateway reconnected to the store", func() error {
		if strings.Count(srv.output(), "user store connected") < 2 {
			return errorf("not yet")
		}
		return nil
	})
	w.connect(carol, "carol", carol.gwV4+":51820", "")
	must(t, carol.ns.Ping(host, 5*time.Second))

	// A kick goes through the store to every gateway (here: back to this one, which ends nothing twice).
	out, err = exec.Command(salvoBin, "kick", "--socket", filepath.Join(w.dir, "server.sock"), "carol").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "ended 1 session(s) of carol") || !strings.Contains(string(out), "other gateways") {
		t.Fatalf("kick: %v\n%s", err, out)
	}
	if code := exitCode(t, carol.proc, 10*time.Second); code != 4 {
		t.Fatalf("kicked client exited %d, want 4\n%s", code, carol.proc.output())
	}

	// alice's revoked session has its accounting row (written at once), with her traffic.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, db.DSN)
	must(t, err)
	defer conn.Close(ctx)
	var reason string
	var rx int64
	waitFor(t, 10*time.Second, "alice's accounting row", func() error {
		return conn.QueryRow(ctx, `SELECT reason, rx_bytes FROM salvo_sessions_ended WHERE login = 'alice'`).Scan(&reason, &rx)
	})
	if reason != "revoked" || rx == 0 {
		t.Fatalf("alice's row: reason %q, rx_bytes %d", reason, rx)
	}
}
