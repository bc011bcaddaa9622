package consumer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"

	"github.com/postbackd/postbackd/metrics"

	"github.com/postbackd/postbackd/internal/testinfra"
)

const partitions = 4

// joinWait bounds waits that include a group join or rebalance: a few
// seconds on a real broker (session timeout 6s, rebalance waits).
const joinWait = 60 * time.Second

type fixture struct {
	brokers []string
	topic   string
	group   string
	client  *kafka.Client
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	brokers := testinfra.Kafka(t)
	f := &fixture{
		brokers: brokers,
		topic:   "consumer-" + testinfra.Unique(),
		group:   "group-" + testinfra.Unique(),
		client:  &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second},
	}
	testinfra.CreateTopics(t, brokers, partitions, f.topic)
	return f
}

// produced is one produced message: its key and its sequence number within
// the key (the value is "key/seq").
type produced struct {
	key string
	seq int
}

// produce writes n messages over the given number of keys, round robin, and
// returns them in production order. Keys hash to partitions, so a key's
// production order is its partition order.
func (f *fixture) produce(t testing.TB, n, keys, from int) []produced {
	t.Helper()
	w := &kafka.Writer{
		Addr: kafka.TCP(f.brokers...), Topic: f.topic, Balancer: &kafka.Hash{},
		RequiredAcks: kafka.RequireAll, BatchSize: 1000, BatchTimeout: 5 * time.Millisecond,
	}
	defer w.Close()
	out := make([]produced, n)
	msgs := make([]kafka.Message, n)
	for i := range n {
		g := from + i
		k := "click-" + strconv.Itoa(g%keys)
		out[i] = produced{k, g / keys}
		msgs[i] = kafka.Message{Key: []byte(k), Value: []byte(k + "/" + strconv.Itoa(g/keys))}
	}
	ctx, cancel := context.WithTimeout(context.Background(), joinWait)
	defer cancel()
	for {
		err := w.WriteMessages(ctx, msgs...)
		if err == nil {
			return out
		}
		// A real broker may refuse writes to a topic created a moment ago.
		// Retry only when nothing was written, so no message is duplicated
		// or reordered.
		var we kafka.WriteErrors
		nothingWritten := errors.As(err, &we) && we.Count() == len(msgs) ||
			!errors.As(err, &we) && errors.Is(err, kafka.UnknownTopicOrPartition)
		if !nothingWritten || ctx.Err() != nil {
			t.Fatalf("produce: %v", err)
		}
		time.Sleep(100 * time.Millisecond) // waiting for topic metadata, bounded by ctx
	}
}

func (f *fixture) endOffsets(t testing.TB) map[int]int64 {
	t.Helper()
	req := make([]kafka.OffsetRequest, partitions)
	for p := range partitions {
		req[p] = kafka.LastOffsetOf(p)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := f.client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{f.topic: req}})
	if err != nil {
		t.Fatalf("list offsets: %v", err)
	}
	out := map[int]int64{}
	for _, po := range res.Topics[f.topic] {
		if po.Error != nil {
			t.Fatalf("list offsets of partition %d: %v", po.Partition, po.Error)
		}
		out[po.Partition] = po.LastOffset
	}
	return out
}

// committed returns the group's committed offset per partition (-1: none).
func (f *fixture) committed(t testing.TB) map[int]int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := f.client.OffsetFetch(ctx, &kafka.OffsetFetchRequest{
		GroupID: f.group, Topics: map[string][]int{f.topic: {0, 1, 2, 3}},
	})
	if err == nil {
		err = res.Error
	}
	out := map[int]int64{}
	if errors.Is(err, kafka.GroupIdNotFound) {
		// kfake's answer before the group's first commit; a real broker
		// answers -1 per partition.
		for p := range partitions {
			out[p] = -1
		}
		return out
	}
	if err != nil {
		t.Fatalf("offset fetch: %v", err)
	}
	for _, p := range res.Topics[f.topic] {
		if p.Error != nil {
			t.Fatalf("offset fetch of partition %d: %v", p.Partition, p.Error)
		}
		out[p.Partition] = p.CommittedOffset
	}
	return out
}

func (f *fixture) waitCommitted(t testing.TB, want map[int]int64, what string) {
	t.Helper()
	var got map[int]int64
	deadline := time.Now().Add(joinWait)
	for {
		got = f.committed(t)
		ok := true
		for p, o := range want {
			if got[p] != o {
				ok = false
			}
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: committed %v, want %v", what, got, want)
		}
		time.Sleep(50 * time.Millisecond) // polling the broker, bounded by deadline
	}
}

func (f *fixture) config(t testing.TB) Config {
	return Config{
		Brokers: f.brokers, GroupID: f.group, Topics: []string{f.topic},
		CommitInterval: 50 * time.Millisecond, DrainTimeout: 5 * time.Second,
		SessionTimeout: 6 * time.Second, RebalanceTimeout: 20 * time.Second,
		RetryMaxInterval: 200 * time.Millisecond,
		Logger:           zaptest.NewLogger(t, zaptest.Level(testLogLevel())),
	}
}

// testLogLevel is Info, or Debug with CONSUMER_TEST_LOG=debug.
func testLogLevel() zapcore.Level {
	if os.Getenv("CONSUMER_TEST_LOG") == "debug" {
		return zap.DebugLevel
	}
	return zap.InfoLevel
}

// running is a Consumer whose Run goes on in the background.
type running struct {
	c      *Consumer
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	took   time.Duration
}

func start(t testing.TB, cfg Config, h Handler) *running {
	t.Helper()
	c, err := New(cfg, h)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{c: c, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- c.Run(ctx) }()
	t.Cleanup(func() { r.stop(t, 2*joinWait) })
	return r
}

// stop cancels Run and waits at most d for it, returning how long it took.
// Only the first call waits; later ones return the first one's duration.
func (r *running) stop(t testing.TB, d time.Duration) time.Duration {
	t.Helper()
	r.once.Do(func() {
		began := time.Now()
		r.cancel()
		select {
		case err := <-r.done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(d):
			t.Errorf("Run did not return within %s of cancel", d)
		}
		r.took = time.Since(began)
	})
	return r.took
}

// handled is what a recording handler saw.
type handled struct {
	key       string
	seq       int
	partition int
	offset    int64
}

type recorder struct {
	mu   sync.Mutex
	all  []handled
	seen map[[2]int64]int // (partition, offset) -> times handled
}

func newRecorder() *recorder { return &recorder{seen: map[[2]int64]int{}} }

func (r *recorder) record(m Message) {
	key, seqs, _ := strings.Cut(string(m.Value), "/")
	seq, _ := strconv.Atoi(seqs)
	r.mu.Lock()
	r.all = append(r.all, handled{key, seq, m.Partition, m.Offset})
	r.seen[[2]int64{int64(m.Partition), m.Offset}]++
	r.mu.Unlock()
}

func (r *recorder) distinct() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.seen)
}

func (r *recorder) snapshot() []handled {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]handled(nil), r.all...)
}

// checkKeyOrder asserts that, for every key, the first handling of each
// message follows production order (redeliveries may repeat earlier ones).
func checkKeyOrder(t testing.TB, all []handled, prod []produced, exact bool) {
	t.Helper()
	want := map[string][]int{}
	for _, p := range prod {
		want[p.key] = append(want[p.key], p.seq)
	}
	got := map[string][]int{}
	first := map[string]map[int]bool{}
	for _, h := range all {
		if exact {
			got[h.key] = append(got[h.key], h.seq)
			continue
		}
		if first[h.key] == nil {
			first[h.key] = map[int]bool{}
		}
		if !first[h.key][h.seq] {
			first[h.key][h.seq] = true
			got[h.key] = append(got[h.key], h.seq)
		}
	}
	for k, w := range want {
		if fmt.Sprint(got[k]) != fmt.Sprint(w) {
			t.Fatalf("key %s handled in order %v, produced %v", k, got[k], w)
		}
	}
}

func TestConsumeAllInKeyOrderAndCommitToEnd(t *testing.T) {
	f := newFixture(t)
	prod := f.produce(t, 2000, 200, 0)
	rec := newRecorder()
	cfg := f.config(t)
	cfg.Metrics = metrics.New(nil)
	r := start(t, cfg, HandlerFunc(func(_ context.Context, m Message) error {
		rec.record(m)
		return nil
	}))
	waitUntil(t, joinWait, func() bool { return rec.distinct() == 2000 }, "all 2000 messages handled")
	end := f.endOffsets(t)
	f.waitCommitted(t, end, "commits reach the end while running")
	waitUntil(t, 10*time.Second, func() bool {
		for p := range partitions {
			if gauge(t, cfg.Metrics.CommitLag.WithLabelValues(f.topic, strconv.Itoa(p))) != 0 {
				return false
			}
		}
		return gauge(t, cfg.Metrics.InFlight) == 0
	}, "commit lag and in-flight gauges at zero")
	r.stop(t, 30*time.Second)

	all := rec.snapshot()
	if len(all) != 2000 {
		t.Fatalf("%d handlings for 2000 messages: duplicates without any failure", len(all))
	}
	checkKeyOrder(t, all, prod, true)
	if got := f.committed(t); fmt.Sprint(got) != fmt.Sprint(end) {
		t.Fatalf("after stop committed %v, want end offsets %v", got, end)
	}
	if r.c.Ready() {
		t.Fatal("Ready after Run returned")
	}
}

func gauge(t testing.TB, g prometheus.Gauge) float64 {
	t.Helper()
	var m dto.Metric
	if err := g.Write(&m); err != nil {
		t.Fatalf("read gauge: %v", err)
	}
	return m.GetGauge().GetValue()
}

func TestCommitStopsAtUnfinishedMessage(t *testing.T) {
	f := newFixture(t)
	f.produce(t, 2000, 200, 0)
	const blockPart, blockOff = 0, 5
	release := make(chan struct{})
	var blockedKey atomic.Value
	rec := newRecorder()
	cfg := f.config(t)
	cfg.Metrics = metrics.New(nil)
	start(t, cfg, HandlerFunc(func(ctx context.Context, m Message) error {
		if m.Partition == blockPart && m.Offset == blockOff {
			blockedKey.Store(string(m.Key))
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		rec.record(m)
		return nil
	}))
	end := f.endOffsets(t)
	others := map[int]int64{}
	for p, o := range end {
		if p != blockPart {
			others[p] = o
		}
	}
	f.waitCommitted(t, others, "other partitions committed to the end")
	// Every partition-0 message not sharing the blocked key finishes too.
	waitUntil(t, joinWait, func() bool {
		k, _ := blockedKey.Load().(string)
		n := 0
		for _, h := range rec.snapshot() {
			if h.partition == blockPart && h.key != k {
				n++
			}
		}
		return k != "" && n > 0 && n == countOthers(t, f, blockPart, k)
	}, "partition 0 messages of other keys handled")
	// Commits run every 50ms; give several rounds a chance to (wrongly) move.
	for range 10 {
		if got := f.committed(t)[blockPart]; got > blockOff {
			t.Fatalf("partition %d committed %d past unfinished offset %d", blockPart, got, blockOff)
		}
		time.Sleep(50 * time.Millisecond) // repeated checks of a value that must not change
	}
	f.waitCommitted(t, map[int]int64{blockPart: blockOff}, "prefix before the blocked message committed")
	lag := cfg.Metrics.CommitLag.WithLabelValues(f.topic, strconv.Itoa(blockPart))
	waitUntil(t, 10*time.Second, func() bool { return gauge(t, lag) == float64(end[blockPart]-blockOff) },
		"commit lag of the blocked partition = end - blocked offset")
	close(release)
	f.waitCommitted(t, end, "commit advances to the end after release")
	if n := rec.distinct(); n != 2000 {
		t.Fatalf("%d messages handled, want 2000", n)
	}
}

// countOthers counts partition p's messages whose key is not k by reading
// the partition directly.
func countOthers(t testing.TB, f *fixture, p int, k string) int {
	t.Helper()
	end := f.endOffsets(t)[p]
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: f.brokers, Topic: f.topic, Partition: p, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n := 0
	for {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			t.Fatalf("reading partition %d: %v", p, err)
		}
		if string(m.Key) != k {
			n++
		}
		if m.Offset == end-1 {
			return n
		}
	}
}

func TestHandlerErrorRetriedInPlace(t *testing.T) {
	f := newFixture(t)
	prod := f.produce(t, 2000, 200, 0)
	const failPart, failOff = 1, 3
	var attempts atomic.Int32
	rec := newRecorder()
	start(t, f.config(t), HandlerFunc(func(_ context.Context, m Message) error {
		if m.Partition == failPart && m.Offset == failOff {
			if attempts.Add(1) <= 2 {
				return errors.New("redis unreachable")
			}
		}
		rec.record(m)
		return nil
	}))
	waitUntil(t, joinWait, func() bool { return rec.distinct() == 2000 }, "all messages handled")
	f.waitCommitted(t, f.endOffsets(t), "commits reach the end")
	if n := attempts.Load(); n != 3 {
		t.Fatalf("failing message attempted %d times, want 3", n)
	}
	checkKeyOrder(t, rec.snapshot(), prod, true)
}

func TestRestartResumesFromCommittedPrefix(t *testing.T) {
	f := newFixture(t)
	f.produce(t, 2000, 200, 0)
	const stuckOff = 100
	cfg := f.config(t)
	cfg.DrainTimeout = time.Second
	first := newRecorder()
	r1 := start(t, cfg, HandlerFunc(func(ctx context.Context, m Message) error {
		if m.Offset == stuckOff {
			<-ctx.Done() // unfinished until the drain gives up on it
			return ctx.Err()
		}
		first.record(m)
		return nil
	}))
	f.waitCommitted(t, map[int]int64{0: stuckOff, 1: stuckOff, 2: stuckOff, 3: stuckOff}, "prefix up to the stuck messages")
	r1.stop(t, 30*time.Second)
	c1 := f.committed(t)
	for p, o := range c1 {
		if o != stuckOff {
			t.Fatalf("partition %d committed %d after stop, want %d (the unfinished offset)", p, o, stuckOff)
		}
	}

	second := newRecorder()
	start(t, f.config(t), HandlerFunc(func(_ context.Context, m Message) error {
		second.record(m)
		return nil
	}))
	f.waitCommitted(t, f.endOffsets(t), "second consumer commits to the end")
	all := map[[2]int64]bool{}
	for _, h := range first.snapshot() {
		all[[2]int64{int64(h.partition), h.offset}] = true
	}
	lowest := map[int]int64{0: 1 << 62, 1: 1 << 62, 2: 1 << 62, 3: 1 << 62}
	for _, h := range second.snapshot() {
		if h.offset < c1[h.partition] {
			t.Fatalf("committed message %d/%d handled again", h.partition, h.offset)
		}
		lowest[h.partition] = min(lowest[h.partition], h.offset)
		all[[2]int64{int64(h.partition), h.offset}] = true
	}
	if len(all) != 2000 {
		t.Fatalf("%d distinct messages handled over both runs, want 2000", len(all))
	}
	for p, o := range lowest {
		if o != c1[p] {
			t.Fatalf("second consumer started partition %d at %d, want the committed %d", p, o, c1[p])
		}
	}
}

func TestTwoMembersSplitAndTakeOver(t *testing.T) {
	f := newFixture(t)
	prod := f.produce(t, 1000, 200, 0)
	rec := newRecorder()
	var slow atomic.Bool
	slow.Store(true)
	h := HandlerFunc(func(ctx context.Context, m Message) error {
		if slow.Load() {
			// Slow enough that a stop lands mid-stream.
			select {
			case <-time.After(2 * time.Millisecond):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		rec.record(m)
		return nil
	})
	a := start(t, f.config(t), h)
	b := start(t, f.config(t), h)
	waitUntil(t, joinWait, func() bool {
		na, nb := len(a.c.Assignments()[f.topic]), len(b.c.Assignments()[f.topic])
		return na > 0 && nb > 0 && na+nb == partitions
	}, "both members own partitions")
	waitUntil(t, joinWait, func() bool { return rec.distinct() >= 200 }, "some messages handled")
	a.stop(t, 30*time.Second)
	waitUntil(t, joinWait, func() bool { return len(b.c.Assignments()[f.topic]) == partitions }, "b takes over every partition")
	slow.Store(false)
	prod = append(prod, f.produce(t, 1000, 200, 1000)...)
	waitUntil(t, joinWait, func() bool { return rec.distinct() == 2000 }, "all 2000 messages handled")
	f.waitCommitted(t, f.endOffsets(t), "commits reach the end")
	checkKeyOrder(t, rec.snapshot(), prod, false)
}

func TestShutdownDrains(t *testing.T) {
	tests := []struct {
		name   string
		finish bool // in-flight handlers finish during the drain
	}{
		{"handlers finish within the drain", true},
		{"handlers outlast the drain", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.produce(t, 400, 100, 0)
			cfg := f.config(t)
			cfg.DrainTimeout = 2 * time.Second
			gate := make(chan struct{})
			var entered atomic.Int32
			rec := newRecorder()
			// The first 20 of each partition pass at once.
			r := start(t, cfg, gatedHandler(20, gate, &entered, rec))
			waitUntil(t, joinWait, func() bool { return entered.Load() >= 50 }, "handlers in flight")
			f.waitCommitted(t, map[int]int64{0: 20, 1: 20, 2: 20, 3: 20}, "the free prefix committed")
			stopped := make(chan time.Duration, 1)
			go func() { stopped <- r.stop(t, cfg.DrainTimeout+DefaultCancelGrace+15*time.Second) }()
			if tc.finish {
				// Let the in-flight work finish during the drain (Run is
				// already stopping: cancel is immediate).
				waitUntil(t, 5*time.Second, func() bool { return !r.c.Ready() }, "drain begins")
				close(gate)
			}
			took := <-stopped
			if !tc.finish {
				close(gate)
			}
			limit := cfg.DrainTimeout + 5*time.Second
			if !tc.finish {
				limit += DefaultCancelGrace
			}
			if took > limit {
				t.Fatalf("Run returned %s after cancel, want under %s", took, limit)
			}
			// Committed = one past each partition's contiguous handled prefix.
			prefix := handledPrefix(rec)
			got := f.committed(t)
			for p := range partitions {
				want := prefix[p]
				if got[p] != want {
					t.Fatalf("partition %d committed %d, want %d (contiguous handled prefix)", p, got[p], want)
				}
				if tc.finish && want <= 20 {
					t.Fatalf("partition %d: nothing past the free prefix finished during the drain", p)
				}
				if !tc.finish && want != 20 {
					t.Fatalf("partition %d: prefix %d, want 20 (blocked handlers never finished)", p, want)
				}
			}
		})
	}
}

// TestCancelGrace stops a consumer whose in-flight handlers cannot be cut
// short: they see their context cancelled when the drain runs out, and
// return only later (an HTTP attempt running to its answer). Within
// CancelGrace their work counts: it is committed, not redelivered.
func TestCancelGrace(t *testing.T) {
	f := newFixture(t)
	f.produce(t, 200, 50, 0)
	cfg := f.config(t)
	cfg.DrainTimeout = time.Second
	cfg.CancelGrace = 10 * time.Second
	cancelled := make(chan struct{}, 200)
	release := make(chan struct{})
	var entered atomic.Int32
	var at20 [partitions]atomic.Bool // offset 20 of each partition in flight
	rec := newRecorder()
	r := start(t, cfg, HandlerFunc(func(ctx context.Context, m Message) error {
		if m.Offset >= 20 {
			entered.Add(1)
			if m.Offset == 20 {
				at20[m.Partition].Store(true)
			}
			<-ctx.Done()
			cancelled <- struct{}{}
			<-release
			// The attempt runs on past the cancellation, longer than the
			// default grace would wait.
			time.Sleep(DefaultCancelGrace + time.Second)
		}
		rec.record(m)
		return nil
	}))
	waitUntil(t, joinWait, func() bool {
		for p := range at20 {
			if !at20[p].Load() {
				return false
			}
		}
		return true
	}, "offset 20 of every partition in flight")
	f.waitCommitted(t, map[int]int64{0: 20, 1: 20, 2: 20, 3: 20}, "the free prefix committed")
	n := entered.Load()
	stopped := make(chan time.Duration, 1)
	go func() { stopped <- r.stop(t, cfg.DrainTimeout+cfg.CancelGrace+15*time.Second) }()
	select {
	case <-cancelled:
	case <-time.After(cfg.DrainTimeout + 10*time.Second):
		t.Fatal("no handler saw its context cancelled after the drain timeout")
	}
	close(release)
	if took := <-stopped; took > cfg.DrainTimeout+cfg.CancelGrace {
		t.Fatalf("Run returned %s after cancel, want within drain %s + grace %s", took, cfg.DrainTimeout, cfg.CancelGrace)
	}
	// Committed = one past each partition's contiguous handled prefix, and
	// that prefix includes offset 20, whose handler returned in the grace.
	prefix := handledPrefix(rec)
	got := f.committed(t)
	for p := range partitions {
		want := prefix[p]
		if got[p] != want || want <= 20 {
			t.Errorf("partition %d committed %d, handled prefix %d; want the prefix, past offset 20 (%d handlers were in flight)", p, got[p], want, n)
		}
	}
}

// TestDrainLongerThanSessionTimeout stops a consumer whose in-flight work
// finishes only after the session timeout has passed: the member must stay
// in the group while it drains (kafka-go itself stops heartbeating), so the
// final commit is accepted.
func TestDrainLongerThanSessionTimeout(t *testing.T) {
	f := newFixture(t)
	f.produce(t, 200, 50, 0)
	cfg := f.config(t)
	cfg.SessionTimeout = 6 * time.Second
	cfg.DrainTimeout = 15 * time.Second
	gate := make(chan struct{})
	var entered atomic.Int32
	rec := newRecorder()
	r := start(t, cfg, gatedHandler(10, gate, &entered, rec))
	waitUntil(t, joinWait, func() bool { return entered.Load() > 0 }, "handlers in flight")
	f.waitCommitted(t, map[int]int64{0: 10, 1: 10, 2: 10, 3: 10}, "the free prefix committed")
	stopped := make(chan time.Duration, 1)
	go func() { stopped <- r.stop(t, cfg.DrainTimeout+DefaultCancelGrace+15*time.Second) }()
	waitUntil(t, 5*time.Second, func() bool { return !r.c.Ready() }, "drain begins")
	drainBegan := time.Now()
	// Hold the work past the session timeout, then let it finish.
	time.AfterFunc(cfg.SessionTimeout+2*time.Second, func() { close(gate) })
	<-stopped
	if d := time.Since(drainBegan); d < cfg.SessionTimeout {
		t.Fatalf("drain ended after %s, before the session timeout: the test proves nothing", d)
	}
	f.waitCommitted(t, f.endOffsets(t), "final commit after a drain longer than the session timeout")
	if n := rec.distinct(); n != 200 {
		t.Fatalf("%d messages handled, want 200", n)
	}
}

func TestConfigValidate(t *testing.T) {
	ok := Config{Brokers: []string{"127.0.0.1:9092"}, GroupID: "g", Topics: []string{"t"}}
	tests := []struct {
		name  string
		tweak func(*Config)
		want  []string // substrings of the error; none means valid
	}{
		{"defaults", func(*Config) {}, nil},
		{"everything missing", func(c *Config) { *c = Config{} }, []string{"brokers", "group_id", "topics"}},
		{"bad broker and topics", func(c *Config) {
			c.Brokers = []string{"nohost"}
			c.Topics = []string{"a", "", "a"}
		}, []string{"brokers[0]", "topics[1]", "topics[2]"}},
		{"drain too long", func(c *Config) { c.DrainTimeout = time.Minute; c.RebalanceTimeout = 30 * time.Second }, []string{"drain_timeout"}},
		{"drain plus cancel grace too long", func(c *Config) { c.DrainTimeout = 30 * time.Second; c.CancelGrace = 15 * time.Second }, []string{"cancel_grace 15s"}},
		{"negative", func(c *Config) { c.MaxInFlight = -1; c.CommitInterval = -time.Second }, []string{"max_in_flight", "commit_interval"}},
		{"start offset", func(c *Config) { c.StartOffset = 7 }, []string{"start_offset"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.tweak(&c)
			err := c.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate accepted %+v", c)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestCloseIdempotent(t *testing.T) {
	c, err := New(Config{Brokers: []string{"127.0.0.1:1"}, GroupID: "g", Topics: []string{"t"}},
		HandlerFunc(func(context.Context, Message) error { return nil }))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	// Run after Close returns at once (its stop is already signalled).
	done := make(chan error, 1)
	go func() { done <- c.Run(context.Background()) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run after Close did not return")
	}
	if err := c.Run(context.Background()); !errors.Is(err, ErrAlreadyRun) {
		t.Fatalf("second Run: %v, want ErrAlreadyRun", err)
	}
}

// handledPrefix is, per partition, one past the contiguous prefix of
// offsets rec saw handled: the offset a commit of finished work reaches.
func handledPrefix(rec *recorder) map[int]int64 {
	done := map[int]map[int64]bool{}
	for _, h := range rec.snapshot() {
		if done[h.partition] == nil {
			done[h.partition] = map[int64]bool{}
		}
		done[h.partition][h.offset] = true
	}
	prefix := map[int]int64{}
	for p := range partitions {
		for done[p][prefix[p]] {
			prefix[p]++
		}
	}
	return prefix
}

// gatedHandler records every message; those at offset from and beyond first
// count themselves in entered, then wait for gate (or their context).
func gatedHandler(from int64, gate <-chan struct{}, entered *atomic.Int32, rec *recorder) Handler {
	return HandlerFunc(func(ctx context.Context, m Message) error {
		if m.Offset >= from {
			entered.Add(1)
			select {
			case <-gate:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		rec.record(m)
		return nil
	})
}
