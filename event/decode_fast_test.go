package event_test

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/postbackd/postbackd/event"
)

// message is a message value to decode as an event of kind.
type message struct {
	name  string
	kind  event.Kind
	value []byte
}

// params returns n params named p0, p1...
func params(n int) map[string]any {
	m := make(map[string]any, n)
	for i := range n {
		m[fmt.Sprint("p", i)] = fmt.Sprint("v", i)
	}
	return m
}

// fastTaken are valid messages of every kind, with the variations the fast
// path must take.
func fastTaken(t testing.TB) []message {
	registration := string(examples(t, event.KindRegistration)[0])
	revenue := examplesString(t, event.KindRevenue)
	qualification := string(examples(t, event.KindQualification)[1])
	var msgs []message
	for _, tc := range typedCases() {
		msgs = append(msgs, message{"typed " + string(tc.kind), tc.kind, []byte(tc.value)})
	}
	for _, kind := range event.Kinds {
		for i, ex := range examples(t, kind) {
			msgs = append(msgs, message{fmt.Sprintf("%s example %d", kind, i), kind, ex})
		}
	}
	for _, tc := range acceptedDepositChanges {
		msgs = append(msgs, message{tc.name, event.KindDeposit, with(t, deposit, tc.fields)})
	}
	for _, amount := range append([]string{"0.1", "0.2", "25.50"}, exactAmounts...) {
		msgs = append(msgs, message{"revenue amount " + amount, event.KindRevenue, with(t, revenueWithoutAmount, map[string]any{"amount": amount})})
	}
	for _, tc := range []struct {
		name   string
		kind   event.Kind
		base   string
		fields map[string]any
	}{
		{"no optional fields", event.KindDeposit, deposit, map[string]any{"network": nil, "params": nil, "payment_method": nil}},
		{"empty optional strings", event.KindDeposit, deposit, map[string]any{"network": "", "payment_method": ""}},
		{"empty params", event.KindDeposit, deposit, map[string]any{"params": map[string]any{}}},
		{"64 params", event.KindDeposit, deposit, map[string]any{"params": params(64)}},
		{"longest param in code points", event.KindDeposit, deposit, map[string]any{"params": map[string]any{strings.Repeat("é", 128): strings.Repeat("€", 2048)}}},
		{"empty param value", event.KindDeposit, deposit, map[string]any{"params": map[string]any{"custom2": ""}}},
		{"unicode ids", event.KindDeposit, deposit, map[string]any{"event_id": "dép-😀-1", "click_id": "点击-1", "player_id": "игрок"}},
		{"longest ids in code points", event.KindDeposit, deposit, map[string]any{"event_id": strings.Repeat("é", 128), "click_id": strings.Repeat("😀", 256), "network": strings.Repeat("ß", 128)}},
		{"HTML characters marshalled as escapes", event.KindDeposit, deposit, map[string]any{"player_id": "<p&42>", "params": map[string]any{"a<b": "c>d&e"}}},
		{"line and paragraph separators", event.KindDeposit, deposit, map[string]any{"payment_method": "card\u2028\u2029"}},
		{"NUL and control characters escaped", event.KindDeposit, deposit, map[string]any{"player_id": "p\x00\x01\t\n"}},
		{"longest amount", event.KindDeposit, deposit, map[string]any{"amount": "123456789012345678901.123456789012345678"}},
		{"largest scale", event.KindDeposit, deposit, map[string]any{"amount": "1.000000000000000001"}},
		{"trailing zeros", event.KindDeposit, deposit, map[string]any{"amount": "1.100"}},
		{"half-hour offset", event.KindDeposit, deposit, map[string]any{"occurred_at": "2026-11-23T15:45:00.25+05:30"}},
		{"largest offset", event.KindDeposit, deposit, map[string]any{"occurred_at": "2026-11-23T10:15:00-23:59"}},
		{"zero offset", event.KindDeposit, deposit, map[string]any{"occurred_at": "2026-11-23T10:15:00+00:00"}},
		{"nanoseconds and more", event.KindDeposit, deposit, map[string]any{"occurred_at": "2026-11-23T10:15:00.123456789123Z"}},
		{"year zero", event.KindDeposit, deposit, map[string]any{"occurred_at": "0000-01-01T00:00:00Z"}},
		{"last instant", event.KindDeposit, deposit, map[string]any{"occurred_at": "9999-12-31T23:59:59.999999999+14:00"}},
		{"leap day", event.KindDeposit, deposit, map[string]any{"occurred_at": "2028-02-29T12:00:00Z"}},
		{"negative zero revenue", event.KindRevenue, revenue, map[string]any{"amount": "-0"}},
		{"revenue without player", event.KindRevenue, revenue, map[string]any{"player_id": nil}},
		{"revenue with empty player", event.KindRevenue, revenue, map[string]any{"player_id": ""}},
		{"revenue with params", event.KindRevenue, revenue, map[string]any{"params": map[string]any{"offer_id": "7"}}},
		{"full registration", event.KindRegistration, registration, map[string]any{"kind": "registration", "player_id": ""}},
		{"qualification with params", event.KindQualification, qualification, map[string]any{"params": params(3), "network": "cams"}},
		{"longest reason", event.KindQualification, qualification, map[string]any{"reason": strings.Repeat("ü", 1024)}},
		{"empty reason", event.KindQualification, qualification, map[string]any{"reason": ""}},
	} {
		msgs = append(msgs, message{tc.name, tc.kind, with(t, tc.base, tc.fields)})
	}
	for _, tc := range []struct{ name, value string }{
		{"whitespace around and between tokens", " \r\n\t{ \"event_id\" : \"dep-1\" ,\n\"occurred_at\":\"2026-11-23T10:15:00Z\", \"merchant_id\":\"m\",\"click_id\":\"c\"," +
			"\"params\" : { \"a\" : \"b\" } ,\"amount\":\"1\",\"currency\":\"EUR\",\"status\":\"succeeded\",\"player_id\":\"p\" }\n\t "},
		{"every short escape", `{"event_id":"d\"\\\/\b\f\n\r\t-1","occurred_at":"2026-11-23T10:15:00Z","merchant_id":"m","click_id":"c",` +
			`"amount":"1","currency":"EUR","status":"succeeded","player_id":"p"}`},
		{"unicode escapes in values", `{"event_id":"d\u00e9p\u20ac\u0000","occurred_at":"2026\u002d11-23T10:15:00Z","merchant_id":"m","click_id":"c",` +
			`"amount":"\u0031.5","currency":"E\u0055R","status":"succ\u0065eded","player_id":"p","params":{"k\u00e9y":"v\u00E9"}}`},
		{"escaped backslash before surrogate digits", strings.Replace(deposit, `"p-42"`, `"p-\\ud800\\\\uDC00"`, 1)},
		{"escaped keys", `{"event\u005fid":"dep-1","occurred_at":"2026-11-23T10:15:00Z","merchant_id":"m","click_id":"c",` +
			`"\u0061mount":"1","currency":"EUR","status":"succeeded","player_id":"p","params":{"\u0061":"b","a\/b":"c"}}`},
	} {
		msgs = append(msgs, message{tc.name, event.KindDeposit, []byte(tc.value)})
	}
	return msgs
}

// fastDeclinedInvalid are invalid messages: the slow path rejects them, so
// the fast path must decline them.
func fastDeclinedInvalid(t testing.TB) []message {
	registration := string(examples(t, event.KindRegistration)[0])
	revenue := examplesString(t, event.KindRevenue)
	qualification := string(examples(t, event.KindQualification)[1])
	var msgs []message
	for _, tc := range rejectCases(t) {
		msgs = append(msgs, message{tc.name, tc.kind, tc.value})
	}
	for _, tc := range []struct {
		name   string
		kind   event.Kind
		base   string
		fields map[string]any
	}{
		{"unusable ids", event.KindDeposit, deposit, map[string]any{"click_id": 7, "event_id": strings.Repeat("e", 129)}},
		{"empty event_id", event.KindDeposit, deposit, map[string]any{"event_id": ""}},
		{"empty merchant_id", event.KindDeposit, deposit, map[string]any{"merchant_id": ""}},
		{"empty player_id", event.KindDeposit, deposit, map[string]any{"player_id": ""}},
		{"long event_id in code points", event.KindDeposit, deposit, map[string]any{"event_id": strings.Repeat("é", 129)}},
		{"long merchant_id", event.KindDeposit, deposit, map[string]any{"merchant_id": strings.Repeat("m", 129)}},
		{"long click_id", event.KindDeposit, deposit, map[string]any{"click_id": strings.Repeat("c", 257)}},
		{"long network", event.KindDeposit, deposit, map[string]any{"network": strings.Repeat("ß", 129)}},
		{"long player_id", event.KindDeposit, deposit, map[string]any{"player_id": strings.Repeat("p", 257)}},
		{"long payment_method", event.KindDeposit, deposit, map[string]any{"payment_method": strings.Repeat("c", 65)}},
		{"long reason", event.KindQualification, qualification, map[string]any{"reason": strings.Repeat("ü", 1025)}},
		{"network number", event.KindDeposit, deposit, map[string]any{"network": 7}},
		{"amount boolean", event.KindDeposit, deposit, map[string]any{"amount": true}},
		{"event_id object", event.KindDeposit, deposit, map[string]any{"event_id": map[string]any{"a": "b"}}},
		{"65 params", event.KindDeposit, deposit, map[string]any{"params": params(65)}},
		{"empty param name", event.KindDeposit, deposit, map[string]any{"params": map[string]any{"": "v"}}},
		{"long param name", event.KindDeposit, deposit, map[string]any{"params": map[string]any{strings.Repeat("é", 129): "v"}}},
		{"long param value", event.KindDeposit, deposit, map[string]any{"params": map[string]any{"k": strings.Repeat("€", 2049)}}},
		{"number param", event.KindDeposit, deposit, map[string]any{"params": map[string]any{"offer_id": 7}}},
		{"nested param", event.KindDeposit, deposit, map[string]any{"params": map[string]any{"offer": map[string]any{"id": "7"}}}},
		{"params array", event.KindDeposit, deposit, map[string]any{"params": []any{"a"}}},
		{"params string", event.KindDeposit, deposit, map[string]any{"params": "a=b"}},
		{"unknown property", event.KindDeposit, deposit, map[string]any{"extra": "x"}},
		{"deposit with kind", event.KindDeposit, deposit, map[string]any{"kind": "trial"}},
		{"revenue with payment_method", event.KindRevenue, revenue, map[string]any{"payment_method": "card"}},
		{"registration with amount", event.KindRegistration, registration, map[string]any{"amount": "1"}},
		{"registration without kind", event.KindRegistration, registration, map[string]any{"kind": nil}},
		{"registration kind upper case", event.KindRegistration, registration, map[string]any{"kind": "Trial"}},
		{"qualification status of a deposit", event.KindQualification, qualification, map[string]any{"status": "succeeded"}},
		{"deposit status of a qualification", event.KindDeposit, deposit, map[string]any{"status": "approved"}},
		{"status with a space", event.KindDeposit, deposit, map[string]any{"status": "succeeded "}},
		{"negative deposit", event.KindDeposit, deposit, map[string]any{"amount": "-1"}},
		{"amount leading zero", event.KindDeposit, deposit, map[string]any{"amount": "01"}},
		{"amount trailing dot", event.KindDeposit, deposit, map[string]any{"amount": "1."}},
		{"amount leading dot", event.KindDeposit, deposit, map[string]any{"amount": ".5"}},
		{"amount plus", event.KindDeposit, deposit, map[string]any{"amount": "+1"}},
		{"amount exponent", event.KindDeposit, deposit, map[string]any{"amount": "1e3"}},
		{"amount space", event.KindDeposit, deposit, map[string]any{"amount": " 1"}},
		{"amount comma", event.KindDeposit, deposit, map[string]any{"amount": "1,5"}},
		{"amount two dots", event.KindDeposit, deposit, map[string]any{"amount": "1.2.3"}},
		{"amount empty", event.KindDeposit, deposit, map[string]any{"amount": ""}},
		{"amount Arabic-Indic digit", event.KindDeposit, deposit, map[string]any{"amount": "٣"}},
		{"amount over 40 characters", event.KindDeposit, deposit, map[string]any{"amount": "1234567890123456789012.123456789012345678"}},
		{"revenue double minus", event.KindRevenue, revenue, map[string]any{"amount": "--1"}},
		{"revenue lone minus", event.KindRevenue, revenue, map[string]any{"amount": "-"}},
		{"revenue minus leading zero", event.KindRevenue, revenue, map[string]any{"amount": "-01"}},
		{"currency lower case", event.KindDeposit, deposit, map[string]any{"currency": "eur"}},
		{"currency four letters", event.KindDeposit, deposit, map[string]any{"currency": "EURO"}},
		{"currency two letters", event.KindDeposit, deposit, map[string]any{"currency": "EU"}},
		{"currency accented", event.KindDeposit, deposit, map[string]any{"currency": "ÉUR"}},
		{"currency trailing newline", event.KindDeposit, deposit, map[string]any{"currency": "EUR\n"}},
		{"currency NUL", event.KindDeposit, deposit, map[string]any{"currency": "EU\x00"}},
		{"currency invalid UTF-8", event.KindDeposit, deposit, map[string]any{"currency": "EU\xff"}},
		{"offset hour 24", event.KindDeposit, deposit, map[string]any{"occurred_at": "2026-11-23T10:15:00+24:00"}},
		{"offset minute 60", event.KindDeposit, deposit, map[string]any{"occurred_at": "2026-11-23T10:15:00+23:60"}},
		{"hour 24", event.KindDeposit, deposit, map[string]any{"occurred_at": "2026-11-23T24:00:00Z"}},
		{"minute 60", event.KindDeposit, deposit, map[string]any{"occurred_at": "2026-11-23T10:60:00Z"}},
		{"leap second at midnight UTC", event.KindDeposit, deposit, map[string]any{"occurred_at": "2026-12-31T23:59:60Z"}},
		{"February 30", event.KindDeposit, deposit, map[string]any{"occurred_at": "2026-02-30T10:15:00Z"}},
		{"February 29 of a common year", event.KindDeposit, deposit, map[string]any{"occurred_at": "2026-02-29T10:15:00Z"}},
		{"month 13", event.KindDeposit, deposit, map[string]any{"occurred_at": "2026-13-01T10:15:00Z"}},
		{"month 00", event.KindDeposit, deposit, map[string]any{"occurred_at": "2026-00-01T10:15:00Z"}},
		{"day 00", event.KindDeposit, deposit, map[string]any{"occurred_at": "2026-11-00T10:15:00Z"}},
		{"one-digit hour", event.KindDeposit, deposit, map[string]any{"occurred_at": "2026-11-23T1:15:00Z"}},
		{"no offset", event.KindDeposit, deposit, map[string]any{"occurred_at": "2026-11-23T10:15:00"}},
		{"space for T", event.KindDeposit, deposit, map[string]any{"occurred_at": "2026-11-23 10:15:00Z"}},
		{"dot without digits", event.KindDeposit, deposit, map[string]any{"occurred_at": "2026-11-23T10:15:00.Z"}},
		{"comma fraction", event.KindDeposit, deposit, map[string]any{"occurred_at": "2026-11-23T10:15:00,5Z"}},
		{"no seconds", event.KindDeposit, deposit, map[string]any{"occurred_at": "2026-11-23T10:15Z"}},
		{"offset without colon", event.KindDeposit, deposit, map[string]any{"occurred_at": "2026-11-23T10:15:00+0200"}},
		{"offset without minutes", event.KindDeposit, deposit, map[string]any{"occurred_at": "2026-11-23T10:15:00+02"}},
		{"Z and offset", event.KindDeposit, deposit, map[string]any{"occurred_at": "2026-11-23T10:15:00Z+02:00"}},
		{"fullwidth digits", event.KindDeposit, deposit, map[string]any{"occurred_at": "２０２６-11-23T10:15:00Z"}},
		{"five-digit year", event.KindDeposit, deposit, map[string]any{"occurred_at": "12026-11-23T10:15:00Z"}},
		{"date only", event.KindDeposit, deposit, map[string]any{"occurred_at": "2026-11-23"}},
		{"occurred_at trailing newline", event.KindDeposit, deposit, map[string]any{"occurred_at": "2026-11-23T10:15:00Z\n"}},
	} {
		msgs = append(msgs, message{tc.name, tc.kind, with(t, tc.base, tc.fields)})
	}
	for _, tc := range []struct{ name, value string }{
		{"empty", ``},
		{"vertical tab", "\v"},
		{"object of nothing", `{}`},
		{"number", `25.5`},
		{"true", `true`},
		{"byte order mark", "\ufeff" + deposit},
		{"vertical tab before", "\v" + deposit},
		{"NUL after", deposit + "\x00"},
		{"garbage after", deposit + "x"},
		{"trailing comma", strings.TrimSuffix(deposit, "}") + ",}"},
		{"single quotes", strings.ReplaceAll(deposit, `"`, `'`)},
		{"null required", strings.Replace(deposit, `"player_id":"p-42"`, `"player_id":null`, 1)},
		{"null optional", strings.Replace(deposit, `"network":"scaleo"`, `"network":null`, 1)},
		{"null params", strings.Replace(deposit, `"params":{"custom2":"fb","offer_id":"7"}`, `"params":null`, 1)},
		{"null param value", strings.Replace(deposit, `"custom2":"fb"`, `"custom2":null`, 1)},
		{"raw tab in a string", strings.Replace(deposit, `"p-42"`, "\"p\t42\"", 1)},
		{"raw newline in a key", strings.Replace(deposit, `"custom2"`, "\"custom\n2\"", 1)},
		{"raw control character before an escape", strings.Replace(deposit, `"card"`, "\"\x10\\bcard\"", 1)},
		{"raw tab in a key before an escape", strings.Replace(deposit, `"custom2"`, "\"cu\tstom\\u0032\"", 1)},
		{"unknown escape", strings.Replace(deposit, `"p-42"`, `"p\x42"`, 1)},
		{"short unicode escape", strings.Replace(deposit, `"p-42"`, `"p\u42"`, 1)},
		{"non-hex unicode escape", strings.Replace(deposit, `"p-42"`, `"p\u00G2"`, 1)},
		{"lone surrogate currency", strings.Replace(deposit, `"EUR"`, `"\ud800"`, 1)},
		{"surrogate pair currency", strings.Replace(deposit, `"EUR"`, `"E\ud83d\ude00"`, 1)},
		{"high surrogate then escape", strings.Replace(deposit, `"EUR"`, `"\ud800\u0041AA"`, 1)},
		{"invalid UTF-8 currency", strings.Replace(deposit, `"EUR"`, "\"EU\xc3\"", 1)},
		{"later duplicate invalid", strings.Replace(deposit, `"currency":"EUR"`, `"currency":"EUR","currency":"eur"`, 1)},
		{"escaped duplicate invalid", strings.Replace(deposit, `"event_id":"dep-1"`, `"event_id":"dep-1","event\u005fid":""`, 1)},
		{"later duplicate params invalid", strings.Replace(deposit, `"params":{"custom2":"fb","offer_id":"7"}`, `"params":{},"params":7`, 1)},
		{"unknown nested deeply", strings.Replace(deposit, `{"event_id"`, `{"x":`+strings.Repeat("[", 400)+strings.Repeat("]", 400)+`,"event_id"`, 1)},
	} {
		msgs = append(msgs, message{tc.name, event.KindDeposit, []byte(tc.value)})
	}
	return msgs
}

// fastDeclinedValid are valid messages the fast path declines on purpose:
// to decode them as the slow path does would take subtle code for rare
// input.
func fastDeclinedValid(t testing.TB) []message {
	var msgs []message
	for _, tc := range []struct{ name, value string }{
		{"duplicate key", strings.Replace(deposit, `"status":"succeeded"`, `"status":"failed","status":"succeeded"`, 1)},
		{"earlier duplicate invalid", strings.Replace(deposit, `"currency":"EUR"`, `"currency":"eur","currency":"EUR"`, 1)},
		{"duplicate params", strings.Replace(deposit, `"params":{`, `"params":{"custom3":"x"},"params":{`, 1)},
		{"duplicate param name", strings.Replace(deposit, `"custom2":"fb"`, `"custom2":"fb","custom2":"ig"`, 1)},
		{"surrogate pair", strings.Replace(deposit, `"p-42"`, `"p-\ud83d\ude00"`, 1)},
		{"lone surrogate", strings.Replace(deposit, `"p-42"`, `"p-\udc00"`, 1)},
		{"invalid UTF-8 in an id", strings.Replace(deposit, `"p-42"`, "\"p-\xff\"", 1)},
		{"longer than 32 KiB", string(with(t, deposit, map[string]any{"params": func() map[string]any {
			m := params(20)
			for k := range m {
				m[k] = strings.Repeat("v", 2000)
			}
			return m
		}()}))},
	} {
		msgs = append(msgs, message{tc.name, event.KindDeposit, []byte(tc.value)})
	}
	return msgs
}

func TestDecodeFastTakesValidEvents(t *testing.T) {
	d := newDecoder(t)
	for _, m := range fastTaken(t) {
		t.Run(m.name, func(t *testing.T) {
			slow, err := d.DecodeSlow(m.kind, m.value)
			if err != nil {
				t.Fatalf("the slow path rejects a message meant to be valid: %v\n%s", err, m.value)
			}
			fast, ok := d.DecodeFast(m.kind, m.value)
			if !ok {
				t.Fatalf("the fast path declines\n%s", m.value)
			}
			if !reflect.DeepEqual(fast, slow) {
				t.Errorf("fast path\n%+v\nslow path\n%+v", fast, slow)
			}
			// Decode takes the fast path: the event is the same.
			if ev, err := d.Decode(m.kind, m.value); err != nil || !reflect.DeepEqual(ev, fast) {
				t.Errorf("Decode = %+v, %v; want %+v", ev, err, fast)
			}
		})
	}
}

func TestDecodeFastDeclinesInvalid(t *testing.T) {
	d := newDecoder(t)
	for _, m := range fastDeclinedInvalid(t) {
		t.Run(m.name, func(t *testing.T) {
			if ev, err := d.DecodeSlow(m.kind, m.value); err == nil {
				t.Fatalf("the slow path accepts a message meant to be invalid: %+v\n%q", ev, m.value)
			}
			if ev, ok := d.DecodeFast(m.kind, m.value); ok || ev != nil {
				t.Errorf("the fast path takes it: %+v, %v\n%q", ev, ok, m.value)
			}
		})
	}
}

func TestDecodeFastDeclinesOnPurpose(t *testing.T) {
	d := newDecoder(t)
	for _, m := range fastDeclinedValid(t) {
		t.Run(m.name, func(t *testing.T) {
			if _, err := d.DecodeSlow(m.kind, m.value); err != nil {
				t.Fatalf("the slow path rejects a message meant to be valid: %v\n%q", err, m.value)
			}
			if ev, ok := d.DecodeFast(m.kind, m.value); ok || ev != nil {
				t.Errorf("the fast path takes it: %+v, %v\n%q", ev, ok, m.value)
			}
			if _, err := d.Decode(m.kind, m.value); err != nil {
				t.Errorf("Decode: %v", err)
			}
		})
	}
	if ev, ok := d.DecodeFast("withdrawal", []byte(deposit)); ok || ev != nil {
		t.Errorf("the fast path takes an unknown kind: %+v, %v", ev, ok)
	}
}

// FuzzDecodeFast checks the fast path's contract: whatever it takes, the
// slow path accepts as the same event.
func FuzzDecodeFast(f *testing.F) {
	d := newDecoder(f)
	var seeds []message
	seeds = append(seeds, fastTaken(f)...)
	seeds = append(seeds, fastDeclinedInvalid(f)...)
	seeds = append(seeds, fastDeclinedValid(f)...)
	seeds = append(seeds, message{value: []byte(hugeAmount)})
	for _, edge := range edgeDepositChanges {
		seeds = append(seeds, message{value: with(f, deposit, edge)})
	}
	for _, m := range seeds {
		for k := range event.Kinds {
			f.Add(uint8(k), m.value)
		}
	}
	f.Fuzz(func(t *testing.T, k uint8, value []byte) {
		kind := event.Kinds[int(k)%len(event.Kinds)]
		fast, ok := d.DecodeFast(kind, value)
		if !ok {
			if fast != nil {
				t.Fatalf("the fast path declines with an event: %+v", fast)
			}
			return
		}
		slow, err := d.DecodeSlow(kind, value)
		if err != nil {
			t.Fatalf("the fast path takes what the slow path rejects: %v\n%q", err, value)
		}
		if !reflect.DeepEqual(fast, slow) {
			t.Fatalf("fast path\n%+v\nslow path\n%+v\n%q", fast, slow, value)
		}
	})
}

func BenchmarkDecodeDepositSlowPath(b *testing.B) {
	d := newDecoder(b)
	value := []byte(deposit)
	b.ReportAllocs()
	b.SetBytes(int64(len(value)))
	for b.Loop() {
		if _, err := d.DecodeSlow(event.KindDeposit, value); err != nil {
			b.Fatal(err)
		}
	}
}
