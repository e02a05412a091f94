// Command salvosessions measures a Salvo gateway with many concurrent sessions: gateway packets per second,
// cross-worker packets per second and the gateway's CPU-ns per packet and per byte, for 1, 2 and one worker
// per CPU, with the eBPF classifier on and off, for sessions that all share one source address:port (many
// clients behind one NAT port) and for one socket per session.
//
//	go run ./bench/cmd/salvosessions [--sessions 64] [--workers 1,2,0] [--size 64] [--duration 5s] [--ebpf off,on] [--modes one-tuple,per-session]
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
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
	workers := flag.String("workers", "1,2,0", "gateway worker counts to compare (0 = one per CPU)")
	flag.IntVar(&cfg.Size, "size", 64, "UDP payload bytes of each inner packet (1400 for the per-byte cost of full-size packets)")
	flag.DurationVar(&cfg.Duration, "duration", 5*time.Second, "traffic time per measurement")
	eb := flag.String("ebpf", "off,on", "gateway ebpf settings to compare")
	modes := flag.String("modes", "one-tuple,per-session", "one-tuple, per-session")
	jsonOut := flag.String("json", "", "write the results as JSON to this file")
	flag.Parse()
	cfg.EBPF = strings.Split(*eb, ",")
	cfg.Modes = strings.Split(*modes, ",")
	for _, w := range strings.Split(*workers, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(w))
		if err != nil || n < 0 {
			fmt.Fprintf(os.Stderr, "salvosessions: --workers %q: want worker counts, 0 for one per CPU\n", *workers)
			os.Exit(2)
		}
		cfg.Workers = append(cfg.Workers, n)
	}
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
	fmt.Fprintln(tw, "WORKERS\tEBPF\tMODE\tSESSIONS\tPACKET B\tGATEWAY PKT/S\tCROSS-WORKER PKT/S\tCROSS-WORKER SHARE\tCPU-NS/PKT\tCPU-NS/BYTE")
	for _, r := range res {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%.0f\t%.0f\t%.1f%%\t%.0f\t%.2f\n", r.WorkersLabel(), r.EBPF, r.Mode, r.Sessions,
			r.PacketBytes, r.PacketsPerSec, r.CrossWorkerPerSec, 100*r.CrossWorkerShare, r.CPUNsPerPacket, r.CPUNsPerByte)
	}
	tw.Flush()
	fmt.Println("CPU-ns: the gateway process's utime+stime over the inner packets and bytes its sessions received.")
	if *jsonOut != "" {
		b, _ := json.MarshalIndent(res, "", "  ")
		_ = os.WriteFile(*jsonOut, b, 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "salvosessions:", err)
		os.Exit(1)
	}
}
