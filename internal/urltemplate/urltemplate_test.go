package urltemplate

import (
	"net/url"
	"slices"
	"strings"
	"testing"
)

// known is the macro predicate of these tests: a small fixed set.
func known(name string) bool {
	switch name {
	case "click_id", "amount", "token", "goal", "v", "a", "b":
		return true
	}
	return false
}

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		raw  string
		// wantErr lists substrings the error must hold; nil means Parse must succeed.
		wantErr []string
		// notInErr lists substrings the error must not hold.
		notInErr []string
		macros   []string
	}{
		{name: "empty", raw: ""},
		{name: "literal only", raw: "http://h/p?x=1&y=2"},
		{name: "one macro in path", raw: "http://h/{click_id}", macros: []string{"click_id"}},
		{name: "macros in path and query", raw: "http://h/{goal}/x?c={click_id}&t={token}", macros: []string{"goal", "click_id", "token"}},
		{name: "adjacent macros", raw: "{a}{b}", macros: []string{"a", "b"}},
		{name: "macro only", raw: "{v}", macros: []string{"v"}},
		{
			name:     "every unknown macro listed at once",
			raw:      "http://h/{nope}?a={click_id}&b={bad}&c={worse}",
			wantErr:  []string{"unknown macro", "nope", "bad", "worse"},
			notInErr: []string{"click_id,"},
		},
		{name: "unclosed brace", raw: "http://h/?c={click_id", wantErr: []string{"unclosed '{'"}},
		{name: "unclosed brace after a macro", raw: "http://h/{goal}?c={click_id", wantErr: []string{"unclosed '{'"}},
		{name: "stray closing brace", raw: "http://h/}?c=1", wantErr: []string{"unbalanced '}'"}},
		{name: "closing brace before a macro", raw: "http://h/}{click_id}", wantErr: []string{"unbalanced '}'"}},
		{name: "closing brace after the last macro", raw: "http://h/{click_id}}", wantErr: []string{"unbalanced '}'"}},
		{name: "empty macro", raw: "http://h/?c={}", wantErr: []string{"bad macro"}},
		{name: "macro with a space", raw: "http://h/?c={click id}", wantErr: []string{"bad macro", "click id"}},
		{name: "nested brace", raw: "http://h/?c={{click_id}}", wantErr: []string{"bad macro"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tmpl, err := Parse(tt.raw, known)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Parse(%q): %v", tt.raw, err)
				}
				if got := tmpl.String(); got != tt.raw {
					t.Errorf("String() = %q, want %q", got, tt.raw)
				}
				if got := tmpl.Macros(); !slices.Equal(got, tt.macros) {
					t.Errorf("Macros() = %q, want %q", got, tt.macros)
				}
				return
			}
			if err == nil {
				t.Fatalf("Parse(%q) succeeded, want an error holding %q", tt.raw, tt.wantErr)
			}
			if tmpl != nil {
				t.Errorf("Parse(%q) returned a template with its error", tt.raw)
			}
			for _, s := range tt.wantErr {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not hold %q", err, s)
				}
			}
			for _, s := range tt.notInErr {
				if strings.Contains(err.Error(), s) {
					t.Errorf("error %q holds %q", err, s)
				}
			}
		})
	}
}

func TestMacrosOrderWithRepeats(t *testing.T) {
	tmpl, err := Parse("http://h/{a}/{b}?x={a}&y={click_id}&z={b}&w={a}", known)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"a", "b", "a", "click_id", "b", "a"}
	if got := tmpl.Macros(); !slices.Equal(got, want) {
		t.Errorf("Macros() = %q, want %q", got, want)
	}
}

func TestRenderEscaping(t *testing.T) {
	tests := []struct {
		name  string
		value string
		path  string // rendered before the '?'
		query string // rendered after the '?'
	}{
		{name: "plain", value: "abc-123_x.y~z", path: "abc-123_x.y~z", query: "abc-123_x.y~z"},
		{name: "space", value: "a b", path: "a%20b", query: "a+b"},
		{name: "ampersand", value: "a&b", path: "a&b", query: "a%26b"},
		{name: "equals", value: "a=b", path: "a=b", query: "a%3Db"},
		{name: "slash", value: "a/b", path: "a%2Fb", query: "a%2Fb"},
		{name: "hash", value: "a#b", path: "a%23b", query: "a%23b"},
		{name: "question mark", value: "a?b", path: "a%3Fb", query: "a%3Fb"},
		{name: "plus", value: "a+b", path: "a+b", query: "a%2Bb"},
		{name: "percent", value: "100%", path: "100%25", query: "100%25"},
		{name: "unicode", value: "zł€", path: "z%C5%82%E2%82%AC", query: "z%C5%82%E2%82%AC"},
		{name: "empty", value: "", path: "", query: ""},
	}
	tmpl, err := Parse("http://h/p/{v}/s?q={v}&r=1", known)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tmpl.Render(func(string) string { return tt.value })
			want := "http://h/p/" + tt.path + "/s?q=" + tt.query + "&r=1"
			if got != want {
				t.Fatalf("Render = %q, want %q", got, want)
			}
			u, err := url.Parse(got)
			if err != nil {
				t.Fatalf("url.Parse(%q): %v", got, err)
			}
			if q := u.Query().Get("q"); q != tt.value {
				t.Errorf("query value = %q, want %q", q, tt.value)
			}
			if r := u.Query().Get("r"); r != "1" {
				t.Errorf("the value leaked into the next parameter: r = %q", r)
			}
			if wantPath := "/p/" + tt.value + "/s"; u.Path != wantPath {
				t.Errorf("path = %q, want %q", u.Path, wantPath)
			}
		})
	}
}

// TestRenderQueryStartsAtFirstQuestionMark: a '?' in a literal switches
// every later macro to query escaping, also when the '?' sits right before
// the macro.
func TestRenderQueryStartsAtFirstQuestionMark(t *testing.T) {
	tmpl, err := Parse("http://h/{a}?{b}", known)
	if err != nil {
		t.Fatal(err)
	}
	got := tmpl.Render(func(name string) string { return "x y" })
	if want := "http://h/x%20y?x+y"; got != want {
		t.Errorf("Render = %q, want %q", got, want)
	}
}

func TestRenderValuesByName(t *testing.T) {
	tmpl, err := Parse("http://h/{goal}?c={click_id}&amount={amount}&missing={token}", known)
	if err != nil {
		t.Fatal(err)
	}
	values := map[string]string{"goal": "ftd", "click_id": "c-1", "amount": "10.50"}
	got := tmpl.Render(func(name string) string { return values[name] })
	if want := "http://h/ftd?c=c-1&amount=10.50&missing="; got != want {
		t.Errorf("Render = %q, want %q", got, want)
	}
}

// reservedFree drops every byte either escaper could change, so that a
// value renders as itself.
func reservedFree(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.', r == '~':
			return r
		}
		return -1
	}, s)
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"", "http://h/{a}?b={b}", "{", "}", "{}", "{a b}", "{{a}}", "x}{a}", "{a}{b}?{unknown}", "?{a}"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		anyName := func(string) bool { return true }
		tmpl, err := Parse(raw, anyName)
		if err != nil {
			if tmpl != nil {
				t.Fatalf("Parse(%q) returned a template with error %v", raw, err)
			}
			return
		}
		if tmpl.String() != raw {
			t.Fatalf("String() = %q, want %q", tmpl.String(), raw)
		}
		got := tmpl.Render(func(string) string { return "" })
		for _, m := range tmpl.Macros() {
			if m == "" || strings.ContainsAny(m, "{} ") {
				t.Fatalf("Parse(%q) accepted macro %q", raw, m)
			}
		}
		if strings.ContainsAny(got, "{}") {
			t.Fatalf("Render of %q with empty values left a brace: %q", raw, got)
		}
		if len(got) > len(raw) {
			t.Fatalf("Render of %q with empty values is longer than the template: %q", raw, got)
		}
		// A second Parse with a predicate that refuses everything fails
		// exactly when the template has macros.
		_, err = Parse(raw, func(string) bool { return false })
		if (err != nil) != (len(tmpl.Macros()) > 0) {
			t.Fatalf("Parse(%q) refusing every macro: err %v with macros %q", raw, err, tmpl.Macros())
		}
	})
}

func FuzzRender(f *testing.F) {
	f.Add("http://h/{a}/x?y={b}", "v1", "v2")
	f.Add("{a}{b}", "", "")
	f.Add("http://h/?{a}", "a b&c=d", "#/?")
	f.Add("x}{a}", "x", "y")
	f.Add("{a b}", "x", "y")
	f.Fuzz(func(t *testing.T, raw, va, vb string) {
		tmpl, err := Parse(raw, func(string) bool { return true })
		if err == nil {
			// Values without reserved characters render as themselves, so
			// the literal parts appear in order around them.
			a, b := reservedFree(va), reservedFree(vb)
			value := func(name string) string {
				if len(name)%2 == 0 {
					return a
				}
				return b
			}
			got := tmpl.Render(value)
			want := renderNaively(t, raw, value)
			if got != want {
				t.Fatalf("Render(%q) = %q, want %q", raw, got, want)
			}
		}

		// Any value in the query comes back exactly through url.Parse.
		q, err := Parse("http://host/p?x={v}", known)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range []string{va, vb} {
			rendered := q.Render(func(string) string { return v })
			u, err := url.Parse(rendered)
			if err != nil {
				t.Fatalf("url.Parse(%q): %v", rendered, err)
			}
			got, ok := u.Query()["x"]
			if !ok || len(got) != 1 || got[0] != v {
				t.Fatalf("value %q rendered as %q parses back as %q", v, rendered, got)
			}
			if len(u.Query()) != 1 {
				t.Fatalf("value %q rendered as %q adds parameters: %v", v, rendered, u.Query())
			}
		}
	})
}

// renderNaively substitutes every "{name}" of a template Parse accepted by
// scanning it again, independently of the parsed parts.
func renderNaively(t *testing.T, raw string, value func(string) string) string {
	t.Helper()
	var b strings.Builder
	for raw != "" {
		open := strings.IndexByte(raw, '{')
		if open < 0 {
			b.WriteString(raw)
			break
		}
		end := strings.IndexByte(raw[open:], '}')
		if end < 0 {
			t.Fatalf("Parse accepted an unclosed brace in %q", raw)
		}
		b.WriteString(raw[:open])
		b.WriteString(value(raw[open+1 : open+end]))
		raw = raw[open+end+1:]
	}
	return b.String()
}
