package bench

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"image/color"
	"io"
	"math"
	"os"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgsvg"
)

// plotPanels are the panels of the plot: throughput, small packets, latency under load and the two
// costs, each titled by its table label without the unit, which goes on the y axis. One panel per test in
// its own unit reads better than bars normalised to one system: the units differ, half the metrics are
// better lower, and bare has no CPU or memory figure.
var plotPanels = []struct {
	key  string
	unit func(c *Config) string
}{
	{"tcp_1_gbps", fixedUnit("Gbit/s")},
	{"tcp_n_gbps", fixedUnit("Gbit/s")},
	{"udp_delivered_pps", fixedUnit("pkt/s")},
	{"ping_loaded_p99_ms", fixedUnit("ms")},
	{"cpu_s_per_gb", func(c *Config) string { return "CPU s per GB at " + c.CPURate }},
	{"peak_rss_mib", fixedUnit("MiB")},
}

func fixedUnit(u string) func(*Config) string { return func(*Config) string { return u } }

const plotCols = 3

// systemColors keeps each system's colour the same in every plot, whatever else a run measured.
var systemColors = map[string]color.RGBA{
	SysBare:          {0x9e, 0x9e, 0x9e, 0xff},
	SysWireguardGo:   {0x44, 0x77, 0xaa, 0xff},
	SysOpenVPN:       {0xee, 0x77, 0x33, 0xff},
	SysSalvo:         {0x22, 0x88, 0x33, 0xff},
	SysSalvoRef:      {0x88, 0xcc, 0x99, 0xff},
	SysSalvoBaseline: {0xaa, 0x33, 0x77, 0xff},
	SysSalvoWgTun:    {0x66, 0xcc, 0xee, 0xff},
	SysSalvo1Worker:  {0xcc, 0xbb, 0x44, 0xff},
	SysSalvoGuard:    {0x33, 0x22, 0x88, 0xff},
}

// Plot draws the results as SVG: one small panel per test, a bar per system at its median with a
// whisker from min to max, each system in its own colour.
func (r *Results) Plot(w io.Writer) error {
	grid, err := r.plotGrid()
	if err != nil {
		return err
	}
	width, height := plotSize(len(grid))
	c := vgsvg.New(width, height)
	r.drawPanels(draw.New(c), grid)
	_, err = c.WriteTo(w)
	return err
}

// plotGrid lays the panels out plotCols to a row.
func (r *Results) plotGrid() ([][]*plot.Plot, error) {
	var ok []*SystemResult
	for _, s := range r.Systems {
		if s.Status == statusOK {
			ok = append(ok, s)
		}
	}
	if len(ok) == 0 {
		return nil, errors.New("plot: no system has results")
	}
	var panels []*plot.Plot
	for _, pp := range plotPanels {
		m, found := metricByKey(pp.key)
		if !found {
			return nil, fmt.Errorf("plot: no metric %q", pp.key)
		}
		p, err := r.panel(m, pp.unit(&r.Config), ok)
		if err != nil {
			return nil, err
		}
		if p != nil {
			panels = append(panels, p)
		}
	}
	if len(panels) == 0 {
		return nil, errors.New("plot: the results have none of the plotted metrics")
	}
	rows := (len(panels) + plotCols - 1) / plotCols
	grid := make([][]*plot.Plot, rows)
	for i := range grid {
		grid[i] = make([]*plot.Plot, plotCols)
	}
	for i, p := range panels {
		grid[i/plotCols][i%plotCols] = p
	}
	return grid, nil
}

// plotHeader is the room above the panels for the figure's title, in points.
const plotHeader = 44

func plotSize(rows int) (width, height vg.Length) {
	return vg.Length(plotCols) * 6 * vg.Centimeter, vg.Length(rows)*6.5*vg.Centimeter + plotHeader
}

// drawPanels draws the title and the grid of panels on dc.
func (r *Results) drawPanels(dc draw.Canvas, grid [][]*plot.Plot) {
	width, height := dc.Max.X-dc.Min.X, dc.Max.Y-dc.Min.Y
	dc.SetColor(color.White)
	dc.Fill(dc.Rectangle.Path())
	title := plot.New().Title.TextStyle
	dc.FillText(title, vg.Point{X: width / 2, Y: height - 6}, r.plotTitle())
	small := title
	small.Font = font.From(plot.DefaultFont, 9)
	dc.FillText(small, vg.Point{X: width / 2, Y: height - 24},
		"bars: median; whiskers: min to max; each panel in its own unit")
	tiles := draw.Tiles{Rows: len(grid), Cols: plotCols, PadTop: plotHeader, PadX: 6, PadY: 10, PadLeft: 4, PadRight: 4, PadBottom: 4}
	canvases := plot.Align(grid, tiles, dc)
	for j, row := range grid {
		for i, p := range row {
			if p != nil {
				p.Draw(canvases[j][i])
			}
		}
	}
}

func (r *Results) plotTitle() string {
	t := fmt.Sprintf("Salvo system benchmark, %d run(s) x %s", r.Config.Runs, r.Duration)
	if r.Config.Short {
		t = "Smoke run (--short), not a measurement: 1 run x " + r.Duration
	}
	if d, _, ok := strings.Cut(r.Env.Date, "T"); ok {
		t += ", " + d
	}
	if r.Env.CPUModel != "" && r.Env.CPUModel != "unknown" {
		t += fmt.Sprintf(", %s (%d cores)", r.Env.CPUModel, r.Env.Cores)
	}
	return t
}

func metricByKey(key string) (metric, bool) {
	for _, m := range metrics {
		if m.key == key {
			return m, true
		}
	}
	return metric{}, false
}

// whiskers are one panel's medians at their bars' x positions with the min-max spread, as plotter's
// error bars want them.
type whiskers struct {
	x  []float64
	st []Stat
}

func (w whiskers) Len() int                    { return len(w.st) }
func (w whiskers) XY(i int) (float64, float64) { return w.x[i], w.st[i].Median }
func (w whiskers) YError(i int) (float64, float64) {
	return w.st[i].Median - w.st[i].Min, w.st[i].Max - w.st[i].Median
}

// panel is one metric's plot, or nil when no system has it. A system without the metric (bare's CPU)
// keeps its place on the axis, marked n/a.
func (r *Results) panel(m metric, unit string, systems []*SystemResult) (*plot.Plot, error) {
	name := m.label(&r.Config)
	if i := strings.LastIndex(name, " ("); i > 0 {
		name = name[:i]
	}
	p := plot.New()
	p.Title.Text = name
	p.Title.TextStyle.Font.Size = 9
	p.Y.Label.Text = unit + ", " + m.better + " is better"
	p.Y.Label.TextStyle.Font.Size = 8
	p.Y.Tick.Label.Font.Size = 7
	p.X.Tick.Label.Font.Size = 7
	p.Y.Min = 0
	p.Y.Tick.Marker = compactTicks{}

	var names []string
	var wh whiskers
	var labels plotter.XYLabels
	top := 0.0
	for i, s := range systems {
		names = append(names, s.Name)
		st, ok := s.Summary[m.key]
		if !ok {
			continue
		}
		bar, err := plotter.NewBarChart(plotter.Values{st.Median}, vg.Points(22))
		if err != nil {
			return nil, fmt.Errorf("plot %s: %w", m.key, err)
		}
		bar.XMin = float64(i)
		bar.Color = systemColor(s.Name, i)
		bar.LineStyle.Width = 0
		p.Add(bar)
		wh.x, wh.st = append(wh.x, float64(i)), append(wh.st, st)
		top = math.Max(top, st.Max)
		labels.XYs = append(labels.XYs, plotter.XY{X: float64(i), Y: st.Max})
		labels.Labels = append(labels.Labels, compact(st.Median))
	}
	if wh.Len() == 0 {
		return nil, nil
	}
	errs, err := plotter.NewYErrorBars(wh)
	if err != nil {
		return nil, fmt.Errorf("plot %s: %w", m.key, err)
	}
	errs.LineStyle.Width = vg.Points(0.8)
	errs.CapWidth = vg.Points(6)
	p.Add(errs)
	for i, s := range systems {
		if _, ok := s.Summary[m.key]; !ok {
			labels.XYs = append(labels.XYs, plotter.XY{X: float64(i), Y: 0})
			labels.Labels = append(labels.Labels, "n/a")
		}
	}
	vals, err := plotter.NewLabels(labels)
	if err != nil {
		return nil, fmt.Errorf("plot %s: %w", m.key, err)
	}
	for i := range vals.TextStyle {
		vals.TextStyle[i].Font.Size = 7
		vals.TextStyle[i].XAlign = draw.XCenter
	}
	vals.Offset = vg.Point{Y: 3}
	p.Add(vals)
	p.Y.Max = top * 1.15 // room for the value labels above the whiskers
	p.NominalX(names...)
	return p, nil
}

func systemColor(name string, i int) color.Color {
	if c, ok := systemColors[name]; ok {
		return c
	}
	fallback := []color.RGBA{{0x55, 0x55, 0x55, 0xff}, {0xbb, 0x55, 0x66, 0xff}, {0x00, 0x99, 0x88, 0xff}}
	return fallback[i%len(fallback)]
}

// compact prints a median short enough to sit above a narrow bar: about 3 significant digits, with k
// and M for thousands and millions.
func compact(v float64) string {
	switch a := math.Abs(v); {
	case a >= 999.5e3:
		return compact(v/1e6) + "M"
	case a >= 999.5:
		return compact(v/1e3) + "k"
	case a >= 99.5:
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.3g", v)
}

// compactTicks are gonum's default ticks labelled the way the bars are (250k, not 250000.00).
type compactTicks struct{}

func (compactTicks) Ticks(lo, hi float64) []plot.Tick {
	ticks := plot.DefaultTicks{}.Ticks(lo, hi)
	for i := range ticks {
		if ticks[i].Label != "" {
			ticks[i].Label = compact(ticks[i].Value)
		}
	}
	return ticks
}

// WritePlot writes the plot of r to path.
func (r *Results) WritePlot(path string) error {
	var b bytes.Buffer
	if err := r.Plot(&b); err != nil {
		return err
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}

// ReadResults loads what --json wrote, for --plot-only.
func ReadResults(path string) (*Results, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r Results
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(r.Systems) == 0 {
		return nil, fmt.Errorf("%s: no systems in the results", path)
	}
	return &r, nil
}
