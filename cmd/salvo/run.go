package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/salvovpn/salvo/config"
	"github.com/salvovpn/salvo/daemon"
	"github.com/salvovpn/salvo/engine"
	"github.com/salvovpn/salvo/engine/control"
)

// loginFailure marks a client that could not log in (exit code 3).
type loginFailure struct{ error }

func (l loginFailure) Unwrap() error { return l.error }

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

func cmdServer(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("server", "Usage: salvo server --config server.toml\n\nRuns the gateway. SIGINT/SIGTERM stop it and remove what it set up;\nSIGHUP (or salvo reload) reloads the configuration and the users file.\n\nExample configuration:\n\n"+config.ExampleServer()+"\n", stdout)
	path := fs.String("config", "/etc/salvo/server.toml", "configuration file")
	check := fs.Bool("check", false, "check the configuration, its key and its users file (or auth command), touch nothing, and exit (0: fine, 2: not)")
	sock := controlSocketFlag(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	load := func() (*config.Server, error) {
		cfg, err := config.LoadServer(*path)
		if err != nil {
			return nil, usageError{err}
		}
		if err := sock(&cfg.ControlSocket); err != nil {
			return nil, err
		}
		return cfg, nil
	}
	cfg, err := load()
	if err != nil {
		return err
	}
	if *check {
		if err := daemon.CheckServer(cfg); err != nil {
			return err
		}
		what := "users file"
		if cfg.Auth == "command" {
			what = "auth command"
		}
		fmt.Fprintf(stderr, "salvo: %s: configuration, key and %s are fine\n", cfg.Path, what)
		return nil
	}
	level := new(slog.LevelVar)
	log := newLogger(cfg.LogFormat, cfg.LogLevel, level, stderr)
	stopProfile, err := startProfile("server")
	if err != nil {
		return usageError{err}
	}
	defer stopProfile()
	ctx, stop := signalContext()
	defer stop()
	return daemon.RunServer(ctx, cfg, log, daemon.ServerOptions{Level: level, Load: load})
}

func cmdClient(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlags("client", "Usage: salvo client --config client.toml\n\nLogs in to the gateway (failing after 10 s with the reason), creates the TUN\ndevice, applies addresses, routes and DNS, and keeps the tunnel up (keepalive,\nrekey, reconnect). SIGINT/SIGTERM remove everything it added and exit 0.\nThe password comes from password_file, the variable named by password_env,\nor a prompt.\n\nIn a full tunnel a leak guard blocks everything outside the tunnel; after a\ncrash it stays (kill_switch) until the client is back or\n'salvo client --down --config client.toml' lifts it.\n\nExample configuration:\n\n"+config.ExampleClient()+"\n", stdout)
	path := fs.String("config", "/etc/salvo/client.toml", "configuration file")
	down := fs.Bool("down", false, "remove what a client with this configuration left after a crash (its leak guard and policy rules) and exit")
	check := fs.Bool("check", false, "check the configuration and its password file, touch nothing, and exit (0: fine, 2: not)")
	sock := controlSocketFlag(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg, err := config.LoadClient(*path)
	if err != nil {
		return usageError{err}
	}
	if err := sock(&cfg.ControlSocket); err != nil {
		return err
	}
	if *check {
		if err := daemon.CheckClient(cfg); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "salvo: %s: configuration is fine\n", cfg.Path)
		return nil
	}
	if *down {
		lifted, err := daemon.ClientDown(cfg)
		if err != nil {
			return err
		}
		if lifted {
			fmt.Fprintf(stderr, "salvo: lifted the leak guard of %s; traffic flows outside the tunnel again\n", cfg.TunName)
		} else {
			fmt.Fprintf(stderr, "salvo: no leak guard for %s; removed any stale policy rules\n", cfg.TunName)
		}
		return nil
	}
	log := newLogger(cfg.LogFormat, cfg.LogLevel, new(slog.LevelVar), stderr)
	prompt := config.TerminalPrompt(int(os.Stdin.Fd()), stderr, fmt.Sprintf("Password for %s: ", cfg.Username))
	pw, err := config.ResolvePassword(cfg, func() ([]byte, error) {
		b, err := prompt()
		if errors.Is(err, config.ErrNotTerminal) {
			return nil, fmt.Errorf("no password_file or password_env in the config, and %w", err)
		}
		return b, err
	})
	if err != nil {
		return usageError{err}
	}
	stopProfile, err := startProfile("client")
	if err != nil {
		return usageError{err}
	}
	defer stopProfile()
	ctx, stop := signalContext()
	defer stop()
	err = daemon.RunClient(ctx, cfg, pw, log)
	clear(pw)
	var le *engine.LoginError
	if errors.As(err, &le) {
		return loginFailure{err}
	}
	return err
}

// controlSocketFlag adds --control-socket to a daemon's flags. The function it returns replaces the
// configuration's control_socket with the flag's path, if given: the systemd units give each instance its
// own socket that way, whatever the configuration says.
func controlSocketFlag(fs *flagSet) func(socket *string) error {
	path := fs.String("control-socket", "", "serve the admin API on this unix socket instead of the configuration's control_socket")
	return func(socket *string) error {
		if *path == "" {
			return nil
		}
		if err := config.CheckSocketPath(*path); err != nil {
			return usageError{fmt.Errorf("%s: --control-socket: %w", fs.Name(), err)}
		}
		*socket = *path
		return nil
	}
}

func cmdStatus(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("status", "Usage: salvo status [--socket PATH] [--json]\n\nShows a running gateway's or client's sessions, traffic and drops by reason.\n\n", stdout)
	sock := fs.String("socket", "", "control socket (default: the server's, then salvo-server.service's, then the client's)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	var st engine.Status
	if err := controlDo(*sock, append(gatewaySockets, defaultClientSocket), http.MethodGet, "/status", &st); err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	printStatus(stdout, st)
	return nil
}

// defaultServerSocket is where `salvo server` serves its admin API unless control_socket says otherwise;
// defaultClientSocket is the client's.
const (
	defaultServerSocket = "/run/salvo/server.sock"
	defaultClientSocket = "/run/salvo/client.sock"
)

// gatewaySockets are where a gateway's control socket is looked for when --socket is not given.
var gatewaySockets = []string{defaultServerSocket, serviceServerSocket}

// controlDo sends a request to the control socket sock or, when sock is empty, to the first of defaults
// that something listens on. When none does, the error names every socket tried.
func controlDo(sock string, defaults []string, method, path string, out any) error {
	if sock != "" {
		return control.Do(sock, method, path, out)
	}
	var errs []error
	for _, p := range defaults {
		err := control.Do(p, method, path, out)
		if !errors.Is(err, control.ErrNotListening) {
			return err
		}
		errs = append(errs, err)
	}
	return fmt.Errorf("nothing answered (--socket names another socket): %w", errors.Join(errs...))
}

// serviceServerSocket is where salvo-server.service has the gateway serve it (--control-socket): in the
// unit's own runtime directory, which the service account may write (packaging/salvo-server.service).
const serviceServerSocket = "/run/salvo/server/control.sock"

func cmdKick(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("kick", "Usage: salvo kick [--socket PATH] USER\n\nEnds every session of USER on the running gateway. The clients are told they were\nkicked and stop instead of reconnecting. It does not stop USER from logging in\nagain: remove or disable the user (salvo user del|disable, then salvo reload) for that.\n\n", stdout)
	sock := gatewaySocketFlag(fs)
	if err := fs.parseFlags(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageError{errors.New("kick: want exactly one USER")}
	}
	var kr engine.KickResult
	if err := controlDo(*sock, gatewaySockets, http.MethodPost, "/sessions/"+url.PathEscape(fs.Arg(0))+"/disconnect", &kr); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "ended %d session(s) of %s\n", kr.Ended, kr.User)
	if kr.Shared {
		fmt.Fprintf(stdout, "and told the other gateways sharing the store to end theirs\n")
	}
	return nil
}

func gatewaySocketFlag(fs *flagSet) *string {
	return fs.String("socket", "", "the gateway's control socket (default: "+strings.Join(gatewaySockets, ", then ")+")")
}

func cmdReload(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("reload", `Usage: salvo reload [--socket PATH]

Makes the running gateway reread its configuration file and its users file, as
SIGHUP does, and says what changed. Sessions stay up. It applies: the users (removed,
disabled or re-passworded users' sessions end with "revoked"), `+strings.Join(daemon.ReloadableKeys, ", ")+`.
Routes and DNS reach each session at its next login or rekey (within 2 minutes).
Any other key needs a restart: a reload that changes one is refused, names the key
and changes nothing, and so is a configuration or users file with an error.

`, stdout)
	sock := gatewaySocketFlag(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	var res daemon.ReloadResult
	if err := controlDo(*sock, gatewaySockets, http.MethodPost, "/reload", &res); err != nil {
		return err
	}
	changed := "no configuration key"
	if len(res.Changed) > 0 {
		changed = strings.Join(res.Changed, ", ")
	}
	fmt.Fprintf(stdout, "reloaded: %s changed; %d session(s) revoked\n", changed, res.SessionsRevoked)
	return nil
}

func printStatus(w io.Writer, st engine.Status) {
	fmt.Fprintf(w, "%s on %s", st.Role, st.Device)
	if st.State != "" {
		fmt.Fprintf(w, " (%s)", st.State)
	}
	if len(st.Listen) > 0 {
		fmt.Fprintf(w, ", listening on %s", strings.Join(st.Listen, " "))
	}
	fmt.Fprintln(w)
	if !st.Started.IsZero() {
		fmt.Fprintf(w, "salvo %s, up %s\n", st.Version, time.Since(st.Started).Round(time.Second))
	}
	if l := st.Logins; l != nil {
		fmt.Fprintf(w, "logins: ok=%d bad_credentials=%d rate_limited=%d busy=%d cookies=%d resumes=%d tickets=%d tickets_refused=%d; handshakes rejected: %s\n",
			l.LoginsOK, l.LoginsFailed, l.RateLimited, l.Busy, l.CookiesSent, l.Resumes, l.TicketLogins, l.TicketsRefused, drops(l.Rejected))
	}
	if g := st.LeakGuard; g != nil {
		fmt.Fprintf(w, "leak guard up (kill switch %s): %d packets blocked outside the tunnel\n", onOff(g.KillSwitch), g.Blocked)
	}
	fmt.Fprintf(w, "%d session(s)\n", len(st.Sessions))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "USER\tADDRESSES\tENDPOINT\tRX\tTX\tHANDSHAKE\tDROPS")
	for _, s := range st.Sessions {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d pkts / %s\t%d pkts / %s\t%s ago\t%s\n", s.User, strings.Join(s.Addresses, ","),
			s.Endpoint, s.Counters.RxPackets, byteCount(s.Counters.RxBytes), s.Counters.TxPackets, byteCount(s.Counters.TxBytes),
			time.Since(s.LastHandshake).Round(time.Second), drops(s.Counters.Drops))
	}
	tw.Flush()
	fmt.Fprintf(w, "other drops: %s\n", drops(st.Global.Drops))
}

func drops(m map[string]uint64) string {
	var parts []string
	for k, v := range m {
		if v > 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", k, v))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// byteCount is n bytes for people: 512 B, 1.5 KiB, 12.3 MiB, 4.0 GiB.
func byteCount(n uint64) string {
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	v, unit := float64(n)/1024, 0
	for v >= 1024 && unit < 4 {
		v, unit = v/1024, unit+1
	}
	return fmt.Sprintf("%.1f %s", v, [...]string{"KiB", "MiB", "GiB", "TiB", "PiB"}[unit])
}
