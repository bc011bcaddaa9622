package dispatcher

import (
	"errors"
	"maps"
	"net/url"
	"strings"
	"testing"

	"github.com/postbackd/postbackd/config"
	"github.com/postbackd/postbackd/postback"
)

const examplePattern = "trID_{id}_{affid}-{transid}-{clickid}-{extra}_trID"

func TestTrackerDecode(t *testing.T) {
	tests := []struct {
		pattern, in string
		want        map[string]string // nil = mismatch
	}{
		{examplePattern, "trID_1234567_aff1-tx9-c77-x_trID",
			map[string]string{"id": "1234567", "affid": "aff1", "transid": "tx9", "clickid": "c77", "extra": "x"}},
		{examplePattern, "trID__---_trID", map[string]string{"id": "", "affid": "", "transid": "", "clickid": "", "extra": ""}},
		{examplePattern, "trID_1_a-b-c-d_e_trID", // extra may hold '_' but not "_trID"
			map[string]string{"id": "1", "affid": "a", "transid": "b", "clickid": "c", "extra": "d_e"}},
		{examplePattern, "trID_1234567_aff1-tx9-c77_trID", nil},        // a field missing
		{examplePattern, "xxID_1234567_aff1-tx9-c77-x_trID", nil},      // prefix
		{examplePattern, "trID_1234567_aff1-tx9-c77-x_trID_trID", nil}, // text after suffix
		{examplePattern, "trID_1234567_aff1-tx9-c77-x", nil},           // no suffix
		{examplePattern, "", nil},
		{"{a}|{b}", "x|y|z", map[string]string{"a": "x", "b": "y|z"}}, // last field without suffix takes the rest
		{"{only}", "", map[string]string{"only": ""}},
	}
	for _, tt := range tests {
		tp, err := ParseTrackerPattern(tt.pattern)
		if err != nil {
			t.Fatalf("ParseTrackerPattern(%q): %v", tt.pattern, err)
		}
		got, err := tp.Decode(tt.in)
		if tt.want == nil {
			if err == nil || !errors.Is(err, errTrackerMismatch) || got != nil {
				t.Errorf("Decode(%q) = %v, %v; want a mismatch", tt.in, got, err)
			}
			continue
		}
		if err != nil || !maps.Equal(got, tt.want) {
			t.Errorf("Decode(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
		if enc := tp.Encode(got); enc != tt.in {
			t.Errorf("Encode(Decode(%q)) = %q", tt.in, enc)
		}
	}
}

func TestParseTrackerPattern(t *testing.T) {
	tests := []struct {
		pattern string
		fields  []string // nil = error
	}{
		{examplePattern, []string{"id", "affid", "transid", "clickid", "extra"}},
		{"{a}", []string{"a"}},
		{"pre{a}-{b}", []string{"a", "b"}},
		{"no placeholders", nil},
		{"{a}{b}", nil},    // no delimiter between
		{"{a}-{a}", nil},   // repeated
		{"{a", nil},        // unclosed
		{"a}{b}", nil},     // unbalanced
		{"{}-{b}", nil},    // empty name
		{"{a b}", nil},     // bad name
		{"{a}-{b.c}", nil}, // bad name
		{"x{a}-{b}}", nil}, // stray brace
	}
	for _, tt := range tests {
		tp, err := ParseTrackerPattern(tt.pattern)
		if tt.fields == nil {
			if err == nil {
				t.Errorf("ParseTrackerPattern(%q) accepted", tt.pattern)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseTrackerPattern(%q): %v", tt.pattern, err)
			continue
		}
		if got := tp.Fields(); strings.Join(got, ",") != strings.Join(tt.fields, ",") {
			t.Errorf("Fields(%q) = %v, want %v", tt.pattern, got, tt.fields)
		}
		if tp.String() != tt.pattern {
			t.Errorf("String() = %q", tp.String())
		}
	}
}

func FuzzTrackerDecode(f *testing.F) {
	f.Add(examplePattern, "trID_1234567_aff1-tx9-c77-x_trID")
	f.Add(examplePattern, "trID__---_trID")
	f.Add(examplePattern, "trID_1_2-3-4-5_trID_trID")
	f.Add("{a}|{b}", "x|y|z")
	f.Add("pre{a}", "pre")
	f.Add("{a}--{b}--", "----")
	f.Fuzz(func(t *testing.T, pattern, s string) {
		tp, err := ParseTrackerPattern(pattern)
		if err != nil {
			return
		}
		m, err := tp.Decode(s)
		if err != nil {
			if !errors.Is(err, errTrackerMismatch) || m != nil {
				t.Fatalf("Decode error %v with map %v", err, m)
			}
			return
		}
		if enc := tp.Encode(m); enc != s {
			t.Fatalf("pattern %q: Decode(%q) = %v re-encodes to %q", pattern, s, m, enc)
		}
		if len(m) != len(tp.Fields()) {
			t.Fatalf("decoded %d fields, pattern has %d", len(m), len(tp.Fields()))
		}
	})
}

// FuzzRender: whatever click ids and params arrive, the URL stays on the
// template's host, parses, keeps its values in place, and its redacted form
// never shows the token.
func FuzzRender(f *testing.F) {
	f.Add("click-1", "sub", "trID_1_a-b-c-d_trID", "offer")
	f.Add("a&b=c#d", "x y", "trID_%2F_@-:-/-?_trID", "日本")
	f.Add("@evil.example/", "../..", "", "\x00\xff")
	f.Add(testToken, url.QueryEscape(testToken), "trID_"+testToken+"_-a-b-c_trID", url.PathEscape(testToken))
	const tmpl = "https://Pb.Example:8443/c/{click_id}/{param.s}?cid={click_id}&s={param.s}&id={tr.id}" +
		"&x={tr.extra}&o={offer_id}&t={token}"
	pc := config.Partner{
		Goals:         map[postback.Goal]config.GoalConfig{postback.GoalReg: {URL: tmpl}},
		Token:         config.SecretRef{Value: testToken},
		AllowedHosts:  []string{"pb.example:8443"},
		TrackerString: config.TrackerString{Param: "tr", Pattern: examplePattern},
	}
	env := newEnv(f, map[string]config.Partner{"p": pc})
	f.Fuzz(func(t *testing.T, clickID, sub, tr, offer string) {
		p := testPostback("p", postback.GoalReg)
		p.ClickID = clickID
		p.Params = map[string]string{"s": sub, "tr": tr, "offer_id": offer}
		r, err := env.d.Render(p)
		if err != nil {
			t.Fatalf("Render: %v", err)
		}
		u, err := url.Parse(r.URL)
		if err != nil {
			t.Fatalf("URL %q does not parse: %v", r.URL, err)
		}
		if u.Host != "Pb.Example:8443" || u.Scheme != "https" || u.User != nil || u.Fragment != "" {
			t.Fatalf("URL %q left its place: host %q", r.URL, u.Host)
		}
		if q := u.Query(); q.Get("cid") != clickID || q.Get("s") != sub || q.Get("o") != offer {
			t.Fatalf("values did not round-trip: %v", q)
		}
		for _, form := range []string{testToken, url.QueryEscape(testToken), url.PathEscape(testToken)} {
			if strings.Contains(r.Redacted, form) {
				t.Fatalf("Redacted %q shows the token as %q", r.Redacted, form)
			}
			for _, w := range r.Warnings {
				if strings.Contains(w, form) {
					t.Fatalf("warning %q shows the token", w)
				}
			}
		}
	})
}
