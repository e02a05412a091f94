package e2e

import (
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/salvovpn/salvo/internal/faultrelay"
)

// The chaos tests run the real gateway and client through a faultrelay.Relay in the gateway's namespace
// and make the network between them bad: loss, reordering, duplication and blackouts, with checksummed
// TCP transfers in both directions. They check that every transfer completes intact and that the session
// survives: no second login, only the scheduled rekeys.
//
// By default (make test) the transfers are small and the blackout short; SALVO_CHAOS=full (make chaos)
// moves more data, adds burst loss and a 30 s blackout.

// chaosParams are the sizes of one chaos run.
type chaosParams struct {
	full      bool
	bulk      int64 // bytes per transfer and direction
	faults    []chaosFault
	blackouts []time.Duration
}

type chaosFault struct {
	name string
	f    faultrelay.Faults
}

func chaosConfig() chaosParams {
	p := chaosParams{bulk: 16 << 20, blackouts: []time.Duration{2 * time.Second}, faults: []chaosFault{
		{"none", faultrelay.Faults{}}, // the baseline the others' times compare to
		{"loss1", faultrelay.Faults{Loss: 0.01}},
		{"loss5", faultrelay.Faults{Loss: 0.05}},
		{"reorder10", faultrelay.Faults{Reorder: 0.10}},
		{"dup5", faultrelay.Faults{Duplicate: 0.05}},
	}}
	if os.Getenv("SALVO_CHAOS") == "full" {
		p.full, p.bulk = true, 64<<20
		p.blackouts = append(p.blackouts, 30*time.Second)
		p.faults = append(p.faults,
			// Bursts end after 20 ms at the latest: counted in datagrams alone, a burst that begins while TCP
			// waits on its retransmission timer eats every retransmission and keepalive for minutes.
			chaosFault{"burst1x10", faultrelay.Faults{BurstProb: 0.01, BurstLen: 10, BurstMax: 20 * time.Millisecond}},
			chaosFault{"all", faultrelay.Faults{Loss: 0.01, Reorder: 0.05, Duplicate: 0.02}},
		)
	}
	return p
}

// chaosWorld is a gateway, a host behind it and one client that reaches the gateway through a relay.
type chaosWorld struct {
	*world
	c     *client
	relay *faultrelay.Relay
	// addr4 is the client's tunnel address, which the host reaches through a route to the pool (for
	// transfers from the host to the client).
	addr4 netip.Addr
}

func newChaosWorld(t *testing.T) *chaosWorld {
	t.Helper()
	w := newWorld(t)
	w.startServer("")
	c := w.addClient()
	cw := &chaosWorld{world: w, c: c}
	cfg := faultrelay.Config{Listen: netip.MustParseAddrPort(c.gwV4 + ":51821"), Gateway: netip.MustParseAddrPort(c.gwV4 + ":51820")}
	must(t, w.gw.Do(func() error {
		var err error
		cw.relay, err = faultrelay.New(cfg)
		return err
	}))
	t.Cleanup(func() { cw.relay.Close() })
	w.connect(c, "alice", c.gwV4+":51821", "")
	cw.addr4 = c.tunnelAddr4(t)
	// The host has no route to the pool (its traffic to clients is answered through NAT); for transfers
	// the host starts, give it one through the gateway.
	must(t, w.host.AddRoute("10.77.0.0/24", "10.201.0.1"))
	must(t, c.ns.Ping(netip.MustParseAddr(hostV4), 5*time.Second))
	must(t, w.host.Ping(cw.addr4, 5*time.Second))
	return cw
}

// upload and download move n bytes from the client to the host and from the host to the client.
func (cw *chaosWorld) upload(t *testing.T, n int64) {
	t.Helper()
	transfer(t, cw.c.ns, cw.host, netip.MustParseAddr(hostV4), n)
}

func (cw *chaosWorld) download(t *testing.T, n int64) {
	t.Helper()
	transfer(t, cw.host, cw.c.ns, cw.addr4, n)
}

// logMark is where the daemons' output stands now, for checkSession.
type logMark struct{ client, gateway int }

func (cw *chaosWorld) logMark() logMark {
	return logMark{len(cw.c.proc.output()), len(cw.server.output())}
}

// checkSession fails unless the client is connected on the session it logged in with: one login on both
// sides, one session at the gateway, and no reconnect since mark.
func (cw *chaosWorld) checkSession(t *testing.T, mark logMark) {
	t.Helper()
	st, err := cw.c.status()
	must(t, err)
	cout, gout := cw.c.proc.output(), cw.server.output()
	logins, ups := strings.Count(cout, "logged in"), strings.Count(gout, "session up")
	switch {
	case st.State != "connected":
		t.Errorf("client state %q", st.State)
	case logins != 1 || ups != 1:
		t.Errorf("the session was lost: the client logged in %d times, the gateway brought %d sessions up", logins, ups)
	case strings.Contains(cout[mark.client:], "reconnecting"):
		t.Errorf("the client reconnected:\n%s", cout[mark.client:])
	case len(cw.serverStatus().Sessions) != 1:
		t.Errorf("gateway has %d sessions", len(cw.serverStatus().Sessions))
	}
}

// watch logs the relay's counters every 5 s until the returned function is called (or the test ends),
// so a transfer that stalls shows which direction stopped.
func (cw *chaosWorld) watch(t *testing.T) (stop func()) {
	done, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		prev := cw.relay.Stats()
		for {
			select {
			case <-done:
				return
			case <-time.After(5 * time.Second):
			}
			st := cw.relay.Stats()
			t.Logf("relay, last 5 s:\n  to gateway: %v\n  to client:  %v", st.ToGateway.Sub(prev.ToGateway), st.ToClient.Sub(prev.ToClient))
			prev = st
		}
	}()
	var once bool
	stop = func() {
		if !once {
			once = true
			close(done)
			<-finished
		}
	}
	t.Cleanup(stop)
	return stop
}

// replayDrops are the replay drops of the gateway's session and of the client.
func (cw *chaosWorld) replayDrops(t *testing.T) (gateway, client uint64) {
	t.Helper()
	for _, s := range cw.serverStatus().Sessions {
		gateway += s.Counters.Drops["replay"]
	}
	st, err := cw.c.status()
	must(t, err)
	for _, s := range st.Sessions {
		client += s.Counters.Drops["replay"]
	}
	return gateway, client
}

// TestChaosFaults: at 1% and 5% loss, 10% reordering and 5% duplication (both directions), checksummed
// TCP transfers both ways complete, the session is never lost, and every duplicate the relay made is
// dropped as a replay by the side that received it.
func TestChaosFaults(t *testing.T) {
	p := chaosConfig()
	cw := newChaosWorld(t)
	for _, fc := range p.faults {
		t.Run(fc.name, func(t *testing.T) {
			defer cw.relay.Clear()
			// Let what a previous fault held back drain, then count from here.
			time.Sleep(50 * time.Millisecond)
			rs0 := cw.relay.Stats()
			g0, c0 := cw.replayDrops(t)
			must(t, cw.relay.Set(faultrelay.Both, fc.f))
			start := time.Now()
			mark := cw.logMark()
			stopWatch := cw.watch(t)
			cw.upload(t, p.bulk)
			cw.download(t, p.bulk)
			stopWatch()
			cw.relay.Clear()
			time.Sleep(50 * time.Millisecond) // the last delayed datagrams
			rs := cw.relay.Stats()
			up, down := rs.ToGateway.Sub(rs0.ToGateway), rs.ToClient.Sub(rs0.ToClient)
			t.Logf("%s (%v), 2 x %d MiB in %v\n  to gateway: %v\n  to client:  %v", fc.name, fc.f, p.bulk>>20,
				time.Since(start).Round(time.Millisecond), up, down)
			cw.checkSession(t, mark)
			must(t, cw.c.ns.Ping(netip.MustParseAddr(hostV4), 5*time.Second))
			// The relay did what it was asked to.
			for _, d := range []struct {
				name string
				s    faultrelay.DirStats
			}{{"to gateway", up}, {"to client", down}} {
				switch {
				case fc.f.Loss > 0 && d.s.Lost == 0,
					fc.f.BurstProb > 0 && d.s.BurstLost == 0,
					fc.f.Reorder > 0 && d.s.Delayed == 0,
					fc.f.Duplicate > 0 && d.s.Duplicated == 0:
					t.Errorf("%s: the relay did not apply %v: %v", d.name, fc.f, d.s)
				}
			}
			if fc.f.Duplicate == 0 {
				return
			}
			// Every duplicate is a replay at the receiver (a few more are counted when a duplicate is then lost,
			// or a reordered packet falls out of the window, in the "all" case).
			g1, c1 := cw.replayDrops(t)
			gw, cl := g1-g0, c1-c0
			t.Logf("replay drops: gateway %d (relay duplicated %d to it), client %d (relay duplicated %d to it)",
				gw, up.Duplicated, cl, down.Duplicated)
			if !near(gw, up.Duplicated) || !near(cl, down.Duplicated) {
				t.Errorf("duplicates not counted as replays: gateway %d replays for %d duplicates, client %d for %d",
					gw, up.Duplicated, cl, down.Duplicated)
			}
		})
	}
}

// near: replay drops match duplicates within 2% (a duplicate may be dropped elsewhere, e.g. by a full
// socket buffer at the receiver).
func near(replays, dups uint64) bool {
	return replays <= dups && replays+dups/50+2 >= dups
}

// TestChaosBlackout: the link goes dark in both directions in the middle of a transfer, for 2 s (and 30 s
// in the full run). The transfer stalls and completes, the session survives without a new login, and the
// relay measures how long after the link came back the tunnel moved data again (logged).
func TestChaosBlackout(t *testing.T) {
	p := chaosConfig()
	cw := newChaosWorld(t)
	for _, d := range p.blackouts {
		for _, dir := range []string{"upload", "download"} {
			t.Run(fmt.Sprintf("%v-%s", d, dir), func(t *testing.T) {
				defer cw.relay.Clear()
				data, move := faultrelay.ToGateway, cw.upload
				if dir == "download" {
					data, move = faultrelay.ToClient, cw.download
				}
				// Start the blackout once a third of the transfer has passed the relay.
				base := cw.relay.Stats().Dir(data).BytesIn
				stop := make(chan struct{})
				started := make(chan time.Time, 1)
				go func() {
					for {
						select {
						case <-stop:
							return
						case <-time.After(time.Millisecond):
						}
						if cw.relay.Stats().Dir(data).BytesIn-base >= uint64(p.bulk/3) {
							cw.relay.Blackout(faultrelay.Both, d)
							started <- time.Now()
							return
						}
					}
				}()
				// Meanwhile ping through the tunnel, to tell the tunnel's recovery from TCP's backoff (to within
				// the ~0.1 s a ping lost in the blackout waits).
				pings := make(chan []time.Time, 1)
				go func() {
					var ok []time.Time
					for {
						select {
						case <-stop:
							pings <- ok
							return
						default:
						}
						if cw.c.ns.Ping(netip.MustParseAddr(hostV4), 100*time.Millisecond) == nil {
							ok = append(ok, time.Now())
						}
						time.Sleep(10 * time.Millisecond)
					}
				}()
				t0 := time.Now()
				mark := cw.logMark()
				move(t, p.bulk)
				close(stop)
				answered := <-pings
				var at time.Time
				select {
				case at = <-started:
				default:
					t.Fatalf("the transfer finished before a third of it had passed the relay")
				}
				st := cw.relay.Stats().Dir(data)
				if st.InBlackout || !st.Recovered {
					t.Fatalf("blackout did not end or traffic did not resume: %v", st)
				}
				// The first ping answered after the link returned.
				tunnel := "no ping answered during the transfer after the link returned"
				for _, a := range answered {
					if a.After(st.BlackoutEnd) {
						tunnel = fmt.Sprintf("the tunnel answered pings again %v after the link returned", a.Sub(st.BlackoutEnd).Round(time.Millisecond))
						break
					}
				}
				t.Logf("%v blackout %v into a %d MiB %s: %s; TCP moved data again %v after (%v after the link went dark); transfer took %v",
					d, at.Sub(t0).Round(time.Millisecond), p.bulk>>20, dir, tunnel, st.Recovery.Round(time.Millisecond),
					(d + st.Recovery).Round(time.Millisecond), time.Since(t0).Round(time.Millisecond))
				cw.checkSession(t, mark)
				must(t, cw.c.ns.Ping(netip.MustParseAddr(hostV4), 5*time.Second))
			})
		}
	}
}
