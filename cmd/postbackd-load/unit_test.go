package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/pprof/profile"
	"github.com/prometheus/procfs"
	"github.com/segmentio/kafka-go"

	"github.com/postbackd/postbackd/config"
	"github.com/postbackd/postbackd/event"
)

func TestMachineCPU(t *testing.T) {
	// Idle and iowait are idle; guest is inside user already.
	m := machineCPUOf(procfs.CPUStat{User: 10, Nice: 1, System: 4, Idle: 30, Iowait: 5, IRQ: 1, SoftIRQ: 2, Steal: 1, Guest: 7})
	if m.busy != 18 || m.steal != 1 || m.total != 54 {
		t.Errorf("machineCPUOf = %+v, want busy 18 and steal 1 of 54", m)
	}
	later := machineCPU{busy: m.busy + 3, steal: m.steal + 0.5, total: m.total + 4}
	if s, ok := later.sharesSince(m); !ok || s.busy != 0.75 || s.steal != 0.125 {
		t.Errorf("sharesSince = %+v, %v; want busy 0.75, steal 0.125", s, ok)
	}
	if _, ok := m.sharesSince(m); ok {
		t.Error("shares over no time")
	}
	if _, err := os.Stat("/proc/stat"); err != nil {
		t.Skip("no /proc: not Linux")
	}
	// On this machine: the totals move on while this test burns CPU, and
	// the busy share lies in (0, 1].
	first, err := readMachineCPU()
	if err != nil || first.total <= 0 || first.busy <= 0 || first.busy+first.steal > first.total {
		t.Fatalf("readMachineCPU = %+v, %v", first, err)
	}
	start := time.Now()
	x := 0.0
	for i := 0; ; i++ {
		x += math.Sqrt(float64(i))
		if i%1_000_000 != 0 {
			continue
		}
		now, err := readMachineCPU()
		if err != nil {
			t.Fatal(err)
		}
		// A tenth of a second of burning: this test's own core has ticked
		// busy by then (the kernel counts in hundredths).
		if time.Since(start) < 100*time.Millisecond {
			continue
		}
		s, ok := now.sharesSince(first)
		if !ok {
			if time.Since(start) > 10*time.Second {
				t.Fatal("/proc/stat did not move in 10 s")
			}
			continue
		}
		// Each share is its own division, so their sum may pass 1 by a
		// rounding error (0.952380952404 + 0.047619047621 once, with
		// every tick of the window busy or stolen).
		if s.busy <= 0 || s.busy+s.steal > 1+1e-9 || s.cores < 1 {
			t.Errorf("shares %+v while this test burns CPU (%v)", s, x)
		}
		return
	}
}

func TestParseFractions(t *testing.T) {
	got, err := parseFractions(" 0.25, 0.5 ,1")
	if err != nil || !slices.Equal(got, []float64{0.25, 0.5, 1}) {
		t.Errorf("parseFractions = %v, %v", got, err)
	}
	for _, bad := range []string{"", "0", "-0.5", "1.5", "0.5,,0.25", "half", "NaN"} {
		if _, err := parseFractions(bad); err == nil {
			t.Errorf("parseFractions(%q) succeeded", bad)
		}
	}
}

// The readers work on a live process (this one).
func TestProcSelf(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc: not Linux")
	}
	x := 0.0
	for i := range 20_000_000 { // burn a little CPU
		x += math.Sqrt(float64(i))
	}
	cpu, err := procCPU(os.Getpid())
	if err != nil || cpu <= 0 {
		t.Errorf("procCPU = %v, %v (%v)", cpu, err, x)
	}
	mem, err := procMem(os.Getpid())
	if err != nil || mem.rss <= 0 || mem.hwm < mem.rss {
		t.Errorf("procMem = %+v, %v", mem, err)
	}
	// With nothing else to run, a sleeping goroutine's thread blocks in
	// the kernel: each sleep is a switch, and the count over all threads
	// grows.
	before, err := procSwitches(os.Getpid())
	if err != nil {
		t.Fatal("procSwitches:", err)
	}
	for range 10 {
		time.Sleep(time.Millisecond)
	}
	after, err := procSwitches(os.Getpid())
	if err != nil || after <= before {
		t.Errorf("procSwitches %d then %d, %v", before, after, err)
	}
}

const exposition = `# HELP postbackd_redis_duration_seconds Latency of Redis operations.
# TYPE postbackd_redis_duration_seconds histogram
postbackd_redis_duration_seconds_bucket{op="classify_batch",le="0.0001"} 0
postbackd_redis_duration_seconds_bucket{op="classify_batch",le="+Inf"} 120
postbackd_redis_duration_seconds_sum{op="classify_batch"} 0.25
postbackd_redis_duration_seconds_count{op="classify_batch"} 120
postbackd_redis_duration_seconds_count{op="claim_batch"} 80
postbackd_redis_duration_seconds_count{op="take_due"} 16
# TYPE postbackd_events_consumed_total counter
postbackd_events_consumed_total{result="ok",topic="load.deposits"} 1000
postbackd_events_consumed_total{result="retried",topic="load.deposits"} 7
postbackd_events_consumed_total{result="invalid",topic="load.revenue"} 2
postbackd_in_flight_events 12
postbackd_postbacks_total{goal="ftd",outcome="delivered",partner="a \"quoted\\ name\"\n"} 5
go_gc_duration_seconds{quantile="0.5"} 1.5e-05
process_start_time_seconds 1.76e+09
`

func TestParseProm(t *testing.T) {
	s, err := parseProm(exposition)
	if err != nil {
		t.Fatal(err)
	}
	if len(s) != 13 {
		t.Errorf("%d samples, want 13", len(s))
	}
	i := slices.IndexFunc(s, func(p promSample) bool { return p.name == "postbackd_postbacks_total" })
	if i < 0 || s[i].labels["partner"] != "a \"quoted\\ name\"\n" || s[i].labels["outcome"] != "delivered" || s[i].value != 5 {
		t.Errorf("escaped label: %+v", s[i])
	}
	tot := totals(s)
	if tot.redisTotal() != 216 || tot.redisByOp["claim_batch"] != 80 || tot.events != 1002 || tot.inFlight != 12 {
		t.Errorf("totals = %+v", tot)
	}
	later := totals(s)
	later.redisByOp["classify_batch"] += 30
	later.redisByOp["qualify"] = 4
	later.events += 100
	d := later.sub(tot)
	if d.events != 100 || d.redisTotal() != 34 || len(d.redisByOp) != 2 {
		t.Errorf("sub = %+v", d)
	}
	if sum := d.add(d); sum.events != 200 || sum.redisByOp["qualify"] != 8 {
		t.Errorf("add = %+v", sum)
	}
	for _, bad := range []string{"x{op=\"a} 1", "x{op=a} 1", "x", "x{} nan?"} {
		if _, err := parseProm(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestPercentiles(t *testing.T) {
	lat := make([]time.Duration, 2000)
	for i := range lat {
		lat[i] = time.Duration(i+1) * time.Millisecond
	}
	r := percentiles(lat)
	want := latencyResult{n: 2000, p50: 1000 * time.Millisecond, p95: 1900 * time.Millisecond, p99: 1980 * time.Millisecond,
		p999: 1998 * time.Millisecond, pmax: 2000 * time.Millisecond}
	if r != want {
		t.Errorf("percentiles = %+v, want %+v", r, want)
	}
	if r := percentiles(lat[:1]); r.p50 != time.Millisecond || r.p999 != time.Millisecond {
		t.Errorf("one sample: %+v", r)
	}
	if r := percentiles(nil); r.n != 0 {
		t.Errorf("no samples: %+v", r)
	}
}

func TestLongestGap(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 6, 0, 0, 0, time.UTC)
	at := func(ms ...int) []time.Time {
		var out []time.Time
		for _, m := range ms {
			out = append(out, t0.Add(time.Duration(m)*time.Millisecond))
		}
		return out
	}
	ms := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	tests := []struct {
		arr      []time.Time
		from, to int
		want     time.Duration
	}{
		{at(0, 10, 20, 300, 310), 0, 310, 280 * time.Millisecond},
		{at(0, 10, 20, 300, 310), 15, 25, 5 * time.Millisecond},                 // the window's ends count
		{at(0, 10, 20, 300, 310), 100, 200, 100 * time.Millisecond},             // nothing in the window
		{at(0, 10, 20, 300, 310, 2000), 0, 1000, 690 * time.Millisecond},        // to the window's end
		{at(-50, 5, 10), 0, 10, 5 * time.Millisecond},                           // arrivals before the window ignored
		{nil, 0, 50, 50 * time.Millisecond},                                     // no arrivals at all
		{at(100, 100, 100), 0, 200, 100 * time.Millisecond},                     // simultaneous arrivals
		{at(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11), 0, 11, 1 * time.Millisecond}, // steady
	}
	for i, tt := range tests {
		if got := longestGap(tt.arr, ms(tt.from), ms(tt.to)); got != tt.want {
			t.Errorf("%d: longestGap = %s, want %s", i, got, tt.want)
		}
	}
}

func TestProbeWindows(t *testing.T) {
	p := newLatencyProbe("lat-x-", merchantDeposits)
	t0 := time.Now()
	for i := range 10 {
		m := p.message(i, t0)
		p.sent[string(m.Key)] = t0.Add(time.Duration(i) * time.Second)
		if i != 3 { // one never arrives
			p.received[string(m.Key)] = t0.Add(time.Duration(i)*time.Second + time.Duration(i+1)*time.Millisecond)
		}
	}
	if got := p.latencies(t0.Add(2*time.Second), t0.Add(5*time.Second)); !slices.Equal(got, []time.Duration{3 * time.Millisecond, 5 * time.Millisecond}) {
		t.Errorf("latencies in [2s, 5s) = %v", got)
	}
	if n := p.sentIn(t0.Add(2*time.Second), t0.Add(5*time.Second)); n != 3 {
		t.Errorf("sentIn = %d, want 3", n)
	}
	if a := p.arrivals(); len(a) != 9 || !slices.IsSortedFunc(a, func(x, y time.Time) int { return x.Compare(y) }) {
		t.Errorf("arrivals = %v", a)
	}
}

func TestSlowestWindow(t *testing.T) {
	t0 := time.Now()
	var s []countSample
	n := int64(0)
	for i := 0; i <= 400; i++ { // 40 s, 100 ms apart
		rate := int64(1000) // per 100 ms: 10 000/s
		if i > 200 && i <= 250 {
			rate = 500 // 5 s at 5 000/s
		}
		if i > 0 {
			n += rate
		}
		s = append(s, countSample{t0.Add(time.Duration(i) * 100 * time.Millisecond), n})
	}
	got := slowestWindow(s, 10*time.Second)
	if math.Abs(got-7500) > 1 {
		t.Errorf("slowest 10 s window = %.0f/s, want 7500 (5 s at 5 000 and 5 s at 10 000)", got)
	}
	if got := slowestWindow(s[:150], 10*time.Second); got != 0 {
		t.Errorf("a 15 s run: %.0f, want 0 (shorter than two windows)", got)
	}
}

func TestStableSince(t *testing.T) {
	t0 := time.Now()
	mk := func(gens ...int32) *member {
		m := &member{}
		for i, g := range gens {
			m.gens = append(m.gens, generation{id: g, at: t0.Add(time.Duration(i) * time.Second)})
		}
		return m
	}
	if at := stableSince([]*member{mk(1, 2), mk(2)}); !at.Equal(t0.Add(time.Second)) {
		t.Errorf("settled at %v, want the later of the two", at.Sub(t0))
	}
	if at := stableSince([]*member{mk(1, 2), mk(1)}); !at.IsZero() {
		t.Error("members in different generations counted as settled")
	}
	if at := stableSince([]*member{mk(1), mk()}); !at.IsZero() {
		t.Error("a member that joined nothing counted as settled")
	}
}

func TestScaleCheck(t *testing.T) {
	run := func(k int, rate float64) scaleRun {
		return scaleRun{members: k, res: groupResult{stableRate: rate}}
	}
	ok, noise, _ := scaleCheck([]scaleRun{run(1, 10000), run(2, 9700), run(4, 9600), run(1, 10100)}, 0.05)
	if !ok || noise != 0.05 {
		t.Errorf("within noise: ok %v, noise %v", ok, noise)
	}
	ok, noise, worst := scaleCheck([]scaleRun{run(1, 10000), run(2, 9700), run(4, 8000), run(1, 10000)}, 0.05)
	if ok || worst != "2→4 members: -17.5%" {
		t.Errorf("a drop: ok %v, noise %v, worst %q", ok, noise, worst)
	}
	// A noisy repeat widens the tolerance.
	ok, noise, _ = scaleCheck([]scaleRun{run(1, 10000), run(2, 8500), run(4, 8400), run(1, 8000)}, 0.05)
	if !ok || math.Abs(noise-0.2) > 1e-9 {
		t.Errorf("noisy: ok %v, noise %v", ok, noise)
	}
	// Mirrored in time, a steady drift (5 % slower every run) weighs on
	// every size's mean alike: no drop, although 4 members measured after
	// 2 are slower.
	ok, _, worst = scaleCheck([]scaleRun{run(1, 10000), run(2, 9500), run(4, 9000), run(4, 8500), run(2, 8000), run(1, 7500)}, 0.05)
	if !ok || worst != "" {
		t.Errorf("drift: ok %v, worst %q", ok, worst)
	}
	// Without a settled rate, first to last counts.
	r := scaleRun{members: 2, res: groupResult{rate: 123}}
	if r.total() != 123 {
		t.Errorf("total = %v", r.total())
	}
}

func TestScaleOrder(t *testing.T) {
	var got []string
	for _, r := range scaleOrder([]int{1, 2, 4}) {
		got = append(got, fmt.Sprintf("%d%s", r.members, map[bool]string{true: "r"}[r.repeat]))
	}
	if want := "1 2 4 4r 2r 1r"; strings.Join(got, " ") != want {
		t.Errorf("order %v, want %s", got, want)
	}
}

func TestParseShapes(t *testing.T) {
	got, err := parseShapes(" cold,steady ")
	if err != nil || !slices.Equal(got, []funnelShape{shapeCold, shapeSteady}) {
		t.Errorf("parseShapes = %v, %v", got, err)
	}
	if got, err := parseShapes(defaultMixedShapes); err != nil || !slices.Equal(got, []funnelShape{shapeSteady, shapeCold}) {
		t.Errorf("parseShapes(default) = %v, %v", got, err)
	}
	for _, bad := range []string{"", "warm", "steady,,cold", "cold,cold", "steady, steady,cold"} {
		if _, err := parseShapes(bad); err == nil {
			t.Errorf("parseShapes(%q) succeeded", bad)
		}
	}
}

func TestFunnel(t *testing.T) {
	topics := config.Topics{Deposits: "d", Revenue: "r", Registrations: "g", Qualifications: "q"}
	kinds := map[string]event.Kind{"d": event.KindDeposit, "r": event.KindRevenue, "g": event.KindRegistration, "q": event.KindQualification}
	dec, err := event.NewDecoder()
	if err != nil {
		t.Fatal(err)
	}
	base := time.Now().Add(-time.Hour).Truncate(time.Second)
	// collect gathers the topics of a stream's messages per click, and
	// their times, checking that every message is a valid event.
	type msg struct {
		topic string
		at    string
	}
	collect := func(f funnelMix, stream funnelStream) map[string][]msg {
		byClick := map[string][]msg{}
		f.clickStages(stream, func(i int, s funnelStage) {
			f.messages("abc123", i, s, base, topics, func(m kafka.Message) {
				var v struct {
					At     string `json:"occurred_at"`
					Status string `json:"status"`
				}
				_ = json.Unmarshal(m.Value, &v)
				if m.Topic == "q" {
					v.At += " " + v.Status // compare the status across shapes too
				}
				byClick[string(m.Key)] = append(byClick[string(m.Key)], msg{m.Topic, v.At})
				if _, err := dec.Decode(kinds[m.Topic], m.Value); err != nil {
					t.Errorf("click %d, %s: %v\n%s", i, m.Topic, err, m.Value)
				}
				if !bytes.Contains(m.Value, m.Key) {
					t.Errorf("key %s is not the event's click", m.Key)
				}
			})
		})
		return byClick
	}
	perTopic := func(byClick map[string][]msg) funnelCounts {
		var c funnelCounts
		for _, ms := range byClick {
			for _, m := range ms {
				switch m.topic {
				case "g":
					c.registrations++
				case "d":
					c.deposits++
				case "r":
					c.revenue++
				case "q":
					c.qualifications++
				}
			}
		}
		return c
	}
	topicsOf := func(ms []msg) []string {
		var ts []string
		for _, m := range ms {
			ts = append(ts, m.topic)
		}
		return ts
	}

	cold := funnelMix{clicks: 100, shape: shapeCold}
	want := funnelCounts{registrations: 100, deposits: 300, revenue: 50, qualifications: 100}
	if c := cold.counts(cold.measured()); c != want || c.events() != 550 || c.postbacks() != 550 {
		t.Fatalf("cold counts = %+v (%d events)", c, c.events())
	}
	coldStream := collect(cold, cold.measured())
	if c := perTopic(coldStream); c != want || len(coldStream) != 100 {
		t.Errorf("cold messages per topic %+v over %d clicks, want %+v over 100", c, len(coldStream), want)
	}
	// Click 1 (hybrid, one repeat): registration, FTD, repeat, revenue, qualification.
	if got := topicsOf(coldStream[fmt.Sprintf("mixcabc123-%07d", 1)]); !slices.Equal(got, []string{"g", "d", "d", "r", "q"}) {
		t.Errorf("click 1's events: %v", got)
	}

	// For any number of clicks the steady stream holds the cold one's
	// events, over four cohorts: a click of cohort k has the events of
	// the cold shape's click of its index within the cohort, stage k of
	// them in the stream and stage s < k in the history of stage s (with
	// the same times and status), and the cold shape has no history.
	for _, n := range []int{1, 7, 13, 100} {
		cold := funnelMix{clicks: n, shape: shapeCold}
		steady := funnelMix{clicks: n, shape: shapeSteady}
		coldStream := collect(cold, cold.measured())
		measured := collect(steady, steady.measured())
		if c, want := steady.counts(steady.measured()), cold.counts(cold.measured()); c != want || perTopic(measured) != want {
			t.Errorf("%d clicks: steady counts %+v, messages %+v, want the cold shape's %+v", n, c, perTopic(measured), want)
		}
		var histories []map[string][]msg
		for s := range stageQualification {
			if c := cold.counts(cold.history(s)); c.events() != 0 {
				t.Errorf("%d clicks: the cold shape has a history at stage %d: %+v", n, s, c)
			}
			hist := collect(steady, steady.history(s))
			if perTopic(hist) != steady.counts(steady.history(s)) {
				t.Errorf("%d clicks, history stage %d: messages %+v, counts %+v", n, s, perTopic(hist), steady.counts(steady.history(s)))
			}
			histories = append(histories, hist)
		}
		for i := range 4 * n {
			cohort, j := i/n, i%n
			whole := coldStream[fmt.Sprintf("mixcabc123-%07d", j)]
			click := fmt.Sprintf("mixsabc123-%07d", i)
			stages := [][]msg{whole[:1], whole[1:2], whole[2 : len(whole)-1], whole[len(whole)-1:]}
			if got := measured[click]; !slices.Equal(got, stages[cohort]) {
				t.Errorf("%d clicks: click %d (cohort %d) in the stream: %v, want %v", n, i, cohort, got, stages[cohort])
			}
			for s := range stageQualification {
				var want []msg
				if int(s) < cohort {
					want = stages[s]
				}
				if got := histories[s][click]; !slices.Equal(got, want) {
					t.Errorf("%d clicks: click %d (cohort %d) in the history of stage %d: %v, want %v", n, i, cohort, s, got, want)
				}
			}
		}
	}

	// The deposit-only streams and the probe are valid deposits too.
	base = time.Now().Add(-time.Hour)
	for _, m := range []kafka.Message{depositMessage("t", 0, 10, base), depositMessage("t", 12345, 10, base), newLatencyProbe("lat-", merchantDeposits).message(7, time.Now())} {
		if _, err := dec.Decode(event.KindDeposit, m.Value); err != nil {
			t.Errorf("%v\n%s", err, m.Value)
		}
	}
}

func TestConfigParses(t *testing.T) {
	for _, admin := range []bool{false, true} {
		p := phaseConfig{brokers: "127.0.0.1:1,127.0.0.1:2", redisAddr: "127.0.0.1:3", tracker: "127.0.0.1:4", topics: "load-x-dep",
			group: "load-x-dep", keyPrefix: "loadxdep", maxInFlight: 4096, admin: admin}
		cfg, err := p.parse()
		if err != nil {
			t.Fatalf("admin %v: %v", admin, err)
		}
		if cfg.Admin.Disabled == admin || (admin && cfg.Admin.Addr != "127.0.0.1:0") || (admin && cfg.Log.Level != "info") {
			t.Errorf("admin %v: %+v, log %+v", admin, cfg.Admin, cfg.Log)
		}
		if len(cfg.Kafka.Brokers) != 2 || cfg.Topics.Qualifications != "load-x-dep.qualifications" || cfg.Redis.KeyPrefix != "loadxdep" {
			t.Errorf("kafka %v, topics %+v, redis %+v", cfg.Kafka.Brokers, cfg.Topics, cfg.Redis)
		}
		if len(cfg.Merchants) != 3 || cfg.Merchants[merchantHybrid].Deal != config.DealHybrid {
			t.Errorf("merchants %+v", cfg.Merchants)
		}
		if strings.Contains(p.yaml(), loadToken) {
			t.Error("the configuration file holds the token")
		}
	}
}

func TestMemberEnv(t *testing.T) {
	env := memberEnv([]string{"PATH=/bin", "POSTBACKD_ADMIN_ADDR=:1", "LOAD_TOKEN=old", "HOME=/root"})
	if !slices.Equal(env, []string{"PATH=/bin", "HOME=/root", "LOAD_TOKEN=" + loadToken}) {
		t.Errorf("memberEnv = %v", env)
	}
}

func TestMemberLog(t *testing.T) {
	m := &member{adminc: make(chan string, 1), exited: make(chan struct{})}
	log := strings.Join([]string{
		`{"level":"warn","ts":"2026-12-01T06:00:00Z","msg":"redis: neither appendonly nor RDB save points are on"}`,
		`{"level":"info","ts":"2026-12-01T06:00:00Z","msg":"admin server listening","addr":"127.0.0.1:43111"}`,
		`not json`,
		`{"level":"info","msg":"generation joined","generation":3,"member":"m-1","assignments":{"t":[0,1]}}`,
		`{"level":"info","msg":"generation joined","generation":5,"member":"m-1"}`,
	}, "\n")
	m.readLog(strings.NewReader(log))
	if a := <-m.adminc; a != "127.0.0.1:43111" {
		t.Errorf("admin address %q", a)
	}
	if g, _ := m.lastGeneration(); g != 5 || len(m.gens) != 2 {
		t.Errorf("generations %+v", m.gens)
	}
	if !strings.Contains(m.logTail(), "not json") {
		t.Errorf("tail %q", m.logTail())
	}
}

func TestTable(t *testing.T) {
	var tb table
	tb.section("baselines")
	tb.add("http-1conn", perSecond(28574.4, "req/s"), 1, 1, "itself")
	tb.add("postbackd", perSecond(10283, "/s"), 10283, 28574.4, "http-1conn")
	tb.add("", "", 10283, 566, "naive")
	tb.add("nothing to compare", "3", 3, 0, "zero")
	tb.note("a note", "x")
	var b bytes.Buffer
	tb.write(&b)
	want := `measurement                  value  ratio  against (baseline of this run)
baselines
  http-1conn          28 574 req/s  1.00x  itself
  postbackd              10 283 /s  0.36x  http-1conn
                                    18.2x  naive
  nothing to compare             3
  a note                         x
`
	if b.String() != want {
		t.Errorf("table:\n%s\nwant:\n%s", b.String(), want)
	}
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1 000", 1234567: "1 234 567", -12345: "-12 345"} {
		if got := grouped(n); got != want {
			t.Errorf("grouped(%d) = %q, want %q", n, got, want)
		}
	}
	for d, want := range map[time.Duration]string{35 * time.Microsecond: "35.0 µs", 7 * time.Millisecond: "7.00 ms",
		16400 * time.Microsecond: "16.4 ms", 250 * time.Millisecond: "250 ms", 12300 * time.Millisecond: "12.3 s"} {
		if got := dur(d); got != want {
			t.Errorf("dur(%s) = %q, want %q", d, got, want)
		}
	}
	if r := ratio(1, 3); r != "0.33x" {
		t.Errorf("ratio = %q", r)
	}
	if mib(3<<20) != "3.0 MiB" {
		t.Errorf("mib = %q", mib(3<<20))
	}
}

var allocSink [][]byte

//go:noinline
func allocBeforeBase(n int) {
	for range n {
		allocSink = append(allocSink, make([]byte, 1024))
	}
}

//go:noinline
func allocAfterBase(n int) {
	for range n {
		allocSink = append(allocSink, make([]byte, 1024))
	}
}

// TestWriteAllocsSince: the written profile holds what was allocated after
// the base profile was taken, and nothing from before it.
func TestWriteAllocsSince(t *testing.T) {
	defer func(rate int) { runtime.MemProfileRate = rate }(runtime.MemProfileRate)
	runtime.MemProfileRate = 1 // every allocation, so the sums are exact
	allocBeforeBase(300)
	base, err := allocProfile()
	if err != nil {
		t.Fatal(err)
	}
	allocAfterBase(200)
	path := filepath.Join(t.TempDir(), "mem.prof")
	if err := writeAllocsSince(path, base); err != nil {
		t.Fatal(err)
	}
	allocSink = nil
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p, err := profile.Parse(f)
	if err != nil {
		t.Fatal(err)
	}
	space := -1
	for i, st := range p.SampleType {
		if st.Type == "alloc_space" {
			space = i
		}
	}
	if space < 0 {
		t.Fatalf("no alloc_space in %v", p.SampleType)
	}
	bytesIn := map[string]int64{}
	for _, s := range p.Sample {
		for _, name := range sampleFunctions(s) {
			if strings.HasSuffix(name, ".allocBeforeBase") || strings.HasSuffix(name, ".allocAfterBase") {
				bytesIn[name[strings.LastIndexByte(name, '.')+1:]] += s.Value[space]
				break
			}
		}
	}
	if got := bytesIn["allocBeforeBase"]; got != 0 {
		t.Errorf("allocations before the base: %d bytes in the profile, want 0", got)
	}
	if got := bytesIn["allocAfterBase"]; got < 200*1024 {
		t.Errorf("allocations after the base: %d bytes in the profile, want at least %d", got, 200*1024)
	}
}

// A cost meter's window: the growth of each reader since its start; a
// thread-switch total that shrank, a Redis reader that failed or is
// missing, or a meter never started measure nothing.
func TestCostMeter(t *testing.T) {
	cpu, switches, redisCPU := 10.0, uint64(100), 2.0
	redisOK := true
	c := startCosts(func() float64 { return cpu },
		func() (uint64, bool) { return switches, true },
		func() (float64, bool) { return redisCPU, redisOK })
	cpu, switches, redisCPU = 12.5, 130, 2.75
	got := c.since()
	if got.cpu != 2.5 || !got.switchesKnown || got.switches != 30 || !got.redisCPUKnown || got.redisCPU != 0.75 {
		t.Errorf("since = %+v, want cpu 2.5, 30 switches, Redis 0.75", got)
	}
	switches, redisOK = 90, false
	if got := c.since(); got.switchesKnown || got.redisCPUKnown {
		t.Errorf("a shrunk switch total or a failed Redis reading counted: %+v", got)
	}
	noRedis := startCosts(func() float64 { return cpu }, func() (uint64, bool) { return switches, true }, nil)
	if got := noRedis.since(); got.redisCPUKnown {
		t.Errorf("no Redis reader, yet Redis CPU known: %+v", got)
	}
	if got := (costMeter{}).since(); got != (costs{}) {
		t.Errorf("a meter never started measured %+v", got)
	}
}
