package netcfg

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/salvovpn/salvo/internal/netns"
)

// helperEnv makes the test binary, re-executed by startHelper, act as a
// process that takes a netcfg resource and holds it until it is killed: the
// only honest way to test what happens when a holder dies by SIGKILL.
const helperEnv = "SALVO_NETCFG_TEST_HELPER"

func TestMain(m *testing.M) {
	if role := os.Getenv(helperEnv); role != "" {
		os.Exit(runHelper(role, os.Getenv(helperEnv+"_ARG")))
	}
	os.Exit(m.Run())
}

// runHelper takes the resource, prints "ready" and waits. It never undoes:
// the parent kills it, and an EOF on stdin (the parent died first) ends it
// the same way.
func runHelper(role, arg string) int {
	var err error
	switch role {
	case "nat":
		_, err = EnableNAT(NAT{Sources: []netip.Prefix{netip.MustParsePrefix("10.8.0.0/24")}, TunDev: arg})
	case "claim":
		dir, res, _ := strings.Cut(arg, ":")
		_, err = Claim(dir, res)
	case "forward":
		_, err = EnableForwarding(arg, true, true)
	case "guard": // arg: dev, dev:persist, or dev:plain (persist as on a kernel without NFT_TABLE_F_PERSIST)
		dev, mode, _ := strings.Cut(arg, ":")
		persistUnsupported.Store(mode == "plain")
		_, err = ApplyLeakGuard(LeakGuard{Dev: dev, FwMark: testMark, Persist: mode == "persist" || mode == "plain"})
	default:
		err = fmt.Errorf("unknown helper role %q", role)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	return 0
}

// helperProc is a running helper.
type helperProc struct {
	cmd    *exec.Cmd
	stdin  io.Closer
	stderr bytes.Buffer
	once   sync.Once
}

// startHelper runs the test binary as helper role inside ns (via `ip netns
// exec`, which execs, so cmd.Process.Pid is the helper's PID) and returns
// once it has taken its resource. Cleanup kills it if the test did not.
func startHelper(t *testing.T, ns *netns.NS, role, arg string) *helperProc {
	t.Helper()
	exe, err := os.Executable()
	must(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	h := &helperProc{cmd: ns.Exec(ctx, exe, "-test.run=^$")}
	h.cmd.Env = append(os.Environ(), helperEnv+"="+role, helperEnv+"_ARG="+arg)
	h.cmd.Stderr = &h.stderr
	stdin, err := h.cmd.StdinPipe()
	must(t, err)
	h.stdin = stdin
	stdout, err := h.cmd.StdoutPipe()
	must(t, err)
	must(t, h.cmd.Start())
	t.Cleanup(h.kill)
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "ready" {
		h.kill()
		t.Fatalf("helper %s %s did not get ready: %q, %v; stderr: %s", role, arg, line, err, h.stderr.String())
	}
	return h
}

func (h *helperProc) pid() int { return h.cmd.Process.Pid }

// kill sends SIGKILL, so the helper gets no chance to clean up, and reaps it.
func (h *helperProc) kill() {
	h.once.Do(func() {
		_ = h.cmd.Process.Kill()
		_ = h.stdin.Close()
		_ = h.cmd.Wait()
	})
}

// eventually polls cond for up to 5s: the kernel drops a dead process's
// resources as it exits, but nothing in the test waits for that exactly.
func eventually(cond func() bool) bool {
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}
