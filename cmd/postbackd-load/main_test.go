package main

import (
	"bytes"
	"context"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestSmoke runs a small load through the real harness: the real postbackd
// binary, Kafka and Redis. It measures nothing: a run on shared CI cores
// says nothing about speed, so the test checks only that every phase
// completes and the table is printed.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("the load harness takes a minute or more; skipped with -short")
	}
	if os.Getenv("KAFKA_BROKERS") == "" || os.Getenv("REDIS_ADDR") == "" {
		t.Skip("the load harness needs a real Kafka and Redis: set KAFKA_BROKERS and REDIS_ADDR (eval \"$(bash scripts/infra.sh up)\")")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	code := run(ctx, []string{"-deposits", "2000", "-clicks", "500", "-naive-events", "50", "-latency", "2s", "-latency-at", "0.2,0.4",
		"-mixed-clicks", "400", "-backlog", "3000", "-scaleout", "1,2", "-scaleout-events", "3000", "-rebalance-rate", "200"},
		os.Getenv, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	}
	out := stdout.String()
	for _, want := range []string{
		"reproduce: go run ./cmd/postbackd-load -deposits 2000 ",
		"\nmeasurement ",
		"http-1conn: raw HTTP leg",
		"deposit-only stream: 2 000 deposits",
		"mixed funnel (steady: clicks at every stage of their life, their history consumed first): 400 clicks",
		"mixed funnel (cold: every stage of every click at once, the topics racing): 400 clicks",
		"backlog: 3 000 deposits",
		"scale-out: 3 000 deposits",
		"rebalance pause:",
		"check: adding a member never lowers the total",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the output lacks %q", want)
		}
	}
	// Rows with a figure and a ratio.
	for _, re := range []string{
		`(?m)^  postbacks/s, first to last postback +[\d ]+ /s +\d+\.\d\dx +http-1conn$`,
		`(?m)^  the clicks' history, consumed first a stage at a time \(not measured\) +3 000 events in [\d.]+ (ms|s)$`,
		`(?m)^  postbacks expected and received +2 200 / 2 200$`,
		`(?m)^  http-1conn again: the raw HTTP leg after every phase +[\d ]+ req/s +\d+\.\d\dx +http-1conn$`,
		`(?m)^  the leg's mean over the run \(first and last measurement\) +[\d ]+ req/s +\d+\.\d\dx +http-1conn$`,
		`(?m)^  deposit-only stream: postbacks/s against that mean +[\d ]+ /s +\d+\.\d\dx +the leg's mean$`,
		`(?m)^  mixed funnel \(steady\): postbacks/s against that mean +[\d ]+ /s +\d+\.\d\dx +the leg's mean$`,
		`(?m)^  mixed funnel \(cold\): postbacks/s against that mean +[\d ]+ /s +\d+\.\d\dx +the leg's mean$`,
		`(?m)^  http-1conn-fasthttp: the same leg with fasthttp \(postbackd's HTTP library, defaults\) +[\d ]+ req/s +\d+\.\d\dx +http-1conn$`,
		`(?m)^ +\d+\.\d\dx +http-1conn-fasthttp$`,
		`(?m)^  CPU seconds per 10 000 postbacks \(postbackd subprocess\) +\d+\.\d+ s +[\d.]+x +http-1conn CPU per 10 000$`,
		`(?m)^  peak RSS \(VmHWM, whole life\) +[\d.]+ MiB +[\d.]+x +its RSS at start`,
		`(?m)^  Redis round trips per event \([\d ]+ events\) +\d+\.\d+ +[\d.]+x +naive$`,
		`(?m)^  p999 +[\d.]+ (µs|ms|s) +[\d.]+x +http-1conn round trip$`,
		`(?m)^  machine CPU busy first to last postback \(all processes, \d+ cores\) +\d+ % +[\d.]+x +all cores busy$`,
		`(?m)^    stolen by the hypervisor meanwhile +\d+ % +[\d.]+x +all cores$`,
		`(?m)^  k=2 again: total postbacks/s, (group settled|first to last) +[\d ]+ /s +[\d.]+x +k=1`,
		`(?m)^  k=2: mean of its 2 runs +[\d ]+ /s +[\d.]+x +k=1 mean$`,
		`(?m)^  CPU seconds per 10 000 postbacks at that rate \(postbackd\) +\d+\.\d+ s +[\d.]+x +deposit-only stream$`,
		`(?m)^  thread switches per postback \(postbackd subprocess, all threads\) +\d+\.\d +blocked or preempted$`,
		`(?m)^  thread switches per postback at that rate \(postbackd\) +\d+\.\d +[\d.]+x +deposit-only stream$`,
		`(?m)^  longest gap when a member is killed \(kill -9\) +[\d.]+ (µs|ms|s) +[\d.]+x +steady reference$`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("no row matching %s", re)
		}
	}
	// One latency section per rate asked for, in order. The fraction shown
	// is the rate achieved, which a slow write to Kafka lowers: only the
	// order is certain.
	sections := regexp.MustCompile(`(?m)^latency, publication to tracker, at [\d ]+ deposits/s offered \(([\d.]+)x of the measured rate\)`).FindAllStringSubmatch(out, -1)
	if len(sections) != 2 {
		t.Errorf("latency sections %q, want two (at 0.2 and 0.4 of the rate)", sections)
	} else {
		lo, err1 := strconv.ParseFloat(sections[0][1], 64)
		hi, err2 := strconv.ParseFloat(sections[1][1], 64)
		if err1 != nil || err2 != nil || lo <= 0 || lo >= hi || lo > 0.2 || hi > 0.4 {
			t.Errorf("latency sections at %sx then %sx, want up to 0.2x then up to 0.4x", sections[0][1], sections[1][1])
		}
	}
	if strings.Contains(out, "NOT MEASURED") {
		t.Errorf("a phase was not measured")
	}
	if strings.Contains(out+stderr.String(), loadToken) {
		t.Error("the output holds the load run's partner token")
	}
	if t.Failed() {
		t.Logf("stdout:\n%s\nstderr:\n%s", out, stderr.String())
	}
}

func TestUsage(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"no infrastructure", nil, nil, "set KAFKA_BROKERS and REDIS_ADDR"},
		{"no redis", []string{"-brokers", "127.0.0.1:1"}, nil, "set KAFKA_BROKERS and REDIS_ADDR"},
		{"unknown flag", []string{"-nope"}, nil, "flag provided but not defined: -nope"},
		{"bad scale-out", []string{"-scaleout", "1,x"}, nil, "-scaleout: want a comma-separated list"},
		{"negative backlog", []string{"-backlog", "-1"}, nil, "not negative"},
		{"stray argument", []string{"now"}, nil, "unexpected arguments: now"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), tt.args, func(k string) string { return tt.env[k] }, &stdout, &stderr)
			if code != 2 {
				t.Errorf("exit %d, want 2", code)
			}
			if !strings.Contains(stderr.String(), tt.want) {
				t.Errorf("stderr lacks %q:\n%s", tt.want, stderr.String())
			}
		})
	}
}

// The printed reproduce command parses: every flag it names exists and
// takes its value (the run then stops only for want of infrastructure).
func TestCommandParses(t *testing.T) {
	o := options{deposits: 1, clicks: 2, partitions: 3, naive: 4, maxInFlight: 5, latencyFor: time.Second, latencyAt: []float64{0.25, 0.5}, mixedClicks: 6,
		mixedShapes: []funnelShape{shapeCold}, backlog: 7, scaleout: []int{1, 2}, scaleoutEvents: 8, scaleoutPartitions: 9, rebalanceRate: 10.5, timeout: time.Minute, cpuProfile: "p"}
	// The shapes are named as given, the default when none are.
	if c := o.command(); !strings.Contains(c, " -mixed-shapes cold ") {
		t.Errorf("%s: want -mixed-shapes cold", c)
	}
	if c := (options{}).command(); !strings.Contains(c, " -mixed-shapes "+defaultMixedShapes+" ") {
		t.Errorf("%s: want -mixed-shapes %s", c, defaultMixedShapes)
	}
	for _, cmd := range []string{o.command(), options{naive: 2, rebalanceRate: 1}.command()} {
		args := strings.Fields(strings.TrimPrefix(cmd, "go run ./cmd/postbackd-load "))
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), args, func(string) string { return "" }, &stdout, &stderr)
		if code != 2 || !strings.Contains(stderr.String(), "set KAFKA_BROKERS") && !strings.Contains(stderr.String(), "must be positive") {
			t.Errorf("%s: exit %d: %s", cmd, code, stderr.String())
		}
	}
}

func TestNoDesignDocMention(t *testing.T) {
	files, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if !strings.HasSuffix(f.Name(), ".go") {
			continue
		}
		b, err := os.ReadFile(f.Name())
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte("DESIGN"+".md")) {
			t.Errorf("%s mentions a document the repository does not have", f.Name())
		}
	}
}
