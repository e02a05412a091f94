package bench

import (
	"fmt"
	"math"
	"time"
)

// etaClock estimates the time a harness run has left. Every measurement has a nominal length (what its
// test is told to last: iperf3 -t, the pings' count x 10 ms); the plan is the sum of the nominal lengths
// still to come, and it is scaled by how much wall time each nominal second has really taken so far, which
// takes in bringing systems up and tearing them down, iperf3's start-up and the pauses between tests.
type etaClock struct {
	start time.Time
	now   func() time.Time
	total float64 // nominal seconds of the whole plan, less what failed systems will not run
	done  float64 // nominal seconds measured
	step  float64 // nominal seconds of the current step (one system's run) not yet ticked
}

func newETAClock(total float64, now func() time.Time) *etaClock {
	return &etaClock{start: now(), now: now, total: total}
}

// begin starts a step of nominal seconds.
func (e *etaClock) begin(nominal float64) { e.step = nominal }

// tick records a finished measurement of nominal seconds within the current step.
func (e *etaClock) tick(nominal float64) {
	nominal = math.Min(nominal, e.step)
	e.step -= nominal
	e.done += nominal
}

// end closes the current step: what it did not tick is counted as done when it succeeded (a nominal
// figure that was a little off) and dropped from the plan when it failed.
func (e *etaClock) end(ok bool) {
	if ok {
		e.done += e.step
	} else {
		e.total -= e.step
	}
	e.step = 0
}

// drop removes nominal seconds that will not be measured (the later runs of a system that FAILED).
func (e *etaClock) drop(nominal float64) { e.total -= nominal }

// left is the estimate; false until something has been measured.
func (e *etaClock) left() (time.Duration, bool) {
	if e.done <= 0 {
		return 0, false
	}
	perNominal := float64(e.now().Sub(e.start)) / e.done
	return time.Duration(math.Max(e.total-e.done, 0) * perNominal), true
}

// suffix is what progress lines end with: the estimate, or the plan's nominal length before the first
// measurement has shown how long a nominal second really takes.
func (e *etaClock) suffix() string {
	if e == nil {
		return ""
	}
	if d, ok := e.left(); ok {
		return fmt.Sprintf(" (~%s left)", fmtLeft(d))
	}
	return fmt.Sprintf(" (at least %s of tests to run)", fmtLeft(time.Duration(e.total*float64(time.Second))))
}

// fmtLeft rounds to what a person waiting cares about: seconds under two minutes, minutes above.
func fmtLeft(d time.Duration) string {
	if d < 2*time.Minute {
		return d.Round(time.Second).String()
	}
	return d.Round(time.Minute).String()
}

// The nominal seconds of each measurement of one run (see runOnce).
func (c *Config) nominalTest() float64 { return c.Duration.Seconds() }
func (c *Config) nominalPing() float64 { return float64(c.PingCount) / 100 }
func (c *Config) nominalLoadedPing() float64 {
	return math.Ceil(c.loadRamp().Seconds()+c.nominalPing()) + 2 // measureLoadedPing's load duration
}

// nominalRun is one run of one system: the main measurements (unless faults- or floods-only; CPU only for
// systems with tunnel processes), then the fault and flood benchmarks when asked for.
func (c *Config) nominalRun(sys string) float64 {
	var n float64
	if !c.FaultsOnly && !c.FloodsOnly {
		n = 4*c.nominalTest() + c.nominalPing() + c.nominalLoadedPing() // TCP x2, UDP x2, pings
		if sys != SysBare {
			n += c.nominalTest() // CPU
		}
	}
	if faultSystem(sys) {
		for _, f := range c.faultSpecs {
			n += c.nominalFault(f)
		}
		n += float64(len(c.floodSpecs)) * c.nominalFlood()
	}
	return n
}

// nominalFault is one fault's baseline and faulty TCP tests (a blackout's is longer: see measureFault).
func (c *Config) nominalFault(f FaultSpec) float64 {
	n := 2 * c.nominalTest()
	if f.Blackout > 0 {
		n += math.Ceil((blackoutLead + 2*f.Blackout).Seconds())
	}
	return n
}

// nominalFlood is one flood's baseline and flooded TCP tests and the pauses around the flood.
func (c *Config) nominalFlood() float64 { return 2*c.nominalTest() + 2 }
