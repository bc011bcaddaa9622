package deploy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"go.yaml.in/yaml/v3"
)

// The tests run in deploy/; the repository root is one up.
func repoPath(parts ...string) string {
	return filepath.Join(append([]string{".."}, parts...)...)
}

// binDir holds the postbackd binary built once for the whole package.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "postbackd-deploy-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

var (
	buildOnce sync.Once
	buildErr  error
)

// postbackdBinary builds ./cmd/postbackd (once) and returns its path.
func postbackdBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(binDir, "postbackd")
	buildOnce.Do(func() {
		goTool, err := exec.LookPath("go")
		if err != nil {
			buildErr = fmt.Errorf("the go command is needed to build postbackd: %w", err)
			return
		}
		cmd := exec.Command(goTool, "build", "-o", bin, "./cmd/postbackd")
		cmd.Dir = repoPath()
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/postbackd: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return bin
}

// flagSpec is what the binary's --help says of one flag.
type flagSpec struct {
	name   string
	isBool bool // takes no value
}

var helpFlag = regexp.MustCompile(`(?m)^\s+-([A-Za-z0-9][A-Za-z0-9_.-]*)(?:\s+(\S+))?\s*$`)

var (
	helpMu    sync.Mutex
	helpCache = map[string]map[string]flagSpec{}
)

// subcommandFlags runs "postbackd WORDS... --help" and returns the flags it
// prints (Go's flag package prints them to stderr, "  -name type" per flag,
// the type left out for a boolean). It fails the test unless the command
// exits 0, i.e. unless WORDS name a real subcommand.
func subcommandFlags(t *testing.T, words []string) map[string]flagSpec {
	t.Helper()
	key := strings.Join(words, " ")
	helpMu.Lock()
	defer helpMu.Unlock()
	if f, ok := helpCache[key]; ok {
		return f
	}
	bin := postbackdBinary(t)
	cmd := exec.Command(bin, append(slices.Clone(words), "--help")...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Env = []string{} // no POSTBACKD_* of the caller
	if err := cmd.Run(); err != nil {
		t.Fatalf("postbackd %s --help: %v (not a subcommand?)\nstdout:\n%s\nstderr:\n%s", key, err, stdout.String(), stderr.String())
	}
	flags := map[string]flagSpec{}
	for _, m := range helpFlag.FindAllStringSubmatch(stderr.String()+stdout.String(), -1) {
		flags[m[1]] = flagSpec{name: m[1], isBool: m[2] == ""}
	}
	if len(flags) == 0 {
		t.Fatalf("postbackd %s --help lists no flags:\n%s%s", key, stdout.String(), stderr.String())
	}
	helpCache[key] = flags
	return flags
}

// commandLine is a checked postbackd command line.
type commandLine struct {
	words []string          // the subcommand, e.g. [run] or [topics check]
	flags map[string]string // flag name -> value ("true" for a bare boolean)
}

// checkArgs checks a container's arguments to postbackd: a real subcommand
// (its --help exits 0), then only flags that subcommand defines, each
// with a value when it takes one, and no positional argument (postbackd's
// subcommands ignore them silently).
func checkArgs(t *testing.T, where string, args []string) commandLine {
	t.Helper()
	cl := commandLine{flags: map[string]string{}}
	i := 0
	for i < len(args) && !strings.HasPrefix(args[i], "-") {
		cl.words = append(cl.words, args[i])
		i++
	}
	if len(cl.words) == 0 {
		t.Fatalf("%s: %q names no subcommand", where, args)
	}
	known := subcommandFlags(t, cl.words)
	for ; i < len(args); i++ {
		a := args[i]
		if a == "--" || !strings.HasPrefix(a, "-") {
			t.Errorf("%s: positional argument %q: postbackd %s takes flags only", where, a, strings.Join(cl.words, " "))
			continue
		}
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		spec, ok := known[name]
		if !ok {
			t.Errorf("%s: postbackd %s has no flag -%s (it has %s)", where, strings.Join(cl.words, " "), name, flagNames(known))
			continue
		}
		switch {
		case hasValue:
		case spec.isBool:
			value = "true"
		case i+1 < len(args):
			i++
			value = args[i]
		default:
			t.Errorf("%s: flag -%s needs a value", where, name)
		}
		cl.flags[name] = value
	}
	return cl
}

func flagNames(m map[string]flagSpec) string {
	var names []string
	for n := range m {
		names = append(names, "-"+n)
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

// yamlDocs reads every document of a (multi-document) YAML file.
func yamlDocs(t *testing.T, path string) []*yaml.Node {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	var docs []*yaml.Node
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if len(n.Content) == 0 || (n.Content[0].Kind == yaml.ScalarNode && n.Content[0].Tag == "!!null") {
			continue // an empty document (a trailing ---)
		}
		docs = append(docs, &n)
	}
	return docs
}

// decodeStrict decodes node into v, failing on any key v does not declare:
// a misspelt field name in a manifest is an error here, not a field the
// API server drops.
func decodeStrict(node *yaml.Node, v any) error {
	raw, err := yaml.Marshal(node)
	if err != nil {
		return err
	}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	return dec.Decode(v)
}

// mappingValue returns the value of key in mapping node n (a document node
// is looked through), or nil.
func mappingValue(n *yaml.Node, key string) (keyNode, value *yaml.Node) {
	if n != nil && n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	if n == nil || n.Kind != yaml.MappingNode {
		return nil, nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i], n.Content[i+1]
		}
	}
	return nil, nil
}

// portOf returns the port of a host:port address.
func portOf(t *testing.T, addr string) int {
	t.Helper()
	i := strings.LastIndex(addr, ":")
	if i < 0 {
		t.Fatalf("%q has no port", addr)
	}
	p, err := strconv.Atoi(addr[i+1:])
	if err != nil {
		t.Fatalf("%q: port: %v", addr, err)
	}
	return p
}

// quantity parses a Kubernetes quantity ("500m", "256Mi", "1G", "2") or a
// GOMEMLIMIT value ("450MiB") into base units (cores or bytes).
func quantity(s string) (float64, error) {
	s = strings.TrimSpace(s)
	units := []struct {
		suffix string
		mult   float64
	}{
		{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
		{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"Ti", 1 << 40},
		{"k", 1e3}, {"M", 1e6}, {"G", 1e9}, {"T", 1e12},
		{"m", 1e-3}, {"B", 1},
	}
	for _, u := range units {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			v, err := strconv.ParseFloat(num, 64)
			if err != nil {
				return 0, fmt.Errorf("quantity %q: %w", s, err)
			}
			return v * u.mult, nil
		}
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, fmt.Errorf("quantity %q: %w", s, err)
	}
	return v, nil
}
