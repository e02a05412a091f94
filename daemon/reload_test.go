package daemon

import (
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/tun"

	"github.com/salvovpn/salvo/config"
	"github.com/salvovpn/salvo/engine"
	"github.com/salvovpn/salvo/engine/enginetest"
	"github.com/salvovpn/salvo/engine/ippool"
	"github.com/salvovpn/salvo/engine/users"
	"github.com/salvovpn/salvo/protocol/handshake"
)

// TestDiffKeys: keys are named as the configuration file spells them, and split into those a reload
// applies and those that need a restart.
func TestDiffKeys(t *testing.T) {
	old := &config.Server{Listen: []string{"0.0.0.0:51820"}, TunName: "salvo0", Routes: []string{"10.0.0.0/8"}, LogLevel: "info"}
	next := *old
	if r, s := diffKeys(old, &next); len(r)+len(s) != 0 {
		t.Fatalf("no change reported as %v %v", r, s)
	}
	next.Routes = []string{"10.0.0.0/8", "192.168.0.0/16"}
	next.LogLevel = "debug"
	next.FailedLoginEvery = config.Duration{Duration: time.Second}
	next.TunName = "salvo1"
	next.Listen = []string{"0.0.0.0:51821"}
	r, s := diffKeys(old, &next)
	if !slices.Equal(r, []string{"routes", "failed_login_interval", "log_level"}) || !slices.Equal(s, []string{"listen", "tun_name"}) {
		t.Fatalf("reloadable %v, restart %v", r, s)
	}
	// Every reloadable key must be a key of the file: a misspelt one would silently need a restart.
	var keys []string
	for f := range reflect.TypeFor[config.Server]().Fields() {
		keys = append(keys, f.Tag.Get("toml"))
	}
	for _, k := range ReloadableKeys {
		if !slices.Contains(keys, k) {
			t.Errorf("reloadable key %q is not a configuration key", k)
		}
	}
}

// TestRefusedReloadChangesNothing: a configuration the engine refuses (65 routes, one more than a
// session's settings can carry) leaves the users as they were, even though the users file changed too.
func TestRefusedReloadChangesNothing(t *testing.T) {
	dir := t.TempDir()
	usersPath := filepath.Join(dir, "users")
	store := users.New()
	h, err := users.HashPassword([]byte("pw"), users.Params{Memory: 256, Time: 1, Threads: 1}, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Add(users.User{Login: "alice", Hash: h}); err != nil {
		t.Fatal(err)
	}
	if err := store.Save(usersPath); err != nil {
		t.Fatal(err)
	}
	srv, pool := newTestServer(t, store)
	running := &config.Server{UsersFile: usersPath, MaxSessionsPerUser: 4, LogLevel: "info"}
	next := *running
	for i := range 65 {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 100, byte(i), 0}), 24)
		next.Routes, next.RoutePrefixes = append(next.Routes, p.String()), append(next.RoutePrefixes, p)
	}
	// The users file loses alice in the same reload.
	if err := users.New().Save(usersPath); err != nil {
		t.Fatal(err)
	}
	r := &reloader{running: running, load: func() (*config.Server, error) { return &next, nil }, srv: srv, store: store,
		pool4: pool, log: slog.New(slog.DiscardHandler)}
	if _, err := r.reload(); err == nil {
		t.Fatal("a reload with 65 routes was accepted")
	}
	if _, ok := store.Lookup("alice"); !ok {
		t.Fatal("the refused reload removed alice from the users")
	}
	if r.running != running {
		t.Fatal("the refused reload replaced the running configuration")
	}
}

// newTestServer is a gateway engine (not running) on an in-memory network, checking logins with auth.
func newTestServer(t *testing.T, auth users.Authenticator) (*engine.Server, *ippool.Pool) {
	t.Helper()
	static, err := handshake.GenerateKeypair(nil)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := ippool.New(netip.MustParsePrefix("10.77.0.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := enginetest.NewNetwork().Listen(netip.MustParseAddrPort("192.0.2.1:51820"))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := engine.NewServer(engine.ServerConfig{Static: static, Users: auth, Pool4: pool,
		Settings: handshake.Settings{MTU: 1420}}, []tun.Device{enginetest.NewTUN("salvo0", 1420)}, []engine.PacketConn{conn})
	if err != nil {
		t.Fatal(err)
	}
	return srv, pool
}

// TestReloadAuthCommand: with auth = "command", a reload applies a new auth_command; one that is missing
// is refused, naming the key, and the old command stays in force.
func TestReloadAuthCommand(t *testing.T) {
	dir := t.TempDir()
	prog := func(name string, status int) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(fmt.Sprintf("#!/bin/sh\nexit %d\n", status)), 0o700); err != nil {
			t.Fatal(err)
		}
		return p
	}
	accept, reject := prog("accept", 0), prog("reject", 1)
	running := &config.Server{Path: filepath.Join(dir, "server.toml"), Auth: "command", AuthCommand: accept,
		AuthTimeout: config.Duration{Duration: time.Second}, MaxSessionsPerUser: 4, LogLevel: "info"}
	cmd, err := users.NewCommand(commandConfig(running), nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, pool := newTestServer(t, cmd)
	next := *running
	r := &reloader{running: running, load: func() (*config.Server, error) { c := next; return &c, nil }, srv: srv,
		command: cmd, pool4: pool, log: slog.New(slog.DiscardHandler)}

	next.AuthCommand = filepath.Join(dir, "missing")
	if _, err := r.reload(); err == nil || !strings.Contains(err.Error(), "auth_command: ") || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("reload to a missing auth_command: %v", err)
	}
	if _, err := cmd.Authenticate("alice", []byte("pw")); err != nil || r.running != running {
		t.Fatalf("the refused reload changed the command: %v", err)
	}

	next.AuthCommand, next.AuthTimeout = reject, config.Duration{Duration: 2 * time.Second}
	res, err := r.reload()
	if err != nil || !slices.Equal(res.Changed, []string{"auth_command", "auth_timeout"}) {
		t.Fatalf("reload to another auth_command: %+v, %v", res, err)
	}
	if _, err := cmd.Authenticate("alice", []byte("pw")); !errors.Is(err, users.ErrRejected) {
		t.Fatalf("after the reload the old command still decides: %v", err)
	}
}
