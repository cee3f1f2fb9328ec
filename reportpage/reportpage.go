// Package reportpage renders kiss report's page: one static, self-contained
// HTML file (no script, no stylesheet or font from elsewhere: it works
// offline and from file://) showing a cache's roots with their closure
// sizes, its last prunes, a chart of kept and freed bytes over time, and the
// problems the last kiss verify found. Its data comes from the store alone:
// the pruner's view (gc.View, explain.Usage) and the reports prunes and
// verify keep in .kiss/reports/ (package reports).
package reportpage

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"html/template"
	"slices"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/kiss-cache/kiss/explain"
	"github.com/kiss-cache/kiss/gc"
	"github.com/kiss-cache/kiss/nixcache"
	"github.com/kiss-cache/kiss/reports"
	"github.com/kiss-cache/kiss/storage"
	"github.com/kiss-cache/kiss/verify"
)

// DefaultKey is where kiss report puts the page in the store: the cache's
// root index, which nginx (index directive) and a bucket website serve at /.
// The pruner never touches it (nixcache.KindOther).
const DefaultKey = "index.html"

// MaxProblems is how many of the last verify's problems the page lists.
const MaxProblems = 200

// Options say what the page covers.
type Options struct {
	// Roots are the pruner's options: roots, marker expiry, grace.
	Roots gc.Options
	// Prunes is how many of the last prunes the table lists (default 20);
	// the chart shows up to History (default 365).
	Prunes, History int
}

// Prune is one row of the last prunes.
type Prune struct {
	Time        time.Time
	Markers     int
	Reachable   gc.Count
	Deleted     gc.Count
	Elapsed     float64
	Requests    int64
	Error       string
	Warnings    int
	ReportKey   string
	DeleteTotal gc.Count
}

// Data is everything on the page.
type Data struct {
	Store     string
	Now       time.Time // store clock
	Usage     *explain.UsageReport
	Prunes    []Prune // newest first
	History   []Prune // oldest first, for the chart
	Verify    *verify.Report
	VerifyKey string
	// Unreadable counts prune reports that could not be read.
	Unreadable int
	// MoreProblems counts the verify problems not listed (MaxProblems are).
	MoreProblems int
	Chart        template.HTML
}

// Collect reads what the page shows from st.
func Collect(ctx context.Context, st storage.Store, o Options) (*Data, error) {
	if o.Prunes <= 0 {
		o.Prunes = 20
	}
	if o.History <= 0 {
		o.History = 365
	}
	v, err := gc.NewView(ctx, st, o.Roots)
	if err != nil {
		return nil, err
	}
	defer v.Close()
	u, err := explain.Usage(v)
	if err != nil {
		return nil, err
	}
	d := &Data{Store: st.URL(), Now: v.Now(), Usage: u}
	list, err := reports.List(ctx, st, nixcache.ReportsPrefix)
	if err != nil {
		return nil, err
	}
	if len(list) > o.History {
		list = list[len(list)-o.History:]
	}
	for _, e := range list {
		var r gc.Report
		if err := reports.Load(ctx, st, e.Key, &r); err != nil {
			d.Unreadable++ // history, not a reason to fail the page
			continue
		}
		var req int64
		for _, n := range r.Requests {
			req += n
		}
		d.History = append(d.History, Prune{
			Time: e.Time, Markers: r.Roots.Markers, Reachable: r.Reachable, Deleted: r.Deleted,
			DeleteTotal: r.DeleteTotal, Elapsed: r.Elapsed, Requests: req, Error: r.Error,
			Warnings: len(r.Warnings), ReportKey: e.Key,
		})
	}
	d.Prunes = slices.Clone(d.History)
	slices.Reverse(d.Prunes)
	if len(d.Prunes) > o.Prunes {
		d.Prunes = d.Prunes[:o.Prunes]
	}
	vlist, err := reports.List(ctx, st, nixcache.VerifyReportsPrefix)
	if err != nil {
		return nil, err
	}
	for i := len(vlist) - 1; i >= 0; i-- {
		var vr verify.Report
		if err := reports.Load(ctx, st, vlist[i].Key, &vr); err == nil {
			d.Verify, d.VerifyKey = &vr, vlist[i].Key
			if n := len(vr.Problems); n > MaxProblems {
				d.MoreProblems, vr.Problems = n-MaxProblems, vr.Problems[:MaxProblems]
			}
			break
		}
	}
	d.Chart = chart(d.History)
	return d, nil
}

// Build collects and renders the page.
func Build(ctx context.Context, st storage.Store, o Options) ([]byte, error) {
	d, err := Collect(ctx, st, o)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if err := Render(&b, d); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// ErrKey: a key the page may not be written to.
var ErrKey = errors.New("not a key for the page")

// CheckKey says whether the page may be written at key: a valid key that
// is none of the cache's own objects (nixcache.KindOther: no narinfo, NAR,
// log, marker, nix-cache-info, .kiss/ or temp file, which the page would
// overwrite or the pruner would delete).
func CheckKey(key string) error {
	if err := storage.ValidateKey(key); err != nil {
		return err
	}
	if kind, _ := nixcache.Classify(key); kind != nixcache.KindOther {
		return fmt.Errorf("%w: %q is a %s key of the cache", ErrKey, key, kind)
	}
	return nil
}

// Publish puts the page into the store at key (DefaultKey if empty); a key
// CheckKey refuses is an error and nothing is written.
func Publish(ctx context.Context, st storage.Store, key string, page []byte) (storage.Object, error) {
	if key == "" {
		key = DefaultKey
	}
	if err := CheckKey(key); err != nil {
		return storage.Object{}, err
	}
	return st.Put(ctx, key, bytes.NewReader(page), storage.PutOptions{ContentType: "text/html; charset=utf-8"})
}

//go:embed page.html.tmpl
var pageTmpl string

var funcs = template.FuncMap{
	"bytes": func(n any) string {
		switch v := n.(type) {
		case uint64:
			return humanize.IBytes(v)
		case int64:
			return humanize.IBytes(uint64(max(v, 0)))
		case int:
			return humanize.IBytes(uint64(max(v, 0)))
		}
		return fmt.Sprint(n)
	},
	"time":    func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04 UTC") },
	"seconds": func(s float64) string { return fmt.Sprintf("%.1f s", s) },
}

var page = template.Must(template.New("page").Funcs(funcs).Parse(pageTmpl))

// Render writes the page for d.
func Render(w interface{ Write([]byte) (int, error) }, d *Data) error {
	return page.Execute(w, d)
}
