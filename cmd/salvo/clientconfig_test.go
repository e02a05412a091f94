package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/skip2/go-qrcode"

	"github.com/salvovpn/salvo/config"
)

// TestClientConfig: salvo client-config prints, for a user of the users file, a client configuration that
// `salvo client --check` accepts once its password file exists, holding the gateway's endpoint and key but
// neither the password nor its hash. A login with every kind of character the users file allows is
// written as it is.
func TestClientConfig(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "server.toml")
	writeConf := func(text string) {
		t.Helper()
		if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	_, pub, e := runCLI(t, "", "keygen", "--out", filepath.Join(dir, "server.key"))
	if pub == "" {
		t.Fatalf("keygen: %s", e)
	}
	usersFile := filepath.Join(dir, "users")
	const login, password = "Al.i_ce@corp-1", "correct horse"
	for _, u := range []string{login, "bob"} {
		if code, _, e := runCLI(t, password+"\n", "user", "add", "--file", usersFile, "--password-stdin", u); code != exitOK {
			t.Fatalf("user add %s: %s", u, e)
		}
	}

	writeConf(config.ExampleServer())
	code, out, e := runCLI(t, "", "client-config", "--config", conf, login)
	if code != exitUsage || out != "" || !strings.Contains(e, conf+": public_endpoint: missing") {
		t.Fatalf("without public_endpoint: exit %d, stdout %q, stderr %q", code, out, e)
	}

	writeConf(strings.Replace(config.ExampleServer(), "# public_endpoint =", "public_endpoint =", 1))
	pwFile := filepath.Join(dir, login+"'s password")
	code, out, e = runCLI(t, "", "client-config", "--config", conf, "--password-file", pwFile, login)
	if code != exitOK || e != "" {
		t.Fatalf("client-config: exit %d, stderr %q", code, e)
	}
	hash, _ := os.ReadFile(usersFile)
	if strings.Contains(out, password) || strings.Contains(out, "argon2") || !strings.Contains(string(hash), "argon2") {
		t.Fatalf("client configuration holds the password or its hash:\n%s", out)
	}
	client := filepath.Join(dir, "client.toml")
	if err := os.WriteFile(client, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := config.LoadClient(client)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if c.Server != "vpn.example.com:51820" || c.ServerPublicKey != strings.TrimSpace(pub) || c.Username != login || c.PasswordFile != pwFile {
		t.Fatalf("client configuration: %+v\n%s", c, out)
	}
	if !strings.Contains(out, "install -m 600 /dev/null '"+dir+"/"+login+`'\''s password'`) {
		t.Errorf("the comment does not quote the password file for the shell:\n%s", out)
	}
	if code, _, e := runCLI(t, "", "client", "--check", "--config", client); code != exitUsage || !strings.Contains(e, "password_file") {
		t.Errorf("check without the password file: exit %d: %s", code, e)
	}
	if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, e := runCLI(t, "", "client", "--check", "--config", client); code != exitOK {
		t.Fatalf("client --check of the written configuration: exit %d: %s\n%s", code, e, out)
	}

	// By default a placeholder path named after the login.
	if _, out, _ := runCLI(t, "", "client-config", "--config", conf, "bob"); !strings.Contains(out, `password_file = "/etc/salvo/bob.password"`) {
		t.Errorf("default password_file:\n%s", out)
	}
	if code, out, _ := runCLI(t, "", "client-config", "--config", conf, "--qr", "bob"); code != exitOK || strings.Contains(out, "bob") ||
		!strings.Contains(out, "\u2588") {
		t.Errorf("--qr: exit %d:\n%s", code, out)
	}
	if code, _, e := runCLI(t, "", "client-config", "--config", conf, "carol"); code != exitUsage || !strings.Contains(e, `user "carol" is not in users file `+usersFile) {
		t.Errorf("unknown user: exit %d: %s", code, e)
	}
	if code, _, e := runCLI(t, "", "client-config", "--config", conf, "bad/login"); code != exitUsage || !strings.Contains(e, `contains "/"`) {
		t.Errorf("bad login: exit %d: %s", code, e)
	}
	if code, _, e := runCLI(t, "", "client-config", "--config", conf); code != exitUsage || !strings.Contains(e, "missing USER") {
		t.Errorf("no user: exit %d: %s", code, e)
	}
	if code, _, _ := runCLI(t, "", "user", "disable", "--file", usersFile, "bob"); code != exitOK {
		t.Fatal("user disable bob")
	}
	if code, out, e := runCLI(t, "", "client-config", "--config", conf, "bob"); code != exitOK || !strings.Contains(out, `username = "bob"`) ||
		!strings.Contains(e, `user "bob" is disabled`) {
		t.Errorf("disabled user: exit %d, stdout %q, stderr %q", code, out, e)
	}
	// The key file is read as the gateway reads it: not if others can read it.
	if err := os.Chmod(filepath.Join(dir, "server.key"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, out, e := runCLI(t, "", "client-config", "--config", conf, login); code != exitUsage || out != "" ||
		!strings.Contains(e, "private_key_file") || !strings.Contains(e, "chmod 600") {
		t.Errorf("readable key file: exit %d, stdout %q, stderr %q", code, out, e)
	}
}

// TestClientConfigQR: --qr draws the configuration's QR code, and every character stands for the two
// modules it covers (read back here into the library's bitmap).
func TestClientConfigQR(t *testing.T) {
	text, err := clientConfig("vpn.example.com:51820", strings.Repeat("A", 43)+"=", "alice", "/etc/salvo/alice.password", false)
	if err != nil || strings.Contains(text, "#") || strings.Count(text, "\n") != 4 {
		t.Fatalf("without comments: %v %q", err, text)
	}
	code, err := qrcode.New(text, qrcode.Medium)
	if err != nil {
		t.Fatal(err)
	}
	want := code.Bitmap()
	drawn := halfBlocks(want)
	var got [][]bool
	for _, line := range strings.Split(strings.TrimSuffix(drawn, "\n"), "\n") {
		line = strings.TrimSuffix(strings.TrimPrefix(line, "\x1b[30;107m"), "\x1b[0m")
		var top, bottom []bool
		for _, r := range line {
			top = append(top, r == '█' || r == '▀')
			bottom = append(bottom, r == '█' || r == '▄')
		}
		got = append(got, top, bottom)
	}
	got = got[:len(want)] // an odd last row is drawn over an empty one
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("drawing does not match the bitmap:\n%s", drawn)
	}
}
