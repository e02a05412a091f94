package faultrelay

import (
	"fmt"
	"strings"
	"time"
)

// Direction names one way through the relay. Faults are configured per direction; Both applies the same
// settings to each (every direction still draws its own random numbers).
type Direction uint8

const (
	// ToGateway is client -> gateway: datagrams that arrive at the relay's front socket.
	ToGateway Direction = 1 << iota
	// ToClient is gateway -> client: datagrams the gateway sends to the relay's back socket.
	ToClient
	// Both is ToGateway and ToClient.
	Both = ToGateway | ToClient
)

func (d Direction) String() string {
	switch d {
	case ToGateway:
		return "to-gateway"
	case ToClient:
		return "to-client"
	case Both:
		return "both"
	}
	return fmt.Sprintf("Direction(%d)", uint8(d))
}

// Default reordering delay: long enough that a datagram arrives after dozens of later ones at the rates of
// a LAN or a fast VPN, short enough that TCP's reordering heuristics (not its retransmission timer) deal
// with it.
const (
	DefaultReorderMin = 2 * time.Millisecond
	DefaultReorderMax = 5 * time.Millisecond
)

// Faults is what the relay does to the datagrams of one direction. The zero value forwards everything
// unchanged. Each datagram goes through the checks in this order, and the first that drops it is the one
// counted: MTU clamp, blackout (see Relay.Blackout), rate limit, burst loss, independent loss. A datagram
// that survives may then be duplicated and, independently, delayed.
type Faults struct {
	// Loss is the probability that a datagram is dropped, independently of every other.
	Loss float64
	// BurstProb is the probability that a datagram starts a loss burst: it and the next BurstLen-1
	// datagrams are dropped (Internet loss often comes in such runs: a queue overflowing, a radio fading).
	// The long-run loss rate is about BurstProb*BurstLen / (1 + BurstProb*(BurstLen-1)).
	BurstProb float64
	// BurstLen is the number of datagrams a burst drops (default 1 when BurstProb is set).
	BurstLen int
	// BurstMax, if set, also ends a burst once it has lasted this long. Without it only the count ends a
	// burst, and in a sparse flow (TCP waiting on its retransmission timer, keepalives 25 s apart) the
	// BurstLen datagrams can take minutes to come: every one of them is lost, which no real network does
	// (a queue overflows or a radio fades for milliseconds, whatever the traffic).
	BurstMax time.Duration
	// Reorder is the probability that a datagram is held back for a random time in
	// [ReorderMin, ReorderMax] (default 2-5 ms), so that datagrams sent after it overtake it.
	Reorder                float64
	ReorderMin, ReorderMax time.Duration
	// Duplicate is the probability that a datagram is sent twice (the copy right after the original, or
	// with it when the original is delayed).
	Duplicate float64
	// RateBytes limits the direction to this many bytes (UDP payload) per second; 0 means unlimited. The
	// limiter is a token bucket RateBurst bytes deep (default: 10 ms at the rate, at least 64 KiB); a
	// datagram that finds too few tokens is dropped, as a policer would, not queued.
	RateBytes int64
	RateBurst int64
	// MTU drops datagrams whose IP packet (payload + 8 bytes of UDP header + 20 for IPv4 or 40 for IPv6)
	// is larger than MTU bytes, as a narrow link on the path would; 0 means no clamp. A datagram that
	// arrived in fragments is judged by its largest fragment, so a sender that fragments to fit passes.
	MTU int
	// MTUReply answers each clamped datagram (at most one answer per 10 ms per direction) with an ICMP
	// "fragmentation needed" (IPv4) or "packet too big" (IPv6) carrying MTU, as a router should. Without
	// it the clamp answers nothing: a path-MTU black hole, as behind a firewall that filters ICMP. Needs
	// Config.ICMP (a raw socket).
	MTUReply bool
}

// Validate reports the first setting out of range.
func (f Faults) Validate() error {
	for _, p := range []struct {
		name string
		v    float64
	}{{"Loss", f.Loss}, {"BurstProb", f.BurstProb}, {"Reorder", f.Reorder}, {"Duplicate", f.Duplicate}} {
		if !(p.v >= 0 && p.v <= 1) {
			return fmt.Errorf("faultrelay: %s = %v: a probability must be within 0..1", p.name, p.v)
		}
	}
	switch {
	case f.BurstLen < 0 || f.BurstMax < 0:
		return fmt.Errorf("faultrelay: burst of %d datagrams, %v at most: must not be negative", f.BurstLen, f.BurstMax)
	case f.ReorderMin < 0 || f.ReorderMax < 0:
		return fmt.Errorf("faultrelay: reorder delay %v..%v: must not be negative", f.ReorderMin, f.ReorderMax)
	case f.ReorderMax != 0 && f.ReorderMin > f.ReorderMax:
		return fmt.Errorf("faultrelay: reorder delay %v..%v: minimum above maximum", f.ReorderMin, f.ReorderMax)
	case f.RateBytes < 0 || f.RateBurst < 0:
		return fmt.Errorf("faultrelay: rate %d B/s, burst %d B: must not be negative", f.RateBytes, f.RateBurst)
	case f.MTU < 0 || f.MTU > 0 && f.MTU < 68:
		return fmt.Errorf("faultrelay: MTU = %d: must be 0 (no clamp) or at least 68 (the IPv4 minimum)", f.MTU)
	case f.MTUReply && f.MTU == 0:
		return fmt.Errorf("faultrelay: MTUReply without an MTU")
	}
	return nil
}

// withDefaults fills in the defaults documented on the fields.
func (f Faults) withDefaults() Faults {
	if f.BurstProb > 0 && f.BurstLen == 0 {
		f.BurstLen = 1
	}
	if f.Reorder > 0 {
		if f.ReorderMin == 0 && f.ReorderMax == 0 {
			f.ReorderMin, f.ReorderMax = DefaultReorderMin, DefaultReorderMax
		} else if f.ReorderMax == 0 {
			f.ReorderMax = f.ReorderMin
		}
	}
	if f.RateBytes > 0 && f.RateBurst == 0 {
		f.RateBurst = max(f.RateBytes/100, 64<<10)
	}
	return f
}

// String lists the active faults, e.g. "loss=1% dup=5%"; "none" for the zero value.
func (f Faults) String() string {
	var parts []string
	pct := func(name string, p float64) {
		if p > 0 {
			parts = append(parts, fmt.Sprintf("%s=%g%%", name, p*100))
		}
	}
	pct("loss", f.Loss)
	if f.BurstProb > 0 {
		b := fmt.Sprintf("burst=%g%%x%d", f.BurstProb*100, max(f.BurstLen, 1))
		if f.BurstMax > 0 {
			b += "<" + f.BurstMax.String()
		}
		parts = append(parts, b)
	}
	pct("reorder", f.Reorder)
	pct("dup", f.Duplicate)
	if f.RateBytes > 0 {
		parts = append(parts, fmt.Sprintf("rate=%dB/s", f.RateBytes))
	}
	if f.MTU > 0 {
		s := fmt.Sprintf("mtu=%d", f.MTU)
		if f.MTUReply {
			s += "+icmp"
		}
		parts = append(parts, s)
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, " ")
}
