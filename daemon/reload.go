package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"reflect"
	"slices"
	"strings"
	"sync"
	"syscall"

	"github.com/salvovpn/salvo/config"
	"github.com/salvovpn/salvo/engine"
	"github.com/salvovpn/salvo/engine/control"
	"github.com/salvovpn/salvo/engine/ippool"
	"github.com/salvovpn/salvo/engine/users"
	"github.com/salvovpn/salvo/internal/secretfile"
)

// ReloadableKeys are the gateway configuration keys a reload applies to the running gateway. Every other
// key needs a restart, and a reload that changes one is refused, naming it.
// Switching auth between "file" and "command" is a restart: the engine holds its backend from the start;
// the command and its timeout are only read at each login, so a reload changes them.
var ReloadableKeys = []string{"routes", "excluded_routes", "dns", "search_domains", "max_sessions_per_user",
	"max_session_age", "hash_budget", "failed_login_burst", "failed_login_interval", "log_level",
	"auth_command", "auth_timeout"}

// ReloadResult is the answer of POST /reload (and what `salvo reload` prints).
type ReloadResult struct {
	Changed         []string `json:"changed"` // configuration keys applied
	SessionsRevoked int      `json:"sessions_revoked"`
}

// errRestartOnly is a reload refused because it changes keys only a restart applies.
var errRestartOnly = errors.New("needs a restart")

// reloader applies the configuration file and the users file (or the auth command) to a running gateway,
// on SIGHUP and on POST /reload. One reload runs at a time.
type reloader struct {
	mu           sync.Mutex
	running      *config.Server // the configuration in effect
	load         func() (*config.Server, error)
	srv          *engine.Server
	store        *users.Store   // auth = "file"; else nil
	command      *users.Command // auth = "command"; else nil
	followsStore bool           // auth = "postgres": the users follow the store by themselves
	pool4, pool6 *ippool.Pool
	level        *slog.LevelVar
	log          *slog.Logger
}

// reload rereads both files and applies both or neither: a configuration that does not load, changes a
// key only a restart applies or is refused by the engine (too many routes, say), or a users file that
// does not load, changes nothing. The engine's part goes first because it alone can refuse after the
// files loaded; a users file that then fails to load puts it back. With auth = "command" the command
// stands in for the users file: one that fails CheckCommand changes nothing either.
func (r *reloader) reload() (ReloadResult, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	next, err := r.load()
	if err != nil {
		return ReloadResult{}, err
	}
	changed, restart := diffKeys(r.running, next)
	if len(restart) > 0 {
		return ReloadResult{}, fmt.Errorf("%s: %s changed, which %w (the gateway keeps running with the old configuration; restart it to apply)",
			next.Path, strings.Join(restart, ", "), errRestartOnly)
	}
	if r.command != nil {
		// Checked before anything changes; Set checks again, which can only fail if the file changed
		// in between.
		if err := users.CheckCommand(next.AuthCommand); err != nil {
			return ReloadResult{}, config.KeyError(next.Path, "auth_command", err)
		}
	}
	if err := r.srv.Reload(reloadable(next)); err != nil {
		return ReloadResult{}, fmt.Errorf("%s: %w", next.Path, err)
	}
	if err := r.loadAuth(next); err != nil {
		_ = r.srv.Reload(reloadable(r.running)) // it was in force until a moment ago
		return ReloadResult{}, err
	}
	if r.level != nil {
		_ = r.level.UnmarshalText([]byte(next.LogLevel)) // checked by LoadServer
	}
	r.running = next
	res := ReloadResult{Changed: changed, SessionsRevoked: r.srv.UsersChanged()}
	switch {
	case r.command != nil:
		r.log.Info("configuration and auth command reloaded", "file", next.Path, "auth_command", next.AuthCommand,
			"changed", strings.Join(changed, ","))
	case r.followsStore:
		r.log.Info("configuration reloaded (users follow the store)", "file", next.Path, "changed", strings.Join(changed, ","),
			"sessions_revoked", res.SessionsRevoked)
	default:
		r.log.Info("configuration and users file reloaded", "file", next.Path, "users_file", next.UsersFile,
			"changed", strings.Join(changed, ","), "sessions_revoked", res.SessionsRevoked)
	}
	return res, nil
}

// loadAuth applies next's authentication: the users file, with the pools' reservations of its fixed
// addresses, or the auth command.
func (r *reloader) loadAuth(next *config.Server) error {
	if r.command != nil {
		if err := r.command.Set(commandConfig(next)); err != nil {
			return config.KeyError(next.Path, "auth_command", err)
		}
		return nil
	}
	if r.followsStore {
		return nil
	}
	if err := r.loadUsers(next.UsersFile); err != nil {
		return err
	}
	reserveFixed(r.store, r.pool4, r.pool6, r.log)
	return nil
}

// reserveFixed reserves the users' fixed addresses in the pools, after the users changed.
func reserveFixed(auth users.Authenticator, pool4, pool6 *ippool.Pool, log *slog.Logger) {
	v4, v6 := fixedAddrs(auth)
	for _, p := range []struct {
		pool  *ippool.Pool
		addrs []netip.Addr
	}{{pool4, v4}, {pool6, v6}} {
		if p.pool != nil {
			if err := p.pool.SetReserved(p.addrs...); err != nil {
				log.Error("users: fixed address outside the pool", "err", err)
			}
		}
	}
}

// loadUsers replaces the users with the file at path, which must pass the secret-file checks.
func (r *reloader) loadUsers(path string) error {
	if err := secretfile.Check(path, "users file"); err != nil {
		return err
	}
	if err := r.store.Reload(path); err != nil {
		return fmt.Errorf("users file %s: %w (keeping the old configuration and users)", path, err)
	}
	return nil
}

// reloadable is the part of cfg a running gateway applies (engine.Reloadable).
func reloadable(cfg *config.Server) engine.Reloadable {
	return engine.Reloadable{Routes: cfg.RoutePrefixes, ExcludedRoutes: cfg.ExcludedRoutePrefixes, DNS: cfg.DNSAddrs,
		SearchDomains: cfg.SearchDomains, MaxSessionsPerUser: cfg.MaxSessionsPerUser, MaxSessionAge: cfg.MaxSessionAge.Duration,
		Limits: loginLimits(cfg)}
}

// loginLimits converts the configuration's limits (hash_budget in MiB) to the engine's (KiB).
func loginLimits(cfg *config.Server) engine.LoginLimits {
	return engine.LoginLimits{HashBudget: cfg.HashBudget * 1024, FailureBurst: cfg.FailedLoginBurst,
		FailureInterval: cfg.FailedLoginEvery.Duration}
}

// diffKeys compares two gateway configurations key by key (the toml-tagged fields, after defaults) and
// splits the keys that differ into those a reload applies and those that need a restart.
func diffKeys(old, next *config.Server) (reloadable, restart []string) {
	a, b := reflect.ValueOf(old).Elem(), reflect.ValueOf(next).Elem()
	for i := range a.NumField() {
		key := a.Type().Field(i).Tag.Get("toml")
		if key == "" || key == "-" || reflect.DeepEqual(a.Field(i).Interface(), b.Field(i).Interface()) {
			continue
		}
		if slices.Contains(ReloadableKeys, key) {
			reloadable = append(reloadable, key)
		} else {
			restart = append(restart, key)
		}
	}
	return reloadable, restart
}

// onHUP reloads on every SIGHUP until stop is closed; a failed reload is logged and changes nothing.
func (r *reloader) onHUP(stop <-chan struct{}) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-stop:
			return
		case <-hup:
			if _, err := r.reload(); err != nil {
				r.log.Error("reload failed; nothing changed", "err", err)
			}
		}
	}
}

// api is the gateway's admin API (engine.Server.API) with POST /reload.
func (r *reloader) api() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", r.srv.API())
	mux.HandleFunc("POST /reload", func(w http.ResponseWriter, _ *http.Request) {
		res, err := r.reload()
		switch {
		case errors.Is(err, errRestartOnly):
			control.WriteError(w, http.StatusConflict, err.Error())
		case err != nil:
			control.WriteError(w, http.StatusUnprocessableEntity, err.Error())
		default:
			control.WriteJSON(w, http.StatusOK, res)
		}
	})
	return mux
}
