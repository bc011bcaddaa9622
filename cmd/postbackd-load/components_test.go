package main

import (
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/pprof/profile"
)

// TestComponentShares writes a CPU profile with known stacks and checks the
// breakdown: the harness's samples are left out, a sample goes to the first
// component that claims any of its frames (GC assist inside an HTTP send is
// GC), the rest of an event's work is pipeline logic, and the shares add up.
func TestComponentShares(t *testing.T) {
	fn := map[string]*profile.Function{}
	loc := map[string]*profile.Location{}
	var nextID uint64
	location := func(name string) *profile.Location {
		if l, ok := loc[name]; ok {
			return l
		}
		nextID++
		f := &profile.Function{ID: nextID, Name: name}
		fn[name] = f
		l := &profile.Location{ID: nextID, Line: []profile.Line{{Function: f}}}
		loc[name] = l
		return l
	}
	sample := func(ms int64, stack ...string) *profile.Sample {
		s := &profile.Sample{Value: []int64{1, ms * int64(time.Millisecond)}}
		for _, name := range stack { // leaf first
			s.Location = append(s.Location, location(name))
		}
		return s
	}
	p := &profile.Profile{
		SampleType: []*profile.ValueType{{Type: "samples", Unit: "count"}, {Type: "cpu", Unit: "nanoseconds"}},
		PeriodType: &profile.ValueType{Type: "cpu", Unit: "nanoseconds"},
		Period:     int64(10 * time.Millisecond),
		Sample: []*profile.Sample{
			// the harness: left out
			sample(500, "syscall.write", "net/http.(*conn).serve"),
			sample(100, "encoding/json.Marshal", "main.(*latencyProbe).offer"),
			// postbackd
			sample(300, "syscall.write", "github.com/valyala/fasthttp.(*HostClient).Do"),
			sample(100, "runtime.gcAssistAlloc", "runtime.mallocgc", "github.com/postbackd/postbackd/dispatcher.(*partner).render", "github.com/postbackd/postbackd/consumer.(*scheduler).worker"),
			sample(200, "github.com/redis/go-redis/v9.(*Pipeline).Exec", "github.com/postbackd/postbackd/internal/batch.(*Coalescer[...]).run"),
			sample(150, "github.com/postbackd/postbackd/record.appendString", "github.com/postbackd/postbackd/pipeline.(*outputs).add", "github.com/postbackd/postbackd/pipeline.(*Pipeline).handle", "github.com/postbackd/postbackd/consumer.(*Consumer).fetch.func1"),
			sample(150, "github.com/postbackd/postbackd/postback.NewID", "github.com/postbackd/postbackd/pipeline.(*Pipeline).handle", "github.com/postbackd/postbackd/consumer.(*Consumer).fetch.func1"),
			sample(100, "runtime.futex", "runtime.findRunnable", "runtime.schedule"),
		},
	}
	for _, f := range fn {
		p.Function = append(p.Function, f)
	}
	for _, l := range loc {
		p.Location = append(p.Location, l)
	}
	path := filepath.Join(t.TempDir(), "cpu.prof")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Write(f); err != nil {
		t.Fatal(err)
	}
	f.Close()

	shares, secs, err := componentShares(path)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(secs-1.0) > 1e-9 {
		t.Errorf("postbackd's seconds = %v, want 1.0 (the harness's 0.6 s left out)", secs)
	}
	want := map[string]float64{
		components[1].name: 0.30, // HTTP
		components[2].name: 0.20, // Redis
		components[3].name: 0.15, // audit
		components[6].name: 0.15, // pipeline logic
		components[0].name: 0.10, // GC assist inside render
		components[7].name: 0.10, // scheduling
	}
	got := map[string]float64{}
	sum := 0.0
	for i, s := range shares {
		got[s.name] = s.fraction
		sum += s.fraction
		if i > 0 && s.fraction > shares[i-1].fraction {
			t.Errorf("shares not largest first: %v", shares)
		}
	}
	for name, w := range want {
		if math.Abs(got[name]-w) > 1e-9 {
			t.Errorf("%s: share %.3f, want %.3f", name, got[name], w)
		}
	}
	if len(got) != len(want) || math.Abs(sum-1) > 1e-9 {
		t.Errorf("shares %v: want exactly %d components adding up to 1", shares, len(want))
	}
}
