package service

import "runtime/debug"

// DefaultGCPercent is the garbage collector's target (GOGC) of `postbackd
// run` (and of the load harness's in-process run) when the environment sets
// none. Go's default of 100 collects whenever the heap doubles over its live
// part; postbackd's live heap is small (tens of MiB: the events in flight) and
// its allocation rate high (every event's records, Redis replies and HTTP
// request), so at 100 it collects about ten times a second at full speed, much
// of each cycle scanning the stacks of the events in flight. Measured with GODEBUG=gctrace=1 over 60 000 deposits:
// 71 cycles and 1.35 s of GC CPU (17 % of the process's) at 100, 31 cycles and
// 0.51 s at 200, for 24 MiB more peak RSS (docs/performance.md). GOGC and
// GOMEMLIMIT in the environment are the operator's and always win.
const DefaultGCPercent = 200

// ApplyGCDefault sets DefaultGCPercent unless GOGC is set, and says whether it
// did; previous is the percent it replaced, for a caller that restores it.
func ApplyGCDefault(getenv func(string) string) (previous int, set bool) {
	if getenv("GOGC") != "" {
		return 0, false
	}
	return debug.SetGCPercent(DefaultGCPercent), true
}
