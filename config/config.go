// Package config loads and validates the TOML configuration files of the
// Salvo gateway (LoadServer) and client (LoadClient).
//
// Keys are snake_case. Unknown keys are errors rather than being ignored, so
// a typo never silently leaves a setting at its default. Every error has the
// form "<file>:<line>: <key>: <problem>" (the line is omitted when the key is
// missing altogether), and LoadServer/LoadClient report every problem found,
// joined with newlines, not just the first.
package config

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Duration is a time.Duration written in TOML as a string such as "25s".
type Duration struct{ time.Duration }

// UnmarshalText parses a Go duration string ("25s", "1m30s").
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("invalid duration %q: write it with a unit, for example \"25s\" or \"2m\"", string(b))
	}
	d.Duration = v
	return nil
}

// MarshalText writes the duration as a Go duration string.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// Error is one problem in a configuration file.
type Error struct {
	File    string
	Line    int    // 1-based; 0 when the key is absent from the file
	Key     string // TOML key; empty for file-level problems
	Problem string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		b.WriteString(":" + strconv.Itoa(e.Line))
	}
	if e.Key != "" {
		b.WriteString(": " + e.Key)
	}
	b.WriteString(": " + e.Problem)
	return b.String()
}

// loader carries what is needed to turn a problem into an *Error with a line.
type loader struct {
	path  string   // absolute path of the file
	lines []string // file text, for finding the line of a key
	md    toml.MetaData
	errs  []error
}

// decode reads path into v (a pointer to a struct with toml tags). It
// rejects keys that v has no field for, spelled exactly as in the tag:
// the TOML library would otherwise match keys case-insensitively.
// special maps a key to the problem reported when it is present.
func decode(path string, v any, special map[string]string) (*loader, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, &Error{File: path, Problem: err.Error()}
	}
	data, err := os.ReadFile(abs)
	if err != nil {
		return nil, &Error{File: path, Problem: "cannot read configuration: " + errors.Unwrap(err).Error()}
	}
	l := &loader{path: abs, lines: strings.Split(string(data), "\n")}
	l.md, err = toml.Decode(string(data), v)
	if err != nil {
		return nil, l.tomlError(err)
	}
	known := tomlKeys(v)
	reported := map[string]bool{}
	report := func(top string) {
		if reported[top] {
			return
		}
		reported[top] = true
		switch {
		case special[top] != "":
			l.fail(top, special[top])
		case l.md.Type(top) == "Hash":
			l.fail(top, "unknown table"+suggest(top, known))
		default:
			l.fail(top, "unknown key"+suggest(top, known))
		}
	}
	// Keys the library found no field for.
	for _, k := range l.md.Undecoded() {
		report(k[0])
	}
	// Keys it matched to a field case-insensitively ("MTU" for "mtu"):
	// accept only the documented spelling.
	for _, k := range l.md.Keys() {
		if !known[k[0]] {
			report(k[0])
		}
	}
	if err := l.err(); err != nil {
		return nil, err
	}
	return l, nil
}

// tomlKeys returns the toml tag names of the struct v points to.
func tomlKeys(v any) map[string]bool {
	t := reflect.TypeOf(v).Elem()
	keys := map[string]bool{}
	for i := 0; i < t.NumField(); i++ {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("toml"), ",")
		if name != "" && name != "-" {
			keys[name] = true
		}
	}
	return keys
}

// suggest names a known key the unknown one probably meant: the same key
// written in another case or with dashes or without underscores.
func suggest(key string, known map[string]bool) string {
	norm := func(s string) string {
		return strings.NewReplacer("_", "", "-", "").Replace(strings.ToLower(s))
	}
	for k := range known {
		if norm(k) == norm(key) {
			return fmt.Sprintf(" (did you mean %q?)", k)
		}
	}
	return ""
}

var (
	tomlLineErr = regexp.MustCompile(`^toml: line (\d+) \(last key "([^"]*)"\): (.*)$`)
	tomlKeyErr  = regexp.MustCompile(`^toml: \(last key "([^"]*)"\): (.*)$`)
)

// tomlError converts the library's errors into *Error. Syntax errors on a
// line holding `password` lose their detail, which may quote the secret.
func (l *loader) tomlError(err error) error {
	e := &Error{File: l.path, Problem: err.Error()}
	var pe toml.ParseError
	if errors.As(err, &pe) {
		e.Line, e.Key, e.Problem = pe.Position.Line, pe.LastKey, pe.Message
	} else if m := tomlLineErr.FindStringSubmatch(err.Error()); m != nil {
		e.Line, _ = strconv.Atoi(m[1])
		e.Key, e.Problem = m[2], m[3]
	} else if m := tomlKeyErr.FindStringSubmatch(err.Error()); m != nil {
		e.Key, e.Problem = m[1], m[2]
		e.Line = l.keyLine(e.Key)
	}
	// Syntax errors often come without a key: name the one assigned on the
	// offending line, if any.
	if e.Key == "" && e.Line > 0 && e.Line <= len(l.lines) {
		if m := assignedKey.FindStringSubmatch(l.lines[e.Line-1]); m != nil {
			e.Key = m[1]
		}
	}
	if e.Line > 0 && e.Line <= len(l.lines) && strings.HasPrefix(strings.TrimSpace(l.lines[e.Line-1]), "password") ||
		e.Key == "password" {
		e.Problem = "syntax error (details hidden: this line may hold a password)"
	}
	if e.Line == 0 && e.Key == "" {
		e.Problem = "invalid TOML: " + e.Problem
	}
	return e
}

// keyLine finds the line on which a top-level key is assigned. The TOML
// library does not expose key positions, so scan the text; configurations
// are flat, which makes the first `key =` the assignment.
func (l *loader) keyLine(key string) int {
	for i, ln := range l.lines {
		s := strings.TrimLeft(ln, " \t")
		for _, k := range []string{key, `"` + key + `"`, `'` + key + `'`, "[" + key + "]", "[[" + key + "]]"} {
			rest, ok := strings.CutPrefix(s, k)
			if !ok {
				continue
			}
			rest = strings.TrimLeft(rest, " \t")
			if k[0] == '[' || strings.HasPrefix(rest, "=") || strings.HasPrefix(rest, ".") {
				return i + 1
			}
		}
	}
	return 0
}

var (
	assignment  = regexp.MustCompile(`^\s*[A-Za-z0-9_"'-]+\s*=`)
	assignedKey = regexp.MustCompile(`^\s*([A-Za-z0-9_-]+)\s*=`)
)

// valueLine finds the line of one element of an array assigned to key, so
// that an error in a multi-line list points at the bad element.
func (l *loader) valueLine(key, value string) int {
	start := l.keyLine(key)
	if start == 0 {
		return 0
	}
	for i := start - 1; i < len(l.lines); i++ {
		if i > start-1 && assignment.MatchString(l.lines[i]) {
			break
		}
		if strings.Contains(l.lines[i], `"`+value+`"`) || strings.Contains(l.lines[i], `'`+value+`'`) {
			return i + 1
		}
	}
	return start
}

func (l *loader) failAt(line int, key, problem string) {
	l.errs = append(l.errs, &Error{File: l.path, Line: line, Key: key, Problem: problem})
}

// fail records a problem with key, located at the key's line.
func (l *loader) fail(key, problem string) { l.failAt(l.keyLine(key), key, problem) }

// failf is fail with formatting.
func (l *loader) failf(key, format string, args ...any) { l.fail(key, fmt.Sprintf(format, args...)) }

// failElem records a problem with one element of an array.
func (l *loader) failElem(key, value, problem string) {
	l.failAt(l.valueLine(key, value), key, problem)
}

func (l *loader) err() error {
	switch len(l.errs) {
	case 0:
		return nil
	case 1:
		return l.errs[0]
	}
	return errors.Join(l.errs...)
}

func (l *loader) defined(key string) bool { return l.md.IsDefined(key) }

// resolvePath makes p absolute relative to the configuration file's
// directory, so a configuration keeps working whatever the working
// directory of the process.
func (l *loader) resolvePath(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(filepath.Dir(l.path), p)
}

// requireFile checks a required path key and returns it resolved.
func (l *loader) requireFile(key, p string) string {
	if strings.TrimSpace(p) == "" {
		if l.defined(key) {
			l.fail(key, "must not be empty")
		} else {
			l.failAt(0, key, "missing: this key is required")
		}
		return p
	}
	return l.resolvePath(p)
}

// Unix socket paths must fit in sockaddr_un.sun_path (108 bytes with NUL).
const maxSocketPath = 107

func (l *loader) checkSocket(key string, p *string, def string) {
	if !l.defined(key) {
		*p = def
		return
	}
	if err := CheckSocketPath(*p); err != nil {
		l.fail(key, err.Error())
	}
}

// CheckSocketPath says whether p can name a control socket: an absolute path that fits a unix socket
// address. The configuration's control_socket and the --control-socket flag obey it.
func CheckSocketPath(p string) error {
	switch {
	case !filepath.IsAbs(p):
		return fmt.Errorf("%q must be an absolute path", p)
	case len(p) > maxSocketPath:
		return fmt.Errorf("path is %d bytes; a unix socket path is limited to %d", len(p), maxSocketPath)
	}
	return nil
}

func (l *loader) checkIfName(key string, name *string, def string) {
	if !l.defined(key) && def != "" {
		*name = def
		return
	}
	if err := checkIfName(*name); err != nil {
		l.fail(key, err.Error())
	}
}

// checkIfName applies the kernel's rules for interface names (IFNAMSIZ).
func checkIfName(name string) error {
	if name == "" || len(name) > 15 {
		return fmt.Errorf("interface name %q must be 1..15 bytes", name)
	}
	if name == "." || name == ".." {
		return fmt.Errorf("interface name %q is not allowed", name)
	}
	for _, r := range name {
		if r == '/' || r == ':' || r <= ' ' || r == 0x7f {
			return fmt.Errorf("interface name %q must not contain '/', ':', spaces or control characters", name)
		}
	}
	return nil
}

func (l *loader) checkLog(format, level *string) {
	if !l.defined("log_format") {
		*format = "text"
	} else if *format != "text" && *format != "json" {
		l.failf("log_format", "%q is not one of \"text\", \"json\"", *format)
	}
	if !l.defined("log_level") {
		*level = "info"
	} else {
		switch *level {
		case "debug", "info", "warn", "error":
		default:
			l.failf("log_level", "%q is not one of \"debug\", \"info\", \"warn\", \"error\"", *level)
		}
	}
}

// parsePrefixes checks a list of routes. Host bits must be zero: a route
// written 10.1.2.3/8 is more likely a mistake than a way to say 10.0.0.0/8.
// checkBatchSize defaults and bounds batch_size.
func (l *loader) checkBatchSize(n *int) {
	if !l.defined("batch_size") {
		*n = DefaultBatchSize
		return
	}
	if *n < 1 || *n > MaxBatchSize {
		l.failf("batch_size", "%d is outside 1..%d", *n, MaxBatchSize)
	}
}

func (l *loader) parsePrefixes(key string, list []string) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(list))
	seen := map[netip.Prefix]bool{}
	for _, s := range list {
		p, err := netip.ParsePrefix(s)
		switch {
		case err != nil:
			l.failElem(key, s, fmt.Sprintf("%q is not a prefix such as \"10.0.0.0/8\" or \"2001:db8::/32\"", s))
			continue
		case p.Addr().Is4In6():
			l.failElem(key, s, fmt.Sprintf("%q is an IPv4-mapped IPv6 prefix; write it as plain IPv4", s))
			continue
		case p != p.Masked():
			l.failElem(key, s, fmt.Sprintf("%q has host bits set (did you mean %q?)", s, p.Masked().String()))
			continue
		case seen[p]:
			l.failElem(key, s, fmt.Sprintf("%q is listed twice", s))
			continue
		}
		seen[p] = true
		out = append(out, p)
	}
	return out
}

// KeyError is a problem found after loading with what key names (a file it points at is missing or
// malformed, an address it holds is not on this host), as an *Error at the key's line of the file at path,
// like the loader's own. The CLI exits 2 for it, as for any configuration error.
func KeyError(path, key string, err error) error {
	l := &loader{path: path}
	if b, rerr := os.ReadFile(path); rerr == nil {
		l.lines = strings.Split(string(b), "\n")
	}
	return &Error{File: path, Line: l.keyLine(key), Key: key, Problem: err.Error()}
}
