// Package testinfra gives tests a Kafka cluster and a Redis: the real ones
// when KAFKA_BROKERS / REDIS_ADDR are set (as .ci/run does), in-process fakes
// (kfake, miniredis) otherwise. Every test gets its own topic names and Redis
// key prefix so tests can share one real broker and one real Redis.
package testinfra

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/prometheus/procfs"
	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/postbackd/postbackd/internal/rediskeys"
)

// Real reports whether tests run against a real broker and Redis.
func RealKafka() bool { return os.Getenv("KAFKA_BROKERS") != "" }
func RealRedis() bool { return os.Getenv("REDIS_ADDR") != "" }

// Unique returns a short random suffix for topic names, group ids and key
// prefixes.
func Unique() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Redis returns a client and a key prefix unique to the test. With
// REDIS_ADDR it connects to that Redis, and the keys the test wrote under
// the prefix (or a longer one starting with it, hash tags included) are
// deleted when it ends; otherwise it starts a miniredis. The fake is
// returned too (nil for a real Redis) for tests that need to move its
// clock.
func Redis(t testing.TB) (redis.UniversalClient, string, *miniredis.Miniredis) {
	t.Helper()
	prefix := "t" + Unique()
	if addr := os.Getenv("REDIS_ADDR"); addr != "" {
		c := redis.NewClient(&redis.Options{Addr: addr, PoolSize: 64})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := c.Ping(ctx).Err(); err != nil {
			t.Fatalf("REDIS_ADDR=%s is set but Redis does not answer: %v", addr, err)
		}
		t.Cleanup(func() { _ = c.Close() })
		// Cleanups run last registered first: before the client closes. A
		// benchmark writes hundreds of thousands of keys, many without a
		// TTL: a shared Redis that kept them would slow every run after.
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if n, err := rediskeys.Delete(ctx, c, prefix); err != nil {
				t.Logf("deleting the test's Redis keys (prefix %s, %d deleted): %v", prefix, n, err)
			}
		})
		return c, prefix, nil
	}
	m := miniredis.RunT(t)
	c := redis.NewClient(&redis.Options{Addr: m.Addr()})
	t.Cleanup(func() { _ = c.Close() })
	return c, prefix, m
}

// Kafka returns bootstrap brokers: KAFKA_BROKERS (comma separated) when set,
// otherwise a fresh in-process kfake cluster closed at the end of the test.
func Kafka(t testing.TB) []string {
	t.Helper()
	if v := os.Getenv("KAFKA_BROKERS"); v != "" {
		return strings.Split(v, ",")
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatalf("start kfake: %v", err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()
}

// CreateTopics creates each topic with the given partition count
// (replication factor 1) and waits until its metadata is visible.
func CreateTopics(t testing.TB, brokers []string, partitions int, topics ...string) {
	t.Helper()
	if err := CreateTopicsErr(brokers, partitions, topics...); err != nil {
		t.Fatalf("create topics %v: %v", topics, err)
	}
}

// CreateTopicsErr is CreateTopics for callers without a testing.TB.
func CreateTopicsErr(brokers []string, partitions int, topics ...string) error {
	conn, err := kafka.Dial("tcp", brokers[0])
	if err != nil {
		return err
	}
	defer conn.Close()
	controller, err := conn.Controller()
	if err != nil {
		return err
	}
	cc, err := kafka.Dial("tcp", net.JoinHostPort(controller.Host, strconv.Itoa(controller.Port)))
	if err != nil {
		return err
	}
	defer cc.Close()
	cfgs := make([]kafka.TopicConfig, len(topics))
	for i, tp := range topics {
		cfgs[i] = kafka.TopicConfig{Topic: tp, NumPartitions: partitions, ReplicationFactor: 1}
	}
	if err := cc.CreateTopics(cfgs...); err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, tp := range topics {
		for {
			parts, err := conn.ReadPartitions(tp)
			if err == nil && len(parts) == partitions {
				break
			}
			if time.Now().After(deadline) {
				return err
			}
			time.Sleep(50 * time.Millisecond) // polling metadata, bounded by deadline
		}
	}
	return nil
}

// Eventually polls cond every few milliseconds until it holds (true) or d
// has passed (false, after one last look). It is how tests wait for work
// done elsewhere: on a condition with a deadline, never a bare sleep.
func Eventually(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return cond()
		}
		time.Sleep(10 * time.Millisecond) // polling interval, bounded by the deadline
	}
	return true
}

// WaitUntil is Eventually that fails the test, naming what it waited for.
func WaitUntil(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	if !Eventually(d, cond) {
		t.Fatalf("timed out after %s waiting for %s", d, what)
	}
}

// PrivateRedis starts a redis-server of the test's own with args (e.g.
// "--maxmemory-policy", "allkeys-lru"), for tests that change or depend on a
// server's settings and so cannot share the suite's Redis. It returns the
// server's address; the server is stopped at the end of the test. Without a
// redis-server binary on PATH the test is skipped, saying so.
func PrivateRedis(t testing.TB, args ...string) string {
	t.Helper()
	return privateRedis(t, nil, args...)
}

// PrivateRedisTLS is PrivateRedis serving TLS only, with the server
// certificate and key files given; clientTLS is how the readiness probe
// connects (it must trust the certificate), and args may add e.g. ACL users.
func PrivateRedisTLS(t testing.TB, certFile, keyFile string, clientTLS *tls.Config, args ...string) string {
	t.Helper()
	return privateRedis(t, clientTLS, append([]string{"--tls-cert-file", certFile, "--tls-key-file", keyFile,
		"--tls-auth-clients", "no"}, args...)...)
}

func privateRedis(t testing.TB, clientTLS *tls.Config, args ...string) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("no redis-server on PATH (Debian package redis-server): cannot start a private Redis")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	_ = ln.Close()
	listen := []string{"--port", port}
	if clientTLS != nil {
		listen = []string{"--port", "0", "--tls-port", port}
	}
	all := append(append(listen, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", t.TempDir()), args...)
	cmd := exec.Command(bin, all...)
	// Its own process group, so that the cleanup reaches its children too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	// Registered after t.TempDir, so it runs before the directory is
	// removed. The whole group: a background save or AOF rewrite (a test
	// that turns persistence on starts one) runs in a forked child that
	// outlives a killed parent and would still be writing into the
	// directory while it is removed ("directory not empty").
	t.Cleanup(func() {
		pgid := cmd.Process.Pid
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		_ = cmd.Wait()
		// The orphaned child is not ours to wait for (init reaps it, on its
		// own schedule): poll, bounded, until no member of the group is
		// still running; a zombie writes nothing.
		WaitUntil(t, 10*time.Second, "redis-server's forked children exit", func() bool { return !groupRunning(pgid) })
	})
	addr := "127.0.0.1:" + port
	c := redis.NewClient(&redis.Options{Addr: addr, TLSConfig: clientTLS})
	defer c.Close()
	WaitUntil(t, 10*time.Second, "private redis-server on "+addr+" answers", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		// NOAUTH counts as an answer: the server is up, a test's users and
		// passwords are its own business.
		err := c.Ping(ctx).Err()
		return err == nil || strings.Contains(err.Error(), "NOAUTH") || strings.Contains(err.Error(), "WRONGPASS")
	})
	return addr
}

// groupRunning reports whether a process of group pgid is alive and not a
// zombie, from /proc/<pid>/stat.
func groupRunning(pgid int) bool {
	procs, _ := procfs.AllProcs()
	for _, p := range procs {
		st, err := p.Stat()
		if err != nil {
			continue // exited meanwhile
		}
		if st.PGRP == pgid && st.State != "Z" && st.State != "X" {
			return true
		}
	}
	return false
}
