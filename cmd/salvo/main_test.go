package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func runCLI(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{{}, {"bogus"}, {"server", "--nope"}, {"user"}, {"user", "frob", "x"}, {"keygen", "extra"}} {
		if code, _, _ := runCLI(t, "", args...); code != exitUsage {
			t.Errorf("%q: exit %d, want %d", args, code, exitUsage)
		}
	}
	if code, out, _ := runCLI(t, "", "--help"); code != exitOK || !strings.Contains(out, "Exit codes") {
		t.Fatalf("--help: %d %q", code, out)
	}
	if code, _, errOut := runCLI(t, "", "server", "--help"); code != exitOK || !strings.Contains(errOut, "private_key_file") {
		t.Fatalf("server --help: %d %q", code, errOut)
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
