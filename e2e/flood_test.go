package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/salvovpn/salvo/internal/flood"
	"github.com/salvovpn/salvo/internal/netns"
	"github.com/salvovpn/salvo/protocol/handshake"
)

// attacker is a namespace on its own veth to the gateway that floods it from 200 forged sources in
// 10.99.0.0/16 (the gateway routes that range back to it, so its answers go there too).
type attacker struct {
	ns      *netns.NS
	sources []netip.Addr
}

func (w *world) addAttacker() *attacker {
	w.t.Helper()
	a := &attacker{ns: netns.ForTest(w.t, "salvo-e2e-a")}
	must(w.t, netns.Veth(w.gw, "toa", a.ns, "tog"))
	must(w.t, w.gw.AddAddr("toa", "10.199.0.1/24"))
	must(w.t, a.ns.AddAddr("tog", "10.199.0.2/24"))
	must(w.t, w.gw.LinkUp("toa"))
	must(w.t, a.ns.LinkUp("tog"))
	must(w.t, a.ns.AddRoute("default", "10.199.0.1"))
	must(w.t, w.gw.AddRoute("10.99.0.0/16", "10.199.0.2"))
	for i := range 200 {
		a.sources = append(a.sources, netip.AddrFrom4([4]byte{10, 99, byte(i / 100), byte(1 + i%100)}))
	}
	return a
}

// flood runs one flood in the attacker's namespace and returns what it sent.
func (a *attacker) flood(t *testing.T, kind flood.Kind, target netip.AddrPort, key string, rate int, d time.Duration) flood.Result {
	t.Helper()
	k, err := handshake.ParseKey(key)
	must(t, err)
	var res flood.Result
	must(t, a.ns.Do(func() error {
		var err error
		res, err = flood.Run(context.Background(), flood.Config{Kind: kind, Sources: a.sources, Target: target,
			Rate: rate, Duration: d, GatewayKey: k})
		return err
	}))
	return res
}

// vmHWM is a process's peak resident memory in KiB.
func vmHWM(t *testing.T, p *proc) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	must(t, err)
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			must(t, err)
			return n
		}
	}
	t.Fatal("no VmHWM")
	return 0
}

// TestFloodsLeaveSessionsAlone: each of the floods issue 10 measured (random junk, junk starting with
// 0x01, data for unknown sessions, login requests with a valid mac1), from 200 forged sources at 20,000
// datagrams a second for 3 s, against a gateway with a live session. The session keeps working during
// and after the flood and is the same session; a new client logs in during the flood; the gateway's peak
// memory does not grow with the flood; login floods make it demand cookies and hash next to nothing.
// (The throughput the victim keeps under floods is a benchmark, not a test.)
func TestFloodsLeaveSessionsAlone(t *testing.T) {
	w := newWorld(t)
	w.bin = salvoBinNoRace // peak memory is what is measured; the race detector's shadow memory would swamp it
	srv := w.startServer("")
	victim := w.addClient()
	w.connect(victim, "alice", victim.gwV4+":51820", "")
	atk := w.addAttacker()
	target := netip.MustParseAddrPort("10.199.0.1:51820")
	host := netip.MustParseAddr(hostV4)
	must(t, victim.ns.Ping(host, 5*time.Second))
	before := w.serverStatus()
	index := before.Sessions[0].SessionIndex
	peak0 := vmHWM(t, srv)
	for _, kind := range flood.Kinds {
		t.Run(string(kind), func(t *testing.T) {
			done := make(chan flood.Result, 1)
			go func() { done <- atk.flood(t, kind, target, w.pubKey, 20000, 3*time.Second) }()
			// During the flood: the victim's traffic passes and a newcomer logs in.
			must(t, victim.ns.Ping(host, 5*time.Second))
			if kind == flood.Login {
				newcomer := w.addClient()
				start := time.Now()
				w.connect(newcomer, "bob", newcomer.gwV4+":51820", "")
				t.Logf("a new client logged in during the login flood in %s", time.Since(start).Round(time.Millisecond))
				must(t, newcomer.proc.stop(t))
			}
			res := <-done
			t.Logf("%s: %d datagrams at %.0f/s", kind, res.Sent, res.PPS())
			must(t, victim.ns.Ping(host, 5*time.Second))
			st := w.serverStatus()
			if len(st.Sessions) != 1 || st.Sessions[0].SessionIndex != index {
				t.Fatalf("the flood changed the victim's session: %+v", st.Sessions)
			}
			if kind == flood.Login {
				t.Logf("login flood: %d password hashes, %d cookies sent", st.Logins.PasswordHashes-before.Logins.PasswordHashes,
					st.Logins.CookiesSent-before.Logins.CookiesSent)
				// Bob's login and the unproven share of the budget: a burst of 4, then 2 a second.
				if h := st.Logins.PasswordHashes - before.Logins.PasswordHashes; h > 4+2*3+2 {
					t.Fatalf("the login flood cost %d password hashes", h)
				}
				if st.Logins.CookiesSent == before.Logins.CookiesSent {
					t.Fatal("the login flood did not make the gateway demand cookies")
				}
			}
			before = st
			t.Logf("gateway peak RSS now %d KiB (before the floods %d)", vmHWM(t, srv), peak0)
		})
	}
	// The floods' datagrams are dropped where they arrive, never kept: peak memory stays put.
	if peak := vmHWM(t, srv); float64(peak) > 1.2*float64(peak0) {
		t.Fatalf("gateway peak RSS grew from %d to %d KiB under the floods", peak0, peak)
	}
}
