package config

// ExampleServer returns a commented gateway configuration showing every
// key, with defaults where a key is optional.
func ExampleServer() string { return exampleServer }

// ExampleClient returns a commented client configuration showing every key.
func ExampleClient() string { return exampleClient }

// PlaceholderServerKey is the example client configuration's server_public_key, base64 of "Change me:
// paste the gateway key": 32 bytes, so it parses, but a client must never pin it.
const PlaceholderServerKey = "Q2hhbmdlIG1lOiBwYXN0ZSB0aGUgZ2F0ZXdheSBrZXk="

const exampleServer = `# Salvo gateway configuration (TOML). Unknown keys are errors.
# Relative paths are relative to this file's directory.

# UDP addresses to listen on (IP:port; IPv6 in brackets).
listen = ["0.0.0.0:51820", "[::]:51820"]
# Where clients reach this gateway (host name or IP, and port; IPv6 in
# brackets): behind NAT or with wildcard listen addresses, listen cannot
# say it. "salvo client-config USER" writes it into the client's file.
# public_endpoint = "vpn.example.com:51820"

# Required: the gateway's static private key (created by "salvo keygen")
# and the users file (managed by "salvo user add|del|passwd|list"). Both
# must be mode 0600 (or stricter) and owned by root or the gateway's user.
private_key_file = "server.key"
users_file = "users"

# Who may log in. auth = "file" (the default): the users file above.
# auth = "command": auth_command decides instead (leave out users_file).
# It runs with the login as its only argument (and in SALVO_LOGIN) and
# the password and a newline on its standard input, never in its
# arguments or environment; exit status 0 accepts, anything else
# rejects. After auth_timeout (100ms..7s) its process group is killed.
# Each run costs one default-parameter login of hash_budget. It cannot
# revoke a live session, so max_session_age (default "1h" with a command,
# never "0s") is how often a session logs in again and the command is
# asked again. SIGHUP or salvo reload applies auth_command and auth_timeout.
# auth = "postgres": the users are in a PostgreSQL database that several
# gateways share (leave out users_file; manage them with "salvo user ...
# --store"). Changes reach every gateway within a second and end the
# sessions of users removed, disabled or given a new password; a kick on
# one gateway ends the user's sessions on all; leases are claimed in it,
# so no two clients hold one address on any gateway and a client keeps
# its address on every gateway with the same pools; each ended session is
# a row in salvo_sessions_ended. While the database is down, sessions
# carry on and new logins fail with "store unavailable". store names the
# database, never with a password (use a pgpass file: passfile=...).
# auth = "file"
# auth_command = "/usr/local/lib/salvo/auth"
# auth_timeout = "5s"
# store = "postgres://salvo@db.example.org/salvo"

tun_name = "salvo0"          # 1..15 characters
mtu = 1420                   # 576..9000; at least 1280 with an IPv6 pool
keepalive = "25s"            # 1s..1h; "0s" means the default. A client silent for 3 of these
                             # (plus 5s) is considered gone and its session and address freed

# Client address pools; at least one is required. The gateway takes the
# first host address of each (10.77.0.1, fd77::1).
ipv4_pool = "10.77.0.0/24"
ipv6_pool = "fd77::/64"

# Pushed to clients: routes through the tunnel, routes kept off it,
# resolvers and search domains. Use ["0.0.0.0/0", "::/0"] for a full tunnel.
routes = ["192.168.10.0/24"]
excluded_routes = []
dns = ["10.77.0.1"]
search_domains = ["corp.example"]

nat = false                  # masquerade pool traffic leaving other interfaces
# nat_interface = "eth0"     # optional: only masquerade out of this interface
client_to_client = false     # let clients reach each other
max_sessions_per_user = 4    # a login beyond it replaces the user's oldest session,
                             # which is told so and does not reconnect
max_session_age = "0s"       # "0s": no limit; else a session older than this must log
                             # in with its password again at its next rekey (at least "10m")
hash_budget = 1280           # password hashing allowed per second, in argon2id MiB x passes
                             # (1280: ten logins/s at the default 64 MiB, t=2)
failed_login_burst = 10      # failed logins allowed at once from one source (or for one login),
failed_login_interval = "2s" # then one more per interval; SIGHUP or salvo reload applies changes
state_dir = "/var/lib/salvo" # leases and session ticket keys, kept across restarts
# ticket_keys_file = "/var/lib/salvo/ticket-keys" # default; gateways sharing one file (on shared
#                              # storage) accept each other's session tickets. As secret as the key.

control_socket = "/run/salvo/server.sock"
# metrics_listen = "127.0.0.1:9586" # Prometheus metrics at /metrics (off unless set; they name users)
# metrics_per_user = true            # per-user traffic series (false: totals only)
log_format = "text"          # "text" or "json"
log_level = "info"           # "debug", "info", "warn" or "error"
ebpf = "auto"                # eBPF classifier: steer data to the worker owning its session, drop junk in
                             # the kernel. "auto": use it when the kernel and privileges allow (CAP_BPF);
                             # "on": fail if it cannot load; "off": never load it
ebpf_tun_steering = false    # also steer TUN packets to the owning worker's queue (needs ebpf)
workers = 1                  # per-core workers (a socket and a TUN queue each); 0: one per CPU
batch_size = 128             # packets per read/write call; memory is about batch_size x 72 KiB
                             # per socket plus one more for the TUN device (9 MiB each at 128)
`

const exampleClient = `# Salvo client configuration (TOML). Unknown keys are errors.
# Relative paths are relative to this file's directory.

server = "vpn.example.com:51820"   # host:port; IPv6 as "[2001:db8::1]:51820"
# More gateways that share the gateway key (and, for a move without a password, its ticket keys),
# tried in turn when the one in use stops answering:
# fallback_servers = ["vpn2.example.com:51820"]
# The gateway's public key ("salvo pubkey" on the gateway), base64.
server_public_key = "Q2hhbmdlIG1lOiBwYXN0ZSB0aGUgZ2F0ZXdheSBrZXk="
username = "alice"

# The password is never written here. Either name a file holding it (mode
# 0600; one trailing newline is ignored), or an environment variable, or set
# neither to be prompted on the terminal.
# password_file = "password"
# password_env = "SALVO_PASSWORD"

tun_name = "salvo1"
routes = "pushed"                  # "pushed": install the gateway's routes; "none": install none
extra_excluded_routes = []         # more prefixes to keep off the tunnel
dns = true                         # apply the resolvers the gateway pushes
fwmark = 0x5a17                    # marks tunnel packets for full-tunnel policy routing
route_table = 51820                # routing table for full-tunnel routes
rule_priority = 10000              # the two policy rules take this priority and the next

# Full tunnel (the gateway pushes 0.0.0.0/0 or ::/0): nothing may leave outside the tunnel.
leak_guard = "auto"                # "auto": an nftables guard for full tunnels; "on": always; "off"
kill_switch = true                 # the guard stays after a crash until the client is back or
                                   # "salvo client --down" removes it
allow_lan = false                  # let the LAN's private ranges (RFC 1918, fc00::/7, link-local)
                                   # through the guard; a LAN claiming public space is never trusted
dns_fail_open = false              # full tunnel without applicable DNS: refuse (false) or go on
accept_lan_routes = false          # apply pushed routes over the LAN or the gateway's address
accept_covering_excludes = false   # apply excluded routes that take pushed routes back out

control_socket = "/run/salvo/client.sock"
log_format = "text"
log_level = "info"
batch_size = 128             # packets per read/write call (memory: batch_size x 72 KiB per direction)
`
