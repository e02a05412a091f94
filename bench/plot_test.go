package bench

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeResults is a small result set as a harness run would produce it: bare without tunnel costs,
// two tunnels with spread between their runs, and one FAILED system that must not be drawn.
func fakeResults() *Results {
	cfg := DefaultConfig()
	res := &Results{Env: Env{Date: "2026-12-01T10:00:00Z", CPUModel: "Test CPU", Cores: 2}, Config: cfg, Duration: "10s"}
	for i, name := range []string{SysBare, SysWireguardGo, SysSalvo} {
		sr := &SystemResult{Name: name, Status: statusOK}
		for run := 1; run <= 3; run++ {
			f := float64(i+1) * (1 + 0.05*float64(run))
			rr := &RunResult{Run: run,
				TCP1: &TCPResult{Gbps: 2 * f}, TCPN: &TCPResult{Gbps: 2.5 * f},
				UDP:        &UDPResult{PPS: 50000 * f, OfferedPPS: 600000, LossPct: 90},
				UDPRate:    &UDPResult{PPS: 99000, OfferedPPS: 100000, LossPct: 1 / f},
				PingIdle:   &PingResult{P50ms: 0.2, P99ms: 0.5},
				PingLoaded: &PingResult{P50ms: 3 / f, P99ms: 9 / f},
			}
			if name != SysBare {
				rr.CPU = &CPUResult{PerGB: 4 / f}
				rr.Memory = &MemResult{TotalMiB: 30 * f}
			}
			sr.Runs = append(sr.Runs, rr)
		}
		sr.Summary = summarize(sr.Runs)
		res.Systems = append(res.Systems, sr)
	}
	res.Systems = append(res.Systems, &SystemResult{Name: SysOpenVPN, Status: statusFailed, Error: "did not come up"})
	return res
}

func TestPlotWritesSVG(t *testing.T) {
	var b bytes.Buffer
	if err := fakeResults().Plot(&b); err != nil {
		t.Fatal(err)
	}
	svg := b.String()
	if b.Len() < 1000 {
		t.Fatalf("plot is only %d bytes", b.Len())
	}
	// Well-formed XML whose root is <svg>.
	dec := xml.NewDecoder(strings.NewReader(svg))
	root := ""
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("not valid XML: %v", err)
		}
		if se, ok := tok.(xml.StartElement); ok && root == "" {
			root = se.Name.Local
		}
	}
	if root != "svg" {
		t.Fatalf("root element %q, want svg", root)
	}
	for _, want := range []string{"TCP 1 stream", "TCP 4 streams", "UDP 64 B delivered at max rate", "ping under TCP load p99",
		"tunnel CPU s per GB", "tunnel peak RSS", "wireguard-go", "salvo", "n/a", "higher is better", "lower is better"} {
		if !strings.Contains(svg, want) {
			t.Errorf("plot lacks %q", want)
		}
	}
	if strings.Contains(svg, SysOpenVPN) {
		t.Error("a FAILED system is drawn")
	}
}

func TestPlotFromJSON(t *testing.T) {
	dir := t.TempDir()
	js := filepath.Join(dir, "r.json")
	b, err := json.Marshal(fakeResults())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(js, b, 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := ReadResults(js)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "r.svg")
	if err := res.WritePlot(out); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(out); err != nil || fi.Size() == 0 {
		t.Fatalf("no plot written: %v", err)
	}
	if err := (&Results{Systems: []*SystemResult{{Name: SysSalvo, Status: statusFailed}}}).Plot(io.Discard); err == nil {
		t.Error("plotting results without a measured system succeeded")
	}
}

func TestCompact(t *testing.T) {
	for v, want := range map[float64]string{4.55: "4.55", 0.298: "0.298", 99.4: "99.4", 134806: "135k", 1234: "1.23k",
		999.7: "1k", 1.5e6: "1.5M", 250: "250"} {
		if got := compact(v); got != want {
			t.Errorf("compact(%v) = %q, want %q", v, got, want)
		}
	}
	if fmtRate(100000) != "100k" || fmtRate(1500000) != "1.5M" || fmtRate(12345) != "12345" {
		t.Errorf("fmtRate: %s %s %s", fmtRate(100000), fmtRate(1500000), fmtRate(12345))
	}
}
