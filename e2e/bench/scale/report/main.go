// Command report turns the JSON lines of vprune runs (e2e/bench/scale.sh)
// into the tables of docs/benchmarks.md (scale and cost model) and a PNG
// plot of peak RSS and time against the number of paths (with gnuplot).
//
//	report -in results.jsonl -png scale.png > tables.md
//
// The cost model prices the requests the runs counted on the virtual store
// at S3 Standard list prices (us-east-1) and computes a wall time from them
// at a stated latency and concurrency per request type. Both are stated in
// the output; nothing in it is estimated by hand.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/kiss-cache/kiss/e2e/bench/scale/result"
)

type run = result.Run

// Prices: S3 Standard, us-east-1, per request (list prices).
const (
	priceTier1     = 0.005 / 1000  // PUT, COPY, POST, LIST
	priceTier2     = 0.0004 / 1000 // GET, HEAD
	priceInventory = 0.0025 / 1e6  // per object listed in an inventory report
)

// The latency model: one request of each type, and how many kiss keeps in
// flight (its defaults).
var latency = map[string]struct {
	d        time.Duration
	inFlight int
}{
	"ListObjectsV2": {100 * time.Millisecond, 16},
	"GetObject":     {30 * time.Millisecond, 64},
	"HeadObject":    {30 * time.Millisecond, 64},
	"PutObject":     {50 * time.Millisecond, 1},
	"DeleteObjects": {400 * time.Millisecond, 4},
}

func main() {
	in := flag.String("in", "", "vprune JSON lines")
	png := flag.String("png", "", "write the plot here (needs gnuplot)")
	flag.Parse()
	f, err := os.Open(*in)
	if err != nil {
		fail(err)
	}
	var runs []run
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var r run
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			continue // build output, progress
		}
		if r.Mode != "" {
			runs = append(runs, r)
		}
	}
	sort.SliceStable(runs, func(i, j int) bool { return runs[i].Paths < runs[j].Paths })
	scaleTable(os.Stdout, runs)
	costTable(os.Stdout, runs)
	targets(os.Stdout, runs)
	gogcTable(os.Stdout, runs)
	if *png != "" {
		if err := plot(runs, *png); err != nil {
			fail(err)
		}
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "report:", err)
	os.Exit(1)
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func name(r run) string {
	n := r.Mode
	if r.Inventory {
		n += " + inventory"
	}
	if r.GOGC != "" {
		n += ", GOGC=" + r.GOGC
	}
	return n
}

func scaleTable(w io.Writer, runs []run) {
	fmt.Fprintln(w, "| paths | run | wall s | CPU s | peak RSS MiB | RSS growth B/path (from the smallest N) | time per path µs | reachable | narinfo reads | memo hits | deleted | check |")
	fmt.Fprintln(w, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
	base := map[string]run{}
	for _, r := range runs {
		k := name(r)
		if _, ok := base[k]; !ok {
			base[k] = r
		}
	}
	for _, r := range runs {
		b := base[name(r)]
		growth := "—"
		if r.Paths > b.Paths {
			growth = fmt.Sprintf("%.1f", float64(r.PeakRSS-b.PeakRSS)/float64(r.Paths-b.Paths))
		}
		check := r.Check
		if r.Error != "" {
			check = "ERROR " + r.Error
		}
		fmt.Fprintf(w, "| %s | %s | %.1f | %.1f | %.0f | %s | %.2f | %d | %d | %d | %d | %s |\n",
			paths(r.Paths), name(r), r.WallSeconds, r.UserSeconds+r.SysSeconds, mib(r.PeakRSS), growth,
			r.WallSeconds/float64(r.Paths)*1e6, r.Reachable, r.Reads, r.MemoHits, r.Deleted, check)
	}
	fmt.Fprintln(w)
}

func paths(n int64) string {
	e := math.Log10(float64(n))
	if e == math.Trunc(e) {
		return fmt.Sprintf("10^%d", int(e))
	}
	return fmt.Sprint(n)
}

func costTable(w io.Writer, runs []run) {
	fmt.Fprintln(w, "| paths | prune | LIST pages | inventory objects | GET | HEAD | PUT | DeleteObjects | price $ | modeled wall |")
	fmt.Fprintln(w, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range runs {
		if r.Mode != "real" && r.Mode != "warmreal" {
			continue
		}
		q := r.Requests
		price := float64(q["ListObjectsV2"]+q["PutObject"])*priceTier1 + float64(q["GetObject"]+q["HeadObject"])*priceTier2 +
			float64(r.InventoryObjects)*priceInventory
		wall := modeledWall(q)
		kind := "cold (no memo)"
		if r.Mode == "warmreal" {
			kind = "warm (memo)"
		}
		if r.Inventory {
			kind += ", inventory"
		}
		fmt.Fprintf(w, "| %s | %s | %d | %d | %d | %d | %d | %d | %.2f | %s |\n", paths(r.Paths), kind,
			q["ListObjectsV2"], r.InventoryObjects, q["GetObject"], q["HeadObject"], q["PutObject"], q["DeleteObjects"], price, wall.Round(time.Second))
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Prices: LIST and PUT $0.005 per 1000 requests, GET and HEAD $0.0004 per 1000, S3 Inventory $0.0025 per million objects listed; DELETE requests are free (DeleteObjects counted, priced at 0; at the LIST rate they would add $0.005 per 1000).")
	var parts []string
	for _, op := range []string{"ListObjectsV2", "GetObject", "HeadObject", "PutObject", "DeleteObjects"} {
		l := latency[op]
		parts = append(parts, fmt.Sprintf("%s %v × %d in flight", op, l.d, l.inFlight))
	}
	fmt.Fprintln(w, "Modeled wall time: Σ requests × latency / in flight, phases one after the other: "+strings.Join(parts, ", ")+".")
	fmt.Fprintln(w)
}

// modeledWall is the wall time of requests q under the latency model:
// Σ requests × latency / in flight.
func modeledWall(q map[string]int64) time.Duration {
	var wall time.Duration
	for op, l := range latency {
		wall += time.Duration(float64(q[op]) * float64(l.d) / float64(l.inFlight))
	}
	return wall
}

// targets checks issue 15's targets on the runs with kiss's defaults (no
// inventory, no GOGC override): RSS growth per path and time per path from
// the smallest to each larger N, and the warm dry run at the largest N
// against the cold one, measured, its floor (the listing, which a warm run
// does as a cold one does), and under the latency model.
func targets(w io.Writer, runs []run) {
	by := map[string]map[int64]run{}
	var sizes []int64
	for _, r := range runs {
		if r.Inventory || r.GOGC != "" || r.Error != "" {
			continue
		}
		if by[r.Mode] == nil {
			by[r.Mode] = map[int64]run{}
		}
		if _, ok := by[r.Mode][r.Paths]; !ok && r.Mode == "cold" {
			sizes = append(sizes, r.Paths)
		}
		by[r.Mode][r.Paths] = r
	}
	if len(sizes) < 2 {
		return
	}
	lo, hi := sizes[0], sizes[len(sizes)-1]
	fmt.Fprintf(w, "| run | RSS growth B/path, %s → each larger N (target ≤ 40) | time per path at each N ÷ at %s (target 0.8–1.2) |\n", paths(lo), paths(lo))
	fmt.Fprintln(w, "|---|---|---|")
	for _, mode := range []string{"cold", "real", "warm", "warmreal"} {
		b, ok := by[mode][lo]
		if !ok {
			continue
		}
		var growth, linear []string
		for _, n := range sizes[1:] {
			r, ok := by[mode][n]
			if !ok {
				continue
			}
			growth = append(growth, fmt.Sprintf("%s: %.1f", paths(n), float64(r.PeakRSS-b.PeakRSS)/float64(n-lo)))
			linear = append(linear, fmt.Sprintf("%s: %.2f", paths(n), (r.WallSeconds/float64(n))/(b.WallSeconds/float64(lo))))
		}
		fmt.Fprintf(w, "| %s | %s | %s |\n", mode, strings.Join(growth, ", "), strings.Join(linear, ", "))
	}
	fmt.Fprintln(w)
	cold, okc := by["cold"][hi]
	warm, okw := by["warm"][hi]
	if !okc || !okw {
		return
	}
	mc, mw := modeledWall(cold.Requests), modeledWall(warm.Requests)
	fmt.Fprintf(w, "Warm dry run at %s: %d narinfo reads (target 0), %.1f s against %.1f s cold = **%.3f×** (target ≤ 0.1×). "+
		"Its floor is the listing, which a warm run makes as a cold one does: its list phase (listing and indexing) took %.1f s = %.3f× the cold run "+
		"(the cold run's own %.1f s)",
		paths(hi), warm.Reads, warm.WallSeconds, cold.WallSeconds, warm.WallSeconds/cold.WallSeconds,
		warm.Phases["list"], warm.Phases["list"]/cold.WallSeconds, cold.Phases["list"])
	if l, ok := by["list"][hi]; ok {
		fmt.Fprintf(w, ", and the listing alone (`vprune -mode list`: %d objects listed and dropped, the virtual store generating them) %.1f s = %.3f×",
			l.Listed, l.WallSeconds, l.WallSeconds/cold.WallSeconds)
	}
	fmt.Fprintf(w, ". Under the latency model above (dry runs: %d LIST pages, %d GETs cold, %d warm) "+
		"the cold dry run takes %s and the warm one %s = **%.3f×**.\n\n",
		warm.Requests["ListObjectsV2"], cold.Requests["GetObject"], warm.Requests["GetObject"],
		mc.Round(time.Second), mw.Round(time.Second), float64(mw)/float64(mc))
}

// gogcTable sets the runs made with another GOGC beside the same run at
// kiss prune's default (prune.GCPercent).
func gogcTable(w io.Writer, runs []run) {
	def := map[string]run{}
	for _, r := range runs {
		if r.GOGC == "" && !r.Inventory {
			def[fmt.Sprint(r.Paths, r.Mode)] = r
		}
	}
	header := false
	for _, r := range runs {
		d, ok := def[fmt.Sprint(r.Paths, r.Mode)]
		if r.GOGC == "" || r.Inventory || !ok {
			continue
		}
		if !header {
			fmt.Fprintln(w, "| paths | run | GOGC | wall s (default → this) | CPU s (default → this) | CPU ratio | peak RSS MiB (default → this) |")
			fmt.Fprintln(w, "|---:|---|---:|---:|---:|---:|---:|")
			header = true
		}
		dc, rc := d.UserSeconds+d.SysSeconds, r.UserSeconds+r.SysSeconds
		fmt.Fprintf(w, "| %s | %s | %s | %.1f → %.1f | %.1f → %.1f | %.2f× | %.0f → %.0f |\n", paths(r.Paths), r.Mode, r.GOGC,
			d.WallSeconds, r.WallSeconds, dc, rc, rc/dc, mib(d.PeakRSS), mib(r.PeakRSS))
	}
	if header {
		fmt.Fprintln(w)
	}
}

func plot(runs []run, out string) error {
	dir, err := os.MkdirTemp("", "scale-plot")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	series := map[string]*strings.Builder{}
	var order []string
	for _, r := range runs {
		if r.Inventory || r.GOGC != "" || r.Mode == "warmreal" || r.Mode == "steady" {
			continue
		}
		k := name(r)
		if series[k] == nil {
			series[k] = &strings.Builder{}
			order = append(order, k)
		}
		fmt.Fprintf(series[k], "%d %.1f %.1f\n", r.Paths, mib(r.PeakRSS), r.WallSeconds)
	}
	var rss, tm []string
	for i, k := range order {
		file := filepath.Join(dir, fmt.Sprintf("s%d.dat", i))
		if err := os.WriteFile(file, []byte(series[k].String()), 0o644); err != nil {
			return err
		}
		title := map[string]string{"list": "the listing alone", "cold": "cold dry run", "real": "real prune (cold)", "warm": "warm dry run"}[k]
		if title == "" {
			title = k
		}
		rss = append(rss, fmt.Sprintf("'%s' using 1:2 with linespoints title '%s'", file, title))
		tm = append(tm, fmt.Sprintf("'%s' using 1:3 with linespoints title '%s'", file, title))
	}
	if len(order) == 0 {
		return fmt.Errorf("nothing to plot")
	}
	script := fmt.Sprintf(`set terminal pngcairo size 1100,480 font ",10"
set output '%s'
set multiplot layout 1,2 title 'kiss prune on the virtual store (internal/vstore): peak RSS and wall time against paths'
set logscale xy
set grid
set key top left
set xlabel 'paths (narinfos)'
set ylabel 'peak RSS (MiB)'
plot %s, (x*40/1048576+40) with lines dashtype 2 title '40 B/path + 40 MiB'
set ylabel 'wall time (s)'
plot %s
unset multiplot
`, out, strings.Join(rss, ", "), strings.Join(tm, ", "))
	cmd := exec.Command("gnuplot")
	cmd.Stdin = strings.NewReader(script)
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		// Debian's gnuplot-nox may lack pngcairo: fall back to png.
		cmd = exec.Command("gnuplot")
		cmd.Stdin = strings.NewReader(strings.Replace(script, "pngcairo", "png", 1))
		cmd.Stderr = os.Stderr
		return cmd.Run()
	}
	return nil
}
