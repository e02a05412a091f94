// Command gen writes the files of the salvo package that are made from salvo itself, so that they cannot
// drift from it: the example configurations /etc/salvo/server.toml and client.toml (config.ExampleServer
// and config.ExampleClient under a header about the units) and the man page salvo(1), made from the help
// text of the salvo binary it is given (`salvo --help` and `salvo help COMMAND` for every command listed
// there). scripts/package.sh runs it:
//
//	go run ./packaging/gen --salvo bin/package/salvo --out bin/package --version 0.0.0~git20260101.abc1234 --date 2026-01-01
package main

import (
	"bytes"
	"compress/gzip"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/salvovpn/salvo/config"
)

const serverHeader = `# Installed by the salvo package as an example: salvo-server.service runs
#   salvo server --config /etc/salvo/server.toml --control-socket /run/salvo/server/control.sock
# as the user salvo, so the key and the users file must belong to salvo (the package makes both
# when they are missing; after copying your own: chown salvo: server.key users). The unit's
# --control-socket replaces control_socket below.

`

const clientHeader = `# Installed by the salvo package as an example: salvo-client@NAME.service runs
#   salvo client --config /etc/salvo/NAME.toml --control-socket /run/salvo/client-NAME/control.sock
# so salvo-client@client uses this file. For a second tunnel copy it to /etc/salvo/NAME.toml and give
# it its own tun_name, fwmark, route_table and rule_priority (instances claim them). The unit's
# --control-socket replaces control_socket below; salvo status --socket names it.

`

func main() {
	salvo := flag.String("salvo", "bin/salvo", "the salvo binary whose help text makes the man page")
	out := flag.String("out", "", "directory to write server.toml, client.toml and salvo.1.gz into")
	version := flag.String("version", "", "version the man page names")
	date := flag.String("date", "", "date the man page names (YYYY-MM-DD)")
	flag.Parse()
	if *out == "" || *version == "" || *date == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: gen --salvo BIN --out DIR --version V --date YYYY-MM-DD")
		os.Exit(2)
	}
	if err := run(*salvo, *out, *version, *date); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func run(salvo, out, version, date string) error {
	for name, text := range map[string]string{
		"server.toml": serverHeader + config.ExampleServer(),
		"client.toml": clientHeader + config.ExampleClient(),
	} {
		if err := os.WriteFile(filepath.Join(out, name), []byte(text), 0o644); err != nil {
			return err
		}
	}
	help := func(args ...string) (string, error) {
		b, err := exec.Command(salvo, args...).Output()
		if err != nil {
			return "", fmt.Errorf("%s %s: %w", salvo, strings.Join(args, " "), err)
		}
		return string(b), nil
	}
	usage, err := help("--help")
	if err != nil {
		return err
	}
	var pages []page
	for _, cmd := range commands(usage) {
		text, err := help("help", cmd)
		if err != nil {
			return err
		}
		pages = append(pages, page{cmd, text})
	}
	man, err := manPage(usage, pages, version, date)
	if err != nil {
		return err
	}
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	zw.Name = "salvo.1" // no ModTime: the same input makes the same file
	zw.Write([]byte(man))
	if err := zw.Close(); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(out, "salvo.1.gz"), gz.Bytes(), 0o644)
}

type page struct{ cmd, text string }

// usageLine is a command line of `salvo --help`: "  salvo COMMAND ...".
var usageLine = regexp.MustCompile(`(?m)^  salvo ([a-z]+)`)

// commands returns the commands `salvo --help` lists, in its order, each once.
func commands(usage string) []string {
	var cmds []string
	seen := map[string]bool{}
	for _, m := range usageLine.FindAllStringSubmatch(usage, -1) {
		if !seen[m[1]] {
			seen[m[1]] = true
			cmds = append(cmds, m[1])
		}
	}
	return cmds
}

// manPage lays `salvo --help` out as salvo(1): its first line is NAME, its Usage block SYNOPSIS, the
// paragraphs between DESCRIPTION, its Exit codes EXIT STATUS; each command's help follows under
// COMMANDS as it is printed (it is laid out for a terminal already).
func manPage(usage string, pages []page, version, date string) (string, error) {
	name, rest, ok := strings.Cut(usage, "\n")
	summary, found := strings.CutPrefix(name, "salvo: ")
	if !ok || !found {
		return "", errors.New("salvo --help does not start with \"salvo: SUMMARY\"")
	}
	synopsis, desc, exits, err := sections(rest)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, ".TH SALVO 1 %s %s \"User Commands\"\n", quote(date), quote("salvo "+version))
	fmt.Fprintf(&b, ".SH NAME\nsalvo \\- %s\n", escape(summary))
	fmt.Fprintf(&b, ".SH SYNOPSIS\n%s", verbatim(synopsis))
	fmt.Fprintf(&b, ".SH DESCRIPTION\n%s\n", escape(strings.Join(strings.Fields(desc), " ")))
	b.WriteString(".SH COMMANDS\n")
	for _, p := range pages {
		fmt.Fprintf(&b, ".SS %s\n%s", quote("salvo "+p.cmd), verbatim(p.text))
	}
	b.WriteString(".SH EXIT STATUS\n")
	for _, line := range strings.Split(strings.TrimSpace(exits), "\n") {
		code, what, _ := strings.Cut(strings.TrimSpace(line), " ")
		fmt.Fprintf(&b, ".TP\n.B %s\n%s\n", escape(code), escape(strings.TrimSpace(what)))
	}
	b.WriteString(`.SH FILES
.TP
.I /etc/salvo/server.toml
the gateway's configuration (salvo-server.service)
.TP
.I /etc/salvo/NAME.toml
a client's configuration (salvo-client@NAME.service)
.TP
.I /var/lib/salvo
the gateway's leases (state_dir)
.TP
.I /run/salvo/claims
the claims of every gateway and client on the host
`)
	return b.String(), nil
}

// sections splits the rest of `salvo --help` into its Usage block, the paragraphs after it and its Exit
// codes block.
func sections(s string) (synopsis, desc, exits string, err error) {
	_, s, ok1 := strings.Cut(s, "\nUsage:\n")
	synopsis, s, ok2 := strings.Cut(s, "\n\n")
	desc, exits, ok3 := strings.Cut(s, "\nExit codes:\n")
	if !ok1 || !ok2 || !ok3 {
		return "", "", "", errors.New("salvo --help lacks a Usage: or an Exit codes: section")
	}
	return dedent(synopsis), desc, exits, nil
}

// dedent removes the two spaces every line of a help block starts with.
func dedent(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimPrefix(l, "  ")
	}
	return strings.Join(lines, "\n")
}

// verbatim is text set as printed: no filling, no adjusting, every line kept.
func verbatim(text string) string {
	var b strings.Builder
	b.WriteString(".nf\n")
	for _, line := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
		if line == "" {
			b.WriteString(".sp\n")
			continue
		}
		b.WriteString(escape(line) + "\n")
	}
	b.WriteString(".fi\n")
	return b.String()
}

// escape makes text safe as a roff text line: backslashes and hyphens escaped (so options stay minus
// signs that can be searched and pasted), and a leading . or ' kept from being read as a request.
func escape(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	s = strings.ReplaceAll(s, "-", `\-`)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s
}

// quote is s as one roff macro argument.
func quote(s string) string {
	return `"` + strings.ReplaceAll(strings.ReplaceAll(s, `\`, `\e`), `"`, `\(dq`) + `"`
}
