package config

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func write(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const minimalServer = `private_key_file = "server.key"
users_file = "users"
ipv4_pool = "10.77.0.0/24"
`

func TestServerDefaults(t *testing.T) {
	path := write(t, "server.toml", minimalServer)
	s, err := LoadServer(path)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Dir(path)
	want := &Server{
		Listen:                []string{"0.0.0.0:51820", "[::]:51820"},
		PrivateKeyFile:        filepath.Join(dir, "server.key"),
		UsersFile:             filepath.Join(dir, "users"),
		Auth:                  "file",
		TunName:               "salvo0",
		MTU:                   1420,
		Keepalive:             Duration{25 * time.Second},
		IPv4Pool:              "10.77.0.0/24",
		MaxSessionsPerUser:    4,
		HashBudget:            DefaultHashBudget,
		FailedLoginBurst:      DefaultFailedLoginBurst,
		MetricsPerUser:        true,
		FailedLoginEvery:      Duration{DefaultFailedLoginInterval},
		StateDir:              "/var/lib/salvo",
		TicketKeysFile:        "/var/lib/salvo/ticket-keys",
		BatchSize:             DefaultBatchSize,
		Workers:               1,
		ControlSocket:         "/run/salvo/server.sock",
		LogFormat:             "text",
		LogLevel:              "info",
		EBPF:                  "auto",
		Path:                  path,
		ListenAddrs:           []netip.AddrPort{netip.MustParseAddrPort("0.0.0.0:51820"), netip.MustParseAddrPort("[::]:51820")},
		Pool4:                 netip.MustParsePrefix("10.77.0.0/24"),
		RoutePrefixes:         []netip.Prefix{},
		ExcludedRoutePrefixes: []netip.Prefix{},
	}
	if !reflect.DeepEqual(s, want) {
		t.Fatalf("LoadServer defaults:\n got %+v\nwant %+v", s, want)
	}
	if s.Gateway4() != netip.MustParseAddr("10.77.0.1") || s.Gateway6().IsValid() {
		t.Fatalf("Gateway4 %v Gateway6 %v", s.Gateway4(), s.Gateway6())
	}
}

func TestServerFull(t *testing.T) {
	path := write(t, "server.toml", `listen = ["192.0.2.1:443", "[2001:db8::1]:443"]
private_key_file = "/etc/salvo/server.key"
users_file = "../users"
tun_name = "vpn0"
mtu = 1280
keepalive = "0s"
ipv4_pool = "10.9.0.0/16"
ipv6_pool = "fd09::/64"
routes = [
  "0.0.0.0/0",
  "::/0",
]
excluded_routes = ["192.168.0.0/16"]
dns = ["10.9.0.1", "fd09::1"]
search_domains = ["corp.example", "lab_1.example", "~.", "~git.example"]
nat = true
nat_interface = "eth0"
client_to_client = true
max_sessions_per_user = 1
control_socket = "/tmp/s.sock"
log_format = "json"
log_level = "debug"
ebpf = "auto"
workers = 8
`)
	s, err := LoadServer(path)
	if err != nil {
		t.Fatal(err)
	}
	if s.PrivateKeyFile != "/etc/salvo/server.key" {
		t.Errorf("absolute path changed: %q", s.PrivateKeyFile)
	}
	if want := filepath.Join(filepath.Dir(filepath.Dir(path)), "users"); s.UsersFile != want {
		t.Errorf("UsersFile = %q, want %q", s.UsersFile, want)
	}
	if s.Keepalive.Duration != 0 || s.MTU != 1280 || !s.NAT || s.NATInterface != "eth0" || !s.ClientToClient ||
		s.MaxSessionsPerUser != 1 || s.Workers != 8 || s.EBPF != "auto" || s.LogFormat != "json" || s.LogLevel != "debug" {
		t.Errorf("values not loaded: %+v", s)
	}
	if s.Gateway6() != netip.MustParseAddr("fd09::1") || len(s.RoutePrefixes) != 2 || len(s.DNSAddrs) != 2 ||
		s.ExcludedRoutePrefixes[0] != netip.MustParsePrefix("192.168.0.0/16") {
		t.Errorf("derived fields wrong: %+v", s)
	}
}

// TestPublicEndpoint: a name, an IPv4 literal or a bracketed IPv6 literal, each with a port, is kept as
// written (clients resolve the name themselves).
func TestPublicEndpoint(t *testing.T) {
	for _, ep := range []string{"vpn.example.com:51820", "vpn.example.com.:443", "203.0.113.1:51820", "[2001:db8::1]:51820"} {
		path := write(t, "server.toml", minimalServer+"public_endpoint = \""+ep+"\"\n")
		s, err := LoadServer(path)
		if err != nil || s.PublicEndpoint != ep {
			t.Errorf("public_endpoint %q: %v %+v", ep, err, s)
		}
	}
}

func TestRelativeToConfigDir(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "etc"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "etc", "s.toml"), []byte(minimalServer), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	s, err := LoadServer("etc/s.toml") // a relative config path, too
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "etc", "server.key"); s.PrivateKeyFile != want {
		t.Fatalf("PrivateKeyFile = %q, want %q", s.PrivateKeyFile, want)
	}
	if !filepath.IsAbs(s.Path) {
		t.Fatalf("Path %q is not absolute", s.Path)
	}
}

// checkErr asserts err names the file, the line (if line > 0) and the key.
func checkErr(t *testing.T, err error, path string, line int, key, problem string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error; want %s at line %d: %s", key, line, problem)
	}
	var prefix string
	if line > 0 {
		prefix = fmt.Sprintf("%s:%d: %s: ", path, line, key)
	} else {
		prefix = fmt.Sprintf("%s: %s: ", path, key)
	}
	for _, msg := range strings.Split(err.Error(), "\n") {
		if strings.HasPrefix(msg, prefix) && strings.Contains(msg, problem) {
			return
		}
	}
	t.Fatalf("error %q\nwant a line starting %q containing %q", err, prefix, problem)
}

func TestServerErrors(t *testing.T) {
	for _, tc := range []struct {
		extra   string // appended to minimalServer (lines 1-3), so line 4 onward
		line    int
		key     string
		problem string
	}{
		{`listen = []`, 4, "listen", "at least one"},
		{`listen = ["example.com:51820"]`, 4, "listen", `"example.com:51820" is not an IP:port`},
		{"listen = [\n  \"0.0.0.0:1\",\n  \"0.0.0.0:0\",\n]", 6, "listen", "port must be 1..65535"},
		{`listen = ["0.0.0.0:1", "0.0.0.0:1"]`, 4, "listen", "listed twice"},
		{`listen = "0.0.0.0:1"`, 4, "listen", "incompatible types"},
		{`public_endpoint = "vpn.example.com"`, 4, "public_endpoint", "not host:port"},
		{`public_endpoint = "2001:db8::1:51820"`, 4, "public_endpoint", `write IPv6 addresses as "[2001:db8::1]:51820"`},
		{`public_endpoint = "vpn.example.com:0"`, 4, "public_endpoint", "must be a number 1..65535"},
		{`public_endpoint = "bad host!:51820"`, 4, "public_endpoint", "neither an IP address nor a DNS name"},
		{`public_endpoint = "0.0.0.0:51820"`, 4, "public_endpoint", "wildcard address"},
		{`public_endpoint = "[::]:51820"`, 4, "public_endpoint", "wildcard address"},
		{`public_endpoint = "[::ffff:192.0.2.1]:51820"`, 4, "public_endpoint", "plain IPv4"},
		{`public_endpoint = ["vpn.example.com:51820"]`, 4, "public_endpoint", "incompatible types"},
		{`publicEndpoint = "x:1"`, 4, "publicEndpoint", `did you mean "public_endpoint"?`},
		{`tun_name = "a/b"`, 4, "tun_name", "must not contain"},
		{`tun_name = "sixteen-chars-xx"`, 4, "tun_name", "1..15"},
		{`tun_name = "a b"`, 4, "tun_name", "must not contain"},
		{`mtu = 575`, 4, "mtu", "outside 576..9000"},
		{`mtu = 9001`, 4, "mtu", "outside"},
		{"ipv6_pool = \"fd00::/64\"\nmtu = 1279", 5, "mtu", "minimum for IPv6"},
		{`mtu = "big"`, 4, "mtu", "incompatible types"},
		{`keepalive = "25"`, 4, "keepalive", "write it with a unit"},
		{`keepalive = "-1s"`, 4, "keepalive", "must be 0 (the default, 25s) or between"},
		{`keepalive = "2h"`, 4, "keepalive", "between 1s and 1h"},
		{`keepalive = "500ms"`, 4, "keepalive", "between 1s"},
		{`ipv6_pool = "10.0.0.0/8"`, 4, "ipv6_pool", "not an IPv6 prefix"},
		{`ipv6_pool = "fd00::/127"`, 4, "ipv6_pool", "/126 or shorter"},
		{`ipv6_pool = "fd00::1/64"`, 4, "ipv6_pool", `did you mean "fd00::/64"`},
		{`routes = ["10.1.2.3/8"]`, 4, "routes", `did you mean "10.0.0.0/8"`},
		{"routes = [\n \"10.0.0.0/8\",\n \"nonsense\"\n]", 6, "routes", `"nonsense" is not a prefix`},
		{`routes = ["::ffff:10.0.0.0/104"]`, 4, "routes", "IPv4-mapped"},
		{`excluded_routes = ["10.0.0.0/8", "10.0.0.0/8"]`, 4, "excluded_routes", "listed twice"},
		{`dns = ["dns.google"]`, 4, "dns", "not an IP address"},
		{`search_domains = ["bad domain"]`, 4, "search_domains", "not a valid DNS name"},
		{`search_domains = ["-x.example"]`, 4, "search_domains", "starts or ends with '-'"},
		{`search_domains = ["corp.example."]`, 4, "search_domains", "labels must be 1..63"}, // clients refuse a trailing dot
		{`search_domains = ["~"]`, 4, "search_domains", "not a valid DNS name"},
		{`nat_interface = ""`, 4, "nat_interface", "1..15"},
		{`max_sessions_per_user = 0`, 4, "max_sessions_per_user", "outside 1..1024"},
		{`max_session_age = "5m"`, 4, "max_session_age", "at least 10m"},
		{`auth = "ldap"`, 4, "auth", `"ldap" is not one of "file", "command"`},
		{`auth_command = "/bin/true"`, 4, "auth_command", `only used with auth = "command"`},
		{`auth_timeout = "1s"`, 4, "auth_timeout", `only used with auth = "command"`},
		{`max_session_age = "-1h"`, 4, "max_session_age", "must be 0"},
		{`hash_budget = 0`, 4, "hash_budget", "outside 1.."},
		{`metrics_listen = "localhost:9586"`, 4, "metrics_listen", "is not ip:port"},
		{`failed_login_burst = 0`, 4, "failed_login_burst", "outside 1..10000"},
		{`failed_login_interval = "1ms"`, 4, "failed_login_interval", "outside 10ms..1h"},
		{`state_dir = ""`, 4, "state_dir", "must not be empty"},
		{`ticket_keys_file = " "`, 4, "ticket_keys_file", "must not be empty"},
		{`control_socket = "run/s.sock"`, 4, "control_socket", "absolute path"},
		{`control_socket = "/` + strings.Repeat("x", 110) + `"`, 4, "control_socket", "limited to 107"},
		{`log_format = "xml"`, 4, "log_format", `"xml" is not one of`},
		{`log_level = "trace"`, 4, "log_level", `"trace" is not one of`},
		{`ebpf = "yes"`, 4, "ebpf", `"yes" is not one of`},
		{`workers = -1`, 4, "workers", "outside 0..1024"},
		{`nat = "yes"`, 4, "nat", "incompatible types"},
		{`mtu = 1400 mtu = 1`, 4, "mtu", "expected a top-level item"},
		{`listn = ["0.0.0.0:1"]`, 4, "listn", "unknown key"},
		{`privateKeyFile = "x"`, 4, "privateKeyFile", `unknown key (did you mean "private_key_file"?)`},
		{`MTU = 1400`, 4, "MTU", `unknown key (did you mean "mtu"?)`},
		{"[server]\nmtu = 1400", 4, "server", "unknown table"},
	} {
		path := write(t, "server.toml", minimalServer+tc.extra+"\n")
		_, err := LoadServer(path)
		checkErr(t, err, path, tc.line, tc.key, tc.problem)
	}
}

func TestServerMissingAndEmpty(t *testing.T) {
	path := write(t, "s.toml", "log_level = \"warn\"\n")
	_, err := LoadServer(path)
	checkErr(t, err, path, 0, "private_key_file", "missing")
	checkErr(t, err, path, 0, "users_file", "missing")
	checkErr(t, err, path, 0, "ipv4_pool", "set ipv4_pool, ipv6_pool or both")

	path = write(t, "s.toml", "private_key_file = \"\"\nusers_file = \"u\"\nipv6_pool = \"fd00::/64\"\n")
	_, err = LoadServer(path)
	checkErr(t, err, path, 1, "private_key_file", "must not be empty")

	var ce *Error
	if !errors.As(err, &ce) || ce.Key != "private_key_file" || ce.Line != 1 {
		t.Fatalf("error is not a *config.Error with key and line: %#v", err)
	}

	_, err = LoadServer(filepath.Join(t.TempDir(), "nope.toml"))
	if err == nil || !strings.Contains(err.Error(), "nope.toml") || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("missing file: %v", err)
	}
	path = write(t, "s.toml", "mtu = [\n")
	_, err = LoadServer(path)
	if err == nil || !strings.HasPrefix(err.Error(), path+":") {
		t.Fatalf("syntax error: %v", err)
	}
}

// TestServerAuthCommand: auth = "command" needs auth_command (resolved against the configuration's
// directory) and no users file, defaults auth_timeout and max_session_age, and refuses a max_session_age
// of 0, which would let a session the command no longer accepts live on forever.
func TestServerAuthCommand(t *testing.T) {
	const base = "private_key_file = \"server.key\"\nipv4_pool = \"10.77.0.0/24\"\nauth = \"command\"\n"
	path := write(t, "server.toml", base+"auth_command = \"bin/auth\"\n")
	s, err := LoadServer(path)
	if err != nil {
		t.Fatal(err)
	}
	if s.AuthCommand != filepath.Join(filepath.Dir(path), "bin/auth") || s.AuthTimeout.Duration != DefaultAuthTimeout ||
		s.MaxSessionAge.Duration != time.Hour || s.UsersFile != "" {
		t.Fatalf("auth_command %q, auth_timeout %v, max_session_age %v, users_file %q", s.AuthCommand, s.AuthTimeout, s.MaxSessionAge, s.UsersFile)
	}
	path = write(t, "server.toml", base+"auth_command = \"/usr/lib/salvo/auth\"\nauth_timeout = \"2s\"\nmax_session_age = \"12h\"\n")
	if s, err = LoadServer(path); err != nil || s.AuthTimeout.Duration != 2*time.Second || s.MaxSessionAge.Duration != 12*time.Hour {
		t.Fatalf("%+v, %v", s, err)
	}

	path = write(t, "server.toml", base)
	_, err = LoadServer(path)
	checkErr(t, err, path, 0, "auth_command", "missing: this key is required")
	for _, tc := range []struct {
		extra   string // after base (lines 1-3) and an auth_command line (4), so line 5 onward
		key     string
		problem string
	}{
		{`users_file = "users"`, "users_file", `not used with auth = "command"`},
		{`auth_timeout = "50ms"`, "auth_timeout", "outside 100ms..7s"},
		{`auth_timeout = "10s"`, "auth_timeout", "outside 100ms..7s"},
		{`auth_timeout = "5"`, "auth_timeout", "write it with a unit"},
		{`max_session_age = "0s"`, "max_session_age", `must not be 0 with auth = "command"`},
		{`max_session_age = "5m"`, "max_session_age", "at least 10m"},
	} {
		path := write(t, "server.toml", base+"auth_command = \"/x\"\n"+tc.extra+"\n")
		_, err := LoadServer(path)
		checkErr(t, err, path, 5, tc.key, tc.problem)
	}
}

// TestServerAuthPostgres: auth = "postgres" takes its users from the store, which must be named and must
// not carry a password (the configuration file is not a secret); the keys of other backends are refused.
func TestServerAuthPostgres(t *testing.T) {
	const base = "private_key_file = \"server.key\"\nipv4_pool = \"10.77.0.0/24\"\nauth = \"postgres\"\n"
	for _, dsn := range []string{"postgres://salvo@db.example.org/salvo", "host=/run/postgresql dbname=salvo user=salvo passfile=/etc/salvo/pgpass"} {
		s, err := LoadServer(write(t, "server.toml", base+"store = \""+dsn+"\"\n"))
		if err != nil || s.Store != dsn || s.UsersFile != "" || s.TicketKeysFile != "" {
			t.Fatalf("%s: %+v %v", dsn, s, err)
		}
	}
	path := write(t, "server.toml", base)
	_, err := LoadServer(path)
	checkErr(t, err, path, 0, "store", "missing")
	for _, tc := range []struct{ extra, key, problem string }{
		{`store = "postgres://salvo:hunter2@db/salvo"`, "store", "must not hold a password"},
		{`store = "host=db password=hunter2 dbname=salvo"`, "store", "must not hold a password"},
		{`store = "postgres://db/salvo?password=hunter2"`, "store", "must not hold a password"},
		{`store = "host=db hunter2"`, "store", "neither a postgres:// URL"},
		{"store = \"postgres://db/s\"\nusers_file = \"users\"", "users_file", `not used with auth = "postgres"`},
		{"store = \"postgres://db/s\"\nauth_command = \"/x\"", "auth_command", `only used with auth = "command"`},
		{"store = \"postgres://db/s\"\nticket_keys_file = \"k\"", "ticket_keys_file", `the ticket keys are in the store`},
	} {
		path := write(t, "server.toml", base+tc.extra+"\n")
		_, err := LoadServer(path)
		line := 4 + strings.Count(tc.extra, "\n")
		checkErr(t, err, path, line, tc.key, tc.problem)
		if strings.Contains(err.Error(), "hunter2") {
			t.Fatalf("the error shows the password: %v", err)
		}
	}
	path = write(t, "server.toml", "private_key_file = \"k\"\nusers_file = \"u\"\nstore = \"postgres://db/s\"\n")
	_, err = LoadServer(path)
	checkErr(t, err, path, 3, "store", `only used with auth = "postgres"`)
}

func TestExampleServerLoads(t *testing.T) {
	path := write(t, "server.toml", ExampleServer())
	s, err := LoadServer(path)
	if err != nil {
		t.Fatal(err)
	}
	if s.Gateway6() != netip.MustParseAddr("fd77::1") || s.Gateway4() != netip.MustParseAddr("10.77.0.1") {
		t.Fatalf("example gateways %v %v", s.Gateway4(), s.Gateway6())
	}
}

func TestDurationText(t *testing.T) {
	var d Duration
	if err := d.UnmarshalText([]byte("1m30s")); err != nil || d.Duration != 90*time.Second {
		t.Fatalf("UnmarshalText: %v %v", d, err)
	}
	if b, _ := d.MarshalText(); string(b) != "1m30s" {
		t.Fatalf("MarshalText = %s", b)
	}
}

func TestBatchSize(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"server.key", "users"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(dir, "server.toml")
	base := "private_key_file = \"server.key\"\nusers_file = \"users\"\nipv4_pool = \"10.77.0.0/24\"\n"
	if err := os.WriteFile(path, []byte(base+"batch_size = 32\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := LoadServer(path)
	if err != nil || s.BatchSize != 32 {
		t.Fatalf("batch_size 32: %v %v", s, err)
	}
	if err := os.WriteFile(path, []byte(base+"batch_size = 0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadServer(path); err == nil || !strings.Contains(err.Error(), ":4: batch_size") {
		t.Fatalf("batch_size 0 accepted or badly reported: %v", err)
	}
}
