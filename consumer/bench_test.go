package consumer

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
)

// BenchmarkConsume measures the consume→schedule→commit path with a no-op
// handler: b.N messages over 1000 keys on 4 partitions are produced first,
// then timed from Run until every message is handled and committed.
func BenchmarkConsume(b *testing.B) {
	f := newFixture(b)
	f.produce(b, b.N, 1000, 0)
	end := f.endOffsets(b)
	for p, o := range end {
		if o == 0 {
			delete(end, p) // nothing to commit on an empty partition
		}
	}
	var n, first atomic.Int64
	cfg := f.config(b)
	cfg.Logger = zap.NewNop()
	b.ReportAllocs()
	b.ResetTimer()
	began := time.Now()
	r := start(b, cfg, HandlerFunc(func(context.Context, Message) error {
		if n.Add(1) == 1 {
			first.Store(time.Now().UnixNano())
		}
		return nil
	}))
	waitUntil(b, 5*time.Minute, func() bool { return n.Load() >= int64(b.N) }, "all messages handled")
	f.waitCommitted(b, end, "commits reach the end")
	b.StopTimer()
	elapsed := time.Since(began)
	r.stop(b, time.Minute)
	// msgs/s excludes joining the group (seconds on a real broker), which
	// total_s includes.
	b.ReportMetric(float64(b.N)/time.Since(time.Unix(0, first.Load())).Seconds(), "msgs/s")
	b.ReportMetric(elapsed.Seconds(), "total_s")
}
