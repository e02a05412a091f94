//go:build race

package transport

// raceEnabled: sync.Pool drops items at random under the race detector, so allocation counts are
// meaningless there and the AllocsPerRun tests skip.
const raceEnabled = true
