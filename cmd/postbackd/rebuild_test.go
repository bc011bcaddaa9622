package main

import (
	"testing"
	"time"
)

func TestParseTime(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"6h":                        now.Add(-6 * time.Hour),
		"90m":                       now.Add(-90 * time.Minute),
		"2026-12-01T03:00:00Z":      time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC),
		"2026-12-01T04:00:00+01:00": time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC),
	} {
		got, err := parseTime(in, now)
		if err != nil || !got.Equal(want) {
			t.Errorf("parseTime(%q) = %s, %v; want %s", in, got, err, want)
		}
	}
	for _, in := range []string{"yesterday", "-6h", "0s", "2026-12-02T00:00:00Z", ""} {
		if got, err := parseTime(in, now); err == nil {
			t.Errorf("parseTime(%q) = %s, want an error", in, got)
		}
	}
}
