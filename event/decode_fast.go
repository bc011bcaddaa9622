package event

// The fast path of Decode.
//
// Contract: for a kind and a message value, decodeFast either returns
// exactly the event decodeSlow returns for them, or it declines (ok false)
// and decodeSlow decides, with its own error if the message is invalid.
// decodeFast never rejects a message: it has no errors. It may decline
// anything, so wherever being exact would be subtle it is stricter than the
// schema and declines: a message that is not a JSON object, any invalid
// UTF-8, a \u escape of a UTF-16 surrogate, a duplicate key at any level, an
// unknown property, a value of the wrong type (null included), a non-string
// param, a leap second, a message over maxFastLen bytes. FuzzDecodeFast
// checks the contract against decodeSlow.
//
// The schema rules it checks are read from the schema files themselves by
// compileFastSchema, which knows only the keywords decodeFast implements and
// fails on any other, and on any pattern without a hand-coded matcher in
// patternMatchers; a kind whose schema fails goes through decodeSlow only.
// So a schema change can make Decode slower, never different.
// TestFastSchemasCompile fails meanwhile. What a schema cannot say is checked
// by fields.event, which both paths share.

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"math"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/valyala/fastjson"

	"github.com/postbackd/postbackd/internal/jsonfast"
	"github.com/postbackd/postbackd/schemas"
)

// maxFastLen is the longest message decodeFast takes. A pooled parser keeps
// a copy of the longest message it has parsed; events are well under 2 KiB,
// and a rare long one is not worth pinning a big buffer per pooled parser.
const maxFastLen = 32 << 10

// fastSchema is what a kind's schema says about each property.
type fastSchema struct {
	strs   [numFields]stringRule
	params paramsRule
}

// stringRule is what a kind's schema says about one string property.
type stringRule struct {
	allowed  bool // the schema has the property
	required bool
	// Bounds in code points, as jsonschema counts them; maxLen is
	// math.MaxInt when the schema sets none.
	minLen, maxLen int
	match          func(string) bool // the schema's pattern, nil when none
	enum           []string          // nil when the schema has no enum
	dateTime       bool              // "format": "date-time"
}

// paramsRule is what a kind's schema says about the params object: string
// values, with bounds in code points.
type paramsRule struct {
	allowed                bool // the schema has the property
	maxEntries             int
	minNameLen, maxNameLen int
	maxValueLen            int
}

func (r *stringRule) accepts(s string) bool {
	n := utf8.RuneCountInString(s)
	if n < r.minLen || n > r.maxLen {
		return false
	}
	if r.match != nil && !r.match(s) {
		return false
	}
	if r.enum != nil && !slices.Contains(r.enum, s) {
		return false
	}
	return !r.dateTime || isDateTimeInRange(s)
}

func (r *paramsRule) accepts(name, value string) bool {
	n := utf8.RuneCountInString(name)
	return n >= r.minNameLen && n <= r.maxNameLen && utf8.RuneCountInString(value) <= r.maxValueLen
}

// span locates a string in fastState.text.
type span struct{ start, end int }

// fastState is decodeFast's working memory, pooled so that a decode
// allocates little more than the event it returns.
type fastState struct {
	parser fastjson.Parser
	// text holds every string taken from the message, unescaped, back to
	// back: the parser's strings point into its own buffer, which the next
	// message reuses, so they are copied out, all in one allocation.
	text      []byte
	seen      [numFields]bool
	strs      [numFields]span // of the seen fields
	hasParams bool
	params    []span // name, value, name, value...
}

var fastStates = sync.Pool{New: func() any { return new(fastState) }}

// decodeFast is the fast path of Decode: see the contract at the top of
// this file.
func (d *Decoder) decodeFast(kind Kind, value []byte) (Event, bool) {
	sch := d.fast[kind]
	// fastjson's parser accepts some invalid JSON, and reads some valid
	// JSON otherwise than encoding/json (jsonfast.Agree).
	if sch == nil || len(value) > maxFastLen || !jsonfast.Agree(value) {
		return nil, false
	}
	st := fastStates.Get().(*fastState)
	defer fastStates.Put(st)
	f, ok := st.read(sch, value)
	if !ok {
		return nil, false
	}
	e, rej := f.event(kind)
	return e, rej == nil
}

// read parses value and checks it against sch, returning its fields in
// strings of their own, or false to decline.
func (st *fastState) read(sch *fastSchema, value []byte) (fields, bool) {
	st.text = st.text[:0]
	st.seen = [numFields]bool{}
	st.hasParams = false
	st.params = st.params[:0]

	root, err := st.parser.ParseBytes(value)
	if err != nil {
		return fields{}, false
	}
	obj, err := root.Object()
	if err != nil {
		return fields{}, false
	}
	ok := true
	obj.Visit(func(key []byte, v *fastjson.Value) {
		ok = ok && st.take(sch, key, v)
	})
	if !ok {
		return fields{}, false
	}

	all := string(st.text)
	var f fields
	for fld := range numFields {
		rule := &sch.strs[fld]
		if !st.seen[fld] {
			if rule.required {
				return fields{}, false
			}
			continue
		}
		s := all[st.strs[fld].start:st.strs[fld].end]
		if !rule.accepts(s) {
			return fields{}, false
		}
		f.strs[fld] = s
	}
	if len(st.params) > 0 {
		f.params = make(map[string]string, len(st.params)/2)
		for i := 0; i < len(st.params); i += 2 {
			name, val := all[st.params[i].start:st.params[i].end], all[st.params[i+1].start:st.params[i+1].end]
			if !sch.params.accepts(name, val) {
				return fields{}, false
			}
			f.params[name] = val
		}
		// decodeSlow would keep the last of duplicate names and count the
		// names that are left against maxProperties: simpler to decline.
		if len(f.params) != len(st.params)/2 {
			return fields{}, false
		}
	}
	return f, true
}

// take records one top-level property, or returns false to decline.
func (st *fastState) take(sch *fastSchema, key []byte, v *fastjson.Value) bool {
	if string(key) == "params" {
		if !sch.params.allowed || st.hasParams {
			return false
		}
		st.hasParams = true
		return st.takeParams(sch, v)
	}
	fld, known := fieldNamed[string(key)]
	if !known || !sch.strs[fld].allowed || st.seen[fld] || v.Type() != fastjson.TypeString {
		return false
	}
	st.seen[fld] = true
	st.strs[fld] = st.add(v.GetStringBytes())
	return true
}

func (st *fastState) takeParams(sch *fastSchema, v *fastjson.Value) bool {
	if v.Type() != fastjson.TypeObject {
		return false
	}
	o := v.GetObject()
	if o.Len() > sch.params.maxEntries {
		return false
	}
	ok := true
	o.Visit(func(name []byte, value *fastjson.Value) {
		if ok = ok && value.Type() == fastjson.TypeString; ok {
			st.params = append(st.params, st.add(name), st.add(value.GetStringBytes()))
		}
	})
	return ok
}

func (st *fastState) add(b []byte) span {
	start := len(st.text)
	st.text = append(st.text, b...)
	return span{start, len(st.text)}
}

// patternMatchers implements by hand each regular expression the input
// schemas use, keyed by its exact text (RE2 syntax, as jsonschema compiles
// it with package regexp). TestPatternMatchers and FuzzPatternMatchers
// compare each to its regexp.
var patternMatchers = map[string]func(string) bool{
	`^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})$`: isDateTimeShape,
	`^(0|[1-9][0-9]*)(\.[0-9]+)?$`:   isUnsignedDecimal,
	`^-?(0|[1-9][0-9]*)(\.[0-9]+)?$`: isDecimal,
	`^[A-Z]{3}$`:                     isCurrencyCode,
}

// isDateTimeShape matches 2006-01-02T15:04:05, optional fractional
// seconds, then Z or a ±hh:mm offset, all digits ASCII.
func isDateTimeShape(s string) bool {
	const layout = "dddd-dd-ddTdd:dd:dd"
	if len(s) <= len(layout) || !fitsLayout(s[:len(layout)], layout) {
		return false
	}
	rest := s[len(layout):]
	if rest[0] == '.' {
		n := 1
		for n < len(rest) && isDigit(rest[n]) {
			n++
		}
		if n == 1 {
			return false
		}
		rest = rest[n:]
	}
	return rest == "Z" || len(rest) == len("+dd:dd") && (rest[0] == '+' || rest[0] == '-') && fitsLayout(rest[1:], "dd:dd")
}

// isDateTimeInRange is "format": "date-time" (RFC 3339): isDateTimeShape
// with the time and the offset in range. It is stricter than jsonschema's
// check in refusing a leap second, which time.Parse refuses anyway. The date
// is left to time.Parse in fields.event, which checks it as jsonschema does
// (month, day of the month); time.Parse alone would not do for the offset:
// it takes +24:00.
func isDateTimeInRange(s string) bool {
	if !isDateTimeShape(s) {
		return false
	}
	if twoDigits(s[11:]) > 23 || twoDigits(s[14:]) > 59 || twoDigits(s[17:]) > 59 {
		return false
	}
	if s[len(s)-1] == 'Z' {
		return true
	}
	offset := s[len(s)-len("dd:dd"):]
	return twoDigits(offset) <= 23 && twoDigits(offset[3:]) <= 59
}

// fitsLayout reports whether s has the length of layout and a digit where
// layout has 'd', else layout's byte.
func fitsLayout(s, layout string) bool {
	if len(s) != len(layout) {
		return false
	}
	for i := range len(layout) {
		if layout[i] == 'd' && !isDigit(s[i]) || layout[i] != 'd' && s[i] != layout[i] {
			return false
		}
	}
	return true
}

func twoDigits(s string) int { return int(s[0]-'0')*10 + int(s[1]-'0') }

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func allDigits(s string) bool {
	for i := range len(s) {
		if !isDigit(s[i]) {
			return false
		}
	}
	return true
}

// isUnsignedDecimal matches 0 or an integer without a leading zero, and
// optional fractional digits.
func isUnsignedDecimal(s string) bool {
	whole, frac, hasFrac := strings.Cut(s, ".")
	if whole == "" || !allDigits(whole) || len(whole) > 1 && whole[0] == '0' {
		return false
	}
	return !hasFrac || frac != "" && allDigits(frac)
}

// isDecimal is isUnsignedDecimal with an optional minus sign.
func isDecimal(s string) bool { return isUnsignedDecimal(strings.TrimPrefix(s, "-")) }

// isCurrencyCode matches three ASCII upper-case letters.
func isCurrencyCode(s string) bool {
	return len(s) == 3 && isUpper(s[0]) && isUpper(s[1]) && isUpper(s[2])
}

func isUpper(c byte) bool { return 'A' <= c && c <= 'Z' }

// fastSchemaOf compiles the schema file of kind for decodeFast.
func fastSchemaOf(kind Kind) (*fastSchema, error) {
	data, err := fs.ReadFile(schemas.FS, schemas.File(string(kind)))
	if err != nil {
		return nil, err
	}
	sch, err := compileFastSchema(data)
	if err != nil {
		return nil, fmt.Errorf("%s schema: %w", kind, err)
	}
	return sch, nil
}

// compileFastSchema reads the rules of an input event's schema. It fails on
// anything decodeFast does not implement, so that decodeFast is never laxer
// than the schema.
func compileFastSchema(data []byte) (*fastSchema, error) {
	top, err := keywords(data, "$schema", "$id", "title", "description", "examples",
		"type", "properties", "required", "additionalProperties")
	if err != nil {
		return nil, err
	}
	if err := wantJSON(top, "type", `"object"`); err != nil {
		return nil, err
	}
	if err := wantJSON(top, "additionalProperties", `false`); err != nil {
		return nil, err
	}
	var props map[string]json.RawMessage
	if err := json.Unmarshal(top["properties"], &props); err != nil {
		return nil, fmt.Errorf("properties: %w", err)
	}
	sch := new(fastSchema)
	for name, raw := range props {
		if name == "params" {
			if sch.params, err = compileParams(raw); err != nil {
				return nil, fmt.Errorf("params: %w", err)
			}
			continue
		}
		fld, known := fieldNamed[name]
		if !known {
			return nil, fmt.Errorf("property %q has no field", name)
		}
		if sch.strs[fld], err = compileString(raw); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
	}
	var required []string
	if err := json.Unmarshal(top["required"], &required); err != nil {
		return nil, fmt.Errorf("required: %w", err)
	}
	for _, name := range required {
		fld, known := fieldNamed[name]
		if !known || !sch.strs[fld].allowed {
			return nil, fmt.Errorf("required property %q is not a string property", name)
		}
		sch.strs[fld].required = true
	}
	return sch, nil
}

func compileString(raw json.RawMessage) (stringRule, error) {
	kw, err := keywords(raw, "title", "description", "type", "minLength", "maxLength", "pattern", "enum", "format")
	if err != nil {
		return stringRule{}, err
	}
	if err := wantJSON(kw, "type", `"string"`); err != nil {
		return stringRule{}, err
	}
	r := stringRule{allowed: true}
	if r.minLen, err = intKeyword(kw, "minLength", 0); err != nil {
		return stringRule{}, err
	}
	if r.maxLen, err = intKeyword(kw, "maxLength", math.MaxInt); err != nil {
		return stringRule{}, err
	}
	if raw, ok := kw["pattern"]; ok {
		var pattern string
		if err := json.Unmarshal(raw, &pattern); err != nil {
			return stringRule{}, fmt.Errorf("pattern: %w", err)
		}
		if r.match = patternMatchers[pattern]; r.match == nil {
			return stringRule{}, fmt.Errorf("pattern %s has no hand-coded matcher", pattern)
		}
	}
	if raw, ok := kw["enum"]; ok {
		if err := json.Unmarshal(raw, &r.enum); err != nil {
			return stringRule{}, fmt.Errorf("enum: %w", err)
		}
	}
	if _, ok := kw["format"]; ok {
		if err := wantJSON(kw, "format", `"date-time"`); err != nil {
			return stringRule{}, err
		}
		r.dateTime = true
	}
	return r, nil
}

func compileParams(raw json.RawMessage) (paramsRule, error) {
	kw, err := keywords(raw, "title", "description", "type", "maxProperties", "propertyNames", "additionalProperties")
	if err != nil {
		return paramsRule{}, err
	}
	if err := wantJSON(kw, "type", `"object"`); err != nil {
		return paramsRule{}, err
	}
	r := paramsRule{allowed: true}
	if r.maxEntries, err = intKeyword(kw, "maxProperties", math.MaxInt); err != nil {
		return paramsRule{}, err
	}
	if raw, ok := kw["propertyNames"]; ok {
		names, err := keywords(raw, "title", "description", "minLength", "maxLength")
		if err != nil {
			return paramsRule{}, fmt.Errorf("propertyNames: %w", err)
		}
		if r.minNameLen, err = intKeyword(names, "minLength", 0); err != nil {
			return paramsRule{}, fmt.Errorf("propertyNames: %w", err)
		}
		if r.maxNameLen, err = intKeyword(names, "maxLength", math.MaxInt); err != nil {
			return paramsRule{}, fmt.Errorf("propertyNames: %w", err)
		}
	} else {
		r.maxNameLen = math.MaxInt
	}
	values, err := keywords(kw["additionalProperties"], "title", "description", "type", "maxLength")
	if err != nil {
		return paramsRule{}, fmt.Errorf("additionalProperties: %w", err)
	}
	if err := wantJSON(values, "type", `"string"`); err != nil {
		return paramsRule{}, fmt.Errorf("additionalProperties: %w", err)
	}
	if r.maxValueLen, err = intKeyword(values, "maxLength", math.MaxInt); err != nil {
		return paramsRule{}, fmt.Errorf("additionalProperties: %w", err)
	}
	return r, nil
}

// keywords splits a schema object into its keywords, failing on any not in
// known.
func keywords(raw []byte, known ...string) (map[string]json.RawMessage, error) {
	var kw map[string]json.RawMessage
	if err := json.Unmarshal(raw, &kw); err != nil {
		return nil, err
	}
	for name := range kw {
		if !slices.Contains(known, name) {
			return nil, fmt.Errorf("keyword %q is not implemented by the fast path", name)
		}
	}
	return kw, nil
}

// wantJSON checks that the keyword is present and holds exactly want.
func wantJSON(kw map[string]json.RawMessage, name, want string) error {
	if got := string(kw[name]); got != want {
		return fmt.Errorf("%s is %q, the fast path implements only %s", name, got, want)
	}
	return nil
}

// intKeyword returns the keyword's integer, or def when it is absent.
func intKeyword(kw map[string]json.RawMessage, name string, def int) (int, error) {
	raw, ok := kw[name]
	if !ok {
		return def, nil
	}
	var n int
	if err := json.Unmarshal(raw, &n); err != nil {
		return 0, fmt.Errorf("%s: %w", name, err)
	}
	return n, nil
}
