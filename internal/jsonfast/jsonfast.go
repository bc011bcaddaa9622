// Package jsonfast reads and writes JSON without reflection exactly as
// encoding/json does, for the hot paths that would otherwise pay for
// reflection on every event: Agree tells when github.com/valyala/fastjson
// reads a text as encoding/json does (a decoder takes fastjson's path for
// those and leaves the rest to encoding/json), and AppendString and
// AppendTime write what json.Marshal writes, for encoders by hand.
package jsonfast

import (
	"strings"
	"unicode/utf8"

	"github.com/valyala/fastjson"
)

// Agree reports whether value is valid JSON that fastjson reads as
// encoding/json does: valid UTF-8 (encoding/json replaces invalid bytes,
// fastjson keeps them), no raw control character in a string (fastjson's
// validator misses one followed by an escape in the same string), and no
// \u escape of a UTF-16 surrogate (the two decode a lone or mismatched one
// differently), nested no deeper than maxDepth (fastjson's validator
// recurses without a limit, and its parser refuses more anyway). What it
// does not cover is the caller's: duplicate keys
// (encoding/json keeps the last), keys matched case-insensitively, null, and
// values encoding/json reads from their raw text (a time.Time sees its
// escapes, fastjson the unescaped string).
func Agree[T string | []byte](value T) bool {
	switch v := any(value).(type) {
	case string:
		return utf8.ValidString(v) && cleanStrings(v) && fastjson.Validate(v) == nil
	case []byte:
		return utf8.Valid(v) && cleanStrings(v) && fastjson.ValidateBytes(v) == nil
	}
	return false
}

// maxDepth is fastjson's parser's own limit on nesting (MaxDepth).
const maxDepth = 300

// cleanStrings reports whether every string of value, keys included, is
// free of raw control characters and of \u escapes of UTF-16 surrogates
// (\uD800 to \uDFFF), and whether value nests no deeper than maxDepth.
// value must be valid JSON for the answer to mean anything, so Agree
// validates too, after it (so that the validator never recurses deeper).
func cleanStrings[T string | []byte](value T) bool {
	inString := false
	depth := 0
	for i := 0; i < len(value); i++ {
		c := value[i]
		switch {
		case !inString:
			switch c {
			case '"':
				inString = true
			case '{', '[':
				if depth++; depth > maxDepth {
					return false
				}
			case '}', ']':
				depth--
			}
		case c == '"':
			inString = false
		case c == '\\':
			i++
			if i+2 < len(value) && value[i] == 'u' && (value[i+1] == 'd' || value[i+1] == 'D') && strings.IndexByte("89abcdefABCDEF", value[i+2]) >= 0 {
				return false
			}
		case c < 0x20:
			return false
		}
	}
	return true
}
