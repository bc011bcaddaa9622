package record

import (
	"bytes"
	"encoding"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/postbackd/postbackd/event"
)

// checkAppendJSON fails unless r.AppendJSON writes exactly json.Marshal(r),
// both into an empty buffer and after existing bytes, which it must keep.
func checkAppendJSON(t *testing.T, r interface{ AppendJSON([]byte) []byte }) {
	t.Helper()
	want, err := json.Marshal(r)
	if err != nil {
		t.Fatalf("json.Marshal: %v", err)
	}
	if got := r.AppendJSON(nil); !bytes.Equal(got, want) {
		t.Fatalf("AppendJSON differs from json.Marshal\n got: %s\nwant: %s", got, want)
	}
	prefix := []byte("prefix:")
	if got := r.AppendJSON(prefix); !bytes.Equal(got, append(prefix, want...)) {
		t.Fatalf("AppendJSON after a prefix\n got: %s\nwant: prefix:%s", got, want)
	}
}

func ptr[T any](v T) *T { return &v }

// awkward holds strings that need every kind of escaping encoding/json does,
// and some that need none.
var awkward = []string{
	"",
	"plain-ascii_0123456789",
	`quote " and backslash \`,
	"\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f",
	"\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f\x7f",
	"\b\f\n\r\t",
	"<script>alert('x')</script> & more",
	"line\u2028sep\u2029para",
	"\u2027\u202a", // neighbours of the separators: not escaped
	"invalid \xff byte",
	"truncated \xe2\x80 sequence",
	"surrogate \xed\xa0\x80 encoded",
	"overlong \xc0\x80 NUL",
	"\x80\x80\x80",
	"multi-byte é, ß, €, 日本語, 🎰",
	"ends with a lone lead byte \xf0",
	"https://t.example.com/c?a=1&b=<2>&c=\"3\"",
}

func TestAuditAppendJSONCases(t *testing.T) {
	utc := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	nanos := time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.UTC)
	micros := time.Date(2026, 1, 2, 3, 4, 5, 120000000, time.FixedZone("CET", 3600))
	india := time.Date(1999, 12, 31, 23, 59, 59, 1, time.FixedZone("IST", 5*3600+1800))
	west := time.Date(2000, 2, 29, 0, 0, 0, 500, time.FixedZone("", -8*3600-30*60))
	oddOffset := time.Date(2020, 6, 1, 0, 0, 0, 0, time.FixedZone("LMT", -(3600+1800+17)))
	zeroOffset := time.Date(2020, 6, 1, 0, 0, 0, 0, time.FixedZone("GMT", 0))
	maxOffset := time.Date(2020, 6, 1, 0, 0, 0, 0, time.FixedZone("", 23*3600+59*60))
	year0 := time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC)
	year9999 := time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC)
	local := time.Unix(1700000000, 42).Local() // with a monotonic-free local zone

	full := Audit{
		SchemaVersion: SchemaVersion,
		PostbackID:    "pb-1",
		EventID:       "ev-1",
		EventKind:     event.KindDeposit,
		Source:        event.Source{Topic: "payments.deposits", Partition: 3, Offset: 1234567},
		MerchantID:    "casino-1",
		ClickID:       "click-1",
		Network:       "scaleo",
		Route:         "click",
		ClickNetwork:  "other",
		Goal:          "ftd",
		Status:        "pending",
		Amount:        "25.50",
		Currency:      "EUR",
		URL:           "https://tracker.example.com/conv?click_id=click-1&token=[REDACTED]",
		Params:        map[string]string{"z": "last", "a": "first", "m": "middle", "A": "upper", "": "empty key", "aa": "", "é": "non-ascii key", "<&>": "html key"},
		Outcome:       OutcomeDelivered,
		Reason:        "deposit_not_succeeded",
		HTTPStatus:    200,
		Attempts:      2,
		Error:         "503 Service Unavailable",
		Replayed:      true,
		OccurredAt:    &utc,
		FirstAttempt:  &nanos,
		LastAttempt:   &india,
		LatencyMillis: 45,
		NextAttemptAt: &west,
		RecordedAt:    micros,
	}

	cases := map[string]Audit{
		"zero": {},
		"full": full,
		"minimal skipped": {
			SchemaVersion: 1, EventID: "ev", EventKind: event.KindQualification,
			Outcome: OutcomeSkipped, Reason: "goal_not_configured", RecordedAt: utc,
		},
		"empty non-nil params":   {Params: map[string]string{}},
		"one param":              {Params: map[string]string{"k": "v"}},
		"negative ints":          {SchemaVersion: -1, Source: event.Source{Partition: -2, Offset: -1 << 63}, HTTPStatus: -500, Attempts: -3, LatencyMillis: -1},
		"extreme ints":           {SchemaVersion: 1<<63 - 1, Source: event.Source{Partition: -1 << 63, Offset: 1<<63 - 1}, HTTPStatus: 1<<63 - 1, Attempts: -1 << 63, LatencyMillis: -1 << 63},
		"pointers to zero times": {OccurredAt: &time.Time{}, FirstAttempt: &time.Time{}, LastAttempt: &time.Time{}, NextAttemptAt: &time.Time{}},
		"only next attempt":      {Outcome: OutcomeFailed, NextAttemptAt: &oddOffset, RecordedAt: zeroOffset},
		"year bounds":            {OccurredAt: &year0, RecordedAt: year9999},
		"max offset":             {LastAttempt: &maxOffset, RecordedAt: maxOffset},
		"local zone":             {RecordedAt: local},
		"monotonic clock":        {RecordedAt: time.Now(), OccurredAt: ptr(time.Now())},
		"unknown kind and outcome": {
			EventKind: "not<a>kind", Outcome: "what&ever", Source: event.Source{Topic: "t\"opic"},
		},
	}
	// Each awkward string in every string field, map keys and values
	// included, with the other fields empty and with them full.
	for i, s := range awkward {
		for _, base := range []Audit{{}, full} {
			a := base
			a.PostbackID, a.EventID, a.EventKind, a.Source.Topic = s, s, event.Kind(s), s
			a.MerchantID, a.ClickID, a.Network, a.Route, a.ClickNetwork = s, s, s, s, s
			a.Goal, a.Status, a.Amount, a.Currency, a.URL = s, s, s, s, s
			a.Outcome, a.Reason, a.Error = Outcome(s), s, s
			a.Params = map[string]string{s: s, s + "\x00": "x", "\x00" + s: s + s, "k": s}
			cases[fmt.Sprintf("awkward %d over %q", i, base.EventID)] = a
		}
	}
	// Each optional field alone, so that every comma placement is seen.
	v := reflect.ValueOf(full)
	for i := 0; i < v.NumField(); i++ {
		var a Audit
		reflect.ValueOf(&a).Elem().Field(i).Set(v.Field(i))
		cases["only "+v.Type().Field(i).Name] = a
		// And every field but this one.
		b := full
		reflect.ValueOf(&b).Elem().Field(i).Set(reflect.Zero(v.Field(i).Type()))
		cases["all but "+v.Type().Field(i).Name] = b
	}

	for name, a := range cases {
		t.Run(name, func(t *testing.T) { checkAppendJSON(t, &a) })
	}
	t.Run("nil", func(t *testing.T) { checkAppendJSON(t, (*Audit)(nil)) })
}

func TestConfirmationAppendJSONCases(t *testing.T) {
	full := Confirmation{
		SchemaVersion:        SchemaVersion,
		ClickID:              "click-1",
		MerchantID:           "casino-1",
		Network:              "scaleo",
		Status:               "approved",
		FTDEventID:           "dep-1",
		QualificationEventID: "q-1",
		Amount:               "25.50",
		Currency:             "EUR",
		PostbackID:           "pb-1",
		ConfirmedAt:          time.Date(2026, 1, 2, 3, 4, 5, 6, time.FixedZone("", -5*3600)),
		Replayed:             true,
	}
	cases := map[string]Confirmation{
		"zero":        {},
		"full":        full,
		"not replayd": func() Confirmation { c := full; c.Replayed = false; return c }(),
	}
	for i, s := range awkward {
		c := full
		c.ClickID, c.MerchantID, c.Network, c.Status, c.FTDEventID = s, s, s, s, s
		c.QualificationEventID, c.Amount, c.Currency, c.PostbackID = s, s, s, s
		cases[fmt.Sprintf("awkward %d", i)] = c
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) { checkAppendJSON(t, &c) })
	}
	t.Run("nil", func(t *testing.T) { checkAppendJSON(t, (*Confirmation)(nil)) })
}

// TestAppendJSONAllFields sets every field of each record to a non-zero
// value by reflection: a field added to a record but not to its encoder
// fails here, and a field of a type fill does not know fails asking for
// both to be taught.
func TestAppendJSONAllFields(t *testing.T) {
	at := time.Date(2026, 3, 4, 5, 6, 7, 8, time.FixedZone("", 7200))
	var a Audit
	fill(t, reflect.ValueOf(&a).Elem(), at, "<%s>")
	checkAppendJSON(t, &a)
	var c Confirmation
	fill(t, reflect.ValueOf(&c).Elem(), at, "<%s>")
	checkAppendJSON(t, &c)
}

// fill sets every field of the struct v: times from at, strings to their
// field's name formatted by strf, integers negative, flags true, maps to two
// entries.
func fill(t *testing.T, v reflect.Value, at time.Time, strf string) {
	t.Helper()
	timeType := reflect.TypeFor[time.Time]()
	for i := 0; i < v.NumField(); i++ {
		f, sf := v.Field(i), v.Type().Field(i)
		switch {
		case f.Type() == timeType:
			f.Set(reflect.ValueOf(at.Add(time.Duration(i) * time.Hour)))
		case f.Type() == reflect.PointerTo(timeType):
			f.Set(reflect.ValueOf(ptr(at.Add(time.Duration(i) * time.Minute))))
		case f.Kind() == reflect.String:
			f.SetString(fmt.Sprintf(strf, sf.Name))
		case f.Kind() == reflect.Int || f.Kind() == reflect.Int64:
			f.SetInt(-int64(i) - 1)
		case f.Kind() == reflect.Bool:
			f.SetBool(true)
		case f.Type() == reflect.TypeFor[map[string]string]():
			f.Set(reflect.ValueOf(map[string]string{"b" + sf.Name: "2", "a": "1"}))
		case f.Kind() == reflect.Struct:
			fill(t, f, at, strf)
		default:
			t.Fatalf("field %s of type %s: teach fill and AppendJSON about it", sf.Name, f.Type())
		}
	}
}

// TestNoCustomMarshalers: the encoders write the types below as encoding/json
// writes a plain string, int or struct, which stops being true if one of
// them gains a MarshalJSON or MarshalText method.
func TestNoCustomMarshalers(t *testing.T) {
	for _, typ := range []reflect.Type{
		reflect.TypeFor[Audit](), reflect.TypeFor[Confirmation](),
		reflect.TypeFor[Outcome](), reflect.TypeFor[event.Kind](), reflect.TypeFor[event.Source](),
	} {
		for _, typ := range []reflect.Type{typ, reflect.PointerTo(typ)} {
			if typ.Implements(reflect.TypeFor[json.Marshaler]()) || typ.Implements(reflect.TypeFor[encoding.TextMarshaler]()) {
				t.Errorf("%s has a custom JSON or text encoding: mirror it in json.go's AppendJSON", typ)
			}
		}
	}
}

// TestAppendJSONUnencodableTime: for a time time.Time.MarshalJSON refuses,
// json.Marshal fails, and AppendJSON panics with its error as documented.
func TestAppendJSONUnencodableTime(t *testing.T) {
	bad := map[string]time.Time{
		"year 10000":       time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		"year -1":          time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC),
		"offset 24h":       time.Date(2026, 1, 1, 0, 0, 0, 0, time.FixedZone("", 24*3600)),
		"offset -24h":      time.Date(2026, 1, 1, 0, 0, 0, 0, time.FixedZone("", -24*3600)),
		"offset 100h":      time.Date(2026, 1, 1, 0, 0, 0, 0, time.FixedZone("", 100*3600)),
		"year 9999 in +1h": time.Date(9999, 12, 31, 23, 59, 0, 0, time.UTC).In(time.FixedZone("", 3600)),
	}
	for name, tm := range bad {
		t.Run(name, func(t *testing.T) {
			for field, a := range map[string]Audit{
				"recorded_at":     {RecordedAt: tm},
				"occurred_at":     {OccurredAt: &tm},
				"next_attempt_at": {NextAttemptAt: &tm},
			} {
				wantPanic(t, field, func() { a.AppendJSON(nil) }, func() error { _, err := json.Marshal(&a); return err })
			}
			c := Confirmation{ConfirmedAt: tm}
			wantPanic(t, "confirmed_at", func() { c.AppendJSON(nil) }, func() error { _, err := json.Marshal(&c); return err })
		})
	}
}

// wantPanic fails unless marshal fails and encode panics naming its error.
func wantPanic(t *testing.T, what string, encode func(), marshal func() error) {
	t.Helper()
	err := marshal()
	if err == nil {
		t.Fatalf("%s: json.Marshal succeeded: the case no longer tests the fallback", what)
	}
	defer func() {
		t.Helper()
		r := recover()
		if r == nil {
			t.Fatalf("%s: AppendJSON did not panic; json.Marshal failed: %v", what, err)
		}
		if msg := fmt.Sprint(r); !strings.Contains(msg, err.Error()) {
			t.Fatalf("%s: AppendJSON panicked with %q, want json.Marshal's error %q", what, msg, err)
		}
	}()
	encode()
}

// realisticAudit is a delivered postback as the pipeline records it.
func realisticAudit() *Audit {
	occurred := time.Date(2026, 11, 24, 12, 0, 0, 123000000, time.UTC)
	first, last := occurred.Add(40*time.Millisecond), occurred.Add(85*time.Millisecond+417*time.Microsecond)
	return &Audit{
		SchemaVersion: SchemaVersion,
		PostbackID:    "3f9a1c2e7b5d4e60a1b2c3d4e5f607183f9a1c2e7b5d4e60a1b2c3d4e5f60718",
		EventID:       "5b0e6a2c-8d1f-4a7e-9c3b-2f6d8e1a4b7c",
		EventKind:     event.KindDeposit,
		Source:        event.Source{Topic: "payments.deposits", Partition: 3, Offset: 1234567},
		MerchantID:    "casino-1",
		ClickID:       "click-0012345",
		Network:       "scaleo",
		Route:         "click",
		Goal:          "ftd",
		Status:        "pending",
		Amount:        "25.50",
		Currency:      "EUR",
		URL:           "https://tracker.example.com/track/conv?click_id=click-0012345&amount=25.50&currency=EUR&goal_alias=ftd&conv_status=pending&token=[REDACTED]&transaction_id=3f9a1c2e7b5d4e60",
		Params:        map[string]string{"offer_id": "o-17", "sub_id": "aff1-tx9-c77"},
		Outcome:       OutcomeDelivered,
		HTTPStatus:    200,
		Attempts:      1,
		OccurredAt:    &occurred,
		FirstAttempt:  &first,
		LastAttempt:   &last,
		LatencyMillis: 45,
		RecordedAt:    last.Add(time.Millisecond),
	}
}

// TestAuditAppendJSONAllocs: sizeHint is large enough that encoding into an
// empty buffer allocates once, even with every field at its longest
// unescaped form, and a reused buffer does not allocate at all.
func TestAuditAppendJSONAllocs(t *testing.T) {
	a := realisticAudit()
	checkAppendJSON(t, a)
	if n := testing.AllocsPerRun(100, func() { a.AppendJSON(nil) }); n != 1 {
		t.Errorf("AppendJSON(nil) of a realistic record: %v allocations, want 1", n)
	}
	buf := a.AppendJSON(nil)
	if n := testing.AllocsPerRun(100, func() { buf = a.AppendJSON(buf[:0]) }); n != 0 {
		t.Errorf("AppendJSON into a reused buffer: %v allocations, want 0", n)
	}

	// Longest times, integers and a flag: the hint must cover what
	// does not depend on string lengths.
	long := time.Date(2026, 12, 31, 23, 59, 59, 123456789, time.FixedZone("", -(23*3600+59*60)))
	var big Audit
	fill(t, reflect.ValueOf(&big).Elem(), long, "%s")
	big.SchemaVersion, big.Source.Partition, big.Source.Offset = -1<<63, -1<<63, -1<<63
	big.HTTPStatus, big.Attempts, big.LatencyMillis = -1<<63, -1<<63, -1<<63
	for _, p := range []**time.Time{&big.OccurredAt, &big.FirstAttempt, &big.LastAttempt, &big.NextAttemptAt} {
		*p = &long
	}
	big.RecordedAt = long
	if got, hint := len(big.AppendJSON(nil)), big.sizeHint(); got > hint {
		t.Errorf("Audit encoding is %d bytes, sizeHint says %d", got, hint)
	}
	var c Confirmation
	fill(t, reflect.ValueOf(&c).Elem(), long, "%s")
	c.SchemaVersion = -1 << 63
	if n := testing.AllocsPerRun(100, func() { c.AppendJSON(nil) }); n != 1 {
		t.Errorf("Confirmation.AppendJSON(nil): %v allocations, want 1", n)
	}
}

// FuzzAuditAppendJSON compares Audit.AppendJSON (and Confirmation's) with
// json.Marshal on records built from fuzzed strings, integers and times.
// mask chooses, two bits per string field, which of "", s1, s2, s3 it
// holds, and which optional fields are set.
func FuzzAuditAppendJSON(f *testing.F) {
	f.Add("pb-1", "https://t.example.com/?a=1&b=2", "ev-1", int64(1), int64(1234567), int64(1732449600), int64(123456789), int32(0), ^uint64(0))
	f.Add("<\u2028>", "\xff\x00\"\\", "é🎰", int64(-1), int64(-200), int64(0), int64(0), int32(19800), uint64(0x5555555555555555))
	f.Add("", "", "", int64(0), int64(0), int64(0), int64(0), int32(0), uint64(0))
	f.Add("a", "b", "c", int64(1<<62), int64(-1<<62), int64(253402300800), int64(1), int32(-3600), uint64(0xaaaaaaaaaaaaaaaa))                        // year 10000
	f.Add("x\u2029y", "\xed\xa0\x80", "\xe2\x80", int64(7), int64(8), int64(-62167219200), int64(999999999), int32(86400), uint64(0x123456789abcdef)) // year 0, offset 24h
	f.Fuzz(func(t *testing.T, s1, s2, s3 string, n1, n2, sec, nsec int64, zone int32, mask uint64) {
		strs := [4]string{"", s1, s2, s3}
		next := func() string { s := strs[mask&3]; mask = mask>>2 | mask<<62; return s }
		bit := func() bool { v := mask&1 != 0; mask = mask>>1 | mask<<63; return v }
		tm := time.Unix(sec, nsec).In(time.FixedZone("", int(zone)))
		tptr := func() *time.Time {
			if !bit() {
				return nil
			}
			if bit() {
				return ptr(tm.UTC())
			}
			return &tm
		}
		a := Audit{
			SchemaVersion: int(n1),
			PostbackID:    next(),
			EventID:       next(),
			EventKind:     event.Kind(next()),
			Source:        event.Source{Topic: next(), Partition: int(n2), Offset: n1 ^ n2},
			MerchantID:    next(),
			ClickID:       next(),
			Network:       next(),
			Route:         next(),
			ClickNetwork:  next(),
			Goal:          next(),
			Status:        next(),
			Amount:        next(),
			Currency:      next(),
			URL:           next(),
			Outcome:       Outcome(next()),
			Reason:        next(),
			Error:         next(),
			Replayed:      bit(),
			OccurredAt:    tptr(),
			FirstAttempt:  tptr(),
			LastAttempt:   tptr(),
			NextAttemptAt: tptr(),
			RecordedAt:    tm,
		}
		if bit() {
			a.HTTPStatus = int(n2 >> 3)
		}
		if bit() {
			a.Attempts = int(n1 >> 5)
		}
		if bit() {
			a.LatencyMillis = n2 - n1
		}
		if bit() {
			a.Params = map[string]string{}
			for range 4 {
				if bit() {
					a.Params[next()] = next()
				}
			}
		}
		want, err := json.Marshal(&a)
		if err != nil {
			wantPanic(t, "audit", func() { a.AppendJSON(nil) }, func() error { return err })
		} else if got := a.AppendJSON([]byte("p")); !bytes.Equal(got[1:], want) || got[0] != 'p' {
			t.Fatalf("Audit.AppendJSON differs from json.Marshal\n got: %s\nwant: p%s", got, want)
		}

		c := Confirmation{
			SchemaVersion: int(n2), ClickID: next(), MerchantID: next(), Network: next(),
			Status: next(), FTDEventID: next(), QualificationEventID: next(),
			Amount: next(), Currency: next(), PostbackID: next(), ConfirmedAt: tm, Replayed: bit(),
		}
		want, err = json.Marshal(&c)
		if err != nil {
			wantPanic(t, "confirmation", func() { c.AppendJSON(nil) }, func() error { return err })
		} else if got := c.AppendJSON(nil); !bytes.Equal(got, want) {
			t.Fatalf("Confirmation.AppendJSON differs from json.Marshal\n got: %s\nwant: %s", got, want)
		}
	})
}

// BenchmarkAuditAppendJSON encodes a delivered postback's audit record into
// a reused buffer: the encoder's own cost.
func BenchmarkAuditAppendJSON(b *testing.B) {
	a := realisticAudit()
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		buf = a.AppendJSON(buf[:0])
	}
	b.SetBytes(int64(len(buf)))
}

// BenchmarkAuditAppendJSONFresh encodes into a new buffer each time, as a
// caller must whose output (a Kafka message value) outlives the call.
func BenchmarkAuditAppendJSONFresh(b *testing.B) {
	a := realisticAudit()
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		buf = a.AppendJSON(nil)
	}
	b.SetBytes(int64(len(buf)))
}

// BenchmarkAuditJSONMarshal is the same record through encoding/json, for
// comparison.
func BenchmarkAuditJSONMarshal(b *testing.B) {
	a := realisticAudit()
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if buf, err = json.Marshal(a); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(int64(len(buf)))
}
