package jsonfast

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

// TestAppendStringExhaustive compares AppendString with json.Marshal for
// every byte on its own and every rune, and for every byte in the middle
// of safe text (where a copy has to be split).
func TestAppendStringExhaustive(t *testing.T) {
	check := func(s string) {
		t.Helper()
		want, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := AppendString(nil, s); !bytes.Equal(got, want) {
			t.Fatalf("AppendString(%q)\n got: %s\nwant: %s", s, got, want)
		}
	}
	for c := 0; c < 256; c++ {
		check(string([]byte{byte(c)}))
		check("ab" + string([]byte{byte(c)}) + "cd")
		check(string([]byte{byte(c), byte(c)}))
	}
	// Runes in blocks, so that a block mixes copied and escaped runes.
	var sb strings.Builder
	for r := rune(0); r <= utf8.MaxRune; r++ {
		sb.WriteRune(r) // surrogates become U+FFFD, written as valid UTF-8
		if sb.Len() >= 512 || r == utf8.MaxRune {
			check(sb.String())
			sb.Reset()
		}
	}
	// Every two-byte sequence starting with a byte that is not ASCII: the
	// valid, the invalid and the truncated.
	for c0 := 0x80; c0 < 256; c0++ {
		for c1 := 0; c1 < 256; c1++ {
			check("x" + string([]byte{byte(c0), byte(c1)}) + "\xe2\x80\xa8")
		}
	}
}
