// Command salvobench measures Salvo against wireguard-go, OpenVPN 2.6 and the
// bare veth link on one two-namespace topology, in one run. Run it as root
// from the Salvo checkout:
//
//	go run ./bench/cmd/salvobench [--systems bare,wireguard-go,openvpn,salvo] [--short] [--json F] [--markdown F]
//	go run ./bench/cmd/salvobench --systems wireguard-go,salvo --faults loss1,reorder10,blackout2 [--faults-only]
//	go run ./bench/cmd/salvobench --plot-only --json bench-results.json --plot bench-results.svg
//
// It prints progress on stderr and the table on stdout. Exit status: 0 all
// selected systems measured, 1 a system FAILED or the harness failed,
// 2 bad arguments, 130 interrupted (after cleaning up).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/salvovpn/salvo/bench"
)

func main() {
	os.Exit(run())
}

func run() int {
	cfg := bench.DefaultConfig()
	fs := flag.NewFlagSet("salvobench", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: salvobench [flags]\n\nBenchmarks bare veth, wireguard-go, OpenVPN and salvo between two network namespaces (needs root).\n\n")
		fs.PrintDefaults()
	}
	systems := fs.String("systems", strings.Join(cfg.Systems, ","), "comma-separated systems to measure: bare, wireguard-go, openvpn (OpenVPN 2.6, static key, no DCO), salvo-baseline (salvo with UDP GSO/GRO off), salvo-wgtun (salvo on wireguard-go's tun code), salvo-1worker (gateway with one worker), salvo-ref (salvo at --ref REV), salvo")
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "length of each iperf3 test (whole seconds)")
	fs.IntVar(&cfg.Runs, "runs", cfg.Runs, "repetitions of every measurement (median shown)")
	fs.IntVar(&cfg.Streams, "streams", cfg.Streams, "parallel TCP streams for the multi-stream test")
	fs.IntVar(&cfg.UDPSize, "udp-size", cfg.UDPSize, "UDP payload bytes for the small-packet test")
	fs.IntVar(&cfg.UDPRatePPS, "udp-rate-pps", cfg.UDPRatePPS, "packet rate of the fixed-rate small-packet UDP test, whose loss is reported (iperf3 -b is computed from it and --udp-size)")
	fs.IntVar(&cfg.PingCount, "ping-count", cfg.PingCount, "pings per latency test (10 ms apart)")
	fs.StringVar(&cfg.CPURate, "cpu-rate", cfg.CPURate, "iperf3 -b rate of the CPU-cost transfer")
	fs.StringVar(&cfg.Ref, "ref", "", "also measure salvo built from this git revision (system salvo-ref), for a before/after in one run")
	faults := fs.String("faults", "", "also measure TCP throughput (1 stream) of every system but bare through a fault relay, each fault against its no-fault baseline: comma-separated "+bench.FaultForms+"; e.g. loss1,loss5,reorder10,dup5,blackout2")
	fs.BoolVar(&cfg.FaultsOnly, "faults-only", false, "with --faults: skip the main measurements")
	floods := fs.String("floods", "", "also measure the victim's TCP throughput under floods of these kinds: junk, junk-0x01, unknown-index, login")
	floodRates := fs.String("flood-rates", "max,20000", "datagrams per second of each flood (max: as fast as the generator goes)")
	fs.BoolVar(&cfg.FloodsOnly, "floods-only", false, "with --floods: skip the main measurements")
	short := fs.Bool("short", false, "smoke run in seconds: duration 1s, 1 run, 50 pings (overrides those flags)")
	jsonOut := fs.String("json", "", "write raw results as JSON to this file")
	mdOut := fs.String("markdown", "", "write the report as a Markdown section to this file")
	plotOut := fs.String("plot", "", "write an SVG plot of the results (a panel per test: medians, min-max whiskers) to this file")
	plotOnly := fs.Bool("plot-only", false, "measure nothing: read --json's file and write --plot from it")
	fs.StringVar(&cfg.CacheDir, "cache-dir", bench.DefaultCacheDir(), "where the pinned wireguard-go binary is built")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "salvobench: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if *plotOnly {
		return replot(*jsonOut, *plotOut)
	}
	cfg.Systems = nil
	for _, s := range strings.Split(*systems, ",") {
		if s = strings.TrimSpace(s); s != "" {
			cfg.Systems = append(cfg.Systems, s)
		}
	}
	for _, f := range strings.Split(*faults, ",") {
		if f = strings.TrimSpace(f); f != "" {
			cfg.Faults = append(cfg.Faults, f)
		}
	}
	if *floods != "" {
		cfg.Floods = strings.Split(*floods, ",")
		cfg.FloodRates = strings.Split(*floodRates, ",")
	}
	if cfg.Ref != "" && !slices.Contains(cfg.Systems, bench.SysSalvoRef) {
		cfg.Systems = append(cfg.Systems, bench.SysSalvoRef)
	}
	if *short {
		cfg.ApplyShort()
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintln(os.Stderr, "salvobench:", err)
		return 2
	}
	cfg.Progress = os.Stderr
	cfg.CommandLine = shellQuote(os.Args)
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "salvobench: needs root (network namespaces, TUN devices)")
		return 1
	}
	wd, err := os.Getwd()
	if err != nil {
		fmt.Fprintln(os.Stderr, "salvobench:", err)
		return 1
	}
	cfg.RepoDir = bench.FindRepoRoot(wd)

	// The context is cancelled on SIGINT/SIGTERM; every child runs under it
	// and Run removes namespaces and processes before returning. Further
	// signals stay caught until then so cleanup is not cut short.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	res, err := bench.Run(ctx, cfg)
	if ctx.Err() != nil {
		fmt.Fprintln(os.Stderr, "salvobench: interrupted; namespaces and processes removed")
		return 130
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "salvobench:", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "salvobench: finished in %v\n", time.Since(start).Round(time.Second))
	fmt.Print(res.Table())

	code := 0
	if *jsonOut != "" {
		b, err := json.MarshalIndent(res, "", "  ")
		if err == nil {
			err = os.WriteFile(*jsonOut, append(b, '\n'), 0o644)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "salvobench: write JSON:", err)
			code = 1
		}
	}
	if *mdOut != "" {
		if err := os.WriteFile(*mdOut, []byte(res.Markdown()), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "salvobench: write Markdown:", err)
			code = 1
		}
	}
	if *plotOut != "" {
		if err := res.WritePlot(*plotOut); err != nil {
			fmt.Fprintln(os.Stderr, "salvobench: write plot:", err)
			code = 1
		}
	}
	if failed := res.Failed(); len(failed) > 0 {
		for _, s := range failed {
			fmt.Fprintf(os.Stderr, "salvobench: %s FAILED\n", s.Name)
		}
		code = 1
	}
	return code
}

// replot is --plot-only: the plot of results measured before, without root or a run.
func replot(jsonPath, plotPath string) int {
	if jsonPath == "" || plotPath == "" {
		fmt.Fprintln(os.Stderr, "salvobench: --plot-only needs --json FILE (to read) and --plot FILE (to write)")
		return 2
	}
	res, err := bench.ReadResults(jsonPath)
	if err == nil {
		err = res.WritePlot(plotPath)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "salvobench:", err)
		return 1
	}
	return 0
}

// shellQuote renders argv so it can be pasted back into a shell.
func shellQuote(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		if a != "" && !strings.ContainsAny(a, " \t\n'\"\\$`;&|<>()*?[]#~!{}") {
			out[i] = a
			continue
		}
		out[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(out, " ")
}
