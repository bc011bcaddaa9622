package deploy

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/postbackd/postbackd/metrics"
)

// targetLabels are the labels Prometheus adds to every scraped series.
var targetLabels = []string{"job", "instance"}

// freeValueLabels take values from the configuration or the cluster
// (partner names, topics, partitions) or from the scrape: their values in
// a selector are not checked against the code.
var freeValueLabels = map[string]bool{"partner": true, "topic": true, "partition": true, "job": true, "instance": true}

// series is one exported series name and its labels.
type series struct {
	labels []string
}

var (
	knownOnce         sync.Once
	knownSeries       map[string]series // name -> labels, histograms expanded
	postbackdFamilies []string
	knownErr          error
)

// knownMetrics is every series name /metrics exports: each collector of
// metrics.New, touched once so that a vector shows its labels, gathered
// from the registry (with the Go and process collectors). A histogram
// gives NAME_bucket (plus le), NAME_sum and NAME_count, a summary NAME
// (plus quantile), NAME_sum and NAME_count.
func knownMetrics(t *testing.T) map[string]series {
	t.Helper()
	knownOnce.Do(func() { knownSeries, postbackdFamilies, knownErr = gatherKnown() })
	if knownErr != nil {
		t.Fatal(knownErr)
	}
	return knownSeries
}

func gatherKnown() (map[string]series, []string, error) {
	m := metrics.New(nil)
	v := reflect.ValueOf(m).Elem()
	collectors := 0
	for i := 0; i < v.NumField(); i++ {
		name := v.Type().Field(i).Name
		var get func(lvs ...string) error
		switch c := v.Field(i).Interface().(type) {
		case *prometheus.Registry:
			continue
		case *prometheus.CounterVec:
			get = func(lvs ...string) error { _, err := c.GetMetricWithLabelValues(lvs...); return err }
		case *prometheus.GaugeVec:
			get = func(lvs ...string) error { _, err := c.GetMetricWithLabelValues(lvs...); return err }
		case *prometheus.HistogramVec:
			get = func(lvs ...string) error { _, err := c.GetMetricWithLabelValues(lvs...); return err }
		case prometheus.Collector: // a plain metric: always exported
		default:
			return nil, nil, fmt.Errorf("metrics.Metrics.%s: a field this test does not know", name)
		}
		collectors++
		if get == nil {
			continue
		}
		touched := false
		for n := 0; n <= 10 && !touched; n++ {
			lvs := make([]string, n)
			for j := range lvs {
				lvs[j] = "x"
			}
			touched = get(lvs...) == nil
		}
		if !touched {
			return nil, nil, fmt.Errorf("metrics.Metrics.%s: no label count fits", name)
		}
	}
	fams, err := m.Registry.Gather()
	if err != nil {
		return nil, nil, err
	}
	known := map[string]series{}
	var own []string
	for _, f := range fams {
		var labels []string
		if len(f.GetMetric()) > 0 {
			for _, l := range f.GetMetric()[0].GetLabel() {
				labels = append(labels, l.GetName())
			}
		}
		name := f.GetName()
		if strings.HasPrefix(name, "postbackd_") {
			own = append(own, name)
		}
		switch f.GetType() {
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			known[name+"_bucket"] = series{append(slices.Clone(labels), "le")}
			known[name+"_sum"] = series{labels}
			known[name+"_count"] = series{labels}
		case dto.MetricType_SUMMARY:
			known[name] = series{append(slices.Clone(labels), "quantile")}
			known[name+"_sum"] = series{labels}
			known[name+"_count"] = series{labels}
		default:
			known[name] = series{labels}
		}
	}
	// Every field is one postbackd_ family (the Go and process collectors
	// are registered without a field).
	if len(own) != collectors {
		return nil, nil, fmt.Errorf("gathered %d postbackd_ families from %d metrics.Metrics fields: %v", len(own), collectors, own)
	}
	sort.Strings(own)
	return known, own, nil
}

var (
	metricName  = regexp.MustCompile(`\b((?:postbackd|process|go)_[a-zA-Z0-9_]*)`)
	selector    = regexp.MustCompile(`\b((?:postbackd|process|go)_[a-zA-Z0-9_]*)\s*\{([^}]*)\}`)
	matcher     = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"`)
	grouping    = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)`)
	labelValues = regexp.MustCompile(`label_values\(\s*(?:([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{[^}]*\})?\s*,\s*)?([a-zA-Z_][a-zA-Z0-9_]*)\s*\)`)
	simpleAlts  = regexp.MustCompile(`^[a-z0-9_]+(\|[a-z0-9_]+)*$`)
)

var (
	literalsOnce sync.Once
	literals     map[string]bool
	literalsErr  error
)

// codeLiterals is every double-quoted lower-case identifier in the
// module's non-test Go code outside deploy/: the label values the code can
// set (outcomes, results, paths, reasons, stages, routes, operations).
func codeLiterals(t *testing.T) map[string]bool {
	t.Helper()
	literalsOnce.Do(func() {
		literals = map[string]bool{}
		lit := regexp.MustCompile(`"([a-z0-9_]+)"`)
		literalsErr = filepath.WalkDir(repoPath(), func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() {
				if n := d.Name(); n == "deploy" || n == "testdata" || strings.HasPrefix(n, ".") && path != repoPath() {
					return filepath.SkipDir
				}
				return nil
			}
			if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return nil
			}
			raw, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			for _, m := range lit.FindAllStringSubmatch(string(raw), -1) {
				literals[m[1]] = true
			}
			return nil
		})
	})
	if literalsErr != nil {
		t.Fatal(literalsErr)
	}
	return literals
}

// checkExpr checks a PromQL expression (or a Grafana label_values query)
// against what postbackd exports: every postbackd_, process_ and go_ name
// exists; every label in a selector belongs to its series (or is a target
// label); every label in by/without/on/ignoring/group_* belongs to one of
// the expression's series; a value a selector expects of a label the code
// sets is one the code has. It returns the names used.
func checkExpr(t *testing.T, where, expr string) []string {
	t.Helper()
	known := knownMetrics(t)
	var names []string
	inExpr := map[string]bool{}
	for _, l := range targetLabels {
		inExpr[l] = true
	}
	for _, m := range metricName.FindAllStringSubmatch(expr, -1) {
		name := m[1]
		s, ok := known[name]
		if !ok {
			t.Errorf("%s: %s is not a metric postbackd exports\n  expr: %s", where, name, expr)
			continue
		}
		names = append(names, name)
		for _, l := range s.labels {
			inExpr[l] = true
		}
	}
	for _, m := range selector.FindAllStringSubmatch(expr, -1) {
		s, ok := known[m[1]]
		if !ok {
			continue
		}
		for _, mm := range matcher.FindAllStringSubmatch(m[2], -1) {
			label, op, value := mm[1], mm[2], mm[3]
			if !slices.Contains(s.labels, label) && !slices.Contains(targetLabels, label) {
				t.Errorf("%s: %s has no label %s (it has %v)\n  expr: %s", where, m[1], label, s.labels, expr)
				continue
			}
			if freeValueLabels[label] || label == "le" || label == "quantile" || (op != "=" && op != "=~") ||
				strings.Contains(value, "$") || !simpleAlts.MatchString(value) || !strings.HasPrefix(m[1], "postbackd_") {
				continue
			}
			for _, v := range strings.Split(value, "|") {
				if !codeLiterals(t)[v] {
					t.Errorf("%s: %s{%s%s%q}: the code never sets %q\n  expr: %s", where, m[1], label, op, value, v, expr)
				}
			}
		}
	}
	for _, m := range grouping.FindAllStringSubmatch(expr, -1) {
		for _, l := range strings.Split(m[2], ",") {
			if l = strings.TrimSpace(l); l != "" && !inExpr[l] {
				t.Errorf("%s: %s (%s): no series of the expression has label %s\n  expr: %s", where, m[1], m[2], l, expr)
			}
		}
	}
	for _, m := range labelValues.FindAllStringSubmatch(expr, -1) {
		if m[1] == "" {
			continue
		}
		if s, ok := known[m[1]]; ok && !slices.Contains(s.labels, m[2]) && !slices.Contains(targetLabels, m[2]) {
			t.Errorf("%s: label_values: %s has no label %s\n  query: %s", where, m[1], m[2], expr)
		}
	}
	return names
}

// The rule file, as Prometheus reads it (the keys postbackd's file uses).
type ruleFile struct {
	Groups []struct {
		Name     string `yaml:"name"`
		Interval string `yaml:"interval"`
		Rules    []struct {
			Alert       string            `yaml:"alert"`
			Record      string            `yaml:"record"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// The promtool test file (the keys the tests read).
type ruleTestFile struct {
	RuleFiles          []string `yaml:"rule_files"`
	EvaluationInterval string   `yaml:"evaluation_interval"`
	Tests              []struct {
		Name        string `yaml:"name"`
		Interval    string `yaml:"interval"`
		InputSeries []struct {
			Series string `yaml:"series"`
			Values string `yaml:"values"`
		} `yaml:"input_series"`
		AlertRuleTest []struct {
			EvalTime  string `yaml:"eval_time"`
			Alertname string `yaml:"alertname"`
			ExpAlerts []struct {
				ExpLabels      map[string]string `yaml:"exp_labels"`
				ExpAnnotations map[string]string `yaml:"exp_annotations"`
			} `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
		PromQLExprTest []any `yaml:"promql_expr_test"`
	} `yaml:"tests"`
}

const (
	rulesPath     = "prometheus/postbackd-rules.yaml"
	ruleTestsPath = "prometheus/postbackd-rules.test.yaml"
)

// TestAlertRulesUseExportedMetrics: every alert of the rule file has a
// severity, a summary and a description, and its expression only uses
// metric names and labels postbackd exports (see checkExpr).
func TestAlertRulesUseExportedMetrics(t *testing.T) {
	var rf ruleFile
	if err := decodeStrict(one(t, "document in "+rulesPath, yamlDocs(t, rulesPath)), &rf); err != nil {
		t.Fatalf("%s: %v", rulesPath, err)
	}
	n := 0
	seen := map[string]bool{}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			where := rulesPath + ": " + r.Alert + r.Record
			if r.Alert == "" {
				checkExpr(t, where, r.Expr)
				continue
			}
			n++
			if seen[r.Alert] {
				t.Errorf("%s: alert defined twice", where)
			}
			seen[r.Alert] = true
			if !strings.HasPrefix(r.Alert, "Postbackd") {
				t.Errorf("%s: alert names start with Postbackd", where)
			}
			switch r.Labels["severity"] {
			case "critical", "warning", "info":
			default:
				t.Errorf("%s: severity %q, want critical, warning or info", where, r.Labels["severity"])
			}
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("%s: want a summary and a description", where)
			}
			if len(checkExpr(t, where, r.Expr)) == 0 && !strings.Contains(r.Expr, "up{") {
				t.Errorf("%s: the expression uses no postbackd metric", where)
			}
		}
	}
	if n == 0 {
		t.Fatalf("%s: no alert", rulesPath)
	}
}

// TestAlertRulesHaveUnitTests: the promtool test file loads the rule file
// and tests every alert both firing and not firing, on input series that
// postbackd really exports. (promtool itself runs in .ci/run.)
func TestAlertRulesHaveUnitTests(t *testing.T) {
	var rf ruleFile
	if err := one(t, "document", yamlDocs(t, rulesPath)).Decode(&rf); err != nil {
		t.Fatal(err)
	}
	var tf ruleTestFile
	if err := decodeStrict(one(t, "document in "+ruleTestsPath, yamlDocs(t, ruleTestsPath)), &tf); err != nil {
		t.Fatalf("%s: %v", ruleTestsPath, err)
	}
	if !slices.Contains(tf.RuleFiles, filepath.Base(rulesPath)) {
		t.Errorf("%s: rule_files %q does not name %s", ruleTestsPath, tf.RuleFiles, filepath.Base(rulesPath))
	}
	firing, quiet := map[string]bool{}, map[string]bool{}
	for i, tc := range tf.Tests {
		for _, s := range tc.InputSeries {
			checkExpr(t, fmt.Sprintf("%s: tests[%d] (%s) input_series", ruleTestsPath, i, tc.Name), s.Series)
		}
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				firing[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			if !firing[r.Alert] {
				t.Errorf("%s: no test where %s fires", ruleTestsPath, r.Alert)
			}
			if !quiet[r.Alert] {
				t.Errorf("%s: no test where %s stays quiet", ruleTestsPath, r.Alert)
			}
		}
	}
}

const dashboardPath = "grafana/postbackd-dashboard.json"

// TestDashboardUsesExportedMetrics: the dashboard is valid JSON, every
// query of its panels and variables only uses metric names and labels
// postbackd exports, panel ids are unique, and every postbackd_ metric is
// on it: a new metric needs a panel.
func TestDashboardUsesExportedMetrics(t *testing.T) {
	raw, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	var dash map[string]any
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("%s: %v", dashboardPath, err)
	}
	if dash["title"] == "" || dash["uid"] == "" {
		t.Errorf("%s: want a title and a uid", dashboardPath)
	}
	used := map[string]bool{}
	ids := map[float64]string{}
	queries := 0
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch x := v.(type) {
		case map[string]any:
			if id, ok := x["id"].(float64); ok && x["type"] != nil && x["gridPos"] != nil {
				title, _ := x["title"].(string)
				if prev, dup := ids[id]; dup {
					t.Errorf("%s: panel id %v used by %q and %q", dashboardPath, id, prev, title)
				}
				ids[id] = title
				if title == "" && x["type"] != "row" {
					t.Errorf("%s: %s: a panel without a title", dashboardPath, path)
				}
			}
			for k, e := range x {
				if s, ok := e.(string); ok && (k == "expr" || (k == "query" && strings.Contains(path, "templating"))) {
					queries++
					for _, n := range checkExpr(t, dashboardPath+": "+path, s) {
						used[n] = true
					}
				}
				walk(path+"."+k, e)
			}
		case []any:
			for i, e := range x {
				title := ""
				if m, ok := e.(map[string]any); ok {
					title, _ = m["title"].(string)
					if title == "" {
						title, _ = m["name"].(string)
					}
				}
				walk(fmt.Sprintf("%s[%d %s]", path, i, title), e)
			}
		}
	}
	walk("", dash)
	if queries == 0 {
		t.Fatalf("%s: no query", dashboardPath)
	}
	knownMetrics(t)
	for _, fam := range postbackdFamilies {
		found := false
		for n := range used {
			if n == fam || strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(n, "_bucket"), "_sum"), "_count") == fam {
				found = true
			}
		}
		if !found {
			t.Errorf("%s: no panel shows %s", dashboardPath, fam)
		}
	}
}
