package dedupe

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"
)

// Durability is what a Redis server says about keeping postbackd's state:
// FTD records and delivered marks must survive memory pressure (or a second
// FTD, a second payout, follows) and should survive restarts.
type Durability struct {
	// EvictionPolicies are the maxmemory-policy values of the servers (one
	// per master of a Cluster).
	EvictionPolicies []string
	// Persistent: every server writes an append-only file or RDB snapshots.
	Persistent bool
}

// CanEvict reports whether a server may delete keys under memory pressure:
// any policy but noeviction (volatile-* policies evict exactly the keys
// with a TTL: classification answers and delivered marks).
func (d Durability) CanEvict() bool {
	for _, p := range d.EvictionPolicies {
		if p != "noeviction" {
			return true
		}
	}
	return false
}

// CheckDurability reads maxmemory-policy and the persistence settings of
// every server of client (every master of a Cluster). It fails when a
// server does not answer CONFIG GET (managed services often disable it):
// the caller decides what an unknown answer means.
func CheckDurability(ctx context.Context, client redis.UniversalClient) (Durability, error) {
	var (
		mu  sync.Mutex
		d   = Durability{Persistent: true}
		one = func(ctx context.Context, c *redis.Client) error {
			policy, err := c.ConfigGet(ctx, "maxmemory-policy").Result()
			if err != nil {
				return fmt.Errorf("CONFIG GET maxmemory-policy: %w", err)
			}
			persist, err := c.ConfigGet(ctx, "appendonly").Result()
			if err != nil {
				return fmt.Errorf("CONFIG GET appendonly: %w", err)
			}
			save, err := c.ConfigGet(ctx, "save").Result()
			if err != nil {
				return fmt.Errorf("CONFIG GET save: %w", err)
			}
			mu.Lock()
			defer mu.Unlock()
			d.EvictionPolicies = append(d.EvictionPolicies, policy["maxmemory-policy"])
			if persist["appendonly"] != "yes" && strings.TrimSpace(save["save"]) == "" {
				d.Persistent = false
			}
			return nil
		}
	)
	var err error
	switch c := client.(type) {
	case *redis.ClusterClient:
		err = c.ForEachMaster(ctx, one)
	case *redis.Client:
		err = one(ctx, c)
	default:
		return Durability{}, fmt.Errorf("dedupe: check durability: unsupported client %T", client)
	}
	if err != nil {
		return Durability{}, fmt.Errorf("dedupe: check durability: %w", err)
	}
	return d, nil
}
