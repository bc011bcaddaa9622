package config

import (
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/shopspring/decimal"
	"go.yaml.in/yaml/v3"
)

// The YAML check: before a document is decoded, its node tree is walked
// against the yaml tags of Config, so that every unknown key and every value
// of the wrong type is reported under its key path, in words, with a
// suggestion for a misspelt key, and none of them stops the other checks.
// What does not fit is cut out of the tree (an unknown key) or emptied (a
// value of the wrong type, which then takes its default), so the rest
// decodes and is validated as usual. Whatever is cut or emptied is reported,
// so a document that needed either never loads.
//
// No message ever shows a value written where a secret goes (a SecretRef),
// nor the value of an unknown key.

var (
	durationType = reflect.TypeOf(time.Duration(0))
	decimalType  = reflect.TypeOf(decimal.Decimal{})
	secretType   = reflect.TypeOf(SecretRef{})
	merchantType = reflect.TypeOf(Merchant{})
)

// yamlChecker collects the problems of one document.
type yamlChecker struct {
	problems []problem
	// bad lists the key paths whose value was cut out for its type: a
	// validation problem under one of them (say "at least one broker is
	// required" after brokers: 5) would only repeat it, wrongly.
	bad []string
	// done remembers the verdict on each node checked against each type,
	// so that an alias of an anchor is not reported a second time.
	done map[nodeType]bool
	// lines maps a line to the key path of the value on it, for the rare
	// error of the decoder that the walk did not foresee.
	lines map[int]string
}

type nodeType struct {
	n *yaml.Node
	t reflect.Type
}

func newYAMLChecker() *yamlChecker {
	return &yamlChecker{done: make(map[nodeType]bool), lines: make(map[int]string)}
}

// report adds a problem at path, naming the line of n.
func (c *yamlChecker) report(path string, n *yaml.Node, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if n != nil && n.Line > 0 {
		msg += fmt.Sprintf(" (line %d)", n.Line)
	}
	c.problems = append(c.problems, problem{path, msg})
}

// reject reports a value that cannot be read as the type at path, marks the
// path bad and returns false, so that the caller empties the value.
func (c *yamlChecker) reject(path string, n *yaml.Node, format string, args ...any) bool {
	c.report(path, n, format, args...)
	c.bad = append(c.bad, path)
	return false
}

// underBad reports whether path is, or is under, a path whose value was cut
// out for its type.
func (c *yamlChecker) underBad(path string) bool {
	for _, b := range c.bad {
		if b == "config" || path == b || strings.HasPrefix(path, b+".") || strings.HasPrefix(path, b+"[") {
			return true
		}
	}
	return false
}

// check reports what in n does not fit t, cutting it out of n, and returns
// false when n as a whole does not fit (the caller then empties it).
func (c *yamlChecker) check(n *yaml.Node, t reflect.Type, path string) bool {
	if n.Kind == yaml.AliasNode {
		if n.Alias == nil {
			return true
		}
		n = n.Alias
	}
	key := nodeType{n, t}
	if ok, seen := c.done[key]; seen {
		// An alias of an anchor already checked (and reported) where it
		// was defined.
		if !ok {
			c.bad = append(c.bad, path)
		}
		return ok
	}
	c.done[key] = true // provisional: stops a cycle of aliases
	ok := c.checkNode(n, t, path)
	c.done[key] = ok
	return ok
}

func (c *yamlChecker) checkNode(n *yaml.Node, t reflect.Type, path string) bool {
	if _, ok := c.lines[n.Line]; !ok && path != "" {
		c.lines[n.Line] = path
	}
	if isNull(n) {
		return true // the zero value: a default, or absent
	}
	switch {
	case t.Kind() == reflect.Pointer:
		return c.check(n, t.Elem(), path)
	case t == secretType:
		return c.checkSecret(n, path)
	case t.Kind() == reflect.Struct && t != decimalType:
		if n.Kind != yaml.MappingNode {
			return c.reject(pathOrTop(path), n, "want %s, got %s", describeType(t), describeNode(n, false))
		}
		c.checkMapping(n, t, path)
		return true
	case t.Kind() == reflect.Map:
		if n.Kind != yaml.MappingNode {
			return c.reject(pathOrTop(path), n, "want %s, got %s", describeType(t), describeNode(n, false))
		}
		c.checkMapping(n, t, path)
		return true
	case t.Kind() == reflect.Slice:
		return c.checkSequence(n, t, path)
	default:
		return c.checkScalar(n, t, path)
	}
}

// checkMapping checks the keys and values of a mapping read into a struct
// (known keys only) or a map (any scalar key), and its merge keys ("<<").
func (c *yamlChecker) checkMapping(n *yaml.Node, t reflect.Type, path string) {
	var fields map[string]yamlField
	if t.Kind() == reflect.Struct {
		fields = yamlFields(t)
	}
	seen := make(map[string]*yaml.Node)
	content := n.Content // an alias below may point back at n
	kept := make([]*yaml.Node, 0, len(content))
	for i := 0; i+1 < len(content); i += 2 {
		k, v := content[i], content[i+1]
		if k.Kind != yaml.ScalarNode {
			c.report(pathOrTop(path), k, "a key must be a plain name, got %s", describeNode(k, false))
			continue
		}
		p := joinPath(path, k.Value)
		c.lines[k.Line] = p
		if first, dup := seen[k.Value]; dup {
			c.report(p, k, "set twice, here and on line %d; keep one", first.Line)
			continue
		}
		seen[k.Value] = k
		if isMergeKey(k) {
			if c.checkMerge(v, t, path) {
				kept = append(kept, k, v)
			}
			continue
		}
		var vt reflect.Type
		if fields == nil {
			vt = t.Elem()
		} else if f, ok := fields[k.Value]; ok {
			vt = f.typ
		} else {
			c.unknownKey(p, k, t)
			continue
		}
		if !c.check(v, vt, p) {
			// Keep the key with no value: a struct field then takes its
			// default, and a map entry (a partner, a merchant) still exists
			// for what refers to it.
			kept = append(kept, k, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Value: "~", Line: v.Line, Column: v.Column})
			continue
		}
		if t == merchantType && k.Value == "revshare_percent" && isZeroDecimal(v) {
			// Absent means 100; an explicit 0 would be read as absent and
			// send 100 % where the operator wrote 0 %.
			c.report(p, v, "0 would send no revshare; omit the key for the default %s, or give a percentage in (0, %s]",
				DefaultRevsharePercent, MaxRevsharePercent)
			continue
		}
		kept = append(kept, k, v)
	}
	n.Content = kept
}

// checkMerge checks the value of a merge key: a mapping, an alias of one, or
// a list of them, each merged into a value of type t at path.
func (c *yamlChecker) checkMerge(v *yaml.Node, t reflect.Type, path string) bool {
	items := []*yaml.Node{v}
	if v.Kind == yaml.SequenceNode {
		items = v.Content
	}
	for _, item := range items {
		target := item
		if target.Kind == yaml.AliasNode && target.Alias != nil {
			target = target.Alias
		}
		if target.Kind != yaml.MappingNode {
			c.report(joinPath(path, "<<"), item, "a merge key takes a mapping or a list of them, got %s", describeNode(target, false))
			return false
		}
	}
	for _, item := range items {
		c.check(item, t, path)
	}
	return true
}

// unknownKey reports a key that t does not have, suggesting the nearest one.
// The key's value is never shown: it may be a secret put in the wrong place.
func (c *yamlChecker) unknownKey(path string, k *yaml.Node, t reflect.Type) {
	names := yamlFieldNames(t)
	suggestion := suggestKey(k.Value, names)
	switch {
	case t == secretType && suggestion != "":
		c.report(path, k, "unknown key; did you mean %q? (a secret names where it is read from, never the secret itself)", suggestion)
	case t == secretType:
		c.report(path, k, "unknown key; a secret names where it is read from, {env: VARIABLE} or {file: PATH}, never the secret itself")
	case suggestion != "":
		c.report(path, k, "unknown key; did you mean %q?", suggestion)
	default:
		c.report(path, k, "unknown key; valid keys here: %s", strings.Join(names, ", "))
	}
}

// checkSecret checks a SecretRef: a mapping of env or file. Anything else is
// most likely the secret itself, which no message may show.
func (c *yamlChecker) checkSecret(n *yaml.Node, path string) bool {
	switch n.Kind {
	case yaml.MappingNode:
		before := len(c.problems)
		c.checkMapping(n, secretType, path)
		if len(c.problems) > before && len(n.Content) == 0 {
			// Nothing is left of it: "required" would only repeat that.
			c.bad = append(c.bad, path)
		}
		return true
	case yaml.ScalarNode:
		return c.reject(path, n, "a secret is never written in the config (its value is not shown here); "+
			"use {env: VARIABLE} or {file: PATH} to name where it is read from")
	default:
		return c.reject(path, n, "want %s, got %s", describeType(secretType), describeNode(n, false))
	}
}

// checkSequence checks a list and each of its items. A list with a bad item
// is emptied whole: cutting only the item would shift the indexes that
// validation names.
func (c *yamlChecker) checkSequence(n *yaml.Node, t reflect.Type, path string) bool {
	if n.Kind != yaml.SequenceNode {
		hint := ""
		if n.Kind == yaml.ScalarNode {
			hint = " (write a list of one item as [item])"
		}
		return c.reject(pathOrTop(path), n, "want %s, got %s%s", describeType(t), describeNode(n, false), hint)
	}
	ok := true
	for i, item := range n.Content {
		if !c.check(item, t.Elem(), fmt.Sprintf("%s[%d]", path, i)) {
			ok = false
		}
	}
	if !ok {
		c.bad = append(c.bad, path)
	}
	return ok
}

// checkScalar checks a leaf by decoding it alone, exactly as the decoder
// will, and refuses a fraction where a whole number goes (the decoder would
// truncate it).
func (c *yamlChecker) checkScalar(n *yaml.Node, t reflect.Type, path string) bool {
	if n.Kind != yaml.ScalarNode {
		return c.reject(path, n, "want %s, got %s", describeType(t), describeNode(n, true))
	}
	v := reflect.New(t)
	err := n.Decode(v.Interface())
	if err == nil && isIntKind(t.Kind()) && n.ShortTag() == "!!float" {
		if f, ferr := strconv.ParseFloat(n.Value, 64); ferr != nil || f != float64(int64(f)) {
			err = fmt.Errorf("not whole")
		}
	}
	if err != nil {
		return c.reject(path, n, "want %s, got %s", describeType(t), describeNode(n, true))
	}
	return true
}

// decoderProblem turns one error line of the YAML decoder into a problem at
// the key path of its line, without the value the decoder quotes.
func (c *yamlChecker) decoderProblem(msg string) problem {
	path := "config"
	msg = backquotedRE.ReplaceAllString(msg, "(value not shown)")
	if m := decoderLineRE.FindStringSubmatch(msg); m != nil {
		if line, err := strconv.Atoi(m[1]); err == nil {
			if p, ok := c.lines[line]; ok {
				path = p
			}
		}
		msg = m[2] + " (line " + m[1] + ")"
	}
	return problem{path, msg}
}

var (
	decoderLineRE = regexp.MustCompile(`^line (\d+): (.*)$`)
	backquotedRE  = regexp.MustCompile("`[^`]*`")
)

// yamlField is a key of a struct as the YAML decoder sees it.
type yamlField struct {
	name string
	typ  reflect.Type
}

// yamlFields maps the keys of struct t to their fields, following the yaml
// tags as the decoder does (a field without a tag is its lowercased name;
// "-" and unexported fields are not keys; ",inline" lifts a struct's keys).
func yamlFields(t reflect.Type) map[string]yamlField {
	out := make(map[string]yamlField)
	for _, f := range yamlFieldList(t) {
		out[f.name] = f
	}
	return out
}

func yamlFieldNames(t reflect.Type) []string {
	var names []string
	for _, f := range yamlFieldList(t) {
		names = append(names, f.name)
	}
	return names
}

func yamlFieldList(t reflect.Type) []yamlField {
	var out []yamlField
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("yaml")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue
		}
		if strings.Contains(","+opts+",", ",inline,") && f.Type.Kind() == reflect.Struct {
			out = append(out, yamlFieldList(f.Type)...)
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out = append(out, yamlField{name, f.Type})
	}
	return out
}

// suggestKey returns the key of names nearest to key, or "" when none is
// near enough to be what was meant: at most two edits (one for short keys),
// ignoring case, or a key that ends or starts with it as a word ("ttl" for
// "record_ttl"). Ties go to the first in field order.
func suggestKey(key string, names []string) string {
	lower := strings.ToLower(key)
	limit := 2
	if len(lower) <= 4 {
		limit = 1
	}
	best, bestDist := "", limit+1
	for _, n := range names {
		if d := editDistance(lower, n); d < bestDist {
			best, bestDist = n, d
		}
	}
	if best != "" {
		return best
	}
	if len(lower) >= 3 {
		for _, n := range names {
			if strings.HasSuffix(n, "_"+lower) || strings.HasPrefix(n, lower+"_") {
				return n
			}
		}
	}
	return ""
}

// editDistance is the optimal string alignment distance of a and b:
// insertions, deletions, substitutions and transpositions of adjacent
// characters each count one ("tiemout" is one edit from "timeout").
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	d := make([][]int, len(ra)+1)
	for i := range d {
		d[i] = make([]int, len(rb)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(ra); i++ {
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(ra)][len(rb)]
}

// describeType names what a value of t is written as, in words.
func describeType(t reflect.Type) string {
	switch t {
	case durationType:
		return "a duration such as 500ms, 30s or 2h"
	case decimalType:
		return "a decimal number"
	case secretType:
		return "{env: VARIABLE} or {file: PATH}"
	}
	switch t.Kind() {
	case reflect.Pointer:
		return describeType(t.Elem())
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Struct:
		return "a mapping of keys (key: value)"
	case reflect.Map:
		if e := t.Elem(); e.Kind() == reflect.Struct && e != decimalType && e != durationType {
			return "a mapping of names to their settings"
		}
		return "a mapping (key: " + strings.TrimPrefix(strings.TrimPrefix(describeType(t.Elem()), "a "), "an ") + ")"
	case reflect.Slice:
		switch e := t.Elem(); {
		case e.Kind() == reflect.String:
			return "a list of strings"
		case isIntKind(e.Kind()):
			return "a list of whole numbers"
		default:
			return "a list of " + describeType(e)
		}
	}
	return t.String()
}

// describeNode says what n is. A short scalar is shown when show is set,
// which only a wrong leaf value (a number, a duration) does: a string where a
// section, a list or a secret goes may well be a secret put in the wrong
// place.
func describeNode(n *yaml.Node, show bool) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		if n.Alias != nil {
			return describeNode(n.Alias, show)
		}
	}
	var what string
	switch n.ShortTag() {
	case "!!int", "!!float":
		what = "a number"
	case "!!bool":
		what = "a boolean"
	case "!!timestamp":
		what = "a date"
	case "!!null":
		return "nothing"
	default:
		what = "a string"
	}
	if show && len(n.Value) <= 40 && !strings.ContainsAny(n.Value, "\n\r") {
		if what == "a string" {
			return fmt.Sprintf("%s (%q)", what, n.Value)
		}
		return fmt.Sprintf("%s (%s)", what, n.Value)
	}
	return what
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func isMergeKey(k *yaml.Node) bool {
	return k.Kind == yaml.ScalarNode && k.Value == "<<" && k.ShortTag() == "!!merge"
}

func isZeroDecimal(n *yaml.Node) bool {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	d, err := decimal.NewFromString(n.Value)
	return n.Kind == yaml.ScalarNode && err == nil && d.IsZero()
}

func isIntKind(k reflect.Kind) bool {
	switch k {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return true
	}
	return false
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// pathOrTop names the document itself "config".
func pathOrTop(path string) string {
	if path == "" {
		return "config"
	}
	return path
}
