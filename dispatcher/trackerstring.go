package dispatcher

import (
	"errors"
	"fmt"
	"strings"
)

// TrackerPattern decodes a partner's composite tracker string: one value into
// which an affiliate packed several parameters, e.g.
//
//	pattern "trID_{id}_{affid}-{transid}-{clickid}-{extra}_trID"
//	value   "trID_1234567_aff1-tx9-c77-x_trID"
//	fields  id=1234567 affid=aff1 transid=tx9 clickid=c77 extra=x
//
// The rule: the pattern is literal text with {field} placeholders. The text
// before the first placeholder is a required prefix, the text after the last
// one a required suffix, and the literal text between two placeholders is the
// delimiter that ends the first of them. Decoding reads left to right: each
// field's value runs up to the first occurrence of its following delimiter
// (or suffix), so a value may never contain its following delimiter; a last
// field with no suffix takes the rest of the input. Values may be empty.
//
// Two placeholders with no text between them are rejected by
// ParseTrackerPattern, as they could not be told apart.
//
// A TrackerPattern is immutable and safe for concurrent use.
type TrackerPattern struct {
	raw    string
	prefix string
	fields []trackerField
}

type trackerField struct {
	name  string
	delim string // literal that follows the field; "" only for a last field without suffix
}

// errTrackerMismatch is wrapped by every Decode error, so a render can tell a
// mismatch (a warning) from anything else.
var errTrackerMismatch = errors.New("tracker string does not match pattern")

// ParseTrackerPattern parses a pattern such as
// "trID_{id}_{affid}-{transid}-{clickid}-{extra}_trID". Field names are
// letters, digits and '_', unique, and there is at least one.
func ParseTrackerPattern(pattern string) (*TrackerPattern, error) {
	tp := &TrackerPattern{raw: pattern}
	seen := map[string]bool{}
	rest := pattern
	first := true
	for {
		open := strings.IndexByte(rest, '{')
		if c := strings.IndexByte(rest, '}'); c >= 0 && (open < 0 || c < open) {
			return nil, fmt.Errorf("tracker pattern %q: unbalanced '}'", pattern)
		}
		lit := rest
		if open >= 0 {
			lit = rest[:open]
		}
		switch {
		case first:
			tp.prefix = lit
		case lit == "" && open >= 0:
			return nil, fmt.Errorf("tracker pattern %q: fields %q and the next one have no delimiter between them",
				pattern, tp.fields[len(tp.fields)-1].name)
		default:
			tp.fields[len(tp.fields)-1].delim = lit
		}
		if open < 0 {
			break
		}
		end := strings.IndexByte(rest[open:], '}')
		if end < 0 {
			return nil, fmt.Errorf("tracker pattern %q: unclosed '{'", pattern)
		}
		name := rest[open+1 : open+end]
		if !validFieldName(name) {
			return nil, fmt.Errorf("tracker pattern %q: bad field name %q", pattern, name)
		}
		if seen[name] {
			return nil, fmt.Errorf("tracker pattern %q: field %q repeated", pattern, name)
		}
		seen[name] = true
		tp.fields = append(tp.fields, trackerField{name: name})
		rest = rest[open+end+1:]
		first = false
	}
	if len(tp.fields) == 0 {
		return nil, fmt.Errorf("tracker pattern %q: no {field} placeholder", pattern)
	}
	return tp, nil
}

func validFieldName(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !(r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

// String returns the pattern as written.
func (tp *TrackerPattern) String() string { return tp.raw }

// Fields returns the field names in pattern order.
func (tp *TrackerPattern) Fields() []string {
	names := make([]string, len(tp.fields))
	for i, f := range tp.fields {
		names[i] = f.name
	}
	return names
}

// HasField reports whether name is one of the pattern's fields.
func (tp *TrackerPattern) HasField(name string) bool {
	for _, f := range tp.fields {
		if f.name == name {
			return true
		}
	}
	return false
}

// Decode splits s into its fields. On a mismatch (missing prefix, a missing
// delimiter, text left after the suffix) it returns a nil map and an error
// saying where; the caller renders the fields empty and reports a warning.
// The error quotes neither s nor any value, only the pattern's own literals.
func (tp *TrackerPattern) Decode(s string) (map[string]string, error) {
	if !strings.HasPrefix(s, tp.prefix) {
		return nil, fmt.Errorf("%w: missing prefix %q", errTrackerMismatch, tp.prefix)
	}
	rest := s[len(tp.prefix):]
	out := make(map[string]string, len(tp.fields))
	for i, f := range tp.fields {
		if f.delim == "" { // last field, no suffix: takes the rest
			out[f.name] = rest
			return out, nil
		}
		j := strings.Index(rest, f.delim)
		if j < 0 {
			return nil, fmt.Errorf("%w: no %q after field %q", errTrackerMismatch, f.delim, f.name)
		}
		out[f.name] = rest[:j]
		rest = rest[j+len(f.delim):]
		if i == len(tp.fields)-1 && rest != "" {
			return nil, fmt.Errorf("%w: %d byte(s) after suffix %q", errTrackerMismatch, len(rest), f.delim)
		}
	}
	return out, nil
}

// Encode is the inverse of Decode: it packs values (missing ones empty) into
// the pattern. Decode(Encode(v)) gives v back when no value contains its
// following delimiter.
func (tp *TrackerPattern) Encode(values map[string]string) string {
	var b strings.Builder
	b.WriteString(tp.prefix)
	for _, f := range tp.fields {
		b.WriteString(values[f.name])
		b.WriteString(f.delim)
	}
	return b.String()
}
