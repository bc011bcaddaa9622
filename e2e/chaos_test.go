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

// TestChaos: three members work a seeded stream on all four topics while
// members are killed (some mid-send, some during a rebalance), the partners
// misbehave (5xx, 429 with Retry-After, slow answers, timeouts, resets,
// body refusals, one partner down), Redis hangs longer than a claim's lease
// and restarts from its append-only file, and the broker restarts. Then the
// independent oracle: nothing lost, misclassified, misrouted, out of order
// or missing; duplicates only with the same transaction id.
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

	for pct := 60; kills < p.kills; pct += max(1, 35/max(1, p.kills-kills)) {
		killAt(min(pct, 95), true)
	}

	e.waitComplete(sc, outs, p.completion, c.members...)
	elapsed := time.Since(started)
	out := e.finish(outs, c.members...)
	v := e.verify(sc, out, verifyOptions{txDuplicatesAllowed: true})
	report := chaosTable(p, sc, out, v, e.tracker.faultCounts(), kills, elapsed, c.injected)
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
func chaosTable(p chaosProfile, sc *script, out outputSnapshot, v verdict, faults map[string]int, kills int, elapsed time.Duration, injected []string) string {
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
	row("kill -9 of members", kills)
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
