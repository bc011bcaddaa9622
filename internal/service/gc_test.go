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

	if v, set := ApplyGCDefault(func(k string) string {
		if k == "GOGC" {
			return "50"
		}
		return ""
	}); set {
		t.Errorf("GOGC=50 in the environment: ApplyGCDefault set %d", v)
	}
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("GOGC=50 in the environment: GC percent changed to %d", got)
	}

	v, set := ApplyGCDefault(func(string) string { return "" })
	if !set || v != DefaultGCPercent {
		t.Errorf("no GOGC: ApplyGCDefault = %d, %v; want %d, true", v, set, DefaultGCPercent)
	}
	if got := debug.SetGCPercent(100); got != DefaultGCPercent {
		t.Errorf("no GOGC: GC percent is %d, want %d", got, DefaultGCPercent)
	}
}
