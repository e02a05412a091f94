//go:build race

package replay

// raceEnabled shrinks the randomized runs: the race detector slows them ~10x.
const raceEnabled = true
