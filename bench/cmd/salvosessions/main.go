// Command salvosessions measures a Salvo gateway with many concurrent sessions (10,000 by default, over
// users of at most 1000 sessions each): the time to log them all in, the gateway's RSS per session, the CPU
// cost of rekeying at the normal cadence, and, with every session sending, gateway packets per second,
// cross-worker packets per second and the gateway's CPU-ns per packet and per byte; for 1, 2 and one
// worker per CPU, with the eBPF classifier on and off, for sessions that all share one source address:port
// (many clients behind one NAT port) and for one socket per session.
//
//	go run ./bench/cmd/salvosessions [--sessions 10000] [--params cheap|default] [--rekey-window 10s] [--workers 1,2,0] [--size 64] [--duration 5s] [--ebpf off,on] [--modes one-tuple,per-session]
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
	"github.com/salvovpn/salvo/engine/users"
	"github.com/salvovpn/salvo/internal/netns"
	"github.com/salvovpn/salvo/protocol"
)

func main() {
	cfg := bench.SessionsConfig{Progress: os.Stderr}
	flag.IntVar(&cfg.Sessions, "sessions", 10000, "concurrent sessions, a user per 1000")
	params := flag.String("params", "cheap", `the users' argon2id parameters: "cheap" (256 KiB, t=1) or "default" (64 MiB, t=2, what salvo user add uses; about 10 logins/s)`)
	flag.DurationVar(&cfg.RekeyWindow, "rekey-window", 10*time.Second, "how long to measure rekeying at the normal cadence (and idling before it)")
	workers := flag.String("workers", "1,2,0", "gateway worker counts to compare (0 = one per CPU)")
	flag.IntVar(&cfg.Size, "size", 64, "UDP payload bytes of each inner packet (1400 for the per-byte cost of full-size packets)")
	flag.DurationVar(&cfg.Duration, "duration", 5*time.Second, "traffic time per measurement")
	eb := flag.String("ebpf", "off,on", "gateway ebpf settings to compare")
	modes := flag.String("modes", "one-tuple,per-session", "one-tuple, per-session")
	jsonOut := flag.String("json", "", "write the results as JSON to this file")
	flag.Parse()
	switch *params {
	case "cheap":
		cfg.Params = users.Params{Memory: 256, Time: 1, Threads: 1}
	case "default":
		cfg.Params = users.DefaultParams
	default:
		fmt.Fprintf(os.Stderr, "salvosessions: --params %q: want cheap or default\n", *params)
		os.Exit(2)
	}
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
	fmt.Fprintln(tw, "WORKERS\tEBPF\tMODE\tSESSIONS\tUSERS\tLOGIN S\tLOGINS/S\tIN FLIGHT\tRSS KIB BEFORE\tRSS KIB AFTER\tKIB/SESSION\tREKEYS/S\tIDLE CPU-S/S\tREKEY CPU-S/S\tCPU-MS/REKEY")
	for _, r := range res {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%.1f\t%.0f\t%d\t%d\t%d\t%.1f\t%.1f\t%.3f\t%.3f\t%.2f\n", r.WorkersLabel(), r.EBPF, r.Mode, r.Sessions,
			r.Users, r.LoginSeconds, r.LoginsPerSec, r.LoginsInFlight, r.RSSBeforeKiB, r.RSSAfterKiB, r.RSSPerSessionKiB, r.RekeysPerSec,
			r.IdleCPUPerSec, r.RekeyCPUPerSec, r.RekeyCPUMillisEach)
	}
	tw.Flush()
	fmt.Println()
	tw = tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "WORKERS\tEBPF\tMODE\tSESSIONS\tSENDING\tPACKET B\tGATEWAY PKT/S\tCROSS-WORKER PKT/S\tCROSS-WORKER SHARE\tCPU-NS/PKT\tCPU-NS/BYTE")
	for _, r := range res {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%.0f\t%.0f\t%.1f%%\t%.0f\t%.2f\n", r.WorkersLabel(), r.EBPF, r.Mode, r.Sessions,
			r.SendingSessions, r.PacketBytes, r.PacketsPerSec, r.CrossWorkerPerSec, 100*r.CrossWorkerShare, r.CPUNsPerPacket, r.CPUNsPerByte)
	}
	tw.Flush()
	fmt.Println()
	tw = tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "WORKERS\tEBPF\tMODE\tSESSIONS\tUP AFTER KILL S\tALL BACK S\tALL BACK AFTER KILL S\tPASSWORD HASHES\tTICKET LOGINS")
	for _, r := range res {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%.1f\t%.1f\t%.1f\t%d\t%d\n", r.WorkersLabel(), r.EBPF, r.Mode, r.Sessions,
			r.RestartUpSeconds, r.ReturnSeconds, r.ReturnAfterKillSeconds, r.ReturnPasswordHashes, r.ReturnTicketLogins)
	}
	tw.Flush()
	fmt.Printf("Users' argon2id: %s (the hashing budget counts argon2 cost: cheap users are not throttled like real ones).\n", bench.ParamsLabel(cfg.Params))
	fmt.Printf("Rekeys: every session in turn at the rate of all rekeying once per %s, for %s; REKEY CPU-S/S is the gateway's CPU above its idle CPU of the %s before.\n",
		protocol.RekeyAfterTime, cfg.RekeyWindow, cfg.RekeyWindow)
	fmt.Println("KIB/SESSION: the gateway's VmRSS growth over the logins, per session (Go heap slack included).")
	fmt.Println("CPU-ns: the gateway process's utime+stime over the inner packets and bytes its sessions received.")
	fmt.Println("Return: the gateway is SIGKILLed and started again on its state directory; each session tries a resume")
	fmt.Println("(refused: the session is gone) and comes back with its session ticket, as a client does, in the same")
	fmt.Println("number of flights as its logins. PASSWORD HASHES is what the restarted gateway hashed.")
	if *jsonOut != "" {
		b, _ := json.MarshalIndent(res, "", "  ")
		_ = os.WriteFile(*jsonOut, b, 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "salvosessions:", err)
		os.Exit(1)
	}
}
