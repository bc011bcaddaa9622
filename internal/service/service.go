// Package service wires postbackd together from its configuration: Kafka
// and Redis clients, the dispatcher, the pipeline, the consumer group, the
// delayed retry path and the admin server. cmd/postbackd and the demo both
// run it.
package service

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"

	"github.com/postbackd/postbackd/config"
	"github.com/postbackd/postbackd/consumer"
	"github.com/postbackd/postbackd/dedupe"
	"github.com/postbackd/postbackd/dispatcher"
	"github.com/postbackd/postbackd/event"
	"github.com/postbackd/postbackd/internal/admin"
	"github.com/postbackd/postbackd/metrics"
	"github.com/postbackd/postbackd/pipeline"
)

// Service is one running postbackd process.
type Service struct {
	cfg      *config.Config
	log      *zap.Logger
	metrics  *metrics.Metrics
	kafka    *kafkaClients
	redis    redis.UniversalClient
	writer   *kafka.Writer
	pipeline *pipeline.Pipeline
	consumer *consumer.Consumer
	admin    *admin.Server

	closeOnce sync.Once
}

// Options are for tests and the demo; the zero value is production.
type Options struct {
	Metrics *metrics.Metrics
	// Redis replaces the client built from cfg.Redis (the demo's miniredis).
	Redis redis.UniversalClient
}

// New builds the service. It connects nothing yet: Run does.
func New(cfg *config.Config, log *zap.Logger, o Options) (*Service, error) {
	if log == nil {
		log = zap.NewNop()
	}
	useRedisLogger(log)
	m := o.Metrics
	if m == nil {
		m = metrics.New(nil)
	}
	kc, err := newKafkaClients(cfg.Kafka)
	if err != nil {
		return nil, err
	}
	rc := o.Redis
	if rc == nil {
		if rc, err = newRedis(cfg.Redis); err != nil {
			return nil, err
		}
	}
	store := newStore(cfg, rc, m)
	disp, err := dispatcher.New(cfg.Partners, dispatcher.Options{Logger: log, Metrics: m})
	if err != nil {
		return nil, err
	}
	dec, err := event.NewDecoder()
	if err != nil {
		return nil, err
	}
	w := kc.writer()
	pl, err := pipeline.New(PipelineConfig(cfg), pipeline.Options{Store: store, Sender: disp, Out: w, Decoder: dec, Logger: log, Metrics: m})
	if err != nil {
		return nil, err
	}
	start := kafka.FirstOffset
	if cfg.Consumer.StartOffset == "latest" {
		start = kafka.LastOffset
	}
	cons, err := consumer.New(consumer.Config{
		Brokers: cfg.Kafka.Brokers, GroupID: cfg.Kafka.GroupID, Topics: pl.InputTopics(),
		Dialer: kc.dialer, MaxInFlight: cfg.Consumer.MaxInFlight,
		CommitInterval: cfg.Consumer.CommitInterval, DrainTimeout: cfg.Consumer.DrainTimeout, CancelGrace: cfg.CancelGrace(),
		SessionTimeout: cfg.Consumer.SessionTimeout, RebalanceTimeout: cfg.Consumer.RebalanceTimeout,
		StartOffset: start, Logger: log, Metrics: m,
	}, pl)
	if err != nil {
		return nil, err
	}
	s := &Service{cfg: cfg, log: log, metrics: m, kafka: kc, redis: rc, writer: w, pipeline: pl, consumer: cons}
	if !cfg.Admin.Disabled {
		s.admin, err = admin.New(cfg.Admin.Addr, m.Registry, map[string]admin.Check{
			"consumer_group": func(context.Context) error {
				if missing := cons.MissingTopics(); len(missing) > 0 {
					return fmt.Errorf("%w: %s: not rejoining the group until they exist", ErrMissingTopics, strings.Join(missing, ", "))
				}
				if !cons.Ready() {
					return errors.New("not a member of a generation yet")
				}
				return nil
			},
			"redis": func(ctx context.Context) error { return rc.Ping(ctx).Err() },
			"kafka": func(ctx context.Context) error { return kc.checkTopics(ctx, s.topics()) },
		})
		if err != nil {
			return nil, fmt.Errorf("admin.addr: %w", err)
		}
	}
	return s, nil
}

// PipelineConfig is the part of cfg the pipeline uses (render previews with
// it too).
func PipelineConfig(cfg *config.Config) pipeline.Config {
	return pipeline.Config{
		Topics: cfg.Topics, Merchants: cfg.Merchants, Partners: cfg.Partners,
		QualificationWindow: cfg.Qualification.Window, Delayed: cfg.Delayed,
		DrainTimeout: cfg.Consumer.DrainTimeout,
	}
}

// redisAddrs is where the Redis client connects: the configured addresses,
// or the address of a client given in Options.
func (s *Service) redisAddrs() []string {
	if c, ok := s.redis.(*redis.Client); ok {
		return []string{c.Options().Addr}
	}
	return s.cfg.Redis.Addrs
}

// topics lists every topic the service reads or writes.
func (s *Service) topics() []string { return allTopics(s.cfg) }

func allTopics(cfg *config.Config) []string {
	t := cfg.Topics
	return append(InputTopics(cfg), t.Dispatched, t.Confirmed, t.DLQ)
}

// InputTopics are the topics the service consumes.
func InputTopics(cfg *config.Config) []string {
	t := cfg.Topics
	return []string{t.Deposits, t.Revenue, t.Registrations, t.Qualifications}
}

// AdminAddr is where the admin server listens ("" when disabled).
func (s *Service) AdminAddr() string {
	if s.admin == nil {
		return ""
	}
	return s.admin.Addr()
}

// Ready reports whether the consumer is a member of a generation.
func (s *Service) Ready() bool { return s.consumer.Ready() }

// Run checks the topics and Redis, then consumes until ctx is done. On
// cancel it stops fetching, drains in-flight events (bounded by
// consumer.drain_timeout), commits, stops the delayed path and closes its
// clients. It returns nil after a clean stop.
func (s *Service) Run(ctx context.Context) error {
	defer s.close()
	pctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	// Every error names its dependency and where it was looked for.
	err := s.redis.Ping(pctx).Err()
	if err != nil {
		err = dependencyError("redis", s.redisAddrs(), err)
	}
	if err == nil {
		err = s.checkRedisDurability(pctx) // says "redis:" itself
	}
	if err == nil {
		if err = s.kafka.checkTopics(pctx, s.topics()); err != nil {
			err = dependencyError("kafka", s.kafka.brokers, err)
		}
	}
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while starting: nothing was consumed
		}
		return fmt.Errorf("start: %w", err)
	}

	var wg sync.WaitGroup
	errc := make(chan error, 3)
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	if s.admin != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.admin.Run(runCtx); err != nil {
				errc <- fmt.Errorf("admin server: %w", err)
			}
		}()
		s.log.Info("admin server listening", zap.String("addr", s.admin.Addr()))
	}
	wg.Add(3)
	go func() {
		defer wg.Done()
		s.watchOutputTopics(runCtx)
	}()
	go func() {
		defer wg.Done()
		if err := s.pipeline.RunDelayed(runCtx); err != nil {
			errc <- fmt.Errorf("delayed path: %w", err)
		}
	}()
	go func() {
		defer wg.Done()
		if err := s.consumer.Run(runCtx); err != nil {
			errc <- fmt.Errorf("consumer: %w", err)
		}
		stop() // the consumer is done: stop the rest too
	}()
	s.log.Info("postbackd running", zap.Strings("brokers", s.cfg.Kafka.Brokers), zap.String("group_id", s.cfg.Kafka.GroupID))
	wg.Wait()
	close(errc)
	var errs []error
	for e := range errc {
		errs = append(errs, e)
	}
	return errors.Join(errs...)
}

// outputTopicsInterval is how often the output topics are checked while
// they exist; while one is missing the check backs off up to
// outputTopicsMaxInterval.
const (
	outputTopicsInterval    = 10 * time.Second
	outputTopicsMaxInterval = 30 * time.Second
)

// watchOutputTopics checks until ctx ends that the output topics (audit,
// confirmations, DLQ) exist. Progress needs no help from it: a write to a
// missing topic fails, so no event's outcome is durable and no offset
// commits past it (fail closed), and the events are retried in place until
// the topic returns. What it adds is the one clear error per interval that
// names the missing topics (instead of a write error per event), and the
// postbackd_topic_missing gauge; /readyz names them through its kafka check.
func (s *Service) watchOutputTopics(ctx context.Context) {
	t := s.cfg.Topics
	topics := []string{t.Dispatched, t.Confirmed, t.DLQ}
	wait := outputTopicsInterval
	wasMissing := false
	for {
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		}
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		missing, err := s.kafka.missingTopics(cctx, topics)
		cancel()
		if err != nil {
			continue // the broker is away: the writer's errors say so
		}
		for _, topic := range topics {
			v := 0.0
			if slices.Contains(missing, topic) {
				v = 1
			}
			s.metrics.TopicMissing.WithLabelValues(topic).Set(v)
		}
		switch {
		case len(missing) > 0:
			s.log.Error("output topics are missing: no outcome can be written, so nothing commits until they exist",
				zap.Strings("missing_topics", missing))
			wait = min(wait*2, outputTopicsMaxInterval)
			wasMissing = true
		case wasMissing:
			s.log.Info("output topics exist again")
			wait, wasMissing = outputTopicsInterval, false
		}
	}
}

// errEvictingRedis: start-up refused a Redis that can evict keys.
var errEvictingRedis = errors.New("redis: maxmemory-policy can evict keys")

// checkRedisDurability refuses a Redis that can evict keys (unless
// redis.allow_eviction) and warns about one without persistence; see
// config/REFERENCE.md "Redis in production".
func (s *Service) checkRedisDurability(ctx context.Context) error {
	d, err := dedupe.CheckDurability(ctx, s.redis)
	if err != nil {
		s.log.Warn("redis: could not read its eviction policy and persistence; check that maxmemory-policy is noeviction and persistence is on", zap.Error(err))
		return nil
	}
	if d.CanEvict() {
		if !s.cfg.Redis.AllowEviction {
			return fmt.Errorf("%w (%s): evicted FTD records and delivered marks mean second FTDs and second sends; "+
				"set maxmemory-policy noeviction, or redis.allow_eviction: true to run anyway", errEvictingRedis, strings.Join(d.EvictionPolicies, ", "))
		}
		s.log.Error("redis: maxmemory-policy can evict keys and redis.allow_eviction is set: an eviction can pay a postback twice",
			zap.Strings("maxmemory_policy", d.EvictionPolicies))
	}
	if !d.Persistent {
		s.log.Warn("redis: neither appendonly nor RDB save points are on: a restart of Redis forgets every FTD record and delivered mark")
	}
	return nil
}

// close releases the clients; safe to call twice.
func (s *Service) close() {
	s.closeOnce.Do(func() {
		s.pipeline.Close()
		if err := s.writer.Close(); err != nil {
			s.log.Warn("close kafka writer", zap.Error(err))
		}
		if err := s.redis.Close(); err != nil {
			s.log.Warn("close redis", zap.Error(err))
		}
	})
}

// CreateTopics creates the missing topics of cfg (for development and tests).
func CreateTopics(ctx context.Context, cfg *config.Config, partitions, replication int) error {
	kc, err := newKafkaClients(cfg.Kafka)
	if err != nil {
		return err
	}
	return kc.createTopics(ctx, allTopics(cfg), partitions, replication)
}

// CheckTopics reports the topics of cfg that do not exist.
func CheckTopics(ctx context.Context, cfg *config.Config) error {
	kc, err := newKafkaClients(cfg.Kafka)
	if err != nil {
		return err
	}
	return kc.checkTopics(ctx, allTopics(cfg))
}
