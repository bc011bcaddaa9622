package pipeline_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/postbackd/postbackd/config"
	"github.com/postbackd/postbackd/internal/service"
	"github.com/postbackd/postbackd/internal/testinfra"
	"github.com/postbackd/postbackd/internal/tracker"
	"github.com/postbackd/postbackd/record"
	"github.com/postbackd/postbackd/schemas"
)

// Partner tokens. They contain characters that URL escaping changes, so the
// leak check below can look for every form a token takes in a URL.
var tokens = map[string]string{
	"ALPHA_TOKEN": "alpha/S3cret+tok=1",
	"BETA_TOKEN":  "beta-s3cret tok",
	"GAMMA_TOKEN": "gamma_S3CRET_777",
}

// configTemplate is every integration test's configuration; {{name}} are
// filled per harness. Three partners on one tracker, told apart by path:
//
//	alpha  Scaleo style; non-identity status words (approved→1, rejected→0)
//	beta   tracker-string network; identity words; sends negative revshare
//	gamma  answers 200 with a body that must start with OK
//
// Retries are in milliseconds so the delayed path runs within a test.
const configTemplate = `
kafka:
  brokers: [{{brokers}}]
  group_id: {{group}}
redis:
  addrs: [{{redis}}]
  cluster: {{cluster}}
  key_prefix: {{prefix}}
  pool_size: 32
topics:
  deposits: {{topic}}.deposits
  revenue: {{topic}}.revenue
  registrations: {{topic}}.registrations
  qualifications: {{topic}}.qualifications
  dispatched: {{topic}}.dispatched
  confirmed: {{topic}}.confirmed
  dlq: {{topic}}.dlq
consumer:
  commit_interval: 50ms
  drain_timeout: {{drain}}
  session_timeout: 6s
delayed:
  poll_interval: 50ms
  lease: 30s
qualification:
  window: {{window}}
admin:
  disabled: true
partners:
  alpha:
    token: {env: ALPHA_TOKEN}
    allowed_hosts: [127.0.0.1]
    timeout: 5s
    retry: &retry {quick_attempts: 2, initial_interval: 5ms, max_interval: 20ms, delayed_initial: 100ms, delayed_max: 200ms, max_age: 1m}
    breaker: &breaker {failures: 1000, cooldown: 200ms}
    status_words: {pending: pending, approved: "1", rejected: "0"}
    goals:
      reg:        {alias: registration, url: "http://{{tracker}}/alpha/conv?click_id={click_id}&goal_alias={goal_alias}&token={token}&transaction_id={transaction_id}"}
      ftd:        {alias: ftd, url: "http://{{tracker}}/alpha/conv?click_id={click_id}&amount={amount}&currency={currency}&goal_alias={goal_alias}&conv_status={conv_status}&token={token}&transaction_id={transaction_id}&custom2={param.custom2}"}
      ftd_status: {alias: ftd, url: "http://{{tracker}}/alpha/conv-change?click_id={click_id}&amount={amount}&currency={currency}&goal_alias={goal_alias}&conv_status={conv_status}&token={token}&transaction_id={transaction_id}"}
      rdep:       {alias: rdep, url: "http://{{tracker}}/alpha/conv?click_id={click_id}&amount={amount}&currency={currency}&goal_alias={goal_alias}&token={token}&transaction_id={transaction_id}"}
      revshare:   {alias: revshare, url: "http://{{tracker}}/alpha/conv?click_id={click_id}&amount={amount}&currency={currency}&goal_alias={goal_alias}&token={token}&transaction_id={transaction_id}"}
  beta:
    token: {env: BETA_TOKEN}
    allowed_hosts: [127.0.0.1]
    timeout: 5s
    retry: *retry
    breaker: *breaker
    allow_negative_revshare: true
    tracker_string: {param: tr, pattern: "trID_{id}_{affid}-{transid}-{clickid}-{extra}_trID"}
    goals:
      reg:        {alias: free_reg, url: "http://{{tracker}}/beta/conv?click_id={click_id}&goal_alias={goal_alias}&affid={tr.affid}&offer={offer_id}&key={token}&transaction_id={transaction_id}"}
      trial:      {alias: trial, url: "http://{{tracker}}/beta/conv?click_id={click_id}&goal_alias={goal_alias}&affid={tr.affid}&offer={offer_id}&key={token}&transaction_id={transaction_id}"}
      ftd:        {alias: signup, url: "http://{{tracker}}/beta/conv?click_id={click_id}&amount={amount}&currency={currency}&goal_alias={goal_alias}&conv_status={conv_status}&affid={tr.affid}&transid={tr.transid}&offer={offer_id}&custom2={param.custom2}&key={token}&transaction_id={transaction_id}"}
      ftd_status: {alias: signup, url: "http://{{tracker}}/beta/conv-change?click_id={click_id}&amount={amount}&currency={currency}&goal_alias={goal_alias}&conv_status={conv_status}&affid={tr.affid}&offer={offer_id}&key={token}&transaction_id={transaction_id}"}
      rdep:       {alias: rebill, url: "http://{{tracker}}/beta/conv?click_id={click_id}&amount={amount}&currency={currency}&goal_alias={goal_alias}&affid={tr.affid}&offer={offer_id}&key={token}&transaction_id={transaction_id}"}
      revshare:   {alias: revshare, url: "http://{{tracker}}/beta/conv?click_id={click_id}&amount={amount}&currency={currency}&goal_alias={goal_alias}&affid={tr.affid}&offer={offer_id}&key={token}&transaction_id={transaction_id}"}
  gamma:
    token: {env: GAMMA_TOKEN}
    allowed_hosts: [127.0.0.1]
    timeout: 5s
    retry: *retry
    breaker: *breaker
    success: {statuses: [200], body_pattern: "^OK"}
    goals:
      ftd:  {alias: ftd, url: "http://{{tracker}}/gamma/pb?click_id={click_id}&amount={amount}&currency={currency}&conv_status={conv_status}&t={token}&transaction_id={transaction_id}"}
      rdep: {alias: rdep, url: "http://{{tracker}}/gamma/pb?click_id={click_id}&amount={amount}&currency={currency}&t={token}&transaction_id={transaction_id}"}
merchants:
  casino: {default_partner: alpha, deal: hybrid, revshare_percent: 35, attribution_wait: 0s}
  shop:   {default_partner: beta, deal: cpa, attribution_wait: 0s}
  neg:    {default_partner: beta, deal: hybrid, attribution_wait: 0s}
  body:   {default_partner: gamma, attribution_wait: 0s}
  # Attribution: events of a click without a network or registration wait.
  dating: {default_partner: alpha, deal: hybrid, attribution_wait: {{attribution_wait}}}
  trk:    {default_partner: beta, deal: hybrid, attribution_wait: {{attribution_wait}}}
  lone:   {deal: hybrid, attribution_wait: 0s}
  lonewait: {deal: hybrid, attribution_wait: {{attribution_wait}}}
`

// harnessOptions tune one harness; zero values take the defaults.
type harnessOptions struct {
	window time.Duration // qualification.window, default 30s
	// attributionWait is merchant dating's attribution_wait, default 10s.
	attributionWait time.Duration
	drain           time.Duration // consumer.drain_timeout, default 5s
	// noStart leaves starting the service to the test (h.start).
	noStart bool
	// duplicatesAllowed names transaction ids the tracker may accept twice
	// (the documented crash window); every other id is accepted at most once.
	duplicatesAllowed func(txID string) bool
	// cluster runs the service on the Redis Cluster of REDIS_CLUSTER_ADDRS.
	cluster bool
}

// harness is one postbackd under test: its own topics, consumer group,
// Redis key prefix, tracker and log buffer, on the shared (or in-process)
// Kafka and Redis.
type harness struct {
	t       *testing.T
	opts    harnessOptions
	brokers []string
	redis   redis.UniversalClient // the test's own client, for reading state
	prefix  string
	topics  config.Topics
	cfgPath string

	trk     *tracker.Tracker
	logs    *syncBuffer
	log     *zap.Logger
	writer  *kafka.Writer
	col     *collector
	seq     atomic.Int64
	running []*instance

	mu       sync.Mutex
	hooks    map[string]hook // click_id → responder
	attempts []tracker.Request
}

// hook answers one request of a click; nil answers 200 "OK".
type hook func(r *http.Request) (int, string)

// instance is one running service.
type instance struct {
	cancel context.CancelFunc
	done   chan error
	err    error
	exited bool
}

func getenv(k string) string { return tokens[k] }

func newHarness(t *testing.T, o harnessOptions) *harness {
	t.Helper()
	if o.window == 0 {
		o.window = 30 * time.Second
	}
	if o.drain == 0 {
		o.drain = 5 * time.Second
	}
	if o.attributionWait == 0 {
		o.attributionWait = min(10*time.Second, o.window/2)
	}
	h := &harness{t: t, opts: o, hooks: map[string]hook{}}
	h.brokers = testinfra.Kafka(t)
	rc, prefix, mr := testinfra.Redis(t)
	h.prefix = prefix
	h.redis = rc
	redisAddr := os.Getenv("REDIS_ADDR")
	if mr != nil {
		redisAddr = mr.Addr()
	}
	redisCluster := "false"
	if o.cluster {
		addrs := strings.Split(os.Getenv("REDIS_CLUSTER_ADDRS"), ",")
		cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
		t.Cleanup(func() { _ = cc.Close() })
		h.redis, redisAddr, redisCluster = cc, strings.Join(addrs, ", "), "true"
	}

	base := "it-" + testinfra.Unique()
	h.topics = config.Topics{
		Deposits: base + ".deposits", Revenue: base + ".revenue", Registrations: base + ".registrations",
		Qualifications: base + ".qualifications", Dispatched: base + ".dispatched", Confirmed: base + ".confirmed", DLQ: base + ".dlq",
	}
	all := []string{h.topics.Deposits, h.topics.Revenue, h.topics.Registrations,
		h.topics.Qualifications, h.topics.Dispatched, h.topics.Confirmed, h.topics.DLQ}
	testinfra.CreateTopics(t, h.brokers, outputPartitions, all...)
	waitLeaders(t, h.brokers, all)

	h.trk = tracker.New(tracker.Options{Respond: h.respond})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: h.trk, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() { _ = hs.Close() })

	yaml := strings.NewReplacer(
		"{{brokers}}", strings.Join(h.brokers, ", "),
		"{{group}}", "g-"+base,
		"{{redis}}", redisAddr,
		"{{cluster}}", redisCluster,
		"{{prefix}}", prefix,
		"{{topic}}", base,
		"{{drain}}", o.drain.String(),
		"{{window}}", o.window.String(),
		"{{attribution_wait}}", o.attributionWait.String(),
		"{{tracker}}", ln.Addr().String(),
	).Replace(configTemplate)
	h.cfgPath = filepath.Join(t.TempDir(), "postbackd.yaml")
	if err := os.WriteFile(h.cfgPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}

	h.logs = &syncBuffer{}
	enc := zap.NewProductionEncoderConfig()
	h.log = zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(enc), zapcore.AddSync(h.logs), zapcore.DebugLevel))

	// A transport of its own: kafka-go's default one is shared by the whole
	// test binary and caches metadata from before these topics existed.
	h.writer = &kafka.Writer{Addr: kafka.TCP(h.brokers...), Balancer: &kafka.Hash{}, RequiredAcks: kafka.RequireAll,
		BatchTimeout: time.Millisecond, Transport: &kafka.Transport{}}
	colCtx, stopCol := context.WithCancel(context.Background())
	h.col = newCollector(h.brokers, []string{h.topics.Dispatched, h.topics.Confirmed, h.topics.DLQ})
	colDone := make(chan struct{})
	go func() { h.col.run(colCtx); close(colDone) }()

	// Runs after every (parallel) subtest: stop the services, read the
	// output topics to their end, then check what must hold for the whole run.
	t.Cleanup(func() {
		h.stopAll()
		h.col.waitCaughtUp(t, 20*time.Second)
		stopCol()
		<-colDone
		_ = h.writer.Close()
		h.checkNoSecrets(t)
		h.checkSchemas(t)
		h.checkNoDuplicateSends(t)
	})
	if !o.noStart {
		h.start()
	}
	return h
}

// start runs a new service instance from the harness's configuration (the
// same group and key prefix as every other instance).
func (h *harness) start() *instance {
	h.t.Helper()
	cfg, err := config.Load(h.cfgPath, getenv)
	if err != nil {
		h.t.Fatalf("load config: %v", err)
	}
	svc, err := service.New(cfg, h.log, service.Options{})
	if err != nil {
		h.t.Fatalf("service.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	in := &instance{cancel: cancel, done: make(chan error, 1)}
	go func() { in.done <- svc.Run(ctx) }()
	h.running = append(h.running, in)
	return in
}

// stop cancels the instance and asserts Run returns nil within a bound.
func (h *harness) stop(in *instance) {
	h.t.Helper()
	if in.exited {
		return
	}
	in.cancel()
	select {
	case in.err = <-in.done:
	case <-time.After(30 * time.Second):
		h.t.Errorf("service did not stop within 30s")
	}
	in.exited = true
	if in.err != nil {
		h.t.Errorf("service Run returned %v, want nil", in.err)
	}
}

func (h *harness) stopAll() {
	for _, in := range h.running {
		h.stop(in)
	}
}

// onClick installs the tracker's answer for every request of click.
func (h *harness) onClick(click string, f hook) {
	h.mu.Lock()
	h.hooks[click] = f
	h.mu.Unlock()
}

func (h *harness) respond(r *http.Request) (int, string) {
	q := r.URL.Query()
	h.mu.Lock()
	h.attempts = append(h.attempts, tracker.Request{Path: r.URL.Path, Query: q, At: time.Now()})
	f := h.hooks[q.Get("click_id")]
	h.mu.Unlock()
	if f != nil {
		return f(r)
	}
	return http.StatusOK, "OK"
}

// attemptsFor is every request the tracker saw for click, refused or not.
func (h *harness) attemptsFor(click string) []tracker.Request {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []tracker.Request
	for _, r := range h.attempts {
		if r.Query.Get("click_id") == click {
			out = append(out, r)
		}
	}
	return out
}

// accepted is every request the tracker accepted (2xx) for click, in order.
func (h *harness) accepted(click string) []tracker.Request {
	var out []tracker.Request
	for _, r := range h.trk.Requests() {
		if r.Query.Get("click_id") == click {
			out = append(out, r)
		}
	}
	return out
}

// ev is an input event as JSON fields.
type ev map[string]any

// msg builds the Kafka message of e on topic, keyed by click. Missing
// event_id and occurred_at are generated; the event id is returned.
func (h *harness) msg(topic, click string, e ev) (kafka.Message, string) {
	if _, ok := e["event_id"]; !ok {
		e["event_id"] = fmt.Sprintf("ev-%s-%d", click, h.seq.Add(1))
	}
	if _, ok := e["occurred_at"]; !ok {
		e["occurred_at"] = time.Now().UTC().Format(time.RFC3339)
	}
	e["click_id"] = click
	b, err := json.Marshal(e)
	if err != nil {
		h.t.Fatal(err)
	}
	return kafka.Message{Topic: topic, Key: []byte(click), Value: b}, e["event_id"].(string)
}

// produce writes msgs in one call (back to back, in order per partition).
// Messages a broker refused are written again (a real broker can still be
// settling a new topic's leadership); accepted ones are not, so nothing is
// produced twice unless the test does it.
func (h *harness) produce(t *testing.T, msgs ...kafka.Message) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		err := h.writer.WriteMessages(ctx, msgs...)
		if err == nil {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("produce: %v", err)
		}
		// Any error but WriteErrors comes before a message is sent (metadata).
		var werrs kafka.WriteErrors
		if errors.As(err, &werrs) {
			var again []kafka.Message
			for i, e := range werrs {
				if e != nil {
					again = append(again, msgs[i])
				}
			}
			msgs = again
		}
		time.Sleep(50 * time.Millisecond) // pause before a retry, bounded by ctx
	}
}

// waitLeaders waits until every partition of topics has a leader that
// answers, so that the first produce and fetch find them.
func waitLeaders(t *testing.T, brokers []string, topics []string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for _, topic := range topics {
		for p := 0; p < outputPartitions; p++ {
			for {
				err := func() error {
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					defer cancel()
					conn, err := kafka.DialLeader(ctx, "tcp", brokers[0], topic, p)
					if err != nil {
						return err
					}
					defer conn.Close()
					_, err = conn.ReadLastOffset()
					return err
				}()
				if err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("partition %s/%d has no leader: %v", topic, p, err)
				}
				time.Sleep(50 * time.Millisecond) // polling metadata, bounded by deadline
			}
		}
	}
}

// send produces one event and returns its id.
func (h *harness) send(t *testing.T, topic, click string, e ev) string {
	t.Helper()
	m, id := h.msg(topic, click, e)
	h.produce(t, m)
	return id
}

func deposit(merchant, amount, currency, status string) ev {
	return ev{"merchant_id": merchant, "amount": amount, "currency": currency, "status": status,
		"player_id": "player-1", "payment_method": "card"}
}

func revenue(merchant, amount, currency string) ev {
	return ev{"merchant_id": merchant, "amount": amount, "currency": currency}
}

func qualification(merchant, status string) ev {
	return ev{"merchant_id": merchant, "status": status}
}

// waitTimeout bounds every wait: generous, as the machine is shared.
const waitTimeout = 30 * time.Second

// waitUntil polls cond until it holds or waitTimeout passes.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testinfra.WaitUntil(t, waitTimeout, what, cond)
}

// waitAccepted waits until the tracker accepted n requests for click.
func (h *harness) waitAccepted(t *testing.T, click string, n int) []tracker.Request {
	t.Helper()
	ok := h.trk.WaitFor(waitTimeout, func(rs []tracker.Request) bool {
		c := 0
		for _, r := range rs {
			if r.Query.Get("click_id") == click {
				c++
			}
		}
		return c >= n
	})
	if !ok {
		t.Fatalf("timed out waiting for %d accepted requests of click %s; have %s", n, click, describe(h.accepted(click)))
	}
	return h.accepted(click)
}

// waitAudits waits until n audit records match f and returns them.
func (h *harness) waitAudits(t *testing.T, what string, n int, f func(record.Audit) bool) []record.Audit {
	t.Helper()
	var got []record.Audit
	waitUntil(t, fmt.Sprintf("%d audit records: %s", n, what), func() bool {
		got = h.col.audits(f)
		return len(got) >= n
	})
	return got
}

// waitEventAudit waits for the first audit record of eventID.
func (h *harness) waitEventAudit(t *testing.T, eventID string) record.Audit {
	t.Helper()
	return h.waitAudits(t, "event "+eventID, 1, func(a record.Audit) bool { return a.EventID == eventID })[0]
}

// barrier produces a deposit that makes no postback (a failed one) for
// click and waits for its audit record. The consumer runs one click's
// messages of one partition in order, so every deposit of click produced
// before it has been handled by then.
func (h *harness) barrier(t *testing.T, merchant, click string) {
	t.Helper()
	id := h.send(t, h.topics.Deposits, click, deposit(merchant, "0", "EUR", "failed"))
	h.waitEventAudit(t, id)
}

func describe(rs []tracker.Request) string {
	var b strings.Builder
	for _, r := range rs {
		q := url.Values{}
		for k, v := range r.Query {
			if k != "token" && k != "key" && k != "t" {
				q[k] = v
			}
		}
		fmt.Fprintf(&b, "\n  %s?%s", r.Path, q.Encode())
	}
	if b.Len() == 0 {
		return "none"
	}
	return b.String()
}

// checkNoSecrets: no partner token, in any form a URL gives it, appears in
// the service's logs or in any output record.
func (h *harness) checkNoSecrets(t *testing.T) {
	t.Helper()
	logs := h.logs.Bytes()
	if len(logs) == 0 {
		t.Errorf("the service logged nothing; the secret check would be vacuous")
	}
	raws := h.col.rawRecords()
	for name, tok := range tokens {
		for _, form := range []string{tok, url.QueryEscape(tok), url.PathEscape(tok)} {
			if i := bytes.Index(logs, []byte(form)); i >= 0 {
				t.Errorf("token %s appears in the service's logs at byte %d", name, i)
			}
			// Where, not what: the message must not print the token itself.
			for _, r := range raws {
				if bytes.Contains(r.value, []byte(form)) {
					t.Errorf("token %s appears in the record at %s/%d@%d", name, r.topic, r.partition, r.offset)
				}
			}
		}
	}
}

// checkSchemas validates every output record against its JSON Schema.
func (h *harness) checkSchemas(t *testing.T) {
	t.Helper()
	set, err := schemas.Compile()
	if err != nil {
		t.Fatalf("compile schemas: %v", err)
	}
	names := map[string]string{h.topics.Dispatched: "audit", h.topics.Confirmed: "confirmation", h.topics.DLQ: "dlq"}
	for _, r := range h.col.rawRecords() {
		if err := set.ValidateJSON(names[r.topic], r.value); err != nil {
			t.Errorf("record of %s fails schema %s: %v\n%s", r.topic, names[r.topic], err, r.value)
		}
	}
}

// checkNoDuplicateSends: the tracker accepted each transaction id at most
// once (but for the ids the test allows twice).
func (h *harness) checkNoDuplicateSends(t *testing.T) {
	t.Helper()
	seen := map[string]int{}
	for _, r := range h.trk.Requests() {
		if tx := r.Query.Get("transaction_id"); tx != "" {
			seen[tx]++
		}
	}
	for tx, n := range seen {
		if n > 1 && (h.opts.duplicatesAllowed == nil || !h.opts.duplicatesAllowed(tx)) {
			t.Errorf("transaction_id %s accepted %d times by the tracker", tx, n)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for the logger's concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) Sync() error { return nil }

func (s *syncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]byte(nil), s.b.Bytes()...)
}
