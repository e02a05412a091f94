// Command salvo is the Salvo VPN gateway and client. The logic lives in packages; this file parses
// arguments, sets up logging and maps errors to exit codes.
//
// Arguments are parsed with the standard library's flag package behind one small wrapper (flagSet),
// not with cobra or kong: the CLI is eleven flat commands with a handful of options each, and the wrapper
// is what makes them consistent (--name spelling, help on standard output, one error line, exit 2).
// What a framework would add for free is had here from the same help text: `salvo help CMD`, the man
// page (packaging/gen) and the shell completion, which a test holds to the help (completion_test.go).
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/salvovpn/salvo/config"
	"github.com/salvovpn/salvo/engine"
	"github.com/salvovpn/salvo/internal/buildinfo"
)

// Exit codes, documented in `salvo --help`.
const (
	exitOK      = 0
	exitFailure = 1 // runtime failure
	exitUsage   = 2 // bad arguments or configuration
	exitLogin   = 3 // the client could not log in (unreachable, wrong password, wrong key, rate limited)
	exitEnded   = 4 // the gateway ended the client's session for good (revoked, replaced, kicked)
)

const usage = `salvo: a batched userspace VPN gateway and client

Usage:
  salvo keygen [--out FILE]              make a gateway key pair (private key to FILE, public key printed;
                                          without --out the private key is printed: | salvo pubkey)
  salvo pubkey < private.key              print the public key of a private key
  salvo user SUBCOMMAND ...               manage the gateway's users file: add, del, passwd, disable, enable, list
  salvo server --config server.toml       run the gateway (--check: check the configuration and exit)
  salvo client-config [--config server.toml] [--qr] USER
                                          print a client.toml for USER (gateway address and key, no password)
  salvo client --config client.toml       run the client
  salvo client --down --config FILE       lift what a crashed client left (its leak guard: the kill switch)
  salvo status [--socket PATH] [--json]   show a running gateway's or client's sessions and counters
  salvo kick [--socket PATH] USER         end USER's sessions on a running gateway (they are told and stop)
  salvo reload [--socket PATH]            make a running gateway reread its configuration and users file
  salvo version                          print the version, the commit and the Go version

Run 'salvo help COMMAND' (or 'salvo COMMAND --help') for a command's options.

Exit codes:
  0  success
  1  runtime failure
  2  bad arguments or configuration (the message names the file, line and field)
  3  the client could not log in (message says: unreachable, wrong password, wrong server key, rate limited)
  4  the gateway ended the client's session and it must not reconnect (revoked, replaced, kicked)
`

type usageError struct{ error }

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	var err error
	switch args[0] {
	case "-h", "--help", "help":
		if len(args) > 1 && args[0] == "help" { // salvo help COMMAND: the command's --help
			return run([]string{args[1], "--help"}, stdin, stdout, stderr)
		}
		fmt.Fprint(stdout, usage)
		return exitOK
	case "version", "--version":
		err = cmdVersion(args[1:], stdout)
	case "keygen":
		err = cmdKeygen(args[1:], stdout, stderr)
	case "pubkey":
		err = cmdPubkey(args[1:], stdin, stdout, stderr)
	case "user":
		err = cmdUser(args[1:], stdin, stdout, stderr)
	case "server":
		err = cmdServer(args[1:], stdout, stderr)
	case "client":
		err = cmdClient(args[1:], stdin, stdout, stderr)
	case "client-config":
		err = cmdClientConfig(args[1:], stdout, stderr)
	case "status":
		err = cmdStatus(args[1:], stdout, stderr)
	case "kick":
		err = cmdKick(args[1:], stdout, stderr)
	case "reload":
		err = cmdReload(args[1:], stdout, stderr)
	default:
		fmt.Fprintf(stderr, "salvo: unknown command %q\n\n%s", args[0], usage)
		return exitUsage
	}
	return exitCode(err, stderr)
}

func cmdVersion(args []string, stdout io.Writer) error {
	fs := newFlags("version", "Usage: salvo version\n\nPrints the version (the package's, for an installed salvo), the commit and the\nGo version it was built with.\n\n", stdout)
	if err := parse(fs, args); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "salvo", buildinfo.Read())
	return nil
}

func exitCode(err error, stderr io.Writer) int {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	fmt.Fprintln(stderr, "salvo:", err)
	var ue usageError
	var ce *config.Error // also what the daemon reports about files the configuration names
	var le loginFailure
	var se *engine.SessionEndedError
	switch {
	case errors.As(err, &ue), errors.As(err, &ce):
		return exitUsage
	case errors.As(err, &se):
		return exitEnded
	case errors.As(err, &le):
		return exitLogin
	}
	return exitFailure
}

// flagSet is a command's flags with its help text. --help (or -h) prints the text and the options to
// standard output, so `salvo server --help | less` works; a bad flag is a usage error naming --help.
type flagSet struct {
	*flag.FlagSet
	text   string
	stdout io.Writer
}

func newFlags(name, text string, stdout io.Writer) *flagSet {
	fs := &flagSet{FlagSet: flag.NewFlagSet(name, flag.ContinueOnError), text: text, stdout: stdout}
	// The flag package would print its error and the usage itself; parseFlags returns the error instead,
	// which main prints once, with a pointer to --help.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// parseFlags parses args, printing the help to standard output when it was asked for.
func (fs *flagSet) parseFlags(args []string) error {
	for _, a := range args {
		if a == "--" {
			break
		}
		if a == "-h" || a == "-help" || a == "--help" {
			fs.printHelp()
			return flag.ErrHelp
		}
	}
	if err := fs.Parse(args); err != nil {
		return usageError{fmt.Errorf("%s: %w (see 'salvo %s --help')", fs.Name(), err, fs.Name())}
	}
	return nil
}

// printHelp prints the command's text and its options, spelled as the usage lines spell them (--name).
func (fs *flagSet) printHelp() {
	fmt.Fprint(fs.stdout, fs.text)
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	if n > 0 {
		fmt.Fprintln(fs.stdout, "Options:")
	}
	fs.VisitAll(func(f *flag.Flag) {
		arg, usage := flag.UnquoteUsage(f)
		line := "  --" + f.Name
		if arg != "" {
			line += " " + arg
		}
		if f.DefValue != "" && f.DefValue != "false" {
			usage += fmt.Sprintf(" (default %q)", f.DefValue)
		}
		fmt.Fprintf(fs.stdout, "%s\n      %s\n", line, usage)
	})
}

// parseArg parses args holding flags and at most one argument (a login), the flags before or after it.
// It returns the argument, or "" if there is none.
func (fs *flagSet) parseArg(args []string) (string, error) {
	if err := fs.parseFlags(args); err != nil {
		return "", err
	}
	if fs.NArg() == 0 {
		return "", nil
	}
	arg := fs.Arg(0)
	if err := fs.parseFlags(fs.Args()[1:]); err != nil {
		return "", err
	}
	if fs.NArg() > 0 {
		return "", usageError{fmt.Errorf("%s: unexpected argument %q", fs.Name(), fs.Arg(0))}
	}
	return arg, nil
}

func parse(fs *flagSet, args []string) error {
	if err := fs.parseFlags(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("%s: unexpected argument %q", fs.Name(), fs.Arg(0))}
	}
	return nil
}

// newLogger logs at level (log_level, checked by config) through lv, which a reload may change.
func newLogger(format, level string, lv *slog.LevelVar, w io.Writer) *slog.Logger {
	_ = lv.UnmarshalText([]byte(level))
	opts := &slog.HandlerOptions{Level: lv}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
