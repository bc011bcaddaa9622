// Package rediskeys removes what a test or a load run wrote to a shared
// Redis, by key prefix.
package rediskeys

import (
	"context"
	"errors"

	"github.com/redis/go-redis/v9"
)

// step is both SCAN's COUNT and the most keys one UNLINK takes: SCAN is
// linear in the whole keyspace, which others share, so it goes in large
// steps.
const step = 10000

// Delete unlinks every key whose name starts with one of prefixes, or with
// "{" and one of them (the hash-tagged keys of a store whose prefix starts
// with it: dedupe's schedule shards), and returns how many it unlinked. It
// goes on past a failed pattern or batch; the error joins every failure.
func Delete(ctx context.Context, c redis.UniversalClient, prefixes ...string) (int, error) {
	deleted := 0
	var errs []error
	for _, prefix := range prefixes {
		for _, pattern := range []string{prefix + "*", "{" + prefix + "*"} {
			var batch []string
			flush := func() {
				if len(batch) == 0 {
					return
				}
				n, err := c.Unlink(ctx, batch...).Result()
				deleted += int(n)
				if err != nil {
					errs = append(errs, err)
				}
				batch = batch[:0]
			}
			it := c.Scan(ctx, 0, pattern, step).Iterator()
			for it.Next(ctx) {
				if batch = append(batch, it.Val()); len(batch) == step {
					flush()
				}
			}
			flush()
			if err := it.Err(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return deleted, errors.Join(errs...)
}
