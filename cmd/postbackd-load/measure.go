package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/pprof/profile"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"
	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"github.com/postbackd/postbackd/config"
	"github.com/postbackd/postbackd/internal/redisinfo"
	"github.com/postbackd/postbackd/internal/rediskeys"
	"github.com/postbackd/postbackd/internal/service"
	"github.com/postbackd/postbackd/internal/tracker"
	"github.com/postbackd/postbackd/metrics"
)

type options struct {
	deposits, clicks, partitions, naive, maxInFlight int
	mixedClicks                                      int
	mixedShapes                                      []funnelShape
	backlog                                          int
	scaleout                                         []int
	scaleoutEvents, scaleoutPartitions               int
	rebalanceRate                                    float64
	timeout                                          time.Duration
	brokers, redisAddr, cpuProfile, binary           string
	verbose, keep                                    bool
	latencyFor                                       time.Duration
	// latencyAt are the latency probes' rates, fractions of the
	// deposit-only stream's.
	latencyAt     []float64
	goroutineDump string
	// memProfile receives the allocations (alloc_space, alloc_objects) of
	// the in-process run, for the allocation side of the CPU profile's GC.
	memProfile string
}

// phaseTimeout bounds a phase of n postbacks: -timeout when given, else a
// minute plus a millisecond per postback (ten times slower than postbackd
// runs on the 2-core machine).
func (o options) phaseTimeout(n int) time.Duration {
	if o.timeout > 0 {
		return o.timeout
	}
	return time.Duration(n)*time.Millisecond + time.Minute
}

// command is the command line that reproduces the run (the
// infrastructure comes from the environment).
func (o options) command() string {
	ints := func(v []int) string {
		s := make([]string, len(v))
		for i, n := range v {
			s[i] = fmt.Sprint(n)
		}
		if len(s) == 0 {
			return "0"
		}
		return strings.Join(s, ",")
	}
	shapes := func(v []funnelShape) string {
		s := make([]string, len(v))
		for i, sh := range v {
			s[i] = sh.String()
		}
		if len(s) == 0 {
			return defaultMixedShapes
		}
		return strings.Join(s, ",")
	}
	fracs := make([]string, len(o.latencyAt))
	for i, f := range o.latencyAt {
		fracs[i] = strconv.FormatFloat(f, 'g', -1, 64)
	}
	if len(fracs) == 0 {
		fracs = []string{defaultLatencyAt}
	}
	c := fmt.Sprintf("go run ./cmd/postbackd-load -deposits %d -clicks %d -partitions %d -naive-events %d -max-in-flight %d -latency %s -latency-at %s -mixed-clicks %d -mixed-shapes %s -backlog %d -scaleout %s -scaleout-events %d -scaleout-partitions %d -rebalance-rate %g",
		o.deposits, o.clicks, o.partitions, o.naive, o.maxInFlight, o.latencyFor, strings.Join(fracs, ","), o.mixedClicks, shapes(o.mixedShapes), o.backlog, ints(o.scaleout), o.scaleoutEvents, o.scaleoutPartitions, o.rebalanceRate)
	if o.timeout > 0 {
		c += " -timeout " + o.timeout.String()
	}
	if o.cpuProfile != "" {
		c += " -cpuprofile " + o.cpuProfile
	}
	if o.memProfile != "" {
		c += " -memprofile " + o.memProfile
	}
	return c
}

// harness is one run's shared state.
type harness struct {
	o           options
	run         string
	dir         string
	bin         string
	tr          *tracker.Tracker
	trackerAddr string
	probes      *activeProbe
	progress    io.Writer
	t           table
	failed      []string

	httpRate, httpCPU10k float64 // raw HTTP leg: req/s, harness CPU s per 10 000 requests
	fastHTTPRate         float64 // the same leg with fasthttp, postbackd's HTTP library: req/s
	naiveRate, naiveRT   float64
	dep                  *groupResult // deposit-only phase, the baseline of the later ones
	redisCPU             func() (float64, bool)
	// targeted are the rates the targets are read on (the deposit-only
	// stream, each mixed funnel), in the order measured, for their ratios
	// against the leg's mean over the run.
	targeted []targetedRate
}

// targetedRate is a measured rate that a target is a ratio of.
type targetedRate struct {
	name string
	rate float64
}

func (h *harness) logf(format string, args ...any) {
	fmt.Fprintf(h.progress, "load: "+format+"\n", args...)
}

func (h *harness) phase(name string) phaseConfig {
	return phaseConfig{
		brokers: h.o.brokers, redisAddr: h.o.redisAddr, tracker: h.trackerAddr,
		topics: "load-" + h.run + "-" + name, group: "load-" + h.run + "-" + name, keyPrefix: "load" + h.run + name,
		maxInFlight: h.o.maxInFlight, admin: true,
	}
}

// fail records a phase that could not be measured; the run goes on.
func (h *harness) fail(name string, err error) {
	h.logf("%s: %v", name, err)
	h.failed = append(h.failed, name)
	h.t.info(name, "NOT MEASURED", firstLine(err.Error()))
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > 100 {
		s = s[:100] + "…"
	}
	return s
}

func measure(ctx context.Context, o options, stdout, stderr io.Writer) error {
	h := &harness{o: o, run: suffix(), progress: stderr, probes: &activeProbe{}}
	if o.memProfile != "" {
		runtime.MemProfileRate = memProfileRate
	}
	dir, err := os.MkdirTemp("", "postbackd-load-"+h.run+"-")
	if err != nil {
		return err
	}
	h.dir = dir
	defer func() {
		if o.keep || len(h.failed) > 0 {
			h.logf("member configurations and logs kept in %s", dir)
			return
		}
		os.RemoveAll(dir)
	}()
	h.tr = tracker.New(tracker.Options{CountOnly: true, OnRequest: h.probes.observe})
	rc := redis.NewClient(&redis.Options{Addr: o.redisAddr})
	defer rc.Close()
	h.redisCPU = func() (float64, bool) { return redisinfo.ServerCPU(ctx, rc) }
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: h.tr, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	defer hs.Close()
	h.trackerAddr = ln.Addr().String()
	defer func() {
		if !o.keep {
			if err := cleanup(o.brokers, o.redisAddr, h.run, stderr); err != nil {
				h.logf("cleanup: %v", err)
			}
		}
	}()
	createTopics := func(cfg *config.Config, partitions int) error {
		cctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		return service.CreateTopics(cctx, cfg, partitions, 1)
	}

	start := time.Now()
	h.logf("run %s: Kafka %s, Redis %s, tracker %s, work dir %s", h.run, o.brokers, o.redisAddr, h.trackerAddr, dir)
	if o.binary == "" {
		h.logf("building ./cmd/postbackd")
		bctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		h.bin, err = buildPostbackd(bctx, dir)
		cancel()
		if err != nil {
			return err
		}
	} else {
		h.bin = o.binary
	}

	// Baselines.
	h.logf("baseline http-1conn (%s)", legFor)
	httpMachine := startMachineMeter()
	h.httpRate, h.httpCPU10k, err = measureHTTP(ctx, h.legURL(), legFor)
	if err != nil {
		return fmt.Errorf("http-1conn baseline: %w", err)
	}
	httpShares, httpSharesOK := httpMachine.shares()
	h.logf("baseline http-1conn-fasthttp (%s)", legFor)
	h.fastHTTPRate, err = measureHTTPFast(ctx, h.legURL(), legFor)
	if err != nil {
		return fmt.Errorf("http-1conn-fasthttp baseline: %w", err)
	}
	depPhase := h.phase("dep")
	depCfg, depPath, err := depPhase.write(dir, "deposits")
	if err != nil {
		return err
	}
	if err := createTopics(depCfg, o.partitions); err != nil {
		return err
	}
	t0 := time.Now()
	if err := produceDeposits(ctx, depCfg.Kafka.Brokers, depCfg.Topics.Deposits, "d"+h.run, o.deposits, o.clicks); err != nil {
		return fmt.Errorf("produce deposits: %w", err)
	}
	producedIn := time.Since(t0)
	h.logf("produced %d deposits in %s; naive baseline (%d events)", o.deposits, producedIn.Round(time.Millisecond), o.naive)
	h.naiveRate, h.naiveRT, err = runNaive(ctx, o, depCfg, "http://"+h.trackerAddr, h.run)
	if err != nil {
		return fmt.Errorf("naive baseline: %w", err)
	}
	h.t.section("baselines (measured first, same machine)")
	h.t.add("http-1conn: raw HTTP leg, net/http GET, 1 connection", perSecond(h.httpRate, "req/s"), 1, 1, "itself")
	h.t.add("its CPU per 10 000 requests (client + tracker)", num(h.httpCPU10k, 3)+" s", 1, 1, "itself")
	h.t.note("its round trip", dur(time.Duration(float64(time.Second)/h.httpRate)))
	h.machineRows("meanwhile", httpShares, httpSharesOK)
	h.t.add("http-1conn-fasthttp: the same leg with fasthttp (postbackd's HTTP library, defaults)", perSecond(h.fastHTTPRate, "req/s"), h.fastHTTPRate, h.httpRate, "http-1conn")
	h.t.add("naive: one event at a time, sync audit and commit", perSecond(h.naiveRate, "postbacks/s"), h.naiveRate, h.httpRate, "http-1conn")
	h.t.add("its Redis round trips per event", num(h.naiveRT, 2), 1, 1, "itself")

	// The deposit-only stream, then the latency probes at fractions of its
	// rate.
	h.logf("deposit-only stream: postbackd subprocess on %d deposits", o.deposits)
	var probes []probeResult
	dep, err := runGroup(ctx, groupSpec{
		name: "deposits", bin: h.bin, dir: dir, cfgPath: depPath, members: 1, expected: int64(o.deposits),
		timeout: o.phaseTimeout(o.deposits), tr: h.tr, verbose: h.verboseW(), stopWait: time.Minute, redisCPU: h.redisCPU,
		then: func(ctx context.Context, rate float64, m memberMeters) error {
			if o.latencyFor <= 0 {
				return nil
			}
			for i, f := range o.latencyAt {
				r, err := h.probeAt(ctx, depCfg, i, f, rate, m)
				if err != nil {
					return err
				}
				probes = append(probes, r)
			}
			return nil
		},
	})
	h.t.section(fmt.Sprintf("deposit-only stream: %s deposits over %s clicks, %d partitions, 1 postbackd subprocess (produced in %s)",
		grouped(int64(o.deposits)), grouped(int64(o.clicks)), o.partitions, dur(producedIn)))
	if err != nil {
		h.fail("deposit-only stream", err)
	} else {
		h.dep = &dep
		h.targeted = append(h.targeted, targetedRate{"deposit-only stream", dep.rate})
		h.streamRows(dep, "postbackd subprocess", false)
		for _, r := range probes {
			h.probeRows(r)
		}
	}

	if o.cpuProfile != "" || o.memProfile != "" || o.goroutineDump != "" {
		h.logf("in-process run under the CPU profiler (%d deposits)", o.deposits)
		rate, err := h.inProcess(ctx, depPhase)
		h.t.section("in-process run (service.New in the harness; for -cpuprofile/-goroutines: the admin server has no pprof)")
		if err != nil {
			h.fail("in-process run", err)
		} else {
			h.t.add("postbacks/s, first to last postback", perSecond(rate, "/s"), rate, h.httpRate, "http-1conn")
			if h.dep != nil {
				h.t.add("", "", rate, h.dep.rate, "subprocess run")
			}
			if o.cpuProfile != "" {
				h.t.note("CPU profile (go tool pprof)", o.cpuProfile)
				if shares, secs, err := componentShares(o.cpuProfile); err != nil {
					h.fail("CPU by component", err)
				} else {
					h.t.section(fmt.Sprintf("postbackd's CPU in that run by component (%.1f s of samples; the harness's tracker and producer left out; each sample to the first component a frame of its stack belongs to)", secs))
					for _, s := range shares {
						h.t.add(s.name, num(100*s.fraction, 0)+" %", s.fraction, 1, "postbackd's samples")
					}
				}
			}
			if o.memProfile != "" {
				h.t.note("allocation profile (go tool pprof -sample_index=alloc_space)", o.memProfile)
			}
		}
	}

	if o.mixedClicks > 0 {
		for _, shape := range o.mixedShapes {
			if err := h.mixed(ctx, funnelMix{clicks: o.mixedClicks, shape: shape}, createTopics); err != nil {
				h.fail("mixed funnel ("+shape.String()+")", err)
			}
		}
	}

	if o.backlog > 0 {
		clicks := max(o.backlog/4, 1)
		h.t.section(fmt.Sprintf("backlog: %s deposits over %s clicks in the topic (%d partitions) before postbackd starts, 1 subprocess",
			grouped(int64(o.backlog)), grouped(int64(clicks)), o.partitions))
		if err := h.backlog(ctx, clicks, createTopics); err != nil {
			h.fail("backlog", err)
		}
	}

	if len(o.scaleout) > 0 && o.scaleoutEvents > 0 {
		h.scaleOut(ctx, createTopics)
	}

	// The baseline once more: every ratio above is against the first
	// measurement, and how far the leg itself moved over the run is how far
	// a ratio can be trusted.
	h.logf("baseline http-1conn again (%s)", legFor)
	if again, _, err := measureHTTP(ctx, h.legURL(), legFor); err != nil {
		h.fail("http-1conn again", err)
	} else {
		h.t.section("baseline again (measured last, same machine)")
		h.t.add("http-1conn again: the raw HTTP leg after every phase", perSecond(again, "req/s"), again, h.httpRate, "http-1conn")
		// The leg can move by a third within a run (an idle core wakes up
		// faster or slower): the targets' rates against its mean over the
		// run as well, beside their ratios to the first measurement above.
		mean := (h.httpRate + again) / 2
		h.t.add("the leg's mean over the run (first and last measurement)", perSecond(mean, "req/s"), mean, h.httpRate, "http-1conn")
		for _, r := range h.targeted {
			h.t.add(r.name+": postbacks/s against that mean", perSecond(r.rate, "/s"), r.rate, mean, "the leg's mean")
		}
	}

	h.logf("done in %s", time.Since(start).Round(time.Second))
	fmt.Fprintf(stdout, "postbackd-load run %s, %s, %d CPUs; Kafka %s, Redis %s; tracker on loopback in the harness\n",
		h.run, time.Now().UTC().Format("2006-01-02 15:04 MST"), runtime.NumCPU(), o.brokers, o.redisAddr)
	fmt.Fprintf(stdout, "reproduce: %s\n", o.command())
	fmt.Fprintln(stdout, "postbackd runs as the real binary (go build ./cmd/postbackd) in subprocesses: their CPU (utime+stime of /proc/<pid>/stat) and peak RSS (VmHWM) exclude the harness, the producer and the tracker; Redis round trips are postbackd_redis_duration_seconds_count from their /metrics.")
	fmt.Fprintln(stdout)
	h.t.write(stdout)
	if len(h.failed) > 0 {
		return fmt.Errorf("not measured: %s", strings.Join(h.failed, ", "))
	}
	return nil
}

// legFor is how long each measurement of the raw HTTP leg runs.
const legFor = 3 * time.Second

// legURL is the raw HTTP leg's request: a GET the tracker counts like a
// postback.
func (h *harness) legURL() string {
	return "http://" + h.trackerAddr + "/track/conv?click_id=x&amount=1.00"
}

func (h *harness) verboseW() io.Writer {
	if h.o.verbose {
		return h.progress
	}
	return nil
}

// probeResult is one latency probe: the latencies at a rate, and what the
// rate cost.
type probeResult struct {
	lat latencyResult
	// costs are from the probe's start to its last postback, as the
	// deposit-only stream's are from its first postback to its last.
	costs
	prom promTotals // the members' metrics, its last events settled
}

// probeAt offers fraction × rate deposits/s for -latency and measures
// their latency and what they cost. Each probe has clicks of its own.
func (h *harness) probeAt(ctx context.Context, cfg *config.Config, i int, fraction, rate float64, m memberMeters) (probeResult, error) {
	var r probeResult
	h.logf("latency probe at %.0f deposits/s (%gx the measured rate) for %s", rate*fraction, fraction, h.o.latencyFor)
	probe := newLatencyProbe(fmt.Sprintf("lat%s-%d-", h.run, i), merchantDeposits)
	h.probes.p.Store(probe)
	defer h.probes.p.Store(nil)
	prom0, err := m.metrics()
	if err != nil {
		return r, err
	}
	spent := m.costs()
	if r.lat, err = probe.run(ctx, cfg.Kafka.Brokers, cfg.Topics.Deposits, rate*fraction, h.o.latencyFor, h.o.phaseTimeout(0)); err != nil {
		return r, err
	}
	r.costs = spent.since()
	// The probe's last events finish (audit write, delivered mark) just
	// after their postbacks: let them, so that the scrape counts their
	// round trips.
	if err := sleepCtx(ctx, settleBeforeScrape); err != nil {
		return r, err
	}
	prom1, err := m.metrics()
	if err != nil {
		return r, err
	}
	r.prom = sumDelta(prom1, prom0)
	return r, nil
}

// probeRows adds a latency probe's section: the percentiles against the
// raw HTTP leg's round trip, then what the rate cost against the
// deposit-only stream at full speed (whose batches are fuller).
func (h *harness) probeRows(r probeResult) {
	lat := r.lat
	h.t.section(fmt.Sprintf("latency, publication to tracker, at %s deposits/s offered (%s of the measured rate), %s deposits",
		grouped(int64(lat.rate)), ratio(lat.rate, h.dep.rate), grouped(int64(lat.n))))
	if lat.n == 0 {
		h.t.note("nothing to measure", "no deposit offered: raise -latency or the -latency-at fraction")
		return
	}
	rtt := 1 / h.httpRate
	for _, p := range []struct {
		name string
		d    time.Duration
	}{{"p50", lat.p50}, {"p95", lat.p95}, {"p99", lat.p99}, {"p999", lat.p999}, {"max", lat.pmax}} {
		h.t.add(p.name, dur(p.d), p.d.Seconds(), rtt, "http-1conn round trip")
	}
	h.machineRows("from the probe's start to its last postback", r.machine, r.machineKnown)
	per10k := func(s float64) float64 { return s / float64(lat.n) * 10000 }
	h.t.add("CPU seconds per 10 000 postbacks at that rate (postbackd)", num(per10k(r.cpu), 3)+" s", per10k(r.cpu), h.dep.cpuPer10k(), "deposit-only stream")
	if r.switchesKnown && h.dep.switchesKnown {
		perPostback := float64(r.switches) / float64(lat.n)
		h.t.add("thread switches per postback at that rate (postbackd)", num(perPostback, 1), perPostback, h.dep.switchesPerPostback(), "deposit-only stream")
	}
	if r.redisCPUKnown && h.dep.redisCPUKnown {
		h.t.add("Redis server CPU seconds per 10 000 at that rate", num(per10k(r.redisCPU), 3)+" s", per10k(r.redisCPU), h.dep.redisCPUPer10k(), "deposit-only stream")
	}
	if ev := r.prom.events; ev > 0 {
		h.t.add("Redis round trips per event at that rate", num(r.prom.redisTotal()/ev, 3), r.prom.redisTotal()/ev, h.naiveRT, "naive")
	}
}

// machineRows adds how busy the whole machine was during a measurement,
// every process included, and what the hypervisor took.
func (h *harness) machineRows(when string, s cpuShares, ok bool) {
	if !ok {
		return
	}
	h.t.add(fmt.Sprintf("machine CPU busy %s (all processes, %d cores)", when, s.cores), num(100*s.busy, 0)+" %", s.busy, 1, "all cores busy")
	// A virtual machine's cores are shared with other guests: what the
	// hypervisor took is capacity no process here had.
	h.t.add("  stolen by the hypervisor meanwhile", num(100*s.steal, 0)+" %", s.steal, 1, "all cores")
}

// redisCPURow adds the Redis server's CPU per 10 000 postbacks of a phase,
// next to postbackd's own: on a shared machine it is the other large share.
func (h *harness) redisCPURow(r groupResult) {
	if r.redisCPUKnown {
		h.t.add("Redis server CPU seconds per 10 000 postbacks (INFO cpu)", num(r.redisCPUPer10k(), 3)+" s", r.redisCPUPer10k(), r.cpuPer10k(), "postbackd's CPU")
	}
}

// streamRows adds the rows of a one-member stream phase.
// Later phases (vsDep) also compare with the deposit-only stream.
func (h *harness) streamRows(r groupResult, what string, vsDep bool) {
	vsDep = vsDep && h.dep != nil
	h.t.add("postbacks/s, first to last postback", perSecond(r.rate, "/s"), r.rate, h.httpRate, "http-1conn")
	h.t.add("", "", r.rate, h.fastHTTPRate, "http-1conn-fasthttp")
	h.t.add("", "", r.rate, h.naiveRate, "naive")
	if vsDep {
		h.t.add("", "", r.rate, h.dep.rate, "deposit-only stream")
	}
	h.t.note("wall clock, start to last postback (incl. group join)", dur(r.last.Sub(r.start)))
	h.t.add("CPU seconds per 10 000 postbacks ("+what+")", num(r.cpuPer10k(), 3)+" s", r.cpuPer10k(), h.httpCPU10k, "http-1conn CPU per 10 000")
	if vsDep {
		h.t.add("", "", r.cpuPer10k(), h.dep.cpuPer10k(), "deposit-only stream")
	}
	if r.switchesKnown {
		h.t.info("thread switches per postback ("+what+", all threads)", num(r.switchesPerPostback(), 1), "blocked or preempted")
	}
	h.redisCPURow(r)
	h.machineRows("first to last postback", r.machine, r.machineKnown)
	h.t.add("peak RSS (VmHWM, whole life)", mib(r.peakRSS), float64(r.peakRSS), float64(r.idleRSS), "its RSS at start ("+mib(r.idleRSS)+")")
	if r.prom.waited > 0 && r.prom.events > 0 {
		// Events read before their click's registration (another topic)
		// wait for it, and are handled again when it releases them.
		h.t.add("events that waited for their click's network (handled twice)", num(r.prom.waited, 0), r.prom.waited, r.prom.events, "events")
	}
	h.redisRows(r.prom)
}

func (h *harness) redisRows(p promTotals) {
	if p.events <= 0 {
		h.t.note("Redis round trips per event", "no events counted")
		return
	}
	h.t.add(fmt.Sprintf("Redis round trips per event (%s events)", grouped(int64(p.events))), num(p.redisTotal()/p.events, 3), p.redisTotal()/p.events, h.naiveRT, "naive")
	ops := make([]string, 0, len(p.redisByOp))
	for op := range p.redisByOp {
		ops = append(ops, op)
	}
	slices.SortFunc(ops, func(a, b string) int {
		if c := -cmpFloat(p.redisByOp[a], p.redisByOp[b]); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	for _, op := range ops {
		h.t.add("  op "+op, num(p.redisByOp[op]/p.events, 3), p.redisByOp[op], p.redisTotal(), "all round trips")
	}
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// mixed opens the section of f's shape and measures it.
func (h *harness) mixed(ctx context.Context, f funnelMix, createTopics func(*config.Config, int) error) error {
	stream := f.measured()
	c := f.counts(stream)
	h.t.section(fmt.Sprintf("mixed funnel (%s: %s): %s clicks → %s registrations, %s deposits (FTD + 0-4 repeats), %s revenue (hybrid merchant), %s qualifications; %s events on 4 topics × %d partitions, 1 subprocess",
		f.shape, f.shape.describe(), grouped(int64(f.clicks)), grouped(int64(c.registrations)), grouped(int64(c.deposits)), grouped(int64(c.revenue)),
		grouped(int64(c.qualifications)), grouped(int64(c.events())), h.o.partitions))
	name := "mix" + f.shape.tag()
	p := h.phase(name)
	cfg, path, err := p.write(h.dir, "mixed-"+f.shape.String())
	if err != nil {
		return err
	}
	if err := createTopics(cfg, h.o.partitions); err != nil {
		return err
	}
	base := time.Now().UTC().Add(-time.Hour).Truncate(time.Second)
	// The clicks' history, a stage at a time, each consumed by a postbackd
	// of its own, stopped once every postback of it arrived: no event of
	// it waits for its registration or parks for its FTD (so none leaves a
	// deadline job to come due in the measured run), and the measured
	// stream finds every click at the stage it is produced for.
	var history int
	var historyTook time.Duration
	for s := range stageQualification {
		part := f.history(s)
		pc := f.counts(part)
		if pc.events() == 0 {
			continue
		}
		if err := produceFunnel(ctx, cfg.Kafka.Brokers, h.run, f, part, base, cfg.Topics); err != nil {
			return fmt.Errorf("produce the history: %w", err)
		}
		h.logf("mixed funnel (%s): produced stage %d of the clicks' history (%d events); postbackd subprocess", f.shape, s, pc.events())
		r, err := runGroup(ctx, groupSpec{name: fmt.Sprintf("%s-history%d", name, s), bin: h.bin, dir: h.dir, cfgPath: path, members: 1,
			expected: int64(pc.postbacks()), timeout: h.o.phaseTimeout(pc.postbacks()), tr: h.tr, verbose: h.verboseW(), stopWait: time.Minute})
		if err != nil {
			return fmt.Errorf("the clicks' history, stage %d: %w", s, err)
		}
		history += pc.events()
		historyTook += r.last.Sub(r.start)
	}
	if history > 0 {
		h.t.note("the clicks' history, consumed first a stage at a time (not measured)", fmt.Sprintf("%s events in %s", grouped(int64(history)), dur(historyTook)))
	}
	t0 := time.Now()
	if err := produceFunnel(ctx, cfg.Kafka.Brokers, h.run, f, stream, base, cfg.Topics); err != nil {
		return fmt.Errorf("produce: %w", err)
	}
	h.logf("mixed funnel (%s): produced %d events in %s; postbackd subprocess", f.shape, c.events(), time.Since(t0).Round(time.Millisecond))
	r, err := runGroup(ctx, groupSpec{name: name, bin: h.bin, dir: h.dir, cfgPath: path, members: 1, expected: int64(c.postbacks()),
		timeout: h.o.phaseTimeout(c.postbacks()), tr: h.tr, verbose: h.verboseW(), stopWait: time.Minute, redisCPU: h.redisCPU})
	if err != nil {
		return err
	}
	h.t.note("postbacks expected and received", grouped(int64(c.postbacks()))+" / "+grouped(r.postbacks))
	h.targeted = append(h.targeted, targetedRate{"mixed funnel (" + f.shape.String() + ")", r.rate})
	h.streamRows(r, "postbackd subprocess", true)
	return nil
}

func (h *harness) backlog(ctx context.Context, clicks int, createTopics func(*config.Config, int) error) error {
	p := h.phase("bl")
	cfg, path, err := p.write(h.dir, "backlog")
	if err != nil {
		return err
	}
	if err := createTopics(cfg, h.o.partitions); err != nil {
		return err
	}
	t0 := time.Now()
	h.logf("backlog: producing %d deposits", h.o.backlog)
	if err := produceDeposits(ctx, cfg.Kafka.Brokers, cfg.Topics.Deposits, "b"+h.run, h.o.backlog, clicks); err != nil {
		return fmt.Errorf("produce: %w", err)
	}
	producedIn := time.Since(t0)
	h.logf("backlog: produced in %s; postbackd subprocess", producedIn.Round(time.Millisecond))
	r, err := runGroup(ctx, groupSpec{name: "backlog", bin: h.bin, dir: h.dir, cfgPath: path, members: 1, expected: int64(h.o.backlog),
		timeout: h.o.phaseTimeout(h.o.backlog), tr: h.tr, verbose: h.verboseW(), stopWait: time.Minute, redisCPU: h.redisCPU})
	if err != nil {
		return err
	}
	h.t.note("produced in", dur(producedIn))
	h.t.add("sustained postbacks/s, first to last postback", perSecond(r.rate, "/s"), r.rate, h.httpRate, "http-1conn")
	if h.dep != nil {
		h.t.add("", "", r.rate, h.dep.rate, "deposit-only stream")
	}
	if r.slowest > 0 {
		h.t.add("slowest 10 s window", perSecond(r.slowest, "/s"), r.slowest, r.rate, "this phase, first to last")
	} else {
		h.t.info("slowest 10 s window", "n/a", "the phase was shorter than 20 s")
	}
	h.t.note("wall clock, start to last postback (incl. group join)", dur(r.last.Sub(r.start)))
	h.t.add("peak RSS (VmHWM, whole life)", mib(r.peakRSS), float64(r.peakRSS), float64(r.idleRSS), "its RSS at start ("+mib(r.idleRSS)+")")
	if h.dep != nil {
		h.t.add("", "", float64(r.peakRSS), float64(h.dep.peakRSS), "deposit-only stream")
	}
	h.t.add("CPU seconds per 10 000 postbacks", num(r.cpuPer10k(), 3)+" s", r.cpuPer10k(), h.httpCPU10k, "http-1conn CPU per 10 000")
	h.redisCPURow(r)
	h.redisRows(r.prom)
	return nil
}

// cleanup deletes the topics (load-<run>-*) and Redis keys of a run: at
// the end of one (unless -keep), or of an earlier one with -cleanup RUN.
func cleanup(brokers, redisAddr, run string, progress io.Writer) error {
	// A backlog of a million deposits leaves millions of keys.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var errs []error
	cl := &kafka.Client{Addr: kafka.TCP(strings.Split(brokers, ",")...), Timeout: 30 * time.Second}
	var topics []string
	md, err := cl.Metadata(ctx, &kafka.MetadataRequest{})
	if err != nil {
		errs = append(errs, fmt.Errorf("list topics: %w", err))
	} else {
		for _, t := range md.Topics {
			if strings.HasPrefix(t.Name, "load-"+run+"-") {
				topics = append(topics, t.Name)
			}
		}
	}
	if len(topics) > 0 {
		if _, err := cl.DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: topics}); err != nil {
			errs = append(errs, fmt.Errorf("delete topics: %w", err))
		}
	}
	rc := redis.NewClient(&redis.Options{Addr: redisAddr})
	defer rc.Close()
	n, err := rediskeys.Delete(ctx, rc, "load"+run, "naive"+run+":")
	if err != nil {
		errs = append(errs, fmt.Errorf("redis: %w", err))
	}
	fmt.Fprintf(progress, "load: cleanup of run %s: deleted %d topics and %d Redis keys\n", run, len(topics), n)
	return errors.Join(errs...)
}

func suffix() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// rusageCPU is the harness's own CPU seconds so far.
func rusageCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// measureHTTP is the raw HTTP leg: GETs over one kept-alive connection. It
// returns the rate and the CPU the harness spent per 10 000 requests (the
// client and the tracker both run in it).
func measureHTTP(ctx context.Context, url string, d time.Duration) (float64, float64, error) {
	c := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1}}
	defer c.CloseIdleConnections()
	end := time.Now().Add(d)
	n := 0
	cpu0 := rusageCPU()
	start := time.Now()
	for time.Now().Before(end) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		res, err := c.Do(req)
		if err != nil {
			return 0, 0, err
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		n++
	}
	rate := float64(n) / time.Since(start).Seconds()
	return rate, (rusageCPU() - cpu0) / float64(n) * 10000, nil
}

// measureHTTPFast is the raw HTTP leg again with fasthttp, the library
// postbackd sends with (its default settings, one connection), so that a
// ratio against it holds the client library constant; the first baseline
// (net/http) stays the reference.
func measureHTTPFast(ctx context.Context, url string, d time.Duration) (float64, error) {
	c := &fasthttp.Client{MaxConnsPerHost: 1, MaxConnWaitTimeout: time.Second}
	defer c.CloseIdleConnections()
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	end := time.Now().Add(d)
	n := 0
	start := time.Now()
	for time.Now().Before(end) {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		req.SetRequestURI(url)
		if err := c.DoTimeout(req, resp, 10*time.Second); err != nil {
			return 0, err
		}
		n++
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// inProcess runs the deposit-only stream again in the harness process
// (service.New), on a group and key prefix of its own, under the CPU
// profiler: postbackd's admin server serves no pprof, so a subprocess
// cannot be profiled.
func (h *harness) inProcess(ctx context.Context, p phaseConfig) (float64, error) {
	p.group += "-inproc"
	p.keyPrefix += "inproc"
	p.admin = false
	cfg, err := p.parse()
	if err != nil {
		return 0, err
	}
	return runThroughput(ctx, h.o, cfg, h.tr)
}

// runThroughput starts the service in-process, waits until the tracker has
// one postback per deposit and stops it.
func runThroughput(ctx context.Context, o options, cfg *config.Config, tr *tracker.Tracker) (float64, error) {
	before := tr.Count()
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return 0, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return 0, err
		}
		defer pprof.StopCPUProfile()
	}
	if o.memProfile != "" {
		// The runtime's allocation profile counts from the process's start:
		// what the run allocated is the profile at its end minus the one at
		// its start (the harness's tracker, serving the run, included).
		base, err := allocProfile()
		if err != nil {
			return 0, err
		}
		defer func() {
			if err := writeAllocsSince(o.memProfile, base); err != nil {
				fmt.Fprintf(os.Stderr, "postbackd-load: allocation profile: %v\n", err)
			}
		}()
	}
	// The collector runs as `postbackd run` sets it, so that the profile is
	// the binary's; the harness's own setting comes back afterwards.
	if previous, set := service.ApplyGCDefault(os.Getenv); set {
		defer debug.SetGCPercent(previous)
	}
	m := metrics.New(nil)
	svc, err := service.New(cfg, zap.NewNop(), service.Options{Metrics: m})
	if err != nil {
		return 0, err
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- svc.Run(runCtx) }()
	defer func() { stop(); <-done }()

	var first time.Time
	firstCount := int64(0)
	lastReport := time.Now()
	timeout := o.phaseTimeout(o.deposits)
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	dump := o.goroutineDump
	for {
		n := tr.Count() - before
		if first.IsZero() && n > 0 {
			first, firstCount = time.Now(), n
		}
		if n >= int64(o.deposits) {
			return float64(n-firstCount) / time.Since(first).Seconds(), nil
		}
		if dump != "" && n >= int64(o.deposits/2) {
			if f, err := os.Create(dump); err == nil {
				_ = pprof.Lookup("goroutine").WriteTo(f, 1)
				f.Close()
			}
			dump = ""
		}
		if o.verbose && time.Since(lastReport) >= time.Second {
			lastReport = time.Now()
			fmt.Fprintf(os.Stderr, "  … %d postbacks, in flight %.0f\n", n, gaugeValue(m))
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("timed out after %s with %d of %d postbacks", timeout, n, o.deposits)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case err := <-done:
			return 0, fmt.Errorf("service stopped: %w", err)
		case <-tick.C:
		}
	}
}

// naiveClassify is the baseline's FTD/RD script: the same decision in one
// EVALSHA, without batching.
var naiveClassify = redis.NewScript(`
if redis.call('SET', KEYS[1], ARGV[1], 'NX') then return 'ftd' end
return 'rdep'`)

// roundTrips counts a go-redis client's round trips (a pipeline is one).
type roundTrips struct{ n atomic.Int64 }

func (c *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.n.Add(1)
		return next(ctx, cmd)
	}
}

func (c *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.n.Add(1)
		return next(ctx, cmds)
	}
}

// runNaive is the baseline pipeline: fetch one message, classify it, send
// its postback, write its audit record synchronously, commit it; repeat. It
// returns the rate and its Redis round trips per event.
func runNaive(ctx context.Context, o options, cfg *config.Config, trackerURL, run string) (float64, float64, error) {
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: cfg.Kafka.Brokers, GroupID: "naive-" + run, Topic: cfg.Topics.Deposits,
		MinBytes: 1, MaxBytes: 10 << 20, MaxWait: 100 * time.Millisecond, StartOffset: kafka.FirstOffset})
	defer r.Close()
	rc := redis.NewClient(&redis.Options{Addr: o.redisAddr})
	defer rc.Close()
	rt := &roundTrips{}
	rc.AddHook(rt)
	wr := &kafka.Writer{Addr: kafka.TCP(cfg.Kafka.Brokers...), Topic: cfg.Topics.Dispatched, RequiredAcks: kafka.RequireAll,
		BatchTimeout: time.Millisecond}
	defer wr.Close()
	hc := &http.Client{Timeout: 5 * time.Second}
	if o.naive < 2 {
		return 0, 0, errors.New("-naive-events must be at least 2")
	}
	ctx, cancel := context.WithTimeout(ctx, time.Duration(o.naive)*20*time.Millisecond+time.Minute)
	defer cancel()
	var start time.Time
	for i := 0; i < o.naive; i++ {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			return 0, 0, err
		}
		if i == 0 {
			start = time.Now()
		}
		var ev struct {
			EventID string `json:"event_id"`
			ClickID string `json:"click_id"`
			Amount  string `json:"amount"`
		}
		if err := json.Unmarshal(m.Value, &ev); err != nil {
			return 0, 0, err
		}
		goal, err := naiveClassify.Run(ctx, rc, []string{"naive" + run + ":" + ev.ClickID}, ev.EventID).Text()
		if err != nil {
			return 0, 0, err
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, trackerURL+"/naive?click_id="+ev.ClickID+"&goal="+goal+"&amount="+ev.Amount, nil)
		res, err := hc.Do(req)
		if err != nil {
			return 0, 0, err
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		audit, _ := json.Marshal(map[string]any{"event_id": ev.EventID, "goal": goal, "http_status": res.StatusCode})
		if err := wr.WriteMessages(ctx, kafka.Message{Key: m.Key, Value: audit}); err != nil {
			return 0, 0, err
		}
		if err := r.CommitMessages(ctx, m); err != nil {
			return 0, 0, err
		}
	}
	return float64(o.naive-1) / time.Since(start).Seconds(), float64(rt.n.Load()) / float64(o.naive), nil
}

func gaugeValue(m *metrics.Metrics) float64 {
	var d dto.Metric
	if err := m.InFlight.Write(&d); err != nil {
		return -1
	}
	return d.GetGauge().GetValue()
}

// memProfileRate samples one allocation per 64 KiB (Go's default is 512 KiB)
// when -memprofile asks for a profile. Set before the run starts: the
// profile scales every sample by the rate in force when it is written.
const memProfileRate = 64 << 10

// allocProfile is the runtime's allocation profile now (every allocation
// since the process started, sampled).
func allocProfile() (*profile.Profile, error) {
	runtime.GC() // the profile reflects the last completed GC
	var b bytes.Buffer
	if err := pprof.Lookup("allocs").WriteTo(&b, 0); err != nil {
		return nil, err
	}
	return profile.Parse(&b)
}

// writeAllocsSince writes the allocations made since base was taken: the
// profile now minus base (its alloc_space and alloc_objects; the in-use
// samples of such a difference mean nothing).
func writeAllocsSince(path string, base *profile.Profile) error {
	now, err := allocProfile()
	if err != nil {
		return err
	}
	base.Scale(-1)
	diff, err := profile.Merge([]*profile.Profile{now, base})
	if err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := diff.Write(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
