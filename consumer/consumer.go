package consumer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/postbackd/postbackd/metrics"
)

// Errors callers may match.
var (
	// ErrAlreadyRun is returned by a second call to Run: a Consumer is a
	// single group membership and runs once.
	ErrAlreadyRun = errors.New("consumer: Run already called")
)

// Message is one input record as the handler sees it.
type Message struct {
	Topic     string
	Partition int
	Offset    int64
	Key       []byte
	Value     []byte
	Time      time.Time
	Headers   []kafka.Header
}

// Handler processes one message and returns only when its outcome is durable.
// An error means it could not be made durable (e.g. Redis or Kafka
// unreachable): the consumer retries the same message in place (jittered
// exponential backoff, capped at RetryMaxInterval) until it succeeds or the
// consumer stops; it never skips a message. So a message that can never
// succeed (bad input) must be dealt with by the handler (DLQ) and reported
// as success. Handle must be safe for concurrent calls with different keys;
// calls with the same key never overlap. It must return soon after ctx is
// cancelled: the context is cancelled when a drain runs out of time.
type Handler interface {
	Handle(ctx context.Context, m Message) error
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, m Message) error

// Handle calls f.
func (f HandlerFunc) Handle(ctx context.Context, m Message) error { return f(ctx, m) }

// Config configures a Consumer. Zero values take the defaults documented on
// each field.
type Config struct {
	Brokers []string
	GroupID string
	Topics  []string
	// Dialer carries TLS, SASL and the client id; nil uses kafka.DefaultDialer.
	Dialer *kafka.Dialer

	// MaxInFlight bounds messages fetched and not finished across all
	// partitions (default 1024). Reaching it blocks fetching: backpressure.
	MaxInFlight int
	// MaxUncommitted bounds, per partition, the offsets fetched beyond the
	// committable prefix, finished or not (default 65536). A message stuck at
	// the front of a partition pauses only that partition once this many
	// offsets sit behind it.
	MaxUncommitted int
	// CommitInterval is how often advanced prefixes are committed (default 200ms).
	CommitInterval time.Duration
	// DrainTimeout bounds how long a rebalance or stop waits for in-flight
	// messages before cancelling their handler contexts (default 30s).
	DrainTimeout time.Duration
	// CancelGrace is how long a drain waits, after cancelling handler
	// contexts, for handlers to return before it gives up on them (default
	// 2s, DefaultCancelGrace; config.CancelGrace floors postbackd's at the
	// same). A handler whose last step cannot be cut short (postbackd's HTTP
	// attempt runs to its own timeout) needs at least that step's bound.
	// DrainTimeout plus CancelGrace must be shorter than RebalanceTimeout.
	CancelGrace time.Duration
	// SessionTimeout is the group session timeout (default 10s).
	SessionTimeout time.Duration
	// RebalanceTimeout is how long the coordinator waits for members to
	// rejoin during a rebalance (default 45s).
	RebalanceTimeout time.Duration
	// RetryMaxInterval caps the backoff between retries of a failing
	// handler call (default 3s).
	RetryMaxInterval time.Duration
	// StartOffset is where a partition without a committed offset starts:
	// kafka.FirstOffset (default) or kafka.LastOffset.
	StartOffset int64

	Logger  *zap.Logger      // default: no logs
	Metrics *metrics.Metrics // default: metrics on a private registry
}

// Defaults.
const (
	DefaultMaxInFlight      = 1024
	DefaultMaxUncommitted   = 65536
	DefaultCommitInterval   = 200 * time.Millisecond
	DefaultDrainTimeout     = 30 * time.Second
	DefaultSessionTimeout   = 10 * time.Second
	DefaultRebalanceTimeout = 45 * time.Second
	DefaultRetryMaxInterval = 3 * time.Second

	// DefaultCancelGrace is Config.CancelGrace's default.
	DefaultCancelGrace = 2 * time.Second
)

func (c Config) withDefaults() Config {
	if c.Dialer == nil {
		c.Dialer = kafka.DefaultDialer
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = DefaultMaxInFlight
	}
	if c.MaxUncommitted == 0 {
		c.MaxUncommitted = DefaultMaxUncommitted
	}
	def(&c.CommitInterval, DefaultCommitInterval)
	def(&c.DrainTimeout, DefaultDrainTimeout)
	def(&c.CancelGrace, DefaultCancelGrace)
	def(&c.SessionTimeout, DefaultSessionTimeout)
	def(&c.RebalanceTimeout, DefaultRebalanceTimeout)
	def(&c.RetryMaxInterval, DefaultRetryMaxInterval)
	if c.StartOffset == 0 {
		c.StartOffset = kafka.FirstOffset
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.Metrics == nil {
		c.Metrics = metrics.New(nil)
	}
	return c
}

// Validate reports every problem of the configuration (after defaults) at once.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{key}, args...)...))
	}
	if len(c.Brokers) == 0 {
		bad("brokers", "at least one broker is required")
	}
	for i, b := range c.Brokers {
		if _, _, err := net.SplitHostPort(b); err != nil {
			bad("brokers["+strconv.Itoa(i)+"]", "%q is not host:port", b)
		}
	}
	if c.GroupID == "" {
		bad("group_id", "required")
	}
	if len(c.Topics) == 0 {
		bad("topics", "at least one topic is required")
	}
	seen := map[string]bool{}
	for i, t := range c.Topics {
		switch {
		case t == "":
			bad("topics["+strconv.Itoa(i)+"]", "empty topic name")
		case seen[t]:
			bad("topics["+strconv.Itoa(i)+"]", "duplicate topic %q", t)
		}
		seen[t] = true
	}
	if c.MaxInFlight < 1 {
		bad("max_in_flight", "must be positive, got %d", c.MaxInFlight)
	}
	if c.MaxUncommitted < 1 {
		bad("max_uncommitted", "must be positive, got %d", c.MaxUncommitted)
	}
	for _, d := range []struct {
		key string
		v   time.Duration
	}{
		{"commit_interval", c.CommitInterval}, {"drain_timeout", c.DrainTimeout}, {"cancel_grace", c.CancelGrace},
		{"session_timeout", c.SessionTimeout}, {"rebalance_timeout", c.RebalanceTimeout},
		{"retry_max_interval", c.RetryMaxInterval},
	} {
		if d.v < 0 {
			bad(d.key, "must not be negative, got %s", d.v)
		}
	}
	if c.DrainTimeout+c.CancelGrace >= c.RebalanceTimeout {
		bad("drain_timeout", "%s plus cancel_grace %s must be shorter than rebalance_timeout %s, or a rebalance goes on without this member",
			c.DrainTimeout, c.CancelGrace, c.RebalanceTimeout)
	}
	if c.StartOffset != kafka.FirstOffset && c.StartOffset != kafka.LastOffset {
		bad("start_offset", "must be kafka.FirstOffset or kafka.LastOffset, got %d", c.StartOffset)
	}
	return errors.Join(errs...)
}

// Consumer is one member of the consumer group. Create it with New, run it
// with Run.
type Consumer struct {
	cfg   Config
	h     Handler
	log   *zap.Logger
	m     *metrics.Metrics
	sched *scheduler
	// client sends the heartbeats that keep the membership alive while a
	// generation drains (kafka-go stops its own heartbeat when the
	// generation ends).
	client *kafka.Client

	started  atomic.Bool
	ready    atomic.Bool
	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}

	// shortGenerations counts generations in a row that ended at once; only
	// the generation's function touches it, one generation at a time.
	shortGenerations int
	// runCtxDone is Run's context's Done channel.
	runCtxDone <-chan struct{}
	// commitFailures counts consecutive failed commits. Only the committing
	// goroutine of the current generation touches it (commitLoop, then the
	// final commit after it).
	commitFailures int

	mu       sync.Mutex
	assigned map[string][]int
	// missing are the subscribed topics found missing before the last
	// rejoin (nil when all exist).
	missing []string
}

// New validates cfg and returns a Consumer. It does not connect.
func New(cfg Config, h Handler) (*Consumer, error) {
	if h == nil {
		return nil, errors.New("consumer: nil handler")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("consumer config: %w", err)
	}
	cfg = cfg.withDefaults()
	c := &Consumer{
		cfg:   cfg,
		h:     h,
		log:   cfg.Logger.Named("consumer"),
		m:     cfg.Metrics,
		sched: newScheduler(cfg.MaxInFlight),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
		client: &kafka.Client{
			Addr:    kafka.TCP(cfg.Brokers...),
			Timeout: 5 * time.Second,
			Transport: &kafka.Transport{
				Dial:     cfg.Dialer.DialFunc,
				ClientID: cfg.Dialer.ClientID,
				TLS:      cfg.Dialer.TLS,
				SASL:     cfg.Dialer.SASLMechanism,
			},
		},
	}
	c.sched.onAcquire = c.m.InFlight.Inc
	c.sched.onRelease = c.m.InFlight.Dec
	return c, nil
}

// Ready reports whether the consumer is a member of a generation whose
// assignments it has received and started (zero partitions included: an
// idle extra replica is healthy).
func (c *Consumer) Ready() bool { return c.ready.Load() }

// MissingTopics returns the subscribed topics that did not exist when the
// member last checked (nil when all do). While any is missing the member
// does not rejoin the group and is not Ready.
func (c *Consumer) MissingTopics() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.missing)
}

// Assignments returns a copy of the partitions currently assigned, by topic.
func (c *Consumer) Assignments() map[string][]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string][]int, len(c.assigned))
	for t, ps := range c.assigned {
		out[t] = slices.Clone(ps)
	}
	return out
}

func (c *Consumer) setAssigned(a map[string][]int) {
	c.mu.Lock()
	c.assigned = a
	c.mu.Unlock()
}

// Close stops Run (as cancelling its context does) and waits for it to
// return. It is safe to call more than once, and before or without Run.
func (c *Consumer) Close() error {
	c.stopOnce.Do(func() { close(c.stop) })
	if c.started.Load() {
		<-c.done
	}
	return nil
}

// Run joins the group and consumes until ctx is cancelled or Close is
// called, then drains the current generation (see the package doc), leaves
// the group and returns nil. Errors joining the group are logged and retried
// (Ready stays false meanwhile). Run may be called once.
func (c *Consumer) Run(ctx context.Context) error {
	if !c.started.CompareAndSwap(false, true) {
		return ErrAlreadyRun
	}
	defer close(c.done)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c.runCtxDone = ctx.Done()
	go func() {
		select {
		case <-c.stop:
			cancel()
		case <-ctx.Done():
		}
	}()

	group, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{
		ID:                    c.cfg.GroupID,
		Brokers:               c.cfg.Brokers,
		Dialer:                c.cfg.Dialer,
		Topics:                c.cfg.Topics,
		HeartbeatInterval:     c.heartbeatInterval(),
		WatchPartitionChanges: true,
		SessionTimeout:        c.cfg.SessionTimeout,
		RebalanceTimeout:      c.cfg.RebalanceTimeout,
		JoinGroupBackoff:      time.Second,
		StartOffset:           c.cfg.StartOffset,
		ErrorLogger:           kafka.LoggerFunc(c.log.Named("kafka").Sugar().Debugf),
	})
	if err != nil {
		return fmt.Errorf("consumer group %s: %w", c.cfg.GroupID, err)
	}
	// Handler contexts keep ctx's values but not its cancellation: a stop
	// lets in-flight work finish within DrainTimeout instead of aborting it.
	base := context.WithoutCancel(ctx)
	for {
		if !c.waitForTopics(ctx) {
			break
		}
		gen, err := group.Next(ctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, kafka.ErrGroupClosed) {
				break
			}
			lvl := zap.WarnLevel
			if errors.Is(err, kafka.RebalanceInProgress) {
				lvl = zap.DebugLevel // kafka-go rejoins at once; routine during a rebalance
			}
			c.log.Log(lvl, "joining consumer group", zap.String("group", c.cfg.GroupID), zap.Error(err))
			continue
		}
		gen.Start(func(gctx context.Context) { c.runGeneration(gctx, base, gen) })
	}
	// Close ends the current generation, waits until runGeneration has
	// drained and committed (the generation's connection stays open until
	// then), and leaves the group. Ending the generation ourselves first
	// would make kafka-go join a new one just to leave it.
	_ = group.Close()
	c.ready.Store(false)
	c.log.Info("consumer stopped", zap.String("group", c.cfg.GroupID))
	return nil
}

// Back-off of a member whose subscribed topics are missing.
const (
	missingTopicsInitial = time.Second
	missingTopicsMax     = 30 * time.Second
)

// waitForTopics returns true once every subscribed topic exists, false if
// ctx ends first. While some are missing the member must not rejoin:
// kafka-go ends a generation at once when a subscribed topic is missing (its
// partition watcher gives up on it) and joins the next, a tight loop that
// floods the log and hammers the coordinator. So the member waits here,
// before taking the next generation: it backs off (jittered exponential,
// missingTopicsInitial..missingTopicsMax), logs one error per interval
// naming the topics, is not Ready, reports them (MissingTopics, the
// topic_missing gauge), and goes on by itself once they exist again. When
// the metadata cannot be read it pauses one interval and goes on: the
// group's own join back-off covers a broker that is away.
func (c *Consumer) waitForTopics(ctx context.Context) bool {
	b := backoff.NewExponentialBackOff(backoff.WithInitialInterval(missingTopicsInitial),
		backoff.WithMaxInterval(missingTopicsMax), backoff.WithMaxElapsedTime(0))
	for {
		if ctx.Err() != nil {
			return false
		}
		missing, err := c.missingTopics(ctx)
		if err != nil {
			// Unknown: pause once, then join anyway (kafka-go's own join
			// back-off covers a broker that is away), so that a metadata
			// error can slow the rejoins down but never stop consuming.
			if ctx.Err() != nil {
				return false
			}
			wait := b.NextBackOff()
			c.log.Warn("reading topic metadata before joining the group", zap.Duration("retry_in", wait), zap.Error(err))
			return sleepCtx(ctx, wait)
		}
		c.setMissing(missing)
		if len(missing) == 0 {
			return true
		}
		c.ready.Store(false)
		wait := b.NextBackOff()
		c.log.Error("subscribed topics are missing; not rejoining the consumer group until they exist",
			zap.Strings("missing_topics", missing), zap.Duration("retry_in", wait))
		if !sleepCtx(ctx, wait) {
			return false
		}
	}
}

// sleepCtx waits d, or less if ctx ends first; it reports whether the whole
// wait passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// missingTopics asks the cluster which subscribed topics it lacks.
func (c *Consumer) missingTopics(ctx context.Context) ([]string, error) {
	mctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	meta, err := c.client.Metadata(mctx, &kafka.MetadataRequest{Topics: c.cfg.Topics})
	if err != nil {
		return nil, err
	}
	found := map[string]bool{}
	for _, t := range meta.Topics {
		if t.Error == nil && len(t.Partitions) > 0 {
			found[t.Name] = true
		}
	}
	var missing []string
	for _, t := range c.cfg.Topics {
		if !found[t] {
			missing = append(missing, t)
		}
	}
	return missing, nil
}

// setMissing records the missing topics and sets the gauge of every
// subscribed topic; a change back to none is logged once.
func (c *Consumer) setMissing(missing []string) {
	c.mu.Lock()
	was := len(c.missing)
	c.missing = slices.Clone(missing)
	c.mu.Unlock()
	for _, t := range c.cfg.Topics {
		v := 0.0
		if slices.Contains(missing, t) {
			v = 1
		}
		c.m.TopicMissing.WithLabelValues(t).Set(v)
	}
	if was > 0 && len(missing) == 0 {
		c.log.Info("subscribed topics exist again; rejoining the consumer group")
	}
}

// A generation that ends sooner than shortGeneration after it began counts
// as short; after each short one in a row the member pauses a little longer
// (from shortGenerationPause, doubling, up to half the session timeout, so
// it stays in the group) before kafka-go may join the next.
const (
	shortGeneration      = time.Second
	shortGenerationPause = 200 * time.Millisecond
)

// pauseAfterShortGeneration throttles a member whose generations end as soon
// as they start. That happens when a subscribed topic is being deleted (the
// broker's metadata can still list it while kafka-go's partition watcher
// already gives up on it, so waitForTopics cannot see it yet) and for
// causes unknown: without a pause kafka-go rejoins in a tight loop. It runs
// as the generation's function returns: kafka-go waits for it before it
// joins the next generation. A stop cuts the pause short.
func (c *Consumer) pauseAfterShortGeneration(joined time.Time, id int32) {
	if time.Since(joined) >= shortGeneration {
		c.shortGenerations = 0
		return
	}
	c.shortGenerations++
	wait := min(shortGenerationPause<<min(c.shortGenerations-1, 10), c.cfg.SessionTimeout/2)
	if c.shortGenerations&(c.shortGenerations-1) == 0 {
		c.log.Warn("generations end as soon as they start; pausing before the next", zap.Int32("generation", id),
			zap.Int("short_generations", c.shortGenerations), zap.Duration("pause", wait))
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-c.stop:
	case <-c.runCtxDone:
	case <-t.C:
	}
}

// heartbeatInterval is a sixth of the session timeout, within [100ms, 3s]:
// kafka-go learns of a rebalance only from a heartbeat answer, so a short
// interval makes a member start its drain sooner.
func (c *Consumer) heartbeatInterval() time.Duration {
	return min(max(c.cfg.SessionTimeout/6, 100*time.Millisecond), 3*time.Second)
}

// partition is the state of one assigned topic-partition in one generation.
type partition struct {
	topic     string
	id        int
	reader    *kafka.Reader
	tracker   *tracker
	hwm       atomic.Int64 // high watermark seen on the last fetched message
	inflight  atomic.Int64 // registered and neither finished nor given up
	committed int64        // last offset committed (or assigned); -1 unknown
	lagLabel  []string
}

func (c *Consumer) runGeneration(gctx, base context.Context, gen *kafka.Generation) {
	var parts []*partition
	assigned := map[string][]int{}
	for _, topic := range c.cfg.Topics {
		for _, pa := range gen.Assignments[topic] {
			p := &partition{
				topic:     topic,
				id:        pa.ID,
				tracker:   newTracker(c.cfg.MaxUncommitted),
				committed: -1,
				lagLabel:  []string{topic, strconv.Itoa(pa.ID)},
			}
			start := pa.Offset
			if start >= 0 {
				p.committed = start
			} else {
				start = c.cfg.StartOffset // no commit yet: the sentinel from config
			}
			p.reader = kafka.NewReader(kafka.ReaderConfig{
				Brokers:     c.cfg.Brokers,
				Topic:       topic,
				Partition:   pa.ID,
				Dialer:      c.cfg.Dialer,
				MinBytes:    1,
				MaxBytes:    10 << 20,
				MaxWait:     250 * time.Millisecond,
				ErrorLogger: kafka.LoggerFunc(c.log.Named("kafka").Sugar().Debugf),
			})
			if err := p.reader.SetOffset(start); err != nil {
				// Only fails on a closed reader; never here.
				c.log.Error("seeking partition", zap.String("topic", topic), zap.Int("partition", pa.ID), zap.Error(err))
			}
			parts = append(parts, p)
			assigned[topic] = append(assigned[topic], pa.ID)
			c.log.Info("partition started", zap.String("topic", topic), zap.Int("partition", pa.ID),
				zap.Int64("offset", pa.Offset), zap.Int32("generation", gen.ID))
		}
	}
	c.setAssigned(assigned)
	c.ready.Store(true)
	joined := time.Now()
	defer c.pauseAfterShortGeneration(joined, gen.ID)
	c.log.Info("generation joined", zap.Int32("generation", gen.ID), zap.String("member", gen.MemberID),
		zap.Any("assignments", assigned))

	hctx, hcancel := context.WithCancel(base)
	defer hcancel()
	var inflight, fetchers sync.WaitGroup
	for _, p := range parts {
		fetchers.Go(func() { c.fetch(gctx, hctx, p, &inflight) })
	}
	var committer sync.WaitGroup
	committer.Go(func() { c.commitLoop(gctx, gen, parts) })

	<-gctx.Done()
	c.ready.Store(false)
	stopKeepAlive := c.keepAlive(gen)
	fetchers.Wait()
	committer.Wait()

	drained := waitFor(&inflight, c.cfg.DrainTimeout)
	if !drained {
		c.log.Warn("drain timed out, cancelling in-flight handlers", zap.Int32("generation", gen.ID),
			zap.Duration("drain_timeout", c.cfg.DrainTimeout))
		hcancel()
		if !waitFor(&inflight, c.cfg.CancelGrace) {
			// A handler outlived the grace (it ignores its context, or its
			// last step runs longer). Its key stays busy in the scheduler,
			// so later messages of that key still wait for it.
			c.log.Error("handlers still running after cancellation; their messages are not committed",
				zap.Int32("generation", gen.ID))
		}
	}
	c.commit(gen, parts, true)
	stopKeepAlive()
	// Readers close at once, not one after another: a close waits for the
	// reader's fetch in progress (up to MaxWait), and the group's next
	// generation waits for this function to return.
	var closing sync.WaitGroup
	for _, p := range parts {
		closing.Go(func() { _ = p.reader.Close() })
	}
	closing.Wait()
	for _, p := range parts {
		c.m.CommitLag.DeleteLabelValues(p.lagLabel...)
		c.log.Info("partition drained", zap.String("topic", p.topic), zap.Int("partition", p.id),
			zap.Int64("committed", p.committed), zap.Int64("in_flight_left", p.inflight.Load()),
			zap.Int32("generation", gen.ID))
	}
	c.setAssigned(nil)
}

// waitFor waits for wg up to d and reports whether it finished.
func waitFor(wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}

// fetch reads one partition until the generation ends. Each message takes an
// in-flight slot and is registered with the tracker before it is handed to
// the scheduler, so the tracker sees offsets in fetch order. A message
// fetched when the generation ends is dropped unregistered: it lies past the
// committable prefix and the next owner reads it again.
func (c *Consumer) fetch(gctx, hctx context.Context, p *partition, inflight *sync.WaitGroup) {
	for {
		km, err := p.reader.FetchMessage(gctx)
		if err != nil {
			if gctx.Err() != nil {
				return
			}
			// The reader retries connections itself; what reaches here is a
			// broker error worth seeing. Pause so it cannot spin.
			c.log.Warn("fetching", zap.String("topic", p.topic), zap.Int("partition", p.id), zap.Error(err))
			select {
			case <-gctx.Done():
				return
			case <-time.After(500 * time.Millisecond):
			}
			continue
		}
		p.hwm.Store(km.HighWaterMark)
		if err := p.tracker.waitRoom(gctx); err != nil {
			return
		}
		if err := c.sched.acquire(gctx); err != nil {
			return
		}
		seq := p.tracker.add(km.Offset)
		inflight.Add(1)
		p.inflight.Add(1)
		m := Message{
			Topic: km.Topic, Partition: km.Partition, Offset: km.Offset,
			Key: km.Key, Value: km.Value, Time: km.Time, Headers: km.Headers,
		}
		c.sched.dispatch(km.Key, func() {
			if c.handle(hctx, m) {
				p.tracker.done(seq)
			}
			p.inflight.Add(-1)
			inflight.Done()
		})
	}
}

// handle runs the handler until it succeeds (true) or ctx is cancelled
// (false: the message stays unfinished and is redelivered to the next owner).
func (c *Consumer) handle(ctx context.Context, m Message) bool {
	if ctx.Err() != nil {
		return false
	}
	err := c.h.Handle(ctx, m)
	if err == nil {
		return true
	}
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 50 * time.Millisecond
	b.MaxInterval = c.cfg.RetryMaxInterval
	b.MaxElapsedTime = 0 // never give up: skipping would lose the message
	b.Reset()
	for attempt := 1; ; attempt++ {
		if ctx.Err() != nil {
			return false
		}
		wait := b.NextBackOff()
		if attempt&(attempt-1) == 0 {
			// Attempts 1, 2, 4, 8, …: an outage that fails every message
			// in flight logs a few lines per message, not one per retry.
			c.log.Warn("handler failed, retrying in place", zap.String("topic", m.Topic),
				zap.Int("partition", m.Partition), zap.Int64("offset", m.Offset),
				zap.Int("attempt", attempt), zap.Duration("retry_in", wait), zap.Error(err))
		}
		if !sleepCtx(ctx, wait) {
			return false
		}
		if err = c.h.Handle(ctx, m); err == nil {
			return true
		}
	}
}

func (c *Consumer) commitLoop(gctx context.Context, gen *kafka.Generation, parts []*partition) {
	t := time.NewTicker(c.cfg.CommitInterval)
	defer t.Stop()
	for {
		select {
		case <-gctx.Done():
			return
		case <-t.C:
			c.commit(gen, parts, false)
		}
	}
}

// commit commits, in one request, every partition whose finished prefix
// moved past its last commit, and refreshes CommitLag.
func (c *Consumer) commit(gen *kafka.Generation, parts []*partition, final bool) {
	offsets := map[string]map[int]int64{}
	n := 0
	for _, p := range parts {
		if off := p.tracker.commitOffset(); off > p.committed {
			if offsets[p.topic] == nil {
				offsets[p.topic] = map[int]int64{}
			}
			offsets[p.topic][p.id] = off
			n++
		}
	}
	if n > 0 {
		if err := gen.CommitOffsets(offsets); err != nil {
			lvl := zap.WarnLevel
			c.commitFailures++
			switch {
			case generationEnded(err):
				// Expected when a rebalance has begun: the next owner resumes
				// from the previous commit and sees these messages again.
				lvl = zap.DebugLevel
			case !final && c.commitFailures&(c.commitFailures-1) != 0:
				// A failure that lasts (a deleted topic) logs on the 1st,
				// 2nd, 4th, 8th, … round, not every CommitInterval.
				lvl = zap.DebugLevel
			}
			c.log.Log(lvl, "committing offsets", zap.Int32("generation", gen.ID), zap.Bool("final", final),
				zap.Int("partitions", n), zap.Int("consecutive_failures", c.commitFailures), zap.Error(err))
		} else {
			c.commitFailures = 0
			for _, p := range parts {
				if off, ok := offsets[p.topic][p.id]; ok {
					p.committed = off
				}
			}
		}
	}
	for _, p := range parts {
		if hw := p.hwm.Load(); hw > 0 && p.committed >= 0 {
			c.m.CommitLag.WithLabelValues(p.lagLabel...).Set(float64(max(hw-p.committed, 0)))
		}
	}
}

// generationEnded reports commit errors that mean this member's generation is
// over (rebalance in progress, fenced, or evicted).
func generationEnded(err error) bool {
	return errors.Is(err, kafka.RebalanceInProgress) || errors.Is(err, kafka.IllegalGeneration) ||
		errors.Is(err, kafka.UnknownMemberId) || errors.Is(err, kafka.FencedInstanceID) ||
		errors.Is(err, kafka.NotCoordinatorForGroup)
}

// keepAlive heartbeats for gen until the returned stop is called. kafka-go
// stops heartbeating as soon as a generation ends; without this, a drain
// longer than the session timeout gets the member evicted and its final
// commit refused. The coordinator answers RebalanceInProgress during a
// rebalance, which still counts as a heartbeat.
func (c *Consumer) keepAlive(gen *kafka.Generation) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		var coord net.Addr
		t := time.NewTicker(c.heartbeatInterval())
		defer t.Stop()
		for {
			if coord == nil {
				res, err := c.client.FindCoordinator(ctx, &kafka.FindCoordinatorRequest{
					Key: c.cfg.GroupID, KeyType: kafka.CoordinatorKeyTypeConsumer,
				})
				if err == nil && res.Error == nil && res.Coordinator != nil {
					coord = kafka.TCP(net.JoinHostPort(res.Coordinator.Host, strconv.Itoa(res.Coordinator.Port)))
				}
			}
			if coord != nil {
				res, err := c.client.Heartbeat(ctx, &kafka.HeartbeatRequest{
					Addr: coord, GroupID: gen.GroupID, GenerationID: gen.ID, MemberID: gen.MemberID,
				})
				if err == nil {
					err = res.Error
				}
				if err != nil && ctx.Err() == nil && !errors.Is(err, kafka.RebalanceInProgress) {
					c.log.Debug("drain heartbeat", zap.Int32("generation", gen.ID), zap.Error(err))
					if errors.Is(err, kafka.NotCoordinatorForGroup) {
						coord = nil
					}
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	})
	return func() { cancel(); wg.Wait() }
}
