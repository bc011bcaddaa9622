// Package schemas embeds postbackd's JSON Schemas (draft 2020-12) and
// validates documents against them.
//
// The *.schema.json files in this directory are the single source of truth
// for the input events (deposit, revenue, registration, qualification) and
// the output records (audit, confirmation, dlq). Code, docs and tests are
// checked against them; the files are meant to be read by people too.
package schemas

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

// FS holds every schema file, named "<name>.schema.json".
//
//go:embed *.json
var FS embed.FS

// BaseURL prefixes every schema's $id: a schema's $id is
// BaseURL + "<name>.schema.json".
const BaseURL = "https://github.com/postbackd/postbackd/schemas/"

// Names lists every schema by the name Validate takes, inputs first.
var Names = []string{"deposit", "revenue", "registration", "qualification", "audit", "confirmation", "dlq"}

// ErrUnknownSchema is returned by Validate for a name not in Names.
var ErrUnknownSchema = errors.New("unknown schema")

// Bounds of Error's message, which ends up in DLQ records and logs.
const (
	maxErrorLen   = 512
	maxProblemLen = 160
)

// File returns the file name of the schema called name.
func File(name string) string { return name + ".schema.json" }

// Set is the compiled schemas. It is immutable and safe for concurrent use.
type Set struct {
	byName map[string]*jsonschema.Schema
}

// Compile compiles every embedded schema with format assertions on (so
// "format": "date-time" is enforced, not just an annotation). It fails if a
// file is missing, is not valid JSON Schema, or its $id does not match its
// file name.
func Compile() (*Set, error) {
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	for _, name := range Names {
		data, err := fs.ReadFile(FS, File(name))
		if err != nil {
			return nil, fmt.Errorf("schema %s: %w", name, err)
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("schema %s: %w", name, err)
		}
		obj, _ := doc.(map[string]any)
		if id, _ := obj["$id"].(string); id != BaseURL+File(name) {
			return nil, fmt.Errorf("schema %s: $id is %q, want %q", name, id, BaseURL+File(name))
		}
		if err := c.AddResource(BaseURL+File(name), doc); err != nil {
			return nil, fmt.Errorf("schema %s: %w", name, err)
		}
	}
	s := &Set{byName: make(map[string]*jsonschema.Schema, len(Names))}
	for _, name := range Names {
		sch, err := c.Compile(BaseURL + File(name))
		if err != nil {
			return nil, fmt.Errorf("schema %s: %w", name, err)
		}
		s.byName[name] = sch
	}
	return s, nil
}

// Validate validates doc against the schema called name. doc must be a
// decoded JSON value as jsonschema.UnmarshalJSON returns it (map[string]any,
// []any, string, json.Number, bool, nil); Go structs are not inspected, use
// ValidateJSON for those after marshalling. A failure is an *Error.
func (s *Set) Validate(name string, doc any) error {
	sch, ok := s.byName[name]
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownSchema, name)
	}
	err := sch.Validate(doc)
	if err == nil {
		return nil
	}
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return fmt.Errorf("schema %s: %w", name, err)
	}
	e := &Error{Schema: name}
	collect(ve, &e.Problems)
	sort.SliceStable(e.Problems, func(i, j int) bool { return e.Problems[i].Pointer < e.Problems[j].Pointer })
	return e
}

// ValidateJSON parses data (exactly one JSON value) and validates it against
// the schema called name. A parse failure is returned as is; a validation
// failure is an *Error.
func (s *Set) ValidateJSON(name string, data []byte) error {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("schema %s: %w", name, err)
	}
	return s.Validate(name, doc)
}

// Error is a document failing its schema. Its message is one line, at most
// 512 bytes, listing each failing field by JSON pointer, e.g.
// "/amount: got number, want string; /currency: does not match pattern ^[A-Z]{3}$".
type Error struct {
	Schema   string
	Problems []Problem // sorted by Pointer
}

// Problem is one failing field.
type Problem struct {
	// Pointer is the RFC 6901 JSON pointer of the field ("" is the whole
	// document). For a missing or disallowed property it names the property.
	Pointer string
	Message string
}

func (e *Error) Error() string {
	var b strings.Builder
	for i, p := range e.Problems {
		part := p.String()
		if i > 0 {
			part = "; " + part
		}
		// Keep room for the tail that says how many problems were left out.
		if b.Len()+len(part) > maxErrorLen-24 && i > 0 {
			fmt.Fprintf(&b, "; and %d more", len(e.Problems)-i)
			break
		}
		b.WriteString(part)
	}
	if len(e.Problems) == 0 {
		b.WriteString("document does not match schema " + e.Schema)
	}
	return truncate(b.String(), maxErrorLen)
}

func (p Problem) String() string {
	ptr := p.Pointer
	if ptr == "" {
		ptr = "(document)"
	}
	return truncate(oneLine(ptr+": "+p.Message), maxProblemLen)
}

// printer renders the library's messages for kinds collect does not phrase
// itself.
var printer = message.NewPrinter(language.English)

// collect appends the leaves of the error tree: the inner nodes (allOf,
// $ref, the schema itself) only group them.
func collect(ve *jsonschema.ValidationError, out *[]Problem) {
	if len(ve.Causes) > 0 {
		for _, c := range ve.Causes {
			collect(c, out)
		}
		return
	}
	ptr := pointer(ve.InstanceLocation)
	switch k := ve.ErrorKind.(type) {
	case *kind.Required:
		for _, m := range k.Missing {
			*out = append(*out, Problem{ptr + "/" + escape(m), "required property missing"})
		}
	case *kind.AdditionalProperties:
		for _, m := range k.Properties {
			*out = append(*out, Problem{ptr + "/" + escape(m), "property not allowed"})
		}
	case *kind.Type:
		*out = append(*out, Problem{ptr, fmt.Sprintf("got %s, want %s", k.Got, strings.Join(k.Want, " or "))})
	case *kind.Pattern:
		// The value is left out: it can be long, and the pointer finds it.
		*out = append(*out, Problem{ptr, "does not match pattern " + k.Want})
	case *kind.Format:
		msg := "not a valid " + k.Want
		if k.Err != nil {
			msg += ": " + localized(k.Err)
		}
		*out = append(*out, Problem{ptr, msg})
	case *kind.Enum:
		want := make([]string, len(k.Want))
		for i, w := range k.Want {
			want[i] = fmt.Sprint(w)
		}
		*out = append(*out, Problem{ptr, "must be one of " + strings.Join(want, ", ")})
	case *kind.Const:
		*out = append(*out, Problem{ptr, fmt.Sprintf("must be %v", k.Want)})
	case *kind.MinLength:
		*out = append(*out, Problem{ptr, fmt.Sprintf("length %d is below the minimum %d", k.Got, k.Want)})
	case *kind.MaxLength:
		*out = append(*out, Problem{ptr, fmt.Sprintf("length %d exceeds the maximum %d", k.Got, k.Want)})
	case *kind.MaxProperties:
		*out = append(*out, Problem{ptr, fmt.Sprintf("%d properties exceed the maximum %d", k.Got, k.Want)})
	default:
		*out = append(*out, Problem{ptr, ve.ErrorKind.LocalizedString(printer)})
	}
}

// localized renders an error the library may have made localizable.
func localized(err error) string {
	if le, ok := err.(interface {
		LocalizedError(*message.Printer) string
	}); ok {
		return le.LocalizedError(printer)
	}
	return err.Error()
}

func pointer(tokens []string) string {
	var b strings.Builder
	for _, t := range tokens {
		b.WriteByte('/')
		b.WriteString(escape(t))
	}
	return b.String()
}

// escape encodes one JSON pointer token (RFC 6901).
func escape(tok string) string {
	if !strings.ContainsAny(tok, "~/") {
		return tok
	}
	return strings.ReplaceAll(strings.ReplaceAll(tok, "~", "~0"), "/", "~1")
}

// oneLine escapes control and other non-graphic characters (a property name
// can hold a newline) so a message stays on one line.
func oneLine(s string) string {
	if strings.IndexFunc(s, func(r rune) bool { return !unicode.IsGraphic(r) || r == utf8.RuneError }) < 0 {
		return s
	}
	q := strconv.QuoteToGraphic(s)
	return q[1 : len(q)-1]
}

// truncate cuts s to at most n bytes on a rune boundary, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const mark = "…"
	cut := n - len(mark)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + mark
}
