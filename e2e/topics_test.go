package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/postbackd/postbackd/record"
)

// Topics that vanish: an input or output topic deleted under a running
// group, and re-created; and a member with nothing assigned.

// Log messages the tests wait on and count (the "msg" of the JSON lines).
const (
	msgGenerationJoined = "generation joined"
	msgInputMissing     = "subscribed topics are missing; not rejoining the consumer group until they exist"
	msgInputBack        = "subscribed topics exist again; rejoining the consumer group"
	msgOutputMissing    = "output topics are missing: no outcome can be written, so nothing commits until they exist"
	msgPartitionStarted = "partition started"
)

// topicTimeout bounds a deletion or creation becoming visible in metadata,
// and a member noticing it (kafka-go's partition watcher looks every 5 s;
// the output-topic watcher every 10 s, then 20 s).
const topicTimeout = 45 * time.Second

// logLines counts the member's log lines whose msg is msg and that contain
// every one of also (a topic name, say).
func (m *member) logLines(msg string, also ...string) int {
	n := 0
	for _, line := range strings.Split(m.log(), "\n") {
		if !strings.Contains(line, `"msg":"`+msg+`"`) {
			continue
		}
		ok := true
		for _, s := range also {
			ok = ok && strings.Contains(line, s)
		}
		if ok {
			n++
		}
	}
	return n
}

// readyCheck fetches /readyz and returns its status and the line of one
// check ("consumer_group: ...", "kafka: ...").
func (m *member) readyCheck(check string) (int, string, string) {
	code, body, err := m.get("/readyz")
	if err != nil {
		return 0, "", err.Error()
	}
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, check+": ") {
			return code, line, body
		}
	}
	return code, "", body
}

// topicMissingGauge reads postbackd_topic_missing{topic} from /metrics (-1:
// no such sample).
func (m *member) topicMissingGauge(t *testing.T, topic string) float64 {
	t.Helper()
	code, body, err := m.get("/metrics")
	if err != nil || code != http.StatusOK {
		t.Fatalf("%s /metrics: %d %v", m.name, code, err)
	}
	prefix := `postbackd_topic_missing{topic="` + topic + `"} `
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, prefix); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("%s metric line %q: %v", m.name, line, err)
			}
			return f
		}
	}
	return -1
}

// throttled runs cond at most once per every (the others report false): for
// waits whose condition costs a request or a topic read.
func throttled(every time.Duration, cond func() bool) func() bool {
	var last time.Time
	return func() bool {
		if time.Since(last) < every {
			return false
		}
		last = time.Now()
		return cond()
	}
}

// topicState reads a topic's metadata: its partition count (0: it does not
// exist) and whether every partition has a leader.
func topicState(brokers []string, topic string) (partitions int, leaders bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, done := kafkaClient(brokers)
	defer done()
	meta, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return 0, false, err
	}
	for _, tp := range meta.Topics {
		if tp.Name != topic {
			continue
		}
		if tp.Error != nil {
			if errors.Is(tp.Error, kafka.UnknownTopicOrPartition) {
				return 0, false, nil
			}
			return 0, false, tp.Error
		}
		leaders = true
		for _, p := range tp.Partitions {
			if p.Error != nil || p.Leader.ID < 0 {
				leaders = false
			}
		}
		return len(tp.Partitions), leaders, nil
	}
	return 0, false, nil
}

// deleteTopic deletes the topic of role and waits until the broker's
// metadata no longer lists it (deletion is asynchronous).
func (e *testEnv) deleteTopic(role string) {
	e.t.Helper()
	topic := e.topics[role]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, done := kafkaClient(e.brokers)
	defer done()
	res, err := c.DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: []string{topic}})
	if err != nil {
		e.t.Fatalf("delete topic %s: %v", topic, err)
	}
	if err := res.Errors[topic]; err != nil {
		e.t.Fatalf("delete topic %s: %v", topic, err)
	}
	var last string
	if !waitFor(topicTimeout, throttled(50*time.Millisecond, func() bool {
		n, _, err := topicState(e.brokers, topic)
		last = fmt.Sprintf("%d partitions, %v", n, err)
		return err == nil && n == 0
	})) {
		e.t.Fatalf("topic %s still listed %s after its deletion: %s", topic, topicTimeout, last)
	}
}

// recreateTopic creates the topic of role again with the partitions
// createTopics gave it, retrying while the broker still finishes the
// deletion, and waits until every partition has a leader.
func (e *testEnv) recreateTopic(role string) {
	e.t.Helper()
	topic := e.topics[role]
	var last string
	ok := waitFor(topicTimeout, throttled(100*time.Millisecond, func() bool {
		n, leaders, err := topicState(e.brokers, topic)
		switch {
		case err == nil && n == e.partitions && leaders:
			return true
		case err == nil && n == 0:
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, done := kafkaClient(e.brokers)
			defer done()
			res, err := c.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{
				{Topic: topic, NumPartitions: e.partitions, ReplicationFactor: 1},
			}})
			if err == nil {
				err = res.Errors[topic]
			}
			last = fmt.Sprintf("create: %v", err) // TopicAlreadyExists: the deletion is not finished
		default:
			last = fmt.Sprintf("%d partitions (want %d), leaders %v, %v", n, e.partitions, leaders, err)
		}
		return false
	}))
	if !ok {
		e.t.Fatalf("could not re-create topic %s within %s: %s", topic, topicTimeout, last)
	}
}

// readTopic reads every record of topic, from each partition's first offset
// to its end, with a client of its own (no consumer group, no committed
// offset: what an analyst reading the re-created topic would see).
func readTopic(t *testing.T, brokers []string, topic string) []kafka.Message {
	t.Helper()
	end := endOffsets(t, brokers, []string{topic})[topic]
	c, done := kafkaClient(brokers)
	defer done()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out []kafka.Message
	for p, last := range end {
		for off := int64(0); off < last; {
			res, err := c.Fetch(ctx, &kafka.FetchRequest{Topic: topic, Partition: p, Offset: off,
				MinBytes: 1, MaxBytes: 10 << 20, MaxWait: 100 * time.Millisecond})
			if err == nil {
				err = res.Error
			}
			if err != nil {
				t.Fatalf("fetch %s/%d@%d: %v", topic, p, off, err)
			}
			for {
				r, err := res.Records.ReadRecord()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatalf("read %s/%d@%d: %v", topic, p, off, err)
				}
				key, kerr := kafka.ReadAll(r.Key)
				value, verr := kafka.ReadAll(r.Value)
				if err := errors.Join(kerr, verr); err != nil {
					t.Fatalf("read %s/%d@%d: %v", topic, p, r.Offset, err)
				}
				if r.Offset < off || r.Offset >= last {
					continue // a batch may start before the offset asked for
				}
				out = append(out, kafka.Message{Topic: topic, Partition: p, Offset: r.Offset, Key: key, Value: value})
				off = r.Offset + 1
			}
		}
	}
	return out
}

// readOutputs reads the three output topics whole into an outputs (the
// same parsing as the live reader).
func (e *testEnv) readOutputs() outputSnapshot {
	e.t.Helper()
	o := &outputs{seen: map[string]map[int]int64{}, roles: map[string]string{}, eventIDs: map[string]int{}}
	for _, r := range []string{roleDispatched, roleConfirmed, roleDLQ} {
		o.roles[e.topics[r]] = r
	}
	for _, r := range []string{roleDispatched, roleConfirmed, roleDLQ} {
		for _, m := range readTopic(e.t, e.brokers, e.topics[r]) {
			o.add(m)
		}
	}
	return o.snapshot()
}

// TestInputTopicVanishes: two members consume a stream; the revenue topic is
// deleted under them. Each member must stop rejoining (no tight loop of
// generations), say why in /readyz, log the missing topic once per back-off
// interval and set postbackd_topic_missing; once the topic is re-created,
// both rejoin by themselves and the whole stream completes exactly, with no
// postback lost or sent twice.
//
// The oracle stays exact because nothing in the deleted topic is lost
// unhandled: the revenue events of the first half of the stream are produced
// before the deletion and the group committed them (their outcomes are
// durable: postbacks delivered or handed to the delayed path, audit records
// written), and the rest of the revenue events are produced only after the
// re-creation. The other topics' events of the second half are produced
// during the outage, when no member consumes: they must all be handled after
// the rejoin. Committing the first half's revenue offsets also means that a
// group offset surviving the deletion would skip the re-created topic's
// first records, which the oracle would catch.
func TestInputTopicVanishes(t *testing.T) {
	sc := newScript(scriptOptions{scaleoClicks: 40, datingClicks: 20, seed: 21})
	e := newEnv(t, envOptions{plan: sc.plan, createTopics: true})
	outs := e.startOutputs()
	a, b := e.startMember("a"), e.startMember("b")
	members := []*member{a, b}
	for _, m := range members {
		m.waitReady(readyTimeout)
	}
	start := time.Now()
	e.runPhase0(sc, outs)

	half := len(sc.phases[1]) / 2
	first := sc.phases[1][:half]
	var during, after []inMsg // the second half: other topics, revenue
	for _, m := range sc.phases[1][half:] {
		if m.role == roleRevenue {
			after = append(after, m)
		} else {
			during = append(during, m)
		}
	}
	revenueBefore := 0
	for _, m := range first {
		if m.role == roleRevenue {
			revenueBefore++
		}
	}
	if revenueBefore == 0 || len(after) == 0 {
		t.Fatalf("the script puts %d revenue events before the deletion and %d after: the scenario needs both", revenueBefore, len(after))
	}
	e.produce(first)
	// Every revenue event produced so far is handled; the other topics'
	// events may still be in flight when the deletion ends the generation.
	e.waitCommitted(phase0Timeout, roleRevenue)

	revenue := e.topics[roleRevenue]
	joinedBefore := map[*member]int{}
	for _, m := range members {
		joinedBefore[m] = m.logLines(msgGenerationJoined)
	}
	deleteStart := time.Now()
	e.deleteTopic(roleRevenue)
	deleted := time.Now()

	// Not ready, and /readyz's consumer_group check says which topic.
	for _, m := range members {
		var last string
		if !waitFor(topicTimeout, throttled(100*time.Millisecond, func() bool {
			code, line, body := m.readyCheck("consumer_group")
			last = fmt.Sprintf("%d %q", code, body)
			return code != http.StatusOK && code != 0 && strings.Contains(line, revenue)
		})) {
			t.Fatalf("%s: /readyz did not report the missing topic %s in its consumer_group check within %s; last: %s",
				m.name, revenue, topicTimeout, last)
		}
	}
	notReadyAfter := time.Since(deleted)

	// Three back-off intervals: three errors naming the topic per member.
	// Meanwhile no member may have joined more than a handful of
	// generations (the one the deletion ended, one rebalance around it);
	// kafka-go alone would rejoin in a tight loop.
	for _, m := range members {
		if !waitFor(topicTimeout, throttled(50*time.Millisecond, func() bool {
			return m.logLines(msgInputMissing, revenue) >= 3 || m.exited()
		})) {
			t.Fatalf("%s logged %q naming %s only %d times within %s", m.name, msgInputMissing, revenue,
				m.logLines(msgInputMissing, revenue), topicTimeout)
		}
		if m.exited() {
			t.Fatalf("%s exited (code %d) while its input topic was missing\n%s", m.name, m.code, tail(m.stderr, 40))
		}
	}
	const maxJoins = 6
	for _, m := range members {
		joined := m.logLines(msgGenerationJoined) - joinedBefore[m]
		errs := m.logLines(msgInputMissing, revenue)
		t.Logf("%s: %d generations joined and %d missing-topic errors in the %s since the deletion",
			m.name, joined, errs, time.Since(deleteStart).Round(time.Millisecond))
		if joined > maxJoins {
			t.Errorf("%s joined %d generations while %s was missing (at most %d allowed): a rejoin loop", m.name, joined, revenue, maxJoins)
		}
		// One error per back-off interval (1 s doubling, jittered): a
		// tight loop would log many more in the same time.
		if limit := 3 + int(time.Since(deleteStart)/(500*time.Millisecond)); errs > limit {
			t.Errorf("%s logged the missing-topic error %d times in %s: more than one per back-off interval",
				m.name, errs, time.Since(deleteStart).Round(time.Millisecond))
		}
		if v := m.topicMissingGauge(t, revenue); v != 1 {
			t.Errorf("%s: postbackd_topic_missing{topic=%q} = %v while it is missing, want 1", m.name, revenue, v)
		}
		if v := m.topicMissingGauge(t, e.topics[roleDeposits]); v != 0 {
			t.Errorf("%s: postbackd_topic_missing{topic=%q} = %v, want 0 (it exists)", m.name, e.topics[roleDeposits], v)
		}
	}

	// The other topics' events arrive while nobody consumes; then the topic
	// comes back, both members rejoin by themselves, and the rest of the
	// revenue events go to the re-created topic.
	e.produce(during)
	e.recreateTopic(roleRevenue)
	recreated := time.Now()
	for _, m := range members {
		m.waitReady(readyTimeout)
		if !waitFor(5*time.Second, func() bool { return m.logLines(msgInputBack) >= 1 }) {
			t.Errorf("%s is ready again but did not log %q", m.name, msgInputBack)
		}
		if v := m.topicMissingGauge(t, revenue); v != 0 {
			t.Errorf("%s: postbackd_topic_missing{topic=%q} = %v after re-creation, want 0", m.name, revenue, v)
		}
	}
	rejoinedAfter := time.Since(recreated)
	e.produce(after)
	e.waitComplete(sc, outs, completeTimeout, a, b)
	e.waitCommitted(completeTimeout, inputRoles...)
	out := e.finish(outs, a, b)
	e.verify(sc, out, verifyOptions{exactOutputs: true})
	e.checkNoSecretInLogs(a, b)
	t.Logf("%d events, %d postbacks; not ready %s after the deletion; outage %s; rejoined %s after re-creation; "+
		"%d revenue events before the deletion, %d after; total %s",
		sc.events, sc.expectedDelivered(), notReadyAfter.Round(time.Millisecond), recreated.Sub(deleted).Round(time.Millisecond),
		rejoinedAfter.Round(time.Millisecond), revenueBefore, len(after), time.Since(start).Round(time.Millisecond))
}

// committedDiff lists the partitions whose committed offsets differ.
func committedDiff(x, y map[string]map[int]int64) []string {
	var diff []string
	for tp, ps := range x {
		for p, off := range ps {
			if y[tp][p] != off {
				diff = append(diff, fmt.Sprintf("%s/%d: %d → %d", tp, p, off, y[tp][p]))
			}
		}
	}
	for tp, ps := range y {
		for p, off := range ps {
			if _, ok := x[tp][p]; !ok {
				diff = append(diff, fmt.Sprintf("%s/%d: none → %d", tp, p, off))
			}
		}
	}
	sort.Strings(diff)
	return diff
}

// TestOutputTopicVanishes: the audit topic (dispatched) is deleted while two
// members work through a stream against a slow partner. Writes fail, so no
// event completes and no input offset commits (fail closed); each member
// says so in /readyz and its log; once the topic is re-created everything
// resumes, and no postback is lost or sent twice.
//
// What the oracle can check. The audit records written before the deletion
// are gone with the topic, so the audit-based part of verify cannot hold.
// Instead:
//   - the tracker, which keeps its own books: every expected postback accepted
//     exactly once, with the right values, nothing unexpected (a postback sent
//     during the outage whose audit write failed must not be sent again when
//     its event is retried);
//   - the input side: the group commits the end of every input topic;
//   - the re-created audit topic holds (a) a record for every deposit, revenue
//     and registration produced after the re-creation (every such event is
//     audited) and the expected final outcome of each of their postbacks and
//     skips, and (b) a delivered record for every postback the tracker
//     accepted after the outage began (the first missing-topic error of both
//     members): the audit write of such a postback came after its
//     acceptance, when the topic was missing, so it can only have succeeded
//     in the re-created topic; and nothing in it contradicts the oracle;
//   - the confirmed and DLQ topics were never deleted: every expected
//     confirmation and dead letter is there and nothing else. A unit's
//     records go to the three topics in one non-atomic write, so a dead
//     letter or confirmation written while its audit record failed is
//     written again on the retry (outputs are at-least-once, README); such
//     repeats are allowed and logged.
func TestOutputTopicVanishes(t *testing.T) {
	sc := newScript(scriptOptions{scaleoClicks: 40, datingClicks: 20, seed: 22})
	e := newEnv(t, envOptions{plan: sc.plan, createTopics: true})
	a, b := e.startMember("a"), e.startMember("b")
	members := []*member{a, b}
	for _, m := range members {
		m.waitReady(readyTimeout)
	}
	start := time.Now()
	// Phase 0 without the live output reader (its group offsets would not
	// survive the deletion): a committed registration is an audited one.
	e.produce(sc.phases[0])
	e.waitCommitted(phase0Timeout, roleRegistrations, roleQualifications)

	cut := len(sc.phases[1]) * 2 / 3
	partA, partB := sc.phases[1][:cut], sc.phases[1][cut:]
	total := sc.expectedDelivered()
	// A slow partner keeps most of part A unfinished when the topic goes
	// (about 100 postbacks/s; a click's events run one at a time, so the
	// queue at the partner stays well below the 3 s partner timeout).
	e.tracker.setSlow(30*time.Millisecond, 3)
	e.produce(partA)
	e.waitProgress(total, 25)
	atDelete := e.tracker.distinct()

	dispatched := e.topics[roleDispatched]
	inputs := e.topicList(inputRoles...)
	e.deleteTopic(roleDispatched)
	deleted := time.Now()
	s0 := committed(t, e.brokers, e.group, inputs)

	for _, m := range members {
		var last string
		if !waitFor(topicTimeout, throttled(100*time.Millisecond, func() bool {
			code, line, body := m.readyCheck("kafka")
			last = fmt.Sprintf("%d %q", code, body)
			return code != http.StatusOK && code != 0 && strings.Contains(line, dispatched)
		})) {
			t.Fatalf("%s: /readyz did not report the missing topic %s in its kafka check within %s; last: %s",
				m.name, dispatched, topicTimeout, last)
		}
	}

	// The first error line of both members: by then the deletion has
	// long taken effect, and whatever finished before it (outputs written to
	// the old topic) has committed. From here on nothing may commit: every
	// event of part A is fetched (max_in_flight exceeds the stream), an
	// event with no audit record to write (a parked qualification, an
	// event waiting for its click) finished at once unless its click waits
	// behind an event that needs the audit topic, and nothing new is
	// produced until the topic is back.
	waitErrors := func(n int) {
		t.Helper()
		for _, m := range members {
			if !waitFor(topicTimeout, throttled(50*time.Millisecond, func() bool {
				return m.logLines(msgOutputMissing, dispatched) >= n || m.exited()
			})) {
				t.Fatalf("%s logged %q naming %s only %d times within %s (want %d)", m.name, msgOutputMissing, dispatched,
					m.logLines(msgOutputMissing, dispatched), topicTimeout, n)
			}
			if m.exited() {
				t.Fatalf("%s exited (code %d) while its audit topic was missing\n%s", m.name, m.code, tail(m.stderr, 40))
			}
		}
	}
	waitErrors(1)
	outageFrom := time.Now()
	s1 := committed(t, e.brokers, e.group, inputs)
	waitErrors(2)
	s2 := committed(t, e.brokers, e.group, inputs)
	end := endOffsets(t, e.brokers, inputs)
	if diff := committedDiff(s1, s2); len(diff) > 0 {
		t.Errorf("input offsets committed while the audit topic %s was missing (between the first and second missing-topic error): %v",
			dispatched, diff)
	}
	pending := func(com map[string]map[int]int64) int {
		n := 0
		for tp, ps := range end {
			for p, off := range ps {
				n += int(off - max(com[tp][p], 0))
			}
		}
		return n
	}
	held := pending(s2)
	switch {
	case pending(s0) == 0:
		t.Fatalf("every input message was committed before the deletion was confirmed (at %d/%d postbacks): the scenario tested nothing", atDelete, total)
	case held == 0:
		// S1 == S2 then holds trivially: say what went wrong.
		t.Errorf("all %d input messages uncommitted when the deletion was confirmed were committed while the audit topic %s was missing",
			pending(s0), dispatched)
	}
	for _, m := range members {
		if v := m.topicMissingGauge(t, dispatched); v != 1 {
			t.Errorf("%s: postbackd_topic_missing{topic=%q} = %v while it is missing, want 1", m.name, dispatched, v)
		}
		if code, line, _ := m.readyCheck("kafka"); code == http.StatusOK || !strings.Contains(line, dispatched) {
			t.Errorf("%s: /readyz %d, kafka check %q while %s is missing", m.name, code, line, dispatched)
		}
	}
	s0to1 := committedDiff(s0, s1)
	atRecreate := e.tracker.distinct()

	e.tracker.setSlow(0, 0)
	e.recreateTopic(roleDispatched)
	recreated := time.Now()
	for _, m := range members {
		m.waitReady(readyTimeout)
	}
	endA := endOffsets(t, e.brokers, inputs)
	e.produce(partB)
	endB := endOffsets(t, e.brokers, inputs)

	partBIDs := map[string]bool{}
	for _, m := range partB {
		var v struct {
			EventID string `json:"event_id"`
		}
		if json.Unmarshal(m.value, &v) == nil && v.EventID != "" {
			partBIDs[v.EventID] = true
		}
	}
	check := func(out outputSnapshot, report func(string)) {
		e.checkAfterRecreation(sc, out, outageFrom, partBIDs, endA, endB, report)
	}

	// Done: every expected postback at the tracker, every input committed,
	// and the outputs complete (delayed-path jobs whose audit write failed
	// come back when their lease lapses).
	var missing []string
	ok := waitFor(completeTimeout, throttled(time.Second, func() bool {
		for _, m := range members {
			if m.exited() {
				return true
			}
		}
		missing = nil
		got := e.tracker.snapshot()
		for k, p := range sc.postbacks {
			if p.outcome == "delivered" && len(got[k]) == 0 {
				missing = append(missing, "postback "+k+" not accepted")
			}
		}
		if len(missing) > 0 {
			return false
		}
		com := committed(t, e.brokers, e.group, inputs)
		for tp, ps := range endB {
			for p, off := range ps {
				if off > 0 && com[tp][p] < off {
					missing = append(missing, fmt.Sprintf("%s/%d committed %d of %d", tp, p, com[tp][p], off))
				}
			}
		}
		if len(missing) > 0 {
			return false
		}
		check(e.readOutputs(), func(s string) { missing = append(missing, s) })
		return len(missing) == 0
	}))
	for _, m := range members {
		if m.exited() {
			t.Fatalf("%s exited with %d while the stream was being processed\n%s", m.name, m.code, tail(m.stderr, 40))
		}
	}
	if !ok {
		sort.Strings(missing)
		t.Fatalf("stream not complete within %s after the re-creation: %d missing: %s", completeTimeout, len(missing),
			strings.Join(missing[:min(len(missing), 12)], "; "))
	}
	for _, m := range members {
		m.stop(e.drainTimeout + stopMargin)
	}
	out := e.readOutputs()
	check(out, func(s string) { t.Error(s) })
	e.checkTrackerExact(sc)
	dups := e.checkConfirmsAndDLQ(sc, out)
	acceptedLate := 0
	for _, reqs := range e.tracker.snapshot() {
		if reqs[0].at.After(outageFrom) {
			acceptedLate++
		}
	}
	// Requests for refused postbacks beyond one per copy of their event:
	// a retry in place of an event whose dead letter was written but whose
	// audit record was not asks the partner again (informational).
	var resent []string
	e.tracker.mu.Lock()
	for k, p := range sc.postbacks {
		copies := 1
		if sc.redelivered[p.eventID] {
			copies = 2
		}
		if n := e.tracker.attempts[k]; p.outcome == "dead_lettered" && n > copies {
			resent = append(resent, fmt.Sprintf("%s ×%d", k, n))
		}
	}
	e.tracker.mu.Unlock()
	sort.Strings(resent)
	if acceptedLate == 0 {
		t.Errorf("no postback was accepted after the outage began: the re-created audit topic's delivered records were not checked")
	}
	e.checkNoSecretInLogs(a, b)
	t.Logf("%d events, %d postbacks; deleted %s at %d/%d postbacks; committed in flight after the deletion: %v; "+
		"held uncommitted during the outage: %d input messages; %d postbacks accepted during the outage, %d after it began; "+
		"re-created after %s; %d audit records in the re-created topic; dead letters written more than once: %v; refused postbacks requested again: %v; total %s",
		sc.events, total, dispatched, atDelete, total, s0to1, held, atRecreate-atDelete, acceptedLate,
		recreated.Sub(deleted).Round(time.Millisecond), len(out.audits), dups, resent, time.Since(start).Round(time.Millisecond))
}

// checkAfterRecreation checks the re-created audit topic (out.audits holds
// only its records) against the oracle; see TestOutputTopicVanishes.
// outageFrom: from then on no audit record could be written to the old
// topic. partB: event ids produced after the re-creation, at input offsets
// [endA, endB).
func (e *testEnv) checkAfterRecreation(sc *script, out outputSnapshot, outageFrom time.Time, partB map[string]bool,
	endA, endB map[string]map[int]int64, report func(string)) {
	if len(out.bad) > 0 {
		report(fmt.Sprintf("output records that do not parse: %v", out.bad))
	}
	got := e.tracker.snapshot()
	finals := map[string]map[record.Outcome]bool{} // postback key → final outcomes
	byPID := map[string][]record.Audit{}
	skips := map[string]map[string]bool{}
	sources := map[string]bool{}
	for _, a := range out.audits {
		r := a.rec
		sources[fmt.Sprintf("%s/%d@%d", r.Source.Topic, r.Source.Partition, r.Source.Offset)] = true
		if r.Outcome == record.OutcomeSkipped {
			if skips[r.EventID] == nil {
				skips[r.EventID] = map[string]bool{}
			}
			skips[r.EventID][r.Reason] = true
			if want, ok := sc.skips[r.EventID]; (!ok || want != r.Reason) && sc.maybeSkips[r.EventID] != r.Reason {
				report(fmt.Sprintf("event %s audited as skipped (%s), not expected", r.EventID, r.Reason))
			}
		}
		if r.PostbackID == "" {
			continue
		}
		k := pbKey(r.Goal, r.Status, r.EventID)
		byPID[r.PostbackID] = append(byPID[r.PostbackID], r)
		p, ok := sc.postbacks[k]
		if !ok {
			// A skipped event names the postback it did not send (the skips
			// are checked above); any other outcome is unexpected.
			if r.Outcome != record.OutcomeSkipped {
				report(fmt.Sprintf("audit record for an unexpected postback %s (%s)", k, r.Outcome))
			}
			continue
		}
		if finalOutcome(r.Outcome) {
			if finals[k] == nil {
				finals[k] = map[record.Outcome]bool{}
			}
			finals[k][r.Outcome] = true
			if r.Outcome != record.Outcome(p.outcome) {
				report(fmt.Sprintf("postback %s audited as %s, want %s", k, r.Outcome, p.outcome))
			}
		}
		if reqs := got[k]; len(reqs) > 0 && reqs[0].txOf() != r.PostbackID {
			report(fmt.Sprintf("postback %s: the tracker received transaction id %s, the audit says %s", k, reqs[0].txOf(), r.PostbackID))
		}
	}
	// (a) Every deposit, revenue and registration produced after the
	// re-creation is audited there, with the expected outcomes.
	for _, role := range []string{roleDeposits, roleRevenue, roleRegistrations} {
		tp := e.topics[role]
		for p, to := range endB[tp] {
			for off := endA[tp][p]; off < to; off++ {
				if !sources[fmt.Sprintf("%s/%d@%d", tp, p, off)] {
					report(fmt.Sprintf("%s/%d@%d (produced after the re-creation) has no audit record in the re-created topic", tp, p, off))
				}
			}
		}
	}
	for k, p := range sc.postbacks {
		if partB[p.eventID] && !finals[k][record.Outcome(p.outcome)] {
			report(fmt.Sprintf("postback %s of an event produced after the re-creation: no %s audit record", k, p.outcome))
		}
	}
	for id, reason := range sc.skips {
		if partB[id] && !skips[id][reason] {
			report(fmt.Sprintf("event %s produced after the re-creation: no skipped audit record (%s)", id, reason))
		}
	}
	// (b) Every postback accepted once the outage was under way is audited
	// as delivered in the re-created topic.
	for k, reqs := range got {
		if !reqs[0].at.After(outageFrom) {
			continue
		}
		delivered := false
		for _, r := range byPID[reqs[0].txOf()] {
			delivered = delivered || r.Outcome == record.OutcomeDelivered
		}
		if !delivered {
			report(fmt.Sprintf("postback %s, accepted %s after the outage began, has no delivered audit record in the re-created topic",
				k, reqs[0].at.Sub(outageFrom).Round(time.Millisecond)))
		}
	}
}

// checkTrackerExact is verify's tracker part with no duplicate allowed: every
// expected postback accepted exactly once with the right values, each FTD
// before its status change, nothing else.
func (e *testEnv) checkTrackerExact(sc *script) {
	t := e.t
	t.Helper()
	got := e.tracker.snapshot()
	for k, reqs := range got {
		p, ok := sc.postbacks[k]
		if !ok || p.outcome != "delivered" {
			t.Errorf("tracker accepted an unexpected postback %s (%d times): %s", k, len(reqs), reqs[0].query.Encode())
			continue
		}
		if len(reqs) != 1 {
			t.Errorf("postback %s accepted %d times (transaction ids %s and %s)", k, len(reqs), reqs[0].txOf(), reqs[1].txOf())
		}
		if reqs[0].txOf() == "" {
			t.Errorf("postback %s carried no transaction id", k)
		}
		e.checkRequest(p, reqs[0])
	}
	for k, p := range sc.postbacks {
		if p.outcome == "delivered" && len(got[k]) == 0 {
			t.Errorf("postback %s (click %s) never accepted by the tracker", k, p.click)
		}
	}
	for _, pair := range sc.ordered {
		ftd, st := got[pair[0]], got[pair[1]]
		if len(ftd) > 0 && len(st) > 0 && ftd[0].seq > st[0].seq {
			t.Errorf("status change %s accepted before its FTD %s", pair[1], pair[0])
		}
	}
}

// checkConfirmsAndDLQ checks the topics that were never deleted: exactly the
// expected confirmations (one postback per click) and dead letters (the
// expected reason per event, nothing else). Repeats of a record are allowed
// (see TestOutputTopicVanishes); it returns the dead letters written more
// than once, with their counts.
func (e *testEnv) checkConfirmsAndDLQ(sc *script, out outputSnapshot) []string {
	t := e.t
	t.Helper()
	confPIDs := map[string]map[string]bool{}
	for _, c := range out.confirms {
		exp, ok := sc.confirms[c.ClickID]
		if !ok {
			t.Errorf("unexpected confirmation for click %s: %+v", c.ClickID, c)
			continue
		}
		if c.Status != exp.status || c.Currency != exp.currency || !decimalEqual(c.Amount, exp.amount) {
			t.Errorf("confirmation of click %s is %s %s %s, want %s %s %s", c.ClickID, c.Status, c.Amount, c.Currency, exp.status, exp.amount, exp.currency)
		}
		if confPIDs[c.ClickID] == nil {
			confPIDs[c.ClickID] = map[string]bool{}
		}
		confPIDs[c.ClickID][c.PostbackID] = true
	}
	for click := range sc.confirms {
		if len(confPIDs[click]) != 1 {
			t.Errorf("click %s has confirmations for %d postbacks, want 1", click, len(confPIDs[click]))
		}
	}
	count := map[string]int{}
	for _, d := range out.dlq {
		ref := dlqRef(d.EventID, d.Value)
		want, ok := sc.dlq[ref]
		switch {
		case !ok:
			t.Errorf("unexpected dead letter %s for %s: %s", d.Reason, ref, d.Error)
		case want != d.Reason:
			t.Errorf("dead letter of %s has reason %s, want %s (%s)", ref, d.Reason, want, d.Error)
		}
		count[ref]++
	}
	var repeated []string
	for ref, reason := range sc.dlq {
		switch n := count[ref]; {
		case n == 0:
			t.Errorf("no dead letter (%s) for %s", reason, ref)
		case n > 1 && !(n == 2 && sc.redelivered[ref]):
			repeated = append(repeated, fmt.Sprintf("%s %s ×%d", reason, ref, n))
		}
	}
	sort.Strings(repeated)
	return repeated
}

// genJoined is one "generation joined" log line.
type genJoined struct {
	Msg         string           `json:"msg"`
	Generation  int32            `json:"generation"`
	Member      string           `json:"member"`
	Assignments map[string][]int `json:"assignments"`
}

// lastGeneration is the member's latest "generation joined" line (ok false:
// none yet).
func (m *member) lastGeneration() (genJoined, bool) {
	var last genJoined
	ok := false
	for _, line := range strings.Split(m.log(), "\n") {
		if !strings.Contains(line, `"msg":"`+msgGenerationJoined+`"`) {
			continue
		}
		var g genJoined
		if json.Unmarshal([]byte(line), &g) == nil && g.Msg == msgGenerationJoined {
			last, ok = g, true
		}
	}
	return last, ok
}

func assignedCount(g genJoined) int {
	n := 0
	for _, ps := range g.Assignments {
		n += len(ps)
	}
	return n
}

// TestIdleMemberStaysQuiet: three members on input topics of two partitions
// each. The range assignor gives a topic's two partitions to two members,
// the same two for every topic, so one member is assigned nothing. That
// member must be ready all along, join no new generation while the other
// two work through a stream, and log no missing-topic error; the stream
// completes exactly.
func TestIdleMemberStaysQuiet(t *testing.T) {
	// Orphan qualifications wait out a 10 s window: the stream lasts longer
	// than two of kafka-go's partition-watcher intervals (5 s).
	sc := newScript(scriptOptions{scaleoClicks: 40, datingClicks: 20, orphans: true, seed: 23})
	e := newEnv(t, envOptions{plan: sc.plan, window: 10 * time.Second, createTopics: true, partitions: 2})
	outs := e.startOutputs()
	members := []*member{e.startMember("a"), e.startMember("b"), e.startMember("c")}
	for _, m := range members {
		m.waitReady(readyTimeout)
	}
	start := time.Now()

	// Wait for the group to settle: all three in the same generation, every
	// input partition assigned, one member with none.
	inputs := e.topicList(inputRoles...)
	want := len(inputs) * e.partitions
	var idle *member
	var settled string
	if !waitFor(readyTimeout, throttled(100*time.Millisecond, func() bool {
		idle = nil
		gens := map[int32]bool{}
		sum, idles := 0, 0
		var desc []string
		for _, m := range members {
			g, ok := m.lastGeneration()
			if !ok {
				return false
			}
			gens[g.Generation] = true
			n := assignedCount(g)
			sum += n
			if n == 0 {
				idle = m
				idles++
			}
			desc = append(desc, fmt.Sprintf("%s: generation %d, %d partitions", m.name, g.Generation, n))
		}
		settled = strings.Join(desc, "; ")
		return len(gens) == 1 && sum == want && idles == 1
	})) {
		t.Fatalf("the group did not settle with one idle member within %s: %s", readyTimeout, settled)
	}
	t.Logf("settled: %s", settled)
	var busy []*member
	for _, m := range members {
		if m != idle {
			busy = append(busy, m)
		}
	}
	joinedBefore := map[*member]int{}
	for _, m := range members {
		joinedBefore[m] = m.logLines(msgGenerationJoined)
	}
	startedBefore := idle.logLines(msgPartitionStarted)

	// Sample the idle member's readiness while the stream runs.
	var mu sync.Mutex
	samples, notReady := 0, []string{}
	stop, sampled := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(200 * time.Millisecond) // a sampling rate, not synchronisation
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			code, body, err := idle.get("/readyz")
			mu.Lock()
			samples++
			if err != nil || code != http.StatusOK {
				notReady = append(notReady, fmt.Sprintf("%d %q %v", code, body, err))
			}
			mu.Unlock()
		}
	}()
	e.runPhase0(sc, outs)
	e.produce(sc.phases[1])
	e.waitComplete(sc, outs, completeTimeout, members...)
	close(stop)
	<-sampled

	if samples == 0 {
		t.Errorf("the idle member's /readyz was never sampled during the stream")
	}
	if len(notReady) > 0 {
		t.Errorf("the idle member %s was not ready in %d of %d samples during the stream, first: %s", idle.name, len(notReady), samples, notReady[0])
	}
	if code, body, err := idle.get("/readyz"); err != nil || code != http.StatusOK {
		t.Errorf("idle member %s /readyz after the stream: %d %q %v", idle.name, code, body, err)
	}
	const maxJoins = 1
	for _, m := range members {
		joined := m.logLines(msgGenerationJoined) - joinedBefore[m]
		t.Logf("%s joined %d generations during the stream (%d in all)", m.name, joined, m.logLines(msgGenerationJoined))
		if m == idle && joined > maxJoins {
			t.Errorf("the idle member %s joined %d generations while the others worked (at most %d allowed)", m.name, joined, maxJoins)
		}
	}
	if g, _ := idle.lastGeneration(); assignedCount(g) != 0 {
		t.Errorf("%s was no longer idle at the end (generation %d, assignments %v): the group rebalanced during the stream", idle.name, g.Generation, g.Assignments)
	}
	if n := idle.logLines(msgPartitionStarted) - startedBefore; n != 0 {
		t.Errorf("the idle member %s started %d partitions during the stream", idle.name, n)
	}
	for _, m := range members {
		for _, msg := range []string{msgInputMissing, msgOutputMissing} {
			if n := m.logLines(msg); n > 0 {
				t.Errorf("%s logged %q %d times, though every topic exists", m.name, msg, n)
			}
		}
	}
	for _, tp := range inputs {
		if v := idle.topicMissingGauge(t, tp); v != 0 {
			t.Errorf("idle member %s: postbackd_topic_missing{topic=%q} = %v, want 0", idle.name, tp, v)
		}
	}
	out := e.finish(outs, members...)
	e.verify(sc, out, verifyOptions{exactOutputs: true})
	t.Logf("%d events, %d postbacks handled by %s and %s in %s; %s idle, ready in %d samples",
		sc.events, sc.expectedDelivered(), busy[0].name, busy[1].name, time.Since(start).Round(time.Millisecond), idle.name, samples)
}
