package netns

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	vnetns "github.com/vishvananda/netns"
)

const testPrefix = "salvo-t-"

// TestVethPing proves Create/Veth/AddAddr give two namespaces that reach each
// other over IPv4 and IPv6 (nodad: usable at once), that loopback is up, and
// that Close removes the namespaces again.
func TestVethPing(t *testing.T) {
	a := ForTest(t, testPrefix)
	b := ForTest(t, testPrefix)
	if err := Veth(a, "va", b, "vb"); err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct {
		ns        *NS
		dev, cidr string
	}{
		{a, "va", "10.99.0.1/24"}, {b, "vb", "10.99.0.2/24"},
		{a, "va", "fd99::1/64"}, {b, "vb", "fd99::2/64"},
	} {
		if err := step.ns.AddAddr(step.dev, step.cidr); err != nil {
			t.Fatal(err)
		}
	}
	for _, dst := range []string{"10.99.0.2", "fd99::2", "127.0.0.1", "::1"} {
		if err := a.Ping(netip.MustParseAddr(dst), 3*time.Second); err != nil {
			t.Errorf("from %s: %v", a.Name, err)
		}
	}
	if err := b.Ping(netip.MustParseAddr("10.99.0.1"), 3*time.Second); err != nil {
		t.Errorf("from %s: %v", b.Name, err)
	}

	// Close must leave nothing behind, and be idempotent.
	for _, ns := range []*NS{a, b} {
		if err := ns.Close(); err != nil {
			t.Fatal(err)
		}
		if err := ns.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		if _, err := os.Stat(filepath.Join(runDir, ns.Name)); !os.IsNotExist(err) {
			t.Errorf("namespace %s still present after Close (stat err %v)", ns.Name, err)
		}
	}
}

// TestDoAndRoutes proves Do really runs Go code inside the namespace (it sees
// the namespace's own interfaces, not the host's), restores the thread, and
// that AddRoute/SetSysctl/Run act inside the namespace.
func TestDoAndRoutes(t *testing.T) {
	a := ForTest(t, testPrefix)
	b := ForTest(t, testPrefix)
	if err := Veth(a, "va", b, "vb"); err != nil {
		t.Fatal(err)
	}
	if err := a.AddAddr("va", "10.98.0.1/24"); err != nil {
		t.Fatal(err)
	}
	if err := a.AddRoute("default", "10.98.0.2"); err != nil {
		t.Fatal(err)
	}
	out, err := a.Run("ip", "-4", "route", "get", "192.0.2.1")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "via 10.98.0.2 dev va") {
		t.Errorf("route get in %s = %q, want via 10.98.0.2 dev va", a.Name, out)
	}

	host, err := vnetns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	err = a.Do(func() error {
		cur, err := vnetns.Get()
		if err != nil {
			return err
		}
		defer cur.Close()
		if cur.Equal(host) {
			t.Errorf("Do(%s) ran in the host namespace", a.Name)
		}
		// /proc/sys/net is resolved against the calling thread's namespace.
		v, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
		if err != nil {
			return err
		}
		if strings.TrimSpace(string(v)) != "0" {
			t.Errorf("ip_forward in fresh namespace = %q, want 0", v)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.SetSysctl("net.ipv4.ip_forward", "1"); err != nil {
		t.Fatal(err)
	}
	if out, err := a.Run("sysctl", "-n", "net.ipv4.ip_forward"); err != nil || strings.TrimSpace(out) != "1" {
		t.Errorf("ip_forward in %s = %q, %v; want 1", a.Name, out, err)
	}
	if err := a.SetSysctl("kernel.hostname", "x"); err == nil {
		t.Error("SetSysctl accepted a non-namespaced key")
	}
}

// TestSweep proves Sweep removes a namespace whose creator pid is dead and
// keeps one whose creator (this process) is alive.
func TestSweep(t *testing.T) {
	live := ForTest(t, testPrefix+"sw-")
	// A pid that cannot exist (above pid_max's hard limit of 2^22).
	stale := fmt.Sprintf("%s9999999-%d", testPrefix+"sw-", time.Now().UnixNano())
	if _, err := ipCmd("netns", "add", stale); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = ipCmd("netns", "del", stale) })
	Sweep(testPrefix + "sw-")
	if _, err := os.Stat(filepath.Join(runDir, stale)); !os.IsNotExist(err) {
		t.Errorf("stale namespace %s survived Sweep", stale)
	}
	if _, err := os.Stat(filepath.Join(runDir, live.Name)); err != nil {
		t.Errorf("live namespace %s removed by Sweep: %v", live.Name, err)
	}
}
