package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"runtime"
	"strings"

	"github.com/salvovpn/salvo/config"
	"github.com/salvovpn/salvo/engine"
	"github.com/salvovpn/salvo/engine/control"
	"github.com/salvovpn/salvo/engine/ippool"
	"github.com/salvovpn/salvo/metrics"
	"github.com/salvovpn/salvo/netcfg"
	"github.com/salvovpn/salvo/offload"
	"github.com/salvovpn/salvo/protocol/handshake"
)

// ClaimsDir holds the lock files by which Salvo processes claim per-namespace resources (TUN names, routing
// tables, fwmarks) and share IP forwarding (netcfg.Claim, netcfg.EnableForwarding). It is one fixed place
// for every instance, whatever their configs, so that they see each other; /run is cleared at boot, as the
// claims should be.
const ClaimsDir = "/run/salvo/claims"

// ServerOptions are what RunServer needs besides the configuration.
type ServerOptions struct {
	// Level is the logger's level, which a reload sets from log_level (nil: the level stays).
	Level *slog.LevelVar
	// Load rereads the configuration for a reload (nil: config.LoadServer of the file cfg came from). The
	// CLI's wraps it to apply its command-line overrides again.
	Load func() (*config.Server, error)
}

// RunServer runs a gateway from its configuration until ctx ends, then removes everything it set up.
// SIGHUP and POST /reload on the control socket reload the configuration and the users file.
func RunServer(ctx context.Context, cfg *config.Server, log *slog.Logger, opts ServerOptions) error {
	return needsNetAdmin(runServer(ctx, cfg, log, opts))
}

func runServer(ctx context.Context, cfg *config.Server, log *slog.Logger, opts ServerOptions) (err error) {
	sw, err := readSwitches()
	if err != nil {
		return err
	}
	in, err := loadServerInputs(cfg, log)
	if err != nil {
		return err
	}
	defer in.close() // last: after the store's goroutines have stopped
	static := in.static
	var undos []func() error
	defer func() {
		for i := len(undos) - 1; i >= 0; i-- {
			if uerr := undos[i](); uerr != nil {
				log.Warn("cleanup", "err", uerr)
			}
		}
	}()

	// One gateway per TUN name and namespace: a second one fails here, before it touches anything.
	release, err := netcfg.Claim(ClaimsDir, "tun-"+cfg.TunName)
	if err != nil {
		return err
	}
	undos = append(undos, release)
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return fmt.Errorf("state_dir: %w", err)
	}
	sc := engine.ServerConfig{Static: static, Users: in.auth, ClientToClient: cfg.ClientToClient,
		MaxSessionsPerUser: cfg.MaxSessionsPerUser, MaxSessionAge: cfg.MaxSessionAge.Duration,
		Limits: loginLimits(cfg), StateDir: cfg.StateDir, Tickets: in.tickets, BatchSize: cfg.BatchSize, Log: log}
	var link *storeLink
	if in.pg != nil {
		link = &storeLink{in: in, log: log}
		link.configure(&sc)
	}
	var tunAddrs []netip.Prefix
	sc.Pool4, sc.Pool6 = in.pool4, in.pool6
	for _, p := range []*ippool.Pool{sc.Pool4, sc.Pool6} {
		if p != nil {
			tunAddrs = append(tunAddrs, netip.PrefixFrom(p.Gateway(), p.Prefix().Bits()))
		}
	}
	sc.Settings = handshake.Settings{Routes: cfg.RoutePrefixes, ExcludedRoutes: cfg.ExcludedRoutePrefixes,
		DNS: cfg.DNSAddrs, SearchDomains: cfg.SearchDomains, MTU: uint16(cfg.MTU), Keepalive: cfg.Keepalive.Duration}

	sc.Workers = cfg.Workers
	if sc.Workers == 0 {
		sc.Workers = runtime.GOMAXPROCS(0)
	}
	// One TUN queue per worker: the kernel spreads flows over the queues and sends a flow's packets to
	// the queue that last wrote it, so each worker mostly sees its own flows in both directions.
	queues, err := offload.OpenQueues(cfg.TunName, cfg.MTU, sc.Workers, sw.tun)
	if err != nil {
		return err
	}
	undos = append(undos, func() error {
		for _, q := range queues {
			q.Close()
		}
		return nil
	})
	if err := netcfg.ConfigureLink(cfg.TunName, cfg.MTU, tunAddrs); err != nil {
		return err
	}
	undo, err := netcfg.EnableForwarding(ClaimsDir, cfg.Pool4.IsValid(), cfg.Pool6.IsValid())
	if err != nil {
		return err
	}
	undos = append(undos, undo)
	if cfg.NAT {
		var srcs []netip.Prefix
		if cfg.Pool4.IsValid() {
			srcs = append(srcs, cfg.Pool4)
		}
		if cfg.Pool6.IsValid() {
			srcs = append(srcs, cfg.Pool6)
		}
		undo, err := netcfg.EnableNAT(netcfg.NAT{Sources: srcs, OutInterface: cfg.NATInterface, TunDev: cfg.TunName})
		if err != nil {
			return err
		}
		undos = append(undos, undo)
	}
	// One socket per worker and listen address; the workers of one address form a SO_REUSEPORT group. With
	// the classifier, each group gets a handshake socket too, bound last (the classifier steers login
	// requests to it by bind position, so a flood of them never shares a queue with the workers' data).
	// groups[g] is listen address g's reuseport group in bind order: its workers' sockets, then its
	// handshake socket if any. conns lists the workers' sockets of every group in order, which is the
	// layout the engine expects (socket g*workers + w).
	var conns, hsConns []engine.PacketConn
	var groups [][]engine.PacketConn
	closeAll := func() {
		for _, c := range append(conns, hsConns...) {
			c.Close()
		}
	}
	for _, addr := range cfg.ListenAddrs {
		var group []engine.PacketConn
		for w := range sc.Workers {
			c, err := listenUDP(sw, addr.String(), 0, cfg.BatchSize, true, w)
			if err != nil {
				closeAll()
				return err
			}
			conns, group = append(conns, c), append(group, c)
		}
		if cfg.EBPF != "off" {
			c, err := listenHandshake(addr.String())
			if err != nil {
				closeAll()
				return err
			}
			hsConns, group = append(hsConns, c), append(group, c)
		}
		groups = append(groups, group)
	}
	cls, err := attachClassifier(cfg, sc.Workers, groups, queues, log)
	if err != nil {
		closeAll()
		return err
	}
	if cls == nil {
		// No classifier to steer to them: without it the kernel's hash would send data there too.
		for _, c := range hsConns {
			c.Close()
		}
		hsConns = nil
	}
	sc.HandshakeConns = hsConns
	if cls != nil {
		undos = append(undos, cls.Close)
		sc.Watcher = cls
		if cfg.EBPFTunSteering && len(queues) > 1 {
			sc.Steering = cls
		}
		sc.KernelStatus = func() any {
			st, err := cls.Stats()
			if err != nil {
				return map[string]string{"error": err.Error()}
			}
			return st
		}
	}
	sc.SocketStats = func() engine.SocketStats { return socketStats(conns) }
	srv, err := engine.NewServer(sc, queues, conns)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if link != nil {
		wait := link.run(srv, func() { reserveFixed(in.auth, sc.Pool4, sc.Pool6, log) })
		defer wait()
	}
	rl := &reloader{running: cfg, load: opts.Load, srv: srv, store: in.store, command: in.command, followsStore: link != nil,
		pool4: sc.Pool4, pool6: sc.Pool6, level: opts.Level, log: log}
	if rl.load == nil {
		rl.load = func() (*config.Server, error) { return config.LoadServer(cfg.Path) }
	}
	ctlErr := make(chan error, 1)
	go func() { ctlErr <- control.Serve(ctx, cfg.ControlSocket, rl.api()) }()
	go rl.onHUP(ctx.Done())
	if cfg.MetricsListen != "" {
		wait, err := metrics.Serve(ctx, cfg.MetricsListen, metrics.Registry(srv, cfg.MetricsPerUser))
		if err != nil {
			return fmt.Errorf("metrics_listen: %w", err)
		}
		defer func() {
			cancel() // before waiting: the gateway may stop on an error with ctx still live
			if err := wait(); err != nil {
				log.Warn("metrics server", "err", err)
			}
		}()
	}
	var listen []string
	for i, c := range conns {
		if i%sc.Workers == 0 {
			listen = append(listen, c.LocalAddr().String())
		}
	}
	log.Info("gateway up", "listen", strings.Join(listen, ","), "tun", cfg.TunName, "workers", sc.Workers, "auth", cfg.Auth, "public_key", static.Public.String(),
		"ipv4_pool", cfg.Pool4, "ipv6_pool", cfg.Pool6, "nat", cfg.NAT, "client_to_client", cfg.ClientToClient)
	runErr := make(chan error, 1)
	go func() { runErr <- srv.Run(ctx) }()
	select {
	case err = <-runErr:
	case err = <-ctlErr:
		cancel()
		<-runErr
	}
	log.Info("gateway stopped")
	return err
}
