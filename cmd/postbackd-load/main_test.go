package main

import (
	"bytes"
	"context"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestSmoke runs a small load through the real harness. It measures
// nothing: a run on shared CI cores says nothing about speed, so the test
// checks only that every phase completes and the ratio table is printed.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("the load harness takes tens of seconds; skipped with -short")
	}
	if os.Getenv("KAFKA_BROKERS") == "" || os.Getenv("REDIS_ADDR") == "" {
		t.Skip("the load harness needs a real Kafka and Redis: set KAFKA_BROKERS and REDIS_ADDR (eval \"$(bash scripts/infra.sh up)\")")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	code := run(ctx, []string{"-deposits", "2000", "-clicks", "500", "-naive-events", "50"}, os.Getenv, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	}
	out := stdout.String()
	if !strings.Contains(out, "pipeline (same run, same machine)") {
		t.Fatalf("no ratio table in the output:\n%s", out)
	}
	// Three rows, each with a rate and two ratios.
	row := regexp.MustCompile(`(?m)^(naive: one at a time, sync audit|postbackd|raw HTTP leg, 1 connection) +\d+ +\d+\.\d\dx +\d+\.\d\dx$`)
	rows := row.FindAllStringSubmatch(out, -1)
	if len(rows) != 3 {
		t.Fatalf("ratio table has %d well-formed rows, want 3:\n%s", len(rows), out)
	}
	for i, name := range []string{"naive: one at a time, sync audit", "postbackd", "raw HTTP leg, 1 connection"} {
		if rows[i][1] != name {
			t.Errorf("row %d is %q, want %q", i, rows[i][1], name)
		}
	}
	if strings.Contains(out+stderr.String(), "load-secret") {
		t.Error("the output holds the load run's partner token")
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
