package e2e

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/salvovpn/salvo/internal/netns"
	"github.com/salvovpn/salvo/metrics/metricstest"
)

// TestReload: `salvo reload` applies changed reloadable keys and says which; a change to a key only a
// restart applies is refused with the key's name, and the gateway and its session carry on unchanged.
func TestReload(t *testing.T) {
	w := newWorld(t)
	w.startServer("")
	c := w.addClient()
	w.connect(c, "alice", c.gwV4+":51820", "")
	path, sock := filepath.Join(w.dir, "server.toml"), filepath.Join(w.dir, "server.sock")

	must(t, os.WriteFile(path, []byte(w.serverConfig(`dns = ["10.201.0.53"]`+"\n"+`failed_login_burst = 3`+"\n"+`log_level = "info"`)), 0o600))
	out, err := w.gw.Run(salvoBin, "reload", "--socket", sock)
	if err != nil || !strings.Contains(out, "reloaded: dns, failed_login_burst, log_level changed") {
		t.Fatalf("salvo reload: %v\n%s", err, out)
	}

	must(t, os.WriteFile(path, []byte(w.serverConfig(`dns = ["10.201.0.53"]`+"\n"+`failed_login_burst = 3`+"\n"+
		`log_level = "info"`+"\n"+`listen = ["0.0.0.0:51821"]`+"\n"+`tun_name = "other0"`)), 0o600))
	out, err = w.gw.Run(salvoBin, "reload", "--socket", sock)
	if err == nil || !strings.Contains(out, "listen, tun_name changed, which needs a restart") {
		t.Fatalf("salvo reload of restart-only keys: %v\n%s", err, out)
	}
	must(t, c.ns.Ping(netip.MustParseAddr(hostV4), 5*time.Second))
	if n := len(w.serverStatus().Sessions); n != 1 {
		t.Fatalf("%d sessions after the refused reload", n)
	}
}

// scrapeIn scrapes http://addr/metrics from inside ns, parsed with the Prometheus text parser. The
// connection is opened inside the namespace (Do), then read from any thread.
func scrapeIn(t *testing.T, ns *netns.NS, addr string) metricstest.Families {
	t.Helper()
	var conn net.Conn
	must(t, ns.Do(func() error {
		var err error
		conn, err = net.DialTimeout("tcp", addr, 5*time.Second)
		return err
	}))
	defer conn.Close()
	must(t, conn.SetDeadline(time.Now().Add(10*time.Second)))
	_, err := fmt.Fprintf(conn, "GET /metrics HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", addr)
	must(t, err)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	must(t, err)
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %s", resp.Status)
	}
	fams, err := metricstest.Parse(resp.Body)
	must(t, err)
	return fams
}

// TestMetrics: the gateway's Prometheus endpoint, scraped and parsed as Prometheus does, counts what
// really went through: the bytes of a transfer through the tunnel (per user too), the login, the
// vectors, and a kicked session's end, without its traffic going back.
func TestMetrics(t *testing.T) {
	w := newWorld(t)
	const addr = "127.0.0.1:9586"
	w.startServer(`metrics_listen = "` + addr + `"`)
	c := w.addClient()
	w.connect(c, "alice", c.gwV4+":51820", "")
	value := func(f metricstest.Families, name string, labels ...string) float64 {
		t.Helper()
		v, ok := f.Value(name, labels...)
		if !ok {
			t.Fatalf("no %s%v in the scrape", name, labels)
		}
		return v
	}
	before := scrapeIn(t, w.gw, addr)
	if v := value(before, "salvo_sessions"); v != 1 {
		t.Fatalf("salvo_sessions = %v with one client", v)
	}
	if v := value(before, "salvo_logins_total", "result", "ok"); v < 1 {
		t.Fatalf("logins ok = %v after a login", v)
	}
	const n = 8 << 20
	transfer(t, c.ns, w.host, netip.MustParseAddr(hostV4), n)
	after := scrapeIn(t, w.gw, addr)
	for _, m := range []struct {
		name   string
		labels []string
	}{
		{"salvo_traffic_bytes_total", []string{"direction", "rx"}},
		{"salvo_user_traffic_bytes_total", []string{"user", "alice", "direction", "rx"}},
	} {
		if d := value(after, m.name, m.labels...) - value(before, m.name, m.labels...); d < n {
			t.Errorf("%s%v grew by %v during a transfer of %d bytes", m.name, m.labels, d, n)
		}
	}
	if d := value(after, "salvo_vector_packets_total", "path", "udp") - value(before, "salvo_vector_packets_total", "path", "udp"); d < n/65536 {
		t.Errorf("udp vector packets grew by %v", d)
	}
	if value(after, "salvo_build_info") != 1 || value(after, "go_memstats_mallocs_total") <= 0 {
		t.Error("no build info or GC counters")
	}

	_, err := w.gw.Run(salvoBin, "kick", "--socket", filepath.Join(w.dir, "server.sock"), "alice")
	must(t, err)
	waitFor(t, 5*time.Second, "the kicked session in the metrics", func() error {
		f := scrapeIn(t, w.gw, addr)
		if v, _ := f.Value("salvo_sessions_ended_total", "reason", "kicked"); v != 1 {
			return fmt.Errorf("sessions ended (kicked) = %v", v)
		}
		if value(f, "salvo_sessions") != 0 || value(f, "salvo_traffic_bytes_total", "direction", "rx") < value(after, "salvo_traffic_bytes_total", "direction", "rx") {
			return fmt.Errorf("sessions or traffic wrong after the kick")
		}
		return nil
	})
	if !strings.Contains(w.server.output(), `msg="session ended" user=alice reason=kicked`) {
		t.Errorf("no accounting line for alice's session:\n%s", w.server.output())
	}
}

// TestWithoutNetAdmin: a gateway started without CAP_NET_ADMIN says that is what it needs, instead of a
// bare "operation not permitted".
func TestWithoutNetAdmin(t *testing.T) {
	w := newWorld(t)
	path := filepath.Join(w.dir, "server.toml")
	must(t, os.WriteFile(path, []byte(w.serverConfig("")), 0o600))
	out, err := w.gw.Exec(t.Context(), "setpriv", "--bounding-set=-net_admin", "--inh-caps=-net_admin", "--",
		salvoBin, "server", "--config", path).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "operation not permitted: needs CAP_NET_ADMIN") {
		t.Fatalf("gateway without CAP_NET_ADMIN: %v\n%s", err, out)
	}
}
