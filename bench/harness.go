package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/salvovpn/salvo/internal/netns"
)

// Config selects what a harness run measures.
type Config struct {
	Systems  []string      `json:"systems"`
	Duration time.Duration `json:"-"`
	Runs     int           `json:"runs"`
	Streams  int           `json:"streams"`
	UDPSize  int           `json:"udp_size"`
	// UDPRatePPS is the packet rate of the fixed-rate small-packet test, where loss means something (at
	// an unlimited rate the sender outruns every tunnel and "loss" is only the excess it offered).
	UDPRatePPS int    `json:"udp_rate_pps"`
	PingCount  int    `json:"ping_count"`
	CPURate    string `json:"cpu_rate"` // iperf3 -b for the CPU-cost test
	Short      bool   `json:"short"`
	// Ref, if set, adds system salvo-ref: Salvo built from this git revision, for a before/after of a
	// change measured in one run.
	Ref string `json:"ref,omitempty"`
	// Faults, if set, adds the fault benchmark (see faults.go): TCP throughput of every system but bare
	// through a fault relay, each fault (ParseFaults names) against its no-fault baseline.
	Faults []string `json:"faults,omitempty"`
	// FaultsOnly skips the main measurements and runs only the fault benchmark.
	FaultsOnly bool `json:"faults_only,omitempty"`
	// Floods and FloodRates, if set, add the flood benchmark (see floods.go): the victim's TCP throughput
	// while an attacker floods the gateway, each kind at each rate. FloodsOnly, like FaultsOnly, skips the
	// main measurements.
	Floods     []string `json:"floods,omitempty"`
	FloodRates []string `json:"flood_rates,omitempty"`
	FloodsOnly bool     `json:"floods_only,omitempty"`
	faultSpecs []FaultSpec
	floodSpecs []FloodSpec // parsed Floods x FloodRates

	RepoDir  string    `json:"-"` // Salvo checkout, for `go build ./cmd/salvo`
	CacheDir string    `json:"-"` // where the pinned wireguard-go is built once
	Progress io.Writer `json:"-"` // progress lines; nil = discard
	eta      *etaClock // the time left, on every progress line once Run has a plan
	// CommandLine is recorded verbatim in the report.
	CommandLine string `json:"command_line"`
}

// DefaultConfig is a full run: three repetitions of 10-second tests.
func DefaultConfig() Config {
	return Config{
		Systems: slices.Clone(AllSystems), Duration: 10 * time.Second, Runs: 3, Streams: 4,
		UDPSize: 64, UDPRatePPS: 100000, PingCount: 500, CPURate: "1G",
	}
}

// ApplyShort turns a config into the seconds-long smoke version.
func (c *Config) ApplyShort() {
	c.Short, c.Duration, c.Runs, c.PingCount = true, time.Second, 1, 50
}

// Validate checks the selection and the test parameters.
func (c *Config) Validate() error {
	if c.Duration < time.Second || c.Duration%time.Second != 0 {
		return fmt.Errorf("duration %v: iperf3 needs whole seconds, at least 1s", c.Duration)
	}
	if c.Runs < 1 || c.Streams < 1 || c.PingCount < 2 {
		return fmt.Errorf("runs (%d), streams (%d) must be >= 1 and ping count (%d) >= 2", c.Runs, c.Streams, c.PingCount)
	}
	if c.UDPRatePPS < 1 || c.UDPRatePPS > 10_000_000 {
		return fmt.Errorf("udp rate %d pkt/s: must be 1..10000000", c.UDPRatePPS)
	}
	if c.UDPSize < 16 || c.UDPSize > 1400 {
		return fmt.Errorf("udp size %d: must be 16..1400 (iperf3's header needs 16 bytes; larger would fragment in a 1420 tunnel)", c.UDPSize)
	}
	if len(c.Systems) == 0 {
		return errors.New("no system selected")
	}
	if len(c.Floods) > 0 {
		specs, err := ParseFloods(strings.Join(c.Floods, ","), strings.Join(c.FloodRates, ","))
		if err != nil {
			return err
		}
		c.floodSpecs = specs
	} else if c.FloodsOnly {
		return errors.New("floods-only without a flood list")
	}
	if c.FaultsOnly && len(c.Faults) == 0 {
		return errors.New("faults-only without a fault list")
	}
	if len(c.Faults) > 0 {
		specs, err := ParseFaults(strings.Join(c.Faults, ","))
		if err != nil {
			return err
		}
		c.faultSpecs = specs
		if !slices.ContainsFunc(c.Systems, faultSystem) {
			return errors.New("faults: no selected system has a tunnel to put faults on (bare is measured without them)")
		}
	}
	if (c.Ref != "") != slices.Contains(c.Systems, SysSalvoRef) {
		return fmt.Errorf("system %s and --ref REV go together", SysSalvoRef)
	}
	seen := map[string]bool{}
	for _, s := range c.Systems {
		if !slices.Contains(KnownSystems, s) {
			return fmt.Errorf("unknown system %q (known: %s)", s, strings.Join(KnownSystems, ","))
		}
		if seen[s] {
			return fmt.Errorf("system %q selected twice", s)
		}
		seen[s] = true
	}
	return nil
}

// Env describes where the numbers were taken.
type Env struct {
	Date        string `json:"date"`
	CPUModel    string `json:"cpu_model"`
	Cores       int    `json:"cores"`
	Kernel      string `json:"kernel"`
	GoVersion   string `json:"go_version"`
	Iperf3      string `json:"iperf3_version"`
	CommandLine string `json:"command_line"`
}

// Results is everything a run produced; it is what --json writes.
type Results struct {
	Env      Env             `json:"environment"`
	Config   Config          `json:"config"`
	Duration string          `json:"duration"`
	Systems  []*SystemResult `json:"systems"`
}

// SystemResult holds one system's raw runs and their summary.
type SystemResult struct {
	Name    string       `json:"name"`
	Status  string       `json:"status"` // "ok" or "FAILED"
	Error   string       `json:"error,omitempty"`
	Version string       `json:"version,omitempty"`
	Runs    []*RunResult `json:"runs"`
	// Retried lists the runs that failed once and were measured again on a fresh topology, with why.
	Retried []string        `json:"retried,omitempty"`
	Summary map[string]Stat `json:"summary"`
	// FaultSummary is the fault benchmark by fault name (absent without --faults, and for bare).
	FaultSummary map[string]FaultStat `json:"fault_summary,omitempty"`
	// FloodSummary is the flood benchmark by flood name (absent without --floods, and for bare).
	FloodSummary map[string]FloodStat `json:"flood_summary,omitempty"`
}

// RunResult is one repetition on a fresh topology.
type RunResult struct {
	Run        int               `json:"run"`
	Info       map[string]string `json:"info,omitempty"`
	TCP1       *TCPResult        `json:"tcp_1_stream"`
	TCPN       *TCPResult        `json:"tcp_n_streams"`
	UDP        *UDPResult        `json:"udp_small"`            // at an unlimited rate
	UDPRate    *UDPResult        `json:"udp_small_fixed_rate"` // at Config.UDPRatePPS
	PingIdle   *PingResult       `json:"ping_idle"`
	PingLoaded *PingResult       `json:"ping_loaded"`
	CPU        *CPUResult        `json:"cpu,omitempty"`    // nil for bare: no tunnel process
	Memory     *MemResult        `json:"memory,omitempty"` // nil for bare
	// Faults is the fault benchmark of this run, on its own topology with the relay (--faults).
	Faults []*FaultResult `json:"faults,omitempty"`
	// Floods is the flood benchmark of this run (--floods).
	Floods []*FloodResult `json:"floods,omitempty"`
}

const (
	statusOK     = "ok"
	statusFailed = "FAILED"
)

// Failed lists the systems that did not produce results.
func (r *Results) Failed() []*SystemResult {
	var out []*SystemResult
	for _, s := range r.Systems {
		if s.Status != statusOK {
			out = append(out, s)
		}
	}
	return out
}

func (c *Config) progressf(format string, args ...any) {
	if c.Progress != nil {
		fmt.Fprintf(c.Progress, "salvobench: "+format+"%s\n", append(args, c.eta.suffix())...)
	}
}

// loadRamp is how long the TCP load of the loaded-ping test runs before the pings start.
func (c *Config) loadRamp() time.Duration {
	if c.Short {
		return 300 * time.Millisecond
	}
	return time.Second
}

// udpRateBits is iperf3's -b for the fixed-rate UDP test: iperf3 counts the payload (-l) bytes.
func (c *Config) udpRateBits() string {
	return strconv.FormatInt(int64(c.UDPRatePPS)*int64(c.UDPSize)*8, 10)
}

// Run measures every selected system. A system that fails is marked FAILED
// with its reason and the others are still measured; the returned error is
// only for the harness itself (bad config, missing tools, interruption).
// Namespaces and processes are removed before Run returns, in every case.
func Run(ctx context.Context, cfg Config) (*Results, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	netns.Sweep(NSPrefix)
	if err := EnsureTools(ctx, cfg.Progress); err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp("", "salvo-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	if cfg.CacheDir == "" {
		cfg.CacheDir = DefaultCacheDir()
	}

	res := &Results{Env: collectEnv(ctx, cfg.CommandLine), Config: cfg, Duration: cfg.Duration.String()}
	var systems []system
	for _, name := range KnownSystems { // fixed order, whatever the flag's order
		if !slices.Contains(cfg.Systems, name) {
			continue
		}
		var s system
		switch name {
		case SysBare:
			s = bareSystem{}
		case SysWireguardGo:
			s = &wgSystem{cacheDir: cfg.CacheDir}
		case SysOpenVPN:
			s = &openvpnSystem{}
		case SysSalvo:
			s = &salvoSystem{repoDir: cfg.RepoDir, sysName: SysSalvo}
		case SysSalvoRef:
			s = &salvoSystem{repoDir: cfg.RepoDir, sysName: SysSalvoRef, ref: cfg.Ref}
		case SysSalvo1Worker:
			s = &salvoSystem{repoDir: cfg.RepoDir, sysName: SysSalvo1Worker, serverExtra: "workers = 1"}
		case SysSalvoGuard:
			s = &salvoSystem{repoDir: cfg.RepoDir, sysName: SysSalvoGuard, clientExtra: `leak_guard = "on"`}
		case SysSalvoWgTun:
			s = &salvoSystem{repoDir: cfg.RepoDir, sysName: SysSalvoWgTun, env: []string{"SALVO_TUN_IMPL=wireguard"}}
		case SysSalvoBaseline:
			s = &salvoSystem{repoDir: cfg.RepoDir, sysName: SysSalvoBaseline, env: salvoBaselineEnv}
		}
		sr := &SystemResult{Name: name, Status: statusOK}
		res.Systems = append(res.Systems, sr)
		cfg.progressf("preparing %s", name)
		sr.Version, err = s.prepare(ctx, work)
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		if err != nil {
			sr.Status, sr.Error = statusFailed, err.Error()
			cfg.progressf("%s FAILED: %v", name, err)
		}
		systems = append(systems, s)
	}

	var plan float64
	for i, s := range systems {
		if res.Systems[i].Status == statusOK {
			plan += float64(cfg.Runs) * cfg.nominalRun(s.name())
		}
	}
	cfg.eta = newETAClock(plan, time.Now)

	// Runs are interleaved (run 1 of every system, then run 2...) rather than
	// grouped per system, so slow drift on a noisy machine spreads over all
	// systems instead of biasing whichever ran last. Each run also starts one
	// system further along, so no system always follows the same one (a
	// neighbour's leftovers, page cache and CPU frequency, move with it).
	for run := 1; run <= cfg.Runs; run++ {
		for k := range systems {
			i := (k + run - 1) % len(systems)
			s, sr := systems[i], res.Systems[i]
			if sr.Status != statusOK {
				continue
			}
			rr := &RunResult{Run: run}
			cfg.eta.begin(cfg.nominalRun(s.name()))
			failed := func() {
				cfg.eta.end(false)
				cfg.eta.drop(float64(cfg.Runs-run) * cfg.nominalRun(s.name()))
			}
			if !cfg.FaultsOnly && !cfg.FloodsOnly {
				cfg.progressf("[run %d/%d] %s: bringing up", run, cfg.Runs, s.name())
				rr, err = runOnce(ctx, &cfg, s, run, work)
				if err != nil && ctx.Err() == nil {
					// One flake (a daemon slow to come up, say) must not drop a system from every later
					// run: measure the run again once, on a fresh topology, and say so in the report.
					sr.Retried = append(sr.Retried, fmt.Sprintf("run %d: %v", run, err))
					cfg.progressf("[run %d/%d] %s failed (%v); measuring the run again", run, cfg.Runs, s.name(), err)
					rr, err = runOnce(ctx, &cfg, s, run, filepath.Join(work, "retry"))
				}
				if ctx.Err() != nil {
					return res, ctx.Err()
				}
				if err != nil {
					sr.Status, sr.Error = statusFailed, fmt.Sprintf("run %d: %v", run, err)
					failed()
					cfg.progressf("[run %d/%d] %s FAILED: %v", run, cfg.Runs, s.name(), err)
					continue
				}
			}
			if len(cfg.faultSpecs) > 0 && faultSystem(s.name()) {
				cfg.progressf("[run %d/%d] %s: bringing up through the fault relay", run, cfg.Runs, s.name())
				rr.Faults, err = runFaults(ctx, &cfg, s, run, work)
				if ctx.Err() != nil {
					return res, ctx.Err()
				}
				if err != nil {
					sr.Status, sr.Error = statusFailed, fmt.Sprintf("run %d, faults: %v", run, err)
					failed()
					cfg.progressf("[run %d/%d] %s FAILED under faults: %v", run, cfg.Runs, s.name(), err)
					continue
				}
			}
			if len(cfg.floodSpecs) > 0 && faultSystem(s.name()) {
				cfg.progressf("[run %d/%d] %s: bringing up beside an attacker", run, cfg.Runs, s.name())
				rr.Floods, err = runFloods(ctx, &cfg, s, run, work)
				if ctx.Err() != nil {
					return res, ctx.Err()
				}
				if err != nil {
					sr.Status, sr.Error = statusFailed, fmt.Sprintf("run %d, floods: %v", run, err)
					failed()
					cfg.progressf("[run %d/%d] %s FAILED under floods: %v", run, cfg.Runs, s.name(), err)
					continue
				}
			}
			cfg.eta.end(true)
			if (cfg.FaultsOnly || cfg.FloodsOnly) && len(rr.Faults) == 0 && len(rr.Floods) == 0 {
				continue // bare, in a faults- or floods-only run: nothing to measure
			}
			sr.Runs = append(sr.Runs, rr)
		}
	}
	for _, sr := range res.Systems {
		if sr.Status == statusOK {
			sr.Summary = summarize(sr.Runs)
			if len(cfg.faultSpecs) > 0 && faultSystem(sr.Name) {
				sr.FaultSummary = summarizeFaults(sr.Runs)
			}
			if len(cfg.floodSpecs) > 0 && faultSystem(sr.Name) {
				sr.FloodSummary = summarizeFloods(sr.Runs)
			}
		}
	}
	return res, nil
}

// aliveCheck returns a check that turns a tunnel process that died mid-test into an error naming it,
// rather than letting the next test fail obscurely.
func aliveCheck(ds []*daemon) func() error {
	return func() error {
		for _, d := range ds {
			if err := d.exited(); err != nil {
				return err
			}
		}
		return nil
	}
}

// freshTopology makes the work directory work/label for one run of a system and a fresh topology for
// it; the caller defers closeTopology.
func freshTopology(work, label string) (string, *Topology, error) {
	dir := filepath.Join(work, label)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", nil, err
	}
	topo, err := NewTopology()
	if err != nil {
		return "", nil, err
	}
	return dir, topo, nil
}

// closeTopology tears t down, reporting a failure in *err unless the run already failed.
func closeTopology(t *Topology, err *error) {
	if cerr := t.Close(); cerr != nil && *err == nil {
		*err = fmt.Errorf("teardown: %w", cerr)
	}
}

// runOnce brings a system up on a fresh topology, measures everything and
// tears it all down again.
func runOnce(ctx context.Context, cfg *Config, s system, run int, work string) (_ *RunResult, err error) {
	dir, topo, err := freshTopology(work, fmt.Sprintf("%s-run%d", s.name(), run))
	if err != nil {
		return nil, err
	}
	defer closeTopology(topo, &err)
	tun, err := s.up(ctx, topo, dir)
	if err != nil {
		return nil, fmt.Errorf("%s did not come up: %w", s.name(), err)
	}
	defer tun.close()
	// Prove the traffic really takes the system under test: A has no route to
	// the target other than the tunnel device (or the veth for bare).
	route, err := topo.A.Run("ip", "-o", "route", "get", tun.target())
	if err != nil {
		return nil, err
	}
	if !strings.Contains(route, " dev "+tun.dev()+" ") {
		return nil, fmt.Errorf("%s: route to %s does not use %s: %s", s.name(), tun.target(), tun.dev(), strings.TrimSpace(route))
	}
	for _, d := range tun.daemons() {
		if err := d.checkExe(); err != nil {
			return nil, err
		}
	}
	srv, err := iperfServer(ctx, topo.B, dir)
	if err != nil {
		return nil, err
	}
	defer srv.stop(time.Second)

	secs := int(cfg.Duration / time.Second)
	tgt := tun.target()
	rr := &RunResult{Run: run, Info: tun.info()}
	// p reports a finished measurement of nominal seconds.
	p := func(nominal float64, format string, args ...any) {
		cfg.eta.tick(nominal)
		cfg.progressf("[run %d/%d] %s: %s", run, cfg.Runs, s.name(), fmt.Sprintf(format, args...))
	}
	alive := aliveCheck(append(tun.daemons(), srv))
	if rr.TCP1, err = measureTCP(ctx, topo.A, tgt, secs, 1, "0"); err != nil {
		return nil, errors.Join(err, alive())
	}
	p(cfg.nominalTest(), "TCP 1 stream %.2f Gbit/s", rr.TCP1.Gbps)
	stopPSS := sampleLoadedPSS(tun.daemons())
	rr.TCPN, err = measureTCP(ctx, topo.A, tgt, secs, cfg.Streams, "0")
	loadedPSS := stopPSS()
	if err != nil {
		return nil, errors.Join(err, alive())
	}
	p(cfg.nominalTest(), "TCP %d streams %.2f Gbit/s", cfg.Streams, rr.TCPN.Gbps)
	if rr.UDP, err = measureUDP(ctx, topo.A, tgt, secs, cfg.UDPSize, "0"); err != nil {
		return nil, errors.Join(err, alive())
	}
	p(cfg.nominalTest(), "UDP %d B at max rate: %.0f pkt/s delivered of %.0f offered", cfg.UDPSize, rr.UDP.PPS, rr.UDP.OfferedPPS)
	if rr.UDPRate, err = measureUDP(ctx, topo.A, tgt, secs, cfg.UDPSize, cfg.udpRateBits()); err != nil {
		return nil, errors.Join(err, alive())
	}
	p(cfg.nominalTest(), "UDP %d B at %d pkt/s: %.0f pkt/s offered, %.2f%% lost", cfg.UDPSize, cfg.UDPRatePPS, rr.UDPRate.OfferedPPS, rr.UDPRate.LossPct)
	if rr.PingIdle, err = measurePing(ctx, topo.A, tgt, cfg.PingCount); err != nil {
		return nil, errors.Join(err, alive())
	}
	p(cfg.nominalPing(), "ping idle p50 %.3f ms p99 %.3f ms (%d/%d)", rr.PingIdle.P50ms, rr.PingIdle.P99ms, rr.PingIdle.Received, rr.PingIdle.Sent)
	if rr.PingLoaded, err = measureLoadedPing(ctx, topo.A, tgt, cfg.PingCount, cfg.loadRamp()); err != nil {
		return nil, errors.Join(err, alive())
	}
	p(cfg.nominalLoadedPing(), "ping loaded p50 %.3f ms p99 %.3f ms (%d/%d)", rr.PingLoaded.P50ms, rr.PingLoaded.P99ms, rr.PingLoaded.Received, rr.PingLoaded.Sent)
	if ds := tun.daemons(); len(ds) > 0 {
		if rr.CPU, err = measureCPU(ctx, topo.A, tgt, secs, cfg.CPURate, ds); err != nil {
			return nil, errors.Join(err, alive())
		}
		p(cfg.nominalTest(), "CPU %.2f s per GB at %s (%.2f Gbit/s moved)", rr.CPU.PerGB, cfg.CPURate, rr.CPU.Transfer.Gbps)
		if rr.Memory, err = measureMem(ds); err != nil {
			return nil, err
		}
		if !(loadedPSS > 0) {
			return nil, fmt.Errorf("%s: no PSS sample of the tunnel processes during the TCP test", s.name())
		}
		rr.Memory.LoadedPSSMiB = loadedPSS
		p(0, "peak RSS %.1f MiB, PSS under TCP load %.1f MiB", rr.Memory.TotalMiB, loadedPSS)
	}
	return rr, alive()
}

// Tools the harness runs, with the Debian package that provides each.
var tools = []struct{ bin, pkg string }{
	{"iperf3", "iperf3"}, {"wg", "wireguard-tools"}, {"openvpn", "openvpn"}, {"ping", "iputils-ping"},
	{"ip", "iproute2"}, {"ss", "iproute2"}, {"nsenter", "util-linux"}, {"unshare", "util-linux"},
	{"go", ""}, // needed to build salvo and wireguard-go; not installed for the user
}

// MissingTools lists the tools not on PATH, as "bin (package)".
func MissingTools() []string {
	var miss []string
	for _, t := range tools {
		if _, err := exec.LookPath(t.bin); err != nil {
			miss = append(miss, fmt.Sprintf("%s (%s)", t.bin, t.pkg))
		}
	}
	return miss
}

// EnsureTools installs the missing packages with apt-get (as root), and
// fails naming what is still missing afterwards.
func EnsureTools(ctx context.Context, progress io.Writer) error {
	var pkgs []string
	for _, t := range tools {
		if _, err := exec.LookPath(t.bin); err != nil && t.pkg != "" && !slices.Contains(pkgs, t.pkg) {
			pkgs = append(pkgs, t.pkg)
		}
	}
	if len(pkgs) > 0 {
		if _, err := exec.LookPath("apt-get"); err == nil && os.Geteuid() == 0 {
			if progress != nil {
				fmt.Fprintf(progress, "salvobench: installing %s with apt-get\n", strings.Join(pkgs, " "))
			}
			for _, args := range [][]string{{"update"}, append([]string{"install", "-y", "--no-install-recommends"}, pkgs...)} {
				c := exec.CommandContext(ctx, "apt-get", args...)
				c.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
				if out, err := c.CombinedOutput(); err != nil {
					return fmt.Errorf("apt-get %s: %w: %s", strings.Join(args, " "), err, tail(string(out), 800))
				}
			}
		}
	}
	if miss := MissingTools(); len(miss) > 0 {
		return fmt.Errorf("missing tools: %s", strings.Join(miss, ", "))
	}
	return nil
}

// DefaultCacheDir is where the pinned wireguard-go binary is kept between runs.
func DefaultCacheDir() string {
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "salvo-bench")
	}
	return filepath.Join(os.TempDir(), "salvo-bench-cache")
}

// FindRepoRoot returns the Salvo checkout containing dir (the directory
// holding go.mod for module github.com/salvovpn/salvo), or "".
func FindRepoRoot(dir string) string {
	for d := dir; ; d = filepath.Dir(d) {
		if b, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil {
			if strings.HasPrefix(strings.TrimSpace(string(b)), "module github.com/salvovpn/salvo") {
				return d
			}
			return ""
		}
		if filepath.Dir(d) == d {
			return ""
		}
	}
}

func collectEnv(ctx context.Context, cmdline string) Env {
	e := Env{Date: time.Now().UTC().Format(time.RFC3339), Cores: runtime.NumCPU(), CommandLine: cmdline,
		CPUModel: "unknown", Kernel: "unknown", GoVersion: runtime.Version(), Iperf3: "unknown"}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				e.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		e.Kernel = strings.TrimSpace(string(b))
	}
	// The toolchain that builds salvo and wireguard-go, not only the one that
	// built the harness.
	if out, err := exec.CommandContext(ctx, "go", "env", "GOVERSION").Output(); err == nil {
		e.GoVersion = strings.TrimSpace(string(out))
	}
	if out, err := exec.CommandContext(ctx, "iperf3", "--version").Output(); err == nil {
		e.Iperf3 = strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
	}
	return e
}

func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
