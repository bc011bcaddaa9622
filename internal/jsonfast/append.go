package jsonfast

import (
	"time"
	"unicode/utf8"
)

// The appenders below write JSON byte for byte as json.Marshal does, for
// encoders written by hand (the audit records, the delivery record) whose
// output must not change when they replace it.

// safeASCII[c] is true for a byte that encoding/json copies into a string
// as is with HTML escaping on (its htmlSafeSet): printable ASCII and DEL,
// except ", \, <, > and &. Bytes from 0x80 are false: they start a UTF-8
// sequence that AppendString must decode.
var safeASCII = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = true
	}
	for _, c := range `"\<>&` {
		t[c] = false
	}
	return t
}()

const hexDigits = "0123456789abcdef"

// AppendString appends s as a quoted JSON string exactly as encoding/json's
// appendString does with escapeHTML set (the json.Marshal default):
//   - ", \ and the control characters \b, \f, \n, \r, \t get their short
//     escapes; the other bytes below 0x20, and <, > and &, are \u00XX in
//     lower-case hex;
//   - each byte of invalid UTF-8 becomes \ufffd;
//   - U+2028 and U+2029 become \u2028 and \u2029;
//   - everything else, including valid multi-byte runes, is copied.
//
// A string of safe ASCII only, the common case (IDs, hex, URLs without a
// query), costs one scan and one copy.
func AppendString(b []byte, s string) []byte {
	b = append(b, '"')
	i := 0
	for i < len(s) && safeASCII[s[i]] {
		i++
	}
	if i == len(s) {
		b = append(b, s...)
		return append(b, '"')
	}
	start := 0 // s[start:i] is pending, to be copied as is
	for i < len(s) {
		c := s[i]
		if c < utf8.RuneSelf {
			if safeASCII[c] {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default: // other control characters, <, >, &
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// AppendTime appends t as time.Time.MarshalJSON writes it: quoted RFC 3339
// with nanoseconds, trailing zeros trimmed. It returns false (and ok's value
// otherwise) for a time MarshalJSON refuses, found by the same checks
// time.Time.appendStrictRFC3339 makes on the same formatted bytes.
// encoding/json passes MarshalJSON's output through its compactor, which
// leaves these bytes (digits, "-:.TZ+") as they are.
func AppendTime(b []byte, t time.Time, ok bool) ([]byte, bool) {
	b = append(b, '"')
	n := len(b)
	// time.RFC3339Nano is the layout MarshalJSON formats with; AppendFormat
	// sends it down the same code path.
	b = t.AppendFormat(b, time.RFC3339Nano)
	if b[n+len("9999")] != '-' { // year not exactly 4 digits wide
		ok = false
	} else if b[len(b)-1] != 'Z' {
		// Zone offset "±hh:mm": three or more hour digits, or hh >= 24.
		c := b[len(b)-len("Z07:00")]
		h := b[len(b)-len("07:00"):]
		if ('0' <= c && c <= '9') || 10*(h[0]-'0')+(h[1]-'0') >= 24 {
			ok = false
		}
	}
	return append(b, '"'), ok
}
