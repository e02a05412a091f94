package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/salvovpn/salvo/internal/netns"
	"github.com/salvovpn/salvo/protocol"
)

// System names accepted by --systems, in the order they are measured.
const (
	SysBare        = "bare"
	SysSalvo       = "salvo"
	SysWireguardGo = "wireguard-go"
	SysOpenVPN     = "openvpn"
)

// SysSalvoBaseline is Salvo with the batched data plane's UDP offloads switched off (SALVO_NO_UDP_GSO,
// SALVO_NO_UDP_GRO): the same binary as SysSalvo, so selecting both gives a before/after of those offloads
// measured in one run.
const SysSalvoBaseline = "salvo-baseline"

// SysSalvoWgTun is Salvo with wireguard-go's tun package instead of its own offload code
// (SALVO_TUN_IMPL=wireguard), to measure package offload against it in one run.
const SysSalvoWgTun = "salvo-wgtun"

// SysSalvo1Worker is Salvo's gateway with one worker (workers = 1) instead of one per CPU, to measure the
// per-core worker design in one run.
const SysSalvo1Worker = "salvo-1worker"

// SysSalvoGuard is Salvo's client with its full-tunnel leak guard up (leak_guard = "on"), to show in one
// run that the guard's nftables rules do not cost the data path.
const SysSalvoGuard = "salvo-guard"

// SysSalvoRef is Salvo built from another git revision (Config.Ref), measured beside SysSalvo so a change's
// before/after comes from one run.
const SysSalvoRef = "salvo-ref"

// AllSystems is the default selection.
var AllSystems = []string{SysBare, SysWireguardGo, SysOpenVPN, SysSalvo}

// KnownSystems is every system --systems accepts, in measurement order.
var KnownSystems = []string{SysBare, SysWireguardGo, SysOpenVPN, SysSalvoRef, SysSalvoBaseline, SysSalvoWgTun, SysSalvo1Worker, SysSalvoGuard, SysSalvo}

// salvoBaselineEnv is the environment of the salvo-baseline system.
var salvoBaselineEnv = []string{"SALVO_NO_UDP_GSO=1", "SALVO_NO_UDP_GRO=1"}

// tunnel is one system brought up on a Topology.
type tunnel interface {
	// target is the address in B that traffic from A is sent to (the iperf3
	// server and the ping target): through the tunnel, or the veth for bare.
	target() string
	// daemons are the tunnel's own processes (nil for bare), whose CPU time
	// and peak RSS are the system's cost.
	daemons() []*daemon
	// dev is the interface in A that traffic to target must leave through.
	dev() string
	// info is system-specific detail kept in the JSON (e.g. client address).
	info() map[string]string
	close()
}

// system knows how to build and bring up one data plane.
type system interface {
	name() string
	// prepare builds what the system needs once per harness run and returns
	// a version string for the report.
	prepare(ctx context.Context, work string) (string, error)
	up(ctx context.Context, t *Topology, dir string) (tunnel, error)
}

// ---- bare ------------------------------------------------------------------

type bareSystem struct{}

type bareTunnel struct{}

func (bareSystem) name() string                                          { return SysBare }
func (bareSystem) prepare(context.Context, string) (string, error)       { return "veth", nil }
func (bareSystem) up(context.Context, *Topology, string) (tunnel, error) { return bareTunnel{}, nil }
func (bareTunnel) target() string                                        { return addrB4 }
func (bareTunnel) dev() string                                           { return vethA }
func (bareTunnel) daemons() []*daemon                                    { return nil }
func (bareTunnel) info() map[string]string                               { return nil }
func (bareTunnel) close()                                                {}

// ---- wireguard-go ----------------------------------------------------------

// WireguardGoVersion is the pinned wireguard-go module version the harness
// builds; pinned so that runs months apart compare the same reference.
const WireguardGoVersion = "v0.0.0-20260522210424-ecfc5a8d5446"

const (
	wgTunA = "10.66.0.1"
	wgTunB = "10.66.0.2"
	wgPort = "51820"
)

// tunnelMTU is the tunnel MTU of every system: Salvo's default, which wireguard-go's interface gets too.
const tunnelMTU = protocol.DefaultMTU

type wgSystem struct {
	cacheDir string
	bin      string
}

func (s *wgSystem) name() string { return SysWireguardGo }

func (s *wgSystem) prepare(ctx context.Context, work string) (string, error) {
	bin, err := BuildWireguardGo(ctx, s.cacheDir)
	if err != nil {
		return "", err
	}
	// Resolved, because /proc/<pid>/exe (compared against it) always is.
	if s.bin, err = filepath.EvalSymlinks(bin); err != nil {
		return "", err
	}
	out, err := exec.CommandContext(ctx, bin, "--version").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s --version: %w: %s", bin, err, out)
	}
	return strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0]) + " (module " + WireguardGoVersion + ")", nil
}

// BuildWireguardGo installs the pinned wireguard-go into cacheDir (reused
// when already there: it is a build artefact, not a result) and returns the
// binary's path. It builds from a throw-away directory with GOWORK=off so
// nothing about the Salvo module (go.mod, go.sum) is read or touched.
func BuildWireguardGo(ctx context.Context, cacheDir string) (string, error) {
	dir := filepath.Join(cacheDir, "wireguard-go-"+WireguardGoVersion)
	bin := filepath.Join(dir, "wireguard") // go install names it after the module's last element
	if fi, err := os.Stat(bin); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
		return bin, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	scratch, err := os.MkdirTemp("", "salvo-bench-wgbuild-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(scratch)
	cmd := exec.CommandContext(ctx, "go", "install", "golang.zx2c4.com/wireguard@"+WireguardGoVersion)
	cmd.Dir = scratch
	cmd.Env = append(os.Environ(), "GOBIN="+dir, "GOFLAGS=-mod=mod", "GOWORK=off", "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build wireguard-go %s: %w: %s", WireguardGoVersion, err, strings.TrimSpace(string(out)))
	}
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("build wireguard-go: %s missing after go install: %w", bin, err)
	}
	return bin, nil
}

type wgTunnel struct {
	ds []*daemon
}

func (t *wgTunnel) target() string          { return wgTunB }
func (t *wgTunnel) dev() string             { return "wg0" }
func (t *wgTunnel) daemons() []*daemon      { return t.ds }
func (t *wgTunnel) info() map[string]string { return nil }
func (t *wgTunnel) close() {
	for _, d := range t.ds {
		d.stop(3 * time.Second)
	}
}

// wgStartScript runs wireguard-go under a private tmpfs on /run. wireguard-go
// and wg(8) meet at the fixed path /var/run/wireguard/wg0.sock, which is not
// per network namespace: two "wg0" on one host would collide (the second
// refuses "address already in use"), and wg would talk to the wrong one.
// A private mount namespace per side gives each its own socket directory;
// `wg` is run inside the same mount namespace via nsenter. The final exec
// keeps the pid the harness holds equal to wireguard-go's own.
const wgStartScript = `mount -t tmpfs -o mode=0755,size=1m salvo-bench /run && mkdir /run/wireguard && exec "$0" wg0`

func (s *wgSystem) up(ctx context.Context, t *Topology, dir string) (_ tunnel, err error) {
	tun := &wgTunnel{}
	defer func() {
		if err != nil {
			tun.close()
		}
	}()
	type side struct {
		ns               *netns.NS
		tunAddr, peerTun string
		endpoint, tag    string // endpoint: where this side sends to its peer ("" = learn it from the peer)
		priv, pub        string
	}
	sides := []*side{
		{ns: t.A, tunAddr: wgTunA, peerTun: wgTunB, endpoint: t.serverEndpoint(wgPort), tag: "a"},
		{ns: t.B, tunAddr: wgTunB, peerTun: wgTunA, endpoint: addrA4 + ":" + wgPort, tag: "b"},
	}
	if t.Relay.IsValid() {
		// Through the fault relay, B must answer where A's packets come from (the relay), as WireGuard
		// does for a peer without an endpoint, never A directly.
		sides[1].endpoint = ""
	}
	for _, sd := range sides {
		if sd.priv, sd.pub, err = wgKeypair(ctx); err != nil {
			return nil, err
		}
	}
	for i, sd := range sides {
		peer := sides[1-i]
		d, err := startDaemon(ctx, sd.ns, filepath.Join(dir, "wireguard-go-"+sd.tag+".log"),
			[]string{"WG_PROCESS_FOREGROUND=1"},
			"unshare", "--mount", "--propagation", "private", "sh", "-c", wgStartScript, s.bin)
		if err != nil {
			return nil, err
		}
		d.exe = s.bin
		tun.ds = append(tun.ds, d)
		pid := d.pid()
		// Ready when the pid has become wireguard-go (so CPU/RSS accounting
		// reads the right process) and its UAPI socket exists.
		err = waitFor(ctx, 10*time.Second, "wireguard-go UAPI socket in "+sd.ns.Name, []*daemon{d}, func() (bool, error) {
			exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
			if err != nil || exe != s.bin {
				return false, err
			}
			_, err = os.Stat(fmt.Sprintf("/proc/%d/root/run/wireguard/wg0.sock", pid))
			return err == nil, err
		})
		if err != nil {
			return nil, err
		}
		args := []string{"--target", strconv.Itoa(pid), "--mount", "--net",
			"wg", "set", "wg0", "listen-port", wgPort, "private-key", "/dev/stdin",
			"peer", peer.pub, "allowed-ips", peer.tunAddr + "/32"}
		if sd.endpoint != "" {
			args = append(args, "endpoint", sd.endpoint)
		}
		wg := exec.CommandContext(ctx, "nsenter", args...)
		wg.Stdin = strings.NewReader(sd.priv + "\n")
		if out, err := wg.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("wg set in %s: %w: %s", sd.ns.Name, err, strings.TrimSpace(string(out)))
		}
		if err := sd.ns.AddAddr("wg0", sd.tunAddr+"/24"); err != nil {
			return nil, err
		}
		if _, err := sd.ns.Run("ip", "link", "set", "wg0", "mtu", strconv.Itoa(tunnelMTU), "up"); err != nil {
			return nil, err
		}
	}
	if err := pingUntil(ctx, t.A, wgTunB, 10*time.Second, tun.ds); err != nil {
		return nil, fmt.Errorf("wireguard-go tunnel does not pass traffic: %w", err)
	}
	return tun, nil
}

// wgKeypair uses Debian's wg(8) for keys, as an operator would.
func wgKeypair(ctx context.Context) (priv, pub string, err error) {
	out, err := exec.CommandContext(ctx, "wg", "genkey").Output()
	if err != nil {
		return "", "", fmt.Errorf("wg genkey: %w", err)
	}
	priv = strings.TrimSpace(string(out))
	c := exec.CommandContext(ctx, "wg", "pubkey")
	c.Stdin = strings.NewReader(priv + "\n")
	out, err = c.Output()
	if err != nil {
		return "", "", fmt.Errorf("wg pubkey: %w", err)
	}
	return priv, strings.TrimSpace(string(out)), nil
}

// pingUntil retries single pings until one is answered: the first packets
// through a tunnel wait for its handshake.
func pingUntil(ctx context.Context, ns *netns.NS, dst string, timeout time.Duration, ds []*daemon) error {
	addr := netip.MustParseAddr(dst)
	return waitFor(ctx, timeout, "ping "+dst+" from "+ns.Name, ds, func() (bool, error) {
		err := ns.Ping(addr, 500*time.Millisecond)
		return err == nil, err
	})
}

// ---- OpenVPN 2.6 -------------------------------------------------------------

// OpenVPN runs as Debian packages it (2.6 on bookworm), in point-to-point static-key mode between the two
// namespaces: UDP, a tun device, no data channel offload (--disable-dco: the kernel module would move the
// data path out of the measured process, and 2.6's DCO needs TLS and an AEAD cipher anyway).
//
// What 2.6 accepts in that mode, as checked against 2.6.14 with OpenSSL 3:
//   - --secret works but warns "DEPRECATED OPTION" and that 2.7 removes VPNs without TLS; the warnings
//     are only logged. When 2.7 lands, this system needs TLS with --peer-fingerprint instead.
//   - AEAD ciphers are refused ("Cipher 'AES-256-GCM' mode not supported"): static-key mode only does
//     CBC with a separate HMAC. The default, BF-CBC, is not in OpenSSL 3's default provider, so the
//     cipher is named: AES-256-CBC with HMAC-SHA256, the usual modern choice for that mode.
//
// So OpenVPN pays for CBC plus HMAC where WireGuard and Salvo use one AEAD pass; that is what an operator
// gets from static-key OpenVPN 2.6, and the version line in the report says so.
const (
	ovpnTunA   = "10.88.0.1"
	ovpnTunB   = "10.88.0.2"
	ovpnDev    = "ovpn0"
	ovpnPort   = "51820" // the port the flood benchmark aims at, as for the other systems
	ovpnCipher = "AES-256-CBC"
	ovpnAuth   = "SHA256"
)

type openvpnSystem struct {
	bin string
}

func (s *openvpnSystem) name() string { return SysOpenVPN }

func (s *openvpnSystem) prepare(ctx context.Context, work string) (string, error) {
	bin, err := exec.LookPath("openvpn")
	if err != nil {
		return "", fmt.Errorf("openvpn not installed (Debian package openvpn; make deps installs it): %w", err)
	}
	if s.bin, err = filepath.EvalSymlinks(bin); err != nil { // see wgSystem.prepare
		return "", err
	}
	// --version exits 1 after printing; the text is what counts.
	out, _ := exec.CommandContext(ctx, s.bin, "--version").CombinedOutput()
	first := strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
	if !strings.HasPrefix(first, "OpenVPN ") {
		return "", fmt.Errorf("openvpn --version: unexpected output %q", first)
	}
	if f := strings.Fields(first); len(f) > 1 {
		first = "OpenVPN " + f[1]
	}
	return first + ", static key, " + ovpnCipher + " + HMAC-" + ovpnAuth + ", no DCO", nil
}

type ovpnTunnel struct {
	ds []*daemon
}

func (t *ovpnTunnel) target() string     { return ovpnTunB }
func (t *ovpnTunnel) dev() string        { return ovpnDev }
func (t *ovpnTunnel) daemons() []*daemon { return t.ds }
func (t *ovpnTunnel) info() map[string]string {
	return map[string]string{"cipher": ovpnCipher, "auth": ovpnAuth}
}
func (t *ovpnTunnel) close() {
	for _, d := range t.ds {
		d.stop(3 * time.Second) // on SIGTERM openvpn removes its address and device
	}
}

func (s *openvpnSystem) up(ctx context.Context, t *Topology, dir string) (_ tunnel, err error) {
	tun := &ovpnTunnel{}
	defer func() {
		if err != nil {
			tun.close()
		}
	}()
	key := filepath.Join(dir, "openvpn.key")
	if out, err := exec.CommandContext(ctx, s.bin, "--genkey", "secret", key).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("openvpn --genkey secret: %w: %s", err, strings.TrimSpace(string(out)))
	}
	common := []string{"--dev", ovpnDev, "--dev-type", "tun", "--proto", "udp4", "--disable-dco",
		"--secret", key, "--cipher", ovpnCipher, "--auth", ovpnAuth,
		// The interface MTU of every system. Static-key CBC adds up to 72 bytes (HMAC 32, IV 16, packet
		// id and time 8, padding 1-16) where Salvo adds 32, so a full 1420-byte packet would make a
		// 1516-byte datagram and fragment on the 1500-byte veth; --mssfix with "mtu" clamps TCP so its
		// datagrams, IP and UDP headers included, fit 1500. No test sends large UDP.
		"--tun-mtu", strconv.Itoa(tunnelMTU), "--mssfix", "1500", "mtu",
		"--verb", "3"}
	remote := netip.MustParseAddrPort(t.serverEndpoint(ovpnPort))
	sides := []struct {
		ns          *netns.NS
		local, peer string
		extra       []string
		tag         string
	}{
		// A knows where B listens (or the relay); B answers wherever A's authenticated packets come from,
		// as a peer without --remote does, which also works through the fault relay.
		{t.A, ovpnTunA, ovpnTunB, []string{"--nobind", "--remote", remote.Addr().String(),
			"--rport", strconv.Itoa(int(remote.Port()))}, "a"},
		{t.B, ovpnTunB, ovpnTunA, []string{"--lport", ovpnPort}, "b"},
	}
	for _, sd := range sides {
		args := append(slices.Clone(common), "--ifconfig", sd.local, sd.peer)
		args = append(args, sd.extra...)
		d, err := startDaemon(ctx, sd.ns, filepath.Join(dir, "openvpn-"+sd.tag+".log"), nil, s.bin, args...)
		if err != nil {
			return nil, err
		}
		d.exe = s.bin
		tun.ds = append(tun.ds, d)
		ns := sd.ns
		if err := waitFor(ctx, 10*time.Second, "openvpn device "+ovpnDev+" up in "+ns.Name, []*daemon{d}, func() (bool, error) {
			out, err := ns.Run("ip", "-o", "addr", "show", "dev", ovpnDev)
			return err == nil && strings.Contains(out, sd.local), err
		}); err != nil {
			return nil, err
		}
	}
	if err := pingUntil(ctx, t.A, ovpnTunB, 10*time.Second, tun.ds); err != nil {
		return nil, fmt.Errorf("openvpn tunnel does not pass traffic: %w", err)
	}
	return tun, nil
}

// ---- salvo -----------------------------------------------------------------

const (
	salvoGatewayTun = "10.77.0.1"
	salvoUser       = "bench"
)

type salvoSystem struct {
	repoDir string
	bin     string
	sysName string   // SysSalvo or a variant
	env     []string // extra environment of the gateway and client processes
	// serverExtra and clientExtra are appended to the gateway's and the client's configuration (e.g.
	// "workers = 1").
	serverExtra, clientExtra string
	// ref, if set, is the git revision to build instead of the working tree.
	ref string
	// hasStateDir: the binary knows the state_dir key (revisions before it refuse unknown keys).
	hasStateDir bool
}

func (s *salvoSystem) name() string { return s.sysName }

// prepare builds the CLI from the checkout the harness runs in, so the
// figures belong to exactly that source tree.
func (s *salvoSystem) prepare(ctx context.Context, work string) (string, error) {
	if s.repoDir == "" {
		return "", errors.New("salvo: repository root unknown (run from inside the checkout)")
	}
	var err error
	if work, err = filepath.EvalSymlinks(work); err != nil { // see wgSystem.prepare
		return "", err
	}
	s.bin = filepath.Join(work, s.sysName)
	src := s.repoDir
	if s.ref != "" {
		// The revision's tree, exported (not checked out: the working tree stays as it is).
		src = filepath.Join(work, "src-"+s.sysName)
		if err := os.MkdirAll(src, 0o755); err != nil {
			return "", err
		}
		archive := exec.CommandContext(ctx, "sh", "-c", `git -C "$1" archive "$2" | tar -x -C "$3"`, "sh", s.repoDir, s.ref, src)
		if out, err := archive.CombinedOutput(); err != nil {
			return "", fmt.Errorf("salvo-ref: export revision %s: %v: %s", s.ref, err, out)
		}
	}
	if err := buildSalvo(ctx, src, s.bin); err != nil {
		return "", err
	}
	help, _ := exec.CommandContext(ctx, s.bin, "server", "--help").CombinedOutput()
	s.hasStateDir = strings.Contains(string(help), "state_dir")
	ver := "unknown commit"
	args := []string{"-C", s.repoDir, "describe", "--always", "--dirty"}
	if s.ref != "" {
		args = []string{"-C", s.repoDir, "rev-parse", "--short", s.ref}
	}
	if out, err := exec.CommandContext(ctx, "git", args...).Output(); err == nil {
		ver = strings.TrimSpace(string(out))
	}
	return "salvo " + ver, nil
}

// stateDirLine keeps the gateway's leases in the run's own directory, when the binary knows the key.
func (s *salvoSystem) stateDirLine(dir string) string {
	if !s.hasStateDir {
		return ""
	}
	return fmt.Sprintf("state_dir = %q", filepath.Join(dir, "state"))
}

type salvoTunnel struct {
	ds         []*daemon
	clientAddr string
	// What another client needs to log in to this gateway (the flood benchmark times a newcomer's login).
	publicKey, password, serverSock string
}

func (t *salvoTunnel) target() string     { return salvoGatewayTun }
func (t *salvoTunnel) dev() string        { return "salvo1" }
func (t *salvoTunnel) daemons() []*daemon { return t.ds }
func (t *salvoTunnel) info() map[string]string {
	return map[string]string{"client_address": t.clientAddr}
}

// close stops the client before the gateway, as an operator would.
func (t *salvoTunnel) close() {
	for i := len(t.ds) - 1; i >= 0; i-- {
		t.ds[i].stop(5 * time.Second)
	}
}

// salvoStatus is the part of `salvo status --json` the harness reads.
type salvoStatus struct {
	State    string `json:"state"`
	Sessions []struct {
		Addresses []string `json:"addresses"`
	} `json:"sessions"`
	LeakGuard *struct {
		Blocked uint64 `json:"blocked"`
	} `json:"leak_guard"`
}

func (s *salvoSystem) up(ctx context.Context, t *Topology, dir string) (_ tunnel, err error) {
	tun := &salvoTunnel{}
	defer func() {
		if err != nil {
			tun.close()
		}
	}()
	run := func(stdin string, args ...string) (string, error) {
		c := exec.CommandContext(ctx, s.bin, args...)
		c.Stdin = strings.NewReader(stdin)
		var out, errb bytes.Buffer
		c.Stdout, c.Stderr = &out, &errb
		if err := c.Run(); err != nil {
			return "", fmt.Errorf("salvo %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
		}
		return out.String(), nil
	}
	keyFile := filepath.Join(dir, "server.key")
	out, err := run("", "keygen", "--out", keyFile)
	if err != nil {
		return nil, err
	}
	pub := strings.TrimSpace(out)
	if i := strings.LastIndexByte(pub, '\n'); i >= 0 {
		pub = strings.TrimSpace(pub[i+1:])
	}
	if pub == "" {
		return nil, errors.New("salvo keygen printed no public key")
	}
	var rnd [16]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, err
	}
	password := hex.EncodeToString(rnd[:])
	usersFile := filepath.Join(dir, "users")
	if _, err := run(password+"\n", "user", "add", "--file", usersFile, "--password-stdin", salvoUser); err != nil {
		return nil, err
	}
	passFile := filepath.Join(dir, "bench.pass")
	if err := os.WriteFile(passFile, []byte(password+"\n"), 0o600); err != nil {
		return nil, err
	}
	serverSock := filepath.Join(dir, "server.sock")
	clientSock := filepath.Join(dir, "client.sock")
	serverConf := filepath.Join(dir, "server.toml")
	clientConf := filepath.Join(dir, "client.toml")
	if err := os.WriteFile(serverConf, []byte(fmt.Sprintf(`listen = ["%s:51820"]
private_key_file = %q
users_file = %q
tun_name = "salvo0"
mtu = %d
ipv4_pool = "10.77.0.0/24"
ipv6_pool = "fd77::/64"
nat = false
control_socket = %q
%s
%s
`, addrB4, keyFile, usersFile, tunnelMTU, serverSock, s.stateDirLine(dir), s.serverExtra)), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(clientConf, []byte(fmt.Sprintf(`server = "%s"
server_public_key = %q
username = %q
password_file = %q
tun_name = "salvo1"
control_socket = %q
%s
`, t.serverEndpoint("51820"), pub, salvoUser, passFile, clientSock, s.clientExtra)), 0o600); err != nil {
		return nil, err
	}

	tun.publicKey, tun.password, tun.serverSock = pub, password, serverSock
	srv, err := startDaemon(ctx, t.B, filepath.Join(dir, "server.log"), s.env, s.bin, "server", "--config", serverConf)
	if err != nil {
		return nil, err
	}
	srv.exe = s.bin
	tun.ds = append(tun.ds, srv)
	if err := waitFor(ctx, 15*time.Second, "salvo gateway control socket", tun.ds, func() (bool, error) {
		_, err := os.Stat(serverSock)
		return err == nil, err
	}); err != nil {
		return nil, err
	}
	cli, err := startDaemon(ctx, t.A, filepath.Join(dir, "client.log"), s.env, s.bin, "client", "--config", clientConf)
	if err != nil {
		return nil, err
	}
	cli.exe = s.bin
	tun.ds = append(tun.ds, cli)
	// The status socket is a path-bound Unix socket, reachable from the host
	// namespace; the client connects after its argon2id login, hence the wait.
	var st salvoStatus
	if err := waitFor(ctx, 30*time.Second, `salvo client "state": "connected"`, tun.ds, func() (bool, error) {
		out, err := run("", "status", "--socket", clientSock, "--json")
		if err != nil {
			return false, err
		}
		st = salvoStatus{}
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			return false, fmt.Errorf("status JSON: %w", err)
		}
		return st.State == "connected", fmt.Errorf("state %q", st.State)
	}); err != nil {
		return nil, err
	}
	if len(st.Sessions) > 0 {
		tun.clientAddr = strings.Join(st.Sessions[0].Addresses, ",")
	}
	if wantGuard := strings.Contains(s.clientExtra, `leak_guard = "on"`); wantGuard != (st.LeakGuard != nil) {
		return nil, fmt.Errorf("%s: the client's leak guard is up: %v, want %v", s.sysName, st.LeakGuard != nil, wantGuard)
	}
	if err := pingUntil(ctx, t.A, salvoGatewayTun, 10*time.Second, tun.ds); err != nil {
		return nil, fmt.Errorf("salvo tunnel does not pass traffic: %w", err)
	}
	return tun, nil
}

// buildSalvo builds ./cmd/salvo of the tree at src into bin, with the first lines of the compiler's
// complaint in the error.
func buildSalvo(ctx context.Context, src, bin string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/salvo")
	cmd.Dir = src
	if out, err := cmd.CombinedOutput(); err != nil {
		msg := strings.TrimSpace(string(out))
		if lines := strings.Split(msg, "\n"); len(lines) > 8 {
			msg = strings.Join(lines[:8], "\n") + fmt.Sprintf("\n... (%d more lines)", len(lines)-8)
		}
		return fmt.Errorf("salvo does not build (go build ./cmd/salvo): %w:\n%s", err, msg)
	}
	return nil
}
