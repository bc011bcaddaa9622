package service

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// TestRunNamesTheDependencyThatFailed: a start-up failure says whether Redis
// or Kafka failed, and at which address, not only "dial tcp ...".
func TestRunNamesTheDependencyThatFailed(t *testing.T) {
	mr := miniredis.RunT(t)
	tests := []struct {
		name      string
		redisAddr string
		want      []string
		notWant   string
	}{
		// Redis is checked first: with both away, Redis is named.
		{"redis unreachable", "127.0.0.1:1", []string{"start: redis: ", "127.0.0.1:1", "connection refused"}, "kafka:"},
		{"kafka unreachable", mr.Addr(), []string{"start: kafka: ", "127.0.0.1:1"}, "redis:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := loadTestConfig(t, []string{"127.0.0.1:1"}, tt.redisAddr)
			svc, err := New(cfg, zap.NewNop(), Options{})
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			err = svc.Run(ctx)
			if err == nil {
				t.Fatal("Run returned nil with a dependency away")
			}
			t.Logf("Run: %v", err)
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Run error %q does not contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), tt.notWant) {
				t.Errorf("Run error %q names %s", err, strings.TrimSuffix(tt.notWant, ":"))
			}
		})
	}
}

func TestDependencyError(t *testing.T) {
	tests := []struct {
		dep   string
		addrs []string
		err   string
		want  string
	}{
		{"redis", []string{"127.0.0.1:1"}, "dial tcp 127.0.0.1:1: connect: connection refused", "redis: dial tcp 127.0.0.1:1: connect: connection refused"},
		{"redis", []string{"10.0.0.5:6379"}, "context deadline exceeded", "redis: 10.0.0.5:6379: context deadline exceeded"},
		{"kafka", []string{"k1:9092", "k2:9092"}, "read topic metadata: i/o timeout", "kafka: k1:9092,k2:9092: read topic metadata: i/o timeout"},
	}
	for _, tt := range tests {
		got := dependencyError(tt.dep, tt.addrs, errString(tt.err))
		if got.Error() != tt.want {
			t.Errorf("dependencyError(%s, %v, %q) = %q, want %q", tt.dep, tt.addrs, tt.err, got, tt.want)
		}
	}
}

type errString string

func (e errString) Error() string { return string(e) }

// TestGoRedisLogsThroughZap: go-redis's own log lines go to the service's
// zap logger, at warn, marked "component":"go-redis", and not to stderr as
// plain text; a later New takes them over.
func TestGoRedisLogsThroughZap(t *testing.T) {
	mr := miniredis.RunT(t)
	rc := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rc.Close()

	for i := range 2 {
		core, logs := observer.New(zapcore.DebugLevel)
		cfg := loadTestConfig(t, []string{"127.0.0.1:1"}, mr.Addr())
		if _, err := New(cfg, zap.New(core), Options{Redis: rc}); err != nil {
			t.Fatalf("New: %v", err)
		}
		// go-redis logs that it truncates a TTL below its precision.
		if err := rc.Set(context.Background(), "k", "v", 500*time.Microsecond).Err(); err != nil {
			t.Fatalf("SET: %v", err)
		}
		entries := logs.FilterField(zap.String("component", "go-redis")).All()
		if len(entries) != 1 {
			t.Fatalf("service %d: %d go-redis entries, want 1; all: %v", i, len(entries), logs.All())
		}
		e := entries[0]
		if e.Level != zapcore.WarnLevel || !strings.Contains(e.Message, "truncating to 1ms") {
			t.Errorf("service %d: entry %s %q, want warn about truncating", i, e.Level, e.Message)
		}
	}
}

// TestNewRefusesAnUnusableProxy: a proxy variable the dialer cannot use
// stops the service before it starts, naming the variable, not its value.
func TestNewRefusesAnUnusableProxy(t *testing.T) {
	mr := miniredis.RunT(t)
	cfg := loadTestConfig(t, []string{"127.0.0.1:1"}, mr.Addr())
	for _, v := range []string{"http_proxy", "NO_PROXY", "no_proxy", "REQUEST_METHOD"} {
		t.Setenv(v, "")
	}
	t.Setenv("HTTP_PROXY", "http://ops:hunter2@proxy.internal:31 28")
	_, err := New(cfg, zap.NewNop(), Options{})
	if err == nil {
		t.Fatal("New accepted an unusable HTTP_PROXY")
	}
	if msg := err.Error(); !strings.Contains(msg, "environment variable HTTP_PROXY") || strings.Contains(msg, "hunter2") || strings.Contains(msg, "proxy.internal") {
		t.Errorf("New: %q; want the variable named and its value not shown", msg)
	}
}
