package service

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/postbackd/postbackd/config"
	"github.com/postbackd/postbackd/internal/testinfra"
)

// loadTestConfig writes a minimal valid configuration with topic names
// unique to the test and loads it through config.Load, as postbackd does.
func loadTestConfig(t *testing.T, brokers []string, redisAddr string) *config.Config {
	t.Helper()
	u := testinfra.Unique()
	yaml := fmt.Sprintf(`
kafka:
  brokers: [%[1]s]
  group_id: svc-test-%[2]s
redis:
  addrs: [%[3]s]
  key_prefix: svc%[2]s
topics:
  deposits: svc-%[2]s.deposits
  revenue: svc-%[2]s.revenue
  registrations: svc-%[2]s.registrations
  qualifications: svc-%[2]s.qualifications
  dispatched: svc-%[2]s.dispatched
  confirmed: svc-%[2]s.confirmed
  dlq: svc-%[2]s.dlq
admin:
  disabled: true
partners:
  net:
    allowed_hosts: [127.0.0.1]
    goals:
      ftd: {url: "http://127.0.0.1:1/pb?c={click_id}"}
merchants:
  m1: {default_partner: net}
`, strings.Join(brokers, ","), u, redisAddr)
	path := filepath.Join(t.TempDir(), "postbackd.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path, nil)
	if err != nil {
		t.Fatalf("load test config: %v", err)
	}
	return cfg
}

// redisAddr returns the address of the test's Redis (real or miniredis).
func redisAddr(t *testing.T) string {
	t.Helper()
	_, _, m := testinfra.Redis(t)
	if m != nil {
		return m.Addr()
	}
	return os.Getenv("REDIS_ADDR")
}

func TestRunNamesMissingTopics(t *testing.T) {
	brokers := testinfra.Kafka(t)
	cfg := loadTestConfig(t, brokers, redisAddr(t))
	// One topic exists: the error names the six others and not that one.
	testinfra.CreateTopics(t, brokers, 1, cfg.Topics.Deposits)

	svc, err := New(cfg, zap.NewNop(), Options{})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = svc.Run(ctx)
	if err == nil {
		t.Fatal("Run with missing topics returned nil")
	}
	if !errors.Is(err, ErrMissingTopics) {
		t.Errorf("Run error %q does not wrap ErrMissingTopics", err)
	}
	tp := cfg.Topics
	for _, name := range []string{tp.Revenue, tp.Registrations, tp.Qualifications, tp.Dispatched, tp.Confirmed, tp.DLQ} {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("Run error does not name missing topic %s: %v", name, err)
		}
	}
	if strings.Contains(err.Error(), tp.Deposits) {
		t.Errorf("Run error names existing topic %s: %v", tp.Deposits, err)
	}
	if ctx.Err() != nil {
		t.Error("Run waited until the test's deadline instead of failing at start")
	}
}

func TestRunStoppedWhileStartingIsClean(t *testing.T) {
	brokers := testinfra.Kafka(t)
	cfg := loadTestConfig(t, brokers, redisAddr(t))
	svc, err := New(cfg, zap.NewNop(), Options{})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := svc.Run(ctx); err != nil {
		t.Errorf("Run with a cancelled context = %v, want nil (nothing was consumed)", err)
	}
}

func TestCreateThenCheckTopics(t *testing.T) {
	brokers := testinfra.Kafka(t)
	cfg := loadTestConfig(t, brokers, "127.0.0.1:1")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	err := CheckTopics(ctx, cfg)
	if !errors.Is(err, ErrMissingTopics) {
		t.Fatalf("CheckTopics before create = %v, want ErrMissingTopics", err)
	}
	for _, name := range allTopics(cfg) {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("CheckTopics error does not name %s: %v", name, err)
		}
	}

	// One topic exists already, with another partition count: CreateTopics
	// keeps it and creates the rest.
	testinfra.CreateTopics(t, brokers, 1, cfg.Topics.DLQ)
	if err := CreateTopics(ctx, cfg, 2, 1); err != nil {
		t.Fatalf("CreateTopics: %v", err)
	}
	if err := CheckTopics(ctx, cfg); err != nil {
		t.Fatalf("CheckTopics after create: %v", err)
	}
	// Creating again is a no-op, not an error.
	if err := CreateTopics(ctx, cfg, 2, 1); err != nil {
		t.Errorf("CreateTopics a second time: %v", err)
	}
}

// TestRunRefusesEvictingRedis: a Redis whose maxmemory-policy can evict keys
// is refused at start, naming the policy and the override; with
// redis.allow_eviction the start goes on (here to the topic check).
func TestRunRefusesEvictingRedis(t *testing.T) {
	addr := testinfra.PrivateRedis(t, "--maxmemory-policy", "volatile-lru")
	brokers := testinfra.Kafka(t)
	for _, allow := range []bool{false, true} {
		cfg := loadTestConfig(t, brokers, addr)
		cfg.Redis.AllowEviction = allow
		svc, err := New(cfg, zap.NewNop(), Options{})
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err = svc.Run(ctx)
		cancel()
		switch {
		case !allow && (!errors.Is(err, errEvictingRedis) || !strings.Contains(err.Error(), "volatile-lru") || !strings.Contains(err.Error(), "redis.allow_eviction")):
			t.Errorf("Run on an evicting Redis: %v; want it refused, naming the policy and redis.allow_eviction", err)
		case allow && (err == nil || errors.Is(err, errEvictingRedis) || !strings.Contains(err.Error(), "topic")):
			t.Errorf("Run with allow_eviction: %v; want it past the Redis check, stopped by the missing topics", err)
		}
	}
}
