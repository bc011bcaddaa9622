package main

import (
	"context"
	"fmt"
	"maps"
	"path/filepath"
	"runtime"
	"slices"
	"time"

	"github.com/postbackd/postbackd/config"
)

// scaleRun is one scale-out measurement: k members on the same backlog.
type scaleRun struct {
	members int
	repeat  bool // the size's second run, on the way back (scaleOrder)
	res     groupResult
	err     error
}

// total is the run's total throughput: once the group settled, else first
// to last postback.
func (s scaleRun) total() float64 {
	if s.res.stableRate > 0 {
		return s.res.stableRate
	}
	return s.res.rate
}

// scaleOrder is the order the group sizes run in: up and back down again
// (1, 2, 4, 4, 2, 1), every size twice and mirrored in time, so that a drift
// of the machine over the phase (measured: four identical runs of two members
// in a row gave 8 347, 8 318, 7 491 and 7 066 postbacks/s) weighs on every
// size's mean alike instead of on whichever size comes last.
func scaleOrder(sizes []int) []scaleRun {
	runs := make([]scaleRun, 0, 2*len(sizes))
	for _, k := range sizes {
		runs = append(runs, scaleRun{members: k})
	}
	for i := len(sizes) - 1; i >= 0; i-- {
		runs = append(runs, scaleRun{members: sizes[i], repeat: true})
	}
	return runs
}

// totalsBySize groups the totals of the runs that succeeded by group size.
func totalsBySize(runs []scaleRun) map[int][]float64 {
	by := map[int][]float64{}
	for _, r := range runs {
		if r.err == nil {
			by[r.members] = append(by[r.members], r.total())
		}
	}
	return by
}

// mean is the mean of v, 0 when v is empty.
func mean(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := 0.0
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

// scaleCheck says whether adding members ever lowered the total by more
// than the noise, comparing each size's mean over its runs. The noise is the
// widest spread between two runs of one size (at least minNoise).
func scaleCheck(runs []scaleRun, minNoise float64) (ok bool, noise float64, worst string) {
	noise = minNoise
	byK := totalsBySize(runs)
	for _, v := range byK {
		if lo, hi := slices.Min(v), slices.Max(v); len(v) >= 2 && hi > 0 {
			noise = max(noise, (hi-lo)/hi)
		}
	}
	ks := slices.Sorted(maps.Keys(byK))
	ok = true
	worstDrop := 0.0
	for i := 1; i < len(ks); i++ {
		a, b := mean(byK[ks[i-1]]), mean(byK[ks[i]])
		if a <= 0 {
			continue
		}
		drop := (a - b) / a
		if drop > worstDrop {
			worstDrop = drop
			worst = fmt.Sprintf("%d→%d members: %+.1f%%", ks[i-1], ks[i], -100*drop)
		}
		if drop > noise {
			ok = false
		}
	}
	return ok, noise, worst
}

func (h *harness) scaleOut(ctx context.Context, createTopics func(*config.Config, int) error) {
	o := h.o
	clicks := max(o.scaleoutEvents/4, 1)
	h.t.section(fmt.Sprintf("scale-out: %s deposits over %s clicks on %d partitions, one group of k postbackd subprocesses. %d CPUs: the curve is bounded by CPU (members, tracker, producer, Kafka and Redis share them), so more members add overhead, not capacity",
		grouped(int64(o.scaleoutEvents)), grouped(int64(clicks)), o.scaleoutPartitions, runtime.NumCPU()))
	base := h.phase("so")
	cfg, _, err := base.write(h.dir, "scaleout")
	if err == nil {
		err = createTopics(cfg, o.scaleoutPartitions)
	}
	if err == nil {
		t0 := time.Now()
		h.logf("scale-out: producing %d deposits on %d partitions", o.scaleoutEvents, o.scaleoutPartitions)
		err = produceDeposits(ctx, cfg.Kafka.Brokers, cfg.Topics.Deposits, "s"+h.run, o.scaleoutEvents, clicks)
		h.logf("scale-out: produced in %s", time.Since(t0).Round(time.Millisecond))
	}
	if err != nil {
		h.fail("scale-out", err)
		return
	}
	runs := scaleOrder(o.scaleout)
	for i := range runs {
		k := runs[i].members
		p := base
		// Each run is a new group on fresh Redis state: the same work.
		p.group += fmt.Sprintf("-%d-%d", k, i)
		p.keyPrefix += fmt.Sprintf("k%dr%d", k, i)
		_, path, err := p.write(h.dir, fmt.Sprintf("scaleout-%d-%d", k, i))
		if err != nil {
			runs[i].err = err
			continue
		}
		h.logf("scale-out: %d member(s)%s", k, map[bool]string{true: " again"}[runs[i].repeat])
		runs[i].res, runs[i].err = runGroup(ctx, groupSpec{name: fmt.Sprintf("scaleout-%d-%d", k, i), bin: h.bin, dir: h.dir, cfgPath: path,
			members: k, expected: int64(o.scaleoutEvents), timeout: o.phaseTimeout(o.scaleoutEvents), tr: h.tr,
			verbose: h.verboseW(), stopWait: time.Minute})
		if runs[i].err != nil {
			h.logf("scale-out %d: %v", k, runs[i].err)
		}
	}
	one := 0.0
	if runs[0].err == nil {
		one = runs[0].total()
	}
	base1 := fmt.Sprintf("k=%d", runs[0].members)
	for _, r := range runs {
		name := fmt.Sprintf("k=%d", r.members)
		if r.repeat {
			name += " again"
		}
		if r.err != nil {
			h.fail("scale-out, "+name, r.err)
			continue
		}
		if r.res.stableRate > 0 {
			h.t.add(name+": total postbacks/s, group settled", perSecond(r.total(), "/s"), r.total(), one, base1)
		} else {
			h.t.add(name+": total postbacks/s, first to last", perSecond(r.total(), "/s"), r.total(), one, base1+" (this group never settled with a tenth left)")
		}
		h.t.add("  first to last postback, joins included", perSecond(r.res.rate, "/s"), r.res.rate, h.httpRate, "http-1conn")
		if r.res.stableAt > 0 {
			h.t.note("  group settled (all in one generation) after", dur(r.res.stableAt))
		}
		h.t.add("  CPU seconds per 10 000 postbacks, all members", num(r.res.cpuPer10k(), 3)+" s", r.res.cpuPer10k(), runs[0].res.cpuPer10k(), base1)
		h.t.add("  largest member peak RSS", mib(r.res.peakRSS), float64(r.res.peakRSS), float64(r.res.idleRSS), "its RSS at start")
		if r.res.prom.events > 0 {
			h.t.add("  Redis round trips per event", num(r.res.prom.redisTotal()/r.res.prom.events, 3), r.res.prom.redisTotal()/r.res.prom.events, h.naiveRT, "naive")
		}
	}
	bySize := totalsBySize(runs)
	firstMean := mean(bySize[o.scaleout[0]])
	for i, k := range o.scaleout {
		if v := bySize[k]; len(v) > 1 && !slices.Contains(o.scaleout[:i], k) {
			m := mean(v)
			h.t.add(fmt.Sprintf("k=%d: mean of its %d runs", k, len(v)), perSecond(m, "/s"), m, firstMean, base1+" mean")
		}
	}
	ok, noise, worst := scaleCheck(runs, 0.05)
	verdict := "yes"
	if !ok {
		verdict = "NO"
	}
	if worst == "" {
		worst = "no drop"
	}
	h.t.info("check: adding a member never lowers the total by more than noise", verdict,
		fmt.Sprintf("noise %.1f%% (widest spread between the runs of one size, at least 5%%); largest drop between the sizes' means %s", 100*noise, worst))

	if err := h.rebalance(ctx, createTopics); err != nil {
		h.fail("rebalance pause", err)
	}
}

// waitSettled waits until every member of ms has joined one generation
// newer than after, and returns when the last of them logged it.
func waitSettled(ctx context.Context, ms []*member, after int32, timeout time.Duration) (time.Time, int32, error) {
	deadline := time.Now().Add(timeout)
	for {
		if at := stableSince(ms); !at.IsZero() {
			if g, _ := ms[0].lastGeneration(); g > after {
				return at, g, nil
			}
		}
		for _, m := range ms {
			if !m.alive() {
				return time.Time{}, 0, fmt.Errorf("%s exited: %v\n%s", m.name, m.waitErr, m.logTail())
			}
		}
		if time.Now().After(deadline) {
			return time.Time{}, 0, fmt.Errorf("the group did not settle within %s", timeout)
		}
		select {
		case <-ctx.Done():
			return time.Time{}, 0, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// rebalance measures the pause a rebalance causes: two members consume a
// steady stream; a third joins, then one is killed with SIGKILL. The pause
// is the longest stretch with no postback arriving at the tracker.
func (h *harness) rebalance(ctx context.Context, createTopics func(*config.Config, int) error) (err error) {
	o := h.o
	h.t.section(fmt.Sprintf("rebalance pause: a steady stream of %s deposits/s (each its own click) on %d partitions, 2 members; a 3rd joins, then one is killed (kill -9)",
		grouped(int64(o.rebalanceRate)), o.scaleoutPartitions))
	p := h.phase("rb")
	cfg, path, err := p.write(h.dir, "rebalance")
	if err != nil {
		return err
	}
	if err := createTopics(cfg, o.scaleoutPartitions); err != nil {
		return err
	}
	var ms []*member
	defer func() {
		for _, m := range ms {
			if m.alive() {
				if _, serr := m.stop(time.Minute); serr != nil && err == nil {
					err = serr
				}
			}
		}
	}()
	start := func(name string) (*member, error) {
		m, err := startMember(name, h.bin, path, filepath.Join(h.dir, name+".log"))
		if err != nil {
			return nil, err
		}
		ms = append(ms, m)
		return m, m.waitAdmin(ctx, time.Minute)
	}
	h.logf("rebalance: starting 2 members")
	a, err := start("rebalance-a")
	if err != nil {
		return err
	}
	b, err := start("rebalance-b")
	if err != nil {
		return err
	}
	if _, _, err := waitSettled(ctx, []*member{a, b}, -1, 90*time.Second); err != nil {
		return err
	}

	probe := newLatencyProbe("rb"+h.run+"-", merchantDeposits)
	h.probes.p.Store(probe)
	defer h.probes.p.Store(nil)
	stop := make(chan struct{})
	type offered struct {
		n   int
		err error
	}
	offeredc := make(chan offered, 1)
	go func() {
		n, _, err := probe.offer(ctx, cfg.Kafka.Brokers, cfg.Topics.Deposits, o.rebalanceRate, 0, stop)
		offeredc <- offered{n, err}
	}()
	stopOffer := func() offered {
		if stop != nil {
			close(stop)
			stop = nil
		}
		return <-offeredc
	}
	defer func() {
		if stop != nil {
			stopOffer()
		}
	}()

	h.logf("rebalance: steady stream at %.0f/s (reference 5 s)", o.rebalanceRate)
	if err := sleepCtx(ctx, 2*time.Second); err != nil {
		return err
	}
	refFrom := time.Now()
	if err := sleepCtx(ctx, 5*time.Second); err != nil {
		return err
	}
	refTo := time.Now()

	h.logf("rebalance: a 3rd member joins")
	genBefore, _ := a.lastGeneration()
	joinFrom := time.Now()
	c, err := start("rebalance-c")
	if err != nil {
		return err
	}
	joinedAt, genJoin, err := waitSettled(ctx, []*member{a, b, c}, genBefore, 90*time.Second)
	if err != nil {
		return fmt.Errorf("join: %w", err)
	}
	if err := sleepCtx(ctx, 3*time.Second); err != nil {
		return err
	}
	joinTo := time.Now()

	h.logf("rebalance: kill -9 of a member")
	killFrom := time.Now()
	a.kill()
	rejoinedAt, _, err := waitSettled(ctx, []*member{b, c}, genJoin, cfgSession(cfg)+90*time.Second)
	if err != nil {
		return fmt.Errorf("after the kill: %w", err)
	}
	if err := sleepCtx(ctx, 3*time.Second); err != nil {
		return err
	}
	killTo := time.Now()
	off := stopOffer()
	if off.err != nil {
		return fmt.Errorf("stream: %w", off.err)
	}
	// The killed member's claimed postbacks wait for their claim lease
	// before a survivor sends them.
	h.logf("rebalance: waiting for the stream's %d postbacks", off.n)
	got, err := probe.wait(ctx, off.n, 2*time.Minute)
	if err != nil {
		return err
	}

	arr := probe.arrivals()
	refGap := longestGap(arr, refFrom, refTo)
	joinGap := longestGap(arr, joinFrom, joinTo)
	killGap := longestGap(arr, killFrom, killTo)
	refLat := percentiles(probe.latencies(refFrom, refTo))
	// Deposits published until the group settled: those of the 3 s after
	// it can still be in flight at the kill, and then wait for the killed
	// member's claim leases, which is the kill's delay, not the join's.
	joinLat := percentiles(probe.latencies(joinFrom, joinedAt))
	killLat := percentiles(probe.latencies(killFrom, killTo))
	h.t.add("longest gap with no postback, steady (5 s reference)", dur(refGap), 1, 1, "itself")
	h.t.add("longest gap when a 3rd member joins", dur(joinGap), joinGap.Seconds(), refGap.Seconds(), "steady reference")
	h.t.note("  group settled, from the start of the 3rd member", dur(joinedAt.Sub(joinFrom)))
	h.t.add("longest gap when a member is killed (kill -9)", dur(killGap), killGap.Seconds(), refGap.Seconds(), "steady reference")
	h.t.note("  survivors in a new generation after (session timeout "+dur(cfgSession(cfg))+")", dur(rejoinedAt.Sub(killFrom)))
	h.t.add("longest publication→tracker delay, steady", dur(refLat.pmax), 1, 1, "itself")
	h.t.add("  of deposits published while the 3rd joined (until settled)", dur(joinLat.pmax), joinLat.pmax.Seconds(), refLat.pmax.Seconds(), "steady")
	h.t.add("  of deposits published after the kill (its partitions wait)", dur(killLat.pmax), killLat.pmax.Seconds(), refLat.pmax.Seconds(), "steady")
	if got < off.n {
		h.t.note("postbacks of the stream arrived (2 min bound)", fmt.Sprintf("%s of %s", grouped(int64(got)), grouped(int64(off.n))))
	} else {
		h.t.note("postbacks of the stream arrived", grouped(int64(got))+" of "+grouped(int64(off.n)))
	}
	return nil
}

func cfgSession(cfg *config.Config) time.Duration { return cfg.Consumer.SessionTimeout }
