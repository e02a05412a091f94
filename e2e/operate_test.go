package e2e

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
