// Package promcheck checks sysvm's Prometheus alert rules and Grafana dashboard against the
// metrics sysvm exports: the rules must parse with Prometheus's own rule parser, every
// expression (rules and dashboard panels) with its PromQL parser, and every metric an
// expression names must be one a registry gathered in the test holds. Tests only: it links
// Prometheus's parser, which the sysvm binary does not need.
package promcheck

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

// Expr is one PromQL expression and where it comes from.
type Expr struct {
	Where string
	Query string
}

// RuleExprs parses a rule file with Prometheus's rule parser (which also parses each
// expression) and returns the expressions of its alerting and recording rules.
func RuleExprs(path string) ([]Expr, error) {
	groups, errs := rulefmt.ParseFile(path, false)
	if len(errs) > 0 {
		return nil, fmt.Errorf("rule file %s: %w", path, errors.Join(errs...))
	}
	var out []Expr
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			name := r.Alert
			if name == "" {
				name = r.Record
			}
			out = append(out, Expr{Where: path + ": " + g.Name + "/" + name, Query: r.Expr})
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("rule file %s has no rules", path)
	}
	return out, nil
}

// DashboardExprs returns the expr of every target of every panel (rows' panels included) of a
// Grafana dashboard JSON file.
func DashboardExprs(path string) ([]Expr, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var d struct {
		Panels []panel `json:"panels"`
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		return nil, fmt.Errorf("dashboard %s: %w", path, err)
	}
	var out []Expr
	var walk func(ps []panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			for _, t := range p.Targets {
				out = append(out, Expr{Where: path + ": " + p.Title + " " + t.RefID, Query: t.Expr})
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	if len(out) == 0 {
		return nil, fmt.Errorf("dashboard %s has no queries", path)
	}
	return out, nil
}

type panel struct {
	Title   string  `json:"title"`
	Panels  []panel `json:"panels"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
}

// grafanaVars are the dashboard variables the queries use, with a value PromQL accepts.
var grafanaVars = strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h")

// MetricNames parses a PromQL expression and returns the metric names it selects.
func MetricNames(query string) ([]string, error) {
	expr, err := parser.ParseExpr(grafanaVars.Replace(query))
	if err != nil {
		return nil, err
	}
	var names []string
	parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		name := vs.Name
		for _, m := range vs.LabelMatchers {
			if m.Name == labels.MetricName && m.Type == labels.MatchEqual {
				name = m.Value
			}
		}
		if name != "" && !slices.Contains(names, name) {
			names = append(names, name)
		}
		return nil
	})
	if len(names) == 0 {
		return nil, fmt.Errorf("expression %q selects no metric by name", query)
	}
	return names, nil
}

// Exported gathers the registries and returns the series names they export: each family's
// name, and for histograms and summaries the _bucket, _sum and _count series.
func Exported(gs ...prometheus.Gatherer) (map[string]bool, error) {
	out := map[string]bool{}
	for _, g := range gs {
		fams, err := g.Gather()
		if err != nil {
			return nil, err
		}
		for _, f := range fams {
			n := f.GetName()
			out[n] = true
			switch f.GetType() {
			case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
				out[n+"_bucket"], out[n+"_sum"], out[n+"_count"] = true, true, true
			case dto.MetricType_SUMMARY:
				out[n+"_sum"], out[n+"_count"] = true, true
			}
		}
	}
	return out, nil
}

// Unknown returns, for each expression, the metric names it uses that exported lacks
// ("where: name"), and the parse errors.
func Unknown(exprs []Expr, exported map[string]bool) (unknown []string, err error) {
	var errs []error
	for _, e := range exprs {
		names, perr := MetricNames(e.Query)
		if perr != nil {
			errs = append(errs, fmt.Errorf("%s: %w", e.Where, perr))
			continue
		}
		for _, n := range names {
			if !exported[n] {
				unknown = append(unknown, e.Where+": "+n)
			}
		}
	}
	return unknown, errors.Join(errs...)
}

// descName is the metric name in a prometheus.Desc's String form (Desc{fqName: "name", ...}).
var descName = regexp.MustCompile(`fqName: "([^"]+)"`)

// Described returns the names of the metrics collectors describe, with a histogram's or
// summary's series names unknown to it: use it for metrics that are defined but carry series
// only once their feature has rows (a template rollout, a certificate), where a stack under
// test has none. Gathered series (Exported) remain the stronger check.
func Described(cs ...prometheus.Collector) map[string]bool {
	out := map[string]bool{}
	for _, c := range cs {
		ch := make(chan *prometheus.Desc, 64)
		go func() {
			c.Describe(ch)
			close(ch)
		}()
		for d := range ch {
			if m := descName.FindStringSubmatch(d.String()); m != nil {
				out[m[1]] = true
			}
		}
	}
	return out
}
