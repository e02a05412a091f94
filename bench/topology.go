package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/salvovpn/salvo/internal/netns"
)

// NSPrefix names every namespace the harness creates; Sweep uses it to remove
// the leftovers of crashed runs (and only those: live runs keep theirs).
const NSPrefix = "salvo-bench-"

// The fixed topology: A (client side) and B (server side) joined by a veth.
const (
	vethA  = "veth-a"
	vethB  = "veth-b"
	addrA4 = "10.100.0.1"
	addrB4 = "10.100.0.2"
	addrA6 = "fd00:100::1"
	addrB6 = "fd00:100::2"
)

// Topology is two fresh namespaces joined by a veth pair. Each system gets its
// own so that nothing one system configured (routes, devices, conntrack,
// socket buffers) can influence the next.
type Topology struct {
	A, B *netns.NS
	// Relay, when valid, is a fault relay in B (see faults.go): a system's client in A sends its UDP there
	// instead of to the server, and the server must not be told A's address (it learns the relay's).
	Relay netip.AddrPort
	// extra are further namespaces a measurement added (the flood benchmark's attacker); closed with A and B.
	extra []*netns.NS
}

// serverEndpoint is where a client in A sends a server's UDP on port: the relay, if there is one.
func (t *Topology) serverEndpoint(port string) string {
	if t.Relay.IsValid() {
		return t.Relay.String()
	}
	return addrB4 + ":" + port
}

// NewTopology creates the namespaces, the veth pair and the addresses, and
// proves both address families work in both directions before anything is
// measured on top of it.
func NewTopology() (t *Topology, err error) {
	t = &Topology{}
	defer func() {
		if err != nil {
			_ = t.Close()
			t = nil
		}
	}()
	if t.A, err = netns.Create(NSPrefix); err != nil {
		return t, err
	}
	if t.B, err = netns.Create(NSPrefix); err != nil {
		return t, err
	}
	if err = netns.Veth(t.A, vethA, t.B, vethB); err != nil {
		return t, err
	}
	for _, s := range []struct {
		ns   *netns.NS
		dev  string
		cidr string
	}{
		{t.A, vethA, addrA4 + "/24"}, {t.A, vethA, addrA6 + "/64"},
		{t.B, vethB, addrB4 + "/24"}, {t.B, vethB, addrB6 + "/64"},
	} {
		if err = s.ns.AddAddr(s.dev, s.cidr); err != nil {
			return t, err
		}
	}
	for _, p := range []struct {
		from *netns.NS
		to   string
	}{{t.A, addrB4}, {t.A, addrB6}, {t.B, addrA4}, {t.B, addrA6}} {
		if err = p.from.Ping(netip.MustParseAddr(p.to), 3*time.Second); err != nil {
			return t, fmt.Errorf("topology: veth not usable: %w", err)
		}
	}
	return t, nil
}

// Close kills whatever still runs in the namespaces and deletes them.
func (t *Topology) Close() error {
	var errs []error
	for _, ns := range append([]*netns.NS{t.A, t.B}, t.extra...) {
		if ns != nil {
			errs = append(errs, ns.Close())
		}
	}
	return errors.Join(errs...)
}

// daemon is a long-running process started inside a namespace (iperf3 -s,
// wireguard-go, salvo). `ip netns exec` execs the command in place, so the
// pid of cmd is the daemon's own pid: that is what /proc accounting reads.
type daemon struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	waitErr error
	// exe, when set, is the binary the pid must be running: CPU and RSS are
	// read from /proc/<pid>, so a wrapper (ip, sh, unshare) still holding the
	// pid would silently measure the wrong process.
	exe string
}

// checkExe fails unless the pid runs d.exe.
func (d *daemon) checkExe() error {
	if d.exe == "" {
		return nil
	}
	got, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", d.pid()))
	if err != nil {
		return fmt.Errorf("%s: %w", d.name, err)
	}
	want := d.exe
	if r, err := filepath.EvalSymlinks(want); err == nil {
		want = r // /proc/<pid>/exe is always the resolved path
	}
	if got != want {
		return fmt.Errorf("%s: pid %d runs %s, not %s: accounting would read the wrong process", d.name, d.pid(), got, d.exe)
	}
	return nil
}

// startDaemon starts name+args in ns with output to logPath. extraEnv is
// appended to the harness's environment (`ip netns exec` passes it through).
func startDaemon(ctx context.Context, ns *netns.NS, logPath string, extraEnv []string, name string, args ...string) (*daemon, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child has its own copy of the descriptor
	cmd := ns.Exec(ctx, name, args...)
	cmd.Env = append(os.Environ(), extraEnv...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// A terminal's Ctrl-C goes to the whole foreground process group; keeping
	// daemons out of it lets the harness stop them in order (SIGTERM, so
	// salvo removes what it added) instead of having them die mid-measurement.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s in %s: %w", name, ns.Name, err)
	}
	d := &daemon{name: filepath.Base(name), cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		d.waitErr = cmd.Wait()
		close(d.done)
	}()
	return d, nil
}

func (d *daemon) pid() int { return d.cmd.Process.Pid }

// exited reports whether the daemon is gone, with its exit status and the
// tail of its log so a failure explains itself.
func (d *daemon) exited() error {
	select {
	case <-d.done:
		return fmt.Errorf("%s exited (%v); log: %s", d.name, d.waitErr, d.logTail())
	default:
		return nil
	}
}

// logTail returns the last lines of the daemon's output.
func (d *daemon) logTail() string {
	b, err := os.ReadFile(d.logPath)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	b = bytes.TrimSpace(b)
	if len(b) > 1500 {
		b = b[len(b)-1500:]
	}
	if len(b) == 0 {
		return "(empty)"
	}
	return strings.ReplaceAll(string(b), "\n", " | ")
}

// stop asks the daemon to exit with SIGTERM (Salvo and wireguard-go clean up
// their devices on it) and kills it if it has not gone after grace.
func (d *daemon) stop(grace time.Duration) {
	select {
	case <-d.done:
		return
	default:
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(grace):
		_ = d.cmd.Process.Kill()
		<-d.done
	}
}

// waitFor polls cond every 50 ms until it returns true, returns an error, a
// daemon dies or timeout passes. what names the condition in the error.
func waitFor(ctx context.Context, timeout time.Duration, what string, ds []*daemon, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		for _, d := range ds {
			if err := d.exited(); err != nil {
				return fmt.Errorf("waiting for %s: %w", what, err)
			}
		}
		ok, err := cond()
		if ok {
			return nil
		}
		last = err
		if time.Now().After(deadline) {
			if last != nil {
				return fmt.Errorf("timed out after %v waiting for %s: %w", timeout, what, last)
			}
			return fmt.Errorf("timed out after %v waiting for %s", timeout, what)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// clockTicks is USER_HZ, the unit of utime/stime in /proc/PID/stat. It is a
// fixed part of the kernel ABI (100 on every architecture Go supports on
// Linux), independent of the kernel's internal CONFIG_HZ.
const clockTicks = 100

// cpuSeconds returns utime+stime of pid (all its threads, live and exited).
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may contain spaces and ')': fields are
	// counted from the last ')'. After it come state (3), ... utime (14),
	// stime (15), i.e. indexes 11 and 12 here.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: only %d fields", pid, len(f))
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return float64(ut+st) / clockTicks, nil
}

// peakRSSKiB returns VmHWM (the resident set's high-water mark) of pid.
func peakRSSKiB(pid int) (uint64, error) { return procKiB(pid, "status", "VmHWM") }

// pssKiB returns the proportional set size of pid: its resident pages, each shared one divided by the
// number of processes sharing it, so that a sum over processes counts a page once (two ends running one
// binary share its text).
func pssKiB(pid int) (uint64, error) { return procKiB(pid, "smaps_rollup", "Pss") }

// procKiB returns a kB field of /proc/pid/file (status: VmHWM, VmRSS; smaps_rollup: Pss).
func procKiB(pid int, file, field string) (uint64, error) {
	name := fmt.Sprintf("/proc/%d/%s", pid, file)
	b, err := os.ReadFile(name)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			f := strings.Fields(rest)
			if len(f) != 2 || f[1] != "kB" {
				return 0, fmt.Errorf("%s: odd %s line %q", name, field, line)
			}
			return strconv.ParseUint(f[0], 10, 64)
		}
	}
	return 0, fmt.Errorf("%s: no %s", name, field)
}
