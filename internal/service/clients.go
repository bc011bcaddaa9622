package service

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"
	"go.uber.org/zap"

	"github.com/postbackd/postbackd/config"
)

// tlsConfig builds a client TLS configuration, or nil when TLS is off.
func tlsConfig(c config.TLS) (*tls.Config, error) {
	if !c.Enabled {
		return nil, nil
	}
	t := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: c.InsecureSkipVerify} //nolint:gosec // opt-in for test clusters, documented in REFERENCE.md
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca_file %s holds no PEM certificate", c.CAFile)
		}
		t.RootCAs = pool
	}
	if c.CertFile != "" || c.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("load client certificate: %w", err)
		}
		t.Certificates = []tls.Certificate{cert}
	}
	return t, nil
}

func saslMechanism(c config.SASL) (sasl.Mechanism, error) {
	switch strings.ToLower(c.Mechanism) {
	case "":
		return nil, nil
	case "plain":
		return plain.Mechanism{Username: c.Username, Password: c.Password.Reveal()}, nil
	case "scram-sha-256":
		return scram.Mechanism(scram.SHA256, c.Username, c.Password.Reveal())
	case "scram-sha-512":
		return scram.Mechanism(scram.SHA512, c.Username, c.Password.Reveal())
	default:
		return nil, fmt.Errorf("unknown SASL mechanism %q", c.Mechanism)
	}
}

// kafkaClients holds everything that talks to Kafka, sharing TLS and SASL.
type kafkaClients struct {
	dialer    *kafka.Dialer
	transport *kafka.Transport
	brokers   []string
}

func newKafkaClients(c config.Kafka) (*kafkaClients, error) {
	t, err := tlsConfig(c.TLS)
	if err != nil {
		return nil, fmt.Errorf("kafka.tls: %w", err)
	}
	mech, err := saslMechanism(c.SASL)
	if err != nil {
		return nil, fmt.Errorf("kafka.sasl: %w", err)
	}
	return &kafkaClients{
		dialer:    &kafka.Dialer{ClientID: c.ClientID, Timeout: 10 * time.Second, DualStack: true, TLS: t, SASLMechanism: mech},
		transport: &kafka.Transport{ClientID: c.ClientID, TLS: t, SASL: mech, DialTimeout: 10 * time.Second},
		brokers:   c.Brokers,
	}, nil
}

// writer returns the output writer: acks from all in-sync replicas, no fixed
// topic, and a short batch timeout. kafka-go merges concurrent WriteMessages
// calls into shared batches, so many events in flight share one produce
// request while none waits longer than BatchTimeout for it.
//
// BatchSize is 128 messages: kafka-go allocates every batch with room for
// BatchSize messages (152 bytes each) however few it ends up holding, and at
// max_in_flight 1024 spread over the output partitions a batch rarely holds
// more than a few dozen. At 1000 that empty room was a quarter of all the
// bytes postbackd allocated (so of its garbage collection); a full batch is
// sent at once, so the bound costs no waiting.
func (k *kafkaClients) writer() *kafka.Writer {
	return &kafka.Writer{
		Addr:         kafka.TCP(k.brokers...),
		Balancer:     &kafka.Hash{},
		RequiredAcks: kafka.RequireAll,
		BatchSize:    128,
		BatchBytes:   8 << 20,
		BatchTimeout: 2 * time.Millisecond,
		WriteTimeout: 10 * time.Second,
		MaxAttempts:  5,
		Compression:  kafka.Snappy,
		Transport:    k.transport,
	}
}

func (k *kafkaClients) client() *kafka.Client {
	return &kafka.Client{Addr: kafka.TCP(k.brokers...), Transport: k.transport, Timeout: 10 * time.Second}
}

// ErrMissingTopics is returned by CheckTopics when topics do not exist.
var ErrMissingTopics = errors.New("missing topics")

// missingTopics lists the topics of topics that do not exist.
func (k *kafkaClients) missingTopics(ctx context.Context, topics []string) ([]string, error) {
	meta, err := k.client().Metadata(ctx, &kafka.MetadataRequest{Topics: topics})
	if err != nil {
		return nil, fmt.Errorf("read topic metadata: %w", err)
	}
	found := map[string]bool{}
	for _, t := range meta.Topics {
		if t.Error == nil && len(t.Partitions) > 0 {
			found[t.Name] = true
		}
	}
	var missing []string
	for _, t := range topics {
		if !found[t] {
			missing = append(missing, t)
		}
	}
	return missing, nil
}

// checkTopics reports every topic that does not exist, in one error.
func (k *kafkaClients) checkTopics(ctx context.Context, topics []string) error {
	missing, err := k.missingTopics(ctx, topics)
	if err != nil {
		return err
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: %s (create them, e.g. `postbackd topics create --config FILE`)", ErrMissingTopics, strings.Join(missing, ", "))
	}
	return nil
}

// createTopics creates the topics that are missing; existing ones are kept.
func (k *kafkaClients) createTopics(ctx context.Context, topics []string, partitions, replication int) error {
	req := &kafka.CreateTopicsRequest{}
	for _, t := range topics {
		req.Topics = append(req.Topics, kafka.TopicConfig{Topic: t, NumPartitions: partitions, ReplicationFactor: replication})
	}
	res, err := k.client().CreateTopics(ctx, req)
	if err != nil {
		return fmt.Errorf("create topics: %w", err)
	}
	var errs []error
	for name, e := range res.Errors {
		if e != nil && !errors.Is(e, kafka.TopicAlreadyExists) {
			errs = append(errs, fmt.Errorf("topic %s: %w", name, e))
		}
	}
	return errors.Join(errs...)
}

// newRedis connects to a single node or a Redis Cluster.
func newRedis(c config.Redis) (redis.UniversalClient, error) {
	t, err := tlsConfig(c.TLS)
	if err != nil {
		return nil, fmt.Errorf("redis.tls: %w", err)
	}
	if c.Cluster {
		return redis.NewClusterClient(&redis.ClusterOptions{
			Addrs: c.Addrs, Username: c.Username, Password: c.Password.Reveal(),
			TLSConfig: t, PoolSize: c.PoolSize,
		}), nil
	}
	return redis.NewClient(&redis.Options{
		Addr: c.Addrs[0], Username: c.Username, Password: c.Password.Reveal(),
		DB: c.DB, TLSConfig: t, PoolSize: c.PoolSize,
	}), nil
}

// redisLog routes go-redis's own log lines (pool and cluster trouble,
// truncated durations: plain text on stderr by default) through zap, at
// warn with "component":"go-redis", so that they sit in the JSON log like
// every other line. go-redis has one logger per process: it is installed
// once, and each New points it at its own zap logger (the last one wins).
var (
	redisLog        = &zapRedisLogger{}
	installRedisLog sync.Once
)

// zapRedisLogger implements go-redis's logging interface.
type zapRedisLogger struct {
	log atomic.Pointer[zap.Logger]
}

// useRedisLogger sends go-redis's log lines to log from now on.
func useRedisLogger(log *zap.Logger) {
	if log == nil {
		log = zap.NewNop()
	}
	redisLog.log.Store(log.With(zap.String("component", "go-redis")))
	installRedisLog.Do(func() { redis.SetLogger(redisLog) })
}

// Printf logs one go-redis line at warn: go-redis logs only what went wrong
// or what it had to change.
func (z *zapRedisLogger) Printf(_ context.Context, format string, v ...any) {
	if l := z.log.Load(); l != nil {
		l.Warn(strings.TrimSpace(fmt.Sprintf(format, v...)))
	}
}

// dependencyError says which dependency a start-up check failed on, and at
// which address when the error does not say it already:
// "redis: dial tcp 127.0.0.1:1: connect: connection refused",
// "kafka: 10.0.0.7:9092: read topic metadata: context deadline exceeded".
func dependencyError(dependency string, addrs []string, err error) error {
	msg := err.Error()
	for _, a := range addrs {
		if strings.Contains(msg, a) {
			return fmt.Errorf("%s: %w", dependency, err)
		}
	}
	return fmt.Errorf("%s: %s: %w", dependency, strings.Join(addrs, ","), err)
}
