package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kiss-cache/kiss/gateway"
	"github.com/kiss-cache/kiss/gc"
	"github.com/kiss-cache/kiss/internal/testenv"
)

// describing is a prometheus.Registerer that only records the names of what
// is registered with it.
type describing struct{ names map[string]bool }

var fqNameRE = regexp.MustCompile(`fqName: "([^"]+)"`)

func (d *describing) add(desc *prometheus.Desc) {
	if m := fqNameRE.FindStringSubmatch(desc.String()); m != nil {
		d.names[m[1]] = true
	}
}

func (d *describing) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc)
	go func() { c.Describe(ch); close(ch) }()
	for desc := range ch {
		d.add(desc)
	}
	return nil
}

func (d *describing) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		_ = d.Register(c)
	}
}

func (d *describing) Unregister(prometheus.Collector) bool { return false }

// exportedMetrics is every metric name kiss exports, from the code's own
// registrations: kiss prune's metrics file and kiss serve's /metrics.
func exportedMetrics(t *testing.T) map[string]bool {
	d := &describing{names: map[string]bool{}}
	registerPruneMetrics(d, &gc.Report{}, 0)
	gateway.DescribeMetrics(d.add)
	if !d.names["kiss_prune_success"] || !d.names["kiss_gateway_requests_total"] || !d.names["process_resident_memory_bytes"] {
		t.Fatalf("exported metrics look incomplete: %v", d.names)
	}
	return d.names
}

var promNameRE = regexp.MustCompile(`\b(?:kiss|process|go)_[a-zA-Z0-9_]+\b`)

// TestGrafanaDashboardMetrics: every metric docs/grafana-dashboard.json
// queries is one kiss exports.
func TestGrafanaDashboardMetrics(t *testing.T) {
	exported := exportedMetrics(t)
	data, err := os.ReadFile(filepath.Join(testenv.ModuleRoot(), "docs", "grafana-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title  string `json:"title"`
		UID    string `json:"uid"`
		Panels []struct {
			Type    string `json:"type"`
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Query any `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("docs/grafana-dashboard.json: %v", err)
	}
	if dash.Title == "" || dash.UID == "" {
		t.Error("dashboard lacks a title or uid")
	}
	var queries []string
	for _, p := range dash.Panels {
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q queries nothing", p.Title)
		}
		for _, tg := range p.Targets {
			queries = append(queries, tg.Expr)
		}
	}
	for _, v := range dash.Templating.List {
		if s, ok := v.Query.(string); ok {
			queries = append(queries, s)
		}
	}
	used := map[string]bool{}
	for _, q := range queries {
		for _, name := range promNameRE.FindAllString(q, -1) {
			base := name
			for _, suf := range []string{"_bucket", "_sum", "_count"} {
				if b, ok := strings.CutSuffix(name, suf); ok && exported[b] {
					base = b
				}
			}
			used[base] = true
			if !exported[base] {
				t.Errorf("the dashboard queries %s (in %q), which kiss does not export", name, q)
			}
		}
	}
	var names []string
	for n := range used {
		names = append(names, n)
	}
	sort.Strings(names)
	t.Logf("dashboard queries %d exported metrics: %v", len(names), names)
	if len(used) < 10 {
		t.Errorf("the dashboard queries only %d kiss metrics", len(used))
	}
}
