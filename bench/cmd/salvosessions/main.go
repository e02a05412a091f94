// Command salvosessions measures a Salvo gateway with many concurrent sessions: gateway packets per second
// and cross-worker packets per second, with the eBPF classifier on and off, for sessions that all share one
// source address:port (many clients behind one NAT port) and for one socket per session.
//
//	go run ./bench/cmd/salvosessions [--sessions 64] [--workers 2] [--duration 5s] [--ebpf off,on] [--modes one-tuple,per-session]
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/salvovpn/salvo/bench"
	"github.com/salvovpn/salvo/internal/netns"
)

func main() {
	cfg := bench.SessionsConfig{Progress: os.Stderr}
	flag.IntVar(&cfg.Sessions, "sessions", 64, "concurrent sessions")
	flag.IntVar(&cfg.Workers, "workers", 2, "gateway workers")
	flag.DurationVar(&cfg.Duration, "duration", 5*time.Second, "traffic time per measurement")
	eb := flag.String("ebpf", "off,on", "gateway ebpf settings to compare")
	modes := flag.String("modes", "one-tuple,per-session", "one-tuple, per-session")
	jsonOut := flag.String("json", "", "write the results as JSON to this file")
	flag.Parse()
	cfg.EBPF = strings.Split(*eb, ",")
	cfg.Modes = strings.Split(*modes, ",")
	wd, _ := os.Getwd()
	cfg.RepoDir = wd
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "salvosessions: needs root (network namespaces, TUN)")
		os.Exit(2)
	}
	netns.Sweep(bench.NSPrefix)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := bench.RunSessions(ctx, cfg)
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "EBPF\tMODE\tSESSIONS\tWORKERS\tGATEWAY PKT/S\tCROSS-WORKER PKT/S\tCROSS-WORKER SHARE")
	for _, r := range res {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%.0f\t%.0f\t%.1f%%\n", r.EBPF, r.Mode, r.Sessions, r.Workers, r.PacketsPerSec,
			r.CrossWorkerPerSec, 100*r.CrossWorkerShare)
	}
	tw.Flush()
	if *jsonOut != "" {
		b, _ := json.MarshalIndent(res, "", "  ")
		_ = os.WriteFile(*jsonOut, b, 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "salvosessions:", err)
		os.Exit(1)
	}
}
