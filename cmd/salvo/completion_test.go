package main

import (
	"os"
	"regexp"
	"slices"
	"testing"
)

// The completion files the package installs (packaging/nfpm.yaml).
var completionFiles = []string{"../../packaging/completion/salvo.bash", "../../packaging/completion/_salvo"}

var (
	usageCommand = regexp.MustCompile(`(?m)^  salvo ([a-z][a-z-]*)`)
	userLine     = regexp.MustCompile(`(?m)^  salvo user ([a-z]+)(.*)$`)
	helpOption   = regexp.MustCompile(`(?m)^  --([a-z][a-z-]*)`)
	anyOption    = regexp.MustCompile(`--([a-z][a-z-]*)`)
	// caseBlock is one branch of a shell case statement, "name) ... ;;": the files complete each command's
	// (and each user subcommand's) options in a branch of its own.
	caseBlock = regexp.MustCompile(`(?ms)^\s*([a-z][a-z-]*)\)(.*?);;`)
)

// TestCompletionMatchesHelp: the bash and zsh completion offer every command `salvo --help` lists, every
// user subcommand, and for each exactly the options its help lists, so that neither can drift.
func TestCompletionMatchesHelp(t *testing.T) {
	_, usage, _ := runCLI(t, "", "--help")
	want := map[string][]string{} // case branch -> options
	var commands []string
	for _, m := range usageCommand.FindAllStringSubmatch(usage, -1) {
		if slices.Contains(commands, m[1]) {
			continue
		}
		commands = append(commands, m[1])
		if m[1] == "user" {
			continue // its subcommands have the options
		}
		_, help, _ := runCLI(t, "", m[1], "--help")
		want[m[1]] = options(helpOption, help)
	}
	var subcommands []string
	for _, m := range userLine.FindAllStringSubmatch(userUsage, -1) {
		subcommands = append(subcommands, m[1])
		want[m[1]] = options(anyOption, m[2])
	}
	if len(commands) < 8 || len(subcommands) != 6 {
		t.Fatalf("read %q and %q from the help; did its layout change?", commands, subcommands)
	}
	for _, file := range completionFiles {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		text := string(b)
		for _, name := range append(slices.Clone(commands), subcommands...) {
			// bash lists the words in commands="..." and user_subcommands="...", zsh as 'name:description'.
			if !regexp.MustCompile(`(?m)(^\s*local (user_sub)?commands="[^"]*\b` + name + `\b|^\s*'` + name + `:)`).MatchString(text) {
				t.Errorf("%s does not offer %q", file, name)
			}
		}
		got := map[string][]string{}
		for _, m := range caseBlock.FindAllStringSubmatch(text, -1) {
			got[m[1]] = options(anyOption, m[2])
		}
		for name, opts := range want {
			have, ok := got[name]
			switch {
			case !ok:
				t.Errorf("%s has no branch %q) for the options of %s", file, name, name)
			case !slices.Equal(have, opts):
				t.Errorf("%s completes %s with %q; its help lists %q", file, name, have, opts)
			}
		}
	}
}

// options returns the names of the options re finds in text, sorted, without --help.
func options(re *regexp.Regexp, text string) []string {
	var opts []string
	for _, m := range re.FindAllStringSubmatch(text, -1) {
		if m[1] != "help" && !slices.Contains(opts, m[1]) {
			opts = append(opts, m[1])
		}
	}
	slices.Sort(opts)
	return opts
}
