// Command promql-selectors says which series PromQL expressions read and which labels they use,
// parsed by Prometheus's own promql/parser (the module version promtool is built from).
//
//	promql-selectors < exprs.json
//
// stdin is a JSON list of strings, each a PromQL expression or one of the Grafana Prometheus
// data source's template queries: label_values(label), label_values(selector, label),
// label_names(), label_names(selector) and query_result(expr). Grafana's own variables
// ($__rate_interval, $namespace, ...) are not PromQL: the caller substitutes them first.
//
// stdout is a JSON list, one object per input, in order:
//
//	{"expr": "sum by (type) (rate(x_total{status=\"failed\"}[5m]))",
//	 "kind": "promql",                     // or label_values, label_names, query_result
//	 "selectors": [{"metric": "x_total",   // "" when the name is not fixed ({__name__=~"..."})
//	                "matchers": [{"label": "status", "op": "=", "value": "failed"}]}],
//	 "groupings": [{"op": "sum", "labels": ["type"], "metrics": ["x_total"]}],
//	 "labels": ["status", "type"],         // every label name the expression names
//	 "error": "..."}                       // only when it does not parse
//
// A grouping is a place where an expression names labels of the series below it: an
// aggregation's by (op: its name) or without (op: its name, "without": true), a binary
// operator's on/ignoring (op "on" or "ignoring") and group_left/group_right (op "group_left"
// or "group_right"), the source labels of label_replace, label_join and sort_by_label, and a
// label_values query's label (op "label_values"). Its metrics are the names of the selectors
// under it (both sides for a binary operator), sorted. The __name__ matcher that a metric name
// stands for is not listed among the matchers.
//
// Exit status: 0 when every input parsed, 1 when one did not (the output still has them all),
// 2 when stdin is not a JSON list of strings.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

type matcher struct {
	Label string `json:"label"`
	Op    string `json:"op"`
	Value string `json:"value"`
}

type selector struct {
	Metric   string    `json:"metric"`
	Matchers []matcher `json:"matchers"`
}

type grouping struct {
	Op      string   `json:"op"`
	Without bool     `json:"without,omitempty"`
	Labels  []string `json:"labels"`
	Metrics []string `json:"metrics"`
}

type result struct {
	Expr      string     `json:"expr"`
	Kind      string     `json:"kind"`
	Selectors []selector `json:"selectors"`
	Groupings []grouping `json:"groupings"`
	Labels    []string   `json:"labels"`
	Error     string     `json:"error,omitempty"`
}

var promql = parser.NewParser(parser.Options{
	EnableExperimentalFunctions: true, // sort_by_label, limitk, ... parse like any function
	ExperimentalDurationExpr:    true,
})

// selectorOf turns a parsed vector selector into its metric name and other matchers.
func selectorOf(vs *parser.VectorSelector) selector {
	s := selector{Metric: vs.Name, Matchers: []matcher{}}
	for _, m := range vs.LabelMatchers {
		if m.Name == labels.MetricName && m.Type == labels.MatchEqual {
			if s.Metric == "" {
				s.Metric = m.Value
			}
			if m.Value == s.Metric {
				continue
			}
		}
		s.Matchers = append(s.Matchers, matcher{Label: m.Name, Op: m.Type.String(), Value: m.Value})
	}
	return s
}

// metricsUnder lists the metric names of the selectors in the given nodes, sorted, once each.
func metricsUnder(nodes ...parser.Node) []string {
	seen := map[string]bool{}
	for _, n := range nodes {
		if n == nil {
			continue
		}
		parser.Inspect(n, func(node parser.Node, _ []parser.Node) error {
			if vs, ok := node.(*parser.VectorSelector); ok {
				seen[selectorOf(vs).Metric] = true
			}
			return nil
		})
	}
	out := make([]string, 0, len(seen))
	for m := range seen {
		out = append(out, m)
	}
	sort.Strings(out)
	return out
}

func stringArgs(args parser.Expressions) []string {
	var out []string
	for _, a := range args {
		if s, ok := a.(*parser.StringLiteral); ok && s.Val != "" {
			out = append(out, s.Val)
		}
	}
	return out
}

// walk fills r from the expression's tree.
func walk(r *result, expr parser.Expr) {
	parser.Inspect(expr, func(node parser.Node, _ []parser.Node) error {
		switch n := node.(type) {
		case *parser.VectorSelector:
			r.Selectors = append(r.Selectors, selectorOf(n))
		case *parser.AggregateExpr:
			if len(n.Grouping) > 0 || n.Without {
				r.Groupings = append(r.Groupings, grouping{Op: n.Op.String(), Without: n.Without,
					Labels: append([]string{}, n.Grouping...), Metrics: metricsUnder(n.Expr)})
			}
		case *parser.BinaryExpr:
			vm := n.VectorMatching
			if vm == nil {
				break
			}
			metrics := metricsUnder(n.LHS, n.RHS)
			if len(vm.MatchingLabels) > 0 || vm.On {
				op := "ignoring"
				if vm.On {
					op = "on"
				}
				r.Groupings = append(r.Groupings, grouping{Op: op,
					Labels: append([]string{}, vm.MatchingLabels...), Metrics: metrics})
			}
			if len(vm.Include) > 0 {
				op := "group_left"
				if vm.Card == parser.CardOneToMany {
					op = "group_right"
				}
				r.Groupings = append(r.Groupings, grouping{Op: op,
					Labels: append([]string{}, vm.Include...), Metrics: metrics})
			}
		case *parser.Call:
			var used []string
			switch n.Func.Name {
			case "label_replace": // (v, dst, replacement, src, regex)
				if len(n.Args) == 5 {
					used = stringArgs(n.Args[3:4])
				}
			case "label_join": // (v, dst, separator, src...)
				if len(n.Args) > 3 {
					used = stringArgs(n.Args[3:])
				}
			case "sort_by_label", "sort_by_label_desc": // (v, label...)
				used = stringArgs(n.Args[1:])
			}
			if len(used) > 0 {
				r.Groupings = append(r.Groupings, grouping{Op: n.Func.Name, Labels: used,
					Metrics: metricsUnder(n.Args[0])})
			}
		}
		return nil
	})
}

var (
	templateCall = regexp.MustCompile(`^\s*(label_values|label_names|query_result)\s*\((.*)\)\s*$`)
	labelName    = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)
)

// lastTopLevelComma finds the comma that separates label_values' selector from its label:
// the last one outside braces, parentheses, brackets and quotes; -1 if none.
func lastTopLevelComma(s string) int {
	depth, last := 0, -1
	var quote rune
	escaped := false
	for i, c := range s {
		switch {
		case quote != 0:
			if escaped {
				escaped = false
			} else if c == '\\' && quote != '`' {
				escaped = true
			} else if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'' || c == '`':
			quote = c
		case c == '{' || c == '(' || c == '[':
			depth++
		case c == '}' || c == ')' || c == ']':
			depth--
		case c == ',' && depth == 0:
			last = i
		}
	}
	return last
}

func parseInto(r *result, expr string) error {
	e, err := promql.ParseExpr(expr)
	if err != nil {
		return err
	}
	walk(r, e)
	return nil
}

// selectorOnly parses a template query's selector argument: a metric name or a selector.
func selectorOnly(r *result, arg string) error {
	e, err := promql.ParseExpr(arg)
	if err != nil {
		return err
	}
	vs, ok := e.(*parser.VectorSelector)
	if !ok {
		return fmt.Errorf("%s(...) takes a metric name or a series selector, not %q", r.Kind, arg)
	}
	walk(r, vs)
	return nil
}

func analyse(expr string) result {
	r := result{Expr: expr, Kind: "promql", Selectors: []selector{}, Groupings: []grouping{}}
	var err error
	if m := templateCall.FindStringSubmatch(expr); m != nil {
		r.Kind = m[1]
		arg := strings.TrimSpace(m[2])
		switch r.Kind {
		case "query_result":
			err = parseInto(&r, arg)
		case "label_names":
			if arg != "" {
				err = selectorOnly(&r, arg)
			}
		case "label_values":
			label, sel := arg, ""
			if i := lastTopLevelComma(arg); i >= 0 {
				sel, label = strings.TrimSpace(arg[:i]), strings.TrimSpace(arg[i+1:])
			}
			switch {
			case !labelName.MatchString(label):
				err = fmt.Errorf("label_values: %q is not a label name", label)
			case sel != "":
				err = selectorOnly(&r, sel)
			}
			if err == nil {
				r.Groupings = append(r.Groupings, grouping{Op: "label_values",
					Labels: []string{label}, Metrics: metricsUnder(selectorsAsNodes(r.Selectors)...)})
			}
		}
	} else {
		err = parseInto(&r, expr)
	}
	if err != nil {
		r.Error = err.Error()
		r.Selectors, r.Groupings = []selector{}, []grouping{}
	}
	seen := map[string]bool{}
	for _, s := range r.Selectors {
		for _, m := range s.Matchers {
			if m.Label != labels.MetricName {
				seen[m.Label] = true
			}
		}
	}
	for _, g := range r.Groupings {
		for _, l := range g.Labels {
			seen[l] = true
		}
	}
	r.Labels = make([]string, 0, len(seen))
	for l := range seen {
		r.Labels = append(r.Labels, l)
	}
	sort.Strings(r.Labels)
	return r
}

// selectorsAsNodes gives metricsUnder the metric names already found, as selector nodes.
func selectorsAsNodes(sels []selector) []parser.Node {
	out := make([]parser.Node, 0, len(sels))
	for _, s := range sels {
		out = append(out, &parser.VectorSelector{Name: s.Metric})
	}
	return out
}

func main() {
	if len(os.Args) > 1 {
		fmt.Fprintln(os.Stderr, "usage: promql-selectors < exprs.json (a JSON list of strings)")
		os.Exit(2)
	}
	input, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "promql-selectors:", err)
		os.Exit(2)
	}
	var exprs []string
	if err := json.Unmarshal(input, &exprs); err != nil {
		fmt.Fprintln(os.Stderr, "promql-selectors: stdin must be a JSON list of strings:", err)
		os.Exit(2)
	}
	out := make([]result, 0, len(exprs))
	failed := false
	for _, e := range exprs {
		r := analyse(e)
		failed = failed || r.Error != ""
		out = append(out, r)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", " ")
	if err := enc.Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, "promql-selectors:", err)
		os.Exit(2)
	}
	if failed {
		os.Exit(1)
	}
}
