package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/salvovpn/salvo/internal/netns"
)

const iperfPort = "5201"

// TCPResult is one iperf3 TCP test, receiver side.
type TCPResult struct {
	Streams     int     `json:"streams"`
	Rate        string  `json:"rate"` // iperf3 -b ("0" = unlimited)
	Gbps        float64 `json:"gbps"`
	Bytes       uint64  `json:"bytes"`
	Seconds     float64 `json:"seconds"`
	Retransmits uint64  `json:"retransmits"`
}

// UDPResult is one iperf3 UDP test. PPS counts packets that arrived (delivered); OfferedPPS is what the
// sender put into the tunnel. Sent and Lost are the receiver's count (by sequence number), as LossPct.
type UDPResult struct {
	PayloadBytes int     `json:"payload_bytes"`
	Rate         string  `json:"rate"` // iperf3 -b ("0" = unlimited)
	OfferedPPS   float64 `json:"offered_pps"`
	Sent         uint64  `json:"sent"`
	Lost         uint64  `json:"lost"`
	Received     uint64  `json:"received"`
	Seconds      float64 `json:"seconds"`
	PPS          float64 `json:"pps"`
	LossPct      float64 `json:"loss_pct"`
}

// PingResult keeps every RTT so percentiles can be recomputed from the JSON.
type PingResult struct {
	Sent     int        `json:"sent"`
	Received int        `json:"received"`
	P50ms    float64    `json:"p50_ms"`
	P99ms    float64    `json:"p99_ms"`
	RTTsMs   []float64  `json:"rtts_ms"`
	Load     *TCPResult `json:"load,omitempty"` // the TCP flow running during the pings
}

// CPUResult is the tunnel processes' CPU time over a fixed-rate TCP transfer.
type CPUResult struct {
	Transfer   TCPResult       `json:"transfer"`
	CPUSeconds map[int]float64 `json:"cpu_seconds_by_pid"`
	TotalCPU   float64         `json:"cpu_seconds"`
	PerGB      float64         `json:"cpu_seconds_per_gb"`
}

// MemResult is the peak RSS (VmHWM) of every tunnel process at the end of a run, and their memory while
// the multi-stream TCP test ran.
type MemResult struct {
	PeakKiBByPID map[int]uint64 `json:"peak_kib_by_pid"`
	TotalMiB     float64        `json:"total_mib"`
	// LoadedPSSMiB is the largest sum of the tunnel processes' PSS sampled during the multi-stream TCP
	// test: the memory the tunnel holds while it works, each shared page counted once. The peak RSS
	// above sums resident sets, so it counts twice what both ends share (one binary's text), and it
	// keeps whatever the process ever held (the gateway's argon2id login hash).
	LoadedPSSMiB float64 `json:"loaded_pss_mib"`
}

// pssSampleEvery is how often sampleLoadedPSS reads the tunnel processes' PSS.
const pssSampleEvery = 500 * time.Millisecond

// sampleLoadedPSS samples the sum of ds's PSS every pssSampleEvery until the returned stop is called,
// which returns the largest sum in MiB (0 if no sample was complete).
func sampleLoadedPSS(ds []*daemon) (stop func() float64) {
	done, result := make(chan struct{}), make(chan float64, 1)
	go func() {
		tick := time.NewTicker(pssSampleEvery)
		defer tick.Stop()
		var best uint64
		for {
			select {
			case <-done:
				result <- float64(best) / 1024
				return
			case <-tick.C:
			}
			var sum uint64
			for _, d := range ds {
				v, err := pssKiB(d.pid())
				if err != nil {
					sum = 0
					break
				}
				sum += v
			}
			best = max(best, sum)
		}
	}()
	return func() float64 { close(done); return <-result }
}

// iperfServer starts `iperf3 -s` in ns and waits until it listens, so that
// the first client never races its start-up.
func iperfServer(ctx context.Context, ns *netns.NS, dir string) (*daemon, error) {
	d, err := startDaemon(ctx, ns, filepath.Join(dir, "iperf3-server.log"), nil, "iperf3", "-s", "-p", iperfPort)
	if err != nil {
		return nil, err
	}
	err = waitFor(ctx, 5*time.Second, "iperf3 server listening in "+ns.Name, []*daemon{d}, func() (bool, error) {
		out, err := ns.Run("ss", "-Hltn", "sport = :"+iperfPort)
		return err == nil && strings.TrimSpace(out) != "", err
	})
	if err != nil {
		d.stop(time.Second)
		return nil, err
	}
	return d, nil
}

// iperfJSON is the part of iperf3 -J output the harness reads (3.12 layout:
// UDP has sum_sent/sum_received too).
type iperfJSON struct {
	Error string `json:"error"`
	End   struct {
		SumSent struct {
			Retransmits uint64  `json:"retransmits"`
			Seconds     float64 `json:"seconds"`
			Packets     uint64  `json:"packets"` // UDP: what the sender sent
		} `json:"sum_sent"`
		SumReceived struct {
			Seconds     float64 `json:"seconds"`
			Bytes       uint64  `json:"bytes"`
			BitsPerSec  float64 `json:"bits_per_second"`
			Packets     uint64  `json:"packets"`
			LostPackets uint64  `json:"lost_packets"`
			LostPercent float64 `json:"lost_percent"`
		} `json:"sum_received"`
	} `json:"end"`
}

// iperfClient runs one iperf3 client test from ns to target and decodes its
// JSON. iperf3 reports its own failures inside the JSON, so both the exit
// status and the "error" field are checked.
func iperfClient(ctx context.Context, ns *netns.NS, target string, seconds int, args ...string) (*iperfJSON, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(seconds)*time.Second+30*time.Second)
	defer cancel()
	full := append([]string{"-c", target, "-p", iperfPort, "-J", "-t", strconv.Itoa(seconds), "--connect-timeout", "5000"}, args...)
	cmd := ns.Exec(ctx, "iperf3", full...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	runErr := cmd.Run()
	var r iperfJSON
	jerr := json.Unmarshal(out.Bytes(), &r)
	switch {
	case r.Error != "":
		return nil, fmt.Errorf("iperf3 %s: %s", strings.Join(full, " "), r.Error)
	case runErr != nil:
		return nil, fmt.Errorf("iperf3 %s: %w: %s", strings.Join(full, " "), runErr, strings.TrimSpace(errb.String()))
	case jerr != nil:
		return nil, fmt.Errorf("iperf3 %s: bad JSON: %w", strings.Join(full, " "), jerr)
	}
	return &r, nil
}

// measureTCP runs a TCP test; rate "0" is unlimited.
func measureTCP(ctx context.Context, ns *netns.NS, target string, seconds, streams int, rate string) (*TCPResult, error) {
	r, err := iperfClient(ctx, ns, target, seconds, "-P", strconv.Itoa(streams), "-b", rate)
	if err != nil {
		return nil, err
	}
	rx := r.End.SumReceived
	res := &TCPResult{Streams: streams, Rate: rate, Gbps: rx.BitsPerSec / 1e9, Bytes: rx.Bytes,
		Seconds: rx.Seconds, Retransmits: r.End.SumSent.Retransmits}
	if res.Bytes == 0 || !(res.Gbps > 0) {
		return nil, fmt.Errorf("iperf3 TCP to %s: receiver got nothing (%d bytes)", target, res.Bytes)
	}
	return res, nil
}

// measureUDP runs `iperf3 -u -b rate -l size`. At rate "0" small packets go as fast as one sender can
// push them, so the tunnel's per-packet cost dominates and what counts is how many are delivered: the
// sender offers far more than any tunnel carries, so the "loss" is mostly that excess. At a fixed rate
// that the link carries, the loss is the tunnel's own.
func measureUDP(ctx context.Context, ns *netns.NS, target string, seconds, size int, rate string) (*UDPResult, error) {
	r, err := iperfClient(ctx, ns, target, seconds, "-u", "-b", rate, "-l", strconv.Itoa(size))
	if err != nil {
		return nil, err
	}
	rx := r.End.SumReceived
	if rx.LostPackets > rx.Packets {
		return nil, fmt.Errorf("iperf3 UDP to %s: lost %d of %d packets: inconsistent report", target, rx.LostPackets, rx.Packets)
	}
	res := &UDPResult{PayloadBytes: size, Rate: rate, Sent: rx.Packets, Lost: rx.LostPackets,
		Received: rx.Packets - rx.LostPackets, Seconds: rx.Seconds, LossPct: rx.LostPercent}
	if res.Received == 0 || !(res.Seconds > 0) {
		return nil, fmt.Errorf("iperf3 UDP to %s: no packet arrived (%d sent)", target, res.Sent)
	}
	res.PPS = float64(res.Received) / res.Seconds
	res.OfferedPPS = float64(res.Sent) / res.Seconds
	if tx := r.End.SumSent; tx.Packets > 0 && tx.Seconds > 0 {
		res.OfferedPPS = float64(tx.Packets) / tx.Seconds // the sender's own count, tail included
	}
	return res, nil
}

var rttRE = regexp.MustCompile(`icmp_seq=\d+ .*time=([0-9.]+) ms`)

// measurePing sends count echo requests 10 ms apart and keeps every RTT.
// ping exits 1 when some replies are missing; that is a loss figure, not a
// failure, as long as replies came back at all.
func measurePing(ctx context.Context, ns *netns.NS, target string, count int) (*PingResult, error) {
	deadline := count/100 + 10
	ctx, cancel := context.WithTimeout(ctx, time.Duration(deadline+10)*time.Second)
	defer cancel()
	args := []string{"-n", "-i", "0.01", "-c", strconv.Itoa(count), "-w", strconv.Itoa(deadline), target}
	cmd := ns.Exec(ctx, "ping", args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	runErr := cmd.Run()
	var ee *exec.ExitError
	if runErr != nil && !(errors.As(runErr, &ee) && ee.ExitCode() == 1) {
		return nil, fmt.Errorf("ping %s: %w: %s", strings.Join(args, " "), runErr, strings.TrimSpace(errb.String()))
	}
	res := &PingResult{Sent: count}
	for _, m := range rttRE.FindAllStringSubmatch(out.String(), -1) {
		v, err := strconv.ParseFloat(m[1], 64)
		if err != nil {
			return nil, fmt.Errorf("ping: bad RTT %q: %w", m[1], err)
		}
		res.RTTsMs = append(res.RTTsMs, v)
	}
	res.Received = len(res.RTTsMs)
	if res.Received == 0 {
		return nil, fmt.Errorf("ping %s: no reply out of %d: %s", target, count, strings.TrimSpace(errb.String()))
	}
	res.P50ms = percentile(res.RTTsMs, 50)
	res.P99ms = percentile(res.RTTsMs, 99)
	return res, nil
}

// measureLoadedPing runs the pings while one unlimited TCP stream fills the
// same path, which shows the queueing a tunnel adds under load. The load
// starts first and outlasts the pings so every ping sees it.
func measureLoadedPing(ctx context.Context, ns *netns.NS, target string, count int, ramp time.Duration) (*PingResult, error) {
	loadSecs := int(math.Ceil(ramp.Seconds()+float64(count)/100)) + 2
	type loadOut struct {
		r   *TCPResult
		err error
	}
	lc := make(chan loadOut, 1)
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		r, err := measureTCP(lctx, ns, target, loadSecs, 1, "0")
		lc <- loadOut{r, err}
	}()
	select {
	case <-time.After(ramp):
	case l := <-lc:
		return nil, fmt.Errorf("load for loaded ping ended early: %v", l.err)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	p, perr := measurePing(ctx, ns, target, count)
	l := <-lc
	if perr != nil {
		return nil, perr
	}
	if l.err != nil {
		return nil, fmt.Errorf("TCP load during ping: %w", l.err)
	}
	p.Load = l.r
	return p, nil
}

// measureCPU moves data at a fixed TCP rate and charges the tunnel processes'
// CPU time to the bytes that arrived. A fixed rate makes systems comparable
// even when their maximum throughputs differ.
func measureCPU(ctx context.Context, ns *netns.NS, target string, seconds int, rate string, ds []*daemon) (*CPUResult, error) {
	before := make(map[int]float64, len(ds))
	for _, d := range ds {
		v, err := cpuSeconds(d.pid())
		if err != nil {
			return nil, fmt.Errorf("CPU of %s: %w", d.name, err)
		}
		before[d.pid()] = v
	}
	tr, err := measureTCP(ctx, ns, target, seconds, 1, rate)
	if err != nil {
		return nil, err
	}
	res := &CPUResult{Transfer: *tr, CPUSeconds: make(map[int]float64, len(ds))}
	for _, d := range ds {
		if err := d.exited(); err != nil {
			return nil, err
		}
		v, err := cpuSeconds(d.pid())
		if err != nil {
			return nil, fmt.Errorf("CPU of %s: %w", d.name, err)
		}
		res.CPUSeconds[d.pid()] = v - before[d.pid()]
		res.TotalCPU += v - before[d.pid()]
	}
	if !(res.TotalCPU > 0) {
		return nil, fmt.Errorf("tunnel processes used no measurable CPU (%.2f s) moving %d bytes: transfer too short for %d Hz accounting", res.TotalCPU, tr.Bytes, clockTicks)
	}
	res.PerGB = res.TotalCPU / (float64(tr.Bytes) / 1e9)
	return res, nil
}

// measureMem reads every tunnel process's VmHWM (monotonic over its life, so
// read last: it covers every test of the run).
func measureMem(ds []*daemon) (*MemResult, error) {
	res := &MemResult{PeakKiBByPID: make(map[int]uint64, len(ds))}
	var total uint64
	for _, d := range ds {
		if err := d.exited(); err != nil {
			return nil, err
		}
		v, err := peakRSSKiB(d.pid())
		if err != nil {
			return nil, fmt.Errorf("peak RSS of %s: %w", d.name, err)
		}
		if v == 0 {
			return nil, fmt.Errorf("peak RSS of %s (pid %d) reads 0", d.name, d.pid())
		}
		res.PeakKiBByPID[d.pid()] = v
		total += v
	}
	res.TotalMiB = float64(total) / 1024
	return res, nil
}

// percentile is the nearest-rank percentile (a value that was observed).
func percentile(xs []float64, p float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	return s[max(rank, 1)-1]
}
