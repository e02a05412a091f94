package bench

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"golang.zx2c4.com/wireguard/tun"

	"github.com/salvovpn/salvo/batch"
	"github.com/salvovpn/salvo/engine"
	"github.com/salvovpn/salvo/engine/control"
	"github.com/salvovpn/salvo/engine/enginetest"
	"github.com/salvovpn/salvo/engine/users"
	"github.com/salvovpn/salvo/protocol/handshake"
)

// StormConfig is one login storm: Clients real client engines log in to a real gateway at the same moment.
type StormConfig struct {
	Clients int
	Params  users.Params // the users' argon2id parameters
	// Restart, after everybody is in, SIGKILLs the gateway and starts it again, and measures how long the
	// clients take to come back (the reconnect storm).
	Restart  bool
	Timeout  time.Duration // for everybody to get in
	RepoDir  string
	Progress io.Writer
}

// StormResult is what a storm measured.
type StormResult struct {
	Clients      int     `json:"clients"`
	Params       string  `json:"argon2id"`
	HashMillis   float64 `json:"hash_ms"`          // one hash at these parameters on this machine, alone
	Capacity     float64 `json:"capacity_per_sec"` // what the gateway can hash: its workers or its budget, whichever is less
	AllInSeconds float64 `json:"all_in_seconds"`
	LoginsPerSec float64 `json:"logins_per_sec"`
	Hashes       uint64  `json:"password_hashes"`
	Busy         uint64  `json:"busy"`
	QueueDrops   uint64  `json:"handshake_queue_drops"`
	Duplicates   int     `json:"duplicate_addresses"` // must be 0
	// After a restart (Restart): how long until every client was back, and how many hashes that cost.
	BackSeconds float64 `json:"back_after_restart_seconds,omitempty"`
	BackHashes  uint64  `json:"back_hashes,omitempty"`
}

// stormUsers are the users the storm's clients log in as: max_sessions_per_user is at most 1024, so a
// user per 1000 clients.
func stormUsers(clients int) int { return clients/1000 + 1 }

// RunStorm starts a gateway on a fresh topology and lets the clients loose on it at once.
func RunStorm(ctx context.Context, cfg StormConfig) (StormResult, error) {
	res := StormResult{Clients: cfg.Clients, Params: ParamsLabel(cfg.Params)}
	if cfg.Clients < 1 {
		return res, errors.New("storm: need at least one client")
	}
	work, err := os.MkdirTemp("", "salvo-storm-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(work)
	bin := filepath.Join(work, "salvo")
	if err := buildSalvo(ctx, cfg.RepoDir, bin); err != nil {
		return res, fmt.Errorf("storm: %w", err)
	}
	topo, err := NewTopology()
	if err != nil {
		return res, err
	}
	defer topo.Close()

	keyFile := filepath.Join(work, "server.key")
	out, err := exec.CommandContext(ctx, bin, "keygen", "--out", keyFile).Output()
	if err != nil {
		return res, fmt.Errorf("keygen: %w", err)
	}
	pub, err := handshake.ParseKey(strings.TrimSpace(string(out)))
	if err != nil {
		return res, err
	}
	password, usersFile, err := writeBenchUsers(work, "storm", stormUsers(cfg.Clients), cfg.Params)
	if err != nil {
		return res, err
	}
	sock := filepath.Join(work, "server.sock")
	conf := fmt.Sprintf("listen = [\"%s:51820\"]\nprivate_key_file = %q\nusers_file = %q\ntun_name = \"salvo0\"\n"+
		"ipv4_pool = \"10.64.0.0/12\"\nmax_sessions_per_user = 1024\ncontrol_socket = %q\nstate_dir = %q\n",
		addrB4, keyFile, usersFile, sock, filepath.Join(work, "state"))
	confPath := filepath.Join(work, "server.toml")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return res, err
	}
	start := func() (*daemon, error) {
		gw, err := startDaemon(ctx, topo.B, filepath.Join(work, "server.log"), nil, bin, "server", "--config", confPath)
		if err != nil {
			return nil, err
		}
		return gw, waitFor(ctx, 10*time.Second, "gateway control socket", []*daemon{gw}, func() (bool, error) {
			var st engine.Status
			return control.Query(sock, &st) == nil, nil
		})
	}
	gw, err := start()
	if err != nil {
		return res, err
	}
	defer func() { gw.stop(5 * time.Second) }()

	hash := users.MeasureCost(cfg.Params)
	res.HashMillis = float64(hash.Microseconds()) / 1000
	// Two handshake workers, on at most as many cores, hashing side by side only within the memory cap,
	// and never more than the budget allows.
	parallel := min(2, runtime.NumCPU(), max(1, engine.HashMemoryCap/int(cfg.Params.Memory)))
	budget := float64(engine.DefaultHashBudget) / float64(cfg.Params.Cost())
	res.Capacity = min(float64(parallel)/hash.Seconds(), budget)

	clients, err := startStormClients(ctx, topo, cfg.Clients, pub, password, "")
	if err != nil {
		return res, err
	}
	defer clients.stop()
	began := time.Now()
	fmt.Fprintf(cfg.Progress, "salvostorm: %d clients (%s, %.0f ms a hash) logging in at once\n", cfg.Clients, res.Params, res.HashMillis)
	if err := clients.waitAll(ctx, cfg.Timeout, "connected", cfg.Progress); err != nil {
		return res, err
	}
	res.AllInSeconds = time.Since(began).Seconds()
	res.LoginsPerSec = float64(cfg.Clients) / res.AllInSeconds
	st, err := queryStatus(sock)
	if err != nil {
		return res, err
	}
	if st.Logins != nil {
		res.Hashes, res.Busy = st.Logins.PasswordHashes, st.Logins.Busy
	}
	res.QueueDrops = st.Global.Drops["handshake_queue"]
	res.Duplicates = duplicateAddresses(st)
	if len(st.Sessions) != cfg.Clients {
		return res, fmt.Errorf("storm: %d clients connected but the gateway has %d sessions", cfg.Clients, len(st.Sessions))
	}
	if cfg.Restart {
		_ = gw.cmd.Process.Kill()
		<-gw.done
		if gw, err = start(); err != nil {
			return res, err
		}
		back := time.Now()
		// Clients notice from the notices their keepalives draw, or from silence; every one must log in
		// again (there are no session tickets yet: a full login each).
		if err := clients.waitAllAgain(ctx, cfg.Timeout, sock, cfg.Clients, cfg.Progress); err != nil {
			return res, err
		}
		res.BackSeconds = time.Since(back).Seconds()
		if st, err := queryStatus(sock); err == nil && st.Logins != nil {
			res.BackHashes = st.Logins.PasswordHashes
		}
	}
	if err := gw.exited(); err != nil {
		return res, err
	}
	return res, nil
}

// duplicateAddresses counts tunnel addresses given to more than one session.
func duplicateAddresses(st engine.Status) int {
	seen := map[string]int{}
	for _, s := range st.Sessions {
		for _, a := range s.Addresses {
			seen[a]++
		}
	}
	d := 0
	for _, n := range seen {
		if n > 1 {
			d += n - 1
		}
	}
	return d
}

// stormClients are real client engines (engine.Client) with their own UDP socket each in namespace A and an
// in-memory TUN: everything of a client but the operating system's routes.
type stormClients struct {
	cls    []*engine.Client
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type nopSetup struct{}

func (nopSetup) Apply(tun.Device, handshake.Settings) (func(), error) { return func() {}, nil }

// startStormClients starts n client engines; login "" means the storm's users (storm0, storm1...).
func startStormClients(ctx context.Context, topo *Topology, n int, pub handshake.Key, password, login string) (*stormClients, error) {
	ctx, cancel := context.WithCancel(ctx)
	sc := &stormClients{cancel: cancel}
	server := netip.MustParseAddrPort(addrB4 + ":51820")
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	conns := make([]*batch.Conn, n)
	if err := topo.A.Do(func() error {
		for i := range conns {
			// Small vectors and socket buffers: a storm client moves a handful of packets.
			c, err := batch.Listen("udp4", addrA4+":0", batch.Options{BatchSize: 8, RecvBuffer: 256 << 10, SendBuffer: 256 << 10})
			if err != nil {
				return err
			}
			conns[i] = c
		}
		return nil
	}); err != nil {
		cancel()
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
		return nil, fmt.Errorf("storm: client sockets: %w", err)
	}
	for i, c := range conns {
		cl := engine.NewClient(engine.ClientConfig{
			Server: server.String(), ServerAddr: server,
			Handshake: handshake.ClientConfig{ServerPublic: pub, Login: cmp.Or(login, fmt.Sprintf("storm%d", i%stormUsers(n))), Password: password},
			OpenTUN: func(int) (tun.Device, error) {
				return enginetest.NewTUN("storm", 1420, enginetest.WithBatchSize(8)), nil
			},
			Setup: nopSetup{}, Log: quiet, BatchSize: 8,
			// A storm client waits as long as the storm lasts: the gateway answers it (busy, cookies).
			LoginTimeout: 10 * time.Minute,
		}, c)
		sc.cls = append(sc.cls, cl)
		sc.wg.Add(1)
		go func() {
			defer sc.wg.Done()
			_ = cl.Run(ctx)
		}()
	}
	return sc, nil
}

// waitAll waits until every client reports state.
func (sc *stormClients) waitAll(ctx context.Context, d time.Duration, state string, progress io.Writer) error {
	deadline := time.Now().Add(d)
	last := time.Now()
	for {
		n := 0
		for _, c := range sc.cls {
			if c.Status().State == state {
				n++
			}
		}
		if n == len(sc.cls) {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("storm: only %d of %d clients %s after %s", n, len(sc.cls), state, d)
		}
		if time.Since(last) > 5*time.Second {
			fmt.Fprintf(progress, "salvostorm:   %d of %d %s\n", n, len(sc.cls), state)
			last = time.Now()
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitAllAgain waits until the restarted gateway has a session for every client.
func (sc *stormClients) waitAllAgain(ctx context.Context, d time.Duration, sock string, n int, progress io.Writer) error {
	deadline := time.Now().Add(d)
	last := time.Now()
	for {
		st, err := queryStatus(sock)
		if err == nil && len(st.Sessions) == n {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("storm: only %d of %d clients back after %s", len(st.Sessions), n, d)
		}
		if time.Since(last) > 5*time.Second {
			fmt.Fprintf(progress, "salvostorm:   %d of %d back\n", len(st.Sessions), n)
			last = time.Now()
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (sc *stormClients) stop() {
	sc.cancel()
	sc.wg.Wait()
}
