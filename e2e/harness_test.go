// Package e2e runs the real salvo binary as gateway and clients in network namespaces made by each test.
// Every namespace and process is removed by t.Cleanup, also when a test fails.
package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/salvovpn/salvo/engine"
	"github.com/salvovpn/salvo/engine/control"
	"github.com/salvovpn/salvo/internal/netns"
)

// salvoBin is built with the race detector, so every end-to-end test also hunts data races in the real
// daemons; salvoBinNoRace is for what the race detector distorts (allocation counts: under -race sync.Pool
// drops items on purpose).
var salvoBin, salvoBinNoRace string

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 && os.Getenv("CI") != "true" {
		fmt.Println("e2e: not root; skipping (CI=true makes this a failure)")
		os.Exit(0)
	}
	dir, err := os.MkdirTemp("", "salvo-e2e-bin")
	if err != nil {
		panic(err)
	}
	salvoBin = filepath.Join(dir, "salvo")
	salvoBinNoRace = filepath.Join(dir, "salvo-norace")
	for _, b := range [][]string{{"-race", "-o", salvoBin}, {"-o", salvoBinNoRace}} {
		out, err := exec.Command("go", append(append([]string{"build"}, b...), "../cmd/salvo")...).CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "build salvo %v: %v\n%s", b, err, out)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const (
	password  = "correct horse battery staple"
	hostV4    = "10.201.0.2"
	hostV6    = "fd00:201::2"
	serverTun = "salvo0"
	clientTun = "salvo1"
)

// world is a gateway namespace G with a host H behind it (10.201.0.0/24, fd00:201::/64) and any number of
// client namespaces, each on its own veth to G (10.200.N.0/24, fd00:200:N::/64).
type world struct {
	t       *testing.T
	dir     string
	gw      *netns.NS
	host    *netns.NS
	pubKey  string
	clients int
	server  *proc
	// env is added to the environment of every salvo process the world starts (offload switches).
	env []string
	// bin is the salvo binary the world starts (salvoBin unless a test needs another).
	bin string
}

func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{t: t, dir: t.TempDir(), bin: salvoBin}
	w.gw = netns.ForTest(t, "salvo-e2e-g")
	w.host = netns.ForTest(t, "salvo-e2e-h")
	must(t, netns.Veth(w.gw, "toh", w.host, "tog"))
	must(t, w.gw.AddAddr("toh", "10.201.0.1/24"))
	must(t, w.gw.AddAddr("toh", "fd00:201::1/64"))
	must(t, w.host.AddAddr("tog", hostV4+"/24"))
	must(t, w.host.AddAddr("tog", hostV6+"/64"))
	must(t, w.gw.LinkUp("toh"))
	must(t, w.host.LinkUp("tog"))
	// The host has no route back to the tunnel pools: replies only work through the gateway's NAT.
	out, err := exec.Command(salvoBin, "keygen", "--out", filepath.Join(w.dir, "server.key")).Output()
	must(t, err)
	w.pubKey = strings.TrimSpace(string(out))
	w.addUser("alice", "")
	w.addUser("bob", "")
	return w
}

func (w *world) addUser(login, extra string) {
	args := []string{"user", "add", "--file", filepath.Join(w.dir, "users"), "--password-stdin", login}
	if extra != "" {
		args = append(args, strings.Fields(extra)...)
	}
	cmd := exec.Command(salvoBin, args...)
	cmd.Stdin = strings.NewReader(password + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		w.t.Fatalf("user add %s: %v\n%s", login, err, out)
	}
}

// client is a namespace with a veth to the gateway.
type client struct {
	ns      *netns.NS
	n       int
	gwV4    string // the gateway's address on this client's link
	gwV6    string
	dir     string
	ctlSock string
	proc    *proc
}

func (w *world) addClient() *client {
	w.t.Helper()
	w.clients++
	n := w.clients
	c := &client{ns: netns.ForTest(w.t, "salvo-e2e-c"), n: n, gwV4: fmt.Sprintf("10.200.%d.1", n),
		gwV6: fmt.Sprintf("fd00:200:%d::1", n), dir: filepath.Join(w.dir, fmt.Sprintf("client%d", n))}
	must(w.t, os.MkdirAll(c.dir, 0o700))
	c.ctlSock = filepath.Join(c.dir, "client.sock")
	gif := fmt.Sprintf("toc%d", n)
	must(w.t, netns.Veth(w.gw, gif, c.ns, "tog"))
	must(w.t, w.gw.AddAddr(gif, c.gwV4+"/24"))
	must(w.t, w.gw.AddAddr(gif, c.gwV6+"/64"))
	must(w.t, c.ns.AddAddr("tog", fmt.Sprintf("10.200.%d.2/24", n)))
	must(w.t, c.ns.AddAddr("tog", fmt.Sprintf("fd00:200:%d::2/64", n)))
	must(w.t, w.gw.LinkUp(gif))
	must(w.t, c.ns.LinkUp("tog"))
	// A default route on the client's LAN, as on a real machine: the full-tunnel test needs to see it
	// suppressed for everything but the gateway's own packets.
	must(w.t, c.ns.AddRoute("default", c.gwV4))
	must(w.t, c.ns.AddRoute("default", c.gwV6))
	return c
}

// serverConfig is the base gateway configuration; extra lines override or add keys, and a key with
// nothing after its "=" is removed.
func (w *world) serverConfig(extra string) string {
	base := map[string]string{
		"listen":           `["0.0.0.0:51820", "[::]:51820"]`,
		"private_key_file": `"server.key"`,
		"users_file":       `"users"`,
		"tun_name":         `"` + serverTun + `"`,
		"ipv4_pool":        `"10.77.0.0/24"`,
		"ipv6_pool":        `"fd77::/64"`,
		"routes":           `["10.201.0.0/24", "fd00:201::/64"]`,
		"nat":              `true`,
		"control_socket":   `"` + filepath.Join(w.dir, "server.sock") + `"`,
		"state_dir":        `"` + filepath.Join(w.dir, "state") + `"`,
		"log_level":        `"debug"`,
	}
	// The suite runs once with the eBPF classifier off and once (SALVO_E2E_EBPF=on) with it attached to
	// every gateway (make test does both), so both paths stay covered whatever the default.
	base["ebpf"] = `"off"`
	if v := os.Getenv("SALVO_E2E_EBPF"); v != "" {
		base["ebpf"] = `"` + v + `"`
	}
	for _, line := range strings.Split(extra, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			if k, v = strings.TrimSpace(k), strings.TrimSpace(v); v == "" {
				delete(base, k)
			} else {
				base[k] = v
			}
		}
	}
	var b strings.Builder
	for k, v := range base {
		fmt.Fprintf(&b, "%s = %s\n", k, v)
	}
	return b.String()
}

func (w *world) startServer(extra string) *proc {
	w.t.Helper()
	path := filepath.Join(w.dir, "server.toml")
	must(w.t, os.WriteFile(path, []byte(w.serverConfig(extra)), 0o600))
	p := startEnv(w.t, w.gw, w.env, "gateway", w.bin, "server", "--config", path)
	w.server = p
	waitFor(w.t, 10*time.Second, "gateway control socket", func() error {
		if p.exited() {
			return errStop(fmt.Errorf("gateway exited: %s", p.output()))
		}
		var st engine.Status
		return control.Query(filepath.Join(w.dir, "server.sock"), &st)
	})
	return p
}

func (w *world) serverStatus() engine.Status {
	w.t.Helper()
	var st engine.Status
	must(w.t, control.Query(filepath.Join(w.dir, "server.sock"), &st))
	return st
}

// clientConfig writes a client configuration; server is host:port as the user would write it.
func (w *world) clientConfig(c *client, user, pw, server, extra string) string {
	pwFile := filepath.Join(c.dir, "password")
	must(w.t, os.WriteFile(pwFile, []byte(pw+"\n"), 0o600))
	cfg := fmt.Sprintf("server = %q\nserver_public_key = %q\nusername = %q\npassword_file = %q\ncontrol_socket = %q\nlog_level = \"debug\"\n%s\n",
		server, w.pubKey, user, pwFile, c.ctlSock, extra)
	if !strings.Contains(extra, "tun_name") {
		cfg += fmt.Sprintf("tun_name = %q\n", clientTun)
	}
	path := filepath.Join(c.dir, "client.toml")
	must(w.t, os.WriteFile(path, []byte(cfg), 0o600))
	return path
}

// connect starts a client and waits until it reports a connected tunnel.
func (w *world) connect(c *client, user, server, extra string) {
	w.t.Helper()
	path := w.clientConfig(c, user, password, server, extra)
	c.proc = startEnv(w.t, c.ns, w.env, "client"+fmt.Sprint(c.n), w.bin, "client", "--config", path)
	w.waitConnected(c, 15*time.Second)
}

func (w *world) waitConnected(c *client, d time.Duration) {
	w.t.Helper()
	waitFor(w.t, d, "client connected", func() error {
		if c.proc.exited() {
			return errStop(fmt.Errorf("client exited: %s", c.proc.output()))
		}
		st, err := c.status()
		if err != nil {
			return err
		}
		if st.State != "connected" {
			return fmt.Errorf("state %q", st.State)
		}
		// The gateway makes the session live when the client's first packet under the new keys arrives.
		for _, s := range w.serverStatus().Sessions {
			if s.SessionIndex == st.Sessions[0].SessionIndex {
				return nil
			}
		}
		return fmt.Errorf("session %d not live at the gateway yet", st.Sessions[0].SessionIndex)
	})
}

func (c *client) status() (engine.Status, error) {
	var st engine.Status
	err := control.Query(c.ctlSock, &st)
	return st, err
}

// tunnelAddrs returns the client's tunnel addresses as the client reports them.
func (c *client) tunnelAddrs(t *testing.T) (v4, v6 netip.Addr) {
	t.Helper()
	st, err := c.status()
	must(t, err)
	for _, s := range st.Sessions[0].Addresses {
		p := netip.MustParsePrefix(s)
		if p.Addr().Is4() {
			v4 = p.Addr()
		} else {
			v6 = p.Addr()
		}
	}
	return v4, v6
}

func (c *client) tunnelAddr4(t *testing.T) netip.Addr {
	t.Helper()
	v4, _ := c.tunnelAddrs(t)
	return v4
}

// proc is a salvo process in a namespace; its output is kept for failure messages.
type proc struct {
	name string
	cmd  *exec.Cmd
	mu   sync.Mutex
	buf  bytes.Buffer
	done chan struct{}
	err  error
}

func (p *proc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.buf.Write(b)
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.buf.String()
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and waits; it returns the exit error.
func (p *proc) stop(t *testing.T) error {
	t.Helper()
	if !p.exited() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
	}
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		t.Errorf("%s did not stop on SIGTERM within 10s", p.name)
	}
	return p.err
}

func (p *proc) kill() {
	if !p.exited() {
		_ = p.cmd.Process.Kill()
	}
	<-p.done
}

// startEnv starts a process with extra environment variables.
func startEnv(t *testing.T, ns *netns.NS, env []string, name string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, done: make(chan struct{})}
	p.cmd = ns.Exec(context.Background(), args[0], args[1:]...)
	if env != nil {
		p.cmd.Env = append(os.Environ(), env...)
	}
	p.cmd.Stdout, p.cmd.Stderr = p, p
	must(t, p.cmd.Start())
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("---- %s output ----\n%s", p.name, p.output())
		}
	})
	return p
}

type stopError struct{ error }

func errStop(err error) error { return stopError{err} }

// waitFor polls cond until it returns nil. The events it waits for happen in other processes (a socket
// appearing, a handshake completing), so polling their observable state is the only way to await them.
func waitFor(t *testing.T, d time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	var err error
	for time.Now().Before(deadline) {
		if err = cond(); err == nil {
			return
		}
		var se stopError
		if errors.As(err, &se) {
			t.Fatalf("waiting for %s: %v", what, se.error)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("waiting for %s: not within %s: %v", what, d, err)
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// transfer sends n pseudo-random bytes over TCP from a socket in ns `from` to a listener in ns `to` at
// addr and checks the SHA-256 of what arrived.
func transfer(t *testing.T, from, to *netns.NS, addr netip.Addr, n int64) {
	t.Helper()
	var ln net.Listener
	must(t, to.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
		return err
	}))
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer c.Close()
		h := sha256.New()
		_, _ = io.Copy(h, c)
		got <- h.Sum(nil)
	}()
	var conn net.Conn
	must(t, from.Do(func() error {
		var err error
		conn, err = net.DialTimeout("tcp", ln.Addr().String(), 10*time.Second)
		return err
	}))
	_ = conn.SetDeadline(time.Now().Add(2 * time.Minute))
	h := sha256.New()
	src := io.LimitReader(&prng{r: rand.NewPCG(uint64(n), 7)}, n)
	start := time.Now()
	sent, err := io.Copy(io.MultiWriter(conn, h), src)
	must(t, err)
	must(t, conn.(*net.TCPConn).CloseWrite())
	select {
	case sum := <-got:
		if !bytes.Equal(sum, h.Sum(nil)) {
			t.Fatalf("TCP transfer to %s: checksum mismatch after %d bytes", addr, sent)
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("TCP transfer to %s: receiver did not finish", addr)
	}
	conn.Close()
	t.Logf("TCP %d MB to %s in %s (%.2f Gbit/s)", sent>>20, addr, time.Since(start).Round(time.Millisecond),
		float64(sent*8)/time.Since(start).Seconds()/1e9)
}

type prng struct{ r *rand.PCG }

func (p *prng) Read(b []byte) (int, error) {
	for i := 0; i+8 <= len(b); i += 8 {
		v := p.r.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	for i := len(b) &^ 7; i < len(b); i++ {
		b[i] = byte(p.r.Uint64())
	}
	return len(b), nil
}
