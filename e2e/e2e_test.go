package e2e

import (
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Timeouts of the scenarios: generous bounds, never waited out on success.
const (
	readyTimeout    = 60 * time.Second
	phase0Timeout   = 60 * time.Second
	completeTimeout = 180 * time.Second
	caughtUpTimeout = 30 * time.Second
	// stopMargin is what a SIGTERM'd member may take beyond its drain
	// timeout: the final commit, closing clients, the admin server.
	stopMargin = 10 * time.Second
)

// runPhase0 produces the registrations (and the qualifications that must be
// parked before their deposits), then waits until every registration is
// audited and the group committed all of it: a registration records the
// click's partner and params for the click's later events.
func (e *testEnv) runPhase0(sc *script, outs *outputs) {
	e.t.Helper()
	e.produce(sc.phases[0])
	if !waitFor(phase0Timeout, func() bool { return outs.audited(sc.regEvents) == len(sc.regEvents) }) {
		e.t.Fatalf("only %d of %d registrations audited within %s", outs.audited(sc.regEvents), len(sc.regEvents), phase0Timeout)
	}
	e.waitCommitted(phase0Timeout, roleRegistrations, roleQualifications)
}

// finish stops the members cleanly, waits for the output reader to read
// every record and returns what it read.
func (e *testEnv) finish(outs *outputs, members ...*member) outputSnapshot {
	e.t.Helper()
	for _, m := range members {
		m.stop(e.drainTimeout + stopMargin)
	}
	e.waitCaughtUp(outs, caughtUpTimeout)
	return outs.snapshot()
}

// checkNoSecretInLogs fails if a partner token reached a member's log.
func (e *testEnv) checkNoSecretInLogs(members ...*member) {
	e.t.Helper()
	for _, m := range members {
		log := m.log()
		for name, tok := range e.tokens {
			if strings.Contains(log, tok) {
				e.t.Errorf("%s's log contains the secret of %s", m.name, name)
			}
		}
	}
}

func percent(n, of int) int {
	if of == 0 {
		return 0
	}
	return n * 100 / of
}

// TestSteady: two members, the whole stream, the oracle; and the admin
// endpoints of each member.
func TestSteady(t *testing.T) {
	sc := newScript(scriptOptions{scaleoClicks: 200, datingClicks: 100, orphans: true, seed: 1})
	e := newEnv(t, envOptions{plan: sc.plan, window: 10 * time.Second, createTopics: true})
	outs := e.startOutputs()
	a, b := e.startMember("a"), e.startMember("b")
	for _, m := range []*member{a, b} {
		m.waitReady(readyTimeout)
		if code, body, err := m.get("/healthz"); err != nil || code != http.StatusOK {
			t.Errorf("%s /healthz: %d %q %v", m.name, code, body, err)
		}
	}
	start := time.Now()
	e.runPhase0(sc, outs)
	e.produce(sc.phases[1])
	e.waitComplete(sc, outs, completeTimeout, a, b)
	elapsed := time.Since(start)

	for _, m := range []*member{a, b} {
		code, body, err := m.get("/readyz")
		if err != nil || code != http.StatusOK {
			t.Errorf("%s /readyz after the stream: %d %q %v", m.name, code, body, err)
		}
		code, body, err = m.get("/metrics")
		if err != nil || code != http.StatusOK || !strings.Contains(body, "postbackd_postbacks_total") {
			t.Errorf("%s /metrics: %d, err %v, postbackd_postbacks_total present: %v", m.name, code, err, strings.Contains(body, "postbackd_postbacks_total"))
		}
	}
	out := e.finish(outs, a, b)
	e.verify(sc, out, verifyOptions{exactOutputs: true})
	e.checkNoSecretInLogs(a, b)
	for _, m := range []*member{a, b} {
		if !strings.Contains(m.log(), `"msg":"stopped"`) {
			t.Errorf("%s did not log \"stopped\" after SIGTERM", m.name)
		}
	}
	t.Logf("%d events, %d postbacks delivered, %d audit records, %d dead letters, %d confirmations in %s (orphans wait out a %s window)",
		sc.events, sc.expectedDelivered(), len(out.audits), len(out.dlq), len(out.confirms), elapsed.Round(time.Millisecond), e.window)
}

// checkKillDuplicates checks the duplicates the tracker saw after one kill
// -9 at killedAt, with inFlight requests in flight then, and returns the
// bound it held them to.
func (e *testEnv) checkKillDuplicates(v verdict, killedAt time.Time, inFlight int) int {
	t := e.t
	t.Helper()
	// The crash window is between send and mark: a duplicate's first copy
	// must have reached the partner around the kill (a send of the killed
	// member whose mark never reached Redis; the last requests it wrote may
	// be read by the tracker a little after it died). markWindow bounds how
	// long an answered postback may plausibly wait for its mark; there can
	// be no more duplicates than requests in flight at the kill plus those
	// answered within that window before it.
	const markWindow, readLag = time.Second, 200 * time.Millisecond
	bound := inFlight
	for _, reqs := range e.tracker.snapshot() {
		if at := reqs[0].at; at.After(killedAt.Add(-markWindow)) && !at.After(killedAt) {
			bound++
		}
	}
	for _, k := range v.duplicates {
		if first := v.firstArrivals[k]; first.After(killedAt.Add(readLag)) || first.Before(killedAt.Add(-markWindow)) {
			t.Errorf("postback %s was sent twice, but its first copy arrived %s from the kill, outside the send-to-mark window",
				k, first.Sub(killedAt))
		}
	}
	if len(v.duplicates) > bound {
		t.Errorf("%d postbacks accepted twice after one kill -9, more than the %d sent around the kill", len(v.duplicates), bound)
	}
	return bound
}

// TestKillMember: kill -9 of one member mid-stream, then restart it. The
// oracle still holds; the only duplicate allowed at the tracker is a repeat
// of the same transaction id (the window between send and mark), and only a
// handful.
func TestKillMember(t *testing.T) {
	sc := newScript(scriptOptions{scaleoClicks: 200, datingClicks: 100, seed: 2})
	e := newEnv(t, envOptions{plan: sc.plan, createTopics: true})
	outs := e.startOutputs()
	a, b := e.startMember("a"), e.startMember("b")
	a.waitReady(readyTimeout)
	b.waitReady(readyTimeout)
	e.runPhase0(sc, outs)

	// A slightly slow partner keeps postbacks in flight at the kill.
	e.tracker.setSlow(2*time.Millisecond, 0)
	total := sc.expectedDelivered()
	e.produce(sc.phases[1])
	e.waitProgress(total, 30)
	inFlight := e.tracker.inFlightNow()
	killedAt := time.Now()
	a.signal(syscall.SIGKILL)
	atKill := e.tracker.distinct()
	if code, ok := a.wait(10 * time.Second); !ok {
		t.Fatal("a did not die of SIGKILL")
	} else if code == 0 {
		t.Fatalf("a exited 0 after SIGKILL")
	}
	e.tracker.setSlow(0, 0)
	a2 := e.startMember("a-restarted")
	a2.waitReady(readyTimeout)
	e.waitComplete(sc, outs, completeTimeout, a2, b)
	out := e.finish(outs, a2, b)
	v := e.verify(sc, out, verifyOptions{txDuplicatesAllowed: true})

	bound := e.checkKillDuplicates(v, killedAt, inFlight)
	t.Logf("killed a at %d/%d (%d%%) postbacks received, %d requests in flight, %d sent around the kill; duplicates at the tracker (same transaction id): %d %v",
		atKill, total, percent(atKill, total), inFlight, bound, len(v.duplicates), v.duplicates)
}

// TestAttributionUnordered: registrations are not produced first, so a
// click's deposits can be consumed before the registration that carries its
// tracker string and offer; trials carry no params. Every postback must
// still carry the click's fields (the oracle checks each URL), through a
// kill -9 of one member mid-stream.
func TestAttributionUnordered(t *testing.T) {
	sc := newScript(scriptOptions{scaleoClicks: 80, datingClicks: 160, unordered: true, seed: 5})
	e := newEnv(t, envOptions{plan: sc.plan, createTopics: true})
	outs := e.startOutputs()
	a, b := e.startMember("a"), e.startMember("b")
	a.waitReady(readyTimeout)
	b.waitReady(readyTimeout)
	e.runPhase0(sc, outs)

	total := sc.expectedDelivered()
	e.tracker.setSlow(2*time.Millisecond, 0)
	e.produce(sc.phases[1])
	e.waitProgress(total, 30)
	inFlight := e.tracker.inFlightNow()
	killedAt := time.Now()
	a.signal(syscall.SIGKILL)
	if _, ok := a.wait(10 * time.Second); !ok {
		t.Fatal("a did not die of SIGKILL")
	}
	e.tracker.setSlow(0, 0)
	a2 := e.startMember("a-restarted")
	a2.waitReady(readyTimeout)
	e.waitComplete(sc, outs, completeTimeout, a2, b)
	out := e.finish(outs, a2, b)
	v := e.verify(sc, out, verifyOptions{txDuplicatesAllowed: true})
	bound := e.checkKillDuplicates(v, killedAt, inFlight)
	t.Logf("%d events (registrations unordered), %d postbacks; %d requests in flight at the kill, %d sent around it; duplicates at the tracker (same transaction id): %d",
		sc.events, total, inFlight, bound, len(v.duplicates))
}

// TestRebalanceInFlight: one member works against a slow partner; a second
// joins mid-stream; later the first is stopped with SIGTERM. The oracle holds
// with zero duplicates.
func TestRebalanceInFlight(t *testing.T) {
	sc := newScript(scriptOptions{scaleoClicks: 150, datingClicks: 50, seed: 3})
	e := newEnv(t, envOptions{plan: sc.plan, createTopics: true, maxInFlight: 64})
	outs := e.startOutputs()
	a := e.startMember("a")
	a.waitReady(readyTimeout)
	e.runPhase0(sc, outs)

	e.tracker.setSlow(20*time.Millisecond, 4)
	total := sc.expectedDelivered()
	e.produce(sc.phases[1])
	e.waitProgress(total, 20)
	atJoin := e.tracker.distinct()
	b := e.startMember("b")
	b.waitReady(readyTimeout)
	e.waitProgress(total, 60)
	atStop := e.tracker.distinct()
	a.stop(e.drainTimeout + stopMargin)
	e.waitComplete(sc, outs, completeTimeout, b)
	out := e.finish(outs, b)
	e.verify(sc, out, verifyOptions{exactOutputs: true})
	t.Logf("b joined at %d%%, a stopped at %d%% of %d postbacks; no duplicate", percent(atJoin, total), percent(atStop, total), total)
}

// TestSIGTERMDrains: SIGTERM mid-stream exits 0 within the drain timeout
// plus a margin, logs "stopped", and the committed offsets cover every
// audited input; a restarted member then finishes the stream.
func TestSIGTERMDrains(t *testing.T) {
	sc := newScript(scriptOptions{scaleoClicks: 100, datingClicks: 30, seed: 4})
	e := newEnv(t, envOptions{plan: sc.plan, createTopics: true, maxInFlight: 64})
	outs := e.startOutputs()
	a := e.startMember("a")
	a.waitReady(readyTimeout)
	e.runPhase0(sc, outs)

	e.tracker.setSlow(20*time.Millisecond, 4)
	total := sc.expectedDelivered()
	e.produce(sc.phases[1])
	e.waitProgress(total, 25)
	atStop := e.tracker.distinct()
	t0 := time.Now()
	a.signal(syscall.SIGTERM)
	code, ok := a.wait(e.drainTimeout + stopMargin)
	took := time.Since(t0)
	if !ok {
		t.Fatalf("a did not exit within %s of SIGTERM", e.drainTimeout+stopMargin)
	}
	if code != 0 {
		t.Fatalf("a exited %d after SIGTERM\n%s", code, tail(a.stderr, 40))
	}
	if !strings.Contains(a.log(), `"msg":"stopped"`) {
		t.Errorf("no \"stopped\" log line after SIGTERM:\n%s", tail(a.stderr, 20))
	}

	// Every audited input message lies below its partition's committed
	// offset, and every deposit, revenue and registration below it was
	// audited: commits follow durable outcomes, and the drain finished them.
	e.waitCaughtUp(outs, caughtUpTimeout)
	snap := outs.snapshot()
	inputs := e.topicList(inputRoles...)
	com := committed(t, e.brokers, e.group, inputs)
	auditedAt := map[string]map[int]map[int64]bool{}
	isInput := map[string]bool{}
	for _, tp := range inputs {
		isInput[tp] = true
		auditedAt[tp] = map[int]map[int64]bool{}
	}
	for _, a := range snap.audits {
		src := a.rec.Source
		if !isInput[src.Topic] {
			t.Errorf("audit record of %s names source topic %q, not an input topic", a.rec.EventID, src.Topic)
			continue
		}
		if src.Offset >= com[src.Topic][src.Partition] {
			t.Errorf("audited %s/%d@%d (event %s) lies beyond the committed offset %d",
				src.Topic, src.Partition, src.Offset, a.rec.EventID, com[src.Topic][src.Partition])
		}
		if auditedAt[src.Topic][src.Partition] == nil {
			auditedAt[src.Topic][src.Partition] = map[int64]bool{}
		}
		auditedAt[src.Topic][src.Partition][src.Offset] = true
	}
	for _, role := range []string{roleDeposits, roleRevenue, roleRegistrations} {
		tp := e.topics[role]
		for p, off := range com[tp] {
			for o := int64(0); o < off; o++ {
				if !auditedAt[tp][p][o] {
					t.Errorf("%s/%d@%d is committed but has no audit record", tp, p, o)
				}
			}
		}
	}
	t.Logf("SIGTERM at %d/%d (%d%%) postbacks received; exited 0 after %s (drain timeout %s); committed %v",
		atStop, total, percent(atStop, total), took.Round(time.Millisecond), e.drainTimeout, com)

	b := e.startMember("b")
	b.waitReady(readyTimeout)
	e.waitComplete(sc, outs, completeTimeout, b)
	out := e.finish(outs, b)
	e.verify(sc, out, verifyOptions{exactOutputs: true})
}

// TestSIGTERMSeesAttemptsThrough: SIGTERM while the tracker takes longer to
// answer than the drain timeout (but less than the partner's timeout). The
// member cancels its in-flight events when the drain runs out, but the
// requests already sent run to their answers: those count, are marked
// delivered, the member exits 0 within the drain plus its cancel grace, and
// the member that finishes the stream sends none of them again. A client
// that abandoned its requests at the drain timeout would leave postbacks
// the tracker accepted unmarked, and the next owner would send them twice.
func TestSIGTERMSeesAttemptsThrough(t *testing.T) {
	sc := newScript(scriptOptions{scaleoClicks: 60, datingClicks: 20, seed: 9})
	// Every answer takes 2s: longer than the drain (1s), well within the
	// partners' timeout (6s: a loaded machine must not turn the slow answer
	// into a timeout, whose retry would be a second request).
	const answerTakes = 2 * time.Second
	e := newEnv(t, envOptions{plan: sc.plan, createTopics: true, maxInFlight: 64,
		drainTimeout: time.Second, partnerTimeout: 6 * time.Second})
	outs := e.startOutputs()
	a := e.startMember("a")
	a.waitReady(readyTimeout)
	e.runPhase0(sc, outs)

	e.tracker.setSlow(answerTakes, 0)
	e.produce(sc.phases[1])
	if !waitFor(completeTimeout, func() bool { return e.tracker.inFlightNow() > 0 }) {
		t.Fatal("no request reached the tracker")
	}
	inFlight := e.tracker.inFlightNow()
	sigterm := time.Now()
	a.signal(syscall.SIGTERM)
	limit := e.drainTimeout + e.partnerTimeout + time.Second + stopMargin // drain, cancel grace, margin
	code, ok := a.wait(limit)
	if !ok {
		t.Fatalf("a did not exit within %s of SIGTERM", limit)
	}
	if code != 0 {
		t.Fatalf("a exited %d after SIGTERM\n%s", code, tail(a.stderr, 40))
	}
	log := a.log()
	if !strings.Contains(log, "drain timed out, cancelling in-flight handlers") {
		t.Fatalf("the drain did not run out, so nothing was in flight at its end; the test proves nothing:\n%s", tail(a.stderr, 20))
	}
	if strings.Contains(log, "handlers still running after cancellation") {
		t.Errorf("handlers outlived the cancel grace:\n%s", tail(a.stderr, 20))
	}
	// Some request was still open when the drain ran out: its answer came
	// after it.
	answeredLate := 0
	for _, reqs := range e.tracker.snapshot() {
		for _, r := range reqs {
			if r.at.After(sigterm.Add(e.drainTimeout)) {
				answeredLate++
			}
		}
	}
	if answeredLate == 0 {
		t.Fatal("no postback was answered after the drain ran out; the test proves nothing")
	}

	e.tracker.setSlow(0, 0)
	b := e.startMember("b")
	b.waitReady(readyTimeout)
	e.waitComplete(sc, outs, completeTimeout, b)
	out := e.finish(outs, b)
	e.verify(sc, out, verifyOptions{exactOutputs: true}) // any postback accepted twice fails
	t.Logf("SIGTERM with %d requests in flight at the tracker, %d answered after the drain ran out; no postback accepted twice", inFlight, answeredLate)
}

// waitProgress waits until the tracker has received percent % of total
// distinct postbacks, failing the test at completeTimeout.
func (e *testEnv) waitProgress(total, percent int) {
	e.t.Helper()
	if !waitFor(completeTimeout, func() bool { return e.tracker.distinct() >= total*percent/100 }) {
		e.t.Fatalf("tracker received only %d of %d postbacks, waiting for %d%%", e.tracker.distinct(), total, percent)
	}
}
