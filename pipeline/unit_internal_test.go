package pipeline

// A pipeline driven directly, without a consumer: Handle is called with
// messages, outputs are captured, the store may be wrapped to inject faults.
// For what the integration suite cannot reach from outside (metrics, store
// faults); every Redis call goes to miniredis through the real dedupe.Store.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/postbackd/postbackd/config"
	"github.com/postbackd/postbackd/consumer"
	"github.com/postbackd/postbackd/dedupe"
	"github.com/postbackd/postbackd/dispatcher"
	"github.com/postbackd/postbackd/event"
	"github.com/postbackd/postbackd/internal/testinfra"
	"github.com/postbackd/postbackd/metrics"
	"github.com/postbackd/postbackd/postback"
)

const unitConfig = `
kafka: {brokers: ["127.0.0.1:1"]}
redis: {addrs: ["127.0.0.1:1"]}
partners:
  net:
    token: {env: NET_TOKEN}
    allowed_hosts: [127.0.0.1]
    timeout: 2s
    retry: {quick_attempts: 2, initial_interval: 1ms, max_interval: 5ms}
    goals:
      reg:  {url: "http://%[1]s/pb?c={click_id}&g={goal_alias}&t={token}&tx={transaction_id}"}
      ftd:  {url: "http://%[1]s/pb?c={click_id}&g={goal_alias}&a={amount}&s={conv_status}&t={token}&tx={transaction_id}"}
      rdep: {url: "http://%[1]s/pb?c={click_id}&g={goal_alias}&a={amount}&t={token}&tx={transaction_id}"}
merchants:
  m: {default_partner: net, attribution_wait: 0s}
  w: {default_partner: net, attribution_wait: 1m}
`

// recordingWriter captures output records; fail, when set, fails writes.
type recordingWriter struct {
	mu   sync.Mutex
	msgs []kafka.Message
	fail error
}

func (w *recordingWriter) WriteMessages(_ context.Context, msgs ...kafka.Message) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.fail != nil {
		return w.fail
	}
	w.msgs = append(w.msgs, msgs...)
	return nil
}

func (w *recordingWriter) topic(name string) []kafka.Message {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []kafka.Message
	for _, m := range w.msgs {
		if m.Topic == name {
			out = append(out, m)
		}
	}
	return out
}

// unitHarness is one pipeline on miniredis and a counting tracker.
type unitHarness struct {
	p       *Pipeline
	cfg     *config.Config
	out     *recordingWriter
	mr      *miniredis.Miniredis
	store   *dedupe.Store
	metrics *metrics.Metrics
	hits    atomic.Int64
	seq     atomic.Int64
	// skew is added to the wall clock the pipeline reads (p.now).
	skew atomic.Int64
}

// newUnitHarness builds a pipeline whose store is wrap(h, the real store).
func newUnitHarness(t *testing.T, wrap func(*unitHarness, Store) Store) *unitHarness {
	t.Helper()
	h := &unitHarness{out: &recordingWriter{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.hits.Add(1)
		if strings.HasPrefix(r.URL.Query().Get("c"), "refuse") {
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte("unknown click"))
			return
		}
		_, _ = w.Write([]byte("OK"))
	}))
	t.Cleanup(srv.Close)
	cfg, err := config.Parse([]byte(fmt.Sprintf(unitConfig, strings.TrimPrefix(srv.URL, "http://"))), "",
		func(k string) string {
			if k == "NET_TOKEN" {
				return "unit-secret"
			}
			return ""
		})
	if err != nil {
		t.Fatal(err)
	}
	h.cfg = cfg
	h.mr = miniredis.RunT(t)
	rc := redis.NewClient(&redis.Options{Addr: h.mr.Addr()})
	t.Cleanup(func() { _ = rc.Close() })
	h.metrics = metrics.New(nil)
	h.store = dedupe.New(rc, dedupe.Options{Metrics: h.metrics})
	var store Store = h.store
	if wrap != nil {
		store = wrap(h, store)
	}
	disp, err := dispatcher.New(cfg.Partners, dispatcher.Options{Metrics: h.metrics})
	if err != nil {
		t.Fatal(err)
	}
	dec, err := event.NewDecoder()
	if err != nil {
		t.Fatal(err)
	}
	h.p, err = New(Config{
		Topics: cfg.Topics, Merchants: cfg.Merchants, Partners: cfg.Partners,
		QualificationWindow: cfg.Qualification.Window, Delayed: cfg.Delayed, DrainTimeout: time.Second,
	}, Options{Store: store, Sender: disp, Out: h.out, Decoder: dec, Metrics: h.metrics,
		Now: func() time.Time { return time.Now().Add(time.Duration(h.skew.Load())) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.p.Close)
	return h
}

// message builds an input message on topic from fields (event_id and
// occurred_at generated when missing).
func (h *unitHarness) message(topic string, fields map[string]any) consumer.Message {
	if _, ok := fields["event_id"]; !ok {
		fields["event_id"] = fmt.Sprintf("e-%d", h.seq.Add(1))
	}
	if _, ok := fields["occurred_at"]; !ok {
		fields["occurred_at"] = time.Now().UTC().Format(time.RFC3339)
	}
	b, _ := json.Marshal(fields)
	click, _ := fields["click_id"].(string)
	return consumer.Message{Topic: topic, Partition: 0, Offset: h.seq.Add(1), Key: []byte(click), Value: b}
}

func (h *unitHarness) deposit(click string, extra map[string]any) consumer.Message {
	f := map[string]any{"merchant_id": "m", "click_id": click, "amount": "10.00", "currency": "EUR", "status": "succeeded", "player_id": "p"}
	for k, v := range extra {
		f[k] = v
	}
	return h.message(h.cfg.Topics.Deposits, f)
}

// labelValues lists the values label takes in the samples of metric name.
func labelValues(t *testing.T, reg *prometheus.Registry, name, label string) map[string]bool {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			out[labelOf(m, label)] = true
		}
	}
	return out
}

func labelOf(m *dto.Metric, label string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == label {
			return l.GetValue()
		}
	}
	return ""
}

// TestMetricLabelsBounded: junk networks on input events never become
// metric label values: a label takes only configured partner names (or
// "unknown"), however many distinct junk values arrive.
func TestMetricLabelsBounded(t *testing.T) {
	h := newUnitHarness(t, nil)
	ctx := context.Background()
	for i := range 50 {
		if err := h.p.Handle(ctx, h.deposit(fmt.Sprintf("c%d", i), map[string]any{"network": fmt.Sprintf("junk-%d", i)})); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.p.Handle(ctx, h.deposit("good", nil)); err != nil {
		t.Fatal(err)
	}
	if n := len(h.out.topic(h.cfg.Topics.DLQ)); n != 50 {
		t.Fatalf("%d dead letters, want 50 (unknown_partner)", n)
	}
	got := labelValues(t, h.metrics.Registry, "postbackd_postbacks_total", "partner")
	for v := range got {
		if v != "net" && v != "unknown" {
			t.Errorf("postbackd_postbacks_total has partner=%q: labels must be configured partners or unknown", v)
		}
	}
	if !got["net"] || !got["unknown"] {
		t.Errorf("partner labels %v; want net and unknown", got)
	}
}

// lossyStore loses the click's FTD record right after a claim is taken, as
// an eviction or a failover that lost writes would, between the send and
// its delivered mark.
type lossyStore struct {
	Store
	mr     *miniredis.Miniredis
	prefix string
}

func (s lossyStore) ClaimBatch(ctx context.Context, reqs []dedupe.ClaimRequest) ([]dedupe.ClaimResult, error) {
	for _, r := range reqs {
		s.mr.Del(s.prefix + ":{c:" + r.ClickID + "}:ftd")
	}
	return s.Store.ClaimBatch(ctx, reqs)
}

// ClassifyClaimBatch classifies and claims, then loses the record: the
// claim is taken by the script that also writes it.
func (s lossyStore) ClassifyClaimBatch(ctx context.Context, reqs []dedupe.ClassifyClaim) ([]dedupe.ClassifiedClaim, error) {
	out, err := s.Store.ClassifyClaimBatch(ctx, reqs)
	for _, r := range reqs {
		s.mr.Del(s.prefix + ":{c:" + r.Deposit.ClickID + "}:ftd")
	}
	return out, err
}

// TestRefusedMarkIsNotResent: the partner accepted an FTD, then Redis
// refused to mark it (its FTD record was lost). The event must not be
// retried into a second send: its delivery is audited with the error and
// dead-lettered, and a redelivery sends nothing.
func TestRefusedMarkIsNotResent(t *testing.T) {
	h := newUnitHarness(t, func(h *unitHarness, s Store) Store {
		return lossyStore{Store: s, mr: h.mr, prefix: dedupe.DefaultPrefix}
	})
	ctx := context.Background()
	m := h.deposit("lost", nil)
	for i := range 3 { // the first delivery, then two redeliveries
		if err := h.p.Handle(ctx, m); err != nil {
			t.Fatalf("handling %d: %v; a refused mark must not be retried", i, err)
		}
	}
	if n := h.hits.Load(); n != 1 {
		t.Fatalf("the partner received the FTD %d times, want once", n)
	}
	var audits []struct {
		Outcome, Reason, Error string
		Replayed               bool
	}
	for _, r := range h.out.topic(h.cfg.Topics.Dispatched) {
		var a struct {
			Outcome, Reason, Error string
			Replayed               bool
		}
		_ = json.Unmarshal(r.Value, &a)
		audits = append(audits, a)
	}
	if len(audits) != 3 || audits[0].Outcome != "delivered" || audits[0].Reason != reasonFTDRecordLost || audits[0].Error == "" ||
		!audits[1].Replayed || !audits[2].Replayed {
		t.Fatalf("audit records %+v; want the delivery with reason %s and its error, then two replays", audits, reasonFTDRecordLost)
	}
	dl := h.out.topic(h.cfg.Topics.DLQ)
	if len(dl) == 0 || !strings.Contains(string(dl[0].Value), reasonFTDRecordLost) {
		t.Fatalf("dead letters %d; want ftd_record_lost", len(dl))
	}
}

// downMarks fails every delivered mark while down is set, as a Redis that
// went away right after the partner accepted would.
type downMarks struct {
	Store
	down     *atomic.Bool
	failures *atomic.Int64
}

var errRedisDown = fmt.Errorf("redis: connection refused (injected)")

func (s downMarks) MarkDelivered(ctx context.Context, clickID, postbackID string, d dedupe.Delivery, ftd *dedupe.FTDDelivered) (*dedupe.Parked, error) {
	if s.down.Load() {
		s.failures.Add(1)
		return nil, errRedisDown
	}
	return s.Store.MarkDelivered(ctx, clickID, postbackID, d, ftd)
}

func (s downMarks) MarkDeliveredBatch(ctx context.Context, reqs []dedupe.MarkRequest) ([]*dedupe.Parked, error) {
	if s.down.Load() {
		s.failures.Add(1)
		return nil, errRedisDown
	}
	return s.Store.MarkDeliveredBatch(ctx, reqs)
}

// TestAcceptedPostbackNotResentWhileMarkFails: the partner accepted, then
// Redis refused every mark for longer than the claim's lease. A redelivery
// of the event meanwhile (with the lapsed claim free to take) must not send
// again: it waits for the mark, and both end delivered, the partner having
// received the postback once.
func TestAcceptedPostbackNotResentWhileMarkFails(t *testing.T) {
	var down atomic.Bool
	var failures atomic.Int64
	h := newUnitHarness(t, func(_ *unitHarness, s Store) Store { return downMarks{Store: s, down: &down, failures: &failures} })
	down.Store(true)
	ctx, cancel := context.WithCancel(context.Background())
	m := h.deposit("mark-down", nil)
	first := make(chan error, 1)
	go func() { first <- h.p.Handle(ctx, m) }()
	waitFor(t, "the first mark to fail", func() bool { return failures.Load() >= 2 })
	// The claim's lease runs out in Redis while the mark cannot land; the
	// first handling is also told to stop (a drain), which must not cut the
	// marking short.
	h.mr.FastForward(h.p.claimLease("net") + time.Minute)
	cancel()
	second := make(chan error, 1)
	go func() { second <- h.p.Handle(context.Background(), m) }()
	waitFor(t, "more failed marks while the redelivery waits", func() bool { return failures.Load() >= 4 })
	if n := h.hits.Load(); n != 1 {
		t.Fatalf("the partner received the postback %d times while its mark failed, want once", n)
	}
	down.Store(false)
	for i, ch := range []chan error{first, second} {
		select {
		case err := <-ch:
			if err != nil && i == 1 {
				t.Fatalf("the redelivery: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("handling %d did not end after Redis came back", i+1)
		}
	}
	if n := h.hits.Load(); n != 1 {
		t.Fatalf("the partner received the postback %d times, want once", n)
	}
	if st, err := h.store.Claim(context.Background(), "mark-down", "x", time.Second); err != nil || st.State != dedupe.ClaimAcquired {
		t.Fatalf("store unusable after the outage: %+v %v", st, err)
	}
}

// waitFor polls cond until it holds, for at most 30s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testinfra.WaitUntil(t, 30*time.Second, what, cond)
}

// handleUntil calls Handle with m up to n times and returns the errors.
func (h *unitHarness) handleTimes(m consumer.Message, n int) []error {
	var errs []error
	for range n {
		errs = append(errs, h.p.Handle(context.Background(), m))
	}
	return errs
}

func (h *unitHarness) deadLetterReasons() []string {
	var out []string
	for _, r := range h.out.topic(h.cfg.Topics.DLQ) {
		var d struct{ Reason, Error string }
		_ = json.Unmarshal(r.Value, &d)
		out = append(out, d.Reason)
	}
	return out
}

// TestPermanentFailureIsDeadLettered: an event whose stored state cannot be
// read fails the same way every time; after a bounded number of tries it
// goes to the DLQ with its reason and the partition goes on, nothing sent.
func TestPermanentFailureIsDeadLettered(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(h *unitHarness, click string)
	}{
		{"an FTD record that does not parse", func(h *unitHarness, click string) {
			h.mr.HSet("pb:{c:"+click+"}:ftd", "event_id", "other", "occurred_at", "yesterday-ish")
		}},
		{"a click context of the wrong type (WRONGTYPE)", func(h *unitHarness, click string) {
			h.mr.HSet("pb:{c:"+click+"}:ctx", "network", "net")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newUnitHarness(t, nil)
			tc.damage(h, "broken")
			m := h.deposit("broken", nil)
			errs := h.handleTimes(m, maxPermanentTries)
			for i, err := range errs[:maxPermanentTries-1] {
				if err == nil || !permanent(err) {
					t.Fatalf("try %d: %v; want a permanent error, retried", i+1, err)
				}
			}
			if last := errs[maxPermanentTries-1]; last != nil {
				t.Fatalf("try %d: %v; want nil (dead-lettered, the offset may commit)", maxPermanentTries, last)
			}
			if got := h.deadLetterReasons(); len(got) != 1 || got[0] != reasonUnprocessable {
				t.Fatalf("dead letters %v; want one %s", got, reasonUnprocessable)
			}
			if h.hits.Load() != 0 {
				t.Fatal("a postback was sent for an event whose state cannot be read")
			}
			// Another click is not affected.
			if err := h.p.Handle(context.Background(), h.deposit("fine", nil)); err != nil || h.hits.Load() != 1 {
				t.Fatalf("another click: %v, %d sends; want delivered", err, h.hits.Load())
			}
		})
	}
}

// flakyClassify fails classification with a connection error n times.
type flakyClassify struct {
	Store
	left *atomic.Int64
}

func (s flakyClassify) ClassifyBatch(ctx context.Context, ds []dedupe.Deposit) ([]dedupe.Classification, error) {
	if s.left.Add(-1) >= 0 {
		return nil, errInjectedRefused
	}
	return s.Store.ClassifyBatch(ctx, ds)
}

func (s flakyClassify) ClassifyClaimBatch(ctx context.Context, reqs []dedupe.ClassifyClaim) ([]dedupe.ClassifiedClaim, error) {
	if s.left.Add(-1) >= 0 {
		return nil, errInjectedRefused
	}
	return s.Store.ClassifyClaimBatch(ctx, reqs)
}

var errInjectedRefused = errors.New("dial tcp 127.0.0.1:6379: connect: connection refused (injected)")

// TestTransientFailureIsRetriedNotDeadLettered: Redis unavailable is
// transient however long it lasts: the event is retried (fail closed), never
// dead-lettered, and delivered once Redis is back.
func TestTransientFailureIsRetriedNotDeadLettered(t *testing.T) {
	left := &atomic.Int64{}
	left.Store(int64(3 * maxPermanentTries))
	h := newUnitHarness(t, func(_ *unitHarness, s Store) Store { return flakyClassify{Store: s, left: left} })
	m := h.deposit("flaky", nil)
	for i, err := range h.handleTimes(m, 3*maxPermanentTries) {
		if err == nil || permanent(err) {
			t.Fatalf("try %d: %v; want a transient error", i+1, err)
		}
	}
	if got := h.deadLetterReasons(); len(got) != 0 {
		t.Fatalf("dead letters %v for a transient failure", got)
	}
	if err := h.p.Handle(context.Background(), m); err != nil || h.hits.Load() != 1 {
		t.Fatalf("after Redis came back: %v, %d sends; want delivered once", err, h.hits.Load())
	}
}

// TestUnreadableJobIsDeadLettered: a delayed job whose payload cannot be
// read comes back after each lease; after a bounded number of tries it is
// dead-lettered with its payload and acknowledged, not kept forever.
func TestUnreadableJobIsDeadLettered(t *testing.T) {
	h := newUnitHarness(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := h.store.Schedule(ctx, "pb:garbage", time.Now().Add(-time.Second), []byte("{not a job")); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- h.p.RunDelayed(ctx) }()
	// Each try leases the job; move the pipeline's clock past the lease so
	// that it comes due again, until it is dead-lettered.
	waitFor(t, "the job dead-lettered", func() bool {
		h.skew.Add(int64(h.cfg.Delayed.Lease + time.Second))
		return len(h.deadLetterReasons()) > 0
	})
	cancel()
	<-done
	dl := h.out.topic(h.cfg.Topics.DLQ)
	if len(dl) != 1 || !strings.Contains(string(dl[0].Value), "{not a job") || !strings.Contains(string(dl[0].Value), reasonUnprocessable) {
		t.Fatalf("dead letters %d: %v; want one unprocessable with the payload", len(dl), h.deadLetterReasons())
	}
	if n, err := h.store.Len(context.Background()); err != nil || n != 0 {
		t.Fatalf("schedule holds %d jobs (%v); want the dead-lettered job acknowledged", n, err)
	}
}

// gatedWriter blocks every write until gate is closed, after telling
// entered.
type gatedWriter struct {
	recordingWriter
	entered chan struct{}
	gate    chan struct{}
}

func (w *gatedWriter) WriteMessages(ctx context.Context, msgs ...kafka.Message) error {
	select {
	case w.entered <- struct{}{}:
	default:
	}
	<-w.gate
	return w.recordingWriter.WriteMessages(ctx, msgs...)
}

// TestHandleSucceedsOnlyAfterOutputsAreWritten: the consumer commits an
// offset once Handle returned nil, so Handle must not return nil before the
// event's audit (and DLQ, confirmation) records are acknowledged: not while
// the write is in flight, and not when it fails. An asynchronous flush would
// pass every other test on fakes; this one fails it.
func TestHandleSucceedsOnlyAfterOutputsAreWritten(t *testing.T) {
	h := newUnitHarness(t, nil)
	ctx := context.Background()

	h.out.fail = errors.New("kafka: [6] Not Leader For Partition (injected)")
	bad := h.message(h.cfg.Topics.Deposits, map[string]any{"click_id": "w1", "merchant_id": "m"}) // invalid: a DLQ record
	if err := h.p.Handle(ctx, bad); err == nil {
		t.Fatal("Handle returned nil though its dead letter and audit record were not written")
	}
	if err := h.p.Handle(ctx, h.deposit("w2", nil)); err == nil {
		t.Fatal("Handle returned nil though the audit record of a delivered postback was not written")
	}
	h.out.fail = nil

	gw := &gatedWriter{entered: make(chan struct{}, 1), gate: make(chan struct{})}
	h.p.out = gw
	done := make(chan error, 1)
	go func() { done <- h.p.Handle(ctx, h.deposit("w3", nil)) }()
	<-gw.entered
	select {
	case err := <-done:
		t.Fatalf("Handle returned (%v) while its outputs were still being written", err)
	case <-time.After(200 * time.Millisecond): // the write is held: Handle must still be waiting
	}
	close(gw.gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := len(gw.topic(h.cfg.Topics.Dispatched)); n != 1 {
		t.Fatalf("%d audit records written, want 1", n)
	}
}

// TestRefusalIsNotAskedAgain: a partner refused a postback for good, then
// the outcome's records could not be written (Kafka away), so the event is
// retried; and later it is redelivered. Neither asks the partner again:
// the refusal is remembered like a delivery, and its dead letter and audit
// record are written when they can be.
func TestRefusalIsNotAskedAgain(t *testing.T) {
	h := newUnitHarness(t, nil)
	ctx := context.Background()
	m := h.deposit("refuse-1", nil)
	h.out.fail = errors.New("kafka: broker not available (injected)")
	for range 3 {
		if err := h.p.Handle(ctx, m); err == nil {
			t.Fatal("Handle returned nil though the outcome was not written")
		}
	}
	h.out.fail = nil
	if err := h.p.Handle(ctx, m); err != nil {
		t.Fatal(err)
	}
	if err := h.p.Handle(ctx, m); err != nil { // a redelivery
		t.Fatal(err)
	}
	if n := h.hits.Load(); n != 1 {
		t.Fatalf("the partner was asked %d times, want once", n)
	}
	if got := h.deadLetterReasons(); len(got) != 2 || got[0] != "postback_refused" || got[1] != "postback_refused" {
		t.Fatalf("dead letters %v; want postback_refused, written on the retry and again on the redelivery", got)
	}
}

// TestRedeliveredWaitingDepositKeepsItsPlace: two deposits of a click waited;
// the registration's attribution made the click known but its unit died
// before it handled them; then the first deposit is redelivered. It must
// still be the FTD: the waiting deposit consumed after it comes after it.
func TestRedeliveredWaitingDepositKeepsItsPlace(t *testing.T) {
	h := newUnitHarness(t, nil)
	ctx := context.Background()
	d1 := h.deposit("order", map[string]any{"merchant_id": "w", "event_id": "d1", "amount": "11.00"})
	d2 := h.deposit("order", map[string]any{"merchant_id": "w", "event_id": "d2", "amount": "22.00"})
	for _, m := range []consumer.Message{d1, d2} {
		if err := h.p.Handle(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	if h.hits.Load() != 0 {
		t.Fatal("a deposit of a click without a registration was sent at once")
	}
	// The registration, as far as its attribution went.
	if _, err := h.store.Attribute(ctx, dedupe.Touch{ClickID: "order", EventID: "reg", MerchantID: "w", Registers: true, At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := h.p.Handle(ctx, d1); err != nil { // redelivered
		t.Fatal(err)
	}
	goals := map[string]string{}
	for _, r := range h.out.topic(h.cfg.Topics.Dispatched) {
		var a struct {
			EventID string `json:"event_id"`
			Goal    string `json:"goal"`
			Outcome string `json:"outcome"`
		}
		_ = json.Unmarshal(r.Value, &a)
		if a.Outcome == "delivered" {
			goals[a.EventID] = a.Goal
		}
	}
	if goals["d1"] != "ftd" || goals["d2"] != "rdep" {
		t.Fatalf("delivered goals %v; want d1 the FTD and d2 an rdep", goals)
	}
}

// redisOps counts the Redis round trips of each operation so far.
func (h *unitHarness) redisOps(t *testing.T) map[string]uint64 {
	t.Helper()
	fams, err := h.metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]uint64{}
	for _, f := range fams {
		if f.GetName() != "postbackd_redis_duration_seconds" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "op" {
					out[l.GetValue()] += m.GetHistogram().GetSampleCount()
				}
			}
		}
	}
	return out
}

// TestDepositClassifiedAndClaimedInOneScript: a deposit's classification
// and the claim of its postback are one script (no claim of their own), for
// the FTD, an rdep and a redelivery; a claim that another worker holds is
// waited for with the script's token, and the postback is sent once it is
// free, once.
func TestDepositClassifiedAndClaimedInOneScript(t *testing.T) {
	h := newUnitHarness(t, nil)
	ctx := context.Background()
	ftd, rdep := h.deposit("one", nil), h.deposit("one", nil)
	for _, m := range []consumer.Message{ftd, rdep, ftd} {
		if err := h.p.Handle(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	if n := h.hits.Load(); n != 2 {
		t.Fatalf("%d sends; want the FTD and the rdep once each", n)
	}
	ops := h.redisOps(t)
	if ops["classify_claim_batch"] != 3 || ops["claim_batch"] != 0 || ops["classify_batch"] != 0 {
		t.Fatalf("Redis round trips %v; want 3 classify_claim_batch and no classify or claim of their own", ops)
	}

	// Another worker holds the claim of the next rdep's postback.
	next := h.deposit("one", nil)
	var ev struct {
		EventID string `json:"event_id"`
	}
	if err := json.Unmarshal(next.Value, &ev); err != nil {
		t.Fatal(err)
	}
	id := postback.NewID("net", postback.GoalRD, ev.EventID, "")
	other, err := h.store.Claim(ctx, "one", id, time.Minute)
	if err != nil || other.State != dedupe.ClaimAcquired {
		t.Fatalf("the other worker's claim: %+v, %v", other, err)
	}
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	err = h.p.Handle(short, next)
	cancel()
	if err == nil || h.hits.Load() != 2 {
		t.Fatalf("while another worker holds the claim: %v, %d sends; want a wait cut short by the context and no send", err, h.hits.Load())
	}
	if err := h.store.Release(ctx, "one", id, other.Token); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := h.p.Handle(ctx, next); err != nil {
			t.Fatal(err)
		}
	}
	if n := h.hits.Load(); n != 3 {
		t.Fatalf("%d sends after the claim was released; want the rdep sent once", n)
	}
}
