package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

func TestRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// stdout is a file, as when the demo's output is redirected to a log:
	// not a terminal, so no \r progress frames.
	f, err := os.CreateTemp(t.TempDir(), "stdout")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var stderr bytes.Buffer
	code := run(ctx, []string{"--players", "5"}, f, &stderr)
	b, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	stdout := string(b)
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr.String())
	}
	for _, s := range []string{
		"postbackd demo: in-process Kafka",
		"feeding 10 player journeys (casino-1 5, dating-1 5), ", // --players is per merchant
		"\n10 player journeys, ",
		"audit records",
		"accepted by the partner's success rule",
		"partner",
		"(replay)   the postback was delivered before",
		"sample postbacks as audited (tokens redacted):",
	} {
		if !strings.Contains(stdout, s) {
			t.Errorf("stdout lacks %q:\n%s", s, stdout)
		}
	}
	if strings.Contains(stdout, "\r") {
		t.Errorf("stdout, a file, holds \\r progress frames: %q", stdout)
	}
	for _, secret := range []string{"demo-scaleo-secret", "demo-dating-secret"} {
		if strings.Contains(stdout+stderr.String(), secret) {
			t.Errorf("the output holds the token %s", secret)
		}
	}
	if stderr.Len() > 0 {
		t.Errorf("stderr = %q, want nothing", stderr.String())
	}
}

func TestRunUsage(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown flag", []string{"--nope"}, "flag provided but not defined: -nope"},
		{"bad players", []string{"--players", "many"}, "invalid value \"many\""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := run(context.Background(), tt.args, &stdout, &stderr); code != 2 {
				t.Errorf("exit %d, want 2", code)
			}
			if !strings.Contains(stderr.String(), tt.want) {
				t.Errorf("stderr lacks %q:\n%s", tt.want, stderr.String())
			}
		})
	}
}

func TestRunCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var stdout, stderr bytes.Buffer
	if code := run(ctx, []string{"--players", "5"}, &stdout, &stderr); code != 1 {
		t.Errorf("exit %d with a cancelled context, want 1", code)
	}
	if !strings.Contains(stderr.String(), "demo:") {
		t.Errorf("stderr does not say why: %q", stderr.String())
	}
}
