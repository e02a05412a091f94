package bench

import (
	"strings"
	"testing"
	"time"
)

func TestETAClock(t *testing.T) {
	now := time.Unix(0, 0)
	e := newETAClock(100, func() time.Time { return now })
	if !strings.Contains(e.suffix(), "at least 1m40s") {
		t.Errorf("before any measurement: %q, want the plan's nominal length", e.suffix())
	}
	e.begin(50)
	now = now.Add(20 * time.Second)
	e.tick(10) // 10 nominal seconds took 20: the 90 left should take 180
	if d, ok := e.left(); !ok || d != 180*time.Second {
		t.Errorf("left = %v, %v; want 3m0s", d, ok)
	}
	e.end(false) // the step failed: its 40 unticked seconds leave the plan
	e.drop(10)   // and so does a later run of that system
	if d, _ := e.left(); d != 80*time.Second {
		t.Errorf("after a failure: left = %v, want 1m20s", d)
	}
	e.begin(40)
	e.tick(100) // a tick never counts more than the step has
	e.end(true)
	if d, _ := e.left(); d != 0 {
		t.Errorf("plan finished: left = %v, want 0", d)
	}
	var none *etaClock
	if none.suffix() != "" {
		t.Error("no clock must add nothing to progress lines")
	}
}

func TestNominalRun(t *testing.T) {
	c := DefaultConfig() // 10 s tests, 500 pings
	// TCP x2, UDP x2 (40) + idle pings (5) + loaded-ping load (ceil(1+5)+2 = 8); CPU (10) for tunnels.
	if got := c.nominalRun(SysBare); got != 53 {
		t.Errorf("bare run = %v nominal s, want 53", got)
	}
	if got := c.nominalRun(SysSalvo); got != 63 {
		t.Errorf("salvo run = %v nominal s, want 63", got)
	}
	if c.udpRateBits() != "51200000" {
		t.Errorf("100k pkt/s of 64 B = %s bit/s, want 51200000", c.udpRateBits())
	}
}
