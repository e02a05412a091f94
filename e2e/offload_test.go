package e2e

import (
	"github.com/salvovpn/salvo/engine"
	"github.com/salvovpn/salvo/engine/control"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestOffloadsForcedOff runs traffic through the tunnel with each offload switched off in turn (gateway and
// client alike), so every fallback path of the batched data plane carries real traffic in CI.
func TestOffloadsForcedOff(t *testing.T) {
	for _, env := range []string{"SALVO_NO_TUN_OFFLOAD=1", "SALVO_NO_UDP_GSO=1", "SALVO_NO_UDP_GRO=1"} {
		t.Run(env, func(t *testing.T) {
			w := newWorld(t)
			w.env = []string{env}
			w.startServer("")
			c := w.addClient()
			w.connect(c, "alice", c.gwV4+":51820", "")
			must(t, c.ns.Ping(netip.MustParseAddr(hostV4), 5*time.Second))
			must(t, c.ns.Ping(netip.MustParseAddr(hostV6), 5*time.Second))
			transfer(t, c.ns, w.host, netip.MustParseAddr(hostV4), 32<<20)
			transfer(t, c.ns, w.host, netip.MustParseAddr(hostV6), 32<<20)
			// And the other direction (from the gateway itself: the host behind NAT cannot reach the pool),
			// so the gateway's send path carries bulk data too.
			transfer(t, w.gw, c.ns, c.tunnelAddr4(t), 32<<20)
		})
	}
}

// TestSmallBatch: a small router's setting (batch_size = 16, below what UDP GRO needs) still moves bulk
// traffic both ways.
func TestSmallBatch(t *testing.T) {
	w := newWorld(t)
	w.startServer("batch_size = 16")
	c := w.addClient()
	w.connect(c, "alice", c.gwV4+":51820", "batch_size = 16")
	transfer(t, c.ns, w.host, netip.MustParseAddr(hostV4), 32<<20)
	transfer(t, w.gw, c.ns, c.tunnelAddr4(t), 32<<20)
}

// TestTwoWorkers: a gateway with two workers (two SO_REUSEPORT sockets per listen address, a two-queue
// TUN) serves two clients transferring at the same time, both directions, with checksums.
func TestTwoWorkers(t *testing.T) {
	w := newWorld(t)
	w.startServer("workers = 2")
	a, b := w.addClient(), w.addClient()
	w.connect(a, "alice", a.gwV4+":51820", "")
	w.connect(b, "bob", b.gwV4+":51820", "")
	if out, err := w.gw.Run("ip", "-d", "link", "show", serverTun); err != nil || !strings.Contains(out, "multi_queue") {
		t.Fatalf("gateway TUN is not multi-queue: %v %s", err, out)
	}
	done := make(chan struct{}, 4)
	for _, c := range []*client{a, b} {
		go func() {
			defer func() { done <- struct{}{} }()
			transfer(t, c.ns, w.host, netip.MustParseAddr(hostV4), 32<<20)
		}()
		go func() {
			defer func() { done <- struct{}{} }()
			transfer(t, w.gw, c.ns, c.tunnelAddr4(t), 32<<20)
		}()
	}
	for range 4 {
		<-done
	}
	if st := w.serverStatus(); len(st.Sessions) != 2 {
		t.Fatalf("%d sessions", len(st.Sessions))
	}
}

// TestTunSteering: two workers with the eBPF classifier and TUN steering: the gateway's TUN queue for each
// client address is its owner's, traffic flows both ways for two clients, and the status shows the
// classifier attached.
func TestTunSteering(t *testing.T) {
	w := newWorld(t)
	w.startServer("workers = 2\nebpf = \"on\"\nebpf_tun_steering = true")
	a, b := w.addClient(), w.addClient()
	w.connect(a, "alice", a.gwV4+":51820", "")
	w.connect(b, "bob", b.gwV4+":51820", "")
	for _, c := range []*client{a, b} {
		transfer(t, c.ns, w.host, netip.MustParseAddr(hostV4), 16<<20)
		transfer(t, w.gw, c.ns, c.tunnelAddr4(t), 16<<20)
		must(t, c.ns.Ping(netip.MustParseAddr(hostV6), 5*time.Second))
	}
	st := w.serverStatus()
	if st.Classifier == nil {
		t.Fatal("status shows no classifier although ebpf = on")
	}
	if st.CrossWorkerPackets != 0 {
		t.Fatalf("%d packets reached a worker that does not own their session despite steering", st.CrossWorkerPackets)
	}
	if !strings.Contains(w.server.output(), "tun_steering=true") {
		t.Fatalf("gateway did not log TUN steering:\n%s", w.server.output())
	}
}

// TestEBPFWithoutPrivilege runs the gateway without CAP_BPF and CAP_SYS_ADMIN (dropped from its bounding
// set, so loading BPF programs fails with EPERM as on a host that does not allow it): ebpf = "auto" falls
// back, says why and serves clients; ebpf = "on" refuses to start and says why.
func TestEBPFWithoutPrivilege(t *testing.T) {
	drop := []string{"setpriv", "--bounding-set", "-bpf,-sys_admin,-perfmon"}
	w := newWorld(t)
	path := filepath.Join(w.dir, "server.toml")
	must(t, os.WriteFile(path, []byte(w.serverConfig(`ebpf = "auto"`)), 0o600))
	srv := startEnv(t, w.gw, w.env, "gateway", append(drop, salvoBin, "server", "--config", path)...)
	w.server = srv
	waitFor(t, 10*time.Second, "gateway without BPF privileges", func() error {
		if srv.exited() {
			return errStop(errorf("gateway exited: %s", srv.output()))
		}
		var st engine.Status
		return control.Query(filepath.Join(w.dir, "server.sock"), &st)
	})
	if !strings.Contains(srv.output(), "eBPF classifier not used") {
		t.Fatalf("ebpf = auto did not say why it fell back:\n%s", srv.output())
	}
	c := w.addClient()
	w.connect(c, "alice", c.gwV4+":51820", "")
	must(t, c.ns.Ping(netip.MustParseAddr(hostV4), 5*time.Second))
	if w.serverStatus().Classifier != nil {
		t.Fatal("status reports a classifier that did not load")
	}
	srv.kill()

	must(t, os.WriteFile(path, []byte(w.serverConfig(`ebpf = "on"`)), 0o600))
	cmd := w.gw.Exec(t.Context(), drop[0], append(drop[1:], salvoBin, "server", "--config", path)...)
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), `ebpf = "on"`) {
		t.Fatalf("ebpf = on without privileges: want a loud failure, got %v:\n%s", err, out)
	}
}
