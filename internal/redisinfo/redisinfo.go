// Package redisinfo reads what a Redis server reports of itself (INFO), for
// the load harness and the benchmarks that set Redis's work beside theirs.
package redisinfo

import (
	"context"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// ServerCPU is the server's CPU seconds since it started (INFO cpu:
// used_cpu_user + used_cpu_sys), false when it cannot be read (an error, or
// a server such as miniredis that does not report them).
func ServerCPU(ctx context.Context, c redis.UniversalClient) (float64, bool) {
	info, err := c.InfoMap(ctx, "cpu").Result()
	if err != nil {
		return 0, false
	}
	return cpuSeconds(info["CPU"])
}

// cpuSeconds is used_cpu_user + used_cpu_sys of an INFO cpu section, false
// when either is missing or not a number.
func cpuSeconds(cpu map[string]string) (float64, bool) {
	var sum float64
	for _, k := range []string{"used_cpu_user", "used_cpu_sys"} {
		v, err := strconv.ParseFloat(cpu[k], 64)
		if err != nil {
			return 0, false
		}
		sum += v
	}
	return sum, true
}
