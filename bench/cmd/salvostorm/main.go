// Command salvostorm measures login storms: N real client engines log in to a real gateway at the same
// moment, and (with --restart) come back after the gateway is SIGKILLed and restarted.
//
//	go run ./bench/cmd/salvostorm [--clients 100] [--params default|cheap] [--restart] [--timeout 2m] [--json F]
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/salvovpn/salvo/bench"
	"github.com/salvovpn/salvo/engine/users"
	"github.com/salvovpn/salvo/internal/netns"
)

func main() {
	cfg := bench.StormConfig{Progress: os.Stderr}
	flag.IntVar(&cfg.Clients, "clients", 100, "clients logging in at once")
	params := flag.String("params", "default", `the users' argon2id parameters: "default" (64 MiB, t=2, what salvo user add uses) or "cheap" (256 KiB, t=1, for test users)`)
	flag.BoolVar(&cfg.Restart, "restart", false, "then SIGKILL and restart the gateway and measure how long the clients take to come back")
	flag.DurationVar(&cfg.Timeout, "timeout", 2*time.Minute, "for everybody to get in")
	jsonOut := flag.String("json", "", "write the result as JSON to this file")
	flag.Parse()
	switch *params {
	case "default":
		cfg.Params = users.DefaultParams
	case "cheap":
		cfg.Params = users.Params{Memory: 256, Time: 1, Threads: 1}
	default:
		fmt.Fprintf(os.Stderr, "salvostorm: --params %q: want default or cheap\n", *params)
		os.Exit(2)
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "salvostorm: needs root (network namespaces, TUN)")
		os.Exit(2)
	}
	wd, _ := os.Getwd()
	cfg.RepoDir = wd
	netns.Sweep(bench.NSPrefix)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := bench.RunStorm(ctx, cfg)
	fmt.Printf("clients %d, argon2id %s (%.0f ms a hash here; the gateway can hash %.1f/s)\n", res.Clients, res.Params, res.HashMillis, res.Capacity)
	fmt.Printf("all logged in after %.1f s: %.1f logins/s, %d password hashes, %d busy answers, %d queue drops, %d duplicate addresses\n",
		res.AllInSeconds, res.LoginsPerSec, res.Hashes, res.Busy, res.QueueDrops, res.Duplicates)
	if cfg.Restart {
		fmt.Printf("after SIGKILL and restart: all back after %.1f s, %d password hashes\n", res.BackSeconds, res.BackHashes)
	}
	if *jsonOut != "" {
		b, _ := json.MarshalIndent(res, "", "  ")
		_ = os.WriteFile(*jsonOut, b, 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "salvostorm:", err)
		os.Exit(1)
	}
	if res.Duplicates != 0 {
		fmt.Fprintln(os.Stderr, "salvostorm: an address was handed out twice")
		os.Exit(1)
	}
}
