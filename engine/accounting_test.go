package engine

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/salvovpn/salvo/protocol"
	"github.com/salvovpn/salvo/protocol/handshake"
)

// lockedBuffer collects a logger's JSON lines from the engine's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// records returns the lines whose msg is msg, decoded.
func (l *lockedBuffer) records(msg string) []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range bytes.Split(l.b.Bytes(), []byte("\n")) {
		var r map[string]any
		if json.Unmarshal(line, &r) == nil && r["msg"] == msg {
			out = append(out, r)
		}
	}
	return out
}

// TestSessionAccounting: a session that ends leaves one "session ended" line with its user, addresses,
// endpoint, duration, bytes each way and reason, and the gateway's totals keep what it counted: they never
// go back when a session goes away, per user included.
func TestSessionAccounting(t *testing.T) {
	t.Parallel()
	logs := &lockedBuffer{}
	w := newWorld(t, func(c *ServerConfig) { c.Log = slog.New(slog.NewJSONHandler(logs, nil)) })
	w.startServer()
	alice := w.connect(clientOpts{})
	for range 5 {
		must(t, alice.sendUp(hostV4, "counted payload"))
	}
	v4, _ := alice.addrs()
	must(t, alice.sendDown(v4, "counted reply"))
	live := w.srv.Totals(true)
	if live.Sessions != 1 || live.SessionsStarted != 1 || live.Traffic.RxPackets < 5 || live.Users["alice"].RxPackets < 5 {
		t.Fatalf("totals with alice live: %+v", live)
	}
	if w.srv.Kick("alice") != 1 {
		t.Fatal("kick ended no session")
	}
	wantEnded(t, alice, protocol.DisconnectKicked)

	ended := w.srv.Totals(true)
	if ended.Sessions != 0 || ended.SessionsEnded["kicked"] != 1 || ended.Traffic.RxPackets < live.Traffic.RxPackets ||
		ended.Traffic.RxBytes < live.Traffic.RxBytes || ended.Users["alice"].RxBytes < live.Users["alice"].RxBytes ||
		ended.Traffic.TxPackets < 2 {
		t.Fatalf("totals went back when the session ended:\nlive  %+v\nended %+v", live, ended)
	}
	recs := logs.records("session ended")
	if len(recs) != 1 {
		t.Fatalf("%d \"session ended\" lines, want 1: %v", len(recs), recs)
	}
	r := recs[0]
	if r["user"] != "alice" || r["reason"] != "kicked" || !strings.Contains(r["addresses"].(string), v4.String()) || r["endpoint"] == "" ||
		r["duration"] == nil || r["rx_bytes"].(float64) < float64(live.Users["alice"].RxBytes) || r["tx_bytes"].(float64) == 0 {
		t.Fatalf("accounting line: %v", r)
	}

	// A client that stops says goodbye; a session that goes silent expires. Both are accounted the same way.
	bob := w.connect(clientOpts{user: "bob"})
	must(t, bob.sendUp(hostV4, "bob"))
	bob.stop()
	_ = bob.exit(5 * time.Second)
	waitUntil(t, 5*time.Second, "bob's goodbye accounted", func() bool {
		return w.srv.Totals(false).SessionsEnded["closed_by_client"] == 1
	})
	w.connect(clientOpts{}) // alice again, from another client instance
	w.srv.sweep(time.Now().Add(w.srv.sessionIdle() + time.Second))
	if got := w.srv.Totals(false); got.SessionsEnded["expired"] != 1 || got.SessionsStarted != 3 || len(logs.records("session ended")) != 3 {
		t.Fatalf("the expiry not accounted: %+v", got)
	}
}

// TestHandshakeRejectionsCounted: a request the gateway refuses before any login logic is counted by
// reason; a client that pinned another gateway's key shows up as wrong_key, not as a malformed packet.
func TestHandshakeRejectionsCounted(t *testing.T) {
	t.Parallel()
	w := newWorld(t, nil)
	w.startServer()
	other, err := handshake.GenerateKeypair(nil)
	must(t, err)
	cfg := handshake.ClientConfig{ServerPublic: other.Public, Login: "alice", Password: testPassword, InstanceID: 1}
	_, msg, err := handshake.NewLogin(&cfg, 1, time.Now(), nil)
	must(t, err)
	w.net.Inject(netip.MustParseAddrPort("198.51.100.77:40000"), gatewayAddr, msg)
	waitUntil(t, 5*time.Second, "the wrong-key request counted", func() bool {
		return w.srv.Status().Logins.Rejected["wrong_key"] == 1
	})
	if st := w.srv.Status(); st.Global.Drops["malformed"] != 0 || st.Logins.LoginsFailed != 0 {
		t.Fatalf("wrong key counted elsewhere too: drops %v, logins %+v", st.Global.Drops, st.Logins)
	}
}

// TestShutdownAccountsOnce: a stopping gateway accounts its live sessions ("shutdown"); a client's goodbye
// that arrives after that neither logs a second line nor counts the session's traffic twice.
func TestShutdownAccountsOnce(t *testing.T) {
	t.Parallel()
	logs := &lockedBuffer{}
	w := newWorld(t, func(c *ServerConfig) { c.Log = slog.New(slog.NewJSONHandler(logs, nil)) })
	w.startServer()
	alice := w.connect(clientOpts{})
	must(t, alice.sendUp(hostV4, "before the shutdown"))
	before := w.srv.Totals(false)
	w.srv.shutdown()
	w.srv.mu.Lock()
	var sess *serverSession
	for _, s := range w.srv.live {
		sess = s
	}
	w.srv.mu.Unlock()
	w.srv.removeSession(sess) // the client's goodbye
	after := w.srv.Totals(false)
	if n := len(logs.records("session ended")); n != 1 {
		t.Fatalf("%d accounting lines for one session", n)
	}
	if after.Traffic.RxBytes != before.Traffic.RxBytes || after.SessionsEnded["shutdown"] != 1 || after.SessionsEnded["closed_by_client"] != 0 {
		t.Fatalf("totals before %+v, after %+v", before, after)
	}
}
