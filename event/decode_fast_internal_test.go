package event

import (
	"encoding/json"
	"io/fs"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/postbackd/postbackd/schemas"
)

func TestFastSchemasCompile(t *testing.T) {
	d, err := NewDecoder()
	if err != nil {
		t.Fatal(err)
	}
	for _, kind := range Kinds {
		if _, err := fastSchemaOf(kind); err != nil {
			t.Errorf("the fast path cannot take %s events: %v", kind, err)
		}
		if d.fast[kind] == nil {
			t.Errorf("NewDecoder has no fast path for %s", kind)
		}
	}
}

// TestCompileFastSchemaRefuses changes the deposit schema in ways the fast
// path does not implement: each must keep deposits off the fast path.
func TestCompileFastSchemaRefuses(t *testing.T) {
	data, err := fs.ReadFile(schemas.FS, schemas.File(string(KindDeposit)))
	if err != nil {
		t.Fatal(err)
	}
	prop := func(sch map[string]any, name string) map[string]any {
		return sch["properties"].(map[string]any)[name].(map[string]any)
	}
	tests := []struct {
		name   string
		change func(sch map[string]any)
	}{
		{"top-level keyword", func(sch map[string]any) { sch["minProperties"] = 1 }},
		{"additional properties allowed", func(sch map[string]any) { sch["additionalProperties"] = true }},
		{"additional properties unspecified", func(sch map[string]any) { delete(sch, "additionalProperties") }},
		{"property without a field", func(sch map[string]any) {
			sch["properties"].(map[string]any)["bonus"] = map[string]any{"type": "string"}
		}},
		{"required property absent", func(sch map[string]any) { sch["required"] = append(sch["required"].([]any), "kind") }},
		{"required params", func(sch map[string]any) { sch["required"] = append(sch["required"].([]any), "params") }},
		{"string keyword", func(sch map[string]any) { prop(sch, "amount")["const"] = "1" }},
		{"nullable string", func(sch map[string]any) { prop(sch, "network")["type"] = []any{"string", "null"} }},
		{"number", func(sch map[string]any) { prop(sch, "amount")["type"] = "number" }},
		{"unknown pattern", func(sch map[string]any) { prop(sch, "currency")["pattern"] = "^[A-Z]{2,3}$" }},
		{"other format", func(sch map[string]any) { prop(sch, "occurred_at")["format"] = "date" }},
		{"enum of numbers", func(sch map[string]any) { prop(sch, "status")["enum"] = []any{1, 2} }},
		{"fractional length", func(sch map[string]any) { prop(sch, "event_id")["maxLength"] = 1.5 }},
		{"params keyword", func(sch map[string]any) { prop(sch, "params")["minProperties"] = 1 }},
		{"params of numbers", func(sch map[string]any) {
			prop(sch, "params")["additionalProperties"] = map[string]any{"type": "number"}
		}},
		{"params of anything", func(sch map[string]any) { delete(prop(sch, "params"), "additionalProperties") }},
		{"param name pattern", func(sch map[string]any) {
			prop(sch, "params")["propertyNames"].(map[string]any)["pattern"] = "^[a-z]+$"
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var sch map[string]any
			if err := json.Unmarshal(data, &sch); err != nil {
				t.Fatal(err)
			}
			tt.change(sch)
			changed, err := json.Marshal(sch)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := compileFastSchema(changed); err == nil {
				t.Errorf("compileFastSchema accepts the changed schema")
			}
		})
	}
	if _, err := compileFastSchema(data); err != nil {
		t.Errorf("compileFastSchema refuses the unchanged schema: %v", err)
	}
}

// patternSamples are strings near and far from the patterns' languages.
var patternSamples = []string{
	"", "0", "00", "01", "1", "10", "-0", "-", "--1", "+1", "0.", ".0", "0.0", "1.5", "1.2.3", "-1.50", "1e3", " 1", "1 ",
	"1\n", "٣", "１", "EUR", "eur", "EU", "EURO", "ÉUR", "EU\n", "E1R",
	"2026-11-23T10:15:00Z", "2026-11-23T10:15:00.250+02:00", "2026-11-23T10:15:00.Z", "2026-11-23T10:15:00.5", "2026-11-23t10:15:00z",
	"2026-11-23T10:15:00+0200", "2026-11-23T10:15:00+02:00\n", "2026-11-23T1:15:00Z", "2026-11-23T10:15:00,5Z", "2026-11-23 10:15:00Z",
	"12026-11-23T10:15:00Z", "2026-11-23T10:15:00-23:59", "2026-11-23T99:99:99+99:99", "2026-11-23T10:15:00Z+02:00", "２０２６-11-23T10:15:00Z",
}

func TestPatternMatchers(t *testing.T) {
	for pattern, match := range patternMatchers {
		re := regexp.MustCompile(pattern)
		for _, s := range patternSamples {
			if got, want := match(s), re.MatchString(s); got != want {
				t.Errorf("%s: matcher says %v for %q, regexp %v", pattern, got, s, want)
			}
		}
	}
}

// FuzzPatternMatchers compares each hand-coded pattern matcher to its
// regexp, and checks that isDateTimeInRange is no laxer than jsonschema's
// "format": "date-time" where time.Parse would accept the string.
func FuzzPatternMatchers(f *testing.F) {
	for _, s := range patternSamples {
		f.Add(s)
	}
	regexps := make(map[string]*regexp.Regexp, len(patternMatchers))
	for pattern := range patternMatchers {
		regexps[pattern] = regexp.MustCompile(pattern)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	if err := c.AddResource("date-time.json", map[string]any{"type": "string", "format": "date-time"}); err != nil {
		f.Fatal(err)
	}
	dateTime, err := c.Compile("date-time.json")
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for pattern, match := range patternMatchers {
			if got, want := match(s), regexps[pattern].MatchString(s); got != want {
				t.Fatalf("%s: matcher says %v for %q, regexp %v", pattern, got, s, want)
			}
		}
		if !isDateTimeInRange(s) {
			return
		}
		if _, err := time.Parse(time.RFC3339Nano, s); err != nil {
			return
		}
		if err := dateTime.Validate(s); err != nil {
			t.Fatalf("isDateTimeInRange and time.Parse accept %q, the date-time format does not: %v", s, err)
		}
	})
}

// TestFastStateNoLeak checks that decodeFast's events own their strings:
// decoding another message reuses the pooled buffers.
func TestFastStateNoLeak(t *testing.T) {
	d, err := NewDecoder()
	if err != nil {
		t.Fatal(err)
	}
	first := `{"event_id":"q-1","occurred_at":"2026-11-30T08:00:00Z","merchant_id":"m","click_id":"c","status":"approved","params":{"a":"b"}}`
	e, ok := d.decodeFast(KindQualification, []byte(first))
	if !ok {
		t.Fatal("the fast path declines")
	}
	for range 100 {
		other := strings.NewReplacer("q-1", "x-9", `"a":"b"`, `"y":"z"`).Replace(first)
		if _, ok := d.decodeFast(KindQualification, []byte(other)); !ok {
			t.Fatal("the fast path declines")
		}
	}
	if q := e.(*Qualification); q.EventID != "q-1" || q.Params["a"] != "b" || len(q.Params) != 1 {
		t.Errorf("the first event changed: %+v", q)
	}
}
