package service

import (
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
