package users

import (
	"bytes"
	"errors"
	"fmt"
	"os/exec"
	"runtime"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// commandPath is the only environment variable the program gets besides SALVO_LOGIN.
const commandPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// run runs the program once on an OS thread of its own, which is never handed back to the Go runtime
// (it ends with the goroutine). On that thread:
//   - the ambient capabilities are cleared first, so the program does not inherit the gateway's
//     CAP_NET_ADMIN and CAP_BPF (the packaged unit grants them as ambient capabilities, which an exec
//     keeps): deciding who logs in needs neither. The thread's end keeps the cleared set from reaching
//     the gateway's own helpers (nft), which need it.
//   - Pdeathsig kills the program if the gateway dies, and since Linux sends it when the thread that
//     started the child ends, that thread must outlive the child: it does, as it waits for it.
func run(cfg *CommandConfig, login string, password []byte) result {
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		// EINVAL: a kernel without ambient capabilities (before 4.3), which then has none to clear.
		if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil && !errors.Is(err, unix.EINVAL) {
			done <- result{err: fmt.Errorf("clearing ambient capabilities: %w", err), status: -1}
			return
		}
		done <- runOnThread(cfg, login, password)
	}()
	return <-done
}

func runOnThread(cfg *CommandConfig, login string, password []byte) result {
	stdin := make([]byte, len(password)+1)
	copy(stdin, password)
	stdin[len(password)] = '\n'
	defer clear(stdin)
	out := &cappedBuffer{max: maxCommandOutput}
	cmd := &exec.Cmd{
		Path:  cfg.Path,
		Args:  []string{cfg.Path, login},
		Env:   []string{commandPath, "SALVO_LOGIN=" + login},
		Dir:   "/",
		Stdin: bytes.NewReader(stdin), // WriteTo: written straight to the pipe, no copy left behind
		// One writer for both: os/exec then reads them through one pipe, in the order written.
		Stdout: out,
		Stderr: out,
		// A process group of its own, so that a timeout kills whatever the program started too.
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL},
		WaitDelay:   commandWaitDelay,
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return result{err: err, status: -1, took: time.Since(start)}
	}
	pid := cmd.Process.Pid
	exited := make(chan struct{})
	go func() {
		waitExited(pid)
		close(exited)
	}()
	timer := time.NewTimer(cfg.Timeout)
	defer timer.Stop()
	timedOut := false
	select {
	case <-exited:
	case <-timer.C:
		timedOut = true
		_ = unix.Kill(-pid, unix.SIGKILL)
		// And the program itself, should the group be gone (it may have left its group with setpgid): the
		// wait below must end.
		_ = cmd.Process.Kill()
		<-exited
	}
	// The program has exited but is not reaped yet, so its pid, which is its process group's id, cannot
	// have been given to anyone else: what it left running in its group is killed without risk of hitting
	// a stranger. Then Wait reaps it (no zombie) and collects the output.
	_ = unix.Kill(-pid, unix.SIGKILL)
	err := cmd.Wait()
	res := result{err: err, status: cmd.ProcessState.ExitCode(), output: out.buf, took: time.Since(start)}
	switch {
	case timedOut:
		res.err, res.status = fmt.Errorf("timed out after %v; its process group was killed", cfg.Timeout), -1
	case out.over:
		res.err, res.status = fmt.Errorf("%w (then %v)", errOutputLimit, err), -1
	}
	return res
}

// waitExited returns once the process has exited, leaving it to be reaped (WNOWAIT).
func waitExited(pid int) {
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, unix.EINTR) {
			return
		}
	}
}
