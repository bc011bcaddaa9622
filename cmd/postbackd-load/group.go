package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/postbackd/postbackd/internal/tracker"
)

// groupSpec is one phase run by postbackd subprocesses: members of one
// consumer group started together on a backlog, until the tracker has
// expected postbacks.
type groupSpec struct {
	name     string // for file names and messages
	bin      string
	dir      string // for logs
	cfgPath  string
	members  int
	expected int64
	timeout  time.Duration
	// then runs once every postback arrived, members still running, with
	// the measured rate and readings of the members (the latency probes).
	then     func(ctx context.Context, rate float64, m memberMeters) error
	verbose  io.Writer // progress every second, or nil
	tr       *tracker.Tracker
	stopWait time.Duration // SIGTERM to exit bound
	// redisCPU reads the Redis server's CPU seconds so far (nil, or false:
	// not measured), so that a phase can say what its events cost Redis.
	redisCPU func() (float64, bool)
}

type groupResult struct {
	members     int
	postbacks   int64
	start       time.Time // members started
	first, last time.Time // first and last postback of the phase
	rate        float64   // postbacks/s, first to last
	// stableRate is the rate from the moment every member had joined one
	// generation to the last postback (0: not reached with enough left).
	stableRate float64
	stableAt   time.Duration // from start
	// slowest is the slowest 10-second window's rate between first and
	// last postback (0: the run was shorter than two windows).
	slowest float64
	// costs are the members' (CPU, thread switches), Redis's and the
	// machine's, first to last postback.
	costs
	// firstN is how many postbacks had arrived when the window opened.
	firstN  int64
	cpuLife float64 // CPU seconds of all members, whole life (rusage)
	idleRSS int64   // largest member RSS when its admin server came up
	peakRSS int64   // largest member peak RSS (VmHWM, or rusage maxrss)
	prom    promTotals
}

// memberMeters reads a phase's running members, for its then.
type memberMeters struct {
	// costs starts measuring what the members (and Redis, and the machine)
	// spend from now.
	costs func() costMeter
	// metrics scrapes every member's /metrics; sumDelta subtracts two.
	metrics func() ([]promTotals, error)
}

// costs is what a window of a phase cost: the members' CPU seconds and
// thread switches, the Redis server's CPU seconds (its other clients
// included) and how the machine's CPU time was spent, every process
// included. A Known flag is false when that figure was not measured (not
// Linux, a reading failed, no Redis reader).
type costs struct {
	cpu           float64
	switches      uint64
	switchesKnown bool
	redisCPU      float64
	redisCPUKnown bool
	machine       cpuShares
	machineKnown  bool
}

// costMeter measures costs from its start: the one definition of a window
// that the stream phases and the latency probes share, so that their
// figures divide alike.
type costMeter struct {
	cpu      func() float64
	switches func() (uint64, bool)
	redisCPU func() (float64, bool) // nil: Redis's CPU is not measured

	cpu0                  float64
	switches0             uint64
	switches0OK, redis0OK bool
	redis0                float64
	machine               machineMeter
}

// startCosts starts a costMeter on the members' CPU and thread-switch
// readers and the Redis server's CPU reader (nil: none).
func startCosts(cpu func() float64, switches func() (uint64, bool), redisCPU func() (float64, bool)) costMeter {
	c := costMeter{cpu: cpu, switches: switches, redisCPU: redisCPU, cpu0: cpu(), machine: startMachineMeter()}
	c.switches0, c.switches0OK = switches()
	if redisCPU != nil {
		c.redis0, c.redis0OK = redisCPU()
	}
	return c
}

// since is what was spent from the meter's start until now; a meter never
// started measured nothing.
func (c costMeter) since() costs {
	if c.cpu == nil {
		return costs{}
	}
	r := costs{cpu: c.cpu() - c.cpu0}
	if n, ok := c.switches(); ok && c.switches0OK {
		r.switches, r.switchesKnown = countSince(c.switches0, n)
	}
	if c.redis0OK {
		if v, ok := c.redisCPU(); ok {
			r.redisCPU, r.redisCPUKnown = v-c.redis0, true
		}
	}
	r.machine, r.machineKnown = c.machine.shares()
	return r
}

func (r groupResult) cpuPer10k() float64 { return r.per10k(r.cpu) }

// switchesPerPostback is the members' thread switches per postback, first
// to last (valid when switchesKnown).
func (r groupResult) switchesPerPostback() float64 {
	n := float64(r.postbacksInWindow())
	if n <= 0 {
		return 0
	}
	return float64(r.switches) / n
}

// redisCPUPer10k is the Redis server's CPU seconds per 10 000 postbacks
// (its other clients, if any, included).
func (r groupResult) redisCPUPer10k() float64 { return r.per10k(r.redisCPU) }

func (r groupResult) per10k(seconds float64) float64 {
	n := float64(r.postbacksInWindow())
	if n <= 0 {
		return 0
	}
	return seconds / n * 10000
}

// postbacksInWindow counts the postbacks the rate and CPU are measured
// over: those after the window opened (with the first postbacks seen).
func (r groupResult) postbacksInWindow() int64 { return max(r.postbacks-r.firstN, 0) }

// stallAfter ends a phase whose postbacks stopped coming: a stream the
// harness expects more postbacks of than postbackd makes would otherwise
// wait for the whole timeout.
const stallAfter = 30 * time.Second

// settleBeforeScrape is the pause between the last postback and the scrape
// the phase's Redis round trips are counted from.
const settleBeforeScrape = 500 * time.Millisecond

type countSample struct {
	at time.Time
	n  int64
}

// slowestWindow is the lowest rate over any window of w between the first
// and last sample (0 when they span less than 2w).
func slowestWindow(s []countSample, w time.Duration) float64 {
	if len(s) < 2 || s[len(s)-1].at.Sub(s[0].at) < 2*w {
		return 0
	}
	slowest := -1.0
	j := 0
	for i := range s {
		for j < len(s) && s[j].at.Sub(s[i].at) < w {
			j++
		}
		if j == len(s) {
			break
		}
		r := float64(s[j].n-s[i].n) / s[j].at.Sub(s[i].at).Seconds()
		if slowest < 0 || r < slowest {
			slowest = r
		}
	}
	return max(slowest, 0)
}

// stableSince is when every member had joined the same generation (the
// last of them to log it), or zero if they have not.
func stableSince(ms []*member) time.Time {
	var id int32 = -2
	var at time.Time
	for _, m := range ms {
		g, t := m.lastGeneration()
		if g < 0 || (id != -2 && g != id) {
			return time.Time{}
		}
		id = g
		if t.After(at) {
			at = t
		}
	}
	return at
}

// sumDelta sums the members' metrics after minus before (scrapes of the
// same members, in the same order).
func sumDelta(after, before []promTotals) promTotals {
	s := promTotals{redisByOp: map[string]float64{}}
	for i := range after {
		s = s.add(after[i].sub(before[i]))
	}
	return s
}

// runGroup runs one subprocess phase: start the members, scrape their
// metrics, wait for the postbacks, sample CPU and memory, call then, stop
// them with SIGTERM.
func runGroup(ctx context.Context, g groupSpec) (res groupResult, err error) {
	res.members = g.members
	before := g.tr.Count()
	ms := make([]*member, 0, g.members)
	defer func() {
		// Every path stops its members; a failed phase kills them.
		for _, m := range ms {
			if err != nil {
				m.kill()
				continue
			}
			u, serr := m.stop(g.stopWait)
			res.cpuLife += u.cpu
			res.peakRSS = max(res.peakRSS, u.maxRSS)
			if serr != nil && err == nil {
				err = serr
			}
		}
	}()
	res.start = time.Now()
	for i := range g.members {
		name := fmt.Sprintf("%s-%d", g.name, i+1)
		m, err := startMember(name, g.bin, g.cfgPath, filepath.Join(g.dir, name+".log"))
		if err != nil {
			return res, err
		}
		ms = append(ms, m)
	}
	p0 := make([]promTotals, len(ms))
	for i, m := range ms {
		if err := m.waitAdmin(ctx, time.Minute); err != nil {
			return res, err
		}
		if mem, err := procMem(m.pid); err == nil {
			res.idleRSS = max(res.idleRSS, mem.rss)
		}
		if p0[i], err = m.scrape(ctx); err != nil {
			return res, err
		}
	}

	switchesNow := func() (uint64, bool) {
		var n uint64
		for _, m := range ms {
			c, err := procSwitches(m.pid)
			if err != nil {
				return 0, false
			}
			n += c
		}
		return n, true
	}
	cpuNow := func() float64 {
		s := 0.0
		for _, m := range ms {
			c, err := procCPU(m.pid)
			if err == nil {
				s += c
			}
		}
		return s
	}
	scrapeAll := func() ([]promTotals, error) {
		out := make([]promTotals, len(ms))
		for i, m := range ms {
			var err error
			if out[i], err = m.scrape(ctx); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	peak := func() {
		for _, m := range ms {
			if mem, err := procMem(m.pid); err == nil {
				res.peakRSS = max(res.peakRSS, mem.hwm)
			}
		}
	}

	startCostMeter := func() costMeter { return startCosts(cpuNow, switchesNow, g.redisCPU) }
	var spent costMeter
	var firstN, stableN int64
	var stableT time.Time
	var samples []countSample
	lastReport := time.Now()
	lastN, lastChange := int64(-1), time.Now()
	deadline := time.Now().Add(g.timeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		now := time.Now()
		n := g.tr.Count() - before
		if res.first.IsZero() && n > 0 {
			res.first, firstN = now, n
			spent = startCostMeter()
		}
		if !res.first.IsZero() && (len(samples) == 0 || now.Sub(samples[len(samples)-1].at) >= 100*time.Millisecond) {
			samples = append(samples, countSample{now, n})
		}
		if stableT.IsZero() {
			if at := stableSince(ms); !at.IsZero() {
				stableT, stableN = now, n
				res.stableAt = at.Sub(res.start)
			}
		}
		if n >= g.expected {
			res.last, res.postbacks = now, n
			samples = append(samples, countSample{now, n})
			break
		}
		for _, m := range ms {
			if !m.alive() {
				return res, fmt.Errorf("%s exited during the phase (%d of %d postbacks): %v\n%s", m.name, n, g.expected, m.waitErr, m.logTail())
			}
		}
		if g.verbose != nil && now.Sub(lastReport) >= time.Second {
			lastReport = now
			inFlight := 0.0
			for _, m := range ms {
				if t, err := m.scrape(ctx); err == nil {
					inFlight += t.inFlight
				}
			}
			fmt.Fprintf(g.verbose, "  … %s: %d of %d postbacks, in flight %.0f\n", g.name, n, g.expected, inFlight)
		}
		if now.After(deadline) {
			return res, fmt.Errorf("%s: timed out after %s with %d of %d postbacks", g.name, g.timeout, n, g.expected)
		}
		if n != lastN {
			lastN, lastChange = n, now
		} else if !res.first.IsZero() && now.Sub(lastChange) > stallAfter {
			return res, fmt.Errorf("%s: stalled: no postback for %s at %d of %d", g.name, stallAfter, n, g.expected)
		}
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case <-tick.C:
		}
	}
	res.costs, res.firstN = spent.since(), firstN
	// The events of the last postbacks finish (audit write, delivered
	// mark) just after them: let them, so the scrape counts them.
	if err := sleepCtx(ctx, settleBeforeScrape); err != nil {
		return res, err
	}
	p1, err := scrapeAll()
	if err != nil {
		return res, err
	}
	res.prom = sumDelta(p1, p0)
	peak()
	window := res.last.Sub(res.first).Seconds()
	if window > 0 {
		res.rate = float64(res.postbacks-firstN) / window
	}
	// The stable rate needs a tenth of the phase left after the group
	// settled, or it measures a tail.
	if !stableT.IsZero() && res.last.Sub(stableT) > 0 && res.postbacks-stableN >= g.expected/10 {
		res.stableRate = float64(res.postbacks-stableN) / res.last.Sub(stableT).Seconds()
	}
	res.slowest = slowestWindow(samples, 10*time.Second)
	if g.then != nil {
		if err := g.then(ctx, res.rate, memberMeters{costs: startCostMeter, metrics: scrapeAll}); err != nil {
			return res, err
		}
		peak()
	}
	return res, nil
}
