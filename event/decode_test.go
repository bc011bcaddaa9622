package event_test

import (
	"encoding/json"
	"errors"
	"io/fs"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/postbackd/postbackd/event"
	"github.com/postbackd/postbackd/schemas"
)

func newDecoder(t testing.TB) *event.Decoder {
	t.Helper()
	d, err := event.NewDecoder()
	if err != nil {
		t.Fatalf("NewDecoder: %v", err)
	}
	return d
}

// examples returns the examples of a schema file, re-marshalled one by one.
func examples(t testing.TB, kind event.Kind) [][]byte {
	t.Helper()
	data, err := fs.ReadFile(schemas.FS, schemas.File(string(kind)))
	if err != nil {
		t.Fatal(err)
	}
	var sch struct{ Examples []json.RawMessage }
	if err := json.Unmarshal(data, &sch); err != nil {
		t.Fatal(err)
	}
	out := make([][]byte, len(sch.Examples))
	for i, ex := range sch.Examples {
		out[i] = ex
	}
	return out
}

const deposit = `{"event_id":"dep-1","occurred_at":"2026-11-23T12:15:00.250+02:00","merchant_id":"casino-eu",` +
	`"click_id":"cl-1","network":"scaleo","params":{"custom2":"fb","offer_id":"7"},` +
	`"amount":"25.50","currency":"EUR","status":"succeeded","player_id":"p-42","payment_method":"card"}`

// with returns the deposit above with fields replaced (or removed when the
// value is nil).
func with(t testing.TB, base string, fields map[string]any) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(base), &m); err != nil {
		t.Fatal(err)
	}
	for k, v := range fields {
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
	}
	data, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// typedAt is the occurred_at of every typedCases message.
var typedAt = time.Date(2026, 11, 23, 10, 15, 0, 250_000_000, time.UTC)

type typedCase struct {
	kind  event.Kind
	value string
	want  event.Event
}

// typedCases are a message of each kind and the event it decodes to.
func typedCases() []typedCase {
	env := func(id, click, network string, params map[string]string) event.Envelope {
		return event.Envelope{EventID: id, OccurredAt: typedAt, MerchantID: "casino-eu", ClickID: click, Network: network, Params: params}
	}
	return []typedCase{
		{event.KindDeposit, deposit, &event.Deposit{
			Envelope: env("dep-1", "cl-1", "scaleo", map[string]string{"custom2": "fb", "offer_id": "7"}),
			Amount:   decimal.RequireFromString("25.50"), Currency: "EUR", Status: event.DepositSucceeded,
			PlayerID: "p-42", PaymentMethod: "card",
		}},
		{event.KindRevenue, `{"event_id":"rev-1","occurred_at":"2026-11-23T10:15:00.25Z","merchant_id":"casino-eu","click_id":"cl-2","amount":"-12.40","currency":"BRL","player_id":"p-1"}`,
			&event.Revenue{Envelope: env("rev-1", "cl-2", "", nil), Amount: decimal.RequireFromString("-12.4"), Currency: "BRL", PlayerID: "p-1"}},
		{event.KindRegistration, `{"event_id":"reg-1","occurred_at":"2026-11-23T10:15:00.250Z","merchant_id":"casino-eu","click_id":"cl-3","network":"cams","params":{"tracker":"trID_1_a-b_trID"},"kind":"trial"}`,
			&event.Registration{Envelope: env("reg-1", "cl-3", "cams", map[string]string{"tracker": "trID_1_a-b_trID"}), Kind: event.RegistrationTrial}},
		{event.KindQualification, `{"event_id":"q-1","occurred_at":"2026-11-23T05:15:00.25-05:00","merchant_id":"casino-eu","click_id":"cl-4","status":"rejected","reason":"bonus abuse"}`,
			&event.Qualification{Envelope: env("q-1", "cl-4", "", nil), Status: event.QualificationRejected, Reason: "bonus abuse"}},
	}
}

func TestDecodeFillsTypedValues(t *testing.T) {
	d := newDecoder(t)
	for _, tt := range typedCases() {
		t.Run(string(tt.kind), func(t *testing.T) {
			got, err := d.Decode(tt.kind, []byte(tt.value))
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if got.EventKind() != tt.kind {
				t.Errorf("EventKind = %s", got.EventKind())
			}
			if !got.Common().OccurredAt.Equal(typedAt) {
				t.Errorf("OccurredAt = %v, want %v", got.Common().OccurredAt, typedAt)
			}
			// Times compare by instant; the rest field by field.
			got.Common().OccurredAt = typedAt
			if !equalEvents(got, tt.want) {
				t.Errorf("Decode =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

// equalEvents compares events, decimals by value.
func equalEvents(a, b event.Event) bool {
	amount := func(e event.Event) (decimal.Decimal, bool) {
		switch v := e.(type) {
		case *event.Deposit:
			return v.Amount, true
		case *event.Revenue:
			return v.Amount, true
		}
		return decimal.Decimal{}, false
	}
	da, okA := amount(a)
	db, okB := amount(b)
	if okA != okB || (okA && !da.Equal(db)) {
		return false
	}
	clear := func(e event.Event) event.Event {
		switch v := e.(type) {
		case *event.Deposit:
			c := *v
			c.Amount = decimal.Zero
			return &c
		case *event.Revenue:
			c := *v
			c.Amount = decimal.Zero
			return &c
		}
		return e
	}
	return reflect.DeepEqual(clear(a), clear(b))
}

// revenueWithoutAmount takes the amounts of TestDecodeKeepsDecimalPrecision.
const revenueWithoutAmount = `{"event_id":"r","occurred_at":"2026-11-23T10:15:00Z","merchant_id":"m","click_id":"c","currency":"EUR"}`

// exactAmounts are amounts that decode to the decimal they spell.
var exactAmounts = []string{"1000000000.000000001", "-0.000000000000000001", "123456789012345678901234567890.5", "0"}

func TestDecodeKeepsDecimalPrecision(t *testing.T) {
	d := newDecoder(t)
	amount := func(s string) decimal.Decimal {
		t.Helper()
		e, err := d.Decode(event.KindRevenue, with(t, revenueWithoutAmount, map[string]any{"amount": s}))
		if err != nil {
			t.Fatalf("Decode(%s): %v", s, err)
		}
		return e.(*event.Revenue).Amount
	}
	if sum := amount("0.1").Add(amount("0.2")); !sum.Equal(decimal.RequireFromString("0.3")) {
		t.Errorf("0.1 + 0.2 = %s, want exactly 0.3", sum)
	}
	for _, s := range exactAmounts {
		if got := amount(s).String(); got != s {
			t.Errorf("amount %s round-trips as %s", s, got)
		}
	}
	// Trailing zeros are kept as precision: the value is exact either way.
	if got := amount("25.50"); got.StringFixed(2) != "25.50" || !got.Equal(decimal.RequireFromString("25.5")) {
		t.Errorf("25.50 decoded as %s", got)
	}
}

type rejectCase struct {
	name   string
	kind   event.Kind
	value  []byte
	reason string
	detail string // substring
}

// rejectCases are invalid messages and the error Decode gives them.
func rejectCases(t testing.TB) []rejectCase {
	return []rejectCase{
		{"tombstone", event.KindDeposit, nil, event.ReasonUndecodable, "tombstone"},
		{"blank", event.KindDeposit, []byte(" \n"), event.ReasonUndecodable, "tombstone"},
		{"not json", event.KindDeposit, []byte("dep-1,25.50,EUR"), event.ReasonUndecodable, "not JSON"},
		{"truncated", event.KindDeposit, []byte(deposit[:40]), event.ReasonUndecodable, "not JSON"},
		{"two values", event.KindDeposit, []byte(deposit + deposit), event.ReasonUndecodable, "not JSON"},
		{"array", event.KindDeposit, []byte(`[` + deposit + `]`), event.ReasonUndecodable, "got array"},
		{"string", event.KindDeposit, []byte(`"dep-1"`), event.ReasonUndecodable, "got string"},
		{"null", event.KindDeposit, []byte(`null`), event.ReasonUndecodable, "got null"},
		{"float amount", event.KindDeposit, with(t, deposit, map[string]any{"amount": 12.5}), event.ReasonSchema, "/amount: got number, want string"},
		{"missing player", event.KindDeposit, with(t, deposit, map[string]any{"player_id": nil}), event.ReasonSchema, "/player_id: required"},
		{"unknown status", event.KindDeposit, with(t, deposit, map[string]any{"status": "refunded"}), event.ReasonSchema, "/status: must be one of"},
		{"kind mismatch", event.KindQualification, []byte(deposit), event.ReasonSchema, "/amount: property not allowed"},
		{"lower-case t and z", event.KindDeposit, with(t, deposit, map[string]any{"occurred_at": "2026-11-23t10:15:00z"}), event.ReasonSchema, "/occurred_at: does not match pattern"},
		{"leap second", event.KindDeposit, with(t, deposit, map[string]any{"occurred_at": "2026-12-31T23:59:60Z"}), event.ReasonSchema, "/occurred_at:"},
		{"unknown currency", event.KindDeposit, with(t, deposit, map[string]any{"currency": "XYZ"}), event.ReasonCurrency, `/currency: "XYZ" is not an ISO 4217`},
		{"unknown revenue currency", event.KindRevenue, with(t, examplesString(t, event.KindRevenue), map[string]any{"currency": "ABC"}), event.ReasonCurrency, "/currency"},
		{"succeeded zero", event.KindDeposit, with(t, deposit, map[string]any{"amount": "0"}), event.ReasonAmount, "/amount: a succeeded deposit must be greater than zero"},
		{"succeeded zero with fraction", event.KindDeposit, with(t, deposit, map[string]any{"amount": "0.000"}), event.ReasonAmount, "greater than zero"},
		{"scale too large", event.KindDeposit, with(t, deposit, map[string]any{"amount": "1.0000000000000000001"}), event.ReasonAmount, "19 fractional digits exceed the maximum 18"},
		{"revenue scale too large", event.KindRevenue, with(t, examplesString(t, event.KindRevenue), map[string]any{"amount": "-0.0000000000000000001"}), event.ReasonAmount, "/amount"},
	}
}

func TestDecodeRejects(t *testing.T) {
	d := newDecoder(t)
	for _, tt := range rejectCases(t) {
		t.Run(tt.name, func(t *testing.T) {
			ev, err := d.Decode(tt.kind, tt.value)
			var ie *event.InvalidError
			if !errors.As(err, &ie) {
				t.Fatalf("Decode = %v, %v; want *InvalidError", ev, err)
			}
			if ev != nil {
				t.Errorf("Decode returned an event with its error: %+v", ev)
			}
			if ie.Reason != tt.reason || !strings.Contains(ie.Detail, tt.detail) {
				t.Errorf("error %q, want reason %s and detail containing %q", err, tt.reason, tt.detail)
			}
			if err.Error() != ie.Reason+": "+ie.Detail {
				t.Errorf("Error() = %q", err.Error())
			}
			if strings.ContainsAny(ie.Detail, "\n\r") || len(ie.Detail) > 512 {
				t.Errorf("detail is not one bounded line: %q", ie.Detail)
			}
		})
	}
}

func examplesString(t testing.TB, kind event.Kind) string { return string(examples(t, kind)[0]) }

func TestInvalidErrorNamesEventAndClick(t *testing.T) {
	d := newDecoder(t)
	_, err := d.Decode(event.KindDeposit, with(t, deposit, map[string]any{"amount": 12.5}))
	var ie *event.InvalidError
	if !errors.As(err, &ie) || ie.EventID != "dep-1" || ie.ClickID != "cl-1" {
		t.Errorf("Decode = %#v, want EventID dep-1 and ClickID cl-1", err)
	}
	_, err = d.Decode(event.KindDeposit, with(t, deposit, map[string]any{"click_id": 7, "event_id": strings.Repeat("e", 129)}))
	if !errors.As(err, &ie) || ie.EventID != "" || ie.ClickID != "" {
		t.Errorf("Decode = %#v, want no unusable EventID or ClickID", err)
	}
}

// acceptedDepositChanges make valid deposits of the deposit above.
var acceptedDepositChanges = []struct {
	name   string
	fields map[string]any
}{
	{"failed deposit of zero", map[string]any{"status": "failed", "amount": "0"}},
	{"pending deposit of zero", map[string]any{"status": "pending", "amount": "0.00"}},
	{"yen", map[string]any{"currency": "JPY", "amount": "1500"}},
	{"smallest positive", map[string]any{"amount": "0.000000000000000001"}},
}

func TestDecodeAccepts(t *testing.T) {
	d := newDecoder(t)
	for _, tt := range acceptedDepositChanges {
		if _, err := d.Decode(event.KindDeposit, with(t, deposit, tt.fields)); err != nil {
			t.Errorf("%s: %v", tt.name, err)
		}
	}
	for _, kind := range event.Kinds {
		for i, ex := range examples(t, kind) {
			if _, err := d.Decode(kind, ex); err != nil {
				t.Errorf("%s example %d: %v", kind, i, err)
			}
		}
	}
}

func TestDecodeUnknownKind(t *testing.T) {
	d := newDecoder(t)
	_, err := d.Decode("withdrawal", []byte(deposit))
	var ie *event.InvalidError
	if !errors.Is(err, event.ErrUnknownKind) || errors.As(err, &ie) {
		t.Errorf("Decode(withdrawal) = %v, want ErrUnknownKind and no *InvalidError", err)
	}
}

func TestDecodeConcurrently(t *testing.T) {
	d := newDecoder(t)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			for range 200 {
				if _, err := d.Decode(event.KindDeposit, []byte(deposit)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestMinorUnits(t *testing.T) {
	tests := []struct {
		code   string
		digits int
		ok     bool
	}{
		{"EUR", 2, true}, {"JPY", 0, true}, {"KWD", 3, true}, {"XYZ", 0, false}, {"", 0, false}, {"eur", 0, false},
	}
	for _, tt := range tests {
		if d, ok := event.MinorUnits(tt.code); d != tt.digits || ok != tt.ok {
			t.Errorf("MinorUnits(%q) = %d, %v; want %d, %v", tt.code, d, ok, tt.digits, tt.ok)
		}
	}
}

// hugeAmount and edgeDepositChanges seed FuzzDecode with edge cases.
const hugeAmount = `{"amount":1e400}`

var edgeDepositChanges = []map[string]any{
	{"occurred_at": "0000-01-01T00:00:00.123456789123-23:59"},
	{"occurred_at": "9999-12-31T23:59:60+00:00"},
	{"amount": "-0", "status": "failed"},
	{"params": map[string]any{"\u00e9\n": "\xff", "a/b": ""}},
	{"network": "", "payment_method": ""},
}

// FuzzDecode feeds any bytes as any kind. Decode must not panic, must
// return exactly one of an event or an error, and an accepted event must
// marshal back into a document its schema accepts.
func FuzzDecode(f *testing.F) {
	d := newDecoder(f)
	set, err := schemas.Compile()
	if err != nil {
		f.Fatal(err)
	}
	for i, kind := range event.Kinds {
		for _, ex := range examples(f, kind) {
			f.Add(uint8(i), ex)
		}
	}
	f.Add(uint8(0), []byte(deposit))
	f.Add(uint8(0), []byte(hugeAmount))
	for _, edge := range edgeDepositChanges {
		f.Add(uint8(0), with(f, deposit, edge))
	}
	f.Fuzz(func(t *testing.T, k uint8, value []byte) {
		kind := event.Kinds[int(k)%len(event.Kinds)]
		ev, err := d.Decode(kind, value)
		if err != nil {
			var ie *event.InvalidError
			if ev != nil || !errors.As(err, &ie) {
				t.Fatalf("Decode = %v, %v; want nil and *InvalidError", ev, err)
			}
			if strings.ContainsAny(ie.Detail, "\n\r") || len(ie.Detail) > 512 {
				t.Fatalf("detail is not one bounded line: %q", ie.Detail)
			}
			return
		}
		if ev.EventKind() != kind {
			t.Fatalf("EventKind = %s, want %s", ev.EventKind(), kind)
		}
		data, err := json.Marshal(ev)
		if err != nil {
			t.Fatalf("marshal accepted event: %v", err)
		}
		if err := set.ValidateJSON(string(kind), data); err != nil {
			t.Fatalf("accepted event re-marshals invalid: %v\ninput: %q\noutput: %s", err, value, data)
		}
		again, err := d.Decode(kind, data)
		if err != nil {
			t.Fatalf("accepted event does not decode again: %v\n%s", err, data)
		}
		if !again.Common().OccurredAt.Equal(ev.Common().OccurredAt) {
			t.Fatalf("occurred_at changed: %v -> %v", ev.Common().OccurredAt, again.Common().OccurredAt)
		}
	})
}

func BenchmarkDecodeDeposit(b *testing.B) {
	d := newDecoder(b)
	value := []byte(deposit)
	b.ReportAllocs()
	b.SetBytes(int64(len(value)))
	for b.Loop() {
		if _, err := d.Decode(event.KindDeposit, value); err != nil {
			b.Fatal(err)
		}
	}
}
