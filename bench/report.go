package bench

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
)

// Stat summarises one metric over the runs: the median is what the table
// shows; min and max are kept so the spread stays visible.
type Stat struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	N      int     `json:"n"`
}

// metric is one row of the table.
type metric struct {
	key    string
	label  func(c *Config) string
	better string // "higher" or "lower"
	format string
	get    func(*RunResult) (float64, bool)
}

// Accessors that report absence instead of dereferencing nil.
func tcpGbps(f func(*RunResult) *TCPResult) func(*RunResult) (float64, bool) {
	return func(r *RunResult) (float64, bool) {
		if t := f(r); t != nil {
			return t.Gbps, true
		}
		return 0, false
	}
}

func udpField(test func(*RunResult) *UDPResult, f func(*UDPResult) float64) func(*RunResult) (float64, bool) {
	return func(r *RunResult) (float64, bool) {
		if u := test(r); u != nil {
			return f(u), true
		}
		return 0, false
	}
}

func maxRate(r *RunResult) *UDPResult   { return r.UDP }
func fixedRate(r *RunResult) *UDPResult { return r.UDPRate }

// fmtRate writes a packet rate the way people say it: 100k, 1.5M.
func fmtRate(pps int) string {
	switch {
	case pps >= 1_000_000 && pps%100_000 == 0:
		return strconv.FormatFloat(float64(pps)/1e6, 'f', -1, 64) + "M"
	case pps >= 1000 && pps%100 == 0:
		return strconv.FormatFloat(float64(pps)/1e3, 'f', -1, 64) + "k"
	}
	return strconv.Itoa(pps)
}

func pingField(p func(*RunResult) *PingResult, f func(*PingResult) float64) func(*RunResult) (float64, bool) {
	return func(r *RunResult) (float64, bool) {
		if pr := p(r); pr != nil {
			return f(pr), true
		}
		return 0, false
	}
}

func idle(r *RunResult) *PingResult   { return r.PingIdle }
func loaded(r *RunResult) *PingResult { return r.PingLoaded }
func p50(p *PingResult) float64       { return p.P50ms }
func p99(p *PingResult) float64       { return p.P99ms }

var metrics = []metric{
	{"tcp_1_gbps", func(*Config) string { return "TCP 1 stream (Gbit/s)" }, "higher", "%.2f",
		tcpGbps(func(r *RunResult) *TCPResult { return r.TCP1 })},
	{"tcp_n_gbps", func(c *Config) string { return fmt.Sprintf("TCP %d streams (Gbit/s)", c.Streams) }, "higher", "%.2f",
		tcpGbps(func(r *RunResult) *TCPResult { return r.TCPN })},
	{"udp_delivered_pps", func(c *Config) string { return fmt.Sprintf("UDP %d B delivered at max rate (pkt/s)", c.UDPSize) },
		"higher", "%.0f", udpField(maxRate, func(u *UDPResult) float64 { return u.PPS })},
	{"udp_offered_pps", func(c *Config) string { return fmt.Sprintf("UDP %d B offered at max rate (pkt/s)", c.UDPSize) },
		"—", "%.0f", udpField(maxRate, func(u *UDPResult) float64 { return u.OfferedPPS })},
	{"udp_rate_loss_pct", func(c *Config) string {
		return fmt.Sprintf("UDP %d B loss at %s pkt/s (%%)", c.UDPSize, fmtRate(c.UDPRatePPS))
	}, "lower", "%.2f", udpField(fixedRate, func(u *UDPResult) float64 { return u.LossPct })},
	{"ping_idle_p50_ms", func(*Config) string { return "ping idle p50 (ms)" }, "lower", "%.3f", pingField(idle, p50)},
	{"ping_idle_p99_ms", func(*Config) string { return "ping idle p99 (ms)" }, "lower", "%.3f", pingField(idle, p99)},
	{"ping_loaded_p50_ms", func(*Config) string { return "ping under TCP load p50 (ms)" }, "lower", "%.3f", pingField(loaded, p50)},
	{"ping_loaded_p99_ms", func(*Config) string { return "ping under TCP load p99 (ms)" }, "lower", "%.3f", pingField(loaded, p99)},
	{"cpu_s_per_gb", func(c *Config) string { return fmt.Sprintf("tunnel CPU s per GB (TCP at %s)", c.CPURate) }, "lower", "%.2f",
		func(r *RunResult) (float64, bool) {
			if r.CPU == nil {
				return 0, false
			}
			return r.CPU.PerGB, true
		}},
	{"peak_rss_mib", func(*Config) string { return "tunnel peak RSS (MiB)" }, "lower", "%.1f",
		func(r *RunResult) (float64, bool) {
			if r.Memory == nil {
				return 0, false
			}
			return r.Memory.TotalMiB, true
		}},
	{"loaded_pss_mib", func(*Config) string { return "tunnel memory under TCP load (MiB, PSS)" }, "lower", "%.1f",
		func(r *RunResult) (float64, bool) {
			if r.Memory == nil || !(r.Memory.LoadedPSSMiB > 0) {
				return 0, false
			}
			return r.Memory.LoadedPSSMiB, true
		}},
}

// summarize computes median/min/max per metric. A metric a system does not
// have (bare has no tunnel process, so no CPU or RSS) is absent, never 0.
func summarize(runs []*RunResult) map[string]Stat {
	out := map[string]Stat{}
	for _, m := range metrics {
		var xs []float64
		for _, r := range runs {
			if v, ok := m.get(r); ok {
				xs = append(xs, v)
			}
		}
		if len(xs) == 0 {
			continue
		}
		slices.Sort(xs)
		med := xs[len(xs)/2]
		if len(xs)%2 == 0 {
			med = (xs[len(xs)/2-1] + xs[len(xs)/2]) / 2
		}
		out[m.key] = Stat{Median: med, Min: xs[0], Max: xs[len(xs)-1], N: len(xs)}
	}
	return out
}

func (r *Results) system(name string) *SystemResult {
	for _, s := range r.Systems {
		if s.Name == name && s.Status == statusOK {
			return s
		}
	}
	return nil
}

// ratio formats v relative to the reference system's median for the same
// metric, or "—" when there is no such reference figure.
func (r *Results) ratio(key string, v float64, ref string) string {
	s := r.system(ref)
	if s == nil {
		return "—"
	}
	st, ok := s.Summary[key]
	if !ok || st.Median == 0 {
		return "—"
	}
	return fmtRatio(v / st.Median)
}

// fmtRatio keeps two significant digits below 0.1, so a tiny ratio never
// prints as a misleading "0.00x".
func fmtRatio(x float64) string {
	if x != 0 && x < 0.1 {
		return fmt.Sprintf("%.2gx", x)
	}
	return fmt.Sprintf("%.2fx", x)
}

type row struct{ cells []string }

func (r *Results) rows() (header []string, rows []row) {
	header = []string{"metric", "better", "system", "median", "min", "max", "vs wireguard-go", "vs openvpn", "vs bare"}
	for _, m := range metrics {
		for _, s := range r.Systems {
			if s.Status != statusOK {
				continue
			}
			st, ok := s.Summary[m.key]
			if !ok {
				continue
			}
			rows = append(rows, row{[]string{m.label(&r.Config), m.better, s.Name,
				fmt.Sprintf(m.format, st.Median), fmt.Sprintf(m.format, st.Min), fmt.Sprintf(m.format, st.Max),
				r.ratio(m.key, st.Median, SysWireguardGo), r.ratio(m.key, st.Median, SysOpenVPN), r.ratio(m.key, st.Median, SysBare)}})
		}
	}
	return header, rows
}

// Table renders the comparison for a terminal.
func (r *Results) Table() string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	header, rows := r.rows()
	if len(rows) > 0 {
		fmt.Fprintln(tw, strings.ToUpper(strings.Join(header, "\t")))
	}
	last := ""
	for _, rw := range rows {
		c := slices.Clone(rw.cells)
		if c[0] == last { // print each metric's name once per group
			c[0], c[1] = "", ""
		} else {
			last = c[0]
		}
		fmt.Fprintln(tw, strings.Join(c, "\t"))
	}
	tw.Flush()
	if fh, frows := r.faultRows(); len(frows) > 0 {
		if len(rows) > 0 {
			b.WriteString("\n")
		}
		b.WriteString("TCP throughput under faults\n")
		tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, strings.ToUpper(strings.Join(fh, "\t")))
		for _, rw := range frows {
			fmt.Fprintln(tw, strings.Join(rw, "\t"))
		}
		tw.Flush()
	}
	if fh, frows := r.floodRows(); len(frows) > 0 {
		b.WriteString("\nVictim TCP throughput under floods\n")
		tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, strings.ToUpper(strings.Join(fh, "\t")))
		for _, rw := range frows {
			fmt.Fprintln(tw, strings.Join(rw, "\t"))
		}
		tw.Flush()
	}
	r.writeFailures(&b, "")
	fmt.Fprintf(&b, "%d run(s) of %s per test; ratios are medians over the reference's median.\n", r.Config.Runs, r.Duration)
	return b.String()
}

// writeFailures lists the failed systems and the runs measured again, one line each (a multi-line build
// error would break a Markdown list).
func (r *Results) writeFailures(b *strings.Builder, bullet string) {
	for _, s := range r.Failed() {
		fmt.Fprintf(b, "%s%s FAILED: %s\n", bullet, s.Name, strings.ReplaceAll(s.Error, "\n", " / "))
	}
	for _, s := range r.Systems {
		for _, why := range s.Retried {
			fmt.Fprintf(b, "%s%s measured again after a failed %s\n", bullet, s.Name, strings.ReplaceAll(why, "\n", " / "))
		}
	}
}

// standing is the compact table that opens BENCHMARKS.md: one row per metric, the median of every
// measured system side by side, and Salvo's ratio to each reference that was measured.
func (r *Results) standing() (header []string, rows [][]string) {
	var systems []*SystemResult
	for _, s := range r.Systems {
		if s.Status == statusOK {
			systems = append(systems, s)
		}
	}
	salvo := r.system(SysSalvo)
	var refs []string
	for _, ref := range []string{SysWireguardGo, SysOpenVPN, SysBare} {
		if salvo != nil && r.system(ref) != nil {
			refs = append(refs, ref)
		}
	}
	header = []string{"metric", "better"}
	for _, s := range systems {
		header = append(header, s.Name)
	}
	for _, ref := range refs {
		header = append(header, "salvo vs "+ref)
	}
	for _, m := range metrics {
		row := []string{m.label(&r.Config), m.better}
		measured := false
		for _, s := range systems {
			st, ok := s.Summary[m.key]
			if !ok {
				row = append(row, "—")
				continue
			}
			measured = true
			row = append(row, fmt.Sprintf(m.format, st.Median))
		}
		for _, ref := range refs {
			if st, ok := salvo.Summary[m.key]; ok {
				row = append(row, r.ratio(m.key, st.Median, ref))
			} else {
				row = append(row, "—")
			}
		}
		if measured {
			rows = append(rows, row)
		}
	}
	return header, rows
}

func writeMarkdownTable(b *strings.Builder, header []string, rows [][]string) {
	b.WriteString("| " + strings.Join(header, " | ") + " |\n")
	b.WriteString(strings.Repeat("|---", len(header)) + "|\n")
	for _, rw := range rows {
		b.WriteString("| " + strings.Join(rw, " | ") + " |\n")
	}
}

// Markdown renders a self-contained section: where, when, how, the standing (medians side by side),
// then every figure with its spread.
func (r *Results) Markdown() string {
	var b strings.Builder
	e := r.Env
	fmt.Fprintf(&b, "## System benchmark, %s\n\n", e.Date)
	fmt.Fprintf(&b, "- Machine: %s, %d cores\n- Kernel: Linux %s\n- Go: %s\n- iperf3: %s\n", e.CPUModel, e.Cores, e.Kernel, e.GoVersion, e.Iperf3)
	for _, s := range r.Systems {
		if s.Version != "" {
			fmt.Fprintf(&b, "- %s: %s\n", s.Name, s.Version)
		}
	}
	fmt.Fprintf(&b, "- Runs: %d x %s per test (median shown, min and max kept)\n", r.Config.Runs, r.Duration)
	fmt.Fprintf(&b, "- Command: `%s`\n", e.CommandLine)
	if len(r.Config.Faults) > 0 {
		fmt.Fprintf(&b, "- Faults: %s\n", strings.Join(r.Config.Faults, ", "))
	}
	b.WriteString("\n")
	if sh, srows := r.standing(); len(srows) > 0 {
		b.WriteString("Medians:\n\n")
		writeMarkdownTable(&b, sh, srows)
		b.WriteString("\nEvery figure, with its spread:\n\n")
	}
	header, rows := r.rows()
	if len(rows) > 0 {
		cells := make([][]string, len(rows))
		for i, rw := range rows {
			cells[i] = rw.cells
		}
		writeMarkdownTable(&b, header, cells)
	}
	if fh, frows := r.faultRows(); len(frows) > 0 {
		if len(rows) > 0 {
			b.WriteString("\n")
		}
		b.WriteString("### TCP throughput under faults\n\n")
		b.WriteString(r.faultNote() + "\n\n")
		writeMarkdownTable(&b, fh, frows)
	}
	if fh, frows := r.floodRows(); len(frows) > 0 {
		b.WriteString("\n### Victim TCP throughput under floods\n\n")
		b.WriteString(floodNote + "\n\n")
		writeMarkdownTable(&b, fh, frows)
	}
	var notes strings.Builder
	r.writeFailures(&notes, "- ")
	if notes.Len() > 0 {
		b.WriteString("\n" + notes.String())
	}
	b.WriteString("\n")
	return b.String()
}
