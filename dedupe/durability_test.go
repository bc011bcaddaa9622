package dedupe

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/postbackd/postbackd/internal/testinfra"
)

// TestCheckDurability reads a real server's eviction policy and
// persistence, as they change.
func TestCheckDurability(t *testing.T) {
	addr := testinfra.PrivateRedis(t, "--maxmemory-policy", "allkeys-lru")
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = c.Close() })
	ctx := context.Background()
	check := func(wantEvict, wantPersistent bool) {
		t.Helper()
		d, err := CheckDurability(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		if d.CanEvict() != wantEvict || d.Persistent != wantPersistent {
			t.Fatalf("durability %+v: can evict %v, want %v; persistent %v, want %v", d, d.CanEvict(), wantEvict, d.Persistent, wantPersistent)
		}
	}
	check(true, false)
	for _, policy := range []string{"volatile-lru", "volatile-ttl", "allkeys-random"} {
		c.ConfigSet(ctx, "maxmemory-policy", policy)
		check(true, false)
	}
	c.ConfigSet(ctx, "maxmemory-policy", "noeviction")
	check(false, false)
	c.ConfigSet(ctx, "save", "3600 1")
	check(false, true)
	c.ConfigSet(ctx, "save", "")
	c.ConfigSet(ctx, "appendonly", "yes")
	check(false, true)
}

// TestCheckDurabilityCluster reads every master of a real Cluster.
func TestCheckDurabilityCluster(t *testing.T) {
	addrs := os.Getenv("REDIS_CLUSTER_ADDRS")
	if addrs == "" {
		t.Skip("REDIS_CLUSTER_ADDRS not set: no real Redis Cluster to read")
	}
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: strings.Split(addrs, ",")})
	t.Cleanup(func() { _ = c.Close() })
	d, err := CheckDurability(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.EvictionPolicies) != 3 || d.CanEvict() {
		t.Fatalf("durability %+v; want three masters, none evicting (the test cluster runs noeviction)", d)
	}
}
