//go:build ignore

// testreport reads `go test -json` on stdin and prints what a plain
// `go test` would: package result lines, build errors, and the full output
// of every failed test (passing tests stay quiet). It then lists each skipped
// test with its reason and closes with one counting line,
//
//	LABEL: N passed, N failed, N skipped
//
// so a reader of CI output sees at once how many tests ran. It exits 1 when
// any test or package failed, when nothing ran at all and -require-tests
// is set, or when a test skipped and -forbid-skips is set (a run against
// real servers, where every test that needs one must have run). Run it as `go run scripts/testreport.go -label fakes`.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

type event struct {
	Action      string
	Package     string
	ImportPath  string // build events
	Test        string
	Output      string
	FailedBuild string
}

type report struct {
	out                   io.Writer
	passed, failed, skips int
	pkgFailed             bool
	// buf holds each running test's output until we know whether it failed.
	buf     map[string][]string
	skipped []string
}

func key(pkg, test string) string { return pkg + "\x00" + test }

func (r *report) line(l string) {
	fmt.Fprint(r.out, l)
	if !strings.HasSuffix(l, "\n") {
		fmt.Fprintln(r.out)
	}
}

func (r *report) handle(raw string) {
	var e event
	if !strings.HasPrefix(raw, "{") || json.Unmarshal([]byte(raw), &e) != nil {
		r.line(raw) // non-JSON text: an early go command error
		return
	}
	switch {
	case e.Action == "build-output":
		r.line(e.Output)
	case e.Action == "build-fail":
		r.pkgFailed = true
	case e.Test == "":
		r.handlePackage(e)
	default:
		r.handleTest(e)
	}
}

func (r *report) handlePackage(e event) {
	switch e.Action {
	case "output":
		if e.Output != "PASS\n" && e.Output != "FAIL\n" {
			r.line(e.Output)
		}
	case "fail":
		r.pkgFailed = true
		// Tests still running when the package failed (a timeout panic,
		// a crash): their output is the diagnosis.
		var open []string
		for k := range r.buf {
			if strings.HasPrefix(k, e.Package+"\x00") {
				open = append(open, k)
			}
		}
		sort.Strings(open)
		for _, k := range open {
			r.line(fmt.Sprintf("--- unfinished %s output:", strings.TrimPrefix(k, e.Package+"\x00")))
			for _, l := range r.buf[k] {
				r.line(l)
			}
			delete(r.buf, k)
		}
	}
}

func (r *report) handleTest(e event) {
	k := key(e.Package, e.Test)
	switch e.Action {
	case "output":
		r.buf[k] = append(r.buf[k], e.Output)
	case "pass":
		r.passed++
		delete(r.buf, k)
	case "fail":
		r.failed++
		for _, l := range r.buf[k] {
			r.line(l)
		}
		delete(r.buf, k)
	case "skip":
		r.skips++
		var reason []string
		for _, l := range r.buf[k] {
			t := strings.TrimSpace(l)
			if t == "" || strings.HasPrefix(t, "=== ") || strings.HasPrefix(t, "--- SKIP") {
				continue
			}
			reason = append(reason, t)
		}
		if len(reason) == 0 {
			reason = []string{"(no reason printed)"}
		}
		r.skipped = append(r.skipped, fmt.Sprintf("%s %s: %s", e.Package, e.Test, strings.Join(reason, " | ")))
		delete(r.buf, k)
	}
}

func main() {
	label := flag.String("label", "tests", "one word printed before the counts")
	requireTests := flag.Bool("require-tests", false, "fail when no test ran")
	forbidSkips := flag.Bool("forbid-skips", false, "fail when any test skipped")
	flag.Parse()

	r := &report{out: os.Stdout, buf: map[string][]string{}}
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		r.handle(sc.Text())
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintf(os.Stderr, "testreport: read: %v\n", err)
		os.Exit(1)
	}
	if len(r.skipped) > 0 {
		fmt.Printf("\nskipped tests (%d):\n", len(r.skipped))
		for _, s := range r.skipped {
			fmt.Println("  " + s)
		}
	}
	fmt.Printf("%s: %d passed, %d failed, %d skipped\n", *label, r.passed, r.failed, r.skips)
	switch {
	case r.failed > 0 || r.pkgFailed:
		os.Exit(1)
	case *requireTests && r.passed == 0:
		fmt.Fprintf(os.Stderr, "testreport: %s ran no passing test\n", *label)
		os.Exit(1)
	case *forbidSkips && r.skips > 0:
		fmt.Fprintf(os.Stderr, "testreport: %s must run every test, and %d skipped (listed above)\n", *label, r.skips)
		os.Exit(1)
	}
}
