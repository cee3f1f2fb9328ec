package e2e

import (
	"image/png"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/dustin/go-humanize"
	"golang.org/x/net/html"

	"github.com/kiss-cache/kiss/internal/testenv"
	"github.com/kiss-cache/kiss/storage"
)

// domNode helpers over golang.org/x/net/html.
func findAll(n *html.Node, match func(*html.Node) bool) []*html.Node {
	var out []*html.Node
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if match(n) {
			out = append(out, n)
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(n)
	return out
}

func attr(n *html.Node, key string) string {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val
		}
	}
	return ""
}

func byID(root *html.Node, id string) *html.Node {
	if all := findAll(root, func(n *html.Node) bool { return n.Type == html.ElementNode && attr(n, "id") == id }); len(all) > 0 {
		return all[0]
	}
	return nil
}

func elems(root *html.Node, tag, class string) []*html.Node {
	return findAll(root, func(n *html.Node) bool {
		return n.Type == html.ElementNode && n.Data == tag && (class == "" || attr(n, "class") == class)
	})
}

func text(n *html.Node) string {
	var b strings.Builder
	for _, t := range findAll(n, func(n *html.Node) bool { return n.Type == html.TextNode }) {
		b.WriteString(t.Data)
	}
	return strings.Join(strings.Fields(b.String()), " ")
}

// TestReportPageChromium: kiss report's page for a cache written by the real
// nix copy, after two prunes and a verify that found a missing NAR, loaded
// in headless Chromium from file:// with the network closed: the roots
// table (closure sizes as Nix computes them), the prunes table, the chart
// (a point per prune, a bar per prune that freed bytes) and the problem are
// in the DOM, nothing is loaded from elsewhere, and the screenshot is not
// blank. KISS_SCREENSHOT_DIR keeps the screenshot for a person to look at.
func TestReportPageChromium(t *testing.T) {
	chromium := testenv.Chromium(t)
	n := testenv.Nix(t)
	out := n.BuildAttrs(operatorExpr)
	dir := t.TempDir()
	url := "file://" + dir
	var all []string
	for _, p := range out {
		all = append(all, p)
	}
	sort.Strings(all)
	if err := n.CopyTo(url+"?compression=zstd", all...); err != nil {
		t.Fatal(err)
	}
	kissRootsAdd(t, url, "web", out["app"])
	kissRootsAdd(t, url, "ops", out["tool"])
	kissJSON(t, nil, 0, "prune", "--grace", "0s", url)
	if err := n.CopyTo(url+"?compression=zstd", out["garbage"]); err != nil { // garbage again
		t.Fatal(err)
	}
	kissJSON(t, nil, 0, "prune", "--grace", "0s", url)
	st := openStore(t, url)
	utilNAR := narKeyOf(t, st, testenv.StoreHash(out["util"])+".narinfo")
	if err := st.Delete(e2eCtx(t), utilNAR, storage.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	kissJSON(t, nil, 8, "verify", url)

	page := filepath.Join(t.TempDir(), "report.html")
	kissJSON(t, nil, 0, "report", "--grace", "0s", "-o", page, url)
	kissJSON(t, nil, 0, "report", "--grace", "0s", url)
	if _, err := os.Stat(filepath.Join(dir, "index.html")); err != nil {
		t.Errorf("kiss report wrote no index.html into the store: %v", err)
	}

	dom, err := html.Parse(strings.NewReader(chromium.DumpDOM("file://" + page)))
	if err != nil {
		t.Fatal(err)
	}
	info := nixPathInfo(t, n, url, out["tool"])
	rows := elems(byID(dom, "roots"), "tr", "")[1:] // after the header
	if len(rows) != 2 {
		t.Fatalf("roots table: %d rows, want 2", len(rows))
	}
	opsRow := ""
	for _, r := range rows {
		if strings.Contains(text(r), "gcroots/ops") {
			opsRow = text(r)
		}
	}
	if want := humanize.IBytes(info[out["tool"]].ClosureDownloadSize); !strings.Contains(opsRow, want) {
		t.Errorf("roots row %q lacks the closure size nix path-info -rS gives (%s)", opsRow, want)
	}
	if prunes := elems(byID(dom, "prunes"), "tr", "")[1:]; len(prunes) != 2 || !strings.Contains(text(prunes[0]), "ok") {
		t.Errorf("prunes table: %d rows (%v), want 2 successful", len(prunes), text(byID(dom, "prunes")))
	}
	svg := byID(dom, "history")
	if svg == nil || len(elems(svg, "circle", "kept")) != 2 || len(elems(svg, "polyline", "kept")) != 1 {
		t.Errorf("chart: want a kept line through 2 points")
	} else if bars := elems(svg, "rect", "freed"); len(bars) < 3 { // two prunes freed bytes, plus the legend's
		t.Errorf("chart: %d freed bars, want one per prune that freed bytes", len(bars)-1)
	}
	problems := text(byID(dom, "problems"))
	if !strings.Contains(problems, "missing-nar") || !strings.Contains(problems, testenv.StoreHash(out["util"])) {
		t.Errorf("problems section %q lacks util's missing NAR", problems)
	}
	if s := elems(dom, "script", ""); len(s) > 0 {
		t.Errorf("the page has %d scripts; it must need none", len(s))
	}
	for _, el := range findAll(dom, func(n *html.Node) bool { return n.Type == html.ElementNode }) {
		for _, k := range []string{"src", "href"} {
			if v := attr(el, k); v != "" {
				t.Errorf("<%s %s=%q>: the page must load nothing", el.Data, k, v)
			}
		}
	}

	shot := filepath.Join(t.TempDir(), "report.png")
	if d := os.Getenv("KISS_SCREENSHOT_DIR"); d != "" {
		shot = filepath.Join(d, "kiss-report.png")
	}
	chromium.Screenshot("file://"+page, shot, 1000, 1300)
	f, err := os.Open(shot)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	colors := map[[3]uint32]bool{}
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y += 7 {
		for x := b.Min.X; x < b.Max.X; x += 7 {
			r, g, bl, _ := img.At(x, y).RGBA()
			colors[[3]uint32{r >> 8, g >> 8, bl >> 8}] = true
		}
	}
	if b.Dx() != 1000 || len(colors) < 20 {
		t.Errorf("screenshot %s: %dx%d with %d colours: blank or wrong size", shot, b.Dx(), b.Dy(), len(colors))
	}
	t.Logf("screenshot: %s", shot)
}
