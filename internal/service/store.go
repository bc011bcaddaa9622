package service

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/postbackd/postbackd/config"
	"github.com/postbackd/postbackd/dedupe"
	"github.com/postbackd/postbackd/metrics"
)

// newStore is the dedupe store of cfg on rc, as every command opens it.
func newStore(cfg *config.Config, rc redis.UniversalClient, m *metrics.Metrics) *dedupe.Store {
	return dedupe.New(rc, dedupe.Options{
		Prefix: cfg.Redis.KeyPrefix, RecordTTL: cfg.Redis.RecordTTL, Shards: cfg.Delayed.Shards, Metrics: m,
	})
}

// openStore is the store a command works on: on rc when given (tests),
// else on a client of its own, closed by the returned func; Redis must
// answer.
func openStore(ctx context.Context, cfg *config.Config, rc redis.UniversalClient) (*dedupe.Store, func(), error) {
	done := func() {}
	if rc == nil {
		c, err := newRedis(cfg.Redis)
		if err != nil {
			return nil, nil, err
		}
		rc, done = c, func() { _ = c.Close() }
	}
	store := newStore(cfg, rc, nil)
	if err := store.Ping(ctx); err != nil {
		done()
		return nil, nil, fmt.Errorf("redis: %w", err)
	}
	return store, done, nil
}

// OpenStore connects to cfg's Redis (connecting lazily, as go-redis does)
// and returns its store, for the operator's commands; close closes the
// client.
func OpenStore(cfg *config.Config) (store *dedupe.Store, close func() error, err error) {
	rc, err := newRedis(cfg.Redis)
	if err != nil {
		return nil, nil, err
	}
	return newStore(cfg, rc, nil), rc.Close, nil
}
