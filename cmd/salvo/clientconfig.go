package main

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode"

	"github.com/BurntSushi/toml"
	"github.com/skip2/go-qrcode"

	"github.com/salvovpn/salvo/config"
	"github.com/salvovpn/salvo/daemon"
	"github.com/salvovpn/salvo/engine/users"
)

const clientConfigUsage = `Usage: salvo client-config [--config server.toml] [--password-file PATH] [--qr] USER

Prints a client configuration for USER to standard output: the gateway's
public_endpoint and public key (from private_key_file, refused if others can
read it, as the gateway refuses it), USER, and a password_file for the client
to create. It holds no password and no hash, so it can be copied as it is:

  salvo client-config alice > client.toml

USER must be in the gateway's users file; for a disabled user the file is
printed with a warning.

`

func cmdClientConfig(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("client-config", clientConfigUsage, stdout)
	path := fs.String("config", "/etc/salvo/server.toml", "the gateway's configuration file")
	qr := fs.Bool("qr", false, "print the configuration, without its comments, as a QR code for a terminal")
	pwFile := fs.String("password-file", "", "the client's password_file (default /etc/salvo/USER.password)")
	login, err := fs.parseArg(args)
	if err != nil {
		return err
	}
	if login == "" {
		return usageError{errors.New("client-config: missing USER")}
	}
	if err := users.CheckLogin(login); err != nil {
		return usageError{fmt.Errorf("client-config: %w", err)}
	}
	if *pwFile == "" {
		*pwFile = "/etc/salvo/" + login + ".password"
	} else if strings.ContainsFunc(*pwFile, unicode.IsControl) {
		return usageError{errors.New("client-config: --password-file must be a path without control characters")}
	}
	cfg, err := config.LoadServer(*path)
	if err != nil {
		return usageError{err}
	}
	if cfg.PublicEndpoint == "" {
		return config.KeyError(cfg.Path, "public_endpoint", errors.New(
			`missing: salvo client-config needs the host:port clients reach this gateway at, such as public_endpoint = "vpn.example.com:51820"`))
	}
	// With the checks the gateway itself makes: a key or users file others can read is refused here too.
	key, err := daemon.LoadStaticKey(cfg.PrivateKeyFile)
	if err != nil {
		return config.KeyError(cfg.Path, "private_key_file", err)
	}
	var u users.User
	if cfg.Auth == "file" {
		store, err := daemon.LoadUsers(cfg.UsersFile)
		if err != nil {
			return config.KeyError(cfg.Path, "users_file", err)
		}
		var ok bool
		if u, ok = store.Lookup(login); !ok {
			return usageError{fmt.Errorf("client-config: user %q is not in users file %s (salvo user add --file %s %s)", login, cfg.UsersFile, cfg.UsersFile, login)}
		}
	} // else auth_command decides, and it cannot be asked without the password

	text, err := clientConfig(cfg.PublicEndpoint, key.Public.String(), login, *pwFile, !*qr)
	if err != nil {
		return err
	}
	if *qr {
		// Medium error correction: a terminal's rendering and a phone camera are not perfect.
		code, err := qrcode.New(text, qrcode.Medium)
		if err != nil {
			return fmt.Errorf("client-config: QR code: %w", err)
		}
		text = halfBlocks(code.Bitmap())
	}
	if u.Disabled {
		fmt.Fprintf(stderr, "salvo: warning: user %q is disabled in %s: it cannot log in until 'salvo user enable --file %s %s' and salvo reload\n",
			login, cfg.UsersFile, cfg.UsersFile, login)
	}
	_, err = io.WriteString(stdout, text)
	return err
}

// clientConfig writes a client's configuration file. The values go through the TOML encoder, so no login,
// endpoint or path can make the file invalid or add a key; the one comment that names the password file
// quotes it for the shell, and passwordFile holds no line break.
// Without comments it is the four keys alone, which keeps a QR code of it small.
func clientConfig(endpoint, serverKey, login, passwordFile string, comments bool) (string, error) {
	var b strings.Builder
	if comments {
		b.WriteString(`# Salvo client configuration, written by "salvo client-config" on the gateway.
# It holds no secret. "salvo client --help" shows every other key and its default.

`)
	}
	for _, kv := range []struct {
		comment    string
		key, value string
	}{
		{"# Where the gateway is (its public_endpoint).", "server", endpoint},
		{"# The gateway's public key: the client logs in only to the gateway holding its private key.", "server_public_key", serverKey},
		{"", "username", login},
		{"\n# The password is never written here. Create this file on the client, mode 0600, and write the\n" +
			"# password into it on one line with an editor (not on a command line: shell history keeps it):\n" +
			"#   install -m 600 /dev/null " + shellQuote(passwordFile), "password_file", passwordFile},
	} {
		if comments && kv.comment != "" {
			b.WriteString(kv.comment + "\n")
		}
		if err := toml.NewEncoder(&b).Encode(map[string]string{kv.key: kv.value}); err != nil {
			return "", fmt.Errorf("client-config: %s: %w", kv.key, err)
		}
	}
	return b.String(), nil
}

// shellQuote returns s as one shell word: as it is if it holds only characters the shell leaves alone,
// else in single quotes.
func shellQuote(s string) string {
	plain := func(r rune) bool {
		return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("@%+=:,./_-", r)
	}
	if s != "" && !strings.ContainsFunc(s, func(r rune) bool { return !plain(r) }) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// halfBlocks draws a QR code's modules (true: dark) two rows to a line with half-block characters, black
// on white whatever the terminal's own colours, since a scanner wants dark modules on a light ground. The
// bitmap includes the quiet zone.
func halfBlocks(bitmap [][]bool) string {
	var b strings.Builder
	for y := 0; y < len(bitmap); y += 2 {
		b.WriteString("\x1b[30;107m")
		for x, top := range bitmap[y] {
			bottom := y+1 < len(bitmap) && bitmap[y+1][x]
			switch {
			case top && bottom:
				b.WriteString("█")
			case top:
				b.WriteString("▀")
			case bottom:
				b.WriteString("▄")
			default:
				b.WriteString(" ")
			}
		}
		b.WriteString("\x1b[0m\n")
	}
	return b.String()
}
