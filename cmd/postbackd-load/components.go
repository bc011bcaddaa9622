package main

import (
	"fmt"
	"os"
	"regexp"
	"slices"

	"github.com/google/pprof/profile"
)

// A flat CPU top-20 of postbackd is runtime internals (syscalls, malloc,
// scheduling) that say little about which part of the service to work on.
// The in-process profile is therefore also summarised by component: each
// sample goes to the first component any frame of its stack matches, in the
// order below, so a sample of the garbage collector's assist inside an HTTP
// send counts as garbage collection, and one of the event goroutine that is in
// neither Redis, HTTP nor the audit counts as pipeline logic.
//
// The harness's own samples (its tracker's server, the producer, the
// measurement loop) are left out: the shares are of postbackd's CPU.

// component is one row of the breakdown: a name and the frame patterns
// (regular expressions on function names) that claim a sample.
type component struct {
	name     string
	patterns []*regexp.Regexp
}

func frames(patterns ...string) []*regexp.Regexp {
	rs := make([]*regexp.Regexp, len(patterns))
	for i, p := range patterns {
		rs[i] = regexp.MustCompile(p)
	}
	return rs
}

// harnessFrames claim the samples that are not postbackd's.
var harnessFrames = frames(`^net/http\.\(\*conn\)\.serve$`, `/internal/tracker\.`, `^main\.`)

// components, in the order they claim samples.
var components = []component{
	{"garbage collection (background marking, assists, sweeping)", frames(`^runtime\.gcBgMarkWorker`, `^runtime\.gcAssistAlloc`, `^runtime\.bgsweep`, `^runtime\.bgscavenge`, `^runtime\.markroot`, `^runtime\.gcStart`)},
	{"HTTP send (fasthttp client: request, answer, connections; dispatcher)", frames(`/valyala/fasthttp`, `/dispatcher\.`)},
	{"Redis (coalescers, scripts, go-redis pipelines)", frames(`/go-redis/`, `/postbackd/dedupe\.`, `/internal/batch\.`, `batchedStore`)},
	{"audit and DLQ records (encode, kafka-go writer and its connections, compression)", frames(`/kafka-go\.\(\*(Writer|partitionWriter|writeBatch|conn|Client|Transport|connPool)\)`, `/kafka-go/(protocol|compress)`, `/postbackd/record\.`, `\(\*outputs\)\.add$`, `\)\.emitAudit$`, `\(\*Pipeline\)\.flush$`, `/klauspost/`)},
	{"Kafka fetch and commit (kafka-go reader, consumer's fetch, offsets, scheduler)", frames(`/kafka-go\.`, `/consumer\.\(\*Consumer\)\.(fetch|commit\w*)$`, `/consumer\.\(\*scheduler\)\.(dispatch|acquire|start)$`, `/consumer\.\(\*(tracker|partition)\)`)},
	{"decode + validate", frames(`/postbackd/event\.`)},
	{"pipeline logic (routing, classification, ids, records, metrics)", frames(`/postbackd/(pipeline|postback|consumer)\.`, `/prometheus/`, `/decimalfmt\.`)},
	{"goroutine scheduling and switches", frames(`^runtime\.(schedule|mcall|park_m|goexit0|findRunnable|gopark|selectgo|chansend|chanrecv)`)},
}

// otherComponent takes what no component claims.
const otherComponent = "other (runtime, syscalls outside the above)"

// share is one component's part of postbackd's CPU samples.
type share struct {
	name     string
	fraction float64
}

// componentShares reads a CPU profile and returns each component's share of
// postbackd's samples, largest first, and postbackd's CPU seconds.
func componentShares(path string) ([]share, float64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	p, err := profile.Parse(f)
	if err != nil {
		return nil, 0, fmt.Errorf("parse %s: %w", path, err)
	}
	vi := cpuSampleIndex(p)
	if vi < 0 {
		return nil, 0, fmt.Errorf("%s: no cpu sample type", path)
	}
	totals := map[string]int64{}
	var own int64
	for _, s := range p.Sample {
		names := sampleFunctions(s)
		if matchesAny(names, harnessFrames) {
			continue
		}
		v := s.Value[vi]
		own += v
		totals[classify(names)] += v
	}
	if own == 0 {
		return nil, 0, fmt.Errorf("%s: no postbackd samples", path)
	}
	shares := make([]share, 0, len(totals))
	for name, v := range totals {
		shares = append(shares, share{name, float64(v) / float64(own)})
	}
	slices.SortFunc(shares, func(a, b share) int {
		switch {
		case a.fraction > b.fraction:
			return -1
		case a.fraction < b.fraction:
			return 1
		}
		return 0
	})
	return shares, float64(own) / 1e9, nil
}

// cpuSampleIndex is the index of the "cpu" (nanoseconds) value of a
// runtime/pprof CPU profile, -1 if it has none.
func cpuSampleIndex(p *profile.Profile) int {
	for i, st := range p.SampleType {
		if st.Type == "cpu" {
			return i
		}
	}
	return -1
}

// sampleFunctions lists the function names of a sample's stack, leaf first,
// inlined frames included.
func sampleFunctions(s *profile.Sample) []string {
	var names []string
	for _, loc := range s.Location {
		for _, l := range loc.Line {
			if l.Function != nil {
				names = append(names, l.Function.Name)
			}
		}
	}
	return names
}

func classify(names []string) string {
	for _, c := range components {
		if matchesAny(names, c.patterns) {
			return c.name
		}
	}
	return otherComponent
}

func matchesAny(names []string, patterns []*regexp.Regexp) bool {
	for _, n := range names {
		for _, p := range patterns {
			if p.MatchString(n) {
				return true
			}
		}
	}
	return false
}
