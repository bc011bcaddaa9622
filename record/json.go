package record

// Hand-written JSON encoders for the records written once per postback.
// encoding/json walks the struct by reflection, sorts map keys through a
// slice of reflect values and allocates a fresh result; these append to a
// caller's buffer instead.
//
// The output is a contract with the topics' consumers and must not change
// with the encoder, so each encoder writes exactly the bytes json.Marshal
// writes for the same value: same field order and names, same omitempty
// rules, same string escaping, same time format. Where an exact copy is not
// practical (a time that time.Time.MarshalJSON refuses), the encoder hands
// the whole record to json.Marshal rather than risk writing something else.
// json_test.go checks this by comparison with json.Marshal, including a fuzz
// test, and fails when a field is added to a record without being added
// here.

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/postbackd/postbackd/internal/jsonfast"
)

// AppendJSON appends a's JSON encoding to b and returns the extended buffer.
// The bytes are exactly those of json.Marshal(a) (same field order, same
// omitempty rules, same string escaping incl. HTML escaping of <, >, & and
// U+2028/U+2029, invalid UTF-8 replaced by U+FFFD, same time format
// (time.Time.MarshalJSON, RFC 3339 with nanoseconds), sorted map keys).
// A nil a appends null, as json.Marshal does.
//
// json.Marshal fails for one kind of Audit only: one holding a time that
// time.Time.MarshalJSON refuses (a year outside [0,9999], or a zone offset of
// 24 hours or more). For such a record there are no bytes to match, so
// AppendJSON panics with json.Marshal's error: records are built from times
// the pipeline parsed or read from its clock, and one that cannot be written
// is a programming error, as outputs.add treats a marshal error today.
func (a *Audit) AppendJSON(b []byte) []byte {
	if a == nil {
		return append(b, "null"...)
	}
	return appendEncoded(b, a, a.appendJSON)
}

// appendEncoded appends to b what encode writes, or, when encode meets a
// time MarshalJSON refuses today, json.Marshal(v)'s bytes: asking json.Marshal
// rather than panicking here keeps the output identical should a Go release
// accept more times. encode may have written into b's array past len(b);
// b[:len(b)] is untouched.
func appendEncoded(b []byte, v any, encode func([]byte) ([]byte, bool)) []byte {
	n := len(b)
	if out, ok := encode(b); ok {
		return out
	}
	return appendMarshal(b[:n], v)
}

// appendJSON is AppendJSON's encoder; false means a time that
// time.Time.MarshalJSON refuses was met and the appended bytes are garbage.
func (a *Audit) appendJSON(b []byte) ([]byte, bool) {
	b = grow(b, a.sizeHint())
	ok := true

	b = append(b, `{"schema_version":`...)
	b = strconv.AppendInt(b, int64(a.SchemaVersion), 10)
	if a.PostbackID != "" {
		b = append(b, `,"postback_id":`...)
		b = jsonfast.AppendString(b, a.PostbackID)
	}
	b = append(b, `,"event_id":`...)
	b = jsonfast.AppendString(b, a.EventID)
	// event.Kind is a plain string type: no MarshalJSON or MarshalText
	// (TestNoCustomMarshalers keeps it so).
	b = append(b, `,"event_kind":`...)
	b = jsonfast.AppendString(b, string(a.EventKind))
	// event.Source has its own tags and no omitempty.
	b = append(b, `,"source":{"topic":`...)
	b = jsonfast.AppendString(b, a.Source.Topic)
	b = append(b, `,"partition":`...)
	b = strconv.AppendInt(b, int64(a.Source.Partition), 10)
	b = append(b, `,"offset":`...)
	b = strconv.AppendInt(b, a.Source.Offset, 10)
	b = append(b, '}')
	b = appendOptString(b, `,"merchant_id":`, a.MerchantID)
	b = appendOptString(b, `,"click_id":`, a.ClickID)
	b = appendOptString(b, `,"network":`, a.Network)
	b = appendOptString(b, `,"route":`, a.Route)
	b = appendOptString(b, `,"click_network":`, a.ClickNetwork)
	b = appendOptString(b, `,"goal":`, a.Goal)
	b = appendOptString(b, `,"status":`, a.Status)
	b = appendOptString(b, `,"amount":`, a.Amount)
	b = appendOptString(b, `,"currency":`, a.Currency)
	b = appendOptString(b, `,"url":`, a.URL)
	// omitempty drops a nil and an empty map alike.
	if len(a.Params) > 0 {
		b = append(b, `,"params":`...)
		b = appendStringMap(b, a.Params)
	}
	b = append(b, `,"outcome":`...)
	b = jsonfast.AppendString(b, string(a.Outcome))
	b = appendOptString(b, `,"reason":`, a.Reason)
	if a.HTTPStatus != 0 {
		b = append(b, `,"http_status":`...)
		b = strconv.AppendInt(b, int64(a.HTTPStatus), 10)
	}
	b = append(b, `,"attempts":`...)
	b = strconv.AppendInt(b, int64(a.Attempts), 10)
	b = appendOptString(b, `,"error":`, a.Error)
	if a.Replayed {
		b = append(b, `,"replayed":true`...)
	}
	b, ok = appendOptTime(b, `,"occurred_at":`, a.OccurredAt, ok)
	b, ok = appendOptTime(b, `,"first_attempt_at":`, a.FirstAttempt, ok)
	b, ok = appendOptTime(b, `,"last_attempt_at":`, a.LastAttempt, ok)
	if a.LatencyMillis != 0 {
		b = append(b, `,"latency_ms":`...)
		b = strconv.AppendInt(b, a.LatencyMillis, 10)
	}
	b, ok = appendOptTime(b, `,"next_attempt_at":`, a.NextAttemptAt, ok)
	b = append(b, `,"recorded_at":`...)
	b, ok = jsonfast.AppendTime(b, a.RecordedAt, ok)
	b = append(b, '}')
	return b, ok
}

// sizeHint is the length of a's encoding when no string needs escaping, or
// a little more: enough that encoding into an empty buffer allocates once.
func (a *Audit) sizeHint() int {
	// Every field name with its punctuation and the quotes of the string
	// values (439 bytes), all five times in their longest form
	// ("2006-01-02T15:04:05.999999999-07:00", 37 bytes with quotes) and the
	// six integers at their longest (20 bytes). TestAuditAppendJSONAllocs
	// checks the sum.
	const fixed = 440 + 5*37 + 6*20
	n := fixed + len(a.PostbackID) + len(a.EventID) + len(a.EventKind) +
		len(a.Source.Topic) + len(a.MerchantID) + len(a.ClickID) +
		len(a.Network) + len(a.Route) + len(a.ClickNetwork) + len(a.Goal) +
		len(a.Status) + len(a.Amount) + len(a.Currency) + len(a.URL) +
		len(a.Outcome) + len(a.Reason) + len(a.Error)
	for k, v := range a.Params {
		n += len(k) + len(v) + len(`"":"",`)
	}
	return n
}

// AppendJSON appends c's JSON encoding to b and returns the extended buffer.
// The bytes are exactly those of json.Marshal(c), as for Audit.AppendJSON,
// and a nil c appends null. Like Audit.AppendJSON it panics with
// json.Marshal's error when ConfirmedAt is a time time.Time.MarshalJSON
// refuses.
func (c *Confirmation) AppendJSON(b []byte) []byte {
	if c == nil {
		return append(b, "null"...)
	}
	return appendEncoded(b, c, c.appendJSON)
}

// appendJSON is Confirmation.AppendJSON's encoder, as Audit.appendJSON.
func (c *Confirmation) appendJSON(b []byte) ([]byte, bool) {
	// Field names and punctuation, the time at its longest, the integer at
	// its longest; see Audit.sizeHint.
	const fixed = 200 + 37 + 20
	b = grow(b, fixed+len(c.ClickID)+len(c.MerchantID)+len(c.Network)+
		len(c.Status)+len(c.FTDEventID)+len(c.QualificationEventID)+
		len(c.Amount)+len(c.Currency)+len(c.PostbackID))

	b = append(b, `{"schema_version":`...)
	b = strconv.AppendInt(b, int64(c.SchemaVersion), 10)
	b = append(b, `,"click_id":`...)
	b = jsonfast.AppendString(b, c.ClickID)
	b = append(b, `,"merchant_id":`...)
	b = jsonfast.AppendString(b, c.MerchantID)
	b = append(b, `,"network":`...)
	b = jsonfast.AppendString(b, c.Network)
	b = append(b, `,"status":`...)
	b = jsonfast.AppendString(b, c.Status)
	b = append(b, `,"ftd_event_id":`...)
	b = jsonfast.AppendString(b, c.FTDEventID)
	b = append(b, `,"qualification_event_id":`...)
	b = jsonfast.AppendString(b, c.QualificationEventID)
	b = append(b, `,"amount":`...)
	b = jsonfast.AppendString(b, c.Amount)
	b = append(b, `,"currency":`...)
	b = jsonfast.AppendString(b, c.Currency)
	b = append(b, `,"postback_id":`...)
	b = jsonfast.AppendString(b, c.PostbackID)
	b = append(b, `,"confirmed_at":`...)
	b, ok := jsonfast.AppendTime(b, c.ConfirmedAt, true)
	if c.Replayed {
		b = append(b, `,"replayed":true`...)
	}
	b = append(b, '}')
	return b, ok
}

// grow returns b with room for n more bytes, in one allocation if it has
// not. (slices.Grow does the same but allocates twice under -race.)
func grow(b []byte, n int) []byte {
	if cap(b)-len(b) >= n {
		return b
	}
	nb := make([]byte, len(b), len(b)+n)
	copy(nb, b)
	return nb
}

// appendMarshal appends json.Marshal(v) to b: the fallback for a record the
// hand-written encoders cannot reproduce. json.Marshal fails only for a time
// time.Time.MarshalJSON refuses, which AppendJSON documents as a panic.
func appendMarshal(b []byte, v any) []byte {
	out, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("record: marshal %T: %v", v, err))
	}
	return append(b, out...)
}

// appendOptString appends key and s, a field tagged omitempty, unless s is
// empty. key holds the leading comma, the quoted name and the colon.
func appendOptString(b []byte, key, s string) []byte {
	if s == "" {
		return b
	}
	b = append(b, key...)
	return jsonfast.AppendString(b, s)
}

// appendOptTime appends key and *t, a pointer field tagged omitempty, unless
// t is nil; ok is ANDed with whether the time could be encoded, so that one
// flag follows a whole record.
func appendOptTime(b []byte, key string, t *time.Time, ok bool) ([]byte, bool) {
	if t == nil {
		return b, ok
	}
	b = append(b, key...)
	return jsonfast.AppendTime(b, *t, ok)
}

// appendStringMap appends m as encoding/json writes a map[string]string:
// keys sorted bytewise (as strings.Compare orders them, before escaping),
// keys and values escaped like any string.
func appendStringMap(b []byte, m map[string]string) []byte {
	// Audit params hold a handful of entries: sort their keys in an array on
	// the stack by insertion, and only a larger map in a heap slice.
	var small [16]string
	keys := small[:0]
	if len(m) > len(small) {
		keys = make([]string, 0, len(m))
	}
	for k := range m {
		keys = append(keys, k)
	}
	if len(keys) <= len(small) {
		for i := 1; i < len(keys); i++ {
			for j := i; j > 0 && keys[j] < keys[j-1]; j-- {
				keys[j], keys[j-1] = keys[j-1], keys[j]
			}
		}
	} else {
		slices.Sort(keys)
	}
	b = append(b, '{')
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = jsonfast.AppendString(b, k)
		b = append(b, ':')
		b = jsonfast.AppendString(b, m[k])
	}
	return append(b, '}')
}
