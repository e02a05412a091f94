package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"

	"github.com/salvovpn/salvo/config"
	"github.com/salvovpn/salvo/engine/users"
)

const userUsage = `Usage:
  salvo user add     [--file USERS | --store DB] [--ipv4 ADDR] [--ipv6 ADDR] [--password-stdin] LOGIN
  salvo user passwd  [--file USERS | --store DB] [--password-stdin] LOGIN
  salvo user del     [--file USERS | --store DB] LOGIN
  salvo user disable [--file USERS | --store DB] LOGIN
  salvo user enable  [--file USERS | --store DB] LOGIN
  salvo user list    [--file USERS | --store DB]

Manages the gateway's users file or, with --store (the store of auth = "postgres", a
postgres:// URL or key=value string without a password), the users several gateways
share. Passwords are read from a prompt (twice) or, with --password-stdin, from the
first line of standard input; never from the command line. They are stored as argon2id
hashes with a per-user salt. A disabled user keeps their hash and fixed addresses but
cannot log in; list marks them "disabled". A users file change needs salvo reload (or
SIGHUP); a store change reaches every gateway within a second, ending the sessions of a
user removed, disabled or given a new password.

`

const userSubcommands = "add, passwd, del, disable, enable, list"

// userFlags says which flags each subcommand takes beyond --file and --store, which all take.
var userFlags = map[string][]string{
	"add":     {"ipv4", "ipv6", "password-stdin"},
	"passwd":  {"password-stdin"},
	"del":     {},
	"disable": {},
	"enable":  {},
	"list":    {},
}

func cmdUser(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, userUsage)
		return usageError{errors.New("user: missing subcommand (" + userSubcommands + ")")}
	}
	sub := args[0]
	switch sub {
	case "-h", "--help", "-help", "help":
		fmt.Fprint(stdout, userUsage)
		return nil
	}
	allowed, ok := userFlags[sub]
	if !ok {
		return usageError{fmt.Errorf("user: unknown subcommand %q (%s)", sub, userSubcommands)}
	}
	fs := newFlags("user "+sub, userUsage, stdout)
	file := fs.String("file", "/etc/salvo/users", "users file")
	dsn := fs.String("store", "", "the shared user store (auth = \"postgres\") instead of a users file")
	ipv4 := fs.String("ipv4", "", "fixed IPv4 tunnel address for this user (add)")
	ipv6 := fs.String("ipv6", "", "fixed IPv6 tunnel address for this user (add)")
	fromStdin := fs.Bool("password-stdin", false, "read the password from standard input (add, passwd)")
	login, err := fs.parseArg(args[1:])
	if err != nil {
		return err
	}
	var stray error
	fs.Visit(func(f *flag.Flag) {
		if stray == nil && f.Name != "file" && f.Name != "store" && !slices.Contains(allowed, f.Name) {
			stray = usageError{fmt.Errorf("user %s: --%s does not apply to %s", sub, f.Name, sub)}
		}
	})
	if stray != nil {
		return stray
	}
	var set struct{ file, store bool }
	fs.Visit(func(f *flag.Flag) { set.file, set.store = set.file || f.Name == "file", set.store || f.Name == "store" })
	if set.file && set.store {
		return usageError{fmt.Errorf("user %s: --file and --store name two places; give one", sub)}
	}
	if sub == "list" {
		if login != "" {
			return usageError{fmt.Errorf("user list: unexpected argument %q", login)}
		}
	} else {
		if login == "" {
			return usageError{fmt.Errorf("user %s: missing LOGIN", sub)}
		}
		// Before any prompt: no point typing a password for a login the file cannot hold.
		if err := users.CheckLogin(login); err != nil {
			return usageError{fmt.Errorf("user %s: %w", sub, err)}
		}
	}

	var db userDB
	if set.store {
		if err := config.CheckStoreDSN(*dsn); err != nil {
			return usageError{fmt.Errorf("user %s: --store %w", sub, err)}
		}
		sdb, err := openStoreDB(*dsn)
		if err != nil {
			return err
		}
		defer sdb.close()
		db = sdb
	} else {
		store, err := users.Load(*file)
		if err != nil {
			if !(errors.Is(err, os.ErrNotExist) && sub == "add") {
				return err
			}
			store = users.New()
		}
		db = &fileDB{store: store, path: *file}
	}
	switch sub {
	case "list":
		list, err := db.list()
		if err != nil {
			return err
		}
		for _, u := range list {
			line := u.Login
			if u.FixedIPv4.IsValid() {
				line += " ipv4=" + u.FixedIPv4.String()
			}
			if u.FixedIPv6.IsValid() {
				line += " ipv6=" + u.FixedIPv6.String()
			}
			if u.Disabled {
				line += " disabled"
			}
			fmt.Fprintln(stdout, line)
		}
		return nil
	case "del":
		if err := db.del(login); err != nil {
			return err
		}
	case "disable", "enable":
		disable := sub == "disable"
		u, ok, err := db.lookup(login)
		if err != nil {
			return err
		}
		if ok && u.Disabled == disable {
			fmt.Fprintf(stderr, "user %q is already %sd; %s unchanged\n", login, sub, db)
			return nil
		}
		if err := db.setDisabled(login, disable); err != nil {
			return err
		}
	case "add", "passwd":
		var u users.User
		if sub == "add" {
			// Check the addresses before prompting for a password.
			u = users.User{Login: login}
			if *ipv4 != "" {
				if u.FixedIPv4, err = netip.ParseAddr(*ipv4); err != nil || !u.FixedIPv4.Is4() {
					return usageError{fmt.Errorf("user add: --ipv4 %q is not an IPv4 address", *ipv4)}
				}
			}
			if *ipv6 != "" {
				if u.FixedIPv6, err = netip.ParseAddr(*ipv6); err != nil || !u.FixedIPv6.Is6() {
					return usageError{fmt.Errorf("user add: --ipv6 %q is not an IPv6 address", *ipv6)}
				}
			}
		}
		pw, err := readPassword(stdin, stderr, *fromStdin)
		if err != nil {
			return err
		}
		hash, err := users.HashPassword(pw, users.DefaultParams, rand.Reader)
		clear(pw)
		if err != nil {
			return err
		}
		if sub == "passwd" {
			if err := db.setPassword(login, hash); err != nil {
				return err
			}
			break
		}
		u.Hash = hash
		if err := db.add(u); err != nil {
			return err
		}
	}
	done, err := db.commit()
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "%s updated (%s %s); %s\n", db, sub, login, done)
	return nil
}

func readPassword(stdin io.Reader, stderr io.Writer, fromStdin bool) ([]byte, error) {
	if fromStdin {
		line, err := bufio.NewReader(stdin).ReadBytes('\n')
		if err != nil && len(line) == 0 {
			return nil, usageError{errors.New("no password on standard input")}
		}
		pw := bytes.TrimRight(line, "\r\n")
		if len(pw) == 0 {
			return nil, usageError{errors.New("empty password")}
		}
		return pw, nil
	}
	fd := int(os.Stdin.Fd())
	a, err := config.TerminalPrompt(fd, stderr, "Password: ")()
	if errors.Is(err, config.ErrNotTerminal) {
		return nil, usageError{fmt.Errorf("%w: use --password-stdin", err)}
	}
	if err != nil {
		return nil, err
	}
	b, err := config.TerminalPrompt(fd, stderr, "Again: ")()
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(a, b) {
		return nil, usageError{errors.New("passwords do not match")}
	}
	if len(a) == 0 {
		return nil, usageError{errors.New("empty password")}
	}
	return a, nil
}
