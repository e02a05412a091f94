package bench

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/salvovpn/salvo/internal/faultrelay"
)

func TestParseFaults(t *testing.T) {
	specs, err := ParseFaults("loss1, loss0.5,burst2x10,reorder10,dup5,blackout2,rate100,mtu1400,mtu1300icmp")
	if err != nil {
		t.Fatal(err)
	}
	want := []FaultSpec{
		{Name: "loss1", Faults: faultrelay.Faults{Loss: 0.01}},
		{Name: "loss0.5", Faults: faultrelay.Faults{Loss: 0.005}},
		{Name: "burst2x10", Faults: faultrelay.Faults{BurstProb: 0.02, BurstLen: 10, BurstMax: 20 * time.Millisecond}},
		{Name: "reorder10", Faults: faultrelay.Faults{Reorder: 0.1}},
		{Name: "dup5", Faults: faultrelay.Faults{Duplicate: 0.05}},
		{Name: "blackout2", Blackout: 2 * time.Second},
		{Name: "rate100", Faults: faultrelay.Faults{RateBytes: 12_500_000}},
		{Name: "mtu1400", Faults: faultrelay.Faults{MTU: 1400}},
		{Name: "mtu1300icmp", Faults: faultrelay.Faults{MTU: 1300, MTUReply: true}},
	}
	if len(specs) != len(want) {
		t.Fatalf("got %d specs, want %d: %+v", len(specs), len(want), specs)
	}
	for i := range want {
		if specs[i] != want[i] {
			t.Errorf("spec %d: got %+v, want %+v", i, specs[i], want[i])
		}
	}
	for _, bad := range []string{"", "loss", "lose1", "loss101", "loss0", "burst5", "reorder5x2", "blackout0.01",
		"blackout9999", "mtu10", "mtu1400.5", "dup5icmp", "loss1,loss1"} {
		if _, err := ParseFaults(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestValidateFaults(t *testing.T) {
	c := DefaultConfig()
	c.FaultsOnly = true
	if err := c.Validate(); err == nil {
		t.Error("faults-only without faults accepted")
	}
	c.Faults, c.Systems = []string{"loss1"}, []string{SysBare}
	if err := c.Validate(); err == nil {
		t.Error("faults with bare only accepted")
	}
	c.Systems = []string{SysBare, SysSalvo}
	if err := c.Validate(); err != nil || len(c.faultSpecs) != 1 {
		t.Errorf("valid fault config: %v, %d specs", err, len(c.faultSpecs))
	}
	c.Faults = []string{"wobble3"}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "lossP") {
		t.Errorf("unknown fault: %v (want the accepted forms listed)", err)
	}
}

// TestFaultReport: the fault table summarises runs per fault and system, with the blackout's recovery,
// in the terminal table, the Markdown and the JSON.
func TestFaultReport(t *testing.T) {
	tcp := func(mbps float64) *TCPResult { return &TCPResult{Streams: 1, Rate: "0", Gbps: mbps / 1000, Bytes: 1} }
	run := func(share float64, rec float64) *RunResult {
		return &RunResult{Faults: []*FaultResult{
			{Fault: "loss1", Baseline: tcp(1000), Faulty: tcp(1000 * share), Share: share},
			{Fault: "blackout2", Baseline: tcp(1000), Faulty: tcp(500), Share: 0.5, BlackoutMs: 2000, RecoveryMs: rec},
		}}
	}
	res := &Results{Config: Config{Runs: 3, Faults: []string{"loss1", "blackout2"}, faultSpecs: []FaultSpec{{Name: "loss1"}, {Name: "blackout2"}}}, Duration: "5s"}
	for _, name := range []string{SysWireguardGo, SysSalvo} {
		runs := []*RunResult{run(0.9, 1200), run(0.8, 1300), run(0.7, -1)}
		res.Systems = append(res.Systems, &SystemResult{Name: name, Status: statusOK, Runs: runs, Summary: summarize(runs),
			FaultSummary: summarizeFaults(runs)})
	}
	fs := res.Systems[1].FaultSummary
	if got := fs["loss1"]; got.Share.Median != 0.8 || got.Share.Min != 0.7 || got.FaultyMbps.Median != 800 || got.RecoveryMs != nil {
		t.Errorf("loss1 summary %+v", got)
	}
	if got := fs["blackout2"]; got.RecoveryMs == nil || got.RecoveryMs.Median != 1250 || got.NotRecovered != 1 {
		t.Errorf("blackout2 summary %+v", got)
	}
	md, table := res.Markdown(), res.Table()
	for _, want := range []string{"### TCP throughput under faults", "| loss1 | salvo | 1000 | 800 | 80% | 70-90% | — |",
		"| blackout2 | wireguard-go | 1000 | 500 | 50% | 50-50% | 1250 ms (1 run(s) did not recover) |", "- Faults: loss1, blackout2"} {
		if !strings.Contains(md, want) {
			t.Errorf("Markdown lacks %q:\n%s", want, md)
		}
	}
	if !strings.Contains(table, "TCP throughput under faults") || !strings.Contains(table, "1250 ms") {
		t.Errorf("table lacks the fault rows:\n%s", table)
	}
	// Faults only: no main table, only the fault table.
	if strings.Contains(md, "| metric |") {
		t.Errorf("Markdown has an empty main table:\n%s", md)
	}
	b, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	var back Results
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if got := back.Systems[0].FaultSummary["blackout2"]; got.RecoveryMs == nil || got.RecoveryMs.Median != 1250 ||
		len(back.Systems[0].Runs[0].Faults) != 2 || back.Config.Faults[1] != "blackout2" {
		t.Errorf("JSON lost fault results: %s", b)
	}
}
