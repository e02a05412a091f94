package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/salvovpn/salvo/config"
	"github.com/salvovpn/salvo/engine"
	"github.com/salvovpn/salvo/engine/control"
	"github.com/salvovpn/salvo/netcfg"
	"github.com/salvovpn/salvo/offload"
	"github.com/salvovpn/salvo/protocol"
	"github.com/salvovpn/salvo/protocol/handshake"
	"golang.zx2c4.com/wireguard/tun"
)

// RunClient logs in to the gateway of cfg and runs the tunnel until ctx ends.
func RunClient(ctx context.Context, cfg *config.Client, password []byte, log *slog.Logger) error {
	return needsNetAdmin(runClient(ctx, cfg, password, log))
}

func runClient(ctx context.Context, cfg *config.Client, password []byte, log *slog.Logger) error {
	sw, err := readSwitches()
	if err != nil {
		return err
	}
	if err := checkServerKey(cfg); err != nil {
		return err
	}
	serverPub, err := handshake.ParseKey(cfg.ServerPublicKey)
	if err != nil {
		return err
	}
	resolver, err := newGatewayResolver(cfg.Server, cfg.FwMark)
	if err != nil {
		return err
	}
	addr, err := resolver.Resolve(ctx)
	if err != nil {
		return err
	}
	fallbacks, err := fallbackGateways(ctx, cfg, addr, log)
	if err != nil {
		return err
	}
	// Claim what this client's routing is made of, so that a second client with an overlapping config fails
	// here before it touches anything; holding the claims, what is found under them is a crashed earlier
	// run's and ours to remove.
	release, err := netcfg.Claim(ClaimsDir, clientClaims(cfg)...)
	if err != nil {
		return err
	}
	defer func() {
		if err := release(); err != nil {
			log.Warn("cleanup", "err", err)
		}
	}()
	if err := netcfg.CleanupStale(clientRouting(cfg)); err != nil {
		log.Warn("removing leftovers of an earlier run", "err", err)
	}
	staleGuard, err := takeOverStaleGuard(cfg, log)
	if err != nil {
		return err
	}
	local := "0.0.0.0:0"
	if addr.Addr().Is6() {
		local = "[::]:0"
	}
	conn, err := listenUDP(sw, local, cfg.FwMark, cfg.BatchSize, false, -1)
	if err != nil {
		return err
	}
	var cl *engine.Client
	setup := &clientSystem{cfg: cfg, log: log, staleGuard: staleGuard, gateway: func() netip.Addr { return cl.ServerAddr().Addr() }}
	defer setup.Close()
	var resolve func(context.Context) (netip.AddrPort, error)
	if _, err := netip.ParseAddr(cfg.ServerHost); err != nil {
		resolve = resolver.Resolve
	}
	cl = engine.NewClient(engine.ClientConfig{
		Server: cfg.Server, ServerAddr: addr, Resolve: resolve, Fallbacks: fallbacks, LeakGuard: setup.GuardStatus,
		Handshake: handshake.ClientConfig{ServerPublic: serverPub, Login: cfg.Username, Password: string(password)},
		OpenTUN: func(mtu int) (tun.Device, error) {
			if mtu == 0 {
				mtu = protocol.DefaultMTU // the gateway pushed none
			}
			return offload.Open(cfg.TunName, mtu, sw.tun)
		},
		Setup: setup, Log: log, RekeyAfter: sw.rekeyAfter, BatchSize: cfg.BatchSize,
	}, conn)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		if err := control.Serve(ctx, cfg.ControlSocket, cl.API()); err != nil {
			log.Warn("status socket unavailable", "err", err)
		}
	}()
	log.Info("connecting", "server", cfg.Server, "address", addr, "user", cfg.Username)
	err = cl.Run(ctx)
	var le *engine.LoginError
	if errors.As(err, &le) {
		return err
	}
	if err != nil {
		return err
	}
	log.Info("client stopped; tunnel removed")
	return nil
}

// fallbackGateways resolves cfg's fallback_servers in the family of first (the client's one socket reaches
// one family). A literal address of the other family is a configuration error; a name that does not
// resolve now is looked up again when the client moves to it.
func fallbackGateways(ctx context.Context, cfg *config.Client, first netip.AddrPort, log *slog.Logger) ([]engine.Gateway, error) {
	var out []engine.Gateway
	for _, s := range cfg.FallbackServers {
		r, err := newGatewayResolver(s, cfg.FwMark)
		if err != nil {
			return nil, config.KeyError(cfg.Path, "fallback_servers", err)
		}
		r.sameFamilyAs(first)
		gw := engine.Gateway{Name: s, Resolve: r.Resolve}
		if gw.Addr, err = r.Resolve(ctx); err != nil {
			if _, literal := netip.ParseAddrPort(s); literal == nil {
				return nil, config.KeyError(cfg.Path, "fallback_servers", err)
			}
			log.Warn("fallback gateway does not resolve now; it is looked up again when needed", "server", s, "err", err)
		}
		out = append(out, gw)
	}
	return out, nil
}

// takeOverStaleGuard deals with a leak guard an earlier run left (the kill switch after a crash): with the
// guard off it is lifted now; otherwise it keeps blocking until this run's guard replaces it, and the
// caller is told it is there.
func takeOverStaleGuard(cfg *config.Client, log *slog.Logger) (stale bool, err error) {
	installed, err := netcfg.LeakGuardInstalled(cfg.TunName)
	if err != nil || !installed {
		return false, err
	}
	if cfg.LeakGuard == "off" {
		if err := netcfg.RemoveLeakGuard(cfg.TunName); err != nil {
			return false, err
		}
		log.Info("lifted the leak guard an earlier run left (leak_guard = \"off\")", "dev", cfg.TunName)
		return false, nil
	}
	log.Warn("a leak guard an earlier run left blocks traffic outside the tunnel until this client is connected (kill switch)",
		"dev", cfg.TunName)
	return true, nil
}

// ClientDown removes what a client with configuration cfg left behind after a crash: the leak guard that
// the kill switch keeps, and the policy rules. It refuses while that client runs. It reports whether a
// guard was lifted.
func ClientDown(cfg *config.Client) (guardLifted bool, err error) {
	release, err := netcfg.Claim(ClaimsDir, clientClaims(cfg)...)
	if err != nil {
		return false, err
	}
	defer func() { err = errors.Join(err, release()) }()
	installed, err := netcfg.LeakGuardInstalled(cfg.TunName)
	if err != nil {
		return false, err
	}
	if installed {
		if err := netcfg.RemoveLeakGuard(cfg.TunName); err != nil {
			return false, err
		}
	}
	return installed, netcfg.CleanupStale(clientRouting(cfg))
}

// clientClaims are what a client's routing is made of (see netcfg.Claim): two clients must not share any.
func clientClaims(cfg *config.Client) []string {
	return []string{"tun-" + cfg.TunName, fmt.Sprintf("table-%d", cfg.RouteTable), fmt.Sprintf("fwmark-%#x", cfg.FwMark)}
}

// clientRouting is the routing a client sets up, without the routes (for CleanupStale).
func clientRouting(cfg *config.Client) netcfg.RouteSetup {
	return netcfg.RouteSetup{Dev: cfg.TunName, Table: cfg.RouteTable, FwMark: cfg.FwMark, RulePriority: cfg.RulePriority}
}
