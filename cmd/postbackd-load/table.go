package main

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
)

// table is the harness's one output: every figure with its absolute value
// and, where the run measured one, its ratio against a baseline of the same
// run (named in the last column).
type table struct {
	rows []row
}

type row struct {
	section bool   // a heading line: name only
	name    string // what was measured
	value   string // absolute figure with its unit
	ratio   string // e.g. "0.36x"; "" when the row has none
	against string // the baseline the ratio is against
}

func (t *table) section(name string) { t.rows = append(t.rows, row{section: true, name: name}) }

// add appends a row whose ratio is value/base (no ratio when base is 0 or
// either is not finite).
func (t *table) add(name, value string, v, base float64, against string) {
	r := ratio(v, base)
	if r == "" {
		against = ""
	}
	t.rows = append(t.rows, row{name: name, value: value, ratio: r, against: against})
}

// info appends a row without a ratio, with a comment in the last column.
func (t *table) info(name, value, comment string) {
	t.rows = append(t.rows, row{name: name, value: value, against: comment})
}

// note appends a row without a ratio.
func (t *table) note(name, value string) { t.rows = append(t.rows, row{name: name, value: value}) }

func ratio(v, base float64) string {
	if base == 0 || math.IsNaN(v) || math.IsNaN(base) || math.IsInf(v, 0) || math.IsInf(base, 0) {
		return ""
	}
	r := v / base
	switch {
	case r >= 100:
		return strconv.FormatFloat(r, 'f', 0, 64) + "x"
	case r >= 10:
		return strconv.FormatFloat(r, 'f', 1, 64) + "x"
	default:
		return strconv.FormatFloat(r, 'f', 2, 64) + "x"
	}
}

// write prints the table with aligned columns; sections are flush left,
// rows indented by two spaces.
func (t *table) write(w io.Writer) {
	nameW, valueW, ratioW := len("measurement"), len("value"), len("ratio")
	for _, r := range t.rows {
		if r.section {
			continue
		}
		nameW = max(nameW, 2+len([]rune(r.name)))
		valueW = max(valueW, len([]rune(r.value)))
		ratioW = max(ratioW, len(r.ratio))
	}
	line := func(name, value, ratio, against string) {
		s := pad(name, nameW) + "  " + padLeft(value, valueW) + "  " + padLeft(ratio, ratioW) + "  " + against
		fmt.Fprintln(w, strings.TrimRight(s, " "))
	}
	line("measurement", "value", "ratio", "against (baseline of this run)")
	for _, r := range t.rows {
		if r.section {
			fmt.Fprintln(w, r.name)
			continue
		}
		line("  "+r.name, r.value, r.ratio, r.against)
	}
}

func pad(s string, n int) string {
	if k := len([]rune(s)); k < n {
		return s + strings.Repeat(" ", n-k)
	}
	return s
}

func padLeft(s string, n int) string {
	if k := len([]rune(s)); k < n {
		return strings.Repeat(" ", n-k) + s
	}
	return s
}

// grouped formats an integer with a space every three digits (12 345).
func grouped(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(' ')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func perSecond(v float64, unit string) string { return grouped(int64(math.Round(v))) + " " + unit }

// mib formats bytes as MiB.
func mib(b int64) string { return strconv.FormatFloat(float64(b)/(1<<20), 'f', 1, 64) + " MiB" }

// dur formats a duration with three significant figures in a fitting unit.
func dur(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return strconv.FormatFloat(float64(d)/float64(time.Microsecond), 'f', 1, 64) + " µs"
	case d < time.Second:
		return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', sig(float64(d)/float64(time.Millisecond)), 64) + " ms"
	default:
		return strconv.FormatFloat(d.Seconds(), 'f', sig(d.Seconds()), 64) + " s"
	}
}

func sig(v float64) int {
	switch {
	case v >= 100:
		return 0
	case v >= 10:
		return 1
	default:
		return 2
	}
}

func num(v float64, prec int) string { return strconv.FormatFloat(v, 'f', prec, 64) }
