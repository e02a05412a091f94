package bench

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/salvovpn/salvo/engine"
	"github.com/salvovpn/salvo/engine/control"
	"github.com/salvovpn/salvo/internal/flood"
	"github.com/salvovpn/salvo/internal/netns"
	"github.com/salvovpn/salvo/protocol/handshake"
)

// The flood benchmark (--floods) measures what a victim keeps of its TCP throughput (one iperf3 stream A to
// B through the tunnel) while an attacker floods the gateway's UDP port from 200 forged sources: each kind
// of flood (internal/flood) at each rate, right after a no-flood baseline on the same tunnel. The attacker
// is a third namespace C on its own veth to B (B routes the forged 10.99.0.0/16 back to it). It shares
// the machine's cores with everybody else, so the flood's achieved rate is part of the result.

// FloodSpec is one entry of --floods: a kind at a rate (0 = as fast as the generator goes).
type FloodSpec struct {
	Kind flood.Kind `json:"kind"`
	Rate int        `json:"rate"`
}

// Name is how the spec is written on the command line and in the report: kind@rate or kind@max.
func (f FloodSpec) Name() string {
	if f.Rate == 0 {
		return string(f.Kind) + "@max"
	}
	return fmt.Sprintf("%s@%d", f.Kind, f.Rate)
}

// ParseFloods parses --floods (kinds) and --flood-rates (datagrams per second, "max" for unpaced) into
// every combination.
func ParseFloods(kinds, rates string) ([]FloodSpec, error) {
	var ks []flood.Kind
	for _, k := range strings.Split(kinds, ",") {
		if k = strings.TrimSpace(k); k == "" {
			continue
		}
		if !slices.Contains(flood.Kinds, flood.Kind(k)) {
			return nil, fmt.Errorf("flood %q: not one of %v", k, flood.Kinds)
		}
		ks = append(ks, flood.Kind(k))
	}
	var rs []int
	for _, r := range strings.Split(rates, ",") {
		switch r = strings.TrimSpace(r); r {
		case "":
		case "max":
			rs = append(rs, 0)
		default:
			n, err := strconv.Atoi(r)
			if err != nil || n < 1 {
				return nil, fmt.Errorf("flood rate %q: a number of datagrams per second, or max", r)
			}
			rs = append(rs, n)
		}
	}
	if len(ks) == 0 || len(rs) == 0 {
		return nil, errors.New("floods: no kind or no rate")
	}
	var out []FloodSpec
	for _, k := range ks {
		for _, r := range rs {
			out = append(out, FloodSpec{Kind: k, Rate: r})
		}
	}
	return out, nil
}

// FloodResult is one flood on one run.
type FloodResult struct {
	Flood    string     `json:"flood"`
	Baseline *TCPResult `json:"baseline"`
	Flooded  *TCPResult `json:"flooded"`
	Share    float64    `json:"share_of_baseline"`
	SentPPS  float64    `json:"flood_pps"` // what the generator achieved
	// Peak RSS of the tunnel's processes before the flood and after it.
	RSSBeforeMiB float64 `json:"rss_before_mib"`
	RSSAfterMiB  float64 `json:"rss_after_mib"`
	// Salvo only: how long a new client's login took during the flood (0: not measured), and what the
	// gateway's handshakes did during it.
	LoginMs     float64 `json:"new_login_ms,omitempty"`
	Hashes      uint64  `json:"password_hashes,omitempty"`
	CookiesSent uint64  `json:"cookies_sent,omitempty"`
}

// addAttacker adds namespace C, on its own veth to B, that floods from 10.99.0.0/16.
func (t *Topology) addAttacker() (*netns.NS, []netip.Addr, error) {
	c, err := netns.Create(NSPrefix)
	if err != nil {
		return nil, nil, err
	}
	t.extra = append(t.extra, c)
	if err := netns.Veth(c, "veth-c", t.B, "veth-bc"); err != nil {
		return nil, nil, err
	}
	for _, s := range []struct {
		ns         *netns.NS
		dev, cidr  string
		route, via string
	}{{c, "veth-c", "10.101.0.2/24", "default", "10.101.0.1"}, {t.B, "veth-bc", "10.101.0.1/24", "10.99.0.0/16", "10.101.0.2"}} {
		if err := s.ns.AddAddr(s.dev, s.cidr); err != nil {
			return nil, nil, err
		}
		if err := s.ns.LinkUp(s.dev); err != nil {
			return nil, nil, err
		}
		if err := s.ns.AddRoute(s.route, s.via); err != nil {
			return nil, nil, err
		}
	}
	var sources []netip.Addr
	for i := range 200 {
		sources = append(sources, netip.AddrFrom4([4]byte{10, 99, byte(i / 100), byte(1 + i%100)}))
	}
	return c, sources, nil
}

// runFloods brings a system up with an attacker beside it and measures every flood.
func runFloods(ctx context.Context, cfg *Config, s system, run int, work string) (_ []*FloodResult, err error) {
	dir, topo, err := freshTopology(work, fmt.Sprintf("%s-floods-run%d", s.name(), run))
	if err != nil {
		return nil, err
	}
	defer closeTopology(topo, &err)
	atk, sources, err := topo.addAttacker()
	if err != nil {
		return nil, fmt.Errorf("attacker namespace: %w", err)
	}
	tun, err := s.up(ctx, topo, dir)
	if err != nil {
		return nil, fmt.Errorf("%s did not come up: %w", s.name(), err)
	}
	defer tun.close()
	srv, err := iperfServer(ctx, topo.B, dir)
	if err != nil {
		return nil, err
	}
	defer srv.stop(time.Second)
	alive := aliveCheck(append(tun.daemons(), srv))
	st, _ := tun.(*salvoTunnel)
	// Login floods are built for the gateway's key; for another system any key will do (it is junk there).
	other, err := handshake.GenerateKeypair(nil)
	if err != nil {
		return nil, err
	}
	key := other.Public
	if st != nil {
		if key, err = handshake.ParseKey(st.publicKey); err != nil {
			return nil, err
		}
	}
	secs := int(cfg.Duration / time.Second)
	target := netip.MustParseAddrPort(addrB4 + ":51820") // the gateway's (or wireguard-go's) UDP port
	var out []*FloodResult
	for _, spec := range cfg.floodSpecs {
		fr := &FloodResult{Flood: spec.Name()}
		if fr.Baseline, err = measureTCP(ctx, topo.A, tun.target(), secs, 1, "0"); err != nil {
			return nil, errors.Join(fmt.Errorf("%s baseline: %w", spec.Name(), err), alive())
		}
		if m, err := measureMem(tun.daemons()); err == nil {
			fr.RSSBeforeMiB = m.TotalMiB
		}
		var before engine.Status
		if st != nil {
			_ = control.Query(st.serverSock, &before)
		}
		done := make(chan flood.Result, 1)
		ferr := make(chan error, 1)
		go func() {
			var res flood.Result
			err := atk.Do(func() error {
				var err error
				res, err = flood.Run(ctx, flood.Config{Kind: spec.Kind, Sources: sources, Target: target, Rate: spec.Rate,
					Duration: cfg.Duration + 2*time.Second, GatewayKey: key})
				return err
			})
			done <- res
			ferr <- err
		}()
		time.Sleep(time.Second) // the flood is under way before the victim's test starts
		if st != nil && spec.Kind == flood.Login {
			fr.LoginMs = timeLogin(ctx, topo, key, st.password)
		}
		fr.Flooded, err = measureTCP(ctx, topo.A, tun.target(), secs, 1, "0")
		res := <-done
		if e := <-ferr; e != nil {
			return nil, fmt.Errorf("%s: the flood: %w", spec.Name(), e)
		}
		if err != nil {
			return nil, errors.Join(fmt.Errorf("%s: %w", spec.Name(), err), alive())
		}
		fr.SentPPS = res.PPS()
		fr.Share = fr.Flooded.Gbps / fr.Baseline.Gbps
		if m, err := measureMem(tun.daemons()); err == nil {
			fr.RSSAfterMiB = m.TotalMiB
		}
		var after engine.Status
		if st != nil && control.Query(st.serverSock, &after) == nil && after.Logins != nil && before.Logins != nil {
			fr.Hashes = after.Logins.PasswordHashes - before.Logins.PasswordHashes
			fr.CookiesSent = after.Logins.CookiesSent - before.Logins.CookiesSent
		}
		login := ""
		if fr.LoginMs != 0 {
			login = fmt.Sprintf(", a new login took %.0f ms", fr.LoginMs)
		}
		cfg.eta.tick(cfg.nominalFlood())
		cfg.progressf("[run %d/%d] %s: %s at %.0f pkt/s: %.0f Mbit/s, baseline %.0f (%.0f%%), peak RSS %.0f -> %.0f MiB%s",
			run, cfg.Runs, s.name(), spec.Name(), fr.SentPPS, fr.Flooded.Gbps*1000, fr.Baseline.Gbps*1000, fr.Share*100,
			fr.RSSBeforeMiB, fr.RSSAfterMiB, login)
		out = append(out, fr)
		time.Sleep(time.Second) // let the gateway's queues drain before the next baseline
	}
	return out, alive()
}

// timeLogin logs a fresh client engine in and returns how long it took in ms (-1 if not within 10 s).
func timeLogin(ctx context.Context, topo *Topology, key handshake.Key, password string) float64 {
	start := time.Now()
	cl, err := startStormClients(ctx, topo, 1, key, password, salvoUser)
	if err != nil {
		return -1
	}
	defer cl.stop()
	if cl.waitAll(ctx, 10*time.Second, "connected", discard{}) != nil {
		return -1
	}
	return float64(time.Since(start).Microseconds()) / 1000
}

type discard struct{}

func (discard) Write(b []byte) (int, error) { return len(b), nil }

// FloodStat summarises one flood for one system over the runs.
type FloodStat struct {
	BaselineMbps Stat  `json:"baseline_mbps"`
	FloodedMbps  Stat  `json:"flooded_mbps"`
	Share        Stat  `json:"share_of_baseline"`
	SentPPS      Stat  `json:"flood_pps"`
	RSSGrowth    Stat  `json:"rss_after_over_before"`
	LoginMs      *Stat `json:"new_login_ms,omitempty"`
}

func summarizeFloods(runs []*RunResult) map[string]FloodStat {
	byName := map[string][]*FloodResult{}
	for _, r := range runs {
		for _, f := range r.Floods {
			byName[f.Flood] = append(byName[f.Flood], f)
		}
	}
	out := map[string]FloodStat{}
	for name, frs := range byName {
		var base, flooded, share, pps, rss, login []float64
		for _, f := range frs {
			base = append(base, f.Baseline.Gbps*1000)
			flooded = append(flooded, f.Flooded.Gbps*1000)
			share = append(share, f.Share)
			pps = append(pps, f.SentPPS)
			if f.RSSBeforeMiB > 0 {
				rss = append(rss, f.RSSAfterMiB/f.RSSBeforeMiB)
			}
			if f.LoginMs != 0 {
				login = append(login, f.LoginMs)
			}
		}
		fs := FloodStat{BaselineMbps: stat(base), FloodedMbps: stat(flooded), Share: stat(share), SentPPS: stat(pps)}
		if len(rss) > 0 {
			fs.RSSGrowth = stat(rss)
		}
		if len(login) > 0 {
			st := stat(login)
			fs.LoginMs = &st
		}
		out[name] = fs
	}
	return out
}

// floodNote says how the flood table was measured, under it.
const floodNote = "TCP, 1 stream A to B through the tunnel, right after a no-flood baseline on the same tunnel, while a " +
	"third namespace floods the gateway's (or wireguard-go's) UDP port from 200 forged sources; the flood starts 1 s " +
	"before the victim's test and runs 2 s past it. The generator shares the machine's 2 cores with both tunnel ends " +
	"and both iperf3 ends: its achieved rate is in the table. \"new login\" (Salvo, login floods): a fresh client " +
	"engine's login during the flood. For wireguard-go every flood is junk (it has no 0x01 logins)."

// floodRows is the "victim throughput under floods" table.
func (r *Results) floodRows() (header []string, rows [][]string) {
	if len(r.Config.floodSpecs) == 0 {
		return nil, nil
	}
	header = []string{"flood", "system", "flood pkt/s", "no flood (Mbit/s)", "flooded (Mbit/s)", "share", "min-max share", "peak RSS after/before", "new login"}
	for _, spec := range r.Config.floodSpecs {
		for _, s := range r.Systems {
			fs, ok := s.FloodSummary[spec.Name()]
			if s.Status != statusOK || !ok {
				continue
			}
			login := "—"
			if fs.LoginMs != nil {
				login = fmt.Sprintf("%.0f ms", fs.LoginMs.Median)
			}
			rows = append(rows, []string{spec.Name(), s.Name, fmt.Sprintf("%.0f", fs.SentPPS.Median), fmt.Sprintf("%.0f", fs.BaselineMbps.Median),
				fmt.Sprintf("%.0f", fs.FloodedMbps.Median), fmt.Sprintf("%.0f%%", fs.Share.Median*100),
				fmt.Sprintf("%.0f-%.0f%%", fs.Share.Min*100, fs.Share.Max*100), fmt.Sprintf("%.2fx", fs.RSSGrowth.Median), login})
		}
	}
	return header, rows
}
