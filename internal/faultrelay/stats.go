package faultrelay

import (
	"fmt"
	"math"
	"time"
)

// DirStats is what the relay did in one direction since New. Every datagram read is counted once in
// Received and, unless it is still held in the delay queue, once in exactly one of: forwarded (Forwarded
// minus Duplicated counts originals), Lost, BurstLost, Blackholed, RateLimited, Clamped, DelayOverflow,
// NoClient, or WriteErrors. Balanced checks that.
type DirStats struct {
	Received  uint64 `json:"received"`
	BytesIn   uint64 `json:"bytes_in"`
	Forwarded uint64 `json:"forwarded"` // datagrams sent on, duplicates and delayed ones included
	BytesOut  uint64 `json:"bytes_out"`

	Lost        uint64 `json:"lost"`         // independent loss (Faults.Loss)
	BurstLost   uint64 `json:"burst_lost"`   // lost in bursts (Faults.BurstProb)
	Bursts      uint64 `json:"bursts"`       // bursts begun
	Blackholed  uint64 `json:"blackholed"`   // dropped during a blackout
	RateLimited uint64 `json:"rate_limited"` // over Faults.RateBytes
	Clamped     uint64 `json:"clamped"`      // over Faults.MTU
	ICMPSent    uint64 `json:"icmp_sent"`    // answers to clamped datagrams (Faults.MTUReply)
	Duplicated  uint64 `json:"duplicated"`   // datagrams sent twice
	Delayed     uint64 `json:"delayed"`      // datagrams held back (Faults.Reorder)
	Queued      int    `json:"queued"`       // held back right now
	// DelayOverflow counts datagrams dropped because the delay queue was full.
	DelayOverflow uint64 `json:"delay_overflow"`
	// NoClient (ToClient only) counts gateway datagrams dropped before any client had been heard from.
	NoClient   uint64 `json:"no_client"`
	ReadErrors uint64 `json:"read_errors"`
	// SocketDrops counts datagrams the kernel dropped at the relay's receiving socket because the relay did
	// not read them in time: losses of the relay itself, in no other counter (not in Received either).
	SocketDrops uint64 `json:"socket_drops"`
	WriteErrors uint64 `json:"write_errors"`
	// ClientChanges (ToGateway only) counts the times the client's source endpoint changed.
	ClientChanges uint64 `json:"client_changes"`

	// Blackouts is the number of blackouts started; InBlackout says one is in progress now.
	Blackouts  uint64 `json:"blackouts"`
	InBlackout bool   `json:"in_blackout"`
	// BlackoutEnd is when the last blackout ended (zero while none has ended). Recovery is how long
	// after that the relay had forwarded Config.RecoveryBytes in this direction: how long until traffic
	// flowed again. It is 0 until then (Recovered false).
	BlackoutEnd time.Time     `json:"blackout_end"`
	Recovered   bool          `json:"recovered"`
	Recovery    time.Duration `json:"recovery_ns"`
}

// Dropped is every datagram the faults (and the relay's own limits) discarded.
func (s DirStats) Dropped() uint64 {
	return s.Lost + s.BurstLost + s.Blackholed + s.RateLimited + s.Clamped + s.DelayOverflow + s.NoClient + s.WriteErrors
}

// Balanced reports an error unless every datagram read is accounted for (see DirStats). It can only hold
// while traffic is quiet: the delay queue empty (Queued == 0) and no datagram between being counted and
// being sent.
func (s DirStats) Balanced() error {
	if s.Queued != 0 {
		return fmt.Errorf("faultrelay: %d datagrams still delayed", s.Queued)
	}
	originals := s.Forwarded - s.Duplicated
	if got := originals + s.Dropped(); got != s.Received {
		return fmt.Errorf("faultrelay: received %d, but forwarded %d (of which %d duplicates) + dropped %d = %d",
			s.Received, s.Forwarded, s.Duplicated, s.Dropped(), got)
	}
	return nil
}

// Sub returns the counters accumulated since old (a snapshot taken earlier); the blackout fields are
// taken from s.
func (s DirStats) Sub(old DirStats) DirStats {
	d := s
	d.Received -= old.Received
	d.BytesIn -= old.BytesIn
	d.Forwarded -= old.Forwarded
	d.BytesOut -= old.BytesOut
	d.Lost -= old.Lost
	d.BurstLost -= old.BurstLost
	d.Bursts -= old.Bursts
	d.Blackholed -= old.Blackholed
	d.RateLimited -= old.RateLimited
	d.Clamped -= old.Clamped
	d.ICMPSent -= old.ICMPSent
	d.Duplicated -= old.Duplicated
	d.Delayed -= old.Delayed
	d.DelayOverflow -= old.DelayOverflow
	d.NoClient -= old.NoClient
	d.ReadErrors -= old.ReadErrors
	d.SocketDrops -= old.SocketDrops
	d.WriteErrors -= old.WriteErrors
	d.ClientChanges -= old.ClientChanges
	d.Blackouts -= old.Blackouts
	return d
}

func (s DirStats) String() string {
	str := fmt.Sprintf("received %d, forwarded %d (%d B), lost %d, burst-lost %d, blackholed %d, rate-limited %d, clamped %d, duplicated %d, delayed %d",
		s.Received, s.Forwarded, s.BytesOut, s.Lost, s.BurstLost, s.Blackholed, s.RateLimited, s.Clamped, s.Duplicated, s.Delayed)
	if s.SocketDrops > 0 {
		str += fmt.Sprintf(", %d dropped at the relay's socket (relay too slow)", s.SocketDrops)
	}
	if s.Recovered {
		str += fmt.Sprintf(", flowing again %v after the blackout", s.Recovery.Round(time.Millisecond))
	}
	return str
}

// Stats is a snapshot of both directions.
type Stats struct {
	ToGateway DirStats `json:"to_gateway"`
	ToClient  DirStats `json:"to_client"`
	Client    string   `json:"client"` // the client endpoint last heard from
}

// Stats returns the counters of both directions.
func (r *Relay) Stats() Stats {
	st := Stats{ToGateway: r.paths[0].stats(), ToClient: r.paths[1].stats()}
	if c := r.Client(); c.IsValid() {
		st.Client = c.String()
	}
	return st
}

// Dir returns one direction's counters.
func (s Stats) Dir(d Direction) DirStats {
	if d == ToClient {
		return s.ToClient
	}
	return s.ToGateway
}

func (p *path) stats() DirStats {
	c := &p.c
	s := DirStats{
		Received: c.received.Load(), BytesIn: c.bytesIn.Load(), Forwarded: c.forwarded.Load(), BytesOut: c.bytesOut.Load(),
		Lost: c.lost.Load(), BurstLost: c.burstLost.Load(), Bursts: c.bursts.Load(), Blackholed: c.blackhole.Load(), RateLimited: c.rateLimited.Load(),
		Clamped: c.clamped.Load(), ICMPSent: c.icmpSent.Load(), Duplicated: c.duplicated.Load(), Delayed: c.delayed.Load(),
		Queued: p.delay.len(), DelayOverflow: c.delayOverflow.Load(), NoClient: c.noClient.Load(),
		ReadErrors: c.readErrors.Load(), SocketDrops: c.socketDrops.Load(), WriteErrors: c.writeErrors.Load(), ClientChanges: c.clientChanges.Load(),
	}
	gen := p.blackGen.Load()
	until := p.blackUntil.Load()
	now := p.r.mono()
	s.Blackouts = gen
	s.InBlackout = gen > 0 && now < until
	if gen > 0 && until != math.MaxInt64 && until <= now {
		s.BlackoutEnd = p.r.monoTime(until)
		if p.recoveredGen.Load() == gen {
			s.Recovered = true
			s.Recovery = time.Duration(p.recoveredAt.Load() - until)
		}
	}
	return s
}
