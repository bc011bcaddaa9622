package pipeline

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/postbackd/postbackd/record"
)

func TestSetDeadLetterValue(t *testing.T) {
	for _, tc := range []struct {
		name      string
		value     string
		truncated bool
	}{
		{"short", `{"event_id": "e1"`, false},
		{"exactly the cap", strings.Repeat("a", record.MaxDeadLetterValue), false},
		{"escapes six-fold", strings.Repeat("<", 200_000), true},
		{"multi-byte runes", strings.Repeat("€", 100_000), true},
		{"invalid UTF-8", strings.Repeat("\xff", 100_000), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var d record.DeadLetter
			setDeadLetterValue(&d, []byte(tc.value))
			if d.ValueTruncated != tc.truncated || d.ValueSize != len(tc.value) {
				t.Fatalf("truncated %v size %d; want %v %d", d.ValueTruncated, d.ValueSize, tc.truncated, len(tc.value))
			}
			if len(d.Value) > record.MaxDeadLetterValue || !strings.HasPrefix(tc.value, d.Value) {
				t.Fatalf("value of %d bytes is not a prefix within the cap", len(d.Value))
			}
			if utf8.ValidString(tc.value) && !utf8.ValidString(d.Value) {
				t.Fatal("the cut split a rune")
			}
			b, err := json.Marshal(d)
			if err != nil {
				t.Fatal(err)
			}
			if len(b) >= 1_000_000 {
				t.Fatalf("the dead letter is %d bytes: over Kafka's default message size", len(b))
			}
		})
	}
}
