package config

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const testKey = "Q2hhbmdlIG1lOiBwYXN0ZSB0aGUgZ2F0ZXdheSBrZXk="

const minimalClient = `server = "vpn.example.com:51820"
server_public_key = "` + testKey + `"
username = "alice"
`

func TestClientDefaults(t *testing.T) {
	path := write(t, "client.toml", minimalClient)
	c, err := LoadClient(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.TunName != "salvo1" || c.Routes != "pushed" || !c.DNS || c.FwMark != 0x5a17 || c.RouteTable != 51820 || c.RulePriority != 10000 ||
		c.ControlSocket != "/run/salvo/client.sock" || c.LogFormat != "text" || c.LogLevel != "info" ||
		c.PasswordFile != "" || c.PasswordEnv != "" || len(c.ExtraExcludedPrefixes) != 0 ||
		c.LeakGuard != "auto" || !c.KillSwitch || c.AllowLAN || c.DNSFailOpen || c.AcceptLANRoutes || c.AcceptCoveringExcludes {
		t.Fatalf("defaults wrong: %+v", c)
	}
	if c.ServerHost != "vpn.example.com" || c.ServerPort != 51820 || string(c.ServerKey[:6]) != "Change" || c.Path != path {
		t.Fatalf("derived fields wrong: %+v", c)
	}
}

func TestClientFull(t *testing.T) {
	path := write(t, "client.toml", `server = "[2001:db8::1]:443"
fallback_servers = ["vpn2.example.com:443", "192.0.2.9:51820"]
server_public_key = "`+testKey+`"
username = "bob@corp.example"
password_file = "secret"
tun_name = "tun9"
routes = "none"
extra_excluded_routes = ["192.168.1.0/24"]
dns = false
fwmark = 7
route_table = 100
control_socket = "/tmp/c.sock"
log_format = "json"
log_level = "error"
leak_guard = "on"
kill_switch = false
allow_lan = true
dns_fail_open = true
accept_lan_routes = true
accept_covering_excludes = true
`)
	c, err := LoadClient(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.LeakGuard != "on" || c.KillSwitch || !c.AllowLAN || !c.DNSFailOpen || !c.AcceptLANRoutes || !c.AcceptCoveringExcludes {
		t.Fatalf("full-tunnel settings wrong: %+v", c)
	}
	if c.ServerHost != "2001:db8::1" || c.ServerPort != 443 || c.DNS || c.FwMark != 7 || c.RouteTable != 100 ||
		c.Routes != "none" || c.PasswordFile != filepath.Join(filepath.Dir(path), "secret") || len(c.ExtraExcludedPrefixes) != 1 ||
		len(c.FallbackServers) != 2 {
		t.Fatalf("values wrong: %+v", c)
	}
}

// TestClientGuardOff proves that switching the guard off switches the kill switch (the guard outliving
// the client) off with it, rather than failing on a default.
func TestClientGuardOff(t *testing.T) {
	c, err := LoadClient(write(t, "client.toml", minimalClient+"leak_guard = \"off\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.LeakGuard != "off" || c.KillSwitch {
		t.Fatalf("leak_guard off: %+v", c)
	}
}

func TestClientErrors(t *testing.T) {
	for _, tc := range []struct {
		extra   string
		line    int
		key     string
		problem string
	}{
		{`password = "hunter2"`, 4, "password", "use password_file, password_env"},
		{`password_file = ""`, 4, "password_file", "must not be empty"},
		{"password_file = \"p\"\npassword_env = \"X\"", 5, "password_env", "cannot be used together"},
		{`password_env = "1X"`, 4, "password_env", "not an environment variable name"},
		{`tun_name = ""`, 4, "tun_name", "1..15"},
		{`routes = "all"`, 4, "routes", `"all" is not one of`},
		{`extra_excluded_routes = ["x"]`, 4, "extra_excluded_routes", "not a prefix"},
		{`dns = "yes"`, 4, "dns", "incompatible types"},
		{`fwmark = 0`, 4, "fwmark", "must not be 0"},
		{`fwmark = -1`, 4, "fwmark", "out of range"},
		{`route_table = 254`, 4, "route_table", "254 is not usable"},
		{`route_table = 0`, 4, "route_table", "not usable"},
		{`route_table = 4294967296`, 4, "route_table", "not usable"},
		{`rule_priority = 32765`, 4, "rule_priority", "outside 1..32764"},
		{`rule_priority = 0`, 4, "rule_priority", "outside"},
		{`control_socket = "c.sock"`, 4, "control_socket", "absolute"},
		{`log_level = "loud"`, 4, "log_level", "not one of"},
		{`usr = "x"`, 4, "usr", "unknown key"},
		{`leak_guard = "yes"`, 4, "leak_guard", `"yes" is not one of`},
		{"leak_guard = \"off\"\nkill_switch = true", 5, "kill_switch", "needs the leak guard"},
		{"leak_guard = \"off\"\nallow_lan = true", 5, "allow_lan", "only means something with the leak guard"},
		{`fallback_servers = ["vpn2"]`, 4, "fallback_servers", "not host:port"},
		{`fallback_servers = ["b:1", "b:1"]`, 4, "fallback_servers", "listed twice"},
		{`fallback_servers = ["a:1","b:1","c:1","d:1","e:1","f:1","g:1","h:1","i:1"]`, 4, "fallback_servers", "at most 8"},
	} {
		path := write(t, "client.toml", minimalClient+tc.extra+"\n")
		_, err := LoadClient(path)
		checkErr(t, err, path, tc.line, tc.key, tc.problem)
		if strings.Contains(err.Error(), "hunter2") {
			t.Fatalf("error reveals the password: %v", err)
		}
	}
	for _, tc := range []struct {
		content string
		line    int
		key     string
		problem string
	}{
		{"server_public_key = \"" + testKey + "\"\nusername = \"a\"\n", 0, "server", "missing"},
		{"server = \"h:1\"\nusername = \"a\"\n", 0, "server_public_key", "missing"},
		{"server = \"h:1\"\nserver_public_key = \"" + testKey + "\"\n", 0, "username", "missing"},
		{"server = \"::1:51820\"\n", 1, "server", "not host:port"},
		{"server = \"vpn.example.com\"\n", 1, "server", "not host:port"},
		{"server = \"vpn.example.com:https\"\n", 1, "server", "must be a number"},
		{"server = \"vpn.example.com:0\"\n", 1, "server", "must be a number 1..65535"},
		{"server = \"bad host!:1\"\n", 1, "server", "neither an IP address nor a DNS name"},
		{"server = \":1\"\n", 1, "server", "neither an IP address nor a DNS name"},
		{"server_public_key = \"AAAA\"\n", 1, "server_public_key", "decodes to 3 bytes"},
		{"server_public_key = \"not base64!\"\n", 1, "server_public_key", "not valid standard base64"},
		{"server_public_key = \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"\n", 1, "server_public_key", "all zeros"},
		{"username = \"a b\"\n", 1, "username", "only A-Z"},
		{"username = \"\"\n", 1, "username", "1..64"},
		// A syntax error on the password line must not quote it.
		{"password = \"hunter2\\q\"\n", 1, "password", "details hidden"},
	} {
		path := write(t, "client.toml", tc.content)
		_, err := LoadClient(path)
		checkErr(t, err, path, tc.line, tc.key, tc.problem)
		if strings.Contains(err.Error(), "hunter2") {
			t.Fatalf("error reveals the password: %v", err)
		}
	}
}

func TestExampleClientLoads(t *testing.T) {
	path := write(t, "client.toml", ExampleClient())
	c, err := LoadClient(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.ServerPort != 51820 || c.Username != "alice" {
		t.Fatalf("example: %+v", c)
	}
}

func TestResolvePassword(t *testing.T) {
	dir := t.TempDir()
	file := func(content string) string {
		p := filepath.Join(dir, "pw")
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	noPrompt := func() ([]byte, error) { t.Fatal("prompted although a source was configured"); return nil, nil }

	for content, want := range map[string]string{
		"s3cret":     "s3cret",
		"s3cret\n":   "s3cret",
		"s3cret\r\n": "s3cret",
		" spaced \n": " spaced ",
	} {
		pw, err := ResolvePassword(&Client{PasswordFile: file(content)}, noPrompt)
		if err != nil || string(pw) != want {
			t.Errorf("file %q: got %q, %v; want %q", content, pw, err, want)
		}
	}
	for content, problem := range map[string]string{
		"":                              "empty",
		"\n":                            "empty",
		"a\n\n":                         "line break",
		strings.Repeat("x", 129):        "longer than 128",
		strings.Repeat("x", 128) + "\n": "",
	} {
		_, err := ResolvePassword(&Client{PasswordFile: file(content)}, noPrompt)
		if problem == "" {
			if err != nil {
				t.Errorf("128-byte password refused: %v", err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), problem) || !strings.Contains(err.Error(), "password_file") {
			t.Errorf("file %q: error %v, want %q", content, err, problem)
		}
		if s := strings.TrimSpace(content); err != nil && len(s) > 3 && strings.Contains(err.Error(), s) {
			t.Errorf("error reveals the password: %v", err)
		}
	}
	if _, err := ResolvePassword(&Client{PasswordFile: filepath.Join(dir, "missing")}, noPrompt); err == nil ||
		!strings.Contains(err.Error(), "missing") {
		t.Errorf("missing file: %v", err)
	}

	// A password file that others can read is refused, naming the file and its mode.
	p := file("s3cret")
	if err := os.Chmod(p, 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := ResolvePassword(&Client{PasswordFile: p}, noPrompt); err == nil || !strings.Contains(err.Error(), p+" is mode 0640") {
		t.Errorf("group-readable password file: %v", err)
	}

	t.Setenv("SALVO_TEST_PW", "from-env")
	if pw, err := ResolvePassword(&Client{PasswordEnv: "SALVO_TEST_PW"}, noPrompt); err != nil || string(pw) != "from-env" {
		t.Errorf("env: %q, %v", pw, err)
	}
	// Read once, then gone from the environment (child processes and /proc/self/environ do not see it).
	if v, ok := os.LookupEnv("SALVO_TEST_PW"); ok {
		t.Errorf("password_env still in the environment: %q", v)
	}
	if _, err := ResolvePassword(&Client{PasswordEnv: "SALVO_TEST_UNSET_XYZ"}, noPrompt); err == nil ||
		!strings.Contains(err.Error(), "SALVO_TEST_UNSET_XYZ is not set") {
		t.Errorf("unset env: %v", err)
	}

	pw, err := ResolvePassword(&Client{}, func() ([]byte, error) { return []byte("typed"), nil })
	if err != nil || !bytes.Equal(pw, []byte("typed")) {
		t.Errorf("prompt: %q, %v", pw, err)
	}
	if _, err := ResolvePassword(&Client{}, func() ([]byte, error) { return nil, errors.New("eof") }); err == nil ||
		!strings.Contains(err.Error(), "eof") {
		t.Errorf("prompt error: %v", err)
	}
	if _, err := ResolvePassword(&Client{}, nil); err == nil || !strings.Contains(err.Error(), "password_file") {
		t.Errorf("no source: %v", err)
	}
}

func TestTerminalPromptNotATerminal(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "notatty")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out bytes.Buffer
	if _, err := TerminalPrompt(int(f.Fd()), &out, "Password: ")(); err == nil || !strings.Contains(err.Error(), "not a terminal") {
		t.Fatalf("TerminalPrompt on a file: %v", err)
	}
}
