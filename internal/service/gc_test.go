package service

import (
	"runtime/debug"
	"testing"
)

// TestGCDefault: `postbackd run` collects at GOGC=200 unless the environment
// sets GOGC, which always wins.
func TestGCDefault(t *testing.T) {
	prev := debug.SetGCPercent(100)
	defer debug.SetGCPercent(prev)

	if _, set := ApplyGCDefault(func(k string) string {
		if k == "GOGC" {
			return "50"
		}
		return ""
	}); set {
		t.Errorf("GOGC=50 in the environment: ApplyGCDefault set %d", DefaultGCPercent)
	}
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("GOGC=50 in the environment: GC percent changed to %d", got)
	}

	previous, set := ApplyGCDefault(func(string) string { return "" })
	if !set || previous != 100 {
		t.Errorf("no GOGC: ApplyGCDefault = %d, %v; want the previous 100, true", previous, set)
	}
	if got := debug.SetGCPercent(100); got != DefaultGCPercent {
		t.Errorf("no GOGC: GC percent is %d, want %d", got, DefaultGCPercent)
	}
}
