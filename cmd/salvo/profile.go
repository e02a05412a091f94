package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
)

// envCPUProfile names a directory; when set, `salvo server` and `salvo client` write a CPU profile there
// (salvo-<role>-<pid>.pprof) from start to a clean exit. Used to see where the data path spends its time.
const envCPUProfile = "SALVO_CPUPROFILE"

func startProfile(role string) (stop func(), err error) {
	dir := os.Getenv(envCPUProfile)
	if dir == "" {
		return func() {}, nil
	}
	path := filepath.Join(dir, fmt.Sprintf("salvo-%s-%d.pprof", role, os.Getpid()))
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", envCPUProfile, err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", envCPUProfile, err)
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}
