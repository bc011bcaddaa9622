// Package urltemplate parses and renders the postback URL templates of the
// partner configuration: literal text with {macro} placeholders.
//
// Parsing happens once at start so a template that names an unknown macro is
// a configuration error, never a runtime surprise. Rendering escapes every
// value: path escaping before the '?', query escaping after it.
package urltemplate

import (
	"fmt"
	"net/url"
	"strings"
)

// Template is a parsed URL template. It is immutable and safe for concurrent use.
type Template struct {
	raw   string
	parts []part
}

type part struct {
	literal string
	macro   string // set when this part is a placeholder
	inQuery bool
}

// Parse parses raw. known reports whether a macro name is allowed; Parse
// returns an error naming every unknown macro and any unbalanced brace.
func Parse(raw string, known func(name string) bool) (*Template, error) {
	t := &Template{raw: raw}
	var unknown []string
	inQuery := false
	rest := raw
	for rest != "" {
		open := strings.IndexByte(rest, '{')
		closeIdx := strings.IndexByte(rest, '}')
		if open < 0 {
			if closeIdx >= 0 {
				return nil, fmt.Errorf("unbalanced '}' in %q", raw)
			}
			t.parts = append(t.parts, part{literal: rest})
			break
		}
		if closeIdx >= 0 && closeIdx < open {
			return nil, fmt.Errorf("unbalanced '}' in %q", raw)
		}
		if open > 0 {
			lit := rest[:open]
			t.parts = append(t.parts, part{literal: lit})
			if strings.IndexByte(lit, '?') >= 0 {
				inQuery = true
			}
		}
		end := strings.IndexByte(rest[open:], '}')
		if end < 0 {
			return nil, fmt.Errorf("unclosed '{' in %q", raw)
		}
		name := rest[open+1 : open+end]
		if name == "" || strings.ContainsAny(name, "{ ") {
			return nil, fmt.Errorf("bad macro %q in %q", name, raw)
		}
		if !known(name) {
			unknown = append(unknown, name)
		}
		t.parts = append(t.parts, part{macro: name, inQuery: inQuery})
		rest = rest[open+end+1:]
	}
	if len(unknown) > 0 {
		return nil, fmt.Errorf("unknown macro(s) %s in %q", strings.Join(unknown, ", "), raw)
	}
	return t, nil
}

// Macros returns the macro names the template uses, in order, with repeats.
func (t *Template) Macros() []string {
	var names []string
	for _, p := range t.parts {
		if p.macro != "" {
			names = append(names, p.macro)
		}
	}
	return names
}

// String returns the template as written.
func (t *Template) String() string { return t.raw }

// Render substitutes every macro with value(name), escaped for its position.
// A macro whose value is missing renders as the empty string.
func (t *Template) Render(value func(name string) string) string {
	var b strings.Builder
	b.Grow(len(t.raw) + 64)
	for _, p := range t.parts {
		if p.macro == "" {
			b.WriteString(p.literal)
			continue
		}
		v := value(p.macro)
		if p.inQuery {
			b.WriteString(url.QueryEscape(v))
		} else {
			b.WriteString(url.PathEscape(v))
		}
	}
	return b.String()
}
