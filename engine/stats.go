package engine

import (
	"fmt"
	"log/slog"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
	"time"
)

// DropReason says why a packet was discarded. Every drop on the data path is counted under one of these so
// `salvo status` and the tests can see it.
type DropReason uint8

const (
	DropMalformed      DropReason = iota // unparseable datagram or inner IP packet
	DropUnknownSession                   // receiver index not known
	DropBadMAC                           // AEAD tag did not verify
	DropReplay                           // counter already seen or too old
	DropExpired                          // key too old or exhausted
	DropSpoofed                          // inner source is not an address of the session
	DropNoRoute                          // TUN packet to an address no session owns
	DropPolicy                           // client-to-client traffic when the config forbids it
	DropNoKey                            // session has no usable key yet (handshake in progress)
	DropHandshakeQueue                   // handshake queue full (gateway under load)
	DropSend                             // send to the network or the TUN failed
	DropDestination                      // client packet to a loopback, link-local, multicast or broadcast address
	numDropReasons
)

var dropNames = [numDropReasons]string{"malformed", "unknown_session", "bad_mac", "replay", "expired", "spoofed",
	"no_route", "policy", "no_key", "handshake_queue", "send_error", "bad_destination"}

func (r DropReason) String() string {
	if r < numDropReasons {
		return dropNames[r]
	}
	return "unknown"
}

// Counters are updated with atomics from the data-path goroutines and read by the status endpoint.
type Counters struct {
	RxPackets, RxBytes atomic.Uint64 // authenticated, delivered to the TUN
	TxPackets, TxBytes atomic.Uint64 // sealed and sent
	Drops              [numDropReasons]atomic.Uint64
}

func (c *Counters) drop(r DropReason) { c.Drops[r].Add(1) }

// Traffic is bytes and packets each way.
type Traffic struct {
	RxPackets uint64 `json:"rx_packets"`
	RxBytes   uint64 `json:"rx_bytes"`
	TxPackets uint64 `json:"tx_packets"`
	TxBytes   uint64 `json:"tx_bytes"`
}

// Plus is the sum of t and o.
func (t Traffic) Plus(o Traffic) Traffic {
	return Traffic{RxPackets: t.RxPackets + o.RxPackets, RxBytes: t.RxBytes + o.RxBytes,
		TxPackets: t.TxPackets + o.TxPackets, TxBytes: t.TxBytes + o.TxBytes}
}

func (c *Counters) traffic() Traffic {
	return Traffic{RxPackets: c.RxPackets.Load(), RxBytes: c.RxBytes.Load(), TxPackets: c.TxPackets.Load(), TxBytes: c.TxBytes.Load()}
}

// CountersSnapshot is the JSON form of Counters.
type CountersSnapshot struct {
	Traffic
	Drops map[string]uint64 `json:"drops"`
}

func (c *Counters) Snapshot() CountersSnapshot {
	s := CountersSnapshot{Traffic: c.traffic(), Drops: map[string]uint64{}}
	for i := range c.Drops {
		s.Drops[DropReason(i).String()] = c.Drops[i].Load()
	}
	return s
}

// SessionStatus is one line of `salvo status`.
type SessionStatus struct {
	User          string           `json:"user"`
	SessionIndex  uint32           `json:"session_index"`
	Addresses     []string         `json:"addresses"`
	Endpoint      string           `json:"endpoint"`
	Suite         string           `json:"suite"`
	LastHandshake time.Time        `json:"last_handshake"`
	LastReceive   time.Time        `json:"last_receive"`
	Counters      CountersSnapshot `json:"counters"`
}

// Status is what the control socket returns.
type Status struct {
	Role     string           `json:"role"` // "server" or "client"
	Version  string           `json:"version"`
	Started  time.Time        `json:"started"`
	Device   string           `json:"device"`
	Listen   []string         `json:"listen,omitempty"`
	State    string           `json:"state,omitempty"` // client: connecting, connected, reconnecting
	Sessions []SessionStatus  `json:"sessions"`
	Global   CountersSnapshot `json:"global"` // drops that belong to no session (unknown index, junk)
	Runtime  RuntimeStats     `json:"runtime"`
	// Gateway only: worker count and data packets that arrived at a worker not owning their session.
	Workers            int    `json:"workers,omitempty"`
	CrossWorkerPackets uint64 `json:"cross_worker_packets"`
	// Classifier is the eBPF classifier's state when one is attached (drops it made in the kernel).
	Classifier any `json:"classifier,omitempty"`
	// Panics counts vectors lost to a recovered panic in the data path (always 0 unless there is a bug).
	Panics uint64 `json:"panics"`
	// Logins is what the gateway's handshakes did (gateway only).
	Logins *LoginStats `json:"logins,omitempty"`
	// Sockets is what the gateway's UDP sockets counted.
	Sockets *SocketStats `json:"sockets,omitempty"`
	// LeakGuard is the client's leak guard, when one is up.
	LeakGuard *LeakGuardStatus `json:"leak_guard,omitempty"`
	// Totals are the gateway's counters since it started, ended sessions included.
	Totals *Totals `json:"totals,omitempty"`
}

// LeakGuardStatus is a client's leak guard: up, whether it outlives a crash, and how many packets it
// stopped from leaving outside the tunnel. A count that grows while the tunnel is up means something on
// the host or the LAN is routing traffic around the tunnel (injected routes, a LAN claiming public space).
type LeakGuardStatus struct {
	KillSwitch bool   `json:"kill_switch"`
	Blocked    uint64 `json:"blocked"`
}

// SocketStats are the batched UDP sockets' own counters.
type SocketStats struct {
	// GSORefused counts GSO sends refused by the kernel (the path's MTU is smaller than a segment) and
	// resent one datagram at a time; nothing is lost.
	GSORefused uint64 `json:"gso_refused"`
	// GROTruncated counts coalesced receives longer than a receive buffer (never expected).
	GROTruncated uint64 `json:"gro_truncated"`
}

// panicGuard recovers a panic in the processing of one vector: the vector is lost, the panic is counted
// (status "panics") and logged with its stack at most once per interval, and the loop goes on.
type panicGuard struct {
	count atomic.Uint64
	last  atomic.Int64
}

// recoverVector must be deferred directly by the function that processes one vector.
func (p *panicGuard) recoverVector(log *slog.Logger, loop string) {
	r := recover()
	if r == nil {
		return
	}
	p.count.Add(1)
	now, last := time.Now().UnixNano(), p.last.Load()
	if now-last >= int64(5*time.Second) && p.last.CompareAndSwap(last, now) {
		log.Error("data path panic recovered; the vector was dropped (a bug: please report it with this stack)",
			"loop", loop, "panic", fmt.Sprint(r), "stack", string(debug.Stack()), "panics_total", p.count.Load())
	}
}

// dropLogger logs drops at most once per interval so a flood of junk cannot flood the log. Call sites
// check due() first: building the log arguments boxes them into interfaces, which would allocate for every
// dropped packet of a flood.
type dropLogger struct {
	log  *slog.Logger
	last atomic.Int64
}

// due reports whether a drop may be logged now, and if so claims the slot.
func (d *dropLogger) due() bool {
	now := time.Now().UnixNano()
	last := d.last.Load()
	return now-last >= int64(5*time.Second) && d.last.CompareAndSwap(last, now)
}

func (d *dropLogger) logf(reason DropReason, attrs ...any) {
	d.log.Info("dropping packets (logged at most every 5s; see salvo status)", append([]any{"reason", reason.String()}, attrs...)...)
}

// RuntimeStats exposes the process's allocation and GC counters so tests and operators can check that the
// data path allocates nothing per packet: during a transfer these must stay (nearly) flat.
type RuntimeStats struct {
	GCCycles       uint64 `json:"gc_cycles"`
	HeapAllocBytes uint64 `json:"heap_alloc_bytes_total"`
	HeapAllocs     uint64 `json:"heap_allocs_total"`
	Goroutines     uint64 `json:"goroutines"`
}

var runtimeSamples = []string{"/gc/cycles/total:gc-cycles", "/gc/heap/allocs:bytes", "/gc/heap/allocs:objects",
	"/sched/goroutines:goroutines"}

func readRuntimeStats() RuntimeStats {
	s := make([]metrics.Sample, len(runtimeSamples))
	for i, name := range runtimeSamples {
		s[i].Name = name
	}
	metrics.Read(s)
	v := func(i int) uint64 {
		if s[i].Value.Kind() == metrics.KindUint64 {
			return s[i].Value.Uint64()
		}
		return 0
	}
	return RuntimeStats{GCCycles: v(0), HeapAllocBytes: v(1), HeapAllocs: v(2), Goroutines: v(3)}
}
