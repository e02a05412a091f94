package netcfg

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/salvovpn/salvo/internal/netns"
)

// TestEnableForwarding proves forwarding is switched on inside the
// namespace only, that undo (called from outside the namespace) restores the
// previous values, and that a value that was already 1 stays 1.
func TestEnableForwarding(t *testing.T) {
	hostV4 := readTrim(t, sysctlIPv4Forward)
	hostV6 := readTrim(t, sysctlIPv6Forward)
	ns := netns.ForTest(t, nsPrefix)
	read := func() (v4, v6 string) {
		must(t, ns.Do(func() error {
			v4, v6 = readTrim(t, sysctlIPv4Forward), readTrim(t, sysctlIPv6Forward)
			return nil
		}))
		return
	}
	if v4, v6 := read(); v4 != "0" || v6 != "0" {
		t.Fatalf("fresh namespace forwarding = %s/%s, want 0/0", v4, v6)
	}
	var undo func() error
	must(t, ns.Do(func() error {
		var err error
		undo, err = EnableForwarding(t.TempDir(), true, true)
		return err
	}))
	if v4, v6 := read(); v4 != "1" || v6 != "1" {
		t.Errorf("after EnableForwarding = %s/%s, want 1/1", v4, v6)
	}
	if readTrim(t, sysctlIPv4Forward) != hostV4 || readTrim(t, sysctlIPv6Forward) != hostV6 {
		t.Error("EnableForwarding changed the host namespace")
	}
	must(t, undo()) // from the test goroutine, outside the namespace
	must(t, undo())
	if v4, v6 := read(); v4 != "0" || v6 != "0" {
		t.Errorf("after undo = %s/%s, want 0/0", v4, v6)
	}

	must(t, ns.SetSysctl("net.ipv4.ip_forward", "1"))
	must(t, ns.Do(func() error {
		var err error
		undo, err = EnableForwarding(t.TempDir(), true, false)
		return err
	}))
	must(t, undo())
	if v4, _ := read(); v4 != "1" {
		t.Errorf("pre-set ip_forward after undo = %s, want 1 (left as found)", v4)
	}
}

// forwardingIn reads both forwarding sysctls inside ns.
func forwardingIn(t *testing.T, ns *netns.NS) (v4, v6 string) {
	t.Helper()
	must(t, ns.Do(func() error {
		v4, v6 = readTrim(t, sysctlIPv4Forward), readTrim(t, sysctlIPv6Forward)
		return nil
	}))
	return v4, v6
}

func wantForwarding(t *testing.T, ns *netns.NS, want, when string) {
	t.Helper()
	if v4, v6 := forwardingIn(t, ns); v4 != want || v6 != want {
		t.Errorf("%s: forwarding = %s/%s, want %s/%s", when, v4, v6, want, want)
	}
}

func enableForwardingIn(t *testing.T, ns *netns.NS, dir string) (undo func() error) {
	t.Helper()
	must(t, ns.Do(func() error {
		var err error
		undo, err = EnableForwarding(dir, true, true)
		return err
	}))
	return undo
}

// TestEnableForwardingShared proves that two gateways in one namespace share
// forwarding: whichever stops first leaves it on for the other, the last one
// restores the original 0 and empties the record, and a start after that
// records afresh.
func TestEnableForwardingShared(t *testing.T) {
	ns := netns.ForTest(t, nsPrefix)
	dir := filepath.Join(t.TempDir(), "claims")
	undo1 := enableForwardingIn(t, ns, dir)
	undo2 := enableForwardingIn(t, ns, dir)
	must(t, undo1())
	wantForwarding(t, ns, "1", "first gateway stopped, second running")
	must(t, undo2())
	wantForwarding(t, ns, "0", "both stopped")
	files, err := filepath.Glob(filepath.Join(dir, "*.forwarding.lock"))
	must(t, err)
	if len(files) != 1 {
		t.Fatalf("lock files %v, want one", files)
	}
	if b, err := os.ReadFile(files[0]); err != nil || len(b) != 0 {
		t.Errorf("record after the last undo = %q, %v; want empty", b, err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("lock directory: %v, %v; want mode 0700", fi, err)
	}

	undo3 := enableForwardingIn(t, ns, dir)
	wantForwarding(t, ns, "1", "started again")
	must(t, undo3())
	must(t, undo3())
	wantForwarding(t, ns, "0", "stopped again")
}

// TestEnableForwardingCrashedHolder proves that a gateway killed by SIGKILL
// (a child process) does not make forwarding stick: while it runs, another
// gateway's start and stop leave forwarding on; once it is dead, the next
// clean start and stop restore the original 0 it recorded, although the
// live value then read 1.
func TestEnableForwardingCrashedHolder(t *testing.T) {
	ns := netns.ForTest(t, nsPrefix)
	dir := t.TempDir()
	h := startHelper(t, ns, "forward", dir)
	wantForwarding(t, ns, "1", "helper running")
	must(t, enableForwardingIn(t, ns, dir)())
	wantForwarding(t, ns, "1", "other gateway stopped, helper running")
	h.kill()
	wantForwarding(t, ns, "1", "helper killed")
	must(t, enableForwardingIn(t, ns, dir)())
	wantForwarding(t, ns, "0", "clean start and stop after the crash")
}
