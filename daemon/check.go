package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"

	"github.com/salvovpn/salvo/config"
	"github.com/salvovpn/salvo/engine/ippool"
	"github.com/salvovpn/salvo/engine/tickets"
	"github.com/salvovpn/salvo/engine/users"
	"github.com/salvovpn/salvo/internal/secretfile"
	"github.com/salvovpn/salvo/protocol/handshake"
	"github.com/salvovpn/salvo/store/pgstore"
)

// serverInputs is what a gateway reads before it touches the system: its key, its users, and its address
// pools with the users' fixed addresses reserved in them.
type serverInputs struct {
	static handshake.StaticKeypair
	// auth is what logins are checked against: store (auth = "file"), command (auth = "command") or
	// pgUsers (auth = "postgres", with pg its database); the others are nil.
	auth         users.Authenticator
	store        *users.Store
	command      *users.Command
	pg           *pgstore.Store
	pgUsers      *pgstore.Backend
	pool4, pool6 *ippool.Pool // nil without that family
	tickets      *tickets.Ring
}

// loadServerInputs reads and checks everything cfg points at. Every error is a *config.Error naming the
// key (and the user, for a fixed address), so the CLI exits 2 for it as for a bad configuration file.
// A command's failed runs are logged to log.
func loadServerInputs(cfg *config.Server, log *slog.Logger) (*serverInputs, error) {
	var in serverInputs
	var err error
	var errs []error
	if in.static, err = LoadStaticKey(cfg.PrivateKeyFile); err != nil {
		errs = append(errs, config.KeyError(cfg.Path, "private_key_file", err))
	}
	switch cfg.Auth {
	case "command":
		if in.command, err = users.NewCommand(commandConfig(cfg), log); err != nil {
			errs = append(errs, config.KeyError(cfg.Path, "auth_command", err))
		} else {
			in.auth = in.command
		}
	case "postgres":
		if in.pg, in.pgUsers, err = openStore(cfg.Store, log); err != nil {
			errs = append(errs, config.KeyError(cfg.Path, "store", err))
		} else {
			in.auth = in.pgUsers
		}
	default:
		if in.store, err = LoadUsers(cfg.UsersFile); err != nil {
			errs = append(errs, config.KeyError(cfg.Path, "users_file", err))
		} else {
			in.auth = in.store
		}
	}
	if in.auth != nil {
		if in.pool4, err = poolFor(cfg, "ipv4_pool", cfg.Pool4, in.auth, func(u users.User) netip.Addr { return u.FixedIPv4 }); err != nil {
			errs = append(errs, err)
		}
		if in.pool6, err = poolFor(cfg, "ipv6_pool", cfg.Pool6, in.auth, func(u users.User) netip.Addr { return u.FixedIPv6 }); err != nil {
			errs = append(errs, err)
		}
	}
	if in.pg != nil {
		if in.tickets, err = tickets.NewRing(in.pg.TicketKeys(), nil); err != nil {
			errs = append(errs, config.KeyError(cfg.Path, "store", err))
		}
	} else if in.tickets, err = tickets.Load(cfg.TicketKeysFile, nil); err != nil {
		errs = append(errs, config.KeyError(cfg.Path, "ticket_keys_file", err))
	}
	if cfg.NAT && cfg.NATInterface != "" {
		if _, err := net.InterfaceByName(cfg.NATInterface); err != nil {
			errs = append(errs, config.KeyError(cfg.Path, "nat_interface", fmt.Errorf("no interface %q on this host", cfg.NATInterface)))
		}
	}
	if len(errs) > 0 {
		in.close()
		return nil, errors.Join(errs...)
	}
	return &in, nil
}

// close releases what loadServerInputs opened (the database pool).
func (in *serverInputs) close() {
	if in.pg != nil {
		in.pg.Close()
	}
}

// poolFor builds the pool of prefix (none if it is not set) with the users' fixed addresses of its family
// reserved; a fixed address outside it is an error naming the user and the users file.
func poolFor(cfg *config.Server, key string, prefix netip.Prefix, store users.Authenticator, fixed func(users.User) netip.Addr) (*ippool.Pool, error) {
	var reserved []netip.Addr
	var outside []string
	for _, u := range store.Users() {
		a := fixed(u)
		if !a.IsValid() {
			continue
		}
		if !prefix.IsValid() || !prefix.Contains(a) {
			outside = append(outside, fmt.Sprintf("user %q has fixed address %v", u.Login, a))
			continue
		}
		reserved = append(reserved, a)
	}
	if len(outside) > 0 {
		where := fmt.Sprintf("outside %s %v", key, prefix)
		if !prefix.IsValid() {
			where = "but " + key + " is not set"
		}
		return nil, config.KeyError(cfg.Path, key, fmt.Errorf("users file %s: %s, %s", cfg.UsersFile, strings.Join(outside, ", "), where))
	}
	if !prefix.IsValid() {
		return nil, nil
	}
	p, err := ippool.New(prefix, reserved...)
	if err != nil {
		return nil, config.KeyError(cfg.Path, key, err)
	}
	return p, nil
}

// CheckServer is `salvo server --check`: it reads and checks everything RunServer reads before it
// touches the system, and touches nothing.
func CheckServer(cfg *config.Server) error {
	in, err := loadServerInputs(cfg, slog.New(slog.DiscardHandler))
	if err == nil {
		in.close()
	}
	return err
}

// commandConfig is the auth command of cfg (auth = "command").
func commandConfig(cfg *config.Server) users.CommandConfig {
	return users.CommandConfig{Path: cfg.AuthCommand, Timeout: cfg.AuthTimeout.Duration}
}

// CheckClient is `salvo client --check`: the server's pinned key parses, and the password's source (a
// password_file) can be read; a prompt or password_env is not tried.
func CheckClient(cfg *config.Client) error {
	var errs []error
	if err := checkServerKey(cfg); err != nil {
		errs = append(errs, err)
	}
	if cfg.PasswordFile != "" {
		if err := secretfile.Check(cfg.PasswordFile, "password_file"); err != nil {
			errs = append(errs, config.KeyError(cfg.Path, "password_file", err))
		}
	}
	return errors.Join(errs...)
}

// checkServerKey refuses a server_public_key that does not parse, or is the example's placeholder.
func checkServerKey(cfg *config.Client) error {
	if cfg.ServerPublicKey == config.PlaceholderServerKey {
		return config.KeyError(cfg.Path, "server_public_key", errors.New("is the example's placeholder: paste the gateway's public key (salvo pubkey < server.key)"))
	}
	if _, err := handshake.ParseKey(cfg.ServerPublicKey); err != nil {
		return config.KeyError(cfg.Path, "server_public_key", err)
	}
	return nil
}

// fixedAddrs lists the users' fixed tunnel addresses by family.
func fixedAddrs(store users.Authenticator) (v4, v6 []netip.Addr) {
	for _, u := range store.Users() {
		if u.FixedIPv4.IsValid() {
			v4 = append(v4, u.FixedIPv4)
		}
		if u.FixedIPv6.IsValid() {
			v6 = append(v6, u.FixedIPv6)
		}
	}
	return v4, v6
}

// LoadUsers reads the users file after checking that only its owner can read it (it holds password
// hashes, which an attacker could try offline).
func LoadUsers(path string) (*users.Store, error) {
	if err := secretfile.Check(path, "users file"); err != nil {
		return nil, err
	}
	return users.Load(path)
}

// LoadStaticKey reads a base64 private key file written by `salvo keygen`, refusing one that others can
// read (secretfile).
func LoadStaticKey(path string) (handshake.StaticKeypair, error) {
	b, err := secretfile.Read(path, "private key file", 1024)
	if err != nil {
		return handshake.StaticKeypair{}, err
	}
	defer clear(b)
	priv, err := handshake.ParseKey(strings.TrimSpace(string(b)))
	if err != nil {
		return handshake.StaticKeypair{}, fmt.Errorf("private key %s: %w", path, err)
	}
	pub, err := handshake.PublicFromPrivate(priv)
	if err != nil {
		return handshake.StaticKeypair{}, fmt.Errorf("private key %s: %w", path, err)
	}
	return handshake.StaticKeypair{Private: priv, Public: pub}, nil
}
