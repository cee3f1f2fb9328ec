package reportpage

import (
	"fmt"
	"html"
	"html/template"
	"strings"

	"github.com/dustin/go-humanize"
)

// Chart geometry (SVG user units).
const (
	chartW, chartH = 760, 240
	padL, padR     = 70, 20
	padT, padB     = 20, 40
)

// chart draws kept bytes (a line: what the roots keep after each prune) and
// freed bytes (a bar per prune) over time, as inline SVG: no script, so the
// page works offline and under any Content-Security-Policy.
func chart(h []Prune) template.HTML {
	var b strings.Builder
	fmt.Fprintf(&b, `<svg id="history" role="img" aria-label="kept and freed bytes per prune" viewBox="0 0 %d %d" width="%d" height="%d" xmlns="http://www.w3.org/2000/svg">`, chartW, chartH, chartW, chartH)
	if len(h) == 0 {
		fmt.Fprintf(&b, `<text x="%d" y="%d" class="empty">no prune report yet</text></svg>`, chartW/2-70, chartH/2)
		return template.HTML(b.String())
	}
	var top uint64 = 1
	for _, p := range h {
		top = max(top, uint64(max(p.Reachable.Bytes, 0)), uint64(max(p.Deleted.Bytes, 0)))
	}
	plotW, plotH := float64(chartW-padL-padR), float64(chartH-padT-padB)
	barW := max(2, min(24, plotW/float64(len(h))*0.6))
	// Points sit inside the plot by half a bar (plus a gap), so the first
	// and last bars do not cross the axes.
	inset := barW/2 + 4
	innerW := plotW - 2*inset
	t0, t1 := h[0].Time, h[len(h)-1].Time
	span := t1.Sub(t0).Seconds()
	x := func(i int) float64 {
		if span <= 0 {
			return padL + plotW*float64(i+1)/float64(len(h)+1)
		}
		return padL + inset + innerW*h[i].Time.Sub(t0).Seconds()/span
	}
	y := func(v int64) float64 { return padT + plotH*(1-float64(max(v, 0))/float64(top)) }
	// Axes and gridlines with byte labels.
	for k := 0; k <= 4; k++ {
		v := int64(float64(top) * float64(k) / 4)
		fmt.Fprintf(&b, `<line class="grid" x1="%d" x2="%d" y1="%.1f" y2="%.1f"/>`, padL, chartW-padR, y(v), y(v))
		fmt.Fprintf(&b, `<text class="ylabel" x="%d" y="%.1f" text-anchor="end">%s</text>`, padL-6, y(v)+4, html.EscapeString(humanize.IBytes(uint64(v))))
	}
	fmt.Fprintf(&b, `<text class="xlabel" x="%d" y="%d">%s</text>`, padL, chartH-12, html.EscapeString(t0.UTC().Format("2006-01-02 15:04")))
	if len(h) > 1 {
		fmt.Fprintf(&b, `<text class="xlabel" x="%d" y="%d" text-anchor="end">%s</text>`, chartW-padR, chartH-12, html.EscapeString(t1.UTC().Format("2006-01-02 15:04")))
	}
	// Freed: bars.
	for i, p := range h {
		if p.Deleted.Bytes <= 0 {
			continue
		}
		fmt.Fprintf(&b, `<rect class="freed" x="%.1f" y="%.1f" width="%.1f" height="%.1f"><title>%s: freed %s</title></rect>`,
			x(i)-barW/2, y(p.Deleted.Bytes), barW, y(0)-y(p.Deleted.Bytes),
			html.EscapeString(p.Time.UTC().Format("2006-01-02 15:04")), html.EscapeString(humanize.IBytes(uint64(p.Deleted.Bytes))))
	}
	// Kept: a line with a dot per prune.
	var pts []string
	for i, p := range h {
		pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(i), y(p.Reachable.Bytes)))
	}
	fmt.Fprintf(&b, `<polyline class="kept" points="%s"/>`, strings.Join(pts, " "))
	for i, p := range h {
		fmt.Fprintf(&b, `<circle class="kept" cx="%.1f" cy="%.1f" r="3"><title>%s: kept %s</title></circle>`,
			x(i), y(p.Reachable.Bytes), html.EscapeString(p.Time.UTC().Format("2006-01-02 15:04")), html.EscapeString(humanize.IBytes(uint64(max(p.Reachable.Bytes, 0)))))
	}
	// Legend.
	fmt.Fprintf(&b, `<g class="legend"><rect class="freed" x="%d" y="6" width="12" height="8"/><text x="%d" y="14">freed</text>`, chartW-padR-150, chartW-padR-134)
	fmt.Fprintf(&b, `<line class="kept" x1="%d" x2="%d" y1="10" y2="10"/><text x="%d" y="14">kept</text></g>`, chartW-padR-80, chartW-padR-66, chartW-padR-60)
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}
