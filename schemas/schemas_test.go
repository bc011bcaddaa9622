package schemas_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/postbackd/postbackd/event"
	"github.com/postbackd/postbackd/schemas"
)

var inputs = []string{"deposit", "revenue", "registration", "qualification"}

func compile(t testing.TB) *schemas.Set {
	t.Helper()
	set, err := schemas.Compile()
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return set
}

// load returns a schema file as a generic JSON object.
func load(t testing.TB, name string) map[string]any {
	t.Helper()
	data, err := fs.ReadFile(schemas.FS, schemas.File(name))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return m
}

func props(t testing.TB, sch map[string]any) map[string]any {
	t.Helper()
	p, ok := sch["properties"].(map[string]any)
	if !ok {
		t.Fatalf("schema %v has no properties", sch["$id"])
	}
	return p
}

func required(sch map[string]any) []string {
	var out []string
	for _, r := range sch["required"].([]any) {
		out = append(out, r.(string))
	}
	slices.Sort(out)
	return out
}

func TestEveryFileIsNamed(t *testing.T) {
	files, err := fs.Glob(schemas.FS, "*.json")
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, n := range schemas.Names {
		want = append(want, schemas.File(n))
	}
	slices.Sort(files)
	slices.Sort(want)
	if !slices.Equal(files, want) {
		t.Fatalf("embedded files %v, Names gives %v", files, want)
	}
}

// TestSchemasAreDocumented checks what readers rely on: every schema is
// draft 2020-12, has its $id, a title and description, closes its top level,
// carries examples, and documents every property (nested ones included).
func TestSchemasAreDocumented(t *testing.T) {
	for _, name := range schemas.Names {
		t.Run(name, func(t *testing.T) {
			sch := load(t, name)
			if got := sch["$schema"]; got != "https://json-schema.org/draft/2020-12/schema" {
				t.Errorf("$schema = %v", got)
			}
			if got := sch["$id"]; got != schemas.BaseURL+schemas.File(name) {
				t.Errorf("$id = %v", got)
			}
			for _, k := range []string{"title", "description"} {
				if s, _ := sch[k].(string); s == "" {
					t.Errorf("no %s", k)
				}
			}
			if sch["additionalProperties"] != false {
				t.Errorf("additionalProperties = %v, want false", sch["additionalProperties"])
			}
			if ex, _ := sch["examples"].([]any); len(ex) == 0 {
				t.Errorf("no examples")
			}
			var walk func(path string, p map[string]any)
			walk = func(path string, p map[string]any) {
				for k, v := range p {
					prop := v.(map[string]any)
					for _, key := range []string{"title", "description"} {
						if s, _ := prop[key].(string); s == "" {
							t.Errorf("property %s%s has no %s", path, k, key)
						}
					}
					if _, ok := prop["type"]; !ok {
						t.Errorf("property %s%s has no type", path, k)
					}
					if nested, ok := prop["properties"].(map[string]any); ok {
						if prop["additionalProperties"] != false {
							t.Errorf("object %s%s is not closed", path, k)
						}
						walk(path+k+"/", nested)
					}
				}
			}
			walk("/", props(t, sch))
		})
	}
}

// TestExamplesValidate keeps the examples inside the schema files honest:
// they are the documentation analysts and producers copy from.
func TestExamplesValidate(t *testing.T) {
	set := compile(t)
	for _, name := range schemas.Names {
		for i, ex := range load(t, name)["examples"].([]any) {
			data, err := json.Marshal(ex)
			if err != nil {
				t.Fatal(err)
			}
			if err := set.ValidateJSON(name, data); err != nil {
				t.Errorf("%s example %d: %v", name, i, err)
			}
		}
	}
}

// TestInputsShareTheEnvelope: the common fields are copied into each input
// schema so each file stands alone; they must not drift apart.
func TestInputsShareTheEnvelope(t *testing.T) {
	envelope := tags(reflect.TypeFor[event.Envelope]())
	first := props(t, load(t, inputs[0]))
	for _, name := range inputs {
		p := props(t, load(t, name))
		for field := range envelope {
			if !reflect.DeepEqual(p[field], first[field]) {
				t.Errorf("%s: property %s differs from %s's", name, field, inputs[0])
			}
		}
	}
}

type field struct{ omitempty bool }

// tags returns the JSON names of t's fields, flattening embedded structs as
// encoding/json does.
func tags(t reflect.Type) map[string]field {
	out := map[string]field{}
	for f := range t.Fields() {
		if f.Anonymous && f.Tag.Get("json") == "" {
			for k, v := range tags(f.Type) {
				out[k] = v
			}
			continue
		}
		name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = field{omitempty: strings.Contains(opts, "omitempty")}
	}
	return out
}

// assertMatches checks that the struct's JSON fields are exactly the
// schema's properties, and that a field is required exactly when the struct
// always writes it (no omitempty).
func assertMatches(t *testing.T, name string, typ reflect.Type, sch map[string]any) {
	t.Helper()
	fields := tags(typ)
	p := props(t, sch)
	var wantReq []string
	for k, f := range fields {
		if _, ok := p[k]; !ok {
			t.Errorf("%s: field %s.%s is not in the schema", name, typ.Name(), k)
		}
		if !f.omitempty {
			wantReq = append(wantReq, k)
		}
	}
	for k := range p {
		if _, ok := fields[k]; !ok {
			t.Errorf("%s: schema property %s is not a field of %s", name, k, typ.Name())
		}
	}
	slices.Sort(wantReq)
	if got := required(sch); !slices.Equal(got, wantReq) {
		t.Errorf("%s: required = %v, want (fields without omitempty) %v", name, got, wantReq)
	}
}

func TestInputSchemasMatchEventTypes(t *testing.T) {
	types := map[string]reflect.Type{
		"deposit":       reflect.TypeFor[event.Deposit](),
		"revenue":       reflect.TypeFor[event.Revenue](),
		"registration":  reflect.TypeFor[event.Registration](),
		"qualification": reflect.TypeFor[event.Qualification](),
	}
	for _, name := range inputs {
		assertMatches(t, name, types[name], load(t, name))
	}
}

func enum(t *testing.T, sch map[string]any, path ...string) []string {
	t.Helper()
	var cur any = sch
	for _, p := range path {
		cur = cur.(map[string]any)["properties"].(map[string]any)[p]
	}
	var out []string
	for _, v := range cur.(map[string]any)["enum"].([]any) {
		out = append(out, v.(string))
	}
	return out
}

func strs[T ~string](vs ...T) []string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = string(v)
	}
	return out
}

func TestInputEnumsMatchConstants(t *testing.T) {
	tests := []struct {
		schema, prop string
		want         []string
	}{
		{"deposit", "status", strs(event.DepositSucceeded, event.DepositFailed, event.DepositPending)},
		{"registration", "kind", strs(event.RegistrationFull, event.RegistrationTrial)},
		{"qualification", "status", strs(event.QualificationApproved, event.QualificationRejected)},
	}
	for _, tt := range tests {
		if got := enum(t, load(t, tt.schema), tt.prop); !slices.Equal(got, tt.want) {
			t.Errorf("%s /%s enum = %v, want %v", tt.schema, tt.prop, got, tt.want)
		}
	}
}

// doc returns a mutable copy of the schema's first example.
func doc(t testing.TB, name string) map[string]any {
	t.Helper()
	data, err := json.Marshal(load(t, name)["examples"].([]any)[0])
	if err != nil {
		t.Fatal(err)
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	return v.(map[string]any)
}

func TestInputSchemasReject(t *testing.T) {
	set := compile(t)
	type mutation func(m map[string]any)
	set1 := func(k string, v any) mutation { return func(m map[string]any) { m[k] = v } }
	del := func(k string) mutation { return func(m map[string]any) { delete(m, k) } }
	num := func(s string) json.Number { return json.Number(s) }

	common := []struct {
		name    string
		mutate  mutation
		pointer string
		msg     string
	}{
		{"missing event_id", del("event_id"), "/event_id", "required"},
		{"empty event_id", set1("event_id", ""), "/event_id", "below the minimum 1"},
		{"long event_id", set1("event_id", strings.Repeat("e", 129)), "/event_id", "exceeds the maximum 128"},
		{"missing occurred_at", del("occurred_at"), "/occurred_at", "required"},
		{"date only", set1("occurred_at", "2026-11-23"), "/occurred_at", "date-time"},
		{"no offset", set1("occurred_at", "2026-11-23T10:15:00"), "/occurred_at", "date-time"},
		{"bad month", set1("occurred_at", "2026-13-23T10:15:00Z"), "/occurred_at", "date-time"},
		{"unix time", set1("occurred_at", num("1795000000")), "/occurred_at", "got number, want string"},
		{"missing merchant_id", del("merchant_id"), "/merchant_id", "required"},
		{"missing click_id", del("click_id"), "/click_id", "required"},
		{"empty click_id", set1("click_id", ""), "/click_id", "below the minimum 1"},
		{"long click_id", set1("click_id", strings.Repeat("c", 257)), "/click_id", "exceeds the maximum 256"},
		{"click_id number", set1("click_id", num("123")), "/click_id", "got number, want string"},
		{"network null", set1("network", nil), "/network", "got null, want string"},
		{"additional property", set1("extra", "x"), "/extra", "not allowed"},
		{"params not object", set1("params", "a=b"), "/params", "got string, want object"},
		{"params non-string value", set1("params", map[string]any{"offer_id": num("19")}), "/params/offer_id", "got number, want string"},
		{"params long value", set1("params", map[string]any{"t": strings.Repeat("v", 2049)}), "/params/t", "exceeds the maximum 2048"},
		{"params too many", set1("params", manyParams(65)), "/params", "65 properties exceed the maximum 64"},
	}
	money := []struct {
		name    string
		mutate  mutation
		pointer string
		msg     string
	}{
		{"float amount", set1("amount", num("12.5")), "/amount", "got number, want string"},
		{"missing amount", del("amount"), "/amount", "required"},
		{"comma amount", set1("amount", "12,50"), "/amount", "does not match pattern"},
		{"exponent amount", set1("amount", "1e3"), "/amount", "does not match pattern"},
		{"leading zero amount", set1("amount", "012"), "/amount", "does not match pattern"},
		{"empty amount", set1("amount", ""), "/amount", "does not match pattern"},
		{"lower-case currency", set1("currency", "eur"), "/currency", "does not match pattern"},
		{"long currency", set1("currency", "EURO"), "/currency", "does not match pattern"},
		{"missing currency", del("currency"), "/currency", "required"},
	}
	type tcase = struct {
		name    string
		mutate  mutation
		pointer string
		msg     string
	}
	specific := map[string][]tcase{
		"deposit": {
			{"unknown status", set1("status", "refunded"), "/status", "must be one of succeeded, failed, pending"},
			{"missing status", del("status"), "/status", "required"},
			{"missing player_id", del("player_id"), "/player_id", "required"},
			{"empty player_id", set1("player_id", ""), "/player_id", "below the minimum 1"},
			{"negative amount", set1("amount", "-5"), "/amount", "does not match pattern"},
		},
		"revenue": {
			{"player_id number", set1("player_id", num("42")), "/player_id", "got number, want string"},
		},
		"registration": {
			{"unknown kind", set1("kind", "signup"), "/kind", "must be one of registration, trial"},
			{"missing kind", del("kind"), "/kind", "required"},
		},
		"qualification": {
			{"unknown status", set1("status", "pending"), "/status", "must be one of approved, rejected"},
			{"missing status", del("status"), "/status", "required"},
			{"reason number", set1("reason", num("1")), "/reason", "got number, want string"},
		},
	}
	for _, name := range inputs {
		cases := append([]tcase{}, common...)
		if name == "deposit" || name == "revenue" {
			cases = append(cases, money...)
		}
		cases = append(cases, specific[name]...)
		for _, tt := range cases {
			t.Run(name+"/"+tt.name, func(t *testing.T) {
				m := doc(t, name)
				if err := set.Validate(name, m); err != nil {
					t.Fatalf("base example invalid: %v", err)
				}
				tt.mutate(m)
				err := set.Validate(name, m)
				var se *schemas.Error
				if !errors.As(err, &se) {
					t.Fatalf("Validate = %v, want *schemas.Error", err)
				}
				want := tt.pointer + ": "
				if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), tt.msg) {
					t.Errorf("error %q, want it to contain %q and %q", err, want, tt.msg)
				}
				if !slices.ContainsFunc(se.Problems, func(p schemas.Problem) bool { return p.Pointer == tt.pointer }) {
					t.Errorf("problems %v do not name %s", se.Problems, tt.pointer)
				}
			})
		}
	}
}

func TestInputSchemasAccept(t *testing.T) {
	set := compile(t)
	set1 := func(k string, v any) func(map[string]any) { return func(m map[string]any) { m[k] = v } }
	tests := []struct {
		schema string
		name   string
		mutate func(map[string]any)
	}{
		{"deposit", "offset time", set1("occurred_at", "2026-11-23T10:15:00.123456789-03:30")},
		{"deposit", "zero amount (failed)", set1("amount", "0")},
		{"deposit", "integer amount", set1("amount", "100")},
		{"deposit", "long fraction", set1("amount", "1000000000.000000001")},
		{"deposit", "no payment_method", func(m map[string]any) { delete(m, "payment_method") }},
		{"deposit", "64 params", set1("params", manyParams(64))},
		{"deposit", "empty network", set1("network", "")},
		{"revenue", "negative amount", set1("amount", "-0.01")},
		{"revenue", "no player_id", func(m map[string]any) { delete(m, "player_id") }},
		{"registration", "trial", set1("kind", "trial")},
		{"qualification", "no reason", func(m map[string]any) { delete(m, "reason") }},
	}
	for _, tt := range tests {
		m := doc(t, tt.schema)
		tt.mutate(m)
		if err := set.Validate(tt.schema, m); err != nil {
			t.Errorf("%s/%s: %v", tt.schema, tt.name, err)
		}
	}
}

func manyParams(n int) map[string]any {
	m := make(map[string]any, n)
	for i := range n {
		m[fmt.Sprintf("p%d", i)] = "v"
	}
	return m
}

func TestErrorMessageIsOneBoundedLine(t *testing.T) {
	set := compile(t)
	m := doc(t, "deposit")
	// Many failing fields, one named with a newline.
	params := map[string]any{"line\nbreak": json.Number("1")}
	for i := range 60 {
		params[fmt.Sprintf("custom_field_with_a_long_name_%02d", i)] = json.Number("1")
	}
	m["params"] = params
	m["amount"] = json.Number("1.5")
	err := set.Validate("deposit", m)
	if err == nil {
		t.Fatal("Validate accepted a broken document")
	}
	msg := err.Error()
	if strings.ContainsAny(msg, "\n\r") {
		t.Errorf("message spans lines: %q", msg)
	}
	if len(msg) > 512 {
		t.Errorf("message is %d bytes, want at most 512", len(msg))
	}
	if !strings.Contains(msg, "more") {
		t.Errorf("message %q does not say problems were left out", msg)
	}
	if !strings.HasPrefix(msg, "/amount: got number, want string") {
		t.Errorf("message %q does not start with the sorted first problem", msg)
	}
	var se *schemas.Error
	if !errors.As(err, &se) || len(se.Problems) != 62 {
		t.Errorf("want 62 problems, got %v", err)
	}
}

func TestPointerEscaping(t *testing.T) {
	set := compile(t)
	m := doc(t, "deposit")
	m["params"] = map[string]any{"a/b~c": json.Number("1")}
	err := set.Validate("deposit", m)
	if err == nil || !strings.Contains(err.Error(), "/params/a~1b~0c: ") {
		t.Errorf("Validate = %v, want the RFC 6901 pointer /params/a~1b~0c", err)
	}
}

func TestValidateUnknownSchema(t *testing.T) {
	set := compile(t)
	if err := set.Validate("withdrawal", map[string]any{}); !errors.Is(err, schemas.ErrUnknownSchema) {
		t.Errorf("Validate(withdrawal) = %v, want ErrUnknownSchema", err)
	}
}

func TestValidateNonObject(t *testing.T) {
	set := compile(t)
	err := set.ValidateJSON("deposit", []byte(`[1,2]`))
	if err == nil || !strings.Contains(err.Error(), "(document): got array, want object") {
		t.Errorf("ValidateJSON(array) = %v", err)
	}
}
