package config

import (
	"os"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"
)

// yamlKeys lists every key path of t ("kafka.tls.ca_file"), with "<name>"
// for map keys. Structs are walked; durations, decimals, secrets, lists and
// maps of scalars are leaves.
func yamlKeys(t reflect.Type, prefix string, out map[string]bool) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		path := prefix + name
		ft := f.Type
		if ft.Kind() == reflect.Map && ft.Elem().Kind() == reflect.Struct {
			// A map of structs is a section per entry ("partners.<name>");
			// nested, it is also a row of its parent's table.
			if prefix != "" {
				out[path] = true
			}
			out[path+".<>"] = true
			yamlKeys(ft.Elem(), path+".<>.", out)
			continue
		}
		out[path] = true
		if ft.Kind() == reflect.Struct && !isLeaf(ft) {
			yamlKeys(ft, path+".", out)
		}
	}
}

func isLeaf(t reflect.Type) bool {
	return t == reflect.TypeOf(time.Duration(0)) || t == reflect.TypeOf(decimal.Decimal{}) || t == reflect.TypeOf(SecretRef{})
}

// documentedKeys reads REFERENCE.md: a heading names one or more sections in
// backquotes, each table row under it names a key in backquotes.
func documentedKeys(t *testing.T) map[string]bool {
	raw, err := os.ReadFile("REFERENCE.md")
	if err != nil {
		t.Fatal(err)
	}
	heading := regexp.MustCompile("^#+ ")
	quoted := regexp.MustCompile("`([^`]+)`")
	row := regexp.MustCompile("^\\| `([a-z_]+)` \\|")
	placeholder := regexp.MustCompile(`<[a-z]+>`)
	out := make(map[string]bool)
	var sections []string
	for _, line := range strings.Split(string(raw), "\n") {
		if heading.MatchString(line) {
			sections = nil
			for _, m := range quoted.FindAllStringSubmatch(line, -1) {
				sections = append(sections, placeholder.ReplaceAllString(m[1], "<>"))
			}
			for _, s := range sections {
				out[s] = true
			}
			continue
		}
		if m := row.FindStringSubmatch(line); m != nil {
			for _, s := range sections {
				out[s+"."+m[1]] = true
			}
		}
	}
	return out
}

func TestReferenceDocumentsEveryKey(t *testing.T) {
	want := make(map[string]bool)
	yamlKeys(reflect.TypeOf(Config{}), "", want)
	got := documentedKeys(t)
	var missing, stale []string
	for k := range want {
		if !got[k] {
			missing = append(missing, k)
		}
	}
	for k := range got {
		if !want[k] {
			stale = append(stale, k)
		}
	}
	sort.Strings(missing)
	sort.Strings(stale)
	if len(missing) > 0 || len(stale) > 0 {
		t.Fatalf("REFERENCE.md is out of step with config.go\nundocumented keys: %v\ndocumented keys that do not exist: %v", missing, stale)
	}
}

func TestReferenceDocumentsEveryMacro(t *testing.T) {
	raw, err := os.ReadFile("REFERENCE.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range Macros {
		if !strings.Contains(string(raw), "| `{"+m.Name+"}` |") {
			t.Errorf("REFERENCE.md has no row for macro {%s}", m.Name)
		}
	}
}

func TestEnvDocListsEveryOverride(t *testing.T) {
	raw, err := os.ReadFile("ENV.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("(?m)^\\| `(POSTBACKD_[A-Z_]+)` \\| `([a-z_.]+)` \\|")
	documented := make(map[string]string)
	for _, m := range row.FindAllStringSubmatch(string(raw), -1) {
		documented[m[1]] = m[2]
	}
	for _, o := range envOverrides {
		if key, ok := documented[o.name]; !ok || key != o.key {
			t.Errorf("ENV.md: %s should map to %s, documents %q", o.name, o.key, key)
		}
		delete(documented, o.name)
	}
	for name := range documented {
		t.Errorf("ENV.md documents %s, which Load does not read", name)
	}
}
