package netns

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"

	vnetns "github.com/vishvananda/netns"
)

// runDir is where iproute2 bind-mounts named namespaces.
const runDir = "/run/netns"

// NS is a named network namespace created by Create. The zero value is not
// usable. Methods are safe for concurrent use.
type NS struct {
	// Name is the iproute2 name (usable with `ip netns exec Name` / `ip -n Name`).
	Name string

	mu     sync.Mutex
	handle vnetns.NsHandle // open fd on the namespace, used by Do
	closed bool
}

// Create makes a fresh namespace named prefix+pid+"-"+random, opens a handle
// on it and brings its loopback up (a new namespace starts with lo down, and
// almost every test needs 127.0.0.1 / ::1).
func Create(prefix string) (*NS, error) {
	var rnd [4]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, fmt.Errorf("netns: random suffix for %q: %w", prefix, err)
	}
	name := fmt.Sprintf("%s%d-%s", prefix, os.Getpid(), hex.EncodeToString(rnd[:]))
	if _, err := ipCmd("netns", "add", name); err != nil {
		return nil, err
	}
	h, err := vnetns.GetFromName(name)
	if err != nil {
		_, _ = ipCmd("netns", "del", name)
		return nil, fmt.Errorf("netns: open handle on %s: %w", name, err)
	}
	ns := &NS{Name: name, handle: h}
	if err := ns.LinkUp("lo"); err != nil {
		_ = ns.Close()
		return nil, err
	}
	return ns, nil
}

// Close kills every process still running in the namespace (they would keep
// it alive after the name is removed) and deletes it. Calling it twice is fine.
func (ns *NS) Close() error {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if ns.closed {
		return nil
	}
	ns.closed = true
	errs := []error{killPids(ns.Name)}
	if ns.handle.IsOpen() {
		if err := ns.handle.Close(); err != nil {
			errs = append(errs, fmt.Errorf("netns: close handle on %s: %w", ns.Name, err))
		}
	}
	if _, err := ipCmd("netns", "del", ns.Name); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// killPids SIGKILLs the processes iproute2 reports inside namespace name and
// reaps nothing: processes we started via Exec are reaped by their Cmd.Wait.
func killPids(name string) error {
	out, err := ipCmd("netns", "pids", name)
	if err != nil {
		return err
	}
	var errs []error
	for _, f := range strings.Fields(out) {
		pid, err := strconv.Atoi(f)
		if err != nil || pid <= 1 || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			errs = append(errs, fmt.Errorf("netns: kill pid %d in %s: %w", pid, name, err))
		}
	}
	return errors.Join(errs...)
}

// Exec returns a command that runs name with args inside the namespace via
// `ip netns exec`. The caller starts and waits for it; Close kills it if it
// is still running.
func (ns *NS) Exec(ctx context.Context, name string, args ...string) *exec.Cmd {
	full := append([]string{"netns", "exec", ns.Name, name}, args...)
	return exec.CommandContext(ctx, "ip", full...)
}

// Run runs a command inside the namespace and returns its combined output.
// The error names the namespace, the command and what it printed.
func (ns *NS) Run(cmd ...string) (string, error) {
	if len(cmd) == 0 {
		return "", fmt.Errorf("netns: Run in %s: empty command", ns.Name)
	}
	c := ns.Exec(context.Background(), cmd[0], cmd[1:]...)
	var buf bytes.Buffer
	c.Stdout = &buf
	c.Stderr = &buf
	if err := c.Run(); err != nil {
		return buf.String(), fmt.Errorf("netns: %s: %q: %w: %s", ns.Name, strings.Join(cmd, " "), err, strings.TrimSpace(buf.String()))
	}
	return buf.String(), nil
}

// Do runs fn on the calling goroutine with its OS thread switched into the
// namespace. Sockets (netlink, nftables, UDP...) created inside fn belong to
// the namespace for their whole life, even when used after Do returns.
//
// If the thread cannot be switched back, it is left locked: the Go runtime
// then destroys it when the goroutine exits instead of reusing a thread that
// sits in the wrong namespace.
func (ns *NS) Do(fn func() error) error {
	ns.mu.Lock()
	h, closed := ns.handle, ns.closed
	ns.mu.Unlock()
	if closed {
		return fmt.Errorf("netns: Do in %s: namespace closed", ns.Name)
	}
	runtime.LockOSThread()
	orig, err := vnetns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netns: Do in %s: get current namespace: %w", ns.Name, err)
	}
	defer orig.Close()
	if err := vnetns.Set(h); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netns: Do: enter %s: %w", ns.Name, err)
	}
	ferr := fn()
	if err := vnetns.Set(orig); err != nil {
		// Deliberately no UnlockOSThread: see the doc comment.
		return errors.Join(ferr, fmt.Errorf("netns: Do: return from %s: %w", ns.Name, err))
	}
	runtime.UnlockOSThread()
	return ferr
}

// Veth creates a veth pair with aIf in a and bIf in b and sets both ends up.
func Veth(a *NS, aIf string, b *NS, bIf string) error {
	if _, err := ipCmd("-n", a.Name, "link", "add", aIf, "type", "veth", "peer", "name", bIf, "netns", b.Name); err != nil {
		return err
	}
	if err := a.LinkUp(aIf); err != nil {
		return err
	}
	return b.LinkUp(bIf)
}

// AddAddr adds cidr (e.g. "10.0.0.1/24", "fd00::1/64") to ifname. IPv6
// addresses get `nodad` so they are usable immediately instead of after
// duplicate address detection (about a second of flaky "cannot assign").
func (ns *NS) AddAddr(ifname, cidr string) error {
	p, err := netip.ParsePrefix(cidr)
	if err != nil {
		return fmt.Errorf("netns: %s: address %q for %s: %w", ns.Name, cidr, ifname, err)
	}
	args := []string{"-n", ns.Name, "addr", "add", p.String(), "dev", ifname}
	if p.Addr().Is6() {
		args = append(args, "nodad")
	}
	_, err = ipCmd(args...)
	return err
}

// LinkUp sets ifname administratively up.
func (ns *NS) LinkUp(ifname string) error {
	_, err := ipCmd("-n", ns.Name, "link", "set", ifname, "up")
	return err
}

// AddRoute adds a route to dst ("default", "10.0.0.0/8", "::/0") via the
// gateway address via. The family follows via, so "default" works for both.
func (ns *NS) AddRoute(dst, via string) error {
	gw, err := netip.ParseAddr(via)
	if err != nil {
		return fmt.Errorf("netns: %s: route %s via %q: %w", ns.Name, dst, via, err)
	}
	fam := "-4"
	if gw.Is6() {
		fam = "-6"
	}
	_, err = ipCmd("-n", ns.Name, fam, "route", "add", dst, "via", gw.String())
	return err
}

// SetSysctl sets a sysctl (e.g. "net.ipv4.ip_forward") inside the namespace.
// Only per-namespace keys (net.*) are meaningful; others would hit the host,
// so they are refused.
func (ns *NS) SetSysctl(key, value string) error {
	if !strings.HasPrefix(key, "net.") {
		return fmt.Errorf("netns: %s: sysctl %s is not per-namespace; refusing to touch the host", ns.Name, key)
	}
	_, err := ns.Run("sysctl", "-q", "-w", key+"="+value)
	return err
}

// Sweep deletes namespaces named prefix<pid>-<suffix> whose creating process
// is gone, i.e. leftovers of crashed runs. Namespaces of live processes
// (concurrent test binaries) are left alone. Errors are ignored on purpose:
// sweeping is best effort and must never fail a run.
func Sweep(prefix string) {
	entries, err := os.ReadDir(runDir)
	if err != nil {
		return
	}
	for _, e := range entries {
		name := e.Name()
		rest, ok := strings.CutPrefix(name, prefix)
		if !ok {
			continue
		}
		pidStr, _, ok := strings.Cut(rest, "-")
		if !ok {
			continue
		}
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid <= 0 || pidAlive(pid) {
			continue
		}
		_ = killPids(name)
		_, _ = ipCmd("netns", "del", name)
	}
}

// pidAlive reports whether a process with that pid exists (EPERM means it
// exists but belongs to someone else, which still counts as alive).
func pidAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// ipCmd runs iproute2 and returns stdout; errors quote the full command line
// and stderr so the failing device/prefix is visible.
func ipCmd(args ...string) (string, error) {
	c := exec.Command("ip", args...)
	var out, errb bytes.Buffer
	c.Stdout = &out
	c.Stderr = &errb
	if err := c.Run(); err != nil {
		return out.String(), fmt.Errorf("netns: ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}
