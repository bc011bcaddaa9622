//go:build chaos

package e2e

// The chaos suite: scripts/chaos.sh runs it (go test -tags chaos) against a
// Kafka broker and a Redis of its own, which it restarts and hangs. See the
// README's "Faults" section for the command and the latest table.

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/postbackd/postbackd/record"
)

// chaosProfile sizes a run: ci is a few minutes on every change, full is
// the published run (at least 100 000 events over 20 000 clicks).
type chaosProfile struct {
	name           string
	scaleo, dating int
	kills          int
	partnerDown    time.Duration
	redisHang      time.Duration
	completion     time.Duration
	seed           uint64
}

func profile(t *testing.T) chaosProfile {
	switch p := os.Getenv("CHAOS_PROFILE"); p {
	case "", "ci":
		return chaosProfile{name: "ci", scaleo: 600, dating: 400, kills: 4, partnerDown: 15 * time.Second,
			redisHang: 25 * time.Second, completion: 8 * time.Minute, seed: 11}
	case "full":
		return chaosProfile{name: "full", scaleo: 14000, dating: 6000, kills: 10, partnerDown: time.Minute,
			redisHang: 25 * time.Second, completion: 40 * time.Minute, seed: 12}
	default:
		t.Fatalf("CHAOS_PROFILE=%q: want ci or full", p)
	}
	return chaosProfile{}
}

// script runs one of the project's scripts with this process's environment
// (scripts/chaos.sh set the ports and state folder of its own servers).
func runScript(t *testing.T, name string, args ...string) {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", append([]string{filepath.Join(root, "scripts", name)}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("scripts/%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// chaos is the run's state: the live members and what was injected.
type chaos struct {
	t        *testing.T
	e        *testEnv
	rng      *rand.Rand
	members  []*member
	n        int
	injected []string
}

func (c *chaos) note(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	c.injected = append(c.injected, time.Now().Format("15:04:05")+" "+s)
	c.t.Log(s)
}

// kill kill -9s a random member and starts a replacement.
func (c *chaos) kill(restart bool) {
	i := c.rng.IntN(len(c.members))
	m := c.members[i]
	// Kill while postbacks are in flight when there are any: wait a moment
	// for one (the partners' slow answers make them common).
	waitFor(3*time.Second, func() bool { return c.e.tracker.inFlightNow() > 0 })
	inFlight := c.e.tracker.inFlightNow()
	m.signal(syscall.SIGKILL)
	if _, ok := m.wait(10 * time.Second); !ok {
		c.t.Fatalf("%s did not die of SIGKILL", m.name)
	}
	c.note("kill -9 %s (%d requests in flight at the tracker)", m.name, inFlight)
	c.members = append(c.members[:i], c.members[i+1:]...)
	if restart {
		c.n++
		c.members = append(c.members, c.e.startMember(fmt.Sprintf("m%d", c.n)))
	}
}

func (c *chaos) waitProgress(total, pct int) {
	if !waitFor(completeTimeout*4, func() bool { return c.e.tracker.distinct() >= total*pct/100 }) {
		c.t.Fatalf("tracker received only %d of %d postbacks, waiting for %d%%", c.e.tracker.distinct(), total, pct)
	}
}

// wipe is the Redis data loss step: what it destroyed, what rebuild-state
// said, and what the oracle needs to judge it at the end.
type wipe struct {
	killed   int
	keys     int64  // keys FLUSHALL dropped
	summary  string // rebuild-state's report, in one line
	killedAt time.Time
	// finals: pbKey → the final outcome (delivered, dead_lettered) the
	// audit topic held when Redis was wiped. rebuild-state restores them,
	// so none of these postbacks may reach the partner again.
	finals map[string]record.Outcome
	// auditedFinals is the number of distinct postback ids among finals;
	// restoredFinals what rebuild-state reports it restored.
	auditedFinals, restoredFinals int
	// attempts: the tracker's requests per key when the members restarted.
	attempts  map[string]int
	restartAt time.Time
	// Found by check: postbacks accepted before the wipe and again after
	// the rebuild (sent, their outcome not yet audited at the kill: the
	// documented crash window, same transaction id), and postbacks with a
	// final audit record before the wipe requested again after it (each an
	// error: rebuild-state failed to restore their outcome).
	resent, resentFinal int
	// auditsBefore is how many audit records the reader held at the wipe;
	// replayed counts those after them re-emitted for a postback already
	// delivered (replayed=true): the rewound input, consumed again.
	auditsBefore, replayed int
}

// wipeRedis is Redis data loss and its documented recovery: kill -9 every
// member at once, FLUSHALL, wait for the group to empty, run `postbackd
// rebuild-state --rewind-to rewindTo` (exit 0 required), then start three
// members again, which re-consume the input from rewindTo.
func (c *chaos) wipeRedis(rc *redis.Client, outs *outputs, rewindTo time.Time) *wipe {
	t, e := c.t, c.e
	t.Helper()
	// kafka.sh restart does not wait for the broker it restarted; the
	// members ride that out by themselves, the harness's reads and the
	// rebuild need it up: the wipe comes once the broker is back.
	runScript(t, "kafka.sh", "wait")
	w := &wipe{killed: len(c.members), finals: map[string]record.Outcome{}}
	inFlight := e.tracker.inFlightNow()
	for _, m := range c.members {
		m.signal(syscall.SIGKILL)
	}
	w.killedAt = time.Now()
	for _, m := range c.members {
		if _, ok := m.wait(10 * time.Second); !ok {
			t.Fatalf("%s did not die of SIGKILL", m.name)
		}
	}
	c.note("kill -9 of all %d members at once (%d requests in flight at the tracker)", w.killed, inFlight)
	c.members = nil

	// Nothing writes any more: the audit trail as it stands is all that
	// survives the loss, and all the rebuild can know. After the broker's
	// restart the output reader may still wait for its group to rebalance
	// (the old member's 30 s session): more than caughtUpTimeout.
	e.waitCaughtUp(outs, 2*time.Minute)
	pids := map[string]bool{}
	before := outs.snapshot().audits
	w.auditsBefore = len(before)
	for _, a := range before {
		r := a.rec
		if r.PostbackID == "" || (r.Outcome != record.OutcomeDelivered && r.Outcome != record.OutcomeDeadLettered) {
			continue
		}
		pids[r.PostbackID] = true
		k := pbKey(r.Goal, r.Status, r.EventID)
		if w.finals[k] != record.OutcomeDelivered { // a delivery wins: it is a fact
			w.finals[k] = r.Outcome
		}
	}
	w.auditedFinals = len(pids)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var err error
	if w.keys, err = rc.DBSize(ctx).Result(); err != nil {
		t.Fatalf("redis DBSIZE: %v", err)
	}
	if err := rc.FlushAll(ctx).Err(); err != nil {
		t.Fatalf("redis FLUSHALL: %v", err)
	}
	if n, err := rc.DBSize(ctx).Result(); err != nil || n != 0 {
		t.Fatalf("redis DBSIZE after FLUSHALL: %d, %v", n, err)
	}
	c.note("Redis wiped: FLUSHALL of %d keys (logged to the append-only file: no restart brings them back)", w.keys)

	// rebuild-state refuses to write while the group has members; the
	// killed ones leave it when their session times out.
	var members int
	if !waitFor(60*time.Second, func() bool { members = groupMembers(t, e.brokers, e.group); return members == 0 }) {
		t.Fatalf("group %s still has %d members a minute after every member was killed", e.group, members)
	}
	at := rewindTo.UTC().Format(time.RFC3339)
	began := time.Now()
	code, stdout, stderr := e.runBinary(5*time.Minute, "rebuild-state", "--config", e.configPath(), "--rewind-to", at)
	took := time.Since(began)
	t.Logf("postbackd rebuild-state --rewind-to %s: exit %d in %s\n%s", at, code, took.Round(time.Millisecond), stdout)
	if code != 0 {
		t.Fatalf("postbackd rebuild-state: exit %d, want 0\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	w.summary = summariseRebuild(t, stdout, &w.restoredFinals)
	c.note("postbackd rebuild-state --rewind-to %s: exit 0 in %s: %s", at, took.Round(100*time.Millisecond), w.summary)
	if strings.Contains(stdout, "WARNING") {
		// Conflicting or second FTDs, or retries older than the rewind: none
		// can be right after a FLUSHALL and a rewind to the very start.
		t.Errorf("rebuild-state warned:\n%s", stdout)
	}
	if w.restoredFinals < w.auditedFinals {
		t.Errorf("rebuild-state restored %d final postback outcomes; the audit topic held %d", w.restoredFinals, w.auditedFinals)
	}

	// The tracker counts a request once its fault (a slow or too-slow
	// answer: at most 3.5 s) is served, so a killed member's last requests
	// are counted long before this (the group took a session timeout, 6 s,
	// to empty): every request counted after restartAt is the new members'.
	w.attempts = e.tracker.attemptsNow()
	w.restartAt = time.Now()
	for range 3 {
		c.n++
		m := e.startMember(fmt.Sprintf("m%d", c.n))
		c.members = append(c.members, m)
	}
	for _, m := range c.members {
		m.waitReady(readyTimeout)
	}
	c.note("%d members started again: the group re-consumes the input from %s", len(c.members), at)
	return w
}

// summariseRebuild puts rebuild-state's report on one line (the FTD
// records, final outcomes, contexts and the partitions rewound) and reads
// the number of final outcomes it restored into finals.
func summariseRebuild(t *testing.T, stdout string, finals *int) string {
	t.Helper()
	var parts []string
	rewound := -1
	for _, l := range strings.Split(stdout, "\n") {
		l = strings.TrimSpace(l)
		switch {
		case strings.HasPrefix(l, "read "):
			parts = append(parts, l)
		case strings.HasPrefix(l, "FTD records:"), strings.HasPrefix(l, "click contexts:"),
			strings.HasPrefix(l, "classification answers:"), strings.HasPrefix(l, "route memos:"):
			parts = append(parts, l)
		case strings.HasPrefix(l, "final postback outcomes:"):
			parts = append(parts, l)
			n, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(l, "final postback outcomes:")))
			if err != nil {
				t.Errorf("rebuild-state: cannot read %q: %v", l, err)
			}
			*finals = n
		case strings.HasPrefix(l, "pending retries:"):
			parts = append(parts, l)
		case strings.HasPrefix(l, "rewound group "):
			count, _, _ := strings.Cut(l[strings.LastIndex(l, ": ")+1:], " partitions")
			n, err := strconv.Atoi(strings.TrimSpace(count))
			if err != nil {
				t.Errorf("rebuild-state: cannot read %q: %v", l, err)
			}
			rewound = n
			parts = append(parts, fmt.Sprintf("%d input partitions rewound", n))
		}
	}
	if rewound <= 0 {
		t.Errorf("rebuild-state rewound no partition:\n%s", stdout)
	}
	if !strings.Contains(stdout, "created") {
		t.Errorf("rebuild-state created no FTD record:\n%s", stdout)
	}
	return strings.Join(parts, "; ")
}

// check judges the wipe at the end of the run: a postback whose final
// outcome the audit held when Redis was wiped must never be requested
// again (rebuild-state restored it); one accepted before the wipe and
// again after it is the crash window of the kill (sent, not yet audited).
func (w *wipe) check(t *testing.T, st *scriptedTracker, out outputSnapshot) {
	t.Helper()
	for _, a := range out.audits[min(w.auditsBefore, len(out.audits)):] {
		if a.rec.Replayed {
			w.replayed++
		}
	}
	if w.replayed == 0 {
		t.Errorf("no audit record was replayed after the rebuild: the rewound input was not consumed again")
	}
	now := st.attemptsNow()
	for k, outcome := range w.finals {
		if n := now[k] - w.attempts[k]; n > 0 {
			w.resentFinal++
			t.Errorf("postback %s was audited %s before the Redis wipe and requested %d more times after the rebuild", k, outcome, n)
		}
	}
	for _, reqs := range st.snapshot() {
		before, after := false, false
		for _, r := range reqs {
			before = before || r.arrived.Before(w.killedAt)
			after = after || r.arrived.After(w.restartAt)
		}
		if before && after {
			w.resent++
		}
	}
}

// groupMembers is the number of members the group has now.
func groupMembers(t *testing.T, brokers []string, group string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c, done := kafkaClient(brokers)
	defer done()
	res, err := c.DescribeGroups(ctx, &kafka.DescribeGroupsRequest{GroupIDs: []string{group}})
	if err != nil {
		t.Fatalf("describe group %s: %v", group, err)
	}
	n := 0
	for _, g := range res.Groups {
		if g.Error != nil {
			t.Fatalf("describe group %s: %v", group, g.Error)
		}
		n += len(g.Members)
	}
	return n
}

// TestChaos: three members work a seeded stream on all four topics while
// members are killed (some mid-send, some during a rebalance), the partners
// misbehave (5xx, 429 with Retry-After, slow answers, timeouts, resets,
// body refusals, one partner down), Redis hangs longer than a claim's lease
// and restarts from its append-only file, the broker restarts, and Redis
// loses everything (every member killed, FLUSHALL) and is rebuilt from the
// audit topic by `postbackd rebuild-state --rewind-to` before the members
// start again. Then the independent oracle: nothing lost, misclassified,
// misrouted, out of order or missing; duplicates only with the same
// transaction id; and nothing with a final audit record before the wipe
// sent again after it.
func TestChaos(t *testing.T) {
	if os.Getenv("CHAOS_REDIS_PORT") == "" {
		t.Fatal("run the chaos suite with scripts/chaos.sh: it starts the broker and Redis it restarts and hangs")
	}
	p := profile(t)
	sc := newScript(scriptOptions{scaleoClicks: p.scaleo, datingClicks: p.dating, unordered: true, allInvalid: true, seed: p.seed})
	e := newEnv(t, envOptions{plan: sc.plan, createTopics: true, window: 10 * time.Minute})
	e.tracker.setFaults(&trackerFaults{
		rng: rand.New(rand.NewPCG(p.seed, 7)), err503: 30, err429: 10, slow: 20, timeout: 2, reset: 3,
		slowFor: 300 * time.Millisecond, timeoutFor: 3500 * time.Millisecond, // the partners' timeout is 3s
	})
	c := &chaos{t: t, e: e, rng: rand.New(rand.NewPCG(p.seed, 9))}
	outs := e.startOutputs()
	for range 3 {
		c.n++
		m := e.startMember(fmt.Sprintf("m%d", c.n))
		m.waitReady(readyTimeout)
		c.members = append(c.members, m)
	}
	// The rewind point of the Redis wipe below: before anything was produced,
	// so the whole input is consumed again after the rebuild.
	runStart := time.Now()
	e.runPhase0(sc, outs)
	total := sc.expectedDelivered()
	started := time.Now()
	e.produce(sc.phases[1]) // in seconds; the work and the faults take minutes

	kills := 0
	killAt := func(pct int, restart bool) {
		c.waitProgress(total, pct)
		c.kill(restart)
		kills++
	}
	killAt(5, true)
	killAt(10, true)
	// Two at once: the second dies while the group rebalances after the first.
	c.waitProgress(total, 15)
	c.kill(false)
	c.kill(false)
	kills += 2
	for len(c.members) < 3 {
		c.n++
		c.members = append(c.members, e.startMember(fmt.Sprintf("m%d", c.n)))
	}

	c.waitProgress(total, 20)
	e.tracker.setDown("/track", time.Now().Add(p.partnerDown))
	c.note("partner scaleo down (503 to everything) for %s; datingnet stays up", p.partnerDown)

	c.waitProgress(total, 30)
	rc := redis.NewClient(&redis.Options{Addr: e.redis})
	defer rc.Close()
	pid := redisPID(t, rc)
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	c.note("Redis hung (SIGSTOP pid %d) for %s, longer than a claim's lease", pid, p.redisHang)
	hang := time.NewTimer(p.redisHang)
	<-hang.C // the fault's duration, not synchronisation
	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	c.note("Redis resumed (SIGCONT)")

	c.waitProgress(total, 45)
	runScript(t, "redis.sh", "restart")
	c.note("Redis restarted, reloading its append-only file")

	c.waitProgress(total, 55)
	runScript(t, "kafka.sh", "restart")
	c.note("Kafka broker restarted (data kept)")

	c.waitProgress(total, 62)
	w := c.wipeRedis(rc, outs, runStart)

	for pct := 70; kills < p.kills; pct += max(1, 25/max(1, p.kills-kills)) {
		killAt(min(pct, 95), true)
	}

	e.waitComplete(sc, outs, p.completion, c.members...)
	elapsed := time.Since(started)
	out := e.finish(outs, c.members...)
	v := e.verify(sc, out, verifyOptions{txDuplicatesAllowed: true})
	w.check(t, e.tracker, out)
	report := chaosTable(p, sc, out, v, e.tracker.faultCounts(), kills, w, elapsed, c.injected)
	t.Log("\n" + report)
	if path := os.Getenv("CHAOS_REPORT"); path != "" {
		if err := os.WriteFile(path, []byte(report), 0o644); err != nil {
			t.Error(err)
		}
	}
}

func redisPID(t *testing.T, rc *redis.Client) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	info, err := rc.Info(ctx, "server").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "process_id:"); ok {
			pid, err := strconv.Atoi(v)
			if err == nil {
				return pid
			}
		}
	}
	t.Fatal("INFO server names no process_id")
	return 0
}

// chaosTable is the run's one table.
func chaosTable(p chaosProfile, sc *script, out outputSnapshot, v verdict, faults map[string]int, kills int, w *wipe, elapsed time.Duration, injected []string) string {
	var b strings.Builder
	row := func(k string, val any) { fmt.Fprintf(&b, "| %s | %v |\n", k, val) }
	delivered := 0
	for _, ps := range sc.postbacks {
		if ps.outcome == "delivered" {
			delivered++
		}
	}
	invalid := 0
	for _, reason := range sc.dlq {
		switch reason {
		case "undecodable", "schema_invalid", "unknown_currency", "invalid_amount", "unknown_merchant", "unknown_partner":
			invalid++
		}
	}
	var fk []string
	for k, n := range faults {
		fk = append(fk, fmt.Sprintf("%s %d", k, n))
	}
	sort.Strings(fk)
	fmt.Fprintf(&b, "chaos profile %s\n\n| | |\n|---|---|\n", p.name)
	row("events in", sc.events)
	row("clicks", p.scaleo+p.dating)
	row("postbacks expected (delivered)", delivered)
	row("postbacks delivered (distinct, at the tracker)", delivered-v.counts["lost"])
	row("lost", v.counts["lost"])
	row("duplicated, same transaction_id (a partner drops them)", len(v.duplicates))
	row("duplicated, other", v.counts["dup_other"])
	row("misclassified (ftd/rdep)", v.counts["misclassified"])
	row("unexpected postbacks", v.counts["unexpected"])
	row("wrong partner or params", v.counts["misrouted"])
	row("out of order (status change before its FTD)", v.counts["out_of_order"])
	row("invalid inputs dead-lettered (expected)", fmt.Sprintf("%d (%d missing, %d unexpected)", invalid, v.counts["dlq_missing"], v.counts["dlq_unexpected"]))
	row("audit records missing / extra / inconsistent", fmt.Sprintf("%d / %d / %d", v.counts["audit_missing"], v.counts["audit_extra"], v.counts["audit_wrong"]))
	row("confirmations missing / extra", fmt.Sprintf("%d / %d", v.counts["confirm_missing"], v.counts["confirm_extra"]))
	row("kill -9 of members", fmt.Sprintf("%d (two at once), then all %d at once for the Redis wipe", kills, w.killed))
	row("Redis wiped and rebuilt from the audit", fmt.Sprintf("FLUSHALL of %d keys; rebuild-state restored %d of %d final outcomes audited; %d audit records replayed after it; %d resent (unaudited at the kill), %d with a final audit sent again",
		w.keys, w.restoredFinals, w.auditedFinals, w.replayed, w.resent, w.resentFinal))
	row("tracker faults", strings.Join(fk, ", "))
	row("audit / DLQ / confirmation records read", fmt.Sprintf("%d / %d / %d", len(out.audits), len(out.dlq), len(out.confirms)))
	row("throughput (events/s, faults included)", fmt.Sprintf("%.0f over %s", float64(sc.events)/elapsed.Seconds(), elapsed.Round(time.Second)))
	b.WriteString("\nfaults injected:\n")
	for _, s := range injected {
		b.WriteString("  " + s + "\n")
	}
	return b.String()
}

// setFaults installs (or, with nil, removes) the partner's misbehaviour.
func (st *scriptedTracker) setFaults(f *trackerFaults) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.faults = f
}

// setDown makes every request under prefix answer 503 until until.
func (st *scriptedTracker) setDown(prefix string, until time.Time) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.faults == nil {
		st.faults = &trackerFaults{rng: rand.New(rand.NewPCG(1, 2))}
	}
	st.faults.downPrefix, st.faults.downUntil = prefix, until
}

// attemptsNow copies how many requests the tracker counted per key (those
// that got past the injected faults).
func (st *scriptedTracker) attemptsNow() map[string]int {
	st.mu.Lock()
	defer st.mu.Unlock()
	out := make(map[string]int, len(st.attempts))
	for k, v := range st.attempts {
		out[k] = v
	}
	return out
}

// faultCounts copies how many requests each fault answered.
func (st *scriptedTracker) faultCounts() map[string]int {
	st.mu.Lock()
	defer st.mu.Unlock()
	out := make(map[string]int, len(st.counts))
	for k, v := range st.counts {
		out[k] = v
	}
	return out
}
