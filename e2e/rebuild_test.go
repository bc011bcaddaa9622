package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"regexp"
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

// TestRebuildState proves `postbackd rebuild-state` with the real binary,
// Kafka and Redis: a journey is delivered, every member is killed, the
// test's Redis keys are wiped, the state is rebuilt from the audit topic,
// and the restarted service must behave as if Redis had never lost
// anything: a new deposit is an rdep to the click's own partner with the
// click's params, redelivered events are not sent again, a qualification
// goes where its FTD went, an event without network goes to the partner its
// click's registration named. Then a qualification parked before its FTD
// (state the audit cannot hold) is lost with Redis and recovered by
// --rewind-to; rebuild-state refuses to write while the group has a member
// (and --dry-run writes nothing); a second run changes nothing.
func TestRebuildState(t *testing.T) {
	s := newRebuildSuite(t)
	start := time.Now()

	s.journey()
	s.crashAndRebuild()
	s.afterRebuild()
	s.rewind()
	s.finish()
	t.Logf("rebuild-state scenarios: %d postbacks expected at the tracker; %s", len(s.want), time.Since(start).Round(time.Millisecond))
}

// rbTimeout bounds each wait of these scenarios; none is waited out when
// the service works (merchants dating, casino wait 1m for a registration:
// a deposit routed only after that wait fails here).
const rbTimeout = 30 * time.Second

// The clicks of the scenarios. The partner their registration names is
// (but for s1, the hybrid merchant's click) not their merchant's default
// partner, so a lost click context or FTD route shows as a postback to the
// wrong partner; r1, r2 only register before the loss.
type rbClick struct {
	id, merchant, partner string
	params                map[string]string
	tr                    trString // datingnet: what its tracker string decodes to
	offer                 string
}

type rbSuite struct {
	t    *testing.T
	e    *testEnv
	outs *outputs
	rdb  *redis.Client
	m    *member // the running member, nil when none runs

	at   time.Time
	msgs map[string]inMsg // event id → the message as first produced

	// want: tracker keys (goal|status|event id) that must be accepted
	// exactly once by the end; refused: keys refused for good, attempted
	// exactly once.
	want    map[string]bool
	refused map[string]bool
	// pids: "<event id>|<goal>" → the postback id first audited delivered.
	pids map[string]string

	// What the first rebuild must restore (counted as the journey goes).
	ftds, answers, routes, finals int

	clicks map[string]*rbClick
	// ids of the journey's events, by name ("s1-ftd", "s3-rdep-refused").
	ids map[string]string

	// Scenario 2: the rewind point, and where the parked qualification lies.
	rewindTo  time.Time
	qualPart  int
	qualOff   int64
	qualTopic string
}

func newRebuildSuite(t *testing.T) *rbSuite {
	run := randomID()
	ids := map[string]string{}
	for _, n := range []string{
		"s1-reg", "s2-reg", "s3-reg", "d1-reg", "d2-reg", "r1-reg", "r2-reg",
		"s1-ftd", "s2-ftd", "s3-ftd", "d1-ftd", "d2-ftd",
		"s1-rdep1", "s1-rdep2", "s2-rdep1", "s3-rdep1", "s3-rdep-refused", "d1-rdep1", "d2-rdep1",
		"s1-rev", "s1-qual", "s2-qual",
		// after the rebuild
		"s1-rdep-new", "s2-rdep-new", "s3-rdep-new", "d1-rdep-new", "d2-rdep-new",
		"s3-qual", "s1-qual-again", "s2-qual-other", "r1-ftd", "r2-ftd",
		// the rewind
		"p-reg", "p-qual", "p-ftd", "p2-reg", "p2-ftd", "p2-rdep", "p2-qual",
	} {
		ids[n] = n + "-" + run
	}
	plan := map[string]string{ids["s3-rdep-refused"]: planRefuse}
	e := newEnv(t, envOptions{plan: plan, createTopics: true})
	s := &rbSuite{
		t: t, e: e, outs: e.startOutputs(), at: time.Now().UTC().Truncate(time.Second),
		msgs: map[string]inMsg{}, want: map[string]bool{}, refused: map[string]bool{}, pids: map[string]string{},
		ids: ids,
	}
	s.rdb = redis.NewClient(&redis.Options{Addr: e.redis})
	t.Cleanup(func() { _ = s.rdb.Close() })
	tr := func(n int) trString { return newTrString(600 + n) }
	s.clicks = map[string]*rbClick{
		"s1": {id: "rb-s1-" + run, merchant: merchantCasino, partner: partnerScaleo, params: map[string]string{"custom2": "s1-camp"}},
		"s2": {id: "rb-s2-" + run, merchant: merchantDating, partner: partnerScaleo, params: map[string]string{"custom2": "s2-camp"}},
		"s3": {id: "rb-s3-" + run, merchant: merchantDating, partner: partnerScaleo, params: map[string]string{"custom2": "s3-camp"}},
		"d1": {id: "rb-d1-" + run, merchant: merchantCasino, partner: partnerDating, tr: tr(1), offer: "offer-d1"},
		"d2": {id: "rb-d2-" + run, merchant: merchantInstant, partner: partnerDating, tr: tr(2), offer: "offer-d2"},
		"r1": {id: "rb-r1-" + run, merchant: merchantDating, partner: partnerScaleo, params: map[string]string{"custom2": "r1-camp"}},
		"r2": {id: "rb-r2-" + run, merchant: merchantInstant, partner: partnerDating, tr: tr(3), offer: "offer-r2"},
		"p":  {id: "rb-p-" + run, merchant: merchantDating, partner: partnerScaleo, params: map[string]string{"custom2": "p-camp"}},
		"p2": {id: "rb-p2-" + run, merchant: merchantCasino, partner: partnerDating, tr: tr(4), offer: "offer-p2"},
	}
	for _, c := range s.clicks {
		if c.partner == partnerDating {
			c.params = map[string]string{"tr": c.tr.raw, "offer_id": c.offer}
		}
	}
	s.m = e.startMember("a")
	s.m.waitReady(readyTimeout)
	return s
}

// ---- producing ----

func (s *rbSuite) send(role string, c *rbClick, name string, fields map[string]any) {
	s.t.Helper()
	id := s.ids[name]
	if id == "" {
		s.t.Fatalf("no event id named %q", name)
	}
	s.at = s.at.Add(time.Second)
	v := map[string]any{"event_id": id, "occurred_at": s.at.Format(time.RFC3339), "merchant_id": c.merchant, "click_id": c.id}
	maps.Copy(v, fields)
	b, err := json.Marshal(v)
	if err != nil {
		s.t.Fatal(err)
	}
	m := inMsg{role: role, key: c.id, value: b}
	s.msgs[id] = m
	s.e.produce([]inMsg{m})
}

// redeliver produces the named events again, byte for byte: what a
// payments platform does after a timeout of its own.
func (s *rbSuite) redeliver(names ...string) {
	s.t.Helper()
	var msgs []inMsg
	for _, n := range names {
		m, ok := s.msgs[s.ids[n]]
		if !ok {
			s.t.Fatalf("redeliver %s: never produced", n)
		}
		msgs = append(msgs, m)
	}
	s.e.produce(msgs)
}

func (s *rbSuite) register(c *rbClick, name string) {
	s.send(roleRegistrations, c, name, registration(map[string]any{"network": c.partner, "params": c.params}))
}

// ---- reading the outputs, the tracker and Redis ----

func (s *rbSuite) auditsOf(name string) []record.Audit {
	id := s.ids[name]
	var out []record.Audit
	for _, a := range s.outs.snapshot().audits {
		if a.rec.EventID == id {
			out = append(out, a.rec)
		}
	}
	return out
}

// waitUntil polls cond, failing the test at rbTimeout (or at once when the
// running member died) with what says why.
func (s *rbSuite) waitUntil(what func() string, cond func() bool) {
	s.t.Helper()
	ok := waitFor(rbTimeout, func() bool { return (s.m != nil && s.m.exited()) || cond() })
	if s.m != nil && s.m.exited() {
		s.t.Fatalf("%s exited (code %d)\n%s", s.m.name, s.m.code, tail(s.m.stderr, 40))
	}
	if !ok {
		s.t.Fatalf("not within %s: %s", rbTimeout, what())
	}
}

// waitAudit waits for an audit record of the named event that pred accepts.
func (s *rbSuite) waitAudit(name, want string, pred func(record.Audit) bool) record.Audit {
	s.t.Helper()
	var got record.Audit
	s.waitUntil(func() string {
		return fmt.Sprintf("event %s (%s): no audit record %s; records: %+v", name, s.ids[name], want, s.auditsOf(name))
	}, func() bool {
		for _, a := range s.auditsOf(name) {
			if pred(a) {
				got = a
				return true
			}
		}
		return false
	})
	return got
}

func (s *rbSuite) accepted(key string) []accepted { return s.e.tracker.snapshot()[key] }

func (s *rbSuite) attempts(key string) int {
	st := s.e.tracker
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.attempts[key]
}

// delivered waits for the named event's postback (goal, status) to be
// audited delivered (not replayed) and accepted once by the tracker with the
// audit's postback id as transaction id; it records it as expected. A
// status change is named by its qualification.
func (s *rbSuite) delivered(name, goal, status string) (record.Audit, accepted) {
	s.t.Helper()
	a := s.waitAudit(name, "delivered "+goal, func(a record.Audit) bool {
		return a.Goal == goal && a.Outcome == record.OutcomeDelivered && !a.Replayed
	})
	key := pbKey(goal, status, s.ids[name])
	var reqs []accepted
	s.waitUntil(func() string { return fmt.Sprintf("the tracker accepted %s %d times, want 1", key, len(reqs)) },
		func() bool { reqs = s.accepted(key); return len(reqs) > 0 })
	if len(reqs) != 1 {
		s.t.Fatalf("postback %s accepted %d times, want 1", key, len(reqs))
	}
	if a.PostbackID == "" || reqs[0].txOf() != a.PostbackID {
		s.t.Errorf("postback %s: the tracker got transaction id %q, the audit says postback %q", key, reqs[0].txOf(), a.PostbackID)
	}
	if a.Status != status {
		s.t.Errorf("postback %s audited with status %q, want %q", key, a.Status, status)
	}
	s.want[key] = true
	s.pids[s.ids[name]+"|"+goal] = a.PostbackID
	s.finals++
	return a, reqs[0]
}

// checkSent checks where a postback went and what it carried.
func (s *rbSuite) checkSent(c *rbClick, a record.Audit, r accepted, goal, route string, want map[string]string) {
	s.t.Helper()
	checkAudit(s.t, a, wantAudit{c.id, goal, a.Status, c.partner, route, ""})
	if !maps.Equal(a.Params, c.params) {
		s.t.Errorf("event %s (%s) audited with params %v, want the click's %v", a.EventID, goal, a.Params, c.params)
	}
	path, tokenField, tokenEnv := "/track/conv", "token", scaleoTokenEnv
	if goal == "ftd_status" {
		path = "/track/conv-change"
	}
	if c.partner == partnerDating {
		path, tokenField, tokenEnv = "/postback", "key", datingTokenEnv
		alias := map[string]string{"reg": "free_reg", "ftd": "signup", "rdep": "rebill"}[goal]
		w := datingFields(c.id, alias, c.tr, c.offer)
		maps.Copy(w, want)
		want = w
	}
	if r.path != path {
		s.t.Errorf("postback %s of click %s sent to %s, want %s (partner %s)", goal, c.id, r.path, path, c.partner)
	}
	if r.query.Get(tokenField) != s.e.tokens[tokenEnv] {
		s.t.Errorf("postback %s of click %s does not carry %s's token", goal, c.id, c.partner)
	}
	if r.query.Get("click_id") != c.id {
		s.t.Errorf("postback %s sent for click %q, want %q", goal, r.query.Get("click_id"), c.id)
	}
	for _, k := range slicesSorted(want) {
		if got := r.query.Get(k); got != want[k] {
			s.t.Errorf("postback %s of click %s: %s = %q, want %q", goal, c.id, k, got, want[k])
		}
	}
}

func slicesSorted[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// replayed waits for a redelivered event's replay: an audit record of the
// same postback id, delivered, replayed=true; the tracker still holds the
// one copy it accepted before.
func (s *rbSuite) replayed(name, goal, status string) {
	s.t.Helper()
	pid := s.pids[s.ids[name]+"|"+goal]
	if pid == "" {
		s.t.Fatalf("%s %s was never delivered", name, goal)
	}
	// The redelivery is handled once a second final record of the goal is
	// audited: it must be the replay.
	var finals []record.Audit
	s.waitUntil(func() string {
		return fmt.Sprintf("redelivered %s (%s): no second final audit record of %s; records: %+v", name, s.ids[name], goal, s.auditsOf(name))
	}, func() bool {
		finals = nil
		for _, a := range s.auditsOf(name) {
			if a.Goal == goal && finalOutcome(a.Outcome) {
				finals = append(finals, a)
			}
		}
		return len(finals) >= 2
	})
	for _, a := range finals[1:] {
		if !a.Replayed || a.Outcome != record.OutcomeDelivered || a.PostbackID != pid {
			s.t.Errorf("redelivered %s (%s) audited %s replayed=%v postback %q, want a delivered replay of %q (not sent again): %+v",
				name, goal, a.Outcome, a.Replayed, a.PostbackID, pid, a)
		}
	}
	key := pbKey(goal, status, s.ids[name])
	if n := len(s.accepted(key)); n != 1 {
		s.t.Errorf("redelivered %s: the tracker accepted %s %d times, want 1 (sent again after the rebuild)", name, key, n)
	}
}

func (s *rbSuite) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 15*time.Second)
}

// keys lists the test's Redis keys: the click keys and the delayed
// schedule's shards.
func (s *rbSuite) keys() []string {
	s.t.Helper()
	// SCAN is linear in the whole keyspace, which other tests share: a
	// deadline of its own, and large steps.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	seen := map[string]bool{}
	for _, pattern := range []string{s.e.prefix + ":*", "{" + s.e.prefix + ":*"} {
		it := s.rdb.Scan(ctx, 0, pattern, 10000).Iterator()
		for it.Next(ctx) {
			seen[it.Val()] = true
		}
		if err := it.Err(); err != nil {
			s.t.Fatalf("scan %s: %v", pattern, err)
		}
	}
	out := make([]string, 0, len(seen))
	for k := range seen {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// redisState is every key of the test with its value (not its TTL).
func (s *rbSuite) redisState() map[string]string {
	s.t.Helper()
	ctx, cancel := s.ctx()
	defer cancel()
	out := map[string]string{}
	for _, k := range s.keys() {
		typ, err := s.rdb.Type(ctx, k).Result()
		if err != nil {
			s.t.Fatalf("type %s: %v", k, err)
		}
		var v any
		switch typ {
		case "string":
			v, err = s.rdb.Get(ctx, k).Result()
		case "hash":
			v, err = s.rdb.HGetAll(ctx, k).Result()
		case "zset":
			v, err = s.rdb.ZRangeWithScores(ctx, k, 0, -1).Result()
		case "set":
			var m []string
			m, err = s.rdb.SMembers(ctx, k).Result()
			sort.Strings(m)
			v = m
		case "list":
			v, err = s.rdb.LRange(ctx, k, 0, -1).Result()
		case "none":
			continue // expired since the scan
		default:
			v = "type " + typ
		}
		if err != nil && err != redis.Nil {
			s.t.Fatalf("read %s: %v", k, err)
		}
		out[k] = typ + " " + fmt.Sprint(v) // fmt prints maps sorted
	}
	return out
}

// wipe deletes every key of the test's prefix (what a Redis that lost its
// data holds for this deployment) and returns how many there were.
func (s *rbSuite) wipe() int {
	s.t.Helper()
	keys := s.keys()
	n := len(keys)
	ctx, cancel := s.ctx()
	defer cancel()
	for len(keys) > 0 {
		b := min(len(keys), 500)
		if err := s.rdb.Del(ctx, keys[:b]...).Err(); err != nil {
			s.t.Fatalf("delete the test's keys: %v", err)
		}
		keys = keys[b:]
	}
	if left := s.keys(); len(left) != 0 {
		s.t.Fatalf("keys left after the wipe: %v", left)
	}
	return n
}

func (s *rbSuite) clickKey(c *rbClick, kind string) string {
	return s.e.prefix + ":{c:" + c.id + "}:" + kind
}

func (s *rbSuite) hash(key string) map[string]string {
	s.t.Helper()
	ctx, cancel := s.ctx()
	defer cancel()
	h, err := s.rdb.HGetAll(ctx, key).Result()
	if err != nil {
		s.t.Fatalf("read %s: %v", key, err)
	}
	return h
}

// groupMembers is the number of members of the service's consumer group.
func (s *rbSuite) groupMembers() (int, error) {
	c, done := kafkaClient(s.e.brokers)
	defer done()
	ctx, cancel := s.ctx()
	defer cancel()
	res, err := c.DescribeGroups(ctx, &kafka.DescribeGroupsRequest{GroupIDs: []string{s.e.group}})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, g := range res.Groups {
		if g.Error != nil {
			return 0, g.Error
		}
		n += len(g.Members)
	}
	return n, nil
}

// waitGroupEmpty waits until the broker dropped every member of the group
// (a killed member stays until its session times out).
func (s *rbSuite) waitGroupEmpty() {
	s.t.Helper()
	var n int
	var err error
	if !waitFor(rbTimeout, func() bool { n, err = s.groupMembers(); return err == nil && n == 0 }) {
		s.t.Fatalf("group %s still has %d members (%v) %s after its members stopped", s.e.group, n, err, rbTimeout)
	}
}

// ---- rebuild-state and its report ----

type rbRewind struct {
	topic     string
	partition int
	from, to  int64
}

type rbReport struct {
	out                                   string
	dryRun                                bool
	ftd                                   map[string]int // created, merged, kept, conflict, would restore
	contexts, answers, routes, deliveries int
	rewindVerb                            string // "rewound", "would rewind", "" when no rewind line
	rewindGroup                           string
	rewound                               []rbRewind
}

var (
	rbFTDLine    = regexp.MustCompile(`(?m)^  FTD records: (.+)$`)
	rbCountLine  = regexp.MustCompile(`(?m)^  (click contexts|classification answers|route memos|final postback outcomes): (\d+)$`)
	rbRewindLine = regexp.MustCompile(`(?m)^(rewound|would rewind) group (\S+) to (\S+): (\d+) partitions$`)
	rbPartLine   = regexp.MustCompile(`(?m)^  (\S+)/(\d+): (\d+) -> (\d+)$`)
	rbFTDCount   = regexp.MustCompile(`^(\d+) (created|merged|kept|conflict|would restore)$`)
)

// rebuild runs `postbackd rebuild-state --config <the members' config>`
// with args and returns its exit code, parsed report (nil unless exit 0)
// and stderr.
func (s *rbSuite) rebuild(args ...string) (int, *rbReport, string) {
	s.t.Helper()
	code, out, errOut := s.e.runBinary(90*time.Second, append([]string{"rebuild-state", "--config", s.e.configPath()}, args...)...)
	s.t.Logf("postbackd rebuild-state %s: exit %d\n%s", strings.Join(args, " "), code, out)
	if code != 0 {
		return code, nil, errOut
	}
	r := &rbReport{out: out, ftd: map[string]int{}, dryRun: strings.Contains(out, "would restore (dry run: nothing written):")}
	if !r.dryRun && !strings.Contains(out, "\nrestored:\n") {
		s.t.Fatalf("rebuild-state report says neither restored nor would restore:\n%s", out)
	}
	m := rbFTDLine.FindStringSubmatch(out)
	if m == nil {
		s.t.Fatalf("rebuild-state report has no FTD records line:\n%s", out)
	}
	if m[1] != "none" {
		for _, part := range strings.Split(m[1], ", ") {
			pm := rbFTDCount.FindStringSubmatch(part)
			if pm == nil {
				s.t.Fatalf("rebuild-state report: FTD records %q: cannot read %q", m[1], part)
			}
			r.ftd[pm[2]], _ = strconv.Atoi(pm[1])
		}
	}
	counts := map[string]*int{"click contexts": &r.contexts, "classification answers": &r.answers, "route memos": &r.routes, "final postback outcomes": &r.deliveries}
	found := 0
	for _, cm := range rbCountLine.FindAllStringSubmatch(out, -1) {
		*counts[cm[1]], _ = strconv.Atoi(cm[2])
		found++
	}
	if found != len(counts) {
		s.t.Fatalf("rebuild-state report: %d of the %d count lines:\n%s", found, len(counts), out)
	}
	if rm := rbRewindLine.FindStringSubmatch(out); rm != nil {
		r.rewindVerb, r.rewindGroup = rm[1], rm[2]
		n, _ := strconv.Atoi(rm[4])
		for _, pm := range rbPartLine.FindAllStringSubmatch(out, -1) {
			p, _ := strconv.Atoi(pm[2])
			from, _ := strconv.ParseInt(pm[3], 10, 64)
			to, _ := strconv.ParseInt(pm[4], 10, 64)
			r.rewound = append(r.rewound, rbRewind{pm[1], p, from, to})
		}
		if len(r.rewound) != n {
			s.t.Errorf("rebuild-state report says %d partitions rewound but lists %d:\n%s", n, len(r.rewound), out)
		}
	}
	return code, r, errOut
}

// checkCounts compares a report's counts with want (ftd outcome → n;
// every other outcome must be absent).
func (s *rbSuite) checkCounts(r *rbReport, what string, ftd map[string]int, contexts, answers, routes, deliveries int) {
	s.t.Helper()
	if !maps.Equal(r.ftd, ftd) {
		s.t.Errorf("%s: FTD records %v, want %v", what, r.ftd, ftd)
	}
	got := [4]int{r.contexts, r.answers, r.routes, r.deliveries}
	if want := [4]int{contexts, answers, routes, deliveries}; got != want {
		s.t.Errorf("%s: click contexts, answers, route memos, final outcomes = %v, want %v", what, got, want)
	}
}

// ---- scenario 1: the journey, the crash, the rebuild ----

// journey: registrations naming the click's partner with its params, FTDs,
// repeat deposits (one refused by the partner for good), revenue of the
// hybrid merchant, qualifications (approved, rejected); everything
// delivered before the crash.
func (s *rbSuite) journey() {
	s.t.Helper()
	c := s.clicks
	for _, n := range []string{"s1", "s2", "s3", "d1", "d2", "r1", "r2"} {
		s.register(c[n], n+"-reg")
	}
	for _, n := range []string{"s1", "s2", "s3", "d1", "d2", "r1", "r2"} {
		a, r := s.delivered(n+"-reg", "reg", "")
		s.checkSent(c[n], a, r, "reg", "event", nil)
	}

	ftds := map[string][2]string{"s1": {"50.00", "EUR"}, "s2": {"1500", "JPY"}, "s3": {"12.345", "KWD"}, "d1": {"29.99", "USD"}, "d2": {"19.99", "USD"}}
	for _, n := range []string{"s1", "s2", "s3", "d1", "d2"} {
		s.send(roleDeposits, c[n], n+"-ftd", deposit(ftds[n][0], ftds[n][1], nil))
	}
	for _, n := range []string{"s1", "s2", "s3", "d1", "d2"} {
		a, r := s.delivered(n+"-ftd", "ftd", "pending")
		want := map[string]string{"amount": ftds[n][0], "currency": ftds[n][1]}
		if c[n].partner == partnerScaleo {
			want["custom2"] = c[n].params["custom2"]
		}
		s.checkSent(c[n], a, r, "ftd", "click", want)
		s.ftds++
		s.answers++
		s.routes++
	}

	rdeps := map[string][2]string{"s1-rdep1": {"20.00", "EUR"}, "s1-rdep2": {"30.00", "USD"}, "s2-rdep1": {"900", "JPY"},
		"s3-rdep1": {"5.500", "KWD"}, "s3-rdep-refused": {"7.000", "KWD"}, "d1-rdep1": {"9.99", "USD"}, "d2-rdep1": {"14.99", "USD"}}
	for _, n := range slicesSorted(rdeps) {
		s.send(roleDeposits, c[n[:2]], n, deposit(rdeps[n][0], rdeps[n][1], nil))
	}
	s.send(roleRevenue, c["s1"], "s1-rev", map[string]any{"amount": "100.00", "currency": "EUR", "player_id": "p-attr"})
	s.send(roleQualifications, c["s1"], "s1-qual", map[string]any{"status": "approved"})
	s.send(roleQualifications, c["s2"], "s2-qual", map[string]any{"status": "rejected"})
	for _, n := range slicesSorted(rdeps) {
		v := rdeps[n]
		s.answers++
		s.routes++
		if n == "s3-rdep-refused" {
			continue
		}
		a, r := s.delivered(n, "rdep", "")
		s.checkSent(c[n[:2]], a, r, "rdep", "click", map[string]string{"amount": v[0], "currency": v[1]})
	}
	// The refused rdep: dead-lettered after one attempt, never accepted.
	a := s.waitAudit("s3-rdep-refused", "dead_lettered", func(a record.Audit) bool { return a.Outcome == record.OutcomeDeadLettered })
	if a.Reason != "postback_refused" || a.PostbackID == "" {
		s.t.Errorf("refused rdep audited %s reason %q postback %q, want dead_lettered postback_refused", a.Outcome, a.Reason, a.PostbackID)
	}
	refusedKey := pbKey("rdep", "", s.ids["s3-rdep-refused"])
	s.refused[refusedKey] = true
	s.pids[s.ids["s3-rdep-refused"]+"|rdep"] = a.PostbackID
	s.finals++

	a, r := s.delivered("s1-rev", "revshare", "")
	s.checkSent(c["s1"], a, r, "revshare", "click", map[string]string{"amount": "35.00", "currency": "EUR"})
	s.routes++
	for n, st := range map[string]string{"s1": "approved", "s2": "rejected"} {
		a, r := s.delivered(n+"-qual", "ftd_status", st)
		s.checkSent(c[n], a, r, "ftd_status", "conversion", map[string]string{"status": st, "amount": ftds[n][0], "currency": ftds[n][1]})
	}
	s.e.waitCommitted(rbTimeout, inputRoles...)
	s.e.waitCaughtUp(s.outs, caughtUpTimeout)
}

// crashAndRebuild kills the member, wipes the test's Redis keys, rebuilds
// (checking what the report and Redis say), and rebuilds again (nothing
// changes).
func (s *rbSuite) crashAndRebuild() {
	s.t.Helper()
	s.m.signal(syscall.SIGKILL)
	if _, ok := s.m.wait(10 * time.Second); !ok {
		s.t.Fatalf("%s did not die of SIGKILL", s.m.name)
	}
	s.m = nil
	s.waitGroupEmpty()
	if n := s.wipe(); n == 0 {
		s.t.Fatalf("the journey left no keys under prefix %s to lose", s.e.prefix)
	}

	code, rep, errOut := s.rebuild()
	if code != 0 {
		s.t.Fatalf("rebuild-state after the wipe: exit %d\n%s", code, errOut)
	}
	// Seven clicks registered with a network and params; five have an FTD.
	s.checkCounts(rep, "first rebuild", map[string]int{"created": s.ftds}, 7, s.answers, s.routes, s.finals)
	if rep.rewindVerb != "" {
		s.t.Errorf("rebuild without --rewind-to reports a rewind:\n%s", rep.out)
	}

	// The FTD records as the status changes and the routes need them.
	ftd := s.hash(s.clickKey(s.clicks["s2"], "ftd"))
	var params map[string]string
	_ = json.Unmarshal([]byte(ftd["route_params"]), &params)
	if ftd["event_id"] != s.ids["s2-ftd"] || ftd["delivered"] != "1" || ftd["status"] != "rejected" || ftd["status_event_id"] != s.ids["s2-qual"] ||
		ftd["route_partner"] != partnerScaleo || !maps.Equal(params, s.clicks["s2"].params) || ftd["currency"] != "JPY" || !decimalEqual(ftd["amount"], "1500") {
		s.t.Errorf("restored FTD record of s2: %v; want %s delivered, rejected by %s, routed to scaleo with %v, 1500 JPY",
			ftd, s.ids["s2-ftd"], s.ids["s2-qual"], s.clicks["s2"].params)
	}
	ftd = s.hash(s.clickKey(s.clicks["s3"], "ftd"))
	if ftd["event_id"] != s.ids["s3-ftd"] || ftd["delivered"] != "1" || ftd["status"] != "" || ftd["route_partner"] != partnerScaleo {
		s.t.Errorf("restored FTD record of s3: %v; want %s delivered, no status, routed to scaleo", ftd, s.ids["s3-ftd"])
	}

	// Scenario 4: a second run finds everything and changes nothing.
	before := s.redisState()
	code, rep, errOut = s.rebuild()
	if code != 0 {
		s.t.Fatalf("second rebuild-state: exit %d\n%s", code, errOut)
	}
	s.checkCounts(rep, "second rebuild", map[string]int{"kept": s.ftds}, 0, 0, 0, 0)
	if after := s.redisState(); !maps.Equal(before, after) {
		s.t.Errorf("the second rebuild changed Redis:\n%s", stateDiff(before, after))
	}

	s.m = s.e.startMember("b")
	s.m.waitReady(readyTimeout)
}

func stateDiff(before, after map[string]string) string {
	var b strings.Builder
	for _, k := range slicesSorted(before) {
		if v, ok := after[k]; !ok {
			fmt.Fprintf(&b, "  - %s = %s\n", k, before[k])
		} else if v != before[k] {
			fmt.Fprintf(&b, "  ~ %s: %s -> %s\n", k, before[k], v)
		}
	}
	for _, k := range slicesSorted(after) {
		if _, ok := before[k]; !ok {
			fmt.Fprintf(&b, "  + %s = %s\n", k, after[k])
		}
	}
	return b.String()
}

// afterRebuild: the restarted service on the rebuilt state.
func (s *rbSuite) afterRebuild() {
	s.t.Helper()
	c := s.clicks
	refusedKey := pbKey("rdep", "", s.ids["s3-rdep-refused"])
	refusedBefore := s.attempts(refusedKey)
	if refusedBefore != 1 {
		s.t.Errorf("the refused rdep was attempted %d times before the rebuild, want 1", refusedBefore)
	}

	// (b) Redeliveries of delivered (and refused) postbacks' events.
	s.redeliver("s1-ftd", "s2-ftd", "d1-ftd", "s1-rdep1", "d1-rdep1", "s1-rev", "s1-qual", "s3-rdep-refused")
	// (a) A new deposit per click: an rdep, to the click's own partner with
	// its params.
	news := map[string][2]string{"s1": {"11.00", "EUR"}, "s2": {"2000", "JPY"}, "s3": {"1.250", "KWD"}, "d1": {"4.99", "USD"}, "d2": {"5.99", "USD"}}
	for _, n := range []string{"s1", "s2", "s3", "d1", "d2"} {
		s.send(roleDeposits, c[n], n+"-rdep-new", deposit(news[n][0], news[n][1], nil))
	}
	// (c) A qualification for the FTD without status: to the FTD's partner.
	// Another approval of s1 is a duplicate; an approval of the rejected s2
	// a conflict: neither may send a second status change.
	s.send(roleQualifications, c["s3"], "s3-qual", map[string]any{"status": "approved"})
	s.send(roleQualifications, c["s1"], "s1-qual-again", map[string]any{"status": "approved"})
	s.send(roleQualifications, c["s2"], "s2-qual-other", map[string]any{"status": "approved"})
	// (d) First deposits of clicks that only registered: routed by the
	// network and params their registration gave the click.
	s.send(roleDeposits, c["r1"], "r1-ftd", deposit("42.00", "EUR", nil))
	s.send(roleDeposits, c["r2"], "r2-ftd", deposit("24.00", "USD", nil))

	for _, n := range []string{"s1", "s2", "s3", "d1", "d2"} {
		a, r := s.delivered(n+"-rdep-new", "rdep", "")
		s.checkSent(c[n], a, r, "rdep", "click", map[string]string{"amount": news[n][0], "currency": news[n][1]})
		if got := s.accepted(pbKey("ftd", "pending", s.ids[n+"-rdep-new"])); len(got) != 0 {
			s.t.Errorf("the new deposit of %s was sent as an FTD (the click's FTD record was not restored)", n)
		}
	}

	a, r := s.delivered("s3-qual", "ftd_status", "approved")
	s.checkSent(c["s3"], a, r, "ftd_status", "conversion", map[string]string{"status": "approved", "amount": "12.345", "currency": "KWD"})
	s.checkConfirmation(c["s3"], "s3-qual", "s3-ftd", "approved", "12.345", "KWD", a.PostbackID)

	a, r = s.delivered("r1-ftd", "ftd", "pending")
	s.checkSent(c["r1"], a, r, "ftd", "click", map[string]string{"amount": "42.00", "currency": "EUR", "custom2": "r1-camp"})
	a, r = s.delivered("r2-ftd", "ftd", "pending")
	s.checkSent(c["r2"], a, r, "ftd", "click", map[string]string{"amount": "24.00", "currency": "USD"})

	a = s.waitAudit("s1-qual-again", "skipped", func(a record.Audit) bool { return finalOutcome(a.Outcome) })
	if a.Outcome != record.OutcomeSkipped || a.Reason != "duplicate_qualification" {
		s.t.Errorf("a second approval of s1 after the rebuild: %s %q, want skipped duplicate_qualification (the FTD's status was not restored?)", a.Outcome, a.Reason)
	}
	a = s.waitAudit("s2-qual-other", "skipped", func(a record.Audit) bool { return finalOutcome(a.Outcome) })
	if a.Outcome != record.OutcomeSkipped || a.Reason != "qualification_conflict" {
		s.t.Errorf("an approval of the rejected s2 after the rebuild: %s %q, want skipped qualification_conflict", a.Outcome, a.Reason)
	}

	s.replayed("s1-ftd", "ftd", "pending")
	s.replayed("s2-ftd", "ftd", "pending")
	s.replayed("d1-ftd", "ftd", "pending")
	s.replayed("s1-rdep1", "rdep", "")
	s.replayed("d1-rdep1", "rdep", "")
	s.replayed("s1-rev", "revshare", "")
	s.replayed("s1-qual", "ftd_status", "approved")
	// The refused one: dead-lettered again from what Redis remembers, not
	// asked again.
	var refused []record.Audit
	s.waitUntil(func() string {
		return fmt.Sprintf("redelivered refused rdep: audit records %+v, want 2 dead_lettered", refused)
	},
		func() bool {
			refused = nil
			for _, a := range s.auditsOf("s3-rdep-refused") {
				if a.Outcome == record.OutcomeDeadLettered {
					refused = append(refused, a)
				}
			}
			return len(refused) >= 2
		})
	if got := s.attempts(refusedKey); got != refusedBefore {
		s.t.Errorf("the refused rdep, redelivered after the rebuild, was attempted again: %d attempts, had %d", got, refusedBefore)
	}
	s.e.waitCommitted(rbTimeout, inputRoles...)
	s.e.waitCaughtUp(s.outs, caughtUpTimeout)
	// Nothing new for s1, s2's status.
	for _, n := range []string{"s1-qual-again", "s2-qual-other"} {
		for _, st := range []string{"approved", "rejected"} {
			if got := s.accepted(pbKey("ftd_status", st, s.ids[n])); len(got) != 0 {
				s.t.Errorf("%s sent a status change %s after the rebuild", n, st)
			}
		}
	}
}

// checkConfirmation requires exactly one confirmation (not replayed) of
// the click's status change, with the FTD's values.
func (s *rbSuite) checkConfirmation(c *rbClick, qual, ftd, status, amount, currency, pid string) {
	s.t.Helper()
	var got []record.Confirmation
	s.waitUntil(func() string { return fmt.Sprintf("no confirmation for click %s: %+v", c.id, got) }, func() bool {
		got = nil
		for _, cf := range s.outs.snapshot().confirms {
			if cf.ClickID == c.id && !cf.Replayed {
				got = append(got, cf)
			}
		}
		return len(got) > 0
	})
	cf := got[0]
	if len(got) != 1 || cf.Network != c.partner || cf.Status != status || cf.FTDEventID != s.ids[ftd] || cf.QualificationEventID != s.ids[qual] ||
		!decimalEqual(cf.Amount, amount) || cf.Currency != currency || cf.PostbackID != pid {
		s.t.Errorf("confirmations of click %s: %+v; want one: %s %s, ftd %s, qualification %s, %s %s, postback %s",
			c.id, got, c.partner, status, s.ids[ftd], s.ids[qual], amount, currency, pid)
	}
}

// ---- scenarios 2 and 3: the rewind, and the refusal while the group runs ----

func (s *rbSuite) rewind() {
	s.t.Helper()
	c := s.clicks
	// Everything before this instant was handled before it: the rewind
	// point re-reads only what follows.
	s.rewindTo = time.Now()

	// p registers, then its qualification comes before its FTD: parked in
	// Redis, its offset committed, nothing in the audit.
	s.register(c["p"], "p-reg")
	a, r := s.delivered("p-reg", "reg", "")
	s.checkSent(c["p"], a, r, "reg", "event", nil)
	s.qualTopic = s.e.topics[roleQualifications]
	s.qualPart = (&kafka.Hash{}).Balance(kafka.Message{Key: []byte(c["p"].id)}, partitionsOf(s.e.partitions)...)
	s.qualOff = endOffsets(s.t, s.e.brokers, []string{s.qualTopic})[s.qualTopic][s.qualPart]
	s.send(roleQualifications, c["p"], "p-qual", map[string]any{"status": "approved"})
	s.waitParked(c["p"], "p-qual")
	// p2: a whole journey after the rewind point, delivered before the loss:
	// re-read after the rewind, nothing of it may be sent again.
	s.register(c["p2"], "p2-reg")
	a, r = s.delivered("p2-reg", "reg", "")
	s.checkSent(c["p2"], a, r, "reg", "event", nil)
	s.send(roleDeposits, c["p2"], "p2-ftd", deposit("33.00", "EUR", nil))
	a, r = s.delivered("p2-ftd", "ftd", "pending")
	s.checkSent(c["p2"], a, r, "ftd", "click", map[string]string{"amount": "33.00", "currency": "EUR"})
	s.send(roleDeposits, c["p2"], "p2-rdep", deposit("3.30", "EUR", nil))
	a, r = s.delivered("p2-rdep", "rdep", "")
	s.checkSent(c["p2"], a, r, "rdep", "click", map[string]string{"amount": "3.30", "currency": "EUR"})
	s.send(roleQualifications, c["p2"], "p2-qual", map[string]any{"status": "rejected"})
	// datingnet takes no status change.
	a = s.waitAudit("p2-qual", "skipped", func(a record.Audit) bool { return finalOutcome(a.Outcome) })
	if a.Outcome != record.OutcomeSkipped || a.Reason != "goal_not_configured" {
		s.t.Errorf("qualification of datingnet's p2: %s %q, want skipped goal_not_configured", a.Outcome, a.Reason)
	}
	s.e.waitCommitted(rbTimeout, inputRoles...)
	s.e.waitCaughtUp(s.outs, caughtUpTimeout)
	if got := s.auditsOf("p-qual"); len(got) != 0 {
		s.t.Fatalf("the parked qualification is audited already: %+v", got)
	}

	// Scenario 3: Redis lost its data, but a member still runs. The rebuild
	// refuses to write, even with something to restore; a dry run reports
	// and writes nothing; neither moves an offset.
	s.wipe()
	inputs := s.e.topicList(inputRoles...)
	emptyState := s.redisState()
	offsets := committed(s.t, s.e.brokers, s.e.group, inputs)
	at := s.rewindTo.UTC().Format(time.RFC3339Nano)

	code, _, errOut := s.rebuild("--rewind-to", at)
	if code != 2 || !strings.Contains(errOut, s.e.group) || !strings.Contains(errOut, "active members") {
		s.t.Errorf("rebuild-state while %s runs: exit %d, stderr %q; want exit 2 naming group %s and its active members", s.m.name, code, errOut, s.e.group)
	}
	if got := s.redisState(); !maps.Equal(got, emptyState) {
		s.t.Errorf("the refused rebuild wrote to Redis:\n%s", stateDiff(emptyState, got))
	}
	if got := committed(s.t, s.e.brokers, s.e.group, inputs); !maps.EqualFunc(got, offsets, maps.Equal) {
		s.t.Errorf("the refused rebuild moved offsets: %v, were %v", got, offsets)
	}

	code, rep, errOut := s.rebuild("--dry-run", "--rewind-to", at)
	if code != 0 {
		s.t.Fatalf("rebuild-state --dry-run while %s runs: exit %d\n%s", s.m.name, code, errOut)
	}
	// s1, s2, s3, d1, d2, r1, r2, p2.
	if !rep.dryRun || rep.ftd["would restore"] != s.ftds+3 || len(rep.ftd) != 1 {
		s.t.Errorf("dry run: FTD records %v (dry run %v), want %d would restore", rep.ftd, rep.dryRun, s.ftds+3)
	}
	if rep.rewindVerb != "would rewind" || len(rep.rewound) == 0 {
		s.t.Errorf("dry run with --rewind-to: rewind %q of %d partitions, want would rewind, some partitions:\n%s", rep.rewindVerb, len(rep.rewound), rep.out)
	}
	if got := s.redisState(); !maps.Equal(got, emptyState) {
		s.t.Errorf("the dry run wrote to Redis:\n%s", stateDiff(emptyState, got))
	}
	if got := committed(s.t, s.e.brokers, s.e.group, inputs); !maps.EqualFunc(got, offsets, maps.Equal) {
		s.t.Errorf("the dry run moved offsets: %v, were %v", got, offsets)
	}

	// Scenario 2: stop, (Redis is lost), rebuild with the rewind, restart.
	s.m.stop(s.e.drainTimeout + stopMargin)
	s.m = nil
	s.waitGroupEmpty()
	s.wipe()
	code, rep, errOut = s.rebuild("--rewind-to", at)
	if code != 0 {
		s.t.Fatalf("rebuild-state --rewind-to %s: exit %d\n%s", at, code, errOut)
	}
	if rep.ftd["created"] != s.ftds+3 || len(rep.ftd) != 1 {
		s.t.Errorf("rebuild with rewind: FTD records %v, want %d created", rep.ftd, s.ftds+3)
	}
	if rep.rewindVerb != "rewound" || rep.rewindGroup != s.e.group || len(rep.rewound) == 0 {
		s.t.Fatalf("rebuild with rewind: %q group %q, %d partitions; want rewound %s, some partitions:\n%s",
			rep.rewindVerb, rep.rewindGroup, len(rep.rewound), s.e.group, rep.out)
	}
	after := committed(s.t, s.e.brokers, s.e.group, inputs)
	coversQual := false
	for _, p := range rep.rewound {
		if p.to >= p.from {
			s.t.Errorf("rewound %s/%d forward: %d -> %d", p.topic, p.partition, p.from, p.to)
		}
		if was := offsets[p.topic][p.partition]; was != p.from {
			s.t.Errorf("rewound %s/%d from %d, but the group had committed %d", p.topic, p.partition, p.from, was)
		}
		if got := after[p.topic][p.partition]; got != p.to {
			s.t.Errorf("rewound %s/%d to %d, but the group's committed offset is %d", p.topic, p.partition, p.to, got)
		}
		if p.topic == s.qualTopic && p.partition == s.qualPart && p.to <= s.qualOff && s.qualOff < p.from {
			coversQual = true
		}
	}
	if !coversQual {
		s.t.Errorf("the rewind does not cover the parked qualification at %s/%d@%d: %+v", s.qualTopic, s.qualPart, s.qualOff, rep.rewound)
	}
	// Nothing before the rewind point is re-read: the partitions the
	// rewind left alone kept their offsets.
	for tp, ps := range offsets {
		for p, off := range ps {
			moved := false
			for _, rw := range rep.rewound {
				moved = moved || (rw.topic == tp && rw.partition == p)
			}
			if !moved && after[tp][p] != off {
				s.t.Errorf("%s/%d: committed %d -> %d, but the report does not list it", tp, p, off, after[tp][p])
			}
		}
	}

	s.m = s.e.startMember("c")
	s.m.waitReady(readyTimeout)
	// The re-read: p's qualification parks again; what was delivered is
	// replayed, not sent.
	s.waitParked(c["p"], "p-qual")
	s.replayed("p-reg", "reg", "")
	s.replayed("p2-reg", "reg", "")
	s.replayed("p2-ftd", "ftd", "pending")
	s.replayed("p2-rdep", "rdep", "")
	s.waitAudit("p2-qual", "skipped again", func(a record.Audit) bool {
		return a.Outcome == record.OutcomeSkipped && len(s.auditsOf("p2-qual")) >= 2
	})

	// p's FTD now: the FTD, then the status change it releases, once each.
	s.send(roleDeposits, c["p"], "p-ftd", deposit("77.00", "EUR", nil))
	a, ftdReq := s.delivered("p-ftd", "ftd", "pending")
	s.checkSent(c["p"], a, ftdReq, "ftd", "click", map[string]string{"amount": "77.00", "currency": "EUR", "custom2": "p-camp"})
	a, stReq := s.delivered("p-qual", "ftd_status", "approved")
	s.checkSent(c["p"], a, stReq, "ftd_status", "conversion", map[string]string{"status": "approved", "amount": "77.00", "currency": "EUR"})
	if stReq.seq < ftdReq.seq {
		s.t.Errorf("p's status change reached the partner before its FTD")
	}
	s.checkConfirmation(c["p"], "p-qual", "p-ftd", "approved", "77.00", "EUR", a.PostbackID)
}

func partitionsOf(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

// waitParked waits until the click's qualification is parked in Redis
// (waiting for its FTD) and its offset is committed.
func (s *rbSuite) waitParked(c *rbClick, name string) {
	s.t.Helper()
	key := s.clickKey(c, "parked")
	var h map[string]string
	s.waitUntil(func() string { return fmt.Sprintf("qualification %s not parked in %s: %v", s.ids[name], key, h) }, func() bool {
		h = s.hash(key)
		return h["event_id"] == s.ids[name] && h["released"] == ""
	})
	s.e.waitCommitted(rbTimeout, roleQualifications)
}

// finish stops the member and checks the whole trail: every expected
// postback accepted exactly once, nothing else, no transaction id twice,
// the refused one attempted once; no confirmation twice.
func (s *rbSuite) finish() {
	s.t.Helper()
	s.e.waitCommitted(rbTimeout, inputRoles...)
	s.m.stop(s.e.drainTimeout + stopMargin)
	m := s.m
	s.m = nil
	s.e.waitCaughtUp(s.outs, caughtUpTimeout)
	out := s.outs.snapshot()
	if len(out.bad) > 0 {
		s.t.Errorf("output records that do not parse: %v", out.bad)
	}
	txs := map[string]string{}
	for key, reqs := range s.e.tracker.snapshot() {
		if !s.want[key] {
			s.t.Errorf("the tracker accepted an unexpected postback %s (%d times): %s", key, len(reqs), reqs[0].query.Encode())
			continue
		}
		if len(reqs) != 1 {
			s.t.Errorf("postback %s accepted %d times", key, len(reqs))
		}
		for _, r := range reqs {
			if other, dup := txs[r.txOf()]; dup && other != key {
				s.t.Errorf("transaction id %s accepted for %s and %s", r.txOf(), other, key)
			}
			txs[r.txOf()] = key
		}
	}
	for key := range s.want {
		if len(s.accepted(key)) == 0 {
			s.t.Errorf("postback %s never accepted", key)
		}
	}
	for key := range s.refused {
		if n := s.attempts(key); n != 1 {
			s.t.Errorf("refused postback %s attempted %d times, want 1", key, n)
		}
	}
	confirmed := map[string]int{}
	for _, cf := range out.confirms {
		if !cf.Replayed {
			confirmed[cf.PostbackID]++
		}
	}
	for pid, n := range confirmed {
		if n != 1 {
			s.t.Errorf("status change %s confirmed %d times (not replayed)", pid, n)
		}
	}
	// s1, s2 before the loss; s3 after the rebuild; p after the rewind.
	if len(confirmed) != 4 {
		s.t.Errorf("%d status changes confirmed, want 4: %v", len(confirmed), confirmed)
	}
	s.e.checkNoSecretInLogs(m)
}

// TestRebuildStateEventWithoutPostback: a click's network and params that
// came only with an event that made no postback (here a failed deposit
// naming the network) are restored: the next deposit goes to that network
// with those params, not to the merchant's default.
func TestRebuildStateEventWithoutPostback(t *testing.T) {
	s := newRebuildSuite(t)
	c := s.clicks["r2"] // merchant instant (default scaleo, no wait), partner datingnet
	s.ids["x-fail"] = "x-fail-" + randomID()
	s.ids["x-dep"] = "x-dep-" + randomID()
	f := deposit("10.00", "USD", map[string]any{"network": partnerDating, "params": c.params})
	f["status"] = "failed"
	s.send(roleDeposits, c, "x-fail", f)
	s.waitAudit("x-fail", "skipped", func(a record.Audit) bool { return finalOutcome(a.Outcome) })
	s.loseRedisAndRebuild()
	s.send(roleDeposits, c, "x-dep", deposit("20.00", "USD", nil))
	a := s.waitAudit("x-dep", "final", func(a record.Audit) bool { return finalOutcome(a.Outcome) })
	if a.Network != partnerDating || a.Route != "click" {
		t.Errorf("deposit after the rebuild went to %s by %s, want %s by click", a.Network, a.Route, partnerDating)
	}
	for k, v := range c.params {
		if a.Params[k] != v {
			t.Errorf("deposit after the rebuild: param %s = %q, want %q (params %v)", k, a.Params[k], v, a.Params)
		}
	}
}

// TestRebuildStateRefusedStatusChange: a status change the partner refused
// still decided the FTD's status, so a contradicting qualification after the
// rebuild is a conflict, never sent.
func TestRebuildStateRefusedStatusChange(t *testing.T) {
	s := newRebuildSuite(t)
	s.e.tracker.mu.Lock()
	s.e.tracker.plan[s.ids["s2-qual"]] = planRefuse
	s.e.tracker.mu.Unlock()
	c := s.clicks["s2"]
	s.register(c, "s2-reg")
	s.delivered("s2-reg", "reg", "")
	s.send(roleDeposits, c, "s2-ftd", deposit("1500", "JPY", nil))
	s.delivered("s2-ftd", "ftd", "pending")
	s.send(roleQualifications, c, "s2-qual", map[string]any{"status": "approved"})
	s.waitAudit("s2-qual", "final", func(a record.Audit) bool { return finalOutcome(a.Outcome) })
	s.loseRedisAndRebuild()
	s.send(roleQualifications, c, "s2-qual-other", map[string]any{"status": "rejected"})
	a := s.waitAudit("s2-qual-other", "final", func(a record.Audit) bool { return finalOutcome(a.Outcome) })
	if a.Outcome != record.OutcomeSkipped || a.Reason != "qualification_conflict" {
		t.Errorf("contradicting qualification after the rebuild: %s %q, want skipped qualification_conflict", a.Outcome, a.Reason)
	}
	if got := s.accepted(pbKey("ftd_status", "rejected", s.ids["s2-qual-other"])); len(got) != 0 {
		t.Errorf("the contradicting status change reached the tracker: %v", got)
	}
}

// loseRedisAndRebuild stops the member once its offsets are committed,
// wipes the test's Redis keys, runs rebuild-state (exit 0 required) and
// starts a member again.
func (s *rbSuite) loseRedisAndRebuild() {
	s.t.Helper()
	s.e.waitCommitted(rbTimeout, inputRoles...)
	s.m.stop(s.e.drainTimeout + stopMargin)
	s.m = nil
	s.waitGroupEmpty()
	s.wipe()
	if code, _, errOut := s.rebuild(); code != 0 {
		s.t.Fatalf("rebuild-state exit %d: %s", code, errOut)
	}
	s.m = s.e.startMember("b")
	s.m.waitReady(readyTimeout)
}
