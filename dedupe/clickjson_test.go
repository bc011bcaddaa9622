package dedupe

import (
	"encoding/json"
	"reflect"
	"slices"
	"testing"
	"time"
)

// fastSeeds is how many of clickContextSeeds, first, take the fast path.
const fastSeeds = 4

// clickContextSeeds are contexts as the store writes them (cjson's
// escaping of "/" included) and texts each of decodeClickFast's refusals
// must send to encoding/json.
var clickContextSeeds = []string{
	`{"merchant_id":"m1","network":"beta","first_seen_at":"2026-12-02T10:00:00.123456789Z"}`,
	`{"merchant_id":"m1","network":"beta","params":{"tr":"trID_1_a1-t1-c1-x_trID","url":"https:\/\/t.example\/p?a=1"},"first_seen_at":"2026-12-02T10:00:00Z","registered_at":"2026-12-02T10:00:01.5+02:00"}`,
	`{"params":{},"merchant_id":"","network":""}`,
	`{"merchant_id":"m1","first_seen_at":"0001-01-01T00:00:00Z","registered_at":"0001-01-01T00:00:00Z"}`,
	`{"merchant_id":"m1","network":null}`,
	`{"network":"caf\u00e9 \u00e9"}`,
	`{"first_seen_at":"2026-12-02T10:00:00\u005A"}`,
	`{"merchant_id":"m1","params":{"a":"1","a":"2"}}`,
	`{"merchant_id":"m1","merchant_id":"m2"}`,
	`{"Network":"beta"}`,
	`{"network":"beta","other":1}`,
	`{"params":{"a":1}}`,
	`{"params":[]}`,
	`{"first_seen_at":"2026-12-02T10:00:00.000Z"}`,
	`{"first_seen_at":"2026-12-02 10:00:00Z"}`,
	`{"first_seen_at":""}`,
	`{"network":"\ud800"}`,
	"{\"network\":\"\xff\"}",
	`[]`,
	`null`,
	`{"network":"beta"`,
	``,
}

// TestDecodeClickContextFastPath: the contexts the store writes take the
// fast path, and every answer is encoding/json's.
func TestDecodeClickContextFastPath(t *testing.T) {
	for i, raw := range clickContextSeeds[:fastSeeds] {
		if _, ok := decodeClickFast(raw); !ok {
			t.Errorf("seed %d (%s): declined, want the fast path", i, raw)
		}
	}
	for _, raw := range clickContextSeeds[fastSeeds:] {
		if _, ok := decodeClickFast(raw); ok {
			t.Errorf("%s: taken by the fast path, want encoding/json", raw)
		}
	}
	for _, raw := range clickContextSeeds {
		checkClickContext(t, raw)
	}
	// A context written by the attribute script decodes to what it holds.
	c, err := decodeClickContext(clickContextSeeds[1])
	reg := time.Date(2026, 12, 2, 10, 0, 1, 5e8, time.FixedZone("", 2*3600))
	if err != nil || c.Network != "beta" || c.Params["url"] != "https://t.example/p?a=1" || !c.RegisteredAt.Equal(reg) {
		t.Errorf("decodeClickContext = %+v, %v", c, err)
	}
}

// checkClickContext fails unless decodeClickContext answers for raw what
// encoding/json answers: the same context, or an error when it errs.
func checkClickContext(t *testing.T, raw string) {
	t.Helper()
	var want ClickContext
	wantErr := json.Unmarshal([]byte(raw), &want)
	got, err := decodeClickContext(raw)
	if (err != nil) != (wantErr != nil) {
		t.Fatalf("%q: error %v, encoding/json's %v", raw, err, wantErr)
	}
	if err == nil && !reflect.DeepEqual(got, want) {
		t.Fatalf("%q: %#v, encoding/json gives %#v", raw, got, want)
	}
}

func FuzzDecodeClickContext(f *testing.F) {
	for _, raw := range clickContextSeeds {
		f.Add(raw)
	}
	f.Fuzz(func(t *testing.T, raw string) { checkClickContext(t, raw) })
}

// fastParams are route params as the store writes them (encoding/json's
// escaping included), which decodeParams reads without encoding/json.
var fastParams = []string{
	`{"offer_id":"o-7","tr":"trID_1_a1-t1-c1-x_trID","url":"https://t.example/p?a=1\u0026b=2"}`,
	`{}`,
	`{"caf\u00e9":"\u00e9\n"}`,
}

// paramsSeeds are fastParams and texts decodeParams must leave to
// encoding/json.
var paramsSeeds = append(slices.Clone(fastParams),
	`null`,
	`{"a":"1","a":"2"}`,
	`{"a":1}`,
	`{"a":null}`,
	`{"a":"\ud800"}`,
	"{\"a\":\"\xff\"}",
	`[]`,
	`"x"`,
	`{"a":"1"`,
	``,
)

// TestDecodeParams: the params the store writes take the fast path, and
// every answer is encoding/json's.
func TestDecodeParams(t *testing.T) {
	for _, raw := range paramsSeeds {
		if _, ok := decodeParamsFast(raw); ok != slices.Contains(fastParams, raw) {
			t.Errorf("%s: fast path %v, want %v", raw, ok, !ok)
		}
	}
	for _, raw := range paramsSeeds {
		checkParams(t, raw)
	}
}

func checkParams(t *testing.T, raw string) {
	t.Helper()
	var want map[string]string
	wantErr := json.Unmarshal([]byte(raw), &want)
	got, err := decodeParams(raw)
	if (err != nil) != (wantErr != nil) {
		t.Fatalf("%q: error %v, encoding/json's %v", raw, err, wantErr)
	}
	if err == nil && !reflect.DeepEqual(got, want) {
		t.Fatalf("%q: %#v, encoding/json gives %#v", raw, got, want)
	}
}

func FuzzDecodeParams(f *testing.F) {
	for _, raw := range paramsSeeds {
		f.Add(raw)
	}
	f.Fuzz(func(t *testing.T, raw string) { checkParams(t, raw) })
}
