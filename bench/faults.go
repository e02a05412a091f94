package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/salvovpn/salvo/internal/faultrelay"
	"github.com/salvovpn/salvo/internal/netns"
)

// The fault benchmark (--faults) measures TCP throughput, one iperf3 stream from A to B, through a
// faultrelay.Relay that makes the path between the two tunnel endpoints bad. The relay runs inside the
// harness process with its sockets in namespace B: it listens on B's address at relayPort, and every
// system's client in A is pointed at it instead of at the server; the server side learns the relay's
// address from the client's first datagram, so both directions of the tunnel's UDP pass the relay.
//
// Every fault is measured back to back with a no-fault baseline through the same relay, on the same
// tunnel, so the share of the baseline shows what the fault costs and nothing else (the relay itself
// costs throughput: its baseline is below the direct figures of the main table).

const relayPort = 51821

// FaultSpec is one entry of --faults.
type FaultSpec struct {
	Name   string            `json:"name"`
	Faults faultrelay.Faults `json:"faults"`
	// Blackout, if set, is a blackout of both directions that starts blackoutLead into the test.
	Blackout time.Duration `json:"blackout,omitempty"`
}

// burstMax ends a loss burst that has not lost its N datagrams within 20 ms (see faultrelay.Faults.BurstMax).
const burstMax = 20 * time.Millisecond

// blackoutLead is how long a blackout test runs before the link goes dark.
const blackoutLead = time.Second

var faultRE = regexp.MustCompile(`^(loss|burst|reorder|dup|blackout|rate|mtu)([0-9]+(?:\.[0-9]+)?)(?:x([0-9]+))?(icmp)?$`)

// FaultForms documents what ParseFaults accepts.
const FaultForms = "lossP (P% independent loss), burstPxN (P% of datagrams start a burst of N lost, 20 ms at most), reorderP (P% delayed 2-5 ms), " +
	"dupP (P% duplicated), blackoutS (nothing passes for S seconds, starting 1 s into the test), rateM (M Mbit/s policer), " +
	"mtuN (datagrams over N bytes dropped silently), mtuNicmp (and answered with ICMP); all in both directions"

// ParseFaults parses a comma-separated --faults list, e.g. "loss1,loss5,reorder10,dup5,blackout2".
func ParseFaults(list string) ([]FaultSpec, error) {
	var out []FaultSpec
	for _, name := range strings.Split(list, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		m := faultRE.FindStringSubmatch(name)
		if m == nil {
			return nil, fmt.Errorf("fault %q: not one of %s", name, FaultForms)
		}
		kind, num, count, icmp := m[1], m[2], m[3], m[4] != ""
		v, err := strconv.ParseFloat(num, 64)
		if err != nil {
			return nil, fmt.Errorf("fault %q: %w", name, err)
		}
		if (count != "") != (kind == "burst") || icmp && kind != "mtu" {
			return nil, fmt.Errorf("fault %q: not one of %s", name, FaultForms)
		}
		spec := FaultSpec{Name: name}
		f := &spec.Faults
		switch kind {
		case "loss":
			f.Loss = v / 100
		case "burst":
			n, _ := strconv.Atoi(count)
			f.BurstProb, f.BurstLen, f.BurstMax = v/100, n, burstMax
		case "reorder":
			f.Reorder = v / 100
		case "dup":
			f.Duplicate = v / 100
		case "blackout":
			spec.Blackout = time.Duration(v * float64(time.Second))
			if spec.Blackout < 100*time.Millisecond || spec.Blackout > 10*time.Minute {
				return nil, fmt.Errorf("fault %q: a blackout lasts 0.1 to 600 seconds", name)
			}
		case "rate":
			f.RateBytes = int64(v * 1e6 / 8)
		case "mtu":
			if v != math.Trunc(v) {
				return nil, fmt.Errorf("fault %q: an MTU is a whole number of bytes", name)
			}
			f.MTU, f.MTUReply = int(v), icmp
		}
		if err := f.Validate(); err != nil {
			return nil, fmt.Errorf("fault %q: %w", name, err)
		}
		if kind != "blackout" && *f == (faultrelay.Faults{}) {
			return nil, fmt.Errorf("fault %q does nothing", name)
		}
		if slices.ContainsFunc(out, func(s FaultSpec) bool { return s.Name == name }) {
			return nil, fmt.Errorf("fault %q listed twice", name)
		}
		out = append(out, spec)
	}
	if len(out) == 0 {
		return nil, errors.New("no fault in the list")
	}
	return out, nil
}

// FaultResult is one fault on one run: the baseline and the faulty test, back to back.
type FaultResult struct {
	Fault    string     `json:"fault"`
	Baseline *TCPResult `json:"baseline"`
	Faulty   *TCPResult `json:"with_fault"`
	Share    float64    `json:"share_of_baseline"`
	// Relay is what the relay did during the faulty test (both directions).
	Relay faultrelay.Stats `json:"relay"`
	// For a blackout: RecoveryMs is how long after the link returned the relay had forwarded 256 KiB from
	// A to B again (the tunnel moving bulk data, not a keepalive or a lone retransmission); -1 if that did
	// not happen before the test ended.
	BlackoutMs float64 `json:"blackout_ms,omitempty"`
	RecoveryMs float64 `json:"recovery_ms,omitempty"`
}

// faultSystem reports whether a system can be measured through the relay (bare has no UDP to relay).
func faultSystem(name string) bool { return name != SysBare }

// runFaults brings a system up on a fresh topology with the relay between its ends and measures every
// fault against its baseline.
func runFaults(ctx context.Context, cfg *Config, s system, run int, work string) (_ []*FaultResult, err error) {
	dir, topo, err := freshTopology(work, fmt.Sprintf("%s-faults-run%d", s.name(), run))
	if err != nil {
		return nil, err
	}
	defer closeTopology(topo, &err)
	var relay *faultrelay.Relay
	if err := topo.B.Do(func() error {
		var err error
		relay, err = faultrelay.New(faultrelay.Config{
			Listen:  netip.AddrPortFrom(netip.MustParseAddr(addrB4), relayPort),
			Gateway: netip.AddrPortFrom(netip.MustParseAddr(addrB4), 51820),
			ICMP:    true,
		})
		return err
	}); err != nil {
		return nil, fmt.Errorf("fault relay in %s: %w", topo.B.Name, err)
	}
	defer relay.Close()
	topo.Relay = relay.Addr()
	tun, err := s.up(ctx, topo, dir)
	if err != nil {
		return nil, fmt.Errorf("%s did not come up through the relay: %w", s.name(), err)
	}
	defer tun.close()
	if st := relay.Stats(); st.ToGateway.Forwarded == 0 || st.ToClient.Forwarded == 0 {
		return nil, fmt.Errorf("%s: the tunnel does not pass the relay (relay: %+v)", s.name(), st)
	}
	srv, err := iperfServer(ctx, topo.B, dir)
	if err != nil {
		return nil, err
	}
	defer srv.stop(time.Second)
	alive := aliveCheck(append(tun.daemons(), srv))
	secs := int(cfg.Duration / time.Second)
	var out []*FaultResult
	for _, spec := range cfg.faultSpecs {
		relay.Clear()
		fr := &FaultResult{Fault: spec.Name}
		if fr.Baseline, err = measureTCP(ctx, topo.A, tun.target(), secs, 1, "0"); err != nil {
			return nil, errors.Join(fmt.Errorf("%s baseline: %w", spec.Name, err), alive())
		}
		if fr.Faulty, err = measureFault(ctx, topo.A, tun.target(), secs, relay, spec, fr); err != nil {
			relay.Clear()
			return nil, errors.Join(fmt.Errorf("%s: %w", spec.Name, err), alive())
		}
		relay.Clear()
		fr.Share = fr.Faulty.Gbps / fr.Baseline.Gbps
		rec := ""
		if spec.Blackout > 0 {
			rec = fmt.Sprintf(", flowing again %.0f ms after the link returned", fr.RecoveryMs)
		}
		if d := fr.Relay.ToGateway.SocketDrops + fr.Relay.ToClient.SocketDrops; d > 0 {
			rec += fmt.Sprintf(" (the relay itself lost %d datagrams: its socket overflowed)", d)
		}
		cfg.eta.tick(cfg.nominalFault(spec))
		cfg.progressf("[run %d/%d] %s: %s %.0f Mbit/s, baseline %.0f (%.0f%%)%s", run, cfg.Runs, s.name(), spec.Name,
			fr.Faulty.Gbps*1000, fr.Baseline.Gbps*1000, fr.Share*100, rec)
		out = append(out, fr)
	}
	return out, alive()
}

// measureFault runs the TCP test with spec's faults on the relay. A blackout test lasts long enough for
// TCP's backoff to bring the flow back: the lead, the blackout twice over (a retransmission timer that
// doubled through the blackout fires up to about its length after the link returns), then the normal
// duration.
func measureFault(ctx context.Context, ns *netns.NS, target string, secs int, relay *faultrelay.Relay, spec FaultSpec, fr *FaultResult) (*TCPResult, error) {
	before := relay.Stats()
	if spec.Blackout == 0 {
		if err := relay.Set(faultrelay.Both, spec.Faults); err != nil {
			return nil, err
		}
		r, err := measureTCP(ctx, ns, target, secs, 1, "0")
		fr.Relay = subStats(relay.Stats(), before)
		return r, err
	}
	total := int(math.Ceil((blackoutLead + 2*spec.Blackout).Seconds())) + secs
	timer := time.AfterFunc(blackoutLead, func() { relay.Blackout(faultrelay.Both, spec.Blackout) })
	defer timer.Stop()
	r, err := measureTCP(ctx, ns, target, total, 1, "0")
	st := relay.Stats()
	fr.Relay = subStats(st, before)
	fr.BlackoutMs = float64(spec.Blackout) / 1e6
	switch {
	case err != nil:
		return nil, err
	case st.ToGateway.Blackouts == before.ToGateway.Blackouts:
		return nil, errors.New("the blackout did not start")
	case st.ToGateway.Recovered:
		fr.RecoveryMs = float64(st.ToGateway.Recovery) / 1e6
	default:
		fr.RecoveryMs = -1
	}
	return r, nil
}

func subStats(now, before faultrelay.Stats) faultrelay.Stats {
	return faultrelay.Stats{ToGateway: now.ToGateway.Sub(before.ToGateway), ToClient: now.ToClient.Sub(before.ToClient), Client: now.Client}
}

// FaultStat summarises one fault for one system over the runs.
type FaultStat struct {
	BaselineMbps Stat  `json:"baseline_mbps"`
	FaultyMbps   Stat  `json:"with_fault_mbps"`
	Share        Stat  `json:"share_of_baseline"`
	RecoveryMs   *Stat `json:"recovery_ms,omitempty"` // blackouts; -1 entries (no recovery) excluded
	// NotRecovered counts the runs in which traffic did not flow again before the test ended.
	NotRecovered int `json:"not_recovered,omitempty"`
}

func summarizeFaults(runs []*RunResult) map[string]FaultStat {
	byName := map[string][]*FaultResult{}
	for _, r := range runs {
		for _, f := range r.Faults {
			byName[f.Fault] = append(byName[f.Fault], f)
		}
	}
	out := map[string]FaultStat{}
	for name, frs := range byName {
		var base, faulty, share, rec []float64
		fs := FaultStat{}
		blackout := false
		for _, f := range frs {
			base = append(base, f.Baseline.Gbps*1000)
			faulty = append(faulty, f.Faulty.Gbps*1000)
			share = append(share, f.Share)
			if f.BlackoutMs > 0 {
				blackout = true
				if f.RecoveryMs >= 0 {
					rec = append(rec, f.RecoveryMs)
				} else {
					fs.NotRecovered++
				}
			}
		}
		fs.BaselineMbps, fs.FaultyMbps, fs.Share = stat(base), stat(faulty), stat(share)
		if blackout && len(rec) > 0 {
			st := stat(rec)
			fs.RecoveryMs = &st
		}
		out[name] = fs
	}
	return out
}

// stat is the median, min and max of xs (not empty).
func stat(xs []float64) Stat {
	s := slices.Clone(xs)
	slices.Sort(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return Stat{Median: med, Min: s[0], Max: s[len(s)-1], N: len(s)}
}

// faultRows is the "TCP throughput under faults" table: one row per fault and system.
func (r *Results) faultRows() (header []string, rows [][]string) {
	if len(r.Config.Faults) == 0 {
		return nil, nil
	}
	header = []string{"fault", "system", "no fault (Mbit/s)", "with fault (Mbit/s)", "share of no-fault", "min-max share", "flowing again after the link returned"}
	for _, name := range r.Config.Faults {
		for _, s := range r.Systems {
			fs, ok := s.FaultSummary[name]
			if s.Status != statusOK || !ok {
				continue
			}
			rec := "—"
			switch {
			case fs.RecoveryMs != nil && fs.NotRecovered > 0:
				rec = fmt.Sprintf("%.0f ms (%d run(s) did not recover)", fs.RecoveryMs.Median, fs.NotRecovered)
			case fs.RecoveryMs != nil:
				rec = fmt.Sprintf("%.0f ms (%.0f-%.0f)", fs.RecoveryMs.Median, fs.RecoveryMs.Min, fs.RecoveryMs.Max)
			case fs.NotRecovered > 0:
				rec = "did not recover within the test"
			}
			rows = append(rows, []string{name, s.Name, fmt.Sprintf("%.0f", fs.BaselineMbps.Median), fmt.Sprintf("%.0f", fs.FaultyMbps.Median),
				fmt.Sprintf("%.0f%%", fs.Share.Median*100), fmt.Sprintf("%.0f-%.0f%%", fs.Share.Min*100, fs.Share.Max*100), rec})
		}
	}
	return header, rows
}

// faultNote says how the fault table was measured, under it.
func (r *Results) faultNote() string {
	return fmt.Sprintf("TCP, 1 stream A to B, %s per test, through a user-space fault relay in B that both directions of the "+
		"tunnel's UDP pass; each fault right after its no-fault baseline through the same relay (the relay's own cost "+
		"is in both). Faults apply to both directions. A blackout starts %v into its test, which lasts that, twice "+
		"the blackout (time for TCP's backoff) and %s; \"flowing again\" is when 256 KiB had passed A to B after the "+
		"link returned.",
		r.Duration, blackoutLead, r.Duration)
}
