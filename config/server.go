package config

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/salvovpn/salvo/engine/tickets"
	"github.com/salvovpn/salvo/internal/batchsize"
	"github.com/salvovpn/salvo/internal/dnsname"
	"github.com/salvovpn/salvo/internal/loginlimits"
	"github.com/salvovpn/salvo/protocol"
)

// Server is the gateway configuration. Fields tagged toml:"-" are derived
// from the others by LoadServer.
type Server struct {
	Listen             []string `toml:"listen"`           // UDP "ip:port"; default both wildcards on 51820
	PublicEndpoint     string   `toml:"public_endpoint"`  // optional "host:port" clients reach the gateway at (salvo client-config)
	PrivateKeyFile     string   `toml:"private_key_file"` // required; resolved against the config's directory
	UsersFile          string   `toml:"users_file"`       // required with auth = "file"; resolved against the config's directory
	Auth               string   `toml:"auth"`             // "file" (default): the users file; "command": auth_command decides
	AuthCommand        string   `toml:"auth_command"`     // required with auth = "command"; resolved against the config's directory
	AuthTimeout        Duration `toml:"auth_timeout"`     // with auth = "command": default 5s
	Store              string   `toml:"store"`            // required with auth = "postgres": the database (a postgres:// URL or key=value string, no password)
	TunName            string   `toml:"tun_name"`         // default "salvo0"
	MTU                int      `toml:"mtu"`              // default protocol.DefaultMTU (1420)
	Keepalive          Duration `toml:"keepalive"`        // default 25s; 0 means the default (both ends use 25s)
	IPv4Pool           string   `toml:"ipv4_pool"`        // e.g. "10.77.0.0/24"; gateway takes the first host
	IPv6Pool           string   `toml:"ipv6_pool"`        // e.g. "fd77::/64"
	Routes             []string `toml:"routes"`           // prefixes pushed to clients
	ExcludedRoutes     []string `toml:"excluded_routes"`  // prefixes clients must keep off the tunnel
	DNS                []string `toml:"dns"`              // resolver addresses pushed to clients
	SearchDomains      []string `toml:"search_domains"`
	NAT                bool     `toml:"nat"`           // masquerade pool traffic leaving other interfaces
	NATInterface       string   `toml:"nat_interface"` // optional; only used when nat = true
	ClientToClient     bool     `toml:"client_to_client"`
	MaxSessionsPerUser int      `toml:"max_sessions_per_user"` // default 4; a login beyond it replaces the user's oldest session
	MaxSessionAge      Duration `toml:"max_session_age"`       // default 0 (no limit): after it, a rekey needs the password again
	HashBudget         uint64   `toml:"hash_budget"`           // argon2 MiB x passes per second for all logins; default 1280
	FailedLoginBurst   int      `toml:"failed_login_burst"`    // failed logins per source (and per login) at once; default 10
	FailedLoginEvery   Duration `toml:"failed_login_interval"` // then one more per interval; default 2s
	StateDir           string   `toml:"state_dir"`             // default "/var/lib/salvo": leases and ticket keys kept across restarts
	TicketKeysFile     string   `toml:"ticket_keys_file"`      // default state_dir/ticket-keys ("" with auth = "postgres": in the store); gateways sharing one file accept each other's tickets
	ControlSocket      string   `toml:"control_socket"`        // default "/run/salvo/server.sock"
	MetricsListen      string   `toml:"metrics_listen"`        // optional "ip:port": Prometheus metrics at /metrics
	MetricsPerUser     bool     `toml:"metrics_per_user"`      // default true: per-user traffic series
	LogFormat          string   `toml:"log_format"`            // "text" (default) | "json"
	LogLevel           string   `toml:"log_level"`             // debug | info (default) | warn | error
	EBPF               string   `toml:"ebpf"`                  // "auto" (default) | "on" | "off"
	EBPFTunSteering    bool     `toml:"ebpf_tun_steering"`     // steer TUN packets to the owner's queue
	Workers            int      `toml:"workers"`               // default 1; 0 = one per CPU (GOMAXPROCS)
	BatchSize          int      `toml:"batch_size"`            // packets per vector; default 128

	Path                  string           `toml:"-"` // absolute path of the file loaded
	ListenAddrs           []netip.AddrPort `toml:"-"`
	Pool4                 netip.Prefix     `toml:"-"` // zero if no IPv4 pool
	Pool6                 netip.Prefix     `toml:"-"` // zero if no IPv6 pool
	RoutePrefixes         []netip.Prefix   `toml:"-"`
	ExcludedRoutePrefixes []netip.Prefix   `toml:"-"`
	DNSAddrs              []netip.Addr     `toml:"-"`
}

// Limits checked by LoadServer.
const (
	MinMTU               = 576
	MinMTUIPv6           = 1280 // IPv6 requires links of at least 1280 bytes
	MaxMTU               = 9000
	MaxKeepalive         = time.Hour
	SessionsPerUserLimit = 1024 // the largest max_sessions_per_user
	MaxWorkers           = 1024
	// The login limits an unset key means (see package loginlimits); hash_budget is in MiB x passes per
	// second.
	DefaultHashBudget          = loginlimits.HashBudgetMiB
	DefaultFailedLoginBurst    = loginlimits.FailureBurst
	DefaultFailedLoginInterval = loginlimits.FailureInterval
	MaxHashBudget              = 1 << 30
	MaxFailedLoginBurst        = 10000
	// With auth = "command": auth_timeout unless set, its bounds (the upper one is a client's patience:
	// it gives up a login after 10 s, and a failure is answered up to 1.25 times the slowest run later), and
	// max_session_age unless set.
	DefaultAuthTimeout       = loginlimits.CommandTimeout
	MinAuthTimeout           = 100 * time.Millisecond
	MaxAuthTimeout           = 7 * time.Second
	DefaultCommandSessionAge = loginlimits.CommandSessionAge
	// DefaultBatchSize packets move per read/write call. Each packet buffer is 72 KiB (room for a 64 KiB
	// offload super-packet), so one vector is batch_size x 72 KiB: 9 MiB at 128. The gateway holds one per
	// socket plus one for the TUN device; a small router lowers it.
	DefaultBatchSize = batchsize.Default
	MaxBatchSize     = 1024
)

// Gateway4 returns the gateway's own IPv4 tunnel address (the first host of
// the IPv4 pool), or the zero Addr if there is no IPv4 pool.
func (s *Server) Gateway4() netip.Addr {
	if !s.Pool4.IsValid() {
		return netip.Addr{}
	}
	return s.Pool4.Addr().Next()
}

// Gateway6 is Gateway4 for the IPv6 pool.
func (s *Server) Gateway6() netip.Addr {
	if !s.Pool6.IsValid() {
		return netip.Addr{}
	}
	return s.Pool6.Addr().Next()
}

// LoadServer reads and validates a gateway configuration, fills in defaults
// and the derived fields. It does not open the key or users files.
func LoadServer(path string) (*Server, error) {
	s := &Server{}
	l, err := decode(path, s, nil)
	if err != nil {
		return nil, err
	}
	s.Path = l.path

	if !l.defined("listen") {
		s.Listen = []string{"0.0.0.0:51820", "[::]:51820"}
	}
	s.ListenAddrs = l.parseListen(s.Listen)
	if l.defined("public_endpoint") {
		l.checkPublicEndpoint(s.PublicEndpoint)
	}

	s.PrivateKeyFile = l.requireFile("private_key_file", s.PrivateKeyFile)
	l.checkAuth(s)
	l.checkIfName("tun_name", &s.TunName, "salvo0")

	s.Pool4 = l.parsePool("ipv4_pool", s.IPv4Pool, false)
	s.Pool6 = l.parsePool("ipv6_pool", s.IPv6Pool, true)
	if !l.defined("ipv4_pool") && !l.defined("ipv6_pool") {
		l.failAt(0, "ipv4_pool", "missing: set ipv4_pool, ipv6_pool or both")
	}

	if !l.defined("mtu") {
		s.MTU = protocol.DefaultMTU
	}
	switch {
	case s.MTU < MinMTU || s.MTU > MaxMTU:
		l.failf("mtu", "%d is outside %d..%d", s.MTU, MinMTU, MaxMTU)
	case s.Pool6.IsValid() && s.MTU < MinMTUIPv6:
		l.failf("mtu", "%d is below %d, the minimum for IPv6 (ipv6_pool is set)", s.MTU, MinMTUIPv6)
	}

	if !l.defined("keepalive") {
		s.Keepalive = Duration{25 * time.Second}
	}
	if k := s.Keepalive.Duration; k != 0 && (k < time.Second || k > MaxKeepalive) {
		l.failf("keepalive", "%v must be 0 (the default, 25s) or between 1s and %v", k, MaxKeepalive)
	}

	s.RoutePrefixes = l.parsePrefixes("routes", s.Routes)
	s.ExcludedRoutePrefixes = l.parsePrefixes("excluded_routes", s.ExcludedRoutes)

	for _, d := range s.DNS {
		a, err := netip.ParseAddr(d)
		if err != nil {
			l.failElem("dns", d, fmt.Sprintf("%q is not an IP address", d))
			continue
		}
		s.DNSAddrs = append(s.DNSAddrs, a)
	}
	for _, d := range s.SearchDomains {
		if err := dnsname.CheckDomain(d); err != nil {
			l.failElem("search_domains", d, err.Error())
		}
	}

	if l.defined("nat_interface") {
		l.checkIfName("nat_interface", &s.NATInterface, "")
	}

	if !l.defined("max_sessions_per_user") {
		s.MaxSessionsPerUser = 4
	}
	if s.MaxSessionsPerUser < 1 || s.MaxSessionsPerUser > SessionsPerUserLimit {
		l.failf("max_sessions_per_user", "%d is outside 1..%d", s.MaxSessionsPerUser, SessionsPerUserLimit)
	}

	if s.MaxSessionAge.Duration < 0 || (s.MaxSessionAge.Duration > 0 && s.MaxSessionAge.Duration < 10*time.Minute) {
		l.failf("max_session_age", "%v must be 0 (no limit) or at least 10m (a rekey happens every 2 minutes)", s.MaxSessionAge.Duration)
	}
	if !l.defined("hash_budget") {
		s.HashBudget = DefaultHashBudget
	} else if s.HashBudget < 1 || s.HashBudget > MaxHashBudget {
		l.failf("hash_budget", "%d is outside 1..%d (MiB x passes per second)", s.HashBudget, MaxHashBudget)
	}
	if !l.defined("failed_login_burst") {
		s.FailedLoginBurst = DefaultFailedLoginBurst
	} else if s.FailedLoginBurst < 1 || s.FailedLoginBurst > MaxFailedLoginBurst {
		l.failf("failed_login_burst", "%d is outside 1..%d", s.FailedLoginBurst, MaxFailedLoginBurst)
	}
	if !l.defined("failed_login_interval") {
		s.FailedLoginEvery = Duration{DefaultFailedLoginInterval}
	} else if d := s.FailedLoginEvery.Duration; d < 10*time.Millisecond || d > time.Hour {
		l.failf("failed_login_interval", "%v is outside 10ms..1h", d)
	}
	if !l.defined("state_dir") {
		s.StateDir = "/var/lib/salvo"
	} else if strings.TrimSpace(s.StateDir) == "" {
		l.fail("state_dir", "must not be empty")
	} else {
		s.StateDir = l.resolvePath(s.StateDir)
	}
	switch {
	case s.Auth == "postgres": // in the store (checkAuth refuses the key)
		s.TicketKeysFile = ""
	case !l.defined("ticket_keys_file"):
		s.TicketKeysFile = filepath.Join(s.StateDir, tickets.FileName)
	case strings.TrimSpace(s.TicketKeysFile) == "":
		l.fail("ticket_keys_file", "must not be empty")
	default:
		s.TicketKeysFile = l.resolvePath(s.TicketKeysFile)
	}

	l.checkSocket("control_socket", &s.ControlSocket, "/run/salvo/server.sock")
	if l.defined("metrics_listen") {
		if _, err := netip.ParseAddrPort(s.MetricsListen); err != nil {
			l.failf("metrics_listen", "%q is not ip:port, such as \"127.0.0.1:9586\" (only what can reach that address can scrape: it names your users)", s.MetricsListen)
		}
	}
	if !l.defined("metrics_per_user") {
		s.MetricsPerUser = true
	}
	l.checkLog(&s.LogFormat, &s.LogLevel)

	if !l.defined("ebpf") {
		// On where the kernel and privileges allow: its early drop throws junk and data for unknown sessions
		// away before they reach the socket, which is what keeps a flooded gateway serving its clients.
		s.EBPF = "auto"
	} else if s.EBPF != "auto" && s.EBPF != "on" && s.EBPF != "off" {
		l.failf("ebpf", "%q is not one of \"auto\", \"on\", \"off\"", s.EBPF)
	}
	if !l.defined("workers") {
		// One worker measured faster than one per CPU with a single client on a 2-core machine shared with
		// that client (BENCHMARKS-history.md); gateways with many clients on their own cores set 0 or N.
		s.Workers = 1
	}
	if s.EBPFTunSteering && s.EBPF == "off" {
		l.failf("ebpf_tun_steering", "needs ebpf = \"auto\" or \"on\"")
	}
	if s.Workers < 0 || s.Workers > MaxWorkers {
		l.failf("workers", "%d is outside 0..%d (0 means one per CPU)", s.Workers, MaxWorkers)
	}
	l.checkBatchSize(&s.BatchSize)

	if err := l.err(); err != nil {
		return nil, err
	}
	return s, nil
}

// checkAuth checks the keys of the authentication backend: the users file, or a command. Keys of the
// backend not chosen are errors rather than ignored, so that nobody believes a users file is in force
// when a command decides (or the other way round).
func (l *loader) checkAuth(s *Server) {
	if !l.defined("auth") {
		s.Auth = "file"
	}
	switch s.Auth {
	case "file":
		s.UsersFile = l.requireFile("users_file", s.UsersFile)
		l.onlyWith("command", "auth_command", "auth_timeout")
		l.onlyWith("postgres", "store")
	case "postgres":
		if l.defined("users_file") {
			l.fail("users_file", `is not used with auth = "postgres" (the users are in the store): remove it`)
		}
		l.onlyWith("command", "auth_command", "auth_timeout")
		if l.defined("ticket_keys_file") {
			l.fail("ticket_keys_file", `is not used with auth = "postgres" (the ticket keys are in the store): remove it`)
		}
		if !l.defined("store") {
			l.failAt(0, "store", `missing: auth = "postgres" needs the database, e.g. "postgres://salvo@db.example.org/salvo"`)
		} else if err := CheckStoreDSN(s.Store); err != nil {
			l.fail("store", err.Error())
		}
	case "command":
		l.onlyWith("postgres", "store")
		if l.defined("users_file") {
			l.fail("users_file", `is not used with auth = "command" (auth_command decides who logs in): remove it`)
		}
		s.AuthCommand = l.requireFile("auth_command", s.AuthCommand)
		if !l.defined("auth_timeout") {
			s.AuthTimeout = Duration{DefaultAuthTimeout}
		} else if d := s.AuthTimeout.Duration; d < MinAuthTimeout || d > MaxAuthTimeout {
			l.failf("auth_timeout", "%v is outside %v..%v (a client gives up a login after 10s)", d, MinAuthTimeout, MaxAuthTimeout)
		}
		// The command can only be asked with a password, which a rekey does not carry: what ends the
		// session of a user it now rejects is the login max_session_age forces.
		if !l.defined("max_session_age") {
			s.MaxSessionAge = Duration{DefaultCommandSessionAge}
		} else if s.MaxSessionAge.Duration == 0 {
			l.failf("max_session_age", `must not be 0 with auth = "command": a session must log in again (unset, after %s) for the command to be asked whether its user may still log in`,
				strings.TrimSuffix(DefaultCommandSessionAge.String(), "0m0s"))
		}
	default:
		l.failf("auth", `%q is not one of "file", "command", "postgres"`, s.Auth)
	}
}

// onlyWith fails every key of keys that is set although only the backend auth uses it.
func (l *loader) onlyWith(auth string, keys ...string) {
	for _, key := range keys {
		if l.defined(key) {
			l.failf(key, "is only used with auth = %q", auth)
		}
	}
}

// CheckStoreDSN checks a database address from a configuration file or a command line: a postgres:// URL
// or a key=value string, without a password (a configuration file is not a secret: put the password in a
// pgpass file, https://www.postgresql.org/docs/current/libpq-pgpass.html, named by passfile= or
// PGPASSFILE, or use a unix socket with peer authentication).
func CheckStoreDSN(dsn string) error {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return errors.New("is not a postgres:// URL")
		}
		if _, has := u.User.Password(); has || u.Query().Has("password") {
			return errors.New("must not hold a password: put it in a pgpass file (passfile=...) instead")
		}
		return nil
	}
	for _, f := range strings.Fields(dsn) {
		k, _, ok := strings.Cut(f, "=")
		if !ok {
			return errors.New("is neither a postgres:// URL nor key=value pairs") // never quoted: it may hold a password
		}
		if strings.TrimSpace(k) == "password" {
			return errors.New("must not hold a password: put it in a pgpass file (passfile=...) instead")
		}
	}
	if strings.TrimSpace(dsn) == "" {
		return errors.New("must not be empty")
	}
	return nil
}

// parseListen wants IP literals: the gateway binds each address itself, and
// a host name here would make the bound address depend on DNS at start-up.
func (l *loader) parseListen(list []string) []netip.AddrPort {
	if len(list) == 0 {
		l.fail("listen", "must list at least one address, such as \"0.0.0.0:51820\"")
		return nil
	}
	out := make([]netip.AddrPort, 0, len(list))
	seen := map[netip.AddrPort]bool{}
	for _, s := range list {
		ap, err := netip.ParseAddrPort(s)
		switch {
		case err != nil:
			l.failElem("listen", s, fmt.Sprintf("%q is not an IP:port such as \"0.0.0.0:51820\" or \"[::]:51820\"", s))
			continue
		case ap.Port() == 0:
			l.failElem("listen", s, fmt.Sprintf("%q: port must be 1..65535", s))
			continue
		case seen[ap]:
			l.failElem("listen", s, fmt.Sprintf("%q is listed twice", s))
			continue
		}
		seen[ap] = true
		out = append(out, ap)
	}
	return out
}

// checkPublicEndpoint checks the address clients are told to reach the gateway at by the rules of a
// client's server key, and refuses a wildcard: listen often holds one, and a client cannot send to it.
func (l *loader) checkPublicEndpoint(s string) {
	host, _ := l.parseHostPort("public_endpoint", s)
	if a, err := netip.ParseAddr(host); err == nil && a.IsUnspecified() {
		l.failf("public_endpoint", "%q is a wildcard address: write the name or address clients reach this host at, such as \"vpn.example.com:51820\"", s)
	}
}

// parsePool checks a pool prefix. It must leave room for the network
// address, the gateway and at least one client (and the IPv4 broadcast).
func (l *loader) parsePool(key, s string, v6 bool) netip.Prefix {
	if !l.defined(key) {
		return netip.Prefix{}
	}
	p, err := netip.ParsePrefix(s)
	family, example, longest := "IPv4", "10.77.0.0/24", 30
	if v6 {
		family, example, longest = "IPv6", "fd77::/64", 126
	}
	switch {
	case err != nil:
		l.failf(key, "%q is not a prefix such as %q", s, example)
	case v6 != (p.Addr().Is6() && !p.Addr().Is4In6()):
		l.failf(key, "%q is not an %s prefix", s, family)
	case p != p.Masked():
		l.failf(key, "%q has host bits set (did you mean %q?)", s, p.Masked().String())
	case p.Bits() > longest:
		l.failf(key, "%q is too small: the pool must be /%d or shorter", s, longest)
	default:
		return p
	}
	return netip.Prefix{}
}
