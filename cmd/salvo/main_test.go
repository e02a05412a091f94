package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/salvovpn/salvo/config"
	"github.com/salvovpn/salvo/engine"
	"github.com/salvovpn/salvo/engine/users"
	"github.com/salvovpn/salvo/internal/pgtest"
)

func runCLI(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

// singleDashOption finds an option listed as "-name": the usage lines spell them "--name".
var singleDashOption = regexp.MustCompile(`\n  -[a-z]`)

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{{}, {"bogus"}, {"server", "--nope"}, {"user"}, {"user", "frob", "x"}, {"keygen", "extra"}} {
		if code, _, _ := runCLI(t, "", args...); code != exitUsage {
			t.Errorf("%q: exit %d, want %d", args, code, exitUsage)
		}
	}
	if code, out, _ := runCLI(t, "", "--help"); code != exitOK || !strings.Contains(out, "Exit codes") {
		t.Fatalf("--help: %d %q", code, out)
	}
	// Every command's help goes to standard output (so it pipes into less) and lists options as the usage
	// lines spell them.
	for _, cmd := range []string{"server", "client", "client-config", "keygen", "pubkey", "status", "kick", "reload", "version"} {
		code, out, errOut := runCLI(t, "", cmd, "--help")
		if code != exitOK || errOut != "" || !strings.Contains(out, "Usage: salvo "+cmd) || singleDashOption.MatchString(out) {
			t.Errorf("%s --help: exit %d, stdout %q, stderr %q", cmd, code, out, errOut)
		}
	}
	_, page, _ := runCLI(t, "", "help", "server")
	if _, out, _ := runCLI(t, "", "server", "--help"); page != out {
		t.Errorf("salvo help server differs from salvo server --help: %q", page)
	}
	if _, out, _ := runCLI(t, "", "server", "--help"); !strings.Contains(out, "private_key_file") || !strings.Contains(out, "  --config string") {
		t.Errorf("server --help lacks the example or --config: %q", out)
	}
	if code, _, errOut := runCLI(t, "", "server", "--nope"); code != exitUsage || !strings.Contains(errOut, "see 'salvo server --help'") ||
		strings.Count(errOut, "not defined") != 1 {
		t.Errorf("server --nope: exit %d, stderr %q", code, errOut)
	}
}

func TestVersion(t *testing.T) {
	code, out, _ := runCLI(t, "", "version")
	if code != exitOK || !regexp.MustCompile(`^salvo dev .*go1\.\d+`).MatchString(out) {
		t.Fatalf("version: exit %d, %q; want the version and the Go version", code, out)
	}
}

func TestConfigErrorNamesFileAndLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "server.toml")
	if err := os.WriteFile(path, []byte("private_key_file = \"k\"\nusers_file = \"u\"\nmtu = 12\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errOut := runCLI(t, "", "server", "--config", path)
	if code != exitUsage || !strings.Contains(errOut, path) || !strings.Contains(errOut, ":3:") || !strings.Contains(errOut, "mtu") {
		t.Fatalf("exit %d: %s", code, errOut)
	}
}

func TestKeygenPubkey(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "server.key")
	code, pub, errOut := runCLI(t, "", "keygen", "--out", keyFile)
	if code != exitOK {
		t.Fatalf("keygen: %d %s", code, errOut)
	}
	fi, err := os.Stat(keyFile)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode: %v %v", fi, err)
	}
	if code, _, _ := runCLI(t, "", "keygen", "--out", keyFile); code == exitOK {
		t.Fatal("keygen overwrote an existing key")
	}
	priv, _ := os.ReadFile(keyFile)
	code, pub2, _ := runCLI(t, string(priv), "pubkey")
	if code != exitOK || pub2 != pub {
		t.Fatalf("pubkey %q != keygen %q", pub2, pub)
	}
	if code, _, _ := runCLI(t, "not a key\n", "pubkey"); code != exitUsage {
		t.Fatalf("bad key accepted: %d", code)
	}
	// Without --out keygen prints the private key alone, one line, which pipes into pubkey.
	code, priv2, _ := runCLI(t, "", "keygen")
	if code != exitOK || strings.Count(priv2, "\n") != 1 {
		t.Fatalf("keygen without --out: %d %q", code, priv2)
	}
	if code, pub3, e := runCLI(t, priv2, "pubkey"); code != exitOK || len(strings.TrimSpace(pub3)) != 44 {
		t.Fatalf("keygen | pubkey: %d %q %s", code, pub3, e)
	}
}

func TestUserCommands(t *testing.T) {
	file := filepath.Join(t.TempDir(), "users")
	if code, _, e := runCLI(t, "pw1\n", "user", "add", "--file", file, "--password-stdin", "alice", "--ipv4", "10.77.0.9"); code != exitOK {
		t.Fatalf("add: %d %s", code, e)
	}
	if code, _, _ := runCLI(t, "pw\n", "user", "add", "--file", file, "--password-stdin", "alice"); code == exitOK {
		t.Fatal("duplicate user added")
	}
	if code, _, _ := runCLI(t, "pw\n", "user", "add", "--file", file, "--password-stdin", "bob", "--ipv4", "fd00::1"); code != exitUsage {
		t.Fatal("IPv6 address accepted as --ipv4")
	}
	if code, _, _ := runCLI(t, "pw2\n", "user", "passwd", "--file", file, "--password-stdin", "alice"); code != exitOK {
		t.Fatal("passwd failed")
	}
	code, out, _ := runCLI(t, "", "user", "list", "--file", file)
	if code != exitOK || strings.TrimSpace(out) != "alice ipv4=10.77.0.9" {
		t.Fatalf("list: %d %q", code, out)
	}
	data, _ := os.ReadFile(file)
	if strings.Contains(string(data), "pw2") || !strings.Contains(string(data), "$argon2id$") {
		t.Fatalf("users file does not hold an argon2id hash only:\n%s", data)
	}
	if code, _, _ := runCLI(t, "", "user", "del", "--file", file, "alice"); code != exitOK {
		t.Fatal("del failed")
	}
	if code, out, _ := runCLI(t, "", "user", "list", "--file", file); code != exitOK || out != "" {
		t.Fatalf("after del: %q", out)
	}
}

func TestUserHelp(t *testing.T) {
	for _, arg := range []string{"--help", "-h", "help"} {
		code, out, errOut := runCLI(t, "", "user", arg)
		if code != exitOK || !strings.Contains(out, "salvo user disable") || errOut != "" {
			t.Errorf("user %s: exit %d, stdout %q, stderr %q", arg, code, out, errOut)
		}
	}
	code, out, errOut := runCLI(t, "", "user")
	if code != exitUsage || out != "" || !strings.Contains(errOut, "salvo user add") || !strings.Contains(errOut, "missing subcommand") {
		t.Errorf("user: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if code, out, errOut := runCLI(t, "", "user", "add", "--help"); code != exitOK || !strings.Contains(out, "salvo user add") || errOut != "" {
		t.Errorf("user add --help: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if code, out, _ := runCLI(t, "", "--help"); !strings.Contains(out, "disable, enable") {
		t.Errorf("salvo --help does not mention user disable/enable: %d %q", code, out)
	}
}

func TestUserUsageErrors(t *testing.T) {
	file := filepath.Join(t.TempDir(), "users")
	for _, args := range [][]string{
		{"add", "--file", file, "--password-stdin", "bad/login"},
		{"add", "--file", file, "--password-stdin", strings.Repeat("a", 65)},
		{"disable", "--file", file, "bad login"},
		{"del", "--file", file},
		{"enable", "--file", file, "a", "b"},
		{"passwd", "--file", file, "--ipv4", "10.0.0.1", "--password-stdin", "alice"},
		{"disable", "--file", file, "--password-stdin", "alice"},
		{"list", "--file", file, "alice"},
	} {
		code, _, errOut := runCLI(t, "pw\n", append([]string{"user"}, args...)...)
		if code != exitUsage {
			t.Errorf("user %q: exit %d, want %d (%s)", args, code, exitUsage, errOut)
		}
	}
	if _, err := os.Stat(file); err == nil {
		t.Fatal("a usage error created the users file")
	}
	if code, _, errOut := runCLI(t, "pw\n", "user", "add", "--file", file, "--password-stdin", "bad/login"); !strings.Contains(errOut, `contains "/"`) {
		t.Errorf("bad login message: %d %q", code, errOut)
	}
}

func TestUserDisableEnable(t *testing.T) {
	file := filepath.Join(t.TempDir(), "users")
	for _, login := range []string{"alice", "bob"} {
		if code, _, e := runCLI(t, "pw-"+login+"\n", "user", "add", "--file", file, "--password-stdin", login); code != exitOK {
			t.Fatalf("add %s: %d %s", login, code, e)
		}
	}
	if code, _, e := runCLI(t, "", "user", "disable", "--file", file, "bob"); code != exitOK {
		t.Fatalf("disable: %d %s", code, e)
	}
	code, out, _ := runCLI(t, "", "user", "list", "--file", file)
	if code != exitOK || out != "alice\nbob disabled\n" {
		t.Fatalf("list after disable: %d %q", code, out)
	}
	data, _ := os.ReadFile(file)
	if !strings.Contains(string(data), " disabled\n") {
		t.Fatalf("users file does not mark bob disabled:\n%s", data)
	}
	store, err := users.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Authenticate("bob", []byte("pw-bob")); !errors.Is(err, users.ErrDisabled) {
		t.Fatalf("disabled bob authenticated: %v", err)
	}
	// Disabling twice changes nothing and succeeds.
	if code, _, e := runCLI(t, "", "user", "disable", "--file", file, "bob"); code != exitOK || !strings.Contains(e, "already disabled") {
		t.Fatalf("second disable: %d %q", code, e)
	}
	// A disabled user can still be given a new password.
	if code, _, e := runCLI(t, "pw2\n", "user", "passwd", "--file", file, "--password-stdin", "bob"); code != exitOK {
		t.Fatalf("passwd of a disabled user: %d %s", code, e)
	}
	if code, _, e := runCLI(t, "", "user", "enable", "--file", file, "bob"); code != exitOK {
		t.Fatalf("enable: %d %s", code, e)
	}
	if code, out, _ := runCLI(t, "", "user", "list", "--file", file); code != exitOK || out != "alice\nbob\n" {
		t.Fatalf("list after enable: %d %q", code, out)
	}
	store, _ = users.Load(file)
	if u, err := store.Authenticate("bob", []byte("pw2")); err != nil || u.Login != "bob" {
		t.Fatalf("bob after enable: %v", err)
	}
	if code, _, _ := runCLI(t, "", "user", "disable", "--file", file, "carol"); code != exitFailure {
		t.Fatalf("disable of an unknown user: exit %d, want %d", code, exitFailure)
	}
}

// TestServerCheck: `salvo server --check` accepts the shipped example with its key and users file beside
// it, and rejects each broken input with exit 2 and a message naming the key (and line), the user and the
// file: no key file, a garbage key, a fixed address outside the pool, a NAT interface that does not exist.
func TestServerCheck(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "server.toml")
	write := func(name, text string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("server.toml", config.ExampleServer())
	if code, _, e := runCLI(t, "", "keygen", "--out", filepath.Join(dir, "server.key")); code != exitOK {
		t.Fatalf("keygen: %s", e)
	}
	users := filepath.Join(dir, "users")
	if code, _, e := runCLI(t, "pw\n", "user", "add", "--file", users, "--password-stdin", "alice"); code != exitOK {
		t.Fatalf("user add: %s", e)
	}
	if code, _, e := runCLI(t, "", "server", "--check", "--config", conf); code != exitOK || !strings.Contains(e, "fine") {
		t.Fatalf("the shipped example with its files: exit %d: %s", code, e)
	}

	key, _ := os.ReadFile(filepath.Join(dir, "server.key"))
	write("server.key", "not a key\n")
	keyLine := 1 + strings.Count(config.ExampleServer()[:strings.Index(config.ExampleServer(), "private_key_file")], "\n")
	if code, _, e := runCLI(t, "", "server", "--check", "--config", conf); code != exitUsage || !strings.Contains(e, fmt.Sprintf("%s:%d: private_key_file", conf, keyLine)) {
		t.Errorf("garbage key: exit %d: %s", code, e)
	}
	// Running it fails the same way, before it touches anything.
	if code, _, e := runCLI(t, "", "server", "--config", conf); code != exitUsage || !strings.Contains(e, "private_key_file") {
		t.Errorf("server with a garbage key: exit %d: %s", code, e)
	}
	os.Remove(filepath.Join(dir, "server.key"))
	if code, _, e := runCLI(t, "", "server", "--check", "--config", conf); code != exitUsage || !strings.Contains(e, "private_key_file") {
		t.Errorf("no key file: exit %d: %s", code, e)
	}
	write("server.key", string(key))

	if code, _, e := runCLI(t, "pw\n", "user", "add", "--file", users, "--password-stdin", "bob", "--ipv4", "10.99.0.5"); code != exitOK {
		t.Fatalf("user add bob: %s", e)
	}
	code, _, e := runCLI(t, "", "server", "--check", "--config", conf)
	if code != exitUsage || !strings.Contains(e, "ipv4_pool") || !strings.Contains(e, `user "bob"`) || !strings.Contains(e, users) {
		t.Errorf("fixed address outside the pool: exit %d: %s", code, e)
	}
	if code, _, _ := runCLI(t, "", "user", "del", "--file", users, "bob"); code != exitOK {
		t.Fatal("user del bob")
	}

	// A ticket key file that others can read (or that is garbage) is refused like the private key.
	state := filepath.Join(dir, "state")
	if err := os.Mkdir(state, 0o700); err != nil {
		t.Fatal(err)
	}
	write("server.toml", strings.Replace(config.ExampleServer(), `state_dir = "/var/lib/salvo"`, fmt.Sprintf("state_dir = %q", state), 1))
	write("state/ticket-keys", "")
	if err := os.Chmod(filepath.Join(state, "ticket-keys"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, e := runCLI(t, "", "server", "--check", "--config", conf); code != exitUsage || !strings.Contains(e, "ticket_keys_file") || !strings.Contains(e, "ticket key file") {
		t.Errorf("world-readable ticket keys: exit %d: %s", code, e)
	}
	os.Remove(filepath.Join(state, "ticket-keys"))
	if code, _, e := runCLI(t, "", "server", "--check", "--config", conf); code != exitOK {
		t.Errorf("no ticket keys yet: exit %d: %s", code, e)
	}

	write("server.toml", strings.Replace(config.ExampleServer(), "nat = false", "nat = true\nnat_interface = \"nosuch0\"", 1))
	if code, _, e := runCLI(t, "", "server", "--check", "--config", conf); code != exitUsage || !strings.Contains(e, `nat_interface: no interface "nosuch0"`) {
		t.Errorf("missing NAT interface: exit %d: %s", code, e)
	}
}

// TestServerCheckAuthCommand: with auth = "command", `salvo server --check` wants no users file but an
// executable auth_command that only root or the gateway's user can change, and names the key and its line
// when it is not.
func TestServerCheckAuthCommand(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "server.toml")
	if code, _, e := runCLI(t, "", "keygen", "--out", filepath.Join(dir, "server.key")); code != exitOK {
		t.Fatalf("keygen: %s", e)
	}
	text := strings.Replace(config.ExampleServer(), `users_file = "users"`, "auth = \"command\"\nauth_command = \"auth\"", 1)
	text = strings.Replace(text, `max_session_age = "0s"`, `max_session_age = "1h"`, 1)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	line := 1 + strings.Count(text[:strings.Index(text, "auth_command")], "\n")
	prog := filepath.Join(dir, "auth")
	for _, tc := range []struct {
		mode os.FileMode // 0: no file
		want string
	}{{0, "no such file"}, {0o644, "is not executable"}, {0o777, "group or others can change it"}} {
		os.Remove(prog)
		if tc.mode != 0 {
			if err := os.WriteFile(prog, []byte("#!/bin/sh\nexit 1\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(prog, tc.mode); err != nil {
				t.Fatal(err)
			}
		}
		code, _, e := runCLI(t, "", "server", "--check", "--config", conf)
		if want := fmt.Sprintf("%s:%d: auth_command: ", conf, line); code != exitUsage || !strings.Contains(e, want) || !strings.Contains(e, tc.want) {
			t.Errorf("auth_command mode %04o: exit %d: %s; want %q ... %q", tc.mode, code, e, want, tc.want)
		}
	}
	if err := os.Chmod(prog, 0o700); err != nil {
		t.Fatal(err)
	}
	if code, _, e := runCLI(t, "", "server", "--check", "--config", conf); code != exitOK || !strings.Contains(e, "auth command are fine") {
		t.Fatalf("a good auth_command: exit %d: %s", code, e)
	}
}

// TestClientCheck: the shipped example's placeholder key is refused with exit 2, naming the key; with a
// real key and a private password file the configuration is fine.
func TestClientCheck(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "client.toml")
	if err := os.WriteFile(conf, []byte(config.ExampleClient()), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, e := runCLI(t, "", "client", "--check", "--config", conf); code != exitUsage || !strings.Contains(e, "server_public_key: is the example's placeholder") {
		t.Errorf("placeholder key: exit %d: %s", code, e)
	}
	_, pub, _ := runCLI(t, "", "keygen", "--out", filepath.Join(dir, "server.key"))
	text := strings.Replace(config.ExampleClient(), config.PlaceholderServerKey, strings.TrimSpace(pub), 1)
	text = strings.Replace(text, `# password_file = "password"`, `password_file = "password"`, 1)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "password"), []byte("pw\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, e := runCLI(t, "", "client", "--check", "--config", conf); code != exitUsage || !strings.Contains(e, "password_file") {
		t.Errorf("world-readable password file: exit %d: %s", code, e)
	}
	os.Chmod(filepath.Join(dir, "password"), 0o600)
	if code, _, e := runCLI(t, "", "client", "--check", "--config", conf); code != exitOK {
		t.Errorf("fine configuration: exit %d: %s", code, e)
	}
}

func TestByteCount(t *testing.T) {
	for n, want := range map[uint64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB", 5 << 20: "5.0 MiB", 3 << 30: "3.0 GiB", 1 << 62: "4096.0 PiB"} {
		if got := byteCount(n); got != want {
			t.Errorf("byteCount(%d) = %q, want %q", n, got, want)
		}
	}
}

// TestStatusNamesTheSocketsTried: with nothing running, status says which sockets it asked.
func TestStatusNamesTheSocketsTried(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock")
	code, _, e := runCLI(t, "", "status", "--socket", sock)
	if code != exitFailure || !strings.Contains(e, sock) {
		t.Fatalf("status on a missing socket: exit %d: %s", code, e)
	}
}

// TestControlSocketFlag: --control-socket replaces the configuration's control_socket (the systemd units
// give each instance its own socket with it) and must be an absolute path, as control_socket must.
func TestControlSocketFlag(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "/run/salvo/client.sock"},
		{[]string{"--control-socket", "/run/salvo/client-office/control.sock"}, "/run/salvo/client-office/control.sock"},
	} {
		fs := newFlags("client", "", &bytes.Buffer{})
		apply := controlSocketFlag(fs)
		if err := fs.parseFlags(tc.args); err != nil {
			t.Fatal(err)
		}
		sock := "/run/salvo/client.sock"
		if err := apply(&sock); err != nil || sock != tc.want {
			t.Errorf("%q: socket %q, %v; want %q", tc.args, sock, err, tc.want)
		}
	}
	dir := t.TempDir()
	for cmd, example := range map[string]string{"server": config.ExampleServer(), "client": config.ExampleClient()} {
		conf := filepath.Join(dir, cmd+".toml")
		if err := os.WriteFile(conf, []byte(example), 0o600); err != nil {
			t.Fatal(err)
		}
		code, _, e := runCLI(t, "", cmd, "--check", "--config", conf, "--control-socket", "control.sock")
		if code != exitUsage || !strings.Contains(e, "--control-socket") || !strings.Contains(e, "absolute path") {
			t.Errorf("%s with a relative --control-socket: exit %d: %s", cmd, code, e)
		}
	}
}

func TestPrintStatus(t *testing.T) {
	var b bytes.Buffer
	printStatus(&b, engine.Status{Role: "server", Device: "salvo0", Version: "0.1.0", Started: time.Now().Add(-time.Hour),
		Logins: &engine.LoginStats{LoginsOK: 3, Rejected: map[string]uint64{"wrong_key": 2, "stale": 0}}})
	for _, want := range []string{"salvo 0.1.0, up 1h0m0s", "logins: ok=3 ", "handshakes rejected: wrong_key=2\n"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, b.String())
		}
	}
}

// TestUserStore: salvo user works against the shared store as against a users file, and refuses a store
// address with a password in it and --file with --store.
func TestUserStore(t *testing.T) {
	db := pgtest.Start(t)
	if code, _, e := runCLI(t, "pw\n", "user", "add", "--store", db.DSN, "--password-stdin", "--ipv4", "10.77.0.5", "alice"); code != exitOK || !strings.Contains(e, "user store updated") {
		t.Fatalf("add: exit %d: %s", code, e)
	}
	if code, _, e := runCLI(t, "pw\n", "user", "add", "--store", db.DSN, "--password-stdin", "alice"); code == exitOK || !strings.Contains(e, "already exists") {
		t.Fatalf("second add: exit %d: %s", code, e)
	}
	if code, _, e := runCLI(t, "", "user", "disable", "--store", db.DSN, "alice"); code != exitOK {
		t.Fatalf("disable: exit %d: %s", code, e)
	}
	if code, out, e := runCLI(t, "", "user", "list", "--store", db.DSN); code != exitOK || out != "alice ipv4=10.77.0.5 disabled\n" {
		t.Fatalf("list: exit %d: %q %s", code, out, e)
	}
	if code, _, e := runCLI(t, "", "user", "del", "--store", db.DSN, "alice"); code != exitOK {
		t.Fatalf("del: exit %d: %s", code, e)
	}
	if code, out, _ := runCLI(t, "", "user", "list", "--store", db.DSN); code != exitOK || out != "" {
		t.Fatalf("list after del: %q", out)
	}
	if code, _, e := runCLI(t, "", "user", "list", "--store", "postgres://salvo:hunter2@db/salvo"); code != exitUsage || strings.Contains(e, "hunter2") {
		t.Fatalf("a password in --store: exit %d: %s", code, e)
	}
	if code, _, e := runCLI(t, "", "user", "list", "--store", db.DSN, "--file", "users"); code != exitUsage || !strings.Contains(e, "give one") {
		t.Fatalf("--file and --store: exit %d: %s", code, e)
	}

	// server --check reaches the store, and says so when it cannot.
	dir := t.TempDir()
	if code, _, e := runCLI(t, "", "keygen", "--out", filepath.Join(dir, "server.key")); code != exitOK {
		t.Fatalf("keygen: %s", e)
	}
	conf := filepath.Join(dir, "server.toml")
	text := strings.Replace(config.ExampleServer(), `users_file = "users"`, fmt.Sprintf("auth = \"postgres\"\nstore = %q", db.DSN), 1)
	text = strings.Replace(text, `state_dir = "/var/lib/salvo"`, fmt.Sprintf("state_dir = %q", dir), 1)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, e := runCLI(t, "", "server", "--check", "--config", conf); code != exitOK {
		t.Fatalf("check with the store up: exit %d: %s", code, e)
	}
	db.Stop()
	if code, _, e := runCLI(t, "", "server", "--check", "--config", conf); code != exitUsage || !strings.Contains(e, "store: ") || !strings.Contains(e, "store unavailable") {
		t.Fatalf("check with the store down: exit %d: %s", code, e)
	}
}
