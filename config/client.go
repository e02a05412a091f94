package config

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/salvovpn/salvo/internal/dnsname"
	"github.com/salvovpn/salvo/protocol"
)

// Client is the client configuration. Fields tagged toml:"-" are derived
// from the others by LoadClient.
type Client struct {
	Server              string   `toml:"server"`            // "host:port"; IPv6 literals bracketed
	FallbackServers     []string `toml:"fallback_servers"`  // more gateways with the same key, tried in turn when one stops answering
	ServerPublicKey     string   `toml:"server_public_key"` // base64 of the gateway's 32-byte static key
	Username            string   `toml:"username"`
	PasswordFile        string   `toml:"password_file"` // optional; resolved against the config's directory
	PasswordEnv         string   `toml:"password_env"`  // optional; name of an environment variable
	TunName             string   `toml:"tun_name"`      // default "salvo1"
	Routes              string   `toml:"routes"`        // "pushed" (default) | "none"
	ExtraExcludedRoutes []string `toml:"extra_excluded_routes"`
	DNS                 bool     `toml:"dns"`           // apply pushed DNS; default true
	FwMark              uint32   `toml:"fwmark"`        // default 0x5a17
	RouteTable          int      `toml:"route_table"`   // default 51820
	RulePriority        int      `toml:"rule_priority"` // default 10000: the two policy rules take this and the next
	// Full-tunnel protection (see README, "Full tunnel: what it guarantees").
	LeakGuard              string `toml:"leak_guard"`               // "auto" (default: on for a full tunnel) | "on" | "off"
	KillSwitch             bool   `toml:"kill_switch"`              // default true with the guard: it outlives a crash until the client is back or `salvo client --down`
	AllowLAN               bool   `toml:"allow_lan"`                // default false: with the guard, reach the LAN's private prefixes outside the tunnel
	DNSFailOpen            bool   `toml:"dns_fail_open"`            // default false: a full tunnel whose DNS cannot be applied refuses to run
	AcceptLANRoutes        bool   `toml:"accept_lan_routes"`        // default false: apply pushed routes over the LAN or the gateway's address
	AcceptCoveringExcludes bool   `toml:"accept_covering_excludes"` // default false: apply excluded routes that cover pushed ones
	ControlSocket          string `toml:"control_socket"`           // default "/run/salvo/client.sock"
	LogFormat              string `toml:"log_format"`               // "text" (default) | "json"
	LogLevel               string `toml:"log_level"`                // debug | info (default) | warn | error
	BatchSize              int    `toml:"batch_size"`               // packets per vector; default 128 (see config.DefaultBatchSize)

	Path                  string         `toml:"-"` // absolute path of the file loaded
	ServerHost            string         `toml:"-"` // host part of Server, unbracketed
	ServerPort            uint16         `toml:"-"`
	ServerKey             [32]byte       `toml:"-"`
	ExtraExcludedPrefixes []netip.Prefix `toml:"-"`
}

const (
	DefaultFwMark       = 0x5a17
	DefaultRouteTable   = 51820
	DefaultRulePriority = 10000
	mainRulePriority    = 32766 // the kernel's "lookup main" rule, which the client's rules must precede
)

// passwordKeyProblem is the error for a literal password in a client file.
const passwordKeyProblem = "a password must not be written in the configuration file; " +
	"use password_file, password_env, or leave both unset to be prompted"

// LoadClient reads and validates a client configuration and fills in
// defaults and the derived fields. It does not read the password.
func LoadClient(path string) (*Client, error) {
	c := &Client{}
	l, err := decode(path, c, map[string]string{"password": passwordKeyProblem})
	if err != nil {
		return nil, err
	}
	c.Path = l.path

	c.ServerHost, c.ServerPort = l.parseServer(c.Server)
	l.checkFallbacks(c)
	c.ServerKey = l.parseKey(c.ServerPublicKey)

	if !l.defined("username") {
		l.failAt(0, "username", "missing: this key is required")
	} else if err := checkLogin(c.Username); err != nil {
		l.fail("username", err.Error())
	}

	if l.defined("password_file") {
		if c.PasswordFile == "" {
			l.fail("password_file", "must not be empty (remove the key to be prompted)")
		}
		c.PasswordFile = l.resolvePath(c.PasswordFile)
		if l.defined("password_env") {
			l.fail("password_env", "cannot be used together with password_file; keep one")
		}
	}
	if l.defined("password_env") && !validEnvName(c.PasswordEnv) {
		l.failf("password_env", "%q is not an environment variable name ([A-Za-z_][A-Za-z0-9_]*)", c.PasswordEnv)
	}

	l.checkIfName("tun_name", &c.TunName, "salvo1")

	if !l.defined("routes") {
		c.Routes = "pushed"
	} else if c.Routes != "pushed" && c.Routes != "none" {
		l.failf("routes", "%q is not one of \"pushed\", \"none\"", c.Routes)
	}
	c.ExtraExcludedPrefixes = l.parsePrefixes("extra_excluded_routes", c.ExtraExcludedRoutes)

	if !l.defined("dns") {
		c.DNS = true
	}
	if !l.defined("fwmark") {
		c.FwMark = DefaultFwMark
	} else if c.FwMark == 0 {
		l.fail("fwmark", "must not be 0: the full-tunnel routing rules match on a non-zero mark")
	}
	if !l.defined("route_table") {
		c.RouteTable = DefaultRouteTable
	} else if t := c.RouteTable; t < 1 || int64(t) > 0xFFFFFFFF || t == 253 || t == 254 || t == 255 {
		l.failf("route_table", "%d is not usable: use 1..4294967295 except 253, 254, 255 (default, main and local tables)", t)
	}

	if !l.defined("rule_priority") {
		c.RulePriority = DefaultRulePriority
	} else if c.RulePriority < 1 || c.RulePriority+1 >= mainRulePriority {
		l.failf("rule_priority", "%d is outside 1..%d (both rules must come before main's at %d)", c.RulePriority, mainRulePriority-2, mainRulePriority)
	}

	if !l.defined("leak_guard") {
		c.LeakGuard = "auto"
	} else if c.LeakGuard != "auto" && c.LeakGuard != "on" && c.LeakGuard != "off" {
		l.failf("leak_guard", "%q is not one of \"auto\", \"on\", \"off\"", c.LeakGuard)
	}
	if !l.defined("kill_switch") {
		c.KillSwitch = c.LeakGuard != "off"
	} else if c.KillSwitch && c.LeakGuard == "off" {
		l.fail("kill_switch", "needs the leak guard (leak_guard = \"auto\" or \"on\"): the kill switch is the guard outliving the client")
	}
	if c.AllowLAN && c.LeakGuard == "off" {
		l.fail("allow_lan", "only means something with the leak guard (without it nothing is blocked)")
	}

	l.checkSocket("control_socket", &c.ControlSocket, "/run/salvo/client.sock")
	l.checkLog(&c.LogFormat, &c.LogLevel)
	l.checkBatchSize(&c.BatchSize)

	if err := l.err(); err != nil {
		return nil, err
	}
	return c, nil
}

func (l *loader) parseServer(s string) (string, uint16) {
	if !l.defined("server") {
		l.failAt(0, "server", "missing: this key is required (\"host:port\")")
		return "", 0
	}
	return l.parseHostPort("server", s)
}

// maxFallbackServers bounds fallback_servers: each costs a reconnect up to 5 s before the next is tried.
const maxFallbackServers = 8

// checkFallbacks checks fallback_servers like server, and refuses repeats (of server or of each other).
func (l *loader) checkFallbacks(c *Client) {
	if len(c.FallbackServers) > maxFallbackServers {
		l.failf("fallback_servers", "%d gateways: at most %d", len(c.FallbackServers), maxFallbackServers)
		return
	}
	seen := map[string]bool{c.Server: true}
	for _, s := range c.FallbackServers {
		if seen[s] {
			l.failf("fallback_servers", "%q is listed twice (server included)", s)
			return
		}
		seen[s] = true
		if h, _ := l.parseHostPort("fallback_servers", s); h == "" {
			return
		}
	}
}

// parseHostPort checks an address to reach the gateway at: a DNS name or an IP literal, with a port
// (IPv6 literals in brackets). It returns the host unbracketed, or "" and 0 after recording a problem.
func (l *loader) parseHostPort(key, s string) (string, uint16) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		l.failf(key, "%q is not host:port (write IPv6 addresses as \"[2001:db8::1]:51820\")", s)
		return "", 0
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 {
		l.failf(key, "%q: port %q must be a number 1..65535", s, port)
		return "", 0
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if a.Is4In6() {
			l.failf(key, "%q: write IPv4-mapped addresses as plain IPv4", s)
			return "", 0
		}
	} else if err := dnsname.CheckName(strings.TrimSuffix(host, ".")); err != nil { // a fully qualified name may end in "."
		l.failf(key, "%q: host is neither an IP address nor a DNS name: %v", s, err)
		return "", 0
	}
	return host, uint16(p)
}

func (l *loader) parseKey(s string) [32]byte {
	var k [32]byte
	if !l.defined("server_public_key") {
		l.failAt(0, "server_public_key", "missing: this key is required (the gateway's public key, base64)")
		return k
	}
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	switch {
	case err != nil:
		l.fail("server_public_key", "not valid standard base64 (44 characters ending in '=')")
	case len(b) != 32:
		l.failf("server_public_key", "decodes to %d bytes; a public key is 32", len(b))
	case bytes.Equal(b, make([]byte, 32)):
		l.fail("server_public_key", "is all zeros")
	default:
		copy(k[:], b)
	}
	return k
}

// checkLogin mirrors the users file's rule for logins, so a client cannot be
// configured with a name the gateway could never have.
func checkLogin(s string) error {
	if s == "" || len(s) > protocol.MaxLoginLen {
		return fmt.Errorf("%q must be 1..%d characters", s, protocol.MaxLoginLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '@' || c == '-') {
			return fmt.Errorf("%q contains %q; only A-Z a-z 0-9 . _ @ - are allowed", s, s[i:i+1])
		}
	}
	return nil
}

func validEnvName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}
