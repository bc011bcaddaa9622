package dedupe

import (
	"encoding/json"
	"strings"
	"time"

	"github.com/valyala/fastjson"

	"github.com/postbackd/postbackd/internal/jsonfast"
)

// decodeClickContext reads a stored click context, as encoding/json would
// into a ClickContext. Every event of a click that has one reads it (the
// attribute script returns it), so the contexts the store writes — by the
// attribute script's cjson or by restore's encoding/json: string fields,
// params an object of strings, times in RFC 3339 — take a fastjson path
// without reflection; anything else (null, another type, a duplicate or
// unknown key, a time not as formatTime writes it, any \u escape, text
// jsonfast.Agree refuses) goes to encoding/json, whose answer, or error, it
// is then.
// FuzzDecodeClickContext checks that the two agree.
func decodeClickContext(raw string) (ClickContext, error) {
	if c, ok := decodeClickFast(raw); ok {
		return c, nil
	}
	var c ClickContext
	err := json.Unmarshal([]byte(raw), &c)
	return c, err
}

var clickParsers fastjson.ParserPool

// clickFields are ClickContext's JSON names, in decodeClickFast's order.
var clickFields = [...]string{"merchant_id", "network", "params", "first_seen_at", "registered_at"}

func decodeClickFast(raw string) (c ClickContext, ok bool) {
	// A time is read by encoding/json from its raw text, escapes included
	// (so "\u005A" is no "Z" to it), and by fastjson once unescaped: texts
	// with \u escapes go to encoding/json. cjson, which writes the contexts,
	// escapes with \u only control characters.
	if strings.Contains(raw, `\u`) || !jsonfast.Agree(raw) {
		return c, false
	}
	p := clickParsers.Get()
	defer clickParsers.Put(p)
	v, err := p.Parse(raw)
	if err != nil {
		return c, false
	}
	o, err := v.Object()
	if err != nil {
		return c, false
	}
	var seen [len(clickFields)]bool
	ok = true
	o.Visit(func(key []byte, v *fastjson.Value) {
		if !ok {
			return
		}
		i := fieldIndex(key)
		if i < 0 || seen[i] {
			ok = false
			return
		}
		seen[i] = true
		switch i {
		case 0, 1:
			s, err := v.StringBytes()
			if ok = err == nil; ok && i == 0 {
				c.MerchantID = string(s)
			} else if ok {
				c.Network = string(s)
			}
		case 2:
			c.Params, ok = stringMap(v)
		case 3, 4:
			var t time.Time
			if t, ok = canonicalTime(v); ok && i == 3 {
				c.FirstSeenAt = t
			} else if ok {
				c.RegisteredAt = t
			}
		}
	})
	return c, ok
}

func fieldIndex(key []byte) int {
	for i, f := range clickFields {
		if string(key) == f {
			return i
		}
	}
	return -1
}

// decodeParams reads stored params (an FTD record's route params, which
// every classification and qualification of a click with params gets
// back), as encoding/json would into a map[string]string: an object of
// strings takes a fastjson path, anything else (null, another type, a
// duplicate key, text jsonfast.Agree refuses) goes to encoding/json.
// FuzzDecodeParams checks that the two agree.
func decodeParams(raw string) (map[string]string, error) {
	if m, ok := decodeParamsFast(raw); ok {
		return m, nil
	}
	var m map[string]string
	err := json.Unmarshal([]byte(raw), &m)
	return m, err
}

func decodeParamsFast(raw string) (map[string]string, bool) {
	if !jsonfast.Agree(raw) {
		return nil, false
	}
	p := clickParsers.Get()
	defer clickParsers.Put(p)
	v, err := p.Parse(raw)
	if err != nil {
		return nil, false
	}
	return stringMap(v)
}

// stringMap reads an object of strings without duplicate keys.
func stringMap(v *fastjson.Value) (map[string]string, bool) {
	o, err := v.Object()
	if err != nil {
		return nil, false
	}
	m := make(map[string]string, o.Len())
	ok := true
	o.Visit(func(key []byte, v *fastjson.Value) {
		s, err := v.StringBytes()
		if _, dup := m[string(key)]; err != nil || dup {
			ok = false
			return
		}
		m[string(key)] = string(s)
	})
	return m, ok && len(m) == o.Len()
}

// canonicalTime reads a time written as formatTime writes it (RFC 3339 with
// nanoseconds, trailing zeros trimmed, no escapes: decodeClickFast declines
// those), the one form on which time.Parse and encoding/json's reading of a
// time agree.
func canonicalTime(v *fastjson.Value) (time.Time, bool) {
	s, err := v.StringBytes()
	if err != nil {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, string(s))
	var buf [40]byte
	if err != nil || string(t.AppendFormat(buf[:0], time.RFC3339Nano)) != string(s) {
		return time.Time{}, false
	}
	return t, true
}
