package testinfra

import (
	"context"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// groupRunning sees a live process of the group, and none once it has
// exited and been reaped.
func TestGroupRunning(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc: not Linux")
	}
	cmd := exec.Command("sleep", "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Skip("cannot start sleep:", err)
	}
	pgid := cmd.Process.Pid
	if !groupRunning(pgid) {
		t.Error("the started process's group is not seen running")
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait() // reaped: no zombie left
	if groupRunning(pgid) {
		t.Error("the group is still seen running after its only process exited")
	}
}

// A real Redis's keys under a test's prefix, hash-tagged or not, and under
// longer prefixes the test derived from it, are gone when the test ends;
// another prefix's are not.
func TestRedisKeysDeletedAfterTheTest(t *testing.T) {
	if !RealRedis() {
		t.Skip("REDIS_ADDR not set: a miniredis goes with its test anyway")
	}
	ctx := context.Background()
	var c redis.UniversalClient
	var prefix string
	other := "t" + Unique() + "-other"
	t.Run("writes", func(t *testing.T) {
		c, prefix, _ = Redis(t)
		for _, k := range []string{prefix + ":{c:1}:ftd", "{" + prefix + ":q:3}:due", prefix + "m:{c:2}:ctx", other} {
			if err := c.Set(ctx, k, "v", 0).Err(); err != nil {
				t.Fatal(err)
			}
		}
		// More than one of rediskeys.Delete's batches (10 000 keys).
		pipe := c.Pipeline()
		for i := range 10001 {
			pipe.Set(ctx, prefix+":k"+strconv.Itoa(i), "v", time.Hour)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatal(err)
		}
	})
	check := redis.NewClient(&redis.Options{Addr: os.Getenv("REDIS_ADDR")})
	defer check.Close()
	for _, pattern := range []string{prefix + "*", "{" + prefix + "*"} {
		if keys, err := check.Keys(ctx, pattern).Result(); err != nil || len(keys) != 0 {
			t.Errorf("keys %s after the test: %d (%v); want none", pattern, len(keys), err)
		}
	}
	if n, err := check.Del(ctx, other).Result(); err != nil || n != 1 {
		t.Errorf("another prefix's key: deleted %d (%v); want it kept until now", n, err)
	}
}
