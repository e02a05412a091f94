package bench

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"
)

// TestHarnessShort runs the real harness in --short mode on the bare link, on
// OpenVPN and on wireguard-go (when the pinned version builds), so the harness cannot
// rot: every figure must be positive (loss may be 0) and the JSON must
// round-trip. Under CI=true a missing privilege or tool fails instead of
// skipping, because a skipped benchmark test would hide breakage.
func TestHarnessShort(t *testing.T) {
	ci := os.Getenv("CI") == "true"
	skip := func(format string, args ...any) {
		t.Helper()
		if ci {
			t.Fatalf("CI=true: "+format, args...)
		}
		t.Skipf(format, args...)
	}
	if testing.Short() {
		// -short means "unit tests, no namespaces" (make test-short), in CI too.
		t.Skip("system benchmark smoke test needs namespaces; not run with -short")
	}
	if os.Geteuid() != 0 {
		skip("needs root (network namespaces)")
	}
	// Tools are not installed from a test; salvobench does that.
	if miss := MissingTools(); len(miss) > 0 {
		skip("missing tools %s (run go run ./bench/cmd/salvobench once, or apt-get install them)", strings.Join(miss, ", "))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	cfg := DefaultConfig()
	cfg.ApplyShort()
	cfg.Systems = []string{SysBare}
	cfg.CacheDir = DefaultCacheDir()
	if _, err := BuildWireguardGo(ctx, cfg.CacheDir); err != nil {
		t.Logf("wireguard-go does not build here, measuring bare only: %v", err)
	} else {
		cfg.Systems = append(cfg.Systems, SysWireguardGo)
		// The fault benchmark too, cheaply: one loss and one short blackout through the relay.
		cfg.Faults = []string{"loss5", "blackout0.5"}
	}
	// OpenVPN is one of the tools above (make test installs it); it runs through the fault relay too.
	cfg.Systems = append(cfg.Systems, SysOpenVPN)
	cfg.CommandLine = "go test ./bench"
	var progress strings.Builder
	cfg.Progress = &progress

	start := time.Now()
	res, err := Run(ctx, cfg)
	t.Logf("progress:\n%s", progress.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("harness took %v", time.Since(start))
	for _, f := range res.Failed() {
		t.Errorf("%s FAILED: %s", f.Name, f.Error)
	}
	if t.Failed() {
		return
	}

	for _, s := range res.Systems {
		if len(s.Runs) != 1 {
			t.Errorf("%s: %d runs, want 1", s.Name, len(s.Runs))
		}
		for _, m := range metrics {
			st, ok := s.Summary[m.key]
			tunnelOnly := m.key == "cpu_s_per_gb" || m.key == "peak_rss_mib" || m.key == "loaded_pss_mib"
			switch {
			case !ok && s.Name == SysBare && tunnelOnly:
				// bare has no tunnel process: absent, not zero.
			case !ok:
				t.Errorf("%s: no %s", s.Name, m.key)
			case m.key == "udp_rate_loss_pct": // 0 is a fine result at a rate the link carries
				if st.Median < 0 || st.Median > 100 {
					t.Errorf("%s: %s = %v, want 0..100", s.Name, m.key, st.Median)
				}
			case !(st.Median > 0) || st.Min > st.Median || st.Median > st.Max:
				t.Errorf("%s: %s = %+v, want positive and min <= median <= max", s.Name, m.key, st)
			}
		}
	}
	if bare := res.system(SysBare); bare != nil {
		if r := bare.Runs[0]; r.CPU != nil || r.Memory != nil {
			t.Errorf("bare reports tunnel CPU/memory: %+v %+v", r.CPU, r.Memory)
		}
	}

	if wg := res.system(SysWireguardGo); wg != nil && len(cfg.Faults) > 0 {
		loss, blackout := wg.FaultSummary["loss5"], wg.FaultSummary["blackout0.5"]
		if !(loss.FaultyMbps.Median > 0) || !(loss.BaselineMbps.Median > 0) || !(blackout.FaultyMbps.Median > 0) {
			t.Errorf("fault summary incomplete: %+v", wg.FaultSummary)
		}
		if blackout.RecoveryMs == nil || blackout.NotRecovered != 0 {
			t.Errorf("blackout: traffic did not flow again: %+v", blackout)
		}
		if r := wg.Runs[0].Faults; len(r) != 2 || r[0].Relay.ToGateway.Lost == 0 || r[1].Relay.ToGateway.Blackholed == 0 {
			t.Errorf("relay did not apply the faults: %+v", r)
		}
	}
	// The JSON must be well-formed and carry the raw per-run figures.
	b, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	var back Results
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatalf("JSON does not round-trip: %v", err)
	}
	if len(back.Systems) != len(cfg.Systems) || back.Env.Kernel == "" || back.Env.Cores < 1 {
		t.Errorf("JSON lost data: %d systems, env %+v", len(back.Systems), back.Env)
	}
	for _, s := range back.Systems {
		r := s.Runs[0]
		if r.TCP1 == nil || r.TCP1.Bytes == 0 || r.UDP == nil || r.UDP.Received == 0 || r.UDPRate == nil || r.UDPRate.Sent == 0 ||
			r.PingIdle == nil || len(r.PingIdle.RTTsMs) != r.PingIdle.Received || r.PingLoaded == nil || r.PingLoaded.Load == nil {
			t.Errorf("%s: raw results incomplete after JSON round trip: %s", s.Name, b)
		}
	}
	table, md := res.Table(), res.Markdown()
	wants := []string{"TCP 1 stream", "ping under TCP load p99", "bare"}
	if len(cfg.Faults) > 0 {
		wants = append(wants, "TCP throughput under faults", "blackout0.5")
	}
	for _, want := range wants {
		if !strings.Contains(table, want) || !strings.Contains(md, want) {
			t.Errorf("table/markdown lack %q:\n%s\n%s", want, table, md)
		}
	}
	t.Logf("\n%s", table)
}

func TestPercentileAndSummary(t *testing.T) {
	xs := []float64{5, 1, 4, 2, 3}
	if got := percentile(xs, 50); got != 3 {
		t.Errorf("p50 = %v, want 3", got)
	}
	if got := percentile(xs, 99); got != 5 {
		t.Errorf("p99 = %v, want 5", got)
	}
	if xs[0] != 5 {
		t.Error("percentile sorted its input in place")
	}
	runs := []*RunResult{{TCP1: &TCPResult{Gbps: 3}}, {TCP1: &TCPResult{Gbps: 1}}, {TCP1: &TCPResult{Gbps: 2}}}
	st := summarize(runs)["tcp_1_gbps"]
	if st != (Stat{Median: 2, Min: 1, Max: 3, N: 3}) {
		t.Errorf("summary = %+v", st)
	}
	if _, ok := summarize(runs)["cpu_s_per_gb"]; ok {
		t.Error("a metric no run measured must be absent, not zero")
	}
}
