package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/salvovpn/salvo/batch"
	"github.com/salvovpn/salvo/engine"
	"github.com/salvovpn/salvo/engine/control"
	"github.com/salvovpn/salvo/engine/users"
	"github.com/salvovpn/salvo/protocol"
	"github.com/salvovpn/salvo/protocol/handshake"
	"github.com/salvovpn/salvo/protocol/transport"
)

// SessionsConfig selects what the many-session benchmark measures.
type SessionsConfig struct {
	Sessions int // concurrent sessions (>= 1), spread over users of at most sessionsPerUser sessions
	// Params are the users' argon2id parameters. The gateway's hashing budget counts argon2 cost, so
	// cheap parameters buy many logins a second without any throttle being lifted.
	Params users.Params
	// RekeyWindow is how long the rekey cost is measured: the sessions rekey, in turn, at the rate all of
	// them would at the protocol's cadence (Sessions per RekeyAfterTime), and the gateway's idle CPU over
	// as long a window before is subtracted.
	RekeyWindow time.Duration
	Workers     []int         // gateway workers to compare; 0 = one per CPU (the config's meaning)
	Size        int           // UDP payload bytes of each inner packet (the packet is 28 bytes more)
	Duration    time.Duration // traffic time per measurement
	EBPF        []string      // gateway ebpf settings to compare ("off", "on")
	Modes       []string      // "one-tuple" (every session behind one address:port) and/or "per-session"
	RepoDir     string
	Progress    io.Writer
}

// SessionsResult is one measurement.
type SessionsResult struct {
	EBPF     string `json:"ebpf"`
	Mode     string `json:"mode"`
	Sessions int    `json:"sessions"`
	// Workers is the gateway's setting (0 = one per CPU), WorkersRun what that came to on this machine.
	Workers    int    `json:"workers"`
	WorkersRun int    `json:"workers_run"`
	Users      int    `json:"users"`
	Params     string `json:"argon2id"`
	// Logging every session in, LoginsInFlight at a time (one at a time on a shared socket).
	LoginSeconds   float64 `json:"login_seconds"`
	LoginsPerSec   float64 `json:"logins_per_sec"`
	LoginsInFlight int     `json:"logins_in_flight"`
	// UnconfirmedAfterLogin counts sessions not live when the logins were done (a first packet lost);
	// a keepalive each then confirms them, as a client's next packet would.
	UnconfirmedAfterLogin int `json:"unconfirmed_after_login"`
	// What the gateway counted by then: logins it accepted (more than Sessions when a retried request
	// was answered twice) and the packets it dropped, by reason.
	LoginsAccepted uint64            `json:"logins_accepted"`
	LoginDrops     map[string]uint64 `json:"login_drops"`
	// The gateway's VmRSS before the first login and with every session logged in.
	RSSBeforeKiB     uint64  `json:"rss_before_kib"`
	RSSAfterKiB      uint64  `json:"rss_after_kib"`
	RSSPerSessionKiB float64 `json:"rss_per_session_kib"`
	// Rekeys at the normal cadence (see SessionsConfig.RekeyWindow): how many, and the gateway's CPU
	// seconds per second while idle (keepalives, janitor) and the extra while rekeying.
	Rekeys             int     `json:"rekeys"`
	RekeysPerSec       float64 `json:"rekeys_per_sec"`
	IdleCPUPerSec      float64 `json:"idle_cpu_seconds_per_sec"`
	RekeyCPUPerSec     float64 `json:"rekey_cpu_seconds_per_sec"`
	RekeyCPUMillisEach float64 `json:"rekey_cpu_ms_each"`
	// After a SIGKILL and a restart on the same state directory: how long until the gateway answered,
	// how long until every session was back (resume refused, then its ticket: measureRestart), both
	// from the kill too, and what the restarted gateway hashed (0: no session needed its password).
	RestartUpSeconds       float64 `json:"restart_up_seconds"`
	ReturnSeconds          float64 `json:"return_seconds"`
	ReturnAfterKillSeconds float64 `json:"return_after_kill_seconds"`
	ReturnPasswordHashes   uint64  `json:"return_password_hashes"`
	ReturnTicketLogins     uint64  `json:"return_ticket_logins"`
	SendingSessions        int     `json:"sending_sessions"` // sessions the gateway received data from
	PacketBytes            int     `json:"inner_packet_bytes"`
	PacketsPerSec          float64 `json:"gateway_packets_per_sec"`
	CrossWorkerPerSec      float64 `json:"cross_worker_packets_per_sec"`
	CrossWorkerShare       float64 `json:"cross_worker_share"`
	SentPerSec             float64 `json:"sent_packets_per_sec"`
	// The gateway process's CPU time (utime+stime of all its threads) over the measurement, charged to
	// the data packets and inner bytes its sessions received in that time. Kernel work done for the
	// gateway in another task's context (the sender's softirq delivering to the veth) is not in it.
	Packets        uint64  `json:"gateway_packets"`
	Bytes          uint64  `json:"gateway_bytes"`
	CPUSeconds     float64 `json:"gateway_cpu_seconds"`
	CPUNsPerPacket float64 `json:"gateway_cpu_ns_per_packet"`
	CPUNsPerByte   float64 `json:"gateway_cpu_ns_per_byte"`
}

// WorkersLabel names a worker setting as the results table shows it.
func (r SessionsResult) WorkersLabel() string {
	if r.Workers == 0 {
		return fmt.Sprintf("per CPU (%d)", r.WorkersRun)
	}
	return strconv.Itoa(r.Workers)
}

const sessionsBlackhole = "10.250.0.1" // routed to a blackhole on the gateway: written to the TUN, then dropped

// RunSessions measures each (ebpf, mode) combination on a fresh topology and returns the results. It fails
// loudly when the gateway does not come up or a login fails.
func RunSessions(ctx context.Context, cfg SessionsConfig) ([]SessionsResult, error) {
	if cfg.Sessions < 1 || len(cfg.Workers) == 0 || slices.Min(cfg.Workers) < 0 || cfg.Duration <= 0 || cfg.RekeyWindow <= 0 {
		return nil, errors.New("sessions: need sessions >= 1, worker counts >= 0 (0 = one per CPU), a duration and a rekey window")
	}
	if cfg.Params.Memory == 0 {
		return nil, errors.New("sessions: no argon2id parameters for the users")
	}
	if cfg.Size < 8 || cfg.Size > 1400 {
		return nil, fmt.Errorf("sessions: packet size %d: want 8..1400 bytes of UDP payload", cfg.Size)
	}
	work, err := os.MkdirTemp("", "salvo-sessions-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	bin := filepath.Join(work, "salvo")
	if err := buildSalvo(ctx, cfg.RepoDir, bin); err != nil {
		return nil, fmt.Errorf("sessions: %w", err)
	}
	var results []SessionsResult
	for _, workers := range cfg.Workers {
		for _, eb := range cfg.EBPF {
			for _, mode := range cfg.Modes {
				fmt.Fprintf(cfg.Progress, "salvosessions: workers=%d ebpf=%s mode=%s: %d sessions\n", workers, eb, mode, cfg.Sessions)
				r, err := runSessionsOnce(ctx, cfg, bin, filepath.Join(work, fmt.Sprintf("w%d-%s-%s", workers, eb, mode)), workers, eb, mode)
				if err != nil {
					return results, fmt.Errorf("workers=%d ebpf=%s mode=%s: %w", workers, eb, mode, err)
				}
				fmt.Fprintf(cfg.Progress, "salvosessions:   %d logins in %.1f s (%.0f/s; %d not live until a second packet, %d accepted, drops %v), %.1f KiB RSS per session, rekeys at %.0f/s cost %.3f CPU-s/s\n",
					r.Sessions, r.LoginSeconds, r.LoginsPerSec, r.UnconfirmedAfterLogin, r.LoginsAccepted, r.LoginDrops, r.RSSPerSessionKiB, r.RekeysPerSec, r.RekeyCPUPerSec)
				fmt.Fprintf(cfg.Progress, "salvosessions:   %.0f pkt/s at the gateway from %d sessions, %.0f cross-worker pkt/s (%.1f%%), %.0f CPU-ns per packet, %.2f per byte\n",
					r.PacketsPerSec, r.SendingSessions, r.CrossWorkerPerSec, 100*r.CrossWorkerShare, r.CPUNsPerPacket, r.CPUNsPerByte)
				fmt.Fprintf(cfg.Progress, "salvosessions:   SIGKILL and restart: gateway answering after %.1f s, every session back %.1f s later (%.1f s after the kill), %d password hashes, %d ticket logins\n",
					r.RestartUpSeconds, r.ReturnSeconds, r.ReturnAfterKillSeconds, r.ReturnPasswordHashes, r.ReturnTicketLogins)
				results = append(results, r)
			}
		}
	}
	return results, nil
}

func runSessionsOnce(ctx context.Context, cfg SessionsConfig, bin, dir string, workers int, ebpf, mode string) (SessionsResult, error) {
	res := SessionsResult{EBPF: ebpf, Mode: mode, Sessions: cfg.Sessions, Workers: workers, WorkersRun: workers, PacketBytes: 28 + cfg.Size,
		Users: sessionUsers(cfg.Sessions), Params: ParamsLabel(cfg.Params)}
	if workers == 0 {
		res.WorkersRun = runtime.NumCPU() // the gateway's GOMAXPROCS on this machine
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return res, err
	}
	topo, err := NewTopology()
	if err != nil {
		return res, err
	}
	defer topo.Close()
	if _, err := topo.B.Run("ip", "route", "add", "blackhole", sessionsBlackhole+"/32"); err != nil {
		return res, err
	}
	keyFile := filepath.Join(dir, "server.key")
	out, err := exec.CommandContext(ctx, bin, "keygen", "--out", keyFile).Output()
	if err != nil {
		return res, fmt.Errorf("keygen: %w", err)
	}
	pub, err := handshake.ParseKey(strings.TrimSpace(string(out)))
	if err != nil {
		return res, err
	}
	password, usersFile, err := writeBenchUsers(dir, "load", res.Users, cfg.Params)
	if err != nil {
		return res, err
	}
	sock := filepath.Join(dir, "server.sock")
	conf := fmt.Sprintf("listen = [\"%s:51820\"]\nprivate_key_file = %q\nusers_file = %q\ntun_name = \"salvo0\"\n"+
		"ipv4_pool = \"10.77.0.0/16\"\nmax_sessions_per_user = 1024\nworkers = %d\nebpf = %q\ncontrol_socket = %q\nstate_dir = %q\n",
		addrB4, keyFile, usersFile, workers, ebpf, sock, filepath.Join(dir, "state"))
	confPath := filepath.Join(dir, "server.toml")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return res, err
	}
	start := func() (*daemon, error) {
		return startDaemon(ctx, topo.B, filepath.Join(dir, "server.log"), nil, bin, "server", "--config", confPath)
	}
	gw, err := start()
	if err != nil {
		return res, err
	}
	defer func() { gw.stop(5 * time.Second) }()
	if err := waitFor(ctx, 10*time.Second, "gateway control socket", []*daemon{gw}, func() (bool, error) {
		var st engine.Status
		return control.Query(sock, &st) == nil, nil
	}); err != nil {
		return res, err
	}

	server := netip.MustParseAddrPort(addrB4 + ":51820")
	nconns, inFlight, opts := 1, 1, batch.Options{DisableGSO: true}
	if mode == "per-session" {
		nconns, inFlight, opts = cfg.Sessions, 16, batch.Options{}
		if cfg.Sessions > 64 {
			// Small socket buffers for thousands of sockets that each carry one session's packets (up to
			// 64, as many as the older runs used, keep the defaults their figures were measured with).
			opts = batch.Options{BatchSize: 64, RecvBuffer: 64 << 10, SendBuffer: 256 << 10}
		}
	}
	conns := make([]*batch.Conn, nconns)
	if err := topo.A.Do(func() error {
		for i := range conns {
			// One socket for many sessions stands for many clients behind one NAT address:port. Their
			// datagrams must leave as separate datagrams: GSO would coalesce different sessions into one
			// super-datagram, which the kernel steers and filters as a unit by its first header, something
			// no NAT in front of real clients produces (GSO happens in each client's own socket).
			c, err := batch.Listen("udp4", addrA4+":0", opts)
			if err != nil {
				return err
			}
			conns[i] = c
		}
		return nil
	}); err != nil {
		return res, err
	}
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	sconns := make([]*sessionConn, nconns)
	for i, c := range conns {
		sconns[i] = newSessionConn(c)
	}
	sessions := make([]*benchSession, cfg.Sessions)
	for i := range sessions {
		sessions[i] = &benchSession{conn: sconns[i%nconns], hc: handshake.ClientConfig{ServerPublic: pub,
			Login: fmt.Sprintf("load%d", i%res.Users), Password: password, InstanceID: uint64(i + 1)}}
	}
	if err := measureSessionCosts(ctx, &res, cfg, gw, sock, sessions, server, inFlight); err != nil {
		return res, err
	}
	for _, s := range sessions {
		s.pkt = innerUDP(s.addr, netip.MustParseAddr(sessionsBlackhole), cfg.Size)
	}
	st0, err := queryStatus(sock)
	if err != nil {
		return res, err
	}
	cpu0, err := cpuSeconds(gw.pid())
	if err != nil {
		return res, fmt.Errorf("gateway CPU time: %w", err)
	}
	sent := sendLoad(sessions, server, cfg.Duration, func(s *benchSession) (*transport.Keypair, *batch.Conn, []byte) {
		return s.kp, s.conn.c, s.pkt
	})
	cpu1, err := cpuSeconds(gw.pid())
	if err != nil {
		return res, fmt.Errorf("gateway CPU time: %w", err)
	}
	st1, err := queryStatus(sock)
	if err != nil {
		return res, err
	}
	if err := gw.exited(); err != nil {
		return res, err
	}
	rx0, rx1 := sumRx(st0), sumRx(st1)
	rx := rx1.RxPackets - rx0.RxPackets
	if rx == 0 {
		return res, errors.New("the gateway received no data packets")
	}
	res.Packets, res.Bytes, res.CPUSeconds = rx, rx1.RxBytes-rx0.RxBytes, cpu1-cpu0
	if !(res.CPUSeconds > 0) {
		return res, fmt.Errorf("the gateway used no measurable CPU (%d Hz accounting) receiving %d packets: measure longer", clockTicks, rx)
	}
	res.CPUNsPerPacket = res.CPUSeconds * 1e9 / float64(res.Packets)
	res.CPUNsPerByte = res.CPUSeconds * 1e9 / float64(res.Bytes)
	secs := cfg.Duration.Seconds()
	res.PacketsPerSec = float64(rx) / secs
	res.CrossWorkerPerSec = float64(st1.CrossWorkerPackets-st0.CrossWorkerPackets) / secs
	res.CrossWorkerShare = float64(st1.CrossWorkerPackets-st0.CrossWorkerPackets) / float64(rx)
	res.SentPerSec = float64(sent) / secs
	res.SendingSessions = sendingSessions(st0, st1)
	if gw, err = measureRestart(ctx, &res, gw, start, sock, sessions, server, inFlight); err != nil {
		if gw == nil {
			gw = &daemon{done: closedChan()} // nothing left to stop
		}
		return res, fmt.Errorf("after a restart: %w", err)
	}
	return res, nil
}

func closedChan() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}

func queryStatus(sock string) (engine.Status, error) {
	var st engine.Status
	err := control.Query(sock, &st)
	return st, err
}

// sumRx adds up what the gateway's sessions received (data packets, inner bytes).
func sumRx(st engine.Status) engine.Traffic {
	var t engine.Traffic
	for _, s := range st.Sessions {
		t = t.Plus(engine.Traffic{RxPackets: s.Counters.RxPackets, RxBytes: s.Counters.RxBytes})
	}
	return t
}

// innerUDP builds an IPv4/UDP packet with a payload of size bytes.
func innerUDP(src, dst netip.Addr, size int) []byte {
	p := make([]byte, 28+size)
	p[0], p[8], p[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	s4, d4 := src.As4(), dst.As4()
	copy(p[12:16], s4[:])
	copy(p[16:20], d4[:])
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(p[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(p[10:], ^uint16(sum))
	binary.BigEndian.PutUint16(p[20:], 40000)
	binary.BigEndian.PutUint16(p[22:], 9)
	binary.BigEndian.PutUint16(p[24:], uint16(8+size))
	return p
}

// sendLoad sends sealed packets for d and returns how many were sent, a vector of up to 64 per sendmmsg:
// when sessions share one socket a vector takes one packet from each session in turn; with a socket per
// session it takes packets of one session, then moves to the next: 64 of them, fewer with more than 64
// sessions (down to one), so every session gets its turn within the measurement.
func sendLoad[S any](sessions []S, server netip.AddrPort, d time.Duration, get func(S) (*transport.Keypair, *batch.Conn, []byte)) uint64 {
	const vec = 64
	bufs := make([][]byte, vec)
	out := make([][]byte, vec)
	addrs := make([]netip.AddrPort, vec)
	for i := range bufs {
		bufs[i] = make([]byte, 2048)
		addrs[i] = server
	}
	_, c0, _ := get(sessions[0])
	_, cLast, _ := get(sessions[len(sessions)-1])
	shared := c0 == cLast
	perTurn := vec
	if !shared {
		perTurn = max(1, min(vec, vec*vec/len(sessions)))
	}
	var sent uint64
	next := 0
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		_, conn, _ := get(sessions[next])
		n := 0
		for n < vec && (shared || n < perTurn) {
			kp, _, pkt := get(sessions[next])
			copy(bufs[n][protocol.Headroom:], pkt)
			m, err := kp.Seal(protocol.CodeData, bufs[n], len(pkt), time.Now())
			if err != nil {
				break
			}
			out[n] = bufs[n][:m]
			n++
			if shared {
				next = (next + 1) % len(sessions)
			}
		}
		if !shared {
			next = (next + 1) % len(sessions)
		}
		if n == 0 {
			continue
		}
		k, _ := conn.WriteBatch(out[:n], addrs[:n])
		sent += uint64(k)
	}
	return sent
}
